"""Phase 8.1: helpers to find and talk to the daedalus-v4l2 video node."""
