"""Phase 8.6: dma-buf zero copy (placeholder; the daemon side comes separately)."""
