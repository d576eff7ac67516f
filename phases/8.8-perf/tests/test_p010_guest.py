"""Phase 8.8 in the guest: 10-bit streams decoded to P010 CAPTURE (the issue's item 4, 10-bit).

The phase 8.8 layer (phases/8.8-perf/kernel/daedalus-perf.c) enables the P010
entry of the node's decoded format table. Checked here on the node as built:

- before any header CAPTURE offers NV12 then P010 (ENUM_FMT; then NV16 and
  NV24, test_chroma_guest.py's), TRY_FMT(P010)
  gives rows of 2 bytes a sample padded to 4, sizeimage rows x 3/2; OUTPUT
  still offers VP9, H.264, AV1;
- VP9 profile 2, H.264 High 10 and AV1 10-bit clips of the corpus decode
  through the node with the project's decode tool, every byte of every frame
  equal to Debian's ``ffmpeg -i FILE -pix_fmt p010le -f rawvideo``;
- once a 10-bit stream's header is decoded (SOURCE_CHANGE) CAPTURE offers
  P010 only: an application that insists on NV12 gets P010 back from S_FMT
  (the clean refusal: the format it gets says what the stream needs), and
  G_FMT is P010; an 8-bit stream's CAPTURE is NV12 only;
- an 8-bit stream after a 10-bit one on the same open file (a drain, S_FMT
  OUTPUT again) comes back to NV12, byte-exact too;
- FFmpeg's and GStreamer's v4l2 decoders (Debian's 5.1 and 1.22) map no
  P010: on a 10-bit stream each stops with an error, writes no picture and
  does not hang. FFmpeg sets CAPTURE up as NV12 before the header and would
  take the SOURCE_CHANGE of an unchanged size for nothing, so the node
  refuses a stream whose depth differs from a CAPTURE queue already
  streaming (the kernel log says so); then the node decodes the next client
  byte-exact.

The kernel_log fixture fails a test on any WARN, BUG, oops or hung task.
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

TEN_BIT = ["vp9-p2-10bit-320x240", "h264-high10-320x240", "av1-10bit-128x96"]
EIGHT_BIT = "vp9-320x240"
PATIENCE = "120"  # the decode tool's --timeout under TCG


def align(value: int, to: int) -> int:
    return (value + to - 1) // to * to


def test_capture_offers_nv12_then_p010_before_any_header() -> None:
    with VideoNode(find_node()) as v:
        assert v.formats(OUTPUT) == ["VP90", "H264", "AV01"]
        assert v.formats(CAPTURE) == ["NV12", "P010", "NV16", "NV24"]
        for width, height in ((320, 240), (174, 98), (1920, 1080)):
            v.s_fmt(OUTPUT, "VP90", width, height)
            fmt = v.try_fmt(CAPTURE, "P010", width, height)
            w, h = align(width, 2), align(height, 2)
            assert (fmt.pixelformat, fmt.width, fmt.height) == ("P010", w, h)
            assert fmt.bytesperline == align(2 * w, 4)
            assert fmt.sizeimage == fmt.bytesperline * h * 3 // 2
            nv12 = v.try_fmt(CAPTURE, "NV12", width, height)
            assert (nv12.pixelformat, nv12.bytesperline) == ("NV12", align(w, 4))


@pytest.mark.parametrize("name", TEN_BIT)
def test_10bit_stream_is_byte_exact_through_the_node(name: str, tmp_path: Path) -> None:
    path = corpus.path(name)
    out = tmp_path / "out.yuv"
    proc = decode(path, out, "--timeout", PATIENCE)
    assert proc.returncode == DecodeExit.OK, proc.stdout + proc.stderr
    entry = corpus.entry(name)
    assert summary(proc.stdout).frames == entry.frames
    want = reference_output(path, "p010le")
    assert len(want) == entry.frames * entry.width * entry.height * 3  # 2 bytes x 3/2
    got = out.read_bytes()
    assert len(got) == len(want)
    assert got == want
    assert daemon_state() == "ready"


def test_after_a_10bit_header_capture_offers_p010_only_then_nv12_again() -> None:
    ten, eight = "vp9-p2-10bit-320x240", EIGHT_BIT
    with M2MNode(find_node()) as node:
        run, frames, stats = negotiate(node, ten, float(PATIENCE))
        assert stats.errors == 0
        assert run.offered == [["P010"]]
        assert [(f.pixelformat, f.bytesperline) for f in run.insisted] == [("P010", 640)]
        assert [(f.pixelformat, f.width, f.height, f.bytesperline, f.sizeimage)
                for f in run.got] == [("P010", 320, 240, 640, 640 * 240 * 3 // 2)]
        assert b"".join(frames) == reference_output(corpus.path(ten), "p010le")
        # the same open file, an 8-bit stream next: NV12 only again
        run, frames, stats = negotiate(node, eight, float(PATIENCE))
        assert stats.errors == 0
        assert run.offered == [["NV12"]]
        assert [(f.pixelformat, f.bytesperline) for f in run.insisted] == [("NV12", 320)]
        assert [f.pixelformat for f in run.got] == ["NV12"]
        assert b"".join(frames) == reference_output(corpus.path(eight))
    assert daemon_state() == "ready"


def dmesg() -> str:
    return subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("name", ["vp9-p2-10bit-320x240", "h264-high10-320x240"])
def test_ffmpeg_and_gstreamer_stop_on_10bit_without_hanging(name: str, tmp_path: Path) -> None:
    before = dmesg()
    out = tmp_path / "ff.yuv"
    proc = subprocess.run(ffmpeg_argv(name, out, pix_fmt="p010le"), capture_output=True,
                          text=True, timeout=300)
    assert ffmpeg_refused(proc.returncode, proc.stderr), proc.stderr[-2000:]
    assert not out.exists() or out.stat().st_size == 0
    new = dmesg()[len(before):]
    assert re.search(r"stream \d+ refused: 10-bit frames \(P010\), but CAPTURE was set up "
                     r"8-bit before the header", new), new
    code, log, data = gstreamer(name, tmp_path, timeout=300)
    assert gstreamer_refused(code, log), log
    assert not data, log
    print(f"{name}: ffmpeg exit {proc.returncode}; GStreamer exit {code}: "
          f"{[line for line in log.splitlines() if 'ERROR' in line][:1]}")
    check = tmp_path / "next.yuv"
    subprocess.run(ffmpeg_argv("vp9-176x144", check), check=True, timeout=300)
    assert check.read_bytes() == b"".join(reference_frames("vp9-176x144"))
    assert daemon_state() == "ready"
