"""daedalus-v4l2 testbed: module build driver, kernels, QEMU guests, CLI."""
