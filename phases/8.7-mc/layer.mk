# Phase 8.7 kernel layer: the media controller. /dev/mediaN with the m2m
# topology (source -> decoder -> sink, the video node's interface linked to
# both DMA entities), registered in the probe order of the style guide.
layer-objs := daedalus-mc.o
layer-sym := daedalus_mc_layer
