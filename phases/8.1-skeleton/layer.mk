# Phase 8.1 kernel layer: objects (relative to this layer's kernel/ dir) and
# the struct daedalus_layer symbol it contributes to the generated table.
# daedalus-{vp9,h264,av1}.o: each codec's own data, which its row of the
# codec table (daedalus-formats.c) points to.
layer-objs := daedalus-core.o daedalus-formats.o daedalus-video.o \
	daedalus-vp9.o daedalus-h264.o daedalus-av1.o
layer-sym := daedalus_skeleton_layer
