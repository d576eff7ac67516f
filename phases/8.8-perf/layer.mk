# Phase 8.8 kernel layer: pipelining (a FEED and a FETCH of one file in the
# daemon at once) and 10-bit, 4:2:2 and 4:4:4 CAPTURE. Enables the
# P010, NV16 and NV24 entries of the decoded format table
# (daedalus-formats.c), so a 9- or 10-bit 4:2:0 stream is decoded to
# V4L2_PIX_FMT_P010 and an 8-bit 4:2:2 / 4:4:4 one to V4L2_PIX_FMT_NV16 /
# NV24 instead of refused.
layer-objs := daedalus-perf.o
layer-sym := daedalus_perf_layer
