# Phase 8.1 kernel layer: objects (relative to this layer's kernel/ dir) and
# the struct daedalus_layer symbol it contributes to the generated table.
layer-objs := daedalus-core.o daedalus-formats.o daedalus-video.o
layer-sym := daedalus_skeleton_layer
