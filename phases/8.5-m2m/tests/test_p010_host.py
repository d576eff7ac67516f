"""P010 (10-bit) frames in the decode client's reference and result handling, on the host.

Phase 8.8's node hands a 10-bit stream's frames out as P010; the client
writes them tightly packed, as Debian's ``ffmpeg -pix_fmt p010le -f
rawvideo`` does. Checked here: the ffmpeg pix_fmt chosen for a decode's
CAPTURE formats, ffmpeg's p010le output of the corpus' 10-bit clips (two
bytes a sample, the value in the upper 10 bits, frames of w x h x 3 bytes),
the guest tests' reference frames and CAPTURE format per clip, and the
decode tool's summary line naming P010 (an 8-bit line unchanged).
(Cropping P010 CAPTURE buffers and --compare: test_dmabuf_host.py.)
"""

from __future__ import annotations

import numpy as np
import pytest

from daedalus.m2m.cli import format_summary
from daedalus.m2m.clients import capture_format, reference_frames, split, summary
from daedalus.m2m.reference import (
    ReferenceError,
    pix_fmt_for,
    reference_command,
    reference_output,
)
from daedalus.m2m.v4l2 import Stats
from daedalus.parse import corpus

TEN_BIT = ["vp9-p2-10bit-320x240", "h264-high10-320x240", "av1-10bit-128x96"]


@pytest.mark.parametrize(("formats", "want"), [
    ([], "nv12"), (["NV12"], "nv12"), (["P010"], "p010le"), (["P010", "P010"], "p010le")])
def test_ffmpeg_pix_fmt_of_capture_formats(formats: list[str], want: str) -> None:
    assert pix_fmt_for(formats) == want
    assert reference_command("x.ivf", want)[-5:] == ["-pix_fmt", want, "-f", "rawvideo", "-"]


@pytest.mark.parametrize(("formats", "message"), [
    (["NV12", "P010"], "frames in NV12 and P010: ffmpeg writes one pix_fmt"),
    (["YUYV"], "no ffmpeg pix_fmt for the CAPTURE format YUYV")])
def test_formats_ffmpeg_cannot_write_at_once_are_refused(formats: list[str],
                                                         message: str) -> None:
    with pytest.raises(ReferenceError, match=message):
        pix_fmt_for(formats)


def test_clip_capture_formats() -> None:
    assert [capture_format(name) for name in TEN_BIT] == ["P010"] * 3
    assert [capture_format(name) for name in ["vp9-320x240", "h264-high-320x240",
                                              "av1-174x98"]] == ["NV12"] * 3


@pytest.mark.parametrize("name", TEN_BIT)
def test_ffmpeg_p010le_of_10bit_clips(name: str) -> None:
    """Frames of 2 bytes a sample (w x h x 3 bytes), every sample's low 6 bits
    clear and values past 8 bits: 10-bit samples in P010's upper bits; the
    reference frames of the clip (its CAPTURE format) are these, frame by frame."""
    entry = corpus.entry(name)
    data = reference_output(corpus.path(name), "p010le")
    assert len(data) == entry.frames * entry.width * entry.height * 3
    words = np.frombuffer(data, "<u2")
    assert not np.any(words & 0x3F)
    assert int(words.max()) >> 6 > 255
    frames = reference_frames(name)
    assert len(frames) == entry.frames
    assert frames == split(data, [(entry.width, entry.height)] * entry.frames, "P010")
    assert b"".join(frames) == data
    nv12 = reference_frames(name, "NV12")
    assert [len(f) for f in nv12] == [entry.width * entry.height * 3 // 2] * entry.frames


def test_split_p010_frames_of_odd_sizes() -> None:
    sizes = [(33, 17), (16, 8)]
    lengths = [33 * 17 * 2 + 17 * 2 * 9 * 2, 16 * 8 * 3]
    data = bytes(range(256)) * (sum(lengths) // 256) + bytes(sum(lengths) % 256)
    frames = split(data, sizes, "P010")
    assert [len(f) for f in frames] == lengths and b"".join(frames) == data
    with pytest.raises(AssertionError):
        split(data, sizes)  # NV12 sizes do not add up to it


def stats(frames: int, pixfmts: list[str]) -> Stats:
    got = Stats(frames=frames, pixfmts=pixfmts, seconds=2.0)
    got.sizes = [(320, 240)] if frames else []
    return got


def test_summary_line_names_p010_and_leaves_the_8bit_line_as_it_was() -> None:
    nv12 = format_summary("in.ivf", "out.yuv", stats(30, ["NV12"]))
    assert nv12 == "decode: in.ivf: 30 frames, 320x240, 15.0 fps, 0 errors -> out.yuv"
    p010 = format_summary("in.ivf", "out.yuv", stats(10, ["P010"]))
    assert p010 == "decode: in.ivf: 10 frames, 320x240, 5.0 fps, 0 errors -> out.yuv (P010)"
    none = format_summary("in.ivf", "out.yuv", stats(0, []))
    assert none == "decode: in.ivf: 0 frames, no picture, 0.0 fps, 0 errors -> out.yuv"
    parsed = [summary(line) for line in (nv12, p010, none)]
    assert [(s.frames, s.sizes, s.errors, s.formats) for s in parsed] == [
        (30, ["320x240"], 0, ["NV12"]), (10, ["320x240"], 0, ["P010"]), (0, [], 0, [])]
    mixed = format_summary("in.ivf", "out (1).yuv", stats(2, ["NV12", "P010"]))
    assert mixed.endswith("-> out (1).yuv (NV12, P010)")
    assert summary(mixed).formats == ["NV12", "P010"]
