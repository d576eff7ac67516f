# Phase 8.8 kernel layer: 10-bit CAPTURE. Enables the P010 entry of the
# decoded format table (daedalus-formats.c), so a 9- or 10-bit stream is
# decoded to V4L2_PIX_FMT_P010 instead of refused.
layer-objs := daedalus-p010.o
layer-sym := daedalus_p010_layer
