# Phase 8.4 kernel layer: the decode request path (REQ_DECODE / RESP_FRAME)
# and its debugfs trigger.
layer-objs := daedalus-decode.o daedalus-decode-debugfs.o
layer-sym := daedalus_roundtrip_layer
