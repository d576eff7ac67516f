"""AV1 through the stateless DECODE_REQUEST handler on the host (no kernel, no guest).

The requests are our client's (``av1_fill.fill_stream``: per frame the
SEQUENCE / FRAME / TILE_GROUP_ENTRY (/ FILM_GRAIN) controls, references by
request timestamp, the OUTPUT buffer the frame's OBU payloads). A stand-in
kernel (``Node``) sends each as one DECODE_REQUEST carrying every AV1
control of the node, as the kernel does (those the request set flagged
DAEDALUS_CTRL_IN_REQUEST, the others zero; TILE_GROUP_ENTRY's ``elems`` the
count of entries), the OUTPUT buffer a memfd with the frame behind junk at
``bitstream_offset`` and every byte outside the tiles the entries name
overwritten, the CAPTURE buffer a memfd larger than ``sizeimage``
(``daedalus.dispatch.loopback.MemfdDevice``).

Reference (independent path): Debian's ffmpeg CLI decoding the clip
(``-f rawvideo -pix_fmt nv12`` / ``p010le``), its pictures in display order.
A shown frame's request must carry the next of them; a hidden frame's
request carries its picture (the daemon shows it through a slot), which must
be the one ffmpeg shows where the client's show_existing_frame re-shows it.
"""

from __future__ import annotations

import ctypes
import errno
import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from stateless_fakes import CAPTURE_SLACK, JUNK, Answer, StandInNode, kernel_ctrls

from daedalus.dispatch.loopback import STALE_BYTE
from daedalus.m2m.layout import Geometry, buffer_size, crop, planes
from daedalus.m2m.reference import FFMPEG, reference_output
from daedalus.parse import corpus
from daedalus.parse.readers import read_all
from daedalus.proto import (
    CTRL_IN_REQUEST,
    REQUEST_CTRLS_MAX,
    REQUEST_NEW_FRAME,
    REQUEST_RESET,
    Codec,
    PixFmt,
    RequestCtrl,
    RequestDecode,
    pack_request_decode,
    parse_request_decode,
)
from daedalus.stateless import av1_ctrls as C
from daedalus.stateless.av1_fill import Request, ShowExisting, fill_stream
from daedalus.stateless.av1_stream import Av1Stream
from daedalus.stateless.client_av1 import av1_request_controls
from daedalus.stateless.handler import CODEC_CTRLS

pytestmark = pytest.mark.skipif(not Path(FFMPEG).is_file(), reason="needs Debian's ffmpeg")

STREAM = 9
CLIPS = ["av1-320x240", "av1-128x96", "av1-174x98"]
TILES = C.V4L2_CID_STATELESS_AV1_TILE_GROUP_ENTRY
ENTRY = ctypes.sizeof(C.Av1TileGroupEntry)


@dataclass(frozen=True)
class Layout:
    width: int
    height: int
    bytesperline: int
    pixfmt: PixFmt

    @property
    def sizeimage(self) -> int:
        return buffer_size(self.bytesperline, self.height, self.pixfmt)


def layout_of(r: Request, pixfmt: PixFmt = PixFmt.NV12) -> Layout:
    """The CAPTURE format the node derives from SEQUENCE, rows padded (the layout
    is checked, not just the picture)."""
    w, h = r.sequence.max_frame_width_minus_1 + 1, r.sequence.max_frame_height_minus_1 + 1
    sample = 2 if pixfmt == PixFmt.P010 else 1
    return Layout(w, h, (w + 64) * sample, pixfmt)


def tiles_only(r: Request) -> bytes:
    """The OUTPUT bytes with everything outside the tiles the entries name overwritten."""
    keep = bytearray(b"\xa5" * len(r.buffer))
    for e in r.entries:
        keep[e.tile_offset:e.tile_offset + e.tile_size] = \
            r.buffer[e.tile_offset:e.tile_offset + e.tile_size]
    return bytes(keep)


def request_of(r: Request, layout: Layout, *, flags: int = 0,
               ctrls: tuple[RequestCtrl, ...] | None = None) -> RequestDecode:
    return RequestDecode(stream_id=STREAM, timestamp=r.timestamp, codec=Codec.AV1,
                         flags=flags | REQUEST_NEW_FRAME, bitstream_offset=len(JUNK),
                         bitstream_len=len(r.buffer), pixfmt=layout.pixfmt,
                         width=layout.width, height=layout.height,
                         bytesperline=layout.bytesperline, sizeimage=layout.sizeimage,
                         ctrls=kernel_ctrls(Codec.AV1, av1_request_controls(r)) if ctrls is None
                         else ctrls)


@dataclass
class Node(StandInNode):
    """The stand-in kernel (stateless_fakes) of stream STREAM."""

    stream_id: int = STREAM

    def send(self, r: Request, *, flags: int = 0, pixfmt: PixFmt = PixFmt.NV12,
             ctrls: tuple[RequestCtrl, ...] | None = None) -> Answer:
        return self.decode(request_of(r, layout_of(r, pixfmt), flags=flags, ctrls=ctrls),
                           tiles_only(r))

    def stream(self) -> Av1Stream:
        stream = self.handler.stream(STREAM)
        assert isinstance(stream, Av1Stream)
        return stream


def picture_of(answer: Answer, layout: Layout, r: Request, what: str) -> bytes:
    """The frame's tightly packed picture out of the CAPTURE buffer, after checking
    the answer, the padding (zero) and the bytes past sizeimage (untouched)."""
    assert (answer.resp.error, answer.resp.bytes) == (0, layout.sizeimage), \
        (what, answer.resp.text)
    assert answer.capture is not None, what
    w, h = int(r.frame.upscaled_width), int(r.frame.frame_height_minus_1) + 1
    geometry = Geometry(w, h, layout.pixfmt)
    luma, chroma = planes(np.frombuffer(answer.capture, np.uint8), layout.bytesperline,
                          layout.height, layout.pixfmt)
    assert not luma[:, geometry.luma_row:].any() and not luma[h:].any(), what
    assert not chroma[:, geometry.chroma_row:].any(), what
    assert answer.capture[layout.sizeimage:] == bytes([STALE_BYTE]) * CAPTURE_SLACK, what
    return crop(answer.capture, layout.bytesperline, layout.height, geometry)


def events(name: str, first_timestamp: int = 1000) -> Iterator[Request | ShowExisting]:
    _, packets = read_all(corpus.path(name))
    return fill_stream((p.data for p in packets), first_timestamp=first_timestamp)


def play(node: Node, name: str, want: bytes, pixfmt: PixFmt, *, reset: bool = True,
         first_timestamp: int = 1000) -> tuple[int, int, int]:
    """Every frame of *name* as one request (the first with RESET when *reset*), each
    shown picture (and each shown again) checked against ffmpeg's, in order.
    Returns (requests, hidden frames, client show_existing_frames)."""
    pictures: dict[int, bytes] = {}
    shown: list[bytes] = []
    requests = hidden = again = 0
    for ev in events(name, first_timestamp):
        if isinstance(ev, ShowExisting):
            again += 1
            shown.append(pictures[ev.timestamp])
            continue
        flags = REQUEST_RESET if reset and requests == 0 else 0
        answer = node.send(ev, flags=flags, pixfmt=pixfmt)
        assert answer.took == {0, 1}
        picture = picture_of(answer, layout_of(ev, pixfmt), ev, f"{name} request {requests}")
        pictures[ev.timestamp] = picture
        requests += 1
        if ev.frame.flags & C.V4L2_AV1_FRAME_FLAG_SHOW_FRAME:
            shown.append(picture)
        else:
            hidden += 1
    size = len(shown[0])
    assert len(want) == size * len(shown), f"{len(shown)} pictures, ffmpeg {len(want) / size}"
    for i, picture in enumerate(shown):
        assert picture == want[i * size:(i + 1) * size], f"{name}: picture {i} differs"
    return requests, hidden, again


# --- every frame of the clips -------------------------------------------------------------


@pytest.mark.parametrize("name", CLIPS)
def test_every_request_gets_ffmpegs_picture(name: str) -> None:
    """Each answer carries sizeimage bytes and the CAPTURE buffer the frame's picture:
    the shown ones in ffmpeg's order, hidden ones where the client re-shows them."""
    node = Node()
    requests, hidden, again = play(node, name, reference_output(corpus.path(name), "nv12"),
                                   PixFmt.NV12)
    assert hidden > 0 and again > 0   # alt-ref frames and show_existing_frame
    stream = node.stream()
    assert (stream.requests, stream.pictures, stream.errors) == (requests, requests, 0)


def test_10bit_into_p010_is_ffmpegs_p010le() -> None:
    name = "av1-10bit-128x96"
    node = Node()
    first = next(ev for ev in events(name) if isinstance(ev, Request))
    assert first.sequence.bit_depth == 10
    play(node, name, reference_output(corpus.path(name), "p010le"), PixFmt.P010)
    # the same stream into an NV12 CAPTURE format: not this layout's picture
    answer = Node().send(first, flags=REQUEST_RESET, pixfmt=PixFmt.NV12)
    assert answer.resp.error == errno.EOPNOTSUPP and "P010" in answer.resp.text


# --- references by timestamp ----------------------------------------------------------------


def test_wrong_reference_is_einval_until_the_next_key_frame(
        caplog: pytest.LogCaptureFixture) -> None:
    """An inter frame whose reference_frame_ts names a timestamp its slot does not
    hold: EINVAL (the OUTPUT buffer read, CAPTURE never taken), one warning line;
    the next frames, with correct controls, EILSEQ without being decoded; the key
    frame again (the client seeks back, new timestamps) and every frame after it
    are ffmpeg's pictures."""
    name = "av1-128x96"
    reqs = [ev for ev in events(name) if isinstance(ev, Request)]
    node = Node()
    node.send(reqs[0], flags=REQUEST_RESET)
    bad = reqs[1]
    assert bad.frame.frame_type == C.V4L2_AV1_INTER_FRAME
    frame = C.unpack(C.Av1Frame, C.pack(bad.frame))
    slot = int(frame.ref_frame_idx[0])
    frame.reference_frame_ts[slot] = 777_000
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="daedalus.stateless"):
        answer = node.send(replace(bad, frame=frame))
    assert (answer.resp.error, answer.took) == (errno.EINVAL, {0})
    assert f"slot {slot}" in answer.resp.text and "777000" in answer.resp.text
    lines = [rec.getMessage() for rec in caplog.records]
    assert len(lines) == 1, lines
    assert f"stream {STREAM}" in lines[0] and f"timestamp {bad.timestamp}" in lines[0]
    for r in reqs[1:4]:   # correct controls, but the stream is behind
        answer = node.send(r)
        assert (answer.resp.error, answer.took) == (errno.EILSEQ, {0})
        assert "waiting for a key frame" in answer.resp.text
    play(node, name, reference_output(corpus.path(name), "nv12"), PixFmt.NV12, reset=False,
         first_timestamp=500_000)
    assert node.stream().errors == 4


def test_first_frame_not_a_key_frame_is_eilseq() -> None:
    reqs = [ev for ev in events("av1-128x96") if isinstance(ev, Request)]
    answer = Node().send(reqs[1], flags=REQUEST_RESET)
    assert (answer.resp.error, answer.took) == (errno.EILSEQ, {0})
    assert "no key frame since the stream started" in answer.resp.text


# --- malformed controls -------------------------------------------------------------------


def _with_tiles(r: Request, elems: int, value: bytes, flags: int = CTRL_IN_REQUEST
                ) -> tuple[RequestCtrl, ...]:
    return tuple(RequestCtrl(c.id, flags, elems, value) if c.id == TILES else c
                 for c in kernel_ctrls(Codec.AV1, av1_request_controls(r)))


def test_malformed_tile_group_entry_is_einval() -> None:
    """elems 0, elems not the value's entries, more than 512, or not set by the
    request: EINVAL before any buffer is touched. An entry past the bitstream,
    or the same tile twice: EINVAL once the bitstream is read (not decoded),
    and the stream waits for a key frame, which then decodes to ffmpeg's."""
    name = "av1-128x96"
    key = next(ev for ev in events(name) if isinstance(ev, Request))
    assert len(key.entries) == 1
    one = C.pack_entries(key.entries)
    before_buffers = {
        "0 elements": _with_tiles(key, 0, b""),
        "elems 2, one entry": _with_tiles(key, 2, one),
        "513 entries": _with_tiles(key, 513, one * 513),
        "not set by the request": _with_tiles(key, 1, one, flags=0),
    }
    # 513 entries still fit a DECODE_REQUEST: the handler refuses them, not the parse
    parse_request_decode(pack_request_decode(request_of(key, layout_of(key),
                                                        ctrls=before_buffers["513 entries"])))
    for what, ctrls in before_buffers.items():
        answer = Node().send(key, flags=REQUEST_RESET, ctrls=ctrls)
        assert (answer.resp.error, answer.took) == (errno.EINVAL, set()), what
        assert "AV1_TILE_GROUP_ENTRY" in answer.resp.text or "0 elements" in \
            answer.resp.text, (what, answer.resp.text)
    e = key.entries[0]
    past = C.Av1TileGroupEntry(e.tile_offset, len(key.buffer) - e.tile_offset + 1,
                               e.tile_row, e.tile_col)
    node = Node()
    for what, entries, said in (("past the buffer", [past], "outside"),
                                ("twice", [e, e], "given twice")):
        answer = node.send(key, flags=REQUEST_RESET, ctrls=_with_tiles(
            key, len(entries), C.pack_entries(entries)))
        assert (answer.resp.error, answer.took) == (errno.EINVAL, {0}), what
        assert said in answer.resp.text, (what, answer.resp.text)
    assert node.stream().broken == key.timestamp
    picture = picture_of(node.send(key), layout_of(key), key, "the key frame again")
    want = reference_output(corpus.path(name), "nv12")
    assert picture == want[:len(picture)]
    assert node.stream().broken is None


def test_codec_table_sizes_are_the_uapi_structs() -> None:
    table = CODEC_CTRLS[Codec.AV1]
    assert {spec.name: (spec.size, spec.required, spec.max_elems) for spec in table.values()} \
        == {"AV1_SEQUENCE": (12, True, 1), "AV1_TILE_GROUP_ENTRY": (ENTRY, True, 512),
            "AV1_FRAME": (1784, True, 1), "AV1_FILM_GRAIN": (194, False, 1)}
    # every AV1 control, the dynamic array at its largest, fits one DECODE_REQUEST
    r = next(ev for ev in events("av1-128x96") if isinstance(ev, Request))
    e = r.entries[0]
    ctrls = _with_tiles(r, 512, C.pack_entries([e] * 512))
    req = parse_request_decode(pack_request_decode(request_of(r, layout_of(r), ctrls=ctrls)))
    assert 10_000 < req.ctrls_len <= REQUEST_CTRLS_MAX
