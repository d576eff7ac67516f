"""Phase 8.8 in the guest: 8-bit 4:2:2 and 4:4:4 streams decoded to NV16 / NV24 (issue #14 item 4).

The phase 8.8 layer (phases/8.8-perf/kernel/daedalus-perf.c) enables the
NV16 and NV24 entries of the node's decoded format table, and phase 8.8's
daemon delivers those layouts (daedalus.m2m.layout, its ``daedalus.layouts``
entry points). Checked here on the node as built:

- before any header CAPTURE offers NV12, P010, NV16 and NV24 (ENUM_FMT);
  TRY_FMT / S_FMT of NV16 and NV24 give V4L2's single-plane layouts: rows
  padded to 4 bytes, sizeimage bytesperline x height x 2 (NV16: CbCr rows
  at full height) and x 3 (NV24: CbCr rows twice as long);
- the corpus's H.264 High 4:2:2, H.264 High 4:4:4 Predictive and VP9
  profile 1 (4:4:4) clips decode through the node with the project's decode
  tool (MMAP CAPTURE, and imported dma-bufs for one), every byte of every
  frame equal to Debian's ``ffmpeg -pix_fmt nv16 / nv24 -f rawvideo``
  (nv16: ffmpeg's yuv422p with Cb and Cr interleaved by the reference, as
  Debian's ffmpeg 5.1 cannot write nv16), and ``--compare`` says so too;
- once a 4:2:2 (4:4:4) stream's header is decoded (SOURCE_CHANGE) CAPTURE
  offers NV16 (NV24) only: an application that insists on NV12 gets the
  stream's format back from S_FMT, with its stride and sizeimage; an 8-bit
  4:2:0 stream on the same open file comes back to NV12;
- FFmpeg's v4l2 decoder (Debian's 5.1) sets CAPTURE up as NV12 before the
  header: on a 4:2:2 stream the node refuses the stream (the kernel log
  names both formats), FFmpeg stops with an error without a picture and
  without hanging, and GStreamer 1.22 (raw NV12 caps) stops too; then the
  node decodes the next FFmpeg client byte-exact.

The kernel_log fixture fails a test on any WARN, BUG, oops or hung task.
Phases 8.5-8.7 refuse these streams (phases/8.5-m2m/tests/test_clients_guest.py).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from daedalus.m2m.clients import (
    decode,
    ffmpeg_argv,
    ffmpeg_refused,
    gstreamer,
    gstreamer_refused,
    negotiate,
    reference_frames,
    summary,
)
from daedalus.m2m.reference import reference_output
from daedalus.m2m.status import DecodeExit
from daedalus.m2m.v4l2 import M2MNode
from daedalus.parse import corpus
from daedalus.skeleton.v4l2dev import CAPTURE, OUTPUT, VideoNode, find_node
from daedalus.testbed.guestctl import daemon_state

pytestmark = [pytest.mark.guest, pytest.mark.usefixtures("kernel_log")]

CLIPS = {"h264-high422-176x144": "NV16", "h264-high444-176x144": "NV24",
         "vp9-p1-444-176x144": "NV24"}
# bytes of a frame per luma byte, tightly packed and in a buffer: 2 (NV16), 3 (NV24)
PER_LUMA = {"NV16": 2, "NV24": 3}
EIGHT_BIT = "vp9-176x144"
PATIENCE = "120"  # the decode tool's --timeout under TCG


def align(value: int, to: int) -> int:
    return (value + to - 1) // to * to


def test_capture_offers_nv16_and_nv24_before_any_header() -> None:
    with VideoNode(find_node()) as v:
        assert v.formats(CAPTURE) == ["NV12", "P010", "NV16", "NV24"]
        for width, height in ((176, 144), (66, 50), (174, 98), (1920, 1080)):
            v.s_fmt(OUTPUT, "H264", width, height)
            w, h = align(width, 2), align(height, 2)
            for fourcc, factor in PER_LUMA.items():
                fmt = v.try_fmt(CAPTURE, fourcc, width, height)
                assert (fmt.pixelformat, fmt.width, fmt.height) == (fourcc, w, h)
                assert fmt.bytesperline == align(w, 4)
                assert fmt.sizeimage == fmt.bytesperline * h * factor
            got = v.s_fmt(CAPTURE, "NV24", width, height)
            assert (got.pixelformat, got.bytesperline, got.sizeimage) == (
                "NV24", align(w, 4), align(w, 4) * h * 3)
            assert v.g_fmt(CAPTURE) == got


@pytest.mark.parametrize(("name", "capture_io"), [
    *((name, "mmap") for name in sorted(CLIPS)), ("vp9-p1-444-176x144", "import")])
def test_422_and_444_streams_are_byte_exact_through_the_node(name: str, capture_io: str,
                                                             tmp_path: Path) -> None:
    path = corpus.path(name)
    fourcc = CLIPS[name]
    out = tmp_path / "out.yuv"
    proc = decode(path, out, "--timeout", PATIENCE, "--capture-io", capture_io, "--compare")
    assert proc.returncode == DecodeExit.OK, proc.stdout + proc.stderr
    entry = corpus.entry(name)
    got = summary(proc.stdout)
    assert (got.frames, got.sizes, got.errors, got.formats) == (
        entry.frames, [f"{entry.width}x{entry.height}"], 0, [fourcc])
    assert "byte-exact: yes" in proc.stdout
    want = reference_output(path, fourcc.lower())
    assert len(want) == entry.frames * entry.width * entry.height * PER_LUMA[fourcc]
    assert out.read_bytes() == want
    assert daemon_state() == "ready"


def test_after_the_header_capture_offers_the_streams_format_only() -> None:
    """4:2:2, then 4:4:4, then 8-bit 4:2:0 on one open file: CAPTURE offers
    NV16, then NV24, then NV12, each alone; S_FMT(NV12) gives that format."""
    with M2MNode(find_node()) as node:
        for name in ("h264-high422-176x144", "vp9-p1-444-176x144", EIGHT_BIT):
            fourcc = CLIPS.get(name, "NV12")
            run, frames, stats = negotiate(node, name, float(PATIENCE))
            assert stats.errors == 0
            data = b"".join(frames)
            assert run.offered == [[fourcc]], name
            size = {"NV12": 176 * 144 * 3 // 2, "NV16": 176 * 144 * 2,
                    "NV24": 176 * 144 * 3}[fourcc]
            assert [(f.pixelformat, f.bytesperline, f.sizeimage) for f in run.insisted] == [
                (fourcc, 176, size)], name
            assert [(f.pixelformat, f.width, f.height, f.bytesperline, f.sizeimage)
                    for f in run.got] == [(fourcc, 176, 144, 176, size)], name
            assert data == b"".join(reference_frames(name)), name
    assert daemon_state() == "ready"


def dmesg() -> str:
    return subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout


def test_ffmpeg_and_gstreamer_stop_on_422_without_hanging(tmp_path: Path) -> None:
    name = "h264-high422-176x144"
    before = dmesg()
    out = tmp_path / "ff.yuv"
    proc = subprocess.run(ffmpeg_argv(name, out), capture_output=True, text=True, timeout=300)
    assert ffmpeg_refused(proc.returncode, proc.stderr), proc.stderr[-2000:]
    assert not out.exists() or out.stat().st_size == 0
    new = dmesg()[len(before):]
    assert re.search(r"stream \d+ refused: 4:2:2 frames \(NV16\), but CAPTURE was set up "
                     r"4:2:0 before the header", new), new
    code, log, data = gstreamer(name, tmp_path, timeout=300)
    assert gstreamer_refused(code, log), log
    assert not data, log
    print(f"{name}: ffmpeg exit {proc.returncode}; GStreamer exit {code}: "
          f"{[line for line in log.splitlines() if 'ERROR' in line][:1]}")
    check = tmp_path / "next.yuv"
    subprocess.run(ffmpeg_argv(EIGHT_BIT, check), check=True, timeout=300)
    assert check.read_bytes() == b"".join(reference_frames(EIGHT_BIT))
    assert daemon_state() == "ready"
