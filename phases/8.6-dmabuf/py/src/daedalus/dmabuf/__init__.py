"""Phase 8.6: dma-buf zero copy (the daemon side comes separately); ``ctrls``:
the node's V4L2 controls as an application sees them (the stateless-control tests)."""
