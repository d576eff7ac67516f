"""Phase 8.3: bitstream readers (IVF, H.264 Annex-B, AV1 OBU), FFmpeg parsing with
block-level information, and the test-vector corpus."""
