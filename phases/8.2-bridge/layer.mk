# Phase 8.2 kernel layer: the /dev/daedalus-v4l2 bridge to daedalusd and the
# debugfs ping trigger.
layer-objs := daedalus-bridge.o daedalus-ping.o
layer-sym := daedalus_bridge_layer
