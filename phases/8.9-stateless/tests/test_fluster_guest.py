"""Phase 8.9 in the guest: fluster's GStreamer decoders on suites of our own.

The suites are generated from the corpus (daedalus.stateless.fluster_suites:
each vector's MD5 is Debian's ffmpeg's decode of the clip), and fluster runs
its own decoder definitions against the node: ``GStreamer-VP9-V4L2SL`` /
``GStreamer-H.264-V4L2SL`` (GStreamer 1.22's v4l2slvp9dec / v4l2slh264dec,
found through the media device) on the stateless node and
``GStreamer-VP9-V4L2`` / ``GStreamer-H.264-V4L2`` (v4l2vp9dec / v4l2h264dec)
on the stateful one.

The smoke test here takes a few vectors per codec (a plain clip, a resize, a
B-pyramid, four slices per picture) and wants every one to pass with every
decoder; the full suites
run as a separate command, whose scores the closure page publishes
(``extended``: not in CI).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from daedalus.stateless.fluster_suites import generate, misses, run, table

pytestmark = pytest.mark.guest

SMOKE = {
    "VP9": ["vp9-320x240", "vp9-resize-320x240-174x98"],
    "H.264": ["h264-high-320x240", "h264-main-bpyramid-320x240", "h264-slices-320x240"],
}
DECODERS = {
    "VP9": ["GStreamer-VP9-V4L2SL-Gst1.0", "GStreamer-VP9-V4L2-Gst1.0"],
    "H.264": ["GStreamer-H.264-V4L2SL-Gst1.0", "GStreamer-H.264-V4L2-Gst1.0"],
}
TIMEOUT = 600  # one vector under TCG


@pytest.mark.parametrize("codec", sorted(DECODERS))
def test_fluster_smoke_passes_every_vector_on_both_nodes(codec: str, tmp_path: Path) -> None:
    suites = tmp_path / "suites"
    generate(suites, names=SMOKE[codec])
    status, results = run(suites, DECODERS[codec], suites=[f"daedalus-{codec}"],
                          timeout=TIMEOUT, output_dir=tmp_path / "out", quiet=True)
    print(table(results))
    assert results, f"fluster ran nothing (exit {status})"
    assert len(results) == len(DECODERS[codec]), results  # one score per decoder
    wrong = misses(results)
    assert not wrong, wrong
    want = len(SMOKE[codec])
    assert all(s.passed == s.total == want for s in results), table(results)


@pytest.mark.extended
def test_fluster_full_suites(tmp_path: Path) -> None:
    """Every suite, all four decoders: the closure page's table."""
    suites = tmp_path / "suites"
    generate(suites)
    _, results = run(suites, [d for ds in DECODERS.values() for d in ds], timeout=TIMEOUT,
                     output_dir=tmp_path / "out", quiet=True)
    print(table(results))
    print(misses(results))
    assert results
