"""Phase 8.7: the media controller and several contexts at once.

The kernel layer is phases/8.7-mc/kernel (/dev/mediaN with the m2m topology);
the daemon side is phase 8.5's StatefulHandler, which keeps each context's
decoder across jobs, run on the daemon's worker threads. This package holds
what the phase's tests and benchmark use: the media topology as an
application reads it and several clients decoding at once.
"""
