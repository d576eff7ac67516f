"""H.264 through the stateless DECODE_REQUEST handler on the host (no kernel, no guest).

The requests are our client's (``daedalus.stateless.h264_requests``: per
frame the SPS / PPS / SCALING_MATRIX / DECODE_PARAMS controls, dpb[] by
reference timestamp, and the frame's slice NAL units behind start codes). A
stand-in kernel (``Node``) sends each as one DECODE_REQUEST carrying every
H.264 control of the node, as daedalus_sl_build does (those the request did
not set with value zero and without DAEDALUS_CTRL_IN_REQUEST), the OUTPUT
buffer a memfd with the slices behind junk at ``bitstream_offset``, the
CAPTURE buffer a memfd larger than ``sizeimage``
(``daedalus.dispatch.loopback.MemfdDevice``).

Reference (independent path): Debian's ffmpeg CLI decoding the clip to NV12
(``-f rawvideo -pix_fmt nv12``), in display order; ffprobe's pkt_pos of each
displayed frame gives the access unit it came from, so each request (decode
order) is compared with ffmpeg's frame of its own access unit. The node
decodes whole macroblocks (V4L2 has no cropping): the CAPTURE buffer holds
the coded size, whose top-left visible part must be ffmpeg's frame byte for
byte; padding past the coded width is zero and nothing past ``sizeimage`` is
written.

Clips: Baseline (POC type 2, CAVLC; made here by libx264), Main with
B-pyramid (corpus), High with B-frames (corpus, two sizes), a cropped High
clip (174x98), and a High clip of 4 slices per frame (made here,
``slices=4``).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from stateless_fakes import CAPTURE_SLACK, JUNK, Answer, StandInNode, kernel_ctrls

from daedalus.dispatch.loopback import STALE_BYTE
from daedalus.parse import corpus
from daedalus.parse.readers import read_all
from daedalus.proto import (
    REQUEST_HOLD,
    REQUEST_NEW_FRAME,
    REQUEST_RESET,
    Codec,
    PixFmt,
    RequestDecode,
)
from daedalus.stateless.h264_ctrls import (
    V4L2_H264_DECODE_PARAM_FLAG_IDR_PIC,
    V4L2_H264_DPB_ENTRY_FLAG_ACTIVE,
    V4L2_H264_DPB_ENTRY_FLAG_VALID,
    DecodeParams,
)
from daedalus.stateless.h264_requests import (
    V4L2_CID_STATELESS_H264_DECODE_PARAMS,
    V4L2_CID_STATELESS_H264_PPS,
    V4L2_CID_STATELESS_H264_SCALING_MATRIX,
    H264Request,
    H264RequestBuilder,
    controls_of,
)
from daedalus.stateless.h264_syntax import NAL_PPS, NAL_SPS, split_annexb
from daedalus.stateless.handler import CODEC_CTRLS, H264Stream

FFMPEG = os.environ.get("DAEDALUS_FFMPEG", "/usr/bin/ffmpeg")
FFPROBE = os.environ.get("DAEDALUS_FFPROBE", "/usr/bin/ffprobe")
pytestmark = pytest.mark.skipif(not (Path(FFMPEG).is_file() and Path(FFPROBE).is_file()),
                                reason="needs Debian's ffmpeg / ffprobe")

STREAM = 7

# clips made here: name -> (size, frames, encoder options)
MADE: dict[str, tuple[str, int, tuple[str, ...]]] = {
    "x264-baseline-176x144": ("176x144", 12, ("-profile:v", "baseline")),
    "x264-slices4-176x144": ("176x144", 12, ("-profile:v", "high", "-bf", "2",
                                             "-x264-params", "slices=4")),
}
CLIPS = ["x264-baseline-176x144", "h264-main-bpyramid-320x240", "h264-high-128x96",
         "h264-high-320x240", "h264-high-174x98", "x264-slices4-176x144"]


@pytest.fixture(scope="session")
def clip_path(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    out = tmp_path_factory.mktemp("h264-stateless")

    def get(name: str) -> Path:
        if name not in MADE:
            return corpus.path(name)
        path = out / f"{name}.h264"
        if not path.exists():
            size, frames, options = MADE[name]
            subprocess.run([FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
                            "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30",
                            "-frames:v", str(frames), "-pix_fmt", "yuv420p", "-c:v", "libx264",
                            *options, "-threads", "1", "-flags:v", "+bitexact",
                            "-fflags", "+bitexact", "-map_metadata", "-1", "-f", "h264",
                            os.fspath(path)], check=True, timeout=120)
        return path
    return get


@dataclass
class Reference:
    """Debian's ffmpeg: per access unit (decode order) its NV12 frame."""

    access_units: list[bytes]
    frames: list[bytes]
    width: int
    height: int


def reference(path: Path) -> Reference:
    _, packets = read_all(path)
    probe = subprocess.run(
        [FFPROBE, "-v", "error", "-of", "json", "-select_streams", "v:0", "-show_frames",
         "-show_entries", "frame=pkt_pos,width,height", os.fspath(path)],
        capture_output=True, text=True, check=True, timeout=120)
    shown = json.loads(probe.stdout)["frames"]
    w, h = int(shown[0]["width"]), int(shown[0]["height"])
    raw = subprocess.run([FFMPEG, "-nostdin", "-v", "error", "-i", os.fspath(path),
                          "-f", "rawvideo", "-pix_fmt", "nv12", "-"],
                         capture_output=True, check=True, timeout=120).stdout
    size = w * h * 3 // 2
    assert len(raw) == size * len(shown) == size * len(packets)
    index_of = {p.offset: i for i, p in enumerate(packets)}
    frames = [b""] * len(packets)
    for rank, f in enumerate(shown):
        frames[index_of[int(f["pkt_pos"])]] = raw[rank * size:(rank + 1) * size]
    assert all(frames), "not one displayed frame per access unit"
    return Reference([p.data for p in packets], frames, w, h)


# --- the stand-in kernel ------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    width: int        # the CAPTURE format: the coded size
    height: int
    bytesperline: int

    @property
    def sizeimage(self) -> int:
        return self.bytesperline * self.height * 3 // 2


def layout_of(r: H264Request) -> Layout:
    w, h = r.sps.coded_size()
    return Layout(w, h, w + 64)   # padded rows: the layout is checked, not just the picture


def request_of(r: H264Request, layout: Layout, *, flags: int = 0,
               ctrls: list[tuple[int, bytes]] | None = None) -> RequestDecode:
    return RequestDecode(stream_id=STREAM, timestamp=r.ts, codec=Codec.H264,
                         flags=flags | REQUEST_NEW_FRAME, bitstream_offset=len(JUNK),
                         bitstream_len=len(r.bitstream), pixfmt=PixFmt.NV12,
                         width=layout.width, height=layout.height,
                         bytesperline=layout.bytesperline, sizeimage=layout.sizeimage,
                         ctrls=kernel_ctrls(Codec.H264, r.controls if ctrls is None else ctrls))


@dataclass
class Node(StandInNode):
    """The stand-in kernel (stateless_fakes) of stream STREAM."""

    stream_id: int = STREAM

    def send(self, r: H264Request, *, flags: int = 0,
             ctrls: list[tuple[int, bytes]] | None = None) -> Answer:
        return self.decode(request_of(r, layout_of(r), flags=flags, ctrls=ctrls), r.bitstream)


def assert_picture(answer: Answer, layout: Layout, want: bytes, w: int, h: int,
                   what: str) -> None:
    """The CAPTURE buffer: ffmpeg's w x h NV12 frame in the top-left of the coded
    picture at bytesperline, zeros past the coded width, nothing past sizeimage."""
    assert (answer.resp.error, answer.resp.bytes) == (0, layout.sizeimage), \
        (what, answer.resp.text)
    assert answer.capture is not None, what
    bpl, ch = layout.bytesperline, layout.height
    buf = np.frombuffer(answer.capture, np.uint8)
    luma = buf[:bpl * ch].reshape(ch, bpl)
    chroma = buf[bpl * ch:layout.sizeimage].reshape(ch // 2, bpl)
    src = np.frombuffer(want, np.uint8)
    assert np.array_equal(luma[:h, :w], src[:w * h].reshape(h, w)), f"{what}: luma"
    assert np.array_equal(chroma[:h // 2, :w], src[w * h:].reshape(h // 2, w)), f"{what}: chroma"
    assert not luma[:, layout.width:].any() and not chroma[:, layout.width:].any(), what
    assert answer.capture[layout.sizeimage:] == bytes([STALE_BYTE]) * CAPTURE_SLACK, what


def build(ref: Reference) -> list[H264Request]:
    requests = H264RequestBuilder().requests(ref.access_units)
    assert [r.access_unit for r in requests] == list(range(len(ref.access_units)))
    return requests


# --- every frame of the clips ---------------------------------------------------------------


@pytest.mark.parametrize("name", CLIPS)
def test_every_request_gets_ffmpegs_picture(name: str, clip_path: Callable[[str], Path]) -> None:
    """Every frame as one request (the first with RESET): each answer carries
    sizeimage bytes and the CAPTURE buffer ffmpeg's picture of that frame."""
    ref = reference(clip_path(name))
    requests = build(ref)
    node = Node()
    for n, r in enumerate(requests):
        answer = node.send(r, flags=REQUEST_RESET if n == 0 else 0)
        assert answer.took == {0, 1}
        assert_picture(answer, layout_of(r), ref.frames[n], ref.width, ref.height,
                       f"{name} request {n}")
    stream = node.handler.stream(STREAM)
    assert isinstance(stream, H264Stream)
    assert (stream.pictures, stream.errors) == (len(requests), 0)
    # what the clip is there for
    first = requests[0]
    if name == "x264-baseline-176x144":
        assert (first.sps.sps.profile_idc, first.sps.sps.pic_order_cnt_type) == (66, 2)
    if name == "h264-main-bpyramid-320x240":
        assert first.sps.sps.profile_idc == 77
        assert stream.bank is not None and stream.bank.depths == [0, 1, 2]
    if name.startswith("h264-high"):
        assert first.sps.sps.profile_idc == 100
        assert any(r.slices[0].slice_type == 1 for r in requests)   # B-frames
    if name == "x264-slices4-176x144":
        assert all(len(r.slices) == 4 for r in requests)
        assert all(len(split_annexb(r.bitstream)) == 4 for r in requests)
    # the buffers hold slices only: parameter sets travel as controls
    for r in requests:
        assert not any(u.nal_type in (NAL_SPS, NAL_PPS) for u in split_annexb(r.bitstream))


def test_slice_params_when_sent_must_match(clip_path: Callable[[str], Path]) -> None:
    """A client that also sends SLICE_PARAMS (the first slice's) is decoded the
    same; a SLICE_PARAMS whose first_mb_in_slice or slice_type is not the
    slice's is EINVAL."""
    ref = reference(clip_path("x264-slices4-176x144"))
    requests = build(ref)[:4]
    node = Node()
    for n, r in enumerate(requests):
        ctrls = controls_of(r.sps, r.pps, r.decode_params, slice_params=r.slice_params())
        assert_picture(node.send(r, ctrls=ctrls), layout_of(r), ref.frames[n], ref.width,
                       ref.height, f"request {n}")
    cases: list[tuple[dict[str, Any], str]] = [({"first_mb_in_slice": 11}, "first_mb_in_slice"),
                                               ({"slice_type": 2}, "slice_type")]
    for change, field_name in cases:
        node, r = Node(), requests[0]
        node.send(r)
        r = requests[1]
        ctrls = controls_of(r.sps, r.pps, r.decode_params,
                            slice_params=dataclasses.replace(r.slice_params(), **change))
        answer = node.send(r, ctrls=ctrls)
        assert (answer.resp.error, answer.took) == (errno.EINVAL, {0}), answer.resp.text
        assert f"SLICE_PARAMS.{field_name}" in answer.resp.text


# --- a control that contradicts the bitstream ----------------------------------------------


def _mutated(r: H264Request, **changes: Any) -> list[tuple[int, bytes]]:
    dp = dataclasses.replace(r.decode_params, **changes)
    return controls_of(r.sps, r.pps, dp)


MUTATIONS: dict[str, tuple[dict[str, Any], str]] = {
    "frame_num": ({"frame_num": 9}, "DECODE_PARAMS.frame_num 9"),
    "IDR flag on a P frame": ({"flags": V4L2_H264_DECODE_PARAM_FLAG_IDR_PIC}, "IDR_PIC 1"),
    "pic_order_cnt_lsb": ({"pic_order_cnt_lsb": 3}, "DECODE_PARAMS.pic_order_cnt_lsb 3"),
    "nal_ref_idc": ({"nal_ref_idc": 0}, "DECODE_PARAMS.nal_ref_idc 0"),
}


@pytest.mark.parametrize("what", list(MUTATIONS))
def test_decode_params_contradicting_the_slice_is_einval(
        what: str, clip_path: Callable[[str], Path], caplog: pytest.LogCaptureFixture) -> None:
    """Request 1 (a P frame) with one DECODE_PARAMS field not the slice's: EINVAL,
    the CAPTURE buffer never taken, one warning line naming the stream, the
    request's timestamp and the field."""
    ref = reference(clip_path("h264-high-128x96"))
    requests = build(ref)
    node = Node()
    node.send(requests[0], flags=REQUEST_RESET)
    r = requests[1]
    assert r.slices[0].slice_type == 0 and r.slices[0].nal_ref_idc   # a reference P frame
    changes, said = MUTATIONS[what]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="daedalus.stateless"):
        answer = node.send(r, ctrls=_mutated(r, **changes))
    assert (answer.resp.error, answer.resp.bytes, answer.took) == (errno.EINVAL, 0, {0})
    assert said in answer.resp.text
    lines = [rec.getMessage() for rec in caplog.records]
    assert len(lines) == 1, lines
    assert f"stream {STREAM}" in lines[0] and f"timestamp {r.ts}" in lines[0] and said in lines[0]


def test_pps_id_not_the_slices_is_einval(clip_path: Callable[[str], Path]) -> None:
    ref = reference(clip_path("h264-high-128x96"))
    r = build(ref)[0]
    pps = dataclasses.replace(r.pps, pps=dataclasses.replace(r.pps.pps, pic_parameter_set_id=3))
    answer = Node().send(r, flags=REQUEST_RESET, ctrls=controls_of(r.sps, pps, r.decode_params))
    assert (answer.resp.error, answer.took) == (errno.EINVAL, {0})
    assert "names PPS 0, the PPS given is 3" in answer.resp.text


# --- references by timestamp ----------------------------------------------------------------


def test_unknown_reference_is_einval_until_the_next_idr(
        clip_path: Callable[[str], Path], caplog: pytest.LogCaptureFixture) -> None:
    """A DECODE_PARAMS whose dpb[] names a timestamp never decoded: EINVAL (one
    warning); the next frames, with correct controls, EILSEQ without being
    decoded; the IDR again (the client seeks back to it, new timestamps) and
    the frames after it decode to ffmpeg's pictures."""
    ref = reference(clip_path("h264-high-128x96"))
    requests = build(ref)
    node = Node()
    for n in range(3):
        assert_picture(node.send(requests[n], flags=REQUEST_RESET if n == 0 else 0),
                       layout_of(requests[n]), ref.frames[n], ref.width, ref.height, f"{n}")
    r = requests[3]
    dp = dataclasses.replace(r.decode_params, dpb=list(r.decode_params.dpb))
    used = [i for i, e in enumerate(dp.dpb) if e.flags]
    assert used
    dp.dpb[used[0]] = dataclasses.replace(dp.dpb[used[0]], reference_ts=777_000)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="daedalus.stateless"):
        answer = node.send(r, ctrls=controls_of(r.sps, r.pps, dp))
    assert (answer.resp.error, answer.took) == (errno.EINVAL, {0})
    assert f"dpb[{used[0]}].reference_ts 777000" in answer.resp.text
    assert len(caplog.records) == 1 and f"timestamp {r.ts}" in caplog.records[0].getMessage()
    for r in requests[4:6]:   # correct controls, but the stream is behind
        answer = node.send(r)
        assert (answer.resp.error, answer.took) == (errno.EILSEQ, {0})
        assert "waiting for an IDR" in answer.resp.text
    again = H264RequestBuilder(first_number=100).requests(ref.access_units[:4])
    for n, r in enumerate(again):
        assert_picture(node.send(r), layout_of(r), ref.frames[n], ref.width, ref.height,
                       f"after the error, request {n}")
    stream = node.handler.stream(STREAM)
    assert isinstance(stream, H264Stream) and stream.errors == 3


def test_reference_not_a_reference_picture_is_einval(clip_path: Callable[[str], Path]) -> None:
    """dpb[] naming a non-reference picture (a B-frame's timestamp) is refused too."""
    ref = reference(clip_path("h264-high-320x240"))
    requests = build(ref)
    nonref = next(k for k, r in enumerate(requests) if not r.slices[0].nal_ref_idc)
    node = Node()
    for n in range(nonref + 1):
        node.send(requests[n], flags=REQUEST_RESET if n == 0 else 0)
    r = requests[nonref + 1]
    dp = dataclasses.replace(r.decode_params, dpb=list(r.decode_params.dpb))
    free = next(i for i, e in enumerate(dp.dpb) if not e.flags)
    dp.dpb[free] = dataclasses.replace(
        dp.dpb[free], reference_ts=requests[nonref].ts, frame_num=requests[nonref].slices[0]
        .frame_num, flags=V4L2_H264_DPB_ENTRY_FLAG_VALID | V4L2_H264_DPB_ENTRY_FLAG_ACTIVE)
    answer = node.send(r, ctrls=controls_of(r.sps, r.pps, dp))
    assert (answer.resp.error, answer.took) == (errno.EINVAL, {0})
    assert f"reference_ts {requests[nonref].ts}" in answer.resp.text


# --- what the node does not take --------------------------------------------------------------


def test_first_frame_not_an_idr_is_eilseq(clip_path: Callable[[str], Path]) -> None:
    requests = build(reference(clip_path("h264-high-128x96")))
    answer = Node().send(requests[1], flags=REQUEST_RESET)
    assert (answer.resp.error, answer.took) == (errno.EILSEQ, {0})
    assert "no IDR frame since the stream started" in answer.resp.text


def test_hold_is_eopnotsupp(clip_path: Callable[[str], Path]) -> None:
    r = build(reference(clip_path("h264-high-128x96")))[0]
    answer = Node().send(r, flags=REQUEST_RESET | REQUEST_HOLD)
    assert (answer.resp.error, answer.took) == (errno.EOPNOTSUPP, {0})
    assert "HOLD_CAPTURE_BUF" in answer.resp.text


def test_parameter_sets_in_the_buffer_are_einval(clip_path: Callable[[str], Path]) -> None:
    ref = reference(clip_path("h264-high-128x96"))
    r = build(ref)[0]
    with_ps = dataclasses.replace(r, bitstream=ref.access_units[0])   # SPS / PPS / SEI / IDR
    answer = Node().send(with_ps, flags=REQUEST_RESET)
    assert (answer.resp.error, answer.took) == (errno.EINVAL, {0})
    assert "NAL unit type 7" in answer.resp.text


def test_scaling_matrix_flagged_but_absent_is_einval(clip_path: Callable[[str], Path]) -> None:
    """The PPS flags SCALING_MATRIX_PRESENT: the node's SCALING_MATRIX control
    is sent all the same (zero when never set); flagged but missing from the
    request's controls altogether is EINVAL before any buffer is read."""
    r = build(reference(clip_path("h264-high-128x96")))[0]
    pps = dataclasses.replace(r.pps, pps=dataclasses.replace(r.pps.pps, flags=r.pps.pps.flags
                                                             | 0x0080))
    req = request_of(r, layout_of(r), flags=REQUEST_RESET,
                     ctrls=controls_of(r.sps, pps, r.decode_params))
    req = dataclasses.replace(req, ctrls=tuple(
        c for c in req.ctrls if c.id != V4L2_CID_STATELESS_H264_SCALING_MATRIX))
    answer = Node().decode(req, r.bitstream)
    assert (answer.resp.error, answer.took) == (errno.EINVAL, {0})
    assert "SCALING_MATRIX" in answer.resp.text


def test_controls_round_trip() -> None:
    dp = DecodeParams(frame_num=5, top_field_order_cnt=-4, bottom_field_order_cnt=-2)
    dp.dpb[3].reference_ts = 123_000
    assert DecodeParams.unpack(dp.pack()) == dp
    assert len(dp.pack()) == CODEC_CTRLS[Codec.H264][V4L2_CID_STATELESS_H264_DECODE_PARAMS].size
    assert V4L2_CID_STATELESS_H264_PPS in CODEC_CTRLS[Codec.H264]
