# Phase 8.9 kernel layer: the stateless decoder. A second video node on the
# same media device, V4L2_PIX_FMT_VP9_FRAME and V4L2_PIX_FMT_H264_SLICE on
# OUTPUT, the media request API, and one DECODE_REQUEST to the daemon per
# request (daedalus-stateless.c).
layer-objs := daedalus-stateless.o daedalus-stateless-ioctl.o
layer-sym := daedalus_stateless_layer
