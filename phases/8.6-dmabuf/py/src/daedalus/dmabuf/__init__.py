"""Phase 8.6: dma-buf zero copy.

The kernel layer is phases/8.6-dmabuf/kernel; the daemon serves its
DECODE_DMABUF / FETCH_DMABUF requests with phase 8.5's StatefulHandler and
``daedalus.dispatch.device``, so this package holds no handler. ``ctrls``: the
node's V4L2 controls as an application sees them (the stateless-control tests).
"""
