# Phase 8.6 kernel layer: dma-buf zero copy. Both queues' buffers come from
# videobuf2-dma-sg; FEED and FETCH hand the daemon the buffer itself
# (DAEDALUS_IOC_GET_DMABUF) instead of copies inside the messages. Also the
# codecs' stateless controls on every open file (daedalus-ctrls.o).
layer-objs := daedalus-dmabuf.o daedalus-ctrls.o
layer-sym := daedalus_dmabuf_layer
