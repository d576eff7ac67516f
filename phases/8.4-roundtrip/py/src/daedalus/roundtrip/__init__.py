"""Phase 8.4: decode round trips kernel -> daedalusd -> kernel.

- ``decode``: the DECODE / CLOSE_STREAM handler of daedalusd (PyAV, one
  decoder per kernel stream);
- ``frames``: decoded frames packed tightly as NV12 / P010 and their FNV-1a 64
  digest;
- ``cli``: ``daedalus-v4l2 roundtrip FILE``, through the kernel's debugfs
  decode file or in-process (``--local``);
- ``clips``: small test clips made with the ffmpeg CLI and ffmpeg's own
  decoded frames, the reference the digests are compared with.
"""
