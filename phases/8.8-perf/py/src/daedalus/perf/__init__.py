"""Phase 8.8: performance.

So far the host part of the benchmark (issue #14, item 1): ``daedalus-v4l2
bench`` (daedalus.perf.bench) measures, per clip, raw FFmpeg decoding
against the daemon's per-frame path without the kernel, and
``--make-clips`` (daedalus.perf.clips) makes 1080p clips harder than a test
card to run it on. No kernel layer yet.
"""
