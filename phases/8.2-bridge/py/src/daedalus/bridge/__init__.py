"""Phase 8.2: the kernel <-> daemon bridge: the PING echo handler and `daedalus-v4l2 ping`."""
