"""Why the decode tool says a stream was refused, on the host (no node here).

``daedalus.m2m.unsupported`` probes the input file with PyAV; every fact it
reports is checked against Debian's ffprobe (a different FFmpeg build):
``-show_streams`` for codec, profile and pixel format, ``-show_pixel_formats``
for that format's bit depth and chroma subsampling (log2_chroma_w / _h). The
expected lines are built from those facts. Then the tool's own path: an EIO
from the node (the fatal state of dev-decoder.rst) ends the decode with
NodeStopped, and ``daedalus-v4l2 decode`` turns that into REFUSED and one
line naming the property. A codec the node does not list on OUTPUT (AV1 on
phase 8.5's node) is REFUSED before any buffer, in one line too.
"""

from __future__ import annotations

import argparse
import errno
import os
from pathlib import Path
from typing import Any, cast

import pytest

from daedalus.m2m import cli
from daedalus.m2m.cli import DecodeCommand
from daedalus.m2m.status import DecodeExit
from daedalus.m2m.unsupported import StreamFacts, explain, probe, why_refused
from daedalus.m2m.v4l2 import M2MNode, NodeStopped, StatefulDecode, Stats
from daedalus.parse import corpus
from daedalus.parse.reference import ffprobe, have_ffprobe
from daedalus.skeleton.v4l2dev import CAPTURE

pytestmark = pytest.mark.skipif(not have_ffprobe(), reason="needs Debian's ffprobe "
                                "(apt-get install ffmpeg)")

NAMES = ["h264-high444-176x144", "h264-high422-176x144", "vp9-p1-444-176x144",
         "h264-high10-320x240", "vp9-p2-10bit-320x240", "vp9-320x240", "h264-high-322x242",
         "h264-main-bpyramid-320x240", "av1-10bit-320x240"]
# FFmpeg's pixel format descriptor: (log2_chroma_w, log2_chroma_h) -> J:a:b
SUBSAMPLING = {(1, 1): "4:2:0", (1, 0): "4:2:2", (0, 0): "4:4:4"}


def reference(path: Path) -> dict[str, Any]:
    """ffprobe's facts of *path*'s video stream."""
    out = ffprobe(path, "-show_streams", "-show_pixel_formats")
    stream = next(s for s in out["streams"] if s["codec_type"] == "video")
    fmt = next(f for f in out["pixel_formats"] if f["name"] == stream["pix_fmt"])
    return {"long_name": stream["codec_long_name"], "profile": stream["profile"],
            "pix_fmt": stream["pix_fmt"],
            "bit_depth": max(c["bit_depth"] for c in fmt["components"]),
            "chroma": SUBSAMPLING[fmt["log2_chroma_w"], fmt["log2_chroma_h"]]}


@pytest.mark.parametrize("name", NAMES)
def test_probe_agrees_with_ffprobe(name: str) -> None:
    path = corpus.path(name)
    facts = probe(path)
    want = reference(path)
    assert facts is not None
    assert facts.codec in want["long_name"]  # "H.264" in "H.264 / AVC / ...", "VP9" ...
    assert (facts.profile, facts.pix_fmt, facts.bit_depth, facts.chroma) == (
        want["profile"], want["pix_fmt"], want["bit_depth"], want["chroma"])
    assert corpus.entry(name).pix_fmt == want["pix_fmt"]  # the manifest agrees too


@pytest.mark.parametrize("name", NAMES)
def test_the_line_names_what_the_node_does_not_carry(name: str) -> None:
    path = corpus.path(name)
    want = reference(path)
    facts = probe(path)
    assert facts is not None
    head = f"{facts.codec} {want['profile']}, {want['pix_fmt']}"
    nv12_only = why_refused(path, ["NV12"])
    with_p010 = why_refused(path, ["NV12", "P010"])
    if want["chroma"] != "4:2:0":
        assert nv12_only == (f"{head} ({want['chroma']} chroma): the node's CAPTURE format "
                             "NV12 carries 8-bit 4:2:0 only")
        assert with_p010 == (f"{head} ({want['chroma']} chroma): the node's CAPTURE formats "
                             "NV12, P010 carry 8- and 10-bit 4:2:0 only")
    elif want["bit_depth"] > 8:
        assert nv12_only == (f"{head} ({want['bit_depth']}-bit): the node offers NV12 (8-bit) "
                             "only")
        assert with_p010 is None  # P010 carries it
    else:
        assert nv12_only is None and with_p010 is None


def test_the_lines_of_the_issue() -> None:
    assert why_refused(corpus.path("h264-high444-176x144"), ["NV12"]) == (
        "H.264 High 4:4:4 Predictive, yuv444p (4:4:4 chroma): the node's CAPTURE format NV12 "
        "carries 8-bit 4:2:0 only")
    assert why_refused(corpus.path("h264-high10-320x240"), ["NV12"]) == (
        "H.264 High 10, yuv420p10le (10-bit): the node offers NV12 (8-bit) only")


def test_other_layouts_and_formats() -> None:
    facts = StreamFacts("VP9", "Profile 3", "yuv444p12le", 12, "4:4:4")
    assert explain(facts, ["NV12"]) == ("VP9 Profile 3, yuv444p12le (4:4:4 chroma, 12-bit): "
                                        "the node's CAPTURE format NV12 carries 8-bit 4:2:0 only")
    deep = StreamFacts("AV1", "Professional", "yuv420p12le", 12, "4:2:0")
    assert explain(deep, ["NV12", "P010"]) == (
        "AV1 Professional, yuv420p12le (12-bit): the node offers NV12 (8-bit), P010 (10-bit) "
        "only")
    gray = StreamFacts("H.264", "High", "gray", 8, "4:0:0")
    assert explain(gray, []) == ("H.264 High, gray (4:0:0, no chroma): the node's CAPTURE "
                                 "format NV12 carries 8-bit 4:2:0 only")  # NV12 assumed


def test_an_unprobeable_file_explains_nothing(tmp_path: Path) -> None:
    junk = tmp_path / "junk.h264"
    junk.write_bytes(b"\x13\x37 not a stream" * 9)
    assert probe(junk) is None and why_refused(junk, ["NV12"]) is None
    assert probe(tmp_path / "missing.ivf") is None


# --- the tool: EIO ends the decode, the line names the property -----------------------


class QuietNode:
    """Enough of M2MNode for StatefulDecode's loop: poll() finds nothing."""

    fd = -1

    def poll(self, timeout: float) -> int:
        return 0


def test_eio_from_the_node_is_node_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first EIO (DQBUF with nothing done, QBUF, STREAMON, DECODER_CMD in the
    fatal state) ends the decode; any other V4L2 error stays what it was."""
    decode = StatefulDecode(cast(M2MNode, QuietNode()), "H264", iter(()), lambda frame: None)
    monkeypatch.setattr(decode, "_start", lambda: None)
    monkeypatch.setattr(decode, "_refill", lambda: False)
    monkeypatch.setattr(decode, "_events", lambda: False)

    def dqbuf(code: int) -> bool:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(decode, "_output", lambda: dqbuf(errno.EIO))
    with pytest.raises(NodeStopped, match=r"the node stopped the stream .*EIO after 0 frames"):
        decode.run()
    monkeypatch.setattr(decode, "_output", lambda: dqbuf(errno.EINVAL))
    with pytest.raises(OSError) as info:
        decode.run()
    assert info.value.errno == errno.EINVAL


class StoppedNode:
    """Stands in for M2MNode: opens, and its CAPTURE queue offers NV12."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> StoppedNode:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def formats(self, buf_type: int) -> list[str]:
        return ["NV12"] if buf_type == CAPTURE else ["VP90", "H264"]


class StoppedDecode:
    """Stands in for StatefulDecode: the node stops the stream at once."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.stats = Stats()

    def run(self) -> Stats:
        raise NodeStopped("the node stopped the stream (a V4L2 call failed with EIO after 0 "
                          "frames): it refused the stream or has no CAPTURE format for its "
                          "frames")


def run_decode(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
               capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    monkeypatch.setattr(cli, "M2MNode", StoppedNode)
    monkeypatch.setattr(cli, "StatefulDecode", StoppedDecode)
    monkeypatch.setattr(cli, "daemon_connected", lambda: True)
    parser = argparse.ArgumentParser()
    DecodeCommand().add_arguments(parser)
    args = parser.parse_args([str(corpus.path(name)), "-o", str(tmp_path / "out.yuv"),
                              "--device", "/dev/video-stopped"])
    status = DecodeCommand().run(args)
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("name", ["h264-high444-176x144", "h264-high422-176x144",
                                  "vp9-p1-444-176x144", "h264-high10-320x240",
                                  "vp9-p2-10bit-320x240", "av1-10bit-128x96",
                                  "av1-10bit-320x240"])
def test_decode_says_which_property_is_unsupported(name: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run_decode(name, tmp_path, monkeypatch, capsys)
    path = corpus.path(name)
    want = reference(path)
    assert status == DecodeExit.REFUSED
    assert out.startswith(f"decode: {path}: 0 frames, no picture")  # the summary, as ever
    lines = err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"daedalus-v4l2 decode: {path}: refused: ")
    assert f", {want['pix_fmt']} (" in lines[0] and want["profile"] in lines[0]
    if want["chroma"] != "4:2:0":
        assert f"({want['chroma']} chroma): the node's CAPTURE format NV12" in lines[0]
    else:
        assert f"({want['bit_depth']}-bit): the node offers NV12 (8-bit) only" in lines[0]


def test_decode_of_a_stream_the_node_carries_says_what_the_node_did(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    status, _out, err = run_decode("vp9-320x240", tmp_path, monkeypatch, capsys)
    assert status == DecodeExit.REFUSED
    assert err == ("daedalus-v4l2 decode: /dev/video-stopped: the node stopped the stream (a "
                   "V4L2 call failed with EIO after 0 frames): it refused the stream or has no "
                   "CAPTURE format for its frames\n")


class NodeWithoutAv1(StoppedNode):
    """Stands in for phase 8.5's node: a decoder whose OUTPUT offers VP9 and
    H.264 only. No ioctl may reach it (fd -1)."""

    fd = -1

    def check_m2m(self) -> None:
        return None

    def close(self) -> None:
        return None


@pytest.mark.parametrize("name", ["av1-320x240", "av1-174x98"])
def test_decode_of_av1_on_a_node_without_av01_is_refused_in_one_line(
        name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """AV1 in IVF and as an OBU stream: the tool reads the file, looks for the
    codec table's fourcc (AV01) among ENUM_FMT(OUTPUT) and stops REFUSED
    before S_FMT or any buffer, with the line phase 8.5's guest test expects."""
    monkeypatch.setattr(cli, "M2MNode", NodeWithoutAv1)
    monkeypatch.setattr(cli, "daemon_connected", lambda: True)
    parser = argparse.ArgumentParser()
    DecodeCommand().add_arguments(parser)
    args = parser.parse_args([str(corpus.path(name)), "-o", str(tmp_path / "out.yuv"),
                              "--device", "/dev/video-85"])
    status = DecodeCommand().run(args)
    out, err = capsys.readouterr()
    assert status == DecodeExit.REFUSED
    assert out.startswith(f"decode: {corpus.path(name)}: 0 frames, no picture")
    assert err == ("daedalus-v4l2 decode: /dev/video-85: /dev/video-85 does not offer the "
                   "coded format AV01 (it offers VP90, H264)\n")
