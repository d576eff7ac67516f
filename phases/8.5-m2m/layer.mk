# Phase 8.5 kernel layer: the stateful V4L2 memory-to-memory decoder
# (v4l2-mem2mem + vb2) on the bridge's FEED / FETCH requests.
layer-objs := daedalus-m2m.o daedalus-m2m-ioctl.o
layer-sym := daedalus_m2m_layer
