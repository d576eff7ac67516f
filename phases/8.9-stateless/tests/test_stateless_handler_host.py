"""The DECODE_REQUEST handler on the host, its buffers memfds (no kernel, no guest).

A stand-in kernel (``Node``) sends each VP9 frame of a corpus clip as one
DECODE_REQUEST, with the controls a stateless client fills
(``vp9_header.fill``, reference timestamps from the client's own slots), its
OUTPUT buffer a memfd holding the frame behind junk at ``bitstream_offset``
and its CAPTURE buffer a memfd larger than ``sizeimage``
(``daedalus.dispatch.loopback.MemfdDevice``: contents valid only between the
handler's syncs).

Reference (independent path): Debian's ffmpeg decoding the same frames as an
IVF file, one frame per packet, with a show_existing_frame frame of one
refreshed slot inserted after each hidden frame: ffmpeg then outputs exactly
one picture per request, in request order, the hidden frame's picture being
the one the slot shows. For the clips' shown frames that is the clip's own
ffmpeg decode (tests/test_vp9_header_host.py checks that inserting the
frame changes no other picture). Each CAPTURE buffer must hold that picture
in NV12 at the request's bytesperline (rows padded with zeros, laid out
here with numpy), and nothing past ``sizeimage`` may be written.
"""

from __future__ import annotations

import errno
import logging
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest
from stateless_fakes import CAPTURE_SLACK, JUNK, Answer, StandInNode

from daedalus.dispatch.loopback import STALE_BYTE
from daedalus.m2m.reference import FFMPEG, reference_output
from daedalus.parse import corpus
from daedalus.parse.readers import open_stream
from daedalus.proto import (
    CTRL_IN_REQUEST,
    REQUEST_CTRLS_MAX,
    REQUEST_NEW_FRAME,
    REQUEST_RESET,
    Codec,
    MsgType,
    PixFmt,
    RequestCtrl,
    RequestDecode,
    pack_header,
    pack_request_decode,
    parse_header,
    parse_request_decode_resp,
)
from daedalus.stateless import vp9_ctrls as c
from daedalus.stateless.handler import (
    V4L2_CID_STATELESS_H264_DECODE_PARAMS,
    V4L2_CID_STATELESS_H264_PPS,
    V4L2_CID_STATELESS_H264_SPS,
    V4L2_CID_STATELESS_VP9_COMPRESSED_HDR,
    V4L2_CID_STATELESS_VP9_FRAME,
    StatelessHandler,
)
from daedalus.stateless.vp9_check import Vp9RefSlots
from daedalus.stateless.vp9_header import (
    NUM_REF_FRAMES,
    Vp9FrameHeader,
    Vp9Parser,
    fill,
    show_existing_frame,
    split_superframe,
)

pytestmark = pytest.mark.skipif(not Path(FFMPEG).is_file(), reason="needs Debian's ffmpeg")

CLIPS = ["vp9-320x240", "vp9-320x240-altref"]
ALTREF = "vp9-320x240-altref"
W, H = 320, 240
BYTESPERLINE = 384             # padded rows: the layout is checked, not just the picture
SIZEIMAGE = BYTESPERLINE * H * 3 // 2
TS = 1000
COMPRESSED_HDR_SIZE = 2040     # struct v4l2_ctrl_vp9_compressed_hdr


def frames_of(name: str) -> list[bytes]:
    _info, packets = open_stream(corpus.path(name))
    return [frame for packet in packets for frame in split_superframe(packet.data)]


def _ivf(frames: list[bytes]) -> bytes:
    head = struct.pack("<4sHH4sHHIII4x", b"DKIF", 0, 32, b"VP90", W, H, 30, 1, len(frames))
    return head + b"".join(struct.pack("<IQ", len(f), i) + f for i, f in enumerate(frames))


def refreshed_slot(h: Vp9FrameHeader) -> int:
    return next(i for i in range(NUM_REF_FRAMES) if h.refresh_frame_flags >> i & 1)


def reference_pictures(frames: list[bytes], tmp_path: Path) -> list[bytes]:
    """Debian's ffmpeg's NV12 picture for each frame of *frames*, in order: a
    shown frame's own, a hidden frame's through an inserted
    show_existing_frame of a slot it refreshed."""
    parser, packets = Vp9Parser(), []
    for frame in frames:
        h = parser.parse_and_advance(frame)
        packets.append(frame)
        if not h.show_frame and not h.show_existing_frame:
            packets.append(show_existing_frame(h.profile, refreshed_slot(h)))
    path = tmp_path / "requests.ivf"
    path.write_bytes(_ivf(packets))
    raw = reference_output(path, "nv12")
    size = W * H * 3 // 2
    assert len(raw) == size * len(frames)
    return [raw[i:i + size] for i in range(0, len(raw), size)]


def laid_out(tight: bytes) -> bytes:
    """A tightly packed W x H NV12 picture at BYTESPERLINE, rows zero-padded."""
    out = np.zeros(SIZEIMAGE, np.uint8)
    src = np.frombuffer(tight, np.uint8)
    out[:BYTESPERLINE * H].reshape(H, BYTESPERLINE)[:, :W] = src[:W * H].reshape(H, W)
    out[BYTESPERLINE * H:].reshape(H // 2, BYTESPERLINE)[:, :W] = src[W * H:].reshape(H // 2, W)
    return out.tobytes()


@dataclass
class Client:
    """A stateless client's view of the stream: its parser and slots, from
    which it fills V4L2_CID_STATELESS_VP9_FRAME (as GStreamer does)."""

    parser: Vp9Parser = field(default_factory=Vp9Parser)
    slots: Vp9RefSlots = field(default_factory=Vp9RefSlots)
    last: c.Vp9Frame = field(default_factory=c.Vp9Frame)

    def control(self, frame: bytes, timestamp: int) -> tuple[Vp9FrameHeader, c.Vp9Frame]:
        h = self.parser.parse_and_advance(frame)
        if not h.show_existing_frame:  # (the control keeps its last value)
            self.last = fill(h, self.slots.ts)
        self.slots.update(h.refresh_frame_flags, timestamp)
        return h, self.last


def vp9_ctrls(ctrl: c.Vp9Frame) -> tuple[RequestCtrl, ...]:
    return (RequestCtrl(V4L2_CID_STATELESS_VP9_FRAME, CTRL_IN_REQUEST, 1, ctrl.pack()),
            RequestCtrl(V4L2_CID_STATELESS_VP9_COMPRESSED_HDR, CTRL_IN_REQUEST, 1,
                        bytes(COMPRESSED_HDR_SIZE)))


def request(frame: bytes, ctrls: tuple[RequestCtrl, ...], timestamp: int, *, flags: int = 0,
            stream_id: int = 7, codec: int = Codec.VP9) -> RequestDecode:
    return RequestDecode(stream_id=stream_id, timestamp=timestamp, codec=codec,
                         flags=flags | REQUEST_NEW_FRAME, bitstream_offset=len(JUNK),
                         bitstream_len=len(frame), pixfmt=PixFmt.NV12, width=W, height=H,
                         bytesperline=BYTESPERLINE, sizeimage=SIZEIMAGE, ctrls=ctrls)


class Node(StandInNode):
    """The stand-in kernel (stateless_fakes): every CAPTURE buffer sized for
    SIZEIMAGE, and a malformed payload need not name a stream."""

    def send(self, payload: bytes, frame: bytes = b"") -> Answer:
        return self.exchange(payload, frame, SIZEIMAGE, (self.stream_id, None))

    def decode(self, req: RequestDecode, bitstream: bytes) -> Answer:
        return self.send(pack_request_decode(req), bitstream)


def assert_picture(answer: Answer, tight: bytes, what: str) -> None:
    assert (answer.resp.error, answer.resp.bytes) == (0, SIZEIMAGE), (what, answer.resp.text)
    assert answer.capture is not None, what
    assert answer.capture[:SIZEIMAGE] == laid_out(tight), what
    assert answer.capture[SIZEIMAGE:] == bytes([STALE_BYTE]) * CAPTURE_SLACK, what


# --- every frame of the clips ------------------------------------------------------


@pytest.mark.parametrize("name", CLIPS)
def test_every_request_gets_ffmpegs_picture(name: str, tmp_path: Path) -> None:
    """Every frame, shown or hidden, as one request: each answer carries
    sizeimage bytes, and the CAPTURE buffer holds ffmpeg's picture for it
    (hidden frames: the picture of the slot they refresh)."""
    frames = frames_of(name)
    want = reference_pictures(frames, tmp_path)
    node, client = Node(), Client()
    hidden = 0
    for n, frame in enumerate(frames):
        h, ctrl = client.control(frame, n * TS)
        hidden += not h.show_frame
        answer = node.decode(request(frame, vp9_ctrls(ctrl), n * TS,
                                     flags=REQUEST_RESET if n == 0 else 0), frame)
        assert answer.took == {0, 1}
        assert_picture(answer, want[n], f"{name} frame {n}")
    assert hidden == (1 if name == ALTREF else 0)
    in_flight = [e for e in node.device.events if e.what == "in_flight"]
    assert len(in_flight) == len(frames)   # the IN_FLIGHT check after every OUTPUT copy
    stream = node.handler.stream(7)
    assert stream is not None and (stream.pictures, stream.errors) == (len(frames), 0)


def test_show_existing_frame_request_gets_the_slots_picture(tmp_path: Path) -> None:
    """A request whose frame is a show_existing_frame (the control keeps its
    last value) gets the picture of the frame in that slot: ffmpeg's picture
    of that frame."""
    frames = frames_of("vp9-320x240")[:4]
    want = reference_pictures(frames, tmp_path)
    node, client = Node(), Client()
    for n, frame in enumerate(frames):
        _, ctrl = client.control(frame, n * TS)
        assert_picture(node.decode(request(frame, vp9_ctrls(ctrl), n * TS), frame), want[n],
                       f"frame {n}")
    # the slot holding the oldest frame (not the last one decoded)
    held = [ts for ts in client.slots.ts if ts is not None]
    slot = client.slots.ts.index(min(held))
    number = min(held) // TS
    assert number < len(frames) - 1
    shown = show_existing_frame(0, slot)
    _, ctrl = client.control(shown, 99 * TS)
    assert_picture(node.decode(request(shown, vp9_ctrls(ctrl), 99 * TS), shown), want[number],
                   f"show_existing_frame of slot {slot} (frame {number})")


# --- a control that contradicts its frame ---------------------------------------------


def test_mutated_control_is_refused_until_the_next_key_frame(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A VP9_FRAME control whose base_q_idx is not the frame's: EINVAL, the
    CAPTURE buffer never taken, one warning naming the request's timestamp
    and the field. The frames after it are refused (their references were
    never decoded) until a key frame, which decodes to ffmpeg's picture
    again, and so does the inter frame after it."""
    frames = frames_of(ALTREF)
    want = reference_pictures(frames, tmp_path)
    node, client = Node(), Client()
    for n in range(3):
        _, ctrl = client.control(frames[n], n * TS)
        assert_picture(node.decode(request(frames[n], vp9_ctrls(ctrl), n * TS), frames[n]),
                       want[n], f"frame {n}")
    _, ctrl = client.control(frames[3], 3 * TS)
    bad = replace(ctrl, quant=replace(ctrl.quant, base_q_idx=ctrl.quant.base_q_idx + 1))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="daedalus.stateless"):
        answer = node.decode(request(frames[3], vp9_ctrls(bad), 3 * TS), frames[3])
    assert (answer.resp.error, answer.resp.bytes, answer.took) == (errno.EINVAL, 0, {0})
    assert "quant.base_q_idx" in answer.resp.text
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "timestamp 3000" in lines[0] and "base_q_idx" in lines[0]
    # the next frame, with a correct control: refused, its reference was not decoded
    _, ctrl = client.control(frames[4], 4 * TS)
    answer = node.decode(request(frames[4], vp9_ctrls(ctrl), 4 * TS), frames[4])
    assert (answer.resp.error, answer.took) == (errno.EILSEQ, {0})
    assert "waiting for a key frame" in answer.resp.text
    # the key frame again (the client seeks back to it), then the frame after it
    client = Client()
    for n, ts in ((0, 10 * TS), (1, 11 * TS)):
        _, ctrl = client.control(frames[n], ts)
        assert_picture(node.decode(request(frames[n], vp9_ctrls(ctrl), ts), frames[n]),
                       want[n], f"frame {n} after the error")


def test_reset_starts_the_stream_afresh(tmp_path: Path) -> None:
    """DAEDALUS_REQUEST_RESET drops the decoder state: the key frame after it
    decodes, with references named by the new timestamps."""
    frames = frames_of("vp9-320x240")[:3]
    want = reference_pictures(frames, tmp_path)
    node = Node()
    for base in (0, 100):
        client = Client()
        for n, frame in enumerate(frames):
            ts = (base + n) * TS
            _, ctrl = client.control(frame, ts)
            answer = node.decode(request(frame, vp9_ctrls(ctrl), ts,
                                         flags=REQUEST_RESET if n == 0 else 0), frame)
            assert_picture(answer, want[n], f"pass {base}, frame {n}")
    stream = node.handler.stream(7)
    assert stream is not None and stream.resets == 2


# --- malformed payloads ------------------------------------------------------------------


def _good() -> tuple[RequestDecode, bytes]:
    frame = frames_of("vp9-320x240")[0]
    return request(frame, vp9_ctrls(Client().control(frame, 0)[1]), 0), frame


def _malformed() -> dict[str, bytes]:
    req, _ = _good()
    payload = pack_request_decode(req)
    frame_ctrl, hdr_ctrl = req.ctrls
    return {
        "short": payload[:40],
        "struct only, ctrls_len says more": pack_request_decode(replace(req, ctrls=()),
                                                                ctrls_len=16),
        "ctrls_len lies (8 more)": pack_request_decode(req, ctrls_len=len(payload) - 80 + 8),
        "ctrls_len lies (8 less)": pack_request_decode(req, ctrls_len=len(payload) - 80 - 8),
        "truncated controls": payload[:-8],
        "nr_ctrls lies": pack_request_decode(req, nr_ctrls=3),
        "nr_ctrls too few": pack_request_decode(req, nr_ctrls=1),
        "unknown control id": pack_request_decode(replace(req, ctrls=(
            frame_ctrl, replace(hdr_ctrl, id=V4L2_CID_STATELESS_VP9_FRAME + 7)))),
        "too many controls": pack_request_decode(replace(req, ctrls=(
            frame_ctrl, hdr_ctrl, replace(hdr_ctrl, id=V4L2_CID_STATELESS_H264_SPS)))),
        "a control twice": pack_request_decode(replace(req, ctrls=(frame_ctrl, frame_ctrl))),
        "wrong control size": pack_request_decode(replace(req, ctrls=(
            replace(frame_ctrl, value=frame_ctrl.value + bytes(8)), hdr_ctrl))),
        "two elements": pack_request_decode(replace(req, ctrls=(
            replace(frame_ctrl, elems=2), hdr_ctrl))),
        "VP9_FRAME missing": pack_request_decode(replace(req, ctrls=(hdr_ctrl,))),
        "unknown control flag": pack_request_decode(replace(req, ctrls=(
            replace(frame_ctrl, flags=0x80), hdr_ctrl))),
        "reserved word": pack_request_decode(req, reserved=[0, 1, 0]),
        "unknown flag": pack_request_decode(replace(req, flags=0x100)),
        "unknown codec": pack_request_decode(replace(req, codec=9)),
        "unknown pixfmt": pack_request_decode(replace(req, pixfmt=99)),
        "zero width": pack_request_decode(replace(req, width=0)),
        # a 12-byte value (4 bytes of padding), its last padding byte set
        "padding not zero": pack_request_decode(replace(req, ctrls=(
            frame_ctrl, replace(hdr_ctrl, value=bytes(12)))))[:-1] + b"\x01",
        "ctrls_len beyond the maximum": pack_request_decode(replace(req, ctrls=(
            frame_ctrl, replace(hdr_ctrl, value=bytes(REQUEST_CTRLS_MAX + 8))))),
    }


MALFORMED = _malformed()
# what each answer's message must say (the reason, not an incidental one)
REASONS = {
    "short": "shorter than", "struct only, ctrls_len says more": "ctrls_len 16 but 0",
    "ctrls_len lies (8 more)": "bytes follow", "ctrls_len lies (8 less)": "bytes follow",
    "truncated controls": "bytes follow", "nr_ctrls lies": "runs past ctrls_len",
    "nr_ctrls too few": "1 controls take", "unknown control id": "is not one of codec VP9",
    "too many controls": "3 controls, codec VP9 has 2", "a control twice": "twice",
    "wrong control size": "of 176 bytes, expected 1 of 168",
    "two elements": "2 element(s)", "VP9_FRAME missing": "VP9_FRAME missing",
    "unknown control flag": "unknown flags 0x80", "reserved word": "reserved",
    "unknown flag": "unknown request flags", "unknown codec": "unknown codec",
    "unknown pixfmt": "unknown pixfmt", "zero width": "CAPTURE size 0x240",
    "padding not zero": "padding not zero", "ctrls_len beyond the maximum": "exceeds",
}


@pytest.mark.parametrize("what", list(MALFORMED))
def test_malformed_payload_is_einval_without_touching_buffers(what: str) -> None:
    node = Node()
    answer = node.send(MALFORMED[what], _good()[1])
    assert (answer.resp.error, answer.resp.bytes) == (errno.EINVAL, 0), answer.resp.text
    assert REASONS[what] in answer.resp.text
    assert node.device.events == []   # neither buffer asked for, mapped or synced
    assert node.handler.stream_ids() == []


def test_the_good_payload_of_the_malformed_ones_decodes(tmp_path: Path) -> None:
    req, frame = _good()
    want = reference_pictures([frame], tmp_path)
    assert_picture(Node().decode(req, frame), want[0], "the unmutated request")


# --- the buffers and the codec -------------------------------------------------------------


def test_output_given_up_while_copied_is_not_decoded() -> None:
    req, frame = _good()
    node = Node()
    node.device.given_up.add(node.cookie + 1)
    answer = node.decode(req, frame)
    assert (answer.resp.error, answer.took) == (errno.ETIMEDOUT, {0})


def test_bitstream_past_the_output_buffer_is_einval() -> None:
    req, frame = _good()
    answer = Node().decode(replace(req, bitstream_len=len(frame) + 100), frame)
    assert (answer.resp.error, answer.took) == (errno.EINVAL, {0})


def test_sizeimage_not_the_layouts_is_einval() -> None:
    req, frame = _good()
    answer = Node().decode(replace(req, sizeimage=SIZEIMAGE - 2), frame)
    assert (answer.resp.error, answer.resp.bytes, answer.took) == (errno.EINVAL, 0, {0})


def test_without_a_device_eopnotsupp() -> None:
    req, _ = _good()
    payload = pack_request_decode(req)
    header = parse_header(pack_header(MsgType.DECODE_REQUEST, 5, len(payload)))
    status, answer = StatelessHandler().handle(header, payload)
    assert status == 0 and parse_request_decode_resp(answer).error == errno.EOPNOTSUPP


def test_h264_with_zeroed_controls_is_einval() -> None:
    """H.264 is decoded now (tests/test_stateless_h264_host.py); a request whose
    controls are all zero does not describe its slice: EINVAL, CAPTURE untouched."""
    ctrls = (RequestCtrl(V4L2_CID_STATELESS_H264_SPS, 1, 1, bytes(1048)),
             RequestCtrl(V4L2_CID_STATELESS_H264_PPS, 1, 1, bytes(12)),
             RequestCtrl(V4L2_CID_STATELESS_H264_DECODE_PARAMS, 1, 1, bytes(560)))
    node = Node()
    answer = node.decode(request(b"\x00\x00\x01\x65", ctrls, 0, codec=Codec.H264),
                         b"\x00\x00\x01\x65")
    assert (answer.resp.error, answer.took) == (errno.EINVAL, {0})
    assert "does not parse against the SPS / PPS controls" in answer.resp.text
