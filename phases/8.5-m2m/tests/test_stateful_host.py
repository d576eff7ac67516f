"""Phase 8.5 on the host: the FEED / FETCH handler in-process, against Debian's ffmpeg.

The handler is driven the way the kernel drives it (daedalus-m2m.c): one FEED
per OUTPUT buffer, a FEED with DAEDALUS_DECODE_FLUSH for the drain, then
one FETCH per reported frame with the CAPTURE geometry (64-byte aligned
stride). Every answer is checked the way the kernel checks it
(validate_frame_resp; a FETCH answer's frame must be the FEED answer's entry
and carry exactly bytesperline * height * 3 / 2 bytes). The fetched pictures,
cropped to the visible rectangle, are compared byte for byte with what
``/usr/bin/ffmpeg -i FILE -pix_fmt nv12 -f rawvideo -`` decodes (Debian's
build, not PyAV's); a FEED answer's digest is the frame's number in its
stream (1, 2, ...), never reused while the stream lives.

Streams are phase 8.3's corpus: vp9-320x240.ivf one frame per buffer,
h264-high-320x240.h264 cut into 1000-byte slices and into random slices (a
continuous byte stream knows no frame boundaries), av1-320x240.ivf and
av1-174x98.obu one temporal unit per buffer (what phase 8.6's node sends for
'AV01'). Expected H.264 timestamps come from ffprobe: the byte position of
the packet each frame was decoded from, looked up among the slices.

Phase 8.6's dma-bufs: the same ``Kernel`` in dmabuf mode sends its FEEDs
with DAEDALUS_DECODE_DMABUF (the bytes at an offset of an OUTPUT buffer) and
its FETCHes with DAEDALUS_FETCH_DMABUF, the buffers being memfds of a
stand-in device (daedalus.dispatch.loopback.MemfdDevice, attached as
daedalusd attaches the real one). The stand-in holds a buffer's bytes only
between the handler's DMA_BUF_SYNC_START and _END, and after every request
the helper checks that the handler synced around its access and closed
every fd and mapping it had. The pictures and the bytes written into the
CAPTURE buffers are compared with the inline transport's on the same
streams.

The last tests run the real daemon core (``daedalus.dispatch.daemon.serve``)
over a SOCK_SEQPACKET socket pair with the handlers the installed entry points
register. No kernel here: that is test_m2m_guest.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import random
import socket
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from av.video.codeccontext import VideoCodecContext

from daedalus.codec.session import create_decoder
from daedalus.dispatch.device import (
    DMA_BUF_SYNC_END,
    DMA_BUF_SYNC_READ,
    DMA_BUF_SYNC_START,
    DMA_BUF_SYNC_WRITE,
)
from daedalus.dispatch.loopback import (
    STALE_BYTE,
    MemfdBuffer,
    MemfdDevice,
    mappings_of,
    open_fds_of,
    serve_against,
)
from daedalus.dispatch.registry import Ordered, Registration, Registry
from daedalus.m2m import layout
from daedalus.m2m.cli import DecodeCommand, format_summary
from daedalus.m2m.layout import Geometry, buffer_size, crop, fits, lay_out
from daedalus.m2m.reference import compare, first_difference, frame_at, reference_output
from daedalus.m2m.stateful import MAX_KEPT, ByteTimeline, StatefulHandler
from daedalus.m2m.status import DecodeExit
from daedalus.m2m.v4l2 import Stats, timestamp_to_timeval, timeval_to_timestamp
from daedalus.parse import corpus
from daedalus.parse.corpus import concat_ivf
from daedalus.parse.readers import read_all
from daedalus.parse.reference import ffprobe
from daedalus.proto import (
    DECODE_DMABUF,
    DECODE_FLUSH,
    DECODE_REQ_SIZE,
    DECODE_RESET,
    DECODE_RESYNC,
    FETCH_DISCARD,
    FETCH_DMABUF,
    FETCH_RESP_SIZE,
    HDR_SIZE,
    MAGIC,
    MAX_FRAMES,
    MAX_MSG,
    MAX_PAYLOAD,
    RESPONSE,
    VERSION,
    Codec,
    DecodeStatus,
    FrameInfo,
    FrameResp,
    Header,
    MsgType,
    PixFmt,
    codecs,
    pack_decode_req,
    pack_fetch_req,
    pack_header,
    pack_hello,
    pack_stream,
    parse_fetch_resp,
    parse_frame_resp,
    parse_header,
    parse_hello,
    validate_fetch_resp,
    validate_frame_resp,
)
from daedalus.roundtrip.decode import DecodeHandler

VP9 = "vp9-320x240"
H264 = "h264-high-320x240"
VP9_10BIT = "vp9-p2-10bit-320x240"
RESIZE = "vp9-resize-320x240-174x98"
AV1 = "av1-320x240"        # IVF; hidden frames and show_existing_frame
AV1_OBU = "av1-174x98"     # a low-overhead OBU stream, odd size


def align(value: int, to: int) -> int:
    return (value + to - 1) // to * to


# --- corpus and the reference ----------------------------------------------------


def corpus_path(name: str) -> Path:
    return corpus.path(name)


def packets(name: str) -> list[bytes]:
    return [p.data for p in read_all(corpus_path(name))[1]]


def slices(data: bytes, sizes: Callable[[], int]) -> list[bytes]:
    out = []
    pos = 0
    while pos < len(data):
        n = sizes()
        out.append(data[pos:pos + n])
        pos += n
    return out


_reference_cache: dict[tuple[str, str], bytes] = {}


def reference(path: Path, pix_fmt: str = "nv12") -> bytes:
    key = (str(path), pix_fmt)
    if key not in _reference_cache:
        _reference_cache[key] = reference_output(path, pix_fmt)
    return _reference_cache[key]


def reference_frames(path: Path, sizes: Sequence[tuple[int, int]],
                     pixfmt: PixFmt = PixFmt.NV12) -> list[bytes]:
    """Debian ffmpeg's frames of *path*, cut at the given sizes; every byte used."""
    data = reference(path, "p010le" if pixfmt == PixFmt.P010 else "nv12")
    frames, pos = [], 0
    for width, height in sizes:
        size = Geometry(width, height, pixfmt).packed_size
        frames.append(data[pos:pos + size])
        pos += size
    assert pos == len(data), f"{len(sizes)} frames make {pos} bytes, ffmpeg wrote {len(data)}"
    return frames


def frame_positions(path: Path) -> list[int]:
    """ffprobe: the byte position of the packet each frame (output order) came from."""
    frames = ffprobe(path, "-show_frames", "-show_entries", "frame=pkt_pos")["frames"]
    return [int(f["pkt_pos"]) for f in frames]


# --- a kernel-like client of the handler -----------------------------------------------


def kept_none(answer: tuple[int, bytes]) -> bool:
    """A FETCH answer saying the stream keeps no frame at all."""
    status, message = answer
    return status == errno.ENOENT and message.decode().endswith("(0 kept)")

_cookies = iter(range(1, 1 << 62))


def header(type_: int, payload: bytes) -> Header:
    return Header(magic=MAGIC, version=VERSION, type=type_, cookie=next(_cookies),
                  payload_len=len(payload), flags=0, status=0)


@dataclass
class Fetched:
    frame: FrameInfo
    pixels: bytes          # as the answer carries them (bytesperline x height layout)
    picture: bytes         # cropped to the visible rectangle, tightly packed


# What a stand-in OUTPUT buffer holds around the bitstream (dmabuf mode).
AROUND_BYTE = 0xEE
# (event, access flags) a handler's DMABUF request must do, in this order.
READS = [("get", 0), ("map", 0), ("sync", DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ),
         ("sync", DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ), ("close", 0)]
# a FEED's bytes count once the copy is done and the kernel still waits
FEED_READS = [*READS, ("in_flight", 0)]
WRITES = [("get", 0), ("map", 1), ("sync", DMA_BUF_SYNC_START | DMA_BUF_SYNC_WRITE),
          ("sync", DMA_BUF_SYNC_END | DMA_BUF_SYNC_WRITE), ("close", 0)]


def returned(device: MemfdDevice, cookie: int) -> tuple[MemfdBuffer, list[tuple[str, int]]]:
    """After the answer to request *cookie*: the handler kept no fd and no
    mapping of its buffer (which goes back to the application: removed);
    the buffer and what the handler did with it."""
    assert not device.leaks()
    buffer = device.buffers[cookie, 0]
    assert open_fds_of(buffer.name) == 1 and mappings_of(buffer.name) == 0  # only ours
    device.remove(cookie)
    return buffer, [(e.what, e.flags) for e in device.events if e.cookie == cookie]


@dataclass
class Kernel:
    """What daedalus-m2m.c does with the handler, checked at every step.

    With *device* (dmabuf mode) FEEDs carry DAEDALUS_DECODE_DMABUF, their
    bytes at *offset* of an OUTPUT buffer with *tail* more bytes after them,
    and FETCHes DAEDALUS_FETCH_DMABUF into a CAPTURE buffer *spare* bytes
    larger than the layout; *device* is attached to the handler."""

    handler: StatefulHandler
    stream_id: int
    codec: Codec
    pending: list[FrameInfo] = field(default_factory=list)  # reported, not fetched
    errors: dict[int, FrameResp] = field(default_factory=dict)  # FEED timestamp -> answer
    early: list[Fetched] = field(default_factory=list)  # fetched to make room
    auto_fetch: bool = True
    resync: bool = False   # an answer was lost: FEEDs carry RESYNC until one is taken
    resyncs: int = 0       # RESYNC FEEDs sent, their answers lost or not
    answers: list[FrameResp] = field(default_factory=list)  # to RESYNC FEEDs, taken
    device: MemfdDevice | None = None
    offset: int = 13
    tail: int = 7
    spare: int = 100
    captured: bytes | None = None  # dmabuf mode: the last FETCH's CAPTURE buffer, at END

    def __post_init__(self) -> None:
        if self.device is not None:
            self.handler.attach_device(self.device)

    def _send(self, data: bytes, timestamp: int, flags: int) -> tuple[int, FrameResp]:
        if self.resync:
            # a RESYNC FEED goes out once the kernel holds no pending frame
            while self.pending:
                self.early.append(self.fetch())
            flags |= DECODE_RESYNC
            self.resyncs += 1
        # daedalus_feed_one(): no FEED while more than 32 - 16 frames are pending
        while self.auto_fetch and len(self.pending) > 16:
            self.early.append(self.fetch())
        # daedalus_feed(): a drain (FLUSH without a buffer) has no buffer to map
        if self.device is None or (not data and flags & DECODE_FLUSH):
            payload = pack_decode_req(self.codec, data, stream_id=self.stream_id, flags=flags,
                                      timestamp=timestamp)
            status, answer = self.handler.handle(header(MsgType.FEED, payload), payload)
        else:
            payload = pack_decode_req(self.codec, stream_id=self.stream_id,
                                      flags=flags | DECODE_DMABUF, timestamp=timestamp,
                                      bitstream_len=len(data), bitstream_offset=self.offset)
            feed = header(MsgType.FEED, payload)
            around = bytes([AROUND_BYTE])
            self.device.add_output(feed.cookie, around * self.offset + data + around * self.tail)
            expected = ([] if self.device.fail is not None  # GET_DMABUF fails: nothing to close
                        else FEED_READS if data else [READS[0], READS[-1]])
            status, answer = self.handler.handle(feed, payload)
            events = returned(self.device, feed.cookie)[1]
            assert events == expected, events
        assert status == 0, answer
        resp = parse_frame_resp(answer)
        validate_frame_resp(resp)  # the kernel's daedalus_resp_valid
        assert len(resp.message) <= MAX_MSG
        resp.message.decode("utf-8")
        return flags, resp

    def feed(self, data: bytes = b"", timestamp: int = 0, flags: int = 0) -> FrameResp:
        flags, resp = self._send(data, timestamp, flags)
        if resp.ok:
            self.pending += resp.frames
        else:
            assert resp.error and not resp.frames and resp.text
            self.errors[timestamp] = resp
        if flags & DECODE_RESYNC:
            self.answers.append(resp)
            # resync until an answer is taken that lists fewer than MAX_FRAMES frames
            self.resync = not resp.ok or len(resp.frames) == MAX_FRAMES
        return resp

    def lose(self, data: bytes = b"", timestamp: int = 0, flags: int = 0) -> FrameResp:
        """A FEED whose answer never reaches the kernel (its watchdog fired, or
        the answer was malformed): the daemon decoded it, the kernel ignores it."""
        resp = self._send(data, timestamp, flags)[1]
        self.resync = True
        return resp

    def feed_all(self, chunks: Sequence[bytes], timestamps: Sequence[int] | None = None
                 ) -> None:
        for index, chunk in enumerate(chunks):
            self.feed(chunk, index if timestamps is None else timestamps[index])
        self.drain()

    def drain(self) -> None:
        """FLUSH, again while the kernel is resyncing (the frames beyond one answer)."""
        self.feed(flags=DECODE_FLUSH, timestamp=2**64 - 1)
        for _ in range(MAX_KEPT):
            if not self.resync:
                return
            self.feed(flags=DECODE_FLUSH, timestamp=2**64 - 1)
        raise AssertionError("still resyncing")

    def fetch_raw(self, bytesperline: int, height: int, max_bytes: int | None = None,
                  flags: int = 0, want: FrameInfo | None = None,
                  capture: int | None = None) -> tuple[int, bytes]:
        """FETCH of *want* (default: the oldest pending frame, or a frame that
        does not exist when nothing is pending). In dmabuf mode into a
        CAPTURE buffer of *capture* bytes (default: max_bytes + spare)."""
        if want is None and self.pending:
            want = self.pending[0]
        max_bytes = buffer_size(bytesperline, height) if max_bytes is None else max_bytes
        payload = pack_fetch_req(self.stream_id,
                                 flags=flags | (FETCH_DMABUF if self.device else 0),
                                 bytesperline=bytesperline, height=height, max_bytes=max_bytes,
                                 timestamp=0 if want is None else want.timestamp,
                                 digest=0 if want is None else want.digest)
        fetch = header(MsgType.FETCH, payload)
        if self.device is None:
            return self.handler.handle(fetch, payload)
        self.device.add_capture(fetch.cookie, max_bytes + self.spare if capture is None
                                else capture)
        status, answer = self.handler.handle(fetch, payload)
        buffer, events = returned(self.device, fetch.cookie)
        self.captured = buffer.written
        if status == 0 and not flags & FETCH_DISCARD:
            assert events == WRITES, events
            size = parse_fetch_resp(answer, dmabuf=True)[0].bytes
            assert buffer.written is not None
            assert buffer.written[size:] == bytes([STALE_BYTE]) * (buffer.size - size)
        elif status == 0 or status == errno.ENOENT:  # DISCARD wins; nothing matched
            assert not events, events
        return status, answer

    def fetch(self, bytesperline: int | None = None, height: int | None = None) -> Fetched:
        """FETCH the oldest pending frame into a CAPTURE-like buffer: stride
        aligned to 64, height to 16 (rows past the picture)."""
        want = self.pending.pop(0)
        if want.corrupt:  # no pixels: the buffer is handed out in ERROR
            status, answer = self.fetch_raw(64, 16, flags=FETCH_DISCARD, want=want)
            assert status == 0, answer
            resp, pixels = parse_fetch_resp(answer)
            assert resp.frame == want and not resp.bytes and not len(pixels)
            return Fetched(resp.frame, b"", b"")
        geometry = Geometry(want.width, want.height, PixFmt(want.pixfmt))
        bpl = align(geometry.min_bytesperline, 64) if bytesperline is None else bytesperline
        rows = align(want.height, 16) if height is None else height
        status, answer = self.fetch_raw(bpl, rows, want=want)
        assert status == 0, answer
        # exact length (with DMABUF: the struct alone, the pixels are in the buffer)
        resp, pixels = parse_fetch_resp(answer, dmabuf=self.device is not None)
        validate_fetch_resp(resp)
        assert resp.frame == want  # identical to the FEED answer's entry
        if self.device is not None:
            assert self.captured is not None
            pixels = memoryview(self.captured)[:resp.bytes]
        assert resp.bytes == bpl * rows * 3 // 2 == len(pixels)
        data = bytes(pixels)
        return Fetched(resp.frame, data, crop(data, bpl, rows, geometry))

    def fetch_all(self) -> list[Fetched]:
        """Every frame fetched since the last call, the ones fetched to make room first."""
        out, self.early = self.early, []
        while self.pending:
            out.append(self.fetch())
        assert kept_none(self.fetch_raw(64, 16))  # nothing kept behind our back
        return out


# --- VP9: one frame per buffer ------------------------------------------------------


def test_vp9_frame_per_buffer_is_byte_exact() -> None:
    path = corpus_path(VP9)
    chunks = packets(VP9)
    timestamps = [1_000_000_000 + 33_333_333 * i for i in range(len(chunks))]  # ns, 64-bit
    kernel = Kernel(StatefulHandler(), 7, Codec.VP9)
    kernel.feed_all(chunks, timestamps)
    assert not kernel.errors
    got = kernel.fetch_all()
    assert len(got) == len(chunks) == 30
    assert [f.frame.timestamp for f in got] == timestamps  # each buffer's own
    assert [f.frame.key for f in got] == [True] + [False] * 29
    assert {(f.frame.width, f.frame.height, f.frame.pixfmt) for f in got} == {
        (320, 240, PixFmt.NV12)}
    want = reference_frames(path, [(320, 240)] * 30)
    assert [f.picture for f in got] == want
    # the FEED answer's digest names the frame: its number in the stream
    assert [f.frame.digest for f in got] == list(range(1, 31))


def test_fetch_pads_rows_and_zero_fills_past_the_picture() -> None:
    kernel = Kernel(StatefulHandler(), 1, Codec.VP9)
    kernel.feed(packets(VP9)[0], 5)
    fetched = kernel.fetch(bytesperline=384, height=256)
    buf = np.frombuffer(fetched.pixels, np.uint8)
    y = buf[:384 * 256].reshape(256, 384)
    c = buf[384 * 256:].reshape(128, 384)
    assert not y[:, 320:].any() and not y[240:].any()
    assert not c[:, 320:].any() and not c[120:].any()
    assert y[:240, :320].any() and c[:120, :320].any()
    want = reference_frames(corpus_path(VP9), [(320, 240)] * 30)[0]
    assert fetched.picture == want
    # the tightest layout the picture fits (what ffmpeg writes) is the picture itself
    kernel.feed(packets(VP9)[1], 6)
    tight = kernel.fetch(bytesperline=320, height=240)
    assert tight.pixels == tight.picture == reference_frames(
        corpus_path(VP9), [(320, 240)] * 30)[1]


# --- H.264: a continuous byte stream in arbitrary slices ----------------------------


@pytest.mark.parametrize("cut", ["1000", "random", "tiny-then-huge"])
def test_h264_slices_are_byte_exact_and_timestamps_follow_their_buffers(cut: str) -> None:
    path = corpus_path(H264)
    data = path.read_bytes()
    rng = random.Random(85)
    sizes: Callable[[], int] = {
        "1000": lambda: 1000,
        "random": lambda: rng.randint(1, 6000),
        "tiny-then-huge": lambda: rng.choice([1, 2, 3, 7, 20000]),
    }[cut]
    chunks = slices(data, sizes)
    timestamps = [10 * i + 3 for i in range(len(chunks))]
    kernel = Kernel(StatefulHandler(), 2, Codec.H264)
    kernel.feed_all(chunks, timestamps)
    assert not kernel.errors
    got = kernel.fetch_all()
    assert len(got) == 30
    assert [f.picture for f in got] == reference_frames(path, [(320, 240)] * 30)
    # timestamp: the buffer holding the first byte of the frame's access unit
    starts = np.cumsum([0] + [len(c) for c in chunks[:-1]])
    expected = [timestamps[int(np.searchsorted(starts, pos, side="right")) - 1]
                for pos in frame_positions(path)]
    assert [f.frame.timestamp for f in got] == expected
    assert [f.frame.key for f in got] == [True] + [False] * 29


def test_h264_a_cut_keyframe_then_the_stream_again_decodes_every_picture() -> None:
    """The fuzz campaign's stream 821 (seed 1): the first access unit cut to its
    first 299 bytes (SPS, PPS, the start of the IDR slice), then the whole
    stream. The parser joins the cut bytes to the next access unit; every
    picture of the stream comes out byte-exact, the first one with the
    timestamp of the cut buffer (dev-decoder.rst: a frame made of several
    OUTPUT buffers gets the timestamp of the one queued first)."""
    path = corpus_path(H264)
    units = packets(H264)
    kernel = Kernel(StatefulHandler(), 14, Codec.H264)
    kernel.feed_all([units[0][:299], *units], [7, *(1000 + i for i in range(len(units)))])
    got = kernel.fetch_all()
    assert [f.picture for f in got] == reference_frames(path, [(320, 240)] * 30)
    assert got[0].frame.timestamp == 7 and got[0].frame.key
    assert all(f.frame.timestamp >= 1000 for f in got[1:])


def test_h264_frames_come_as_soon_as_the_parser_closes_their_access_unit() -> None:
    """One access unit per buffer: the parser only sees an access unit end when
    the next one starts, and B-frames reorder; the FLUSH brings the rest."""
    units = packets(H264)
    kernel = Kernel(StatefulHandler(), 3, Codec.H264)
    reported = [len(kernel.feed(unit, i).frames) for i, unit in enumerate(units)]
    assert reported[0] == 0  # the IDR is still in the parser
    flushed = kernel.feed(flags=DECODE_FLUSH, timestamp=99)
    assert flushed.ok and flushed.frames and sum(reported) + len(flushed.frames) == 30
    assert all(f.timestamp != 99 for f in flushed.frames)  # their own buffers' stamps
    got = kernel.fetch_all()
    assert [f.picture for f in got] == reference_frames(corpus_path(H264), [(320, 240)] * 30)
    assert sorted(f.frame.timestamp for f in got) == list(range(30))


def test_flush_with_the_last_bytes_and_a_new_sequence_after_it() -> None:
    chunks = slices(corpus_path(H264).read_bytes(), lambda: 4000)
    kernel = Kernel(StatefulHandler(), 4, Codec.H264)
    for i, chunk in enumerate(chunks[:-1]):
        kernel.feed(chunk, i)
    kernel.feed(chunks[-1], len(chunks) - 1, flags=DECODE_FLUSH)
    first = kernel.fetch_all()
    stream = kernel.handler.stream(4)
    assert stream is not None and stream.decoder is None and stream.parser is None
    kernel.feed_all(chunks)  # the stream again from its IDR: a fresh decoder and parser
    second = kernel.fetch_all()
    want = reference_frames(corpus_path(H264), [(320, 240)] * 30)
    assert [f.picture for f in first] == [f.picture for f in second] == want


def test_too_many_frames_for_one_answer_is_eoverflow_and_none_are_kept() -> None:
    kernel = Kernel(StatefulHandler(), 5, Codec.H264)
    resp = kernel.feed(corpus_path(H264).read_bytes(), 1, flags=DECODE_FLUSH)
    assert (resp.status, resp.error) == (DecodeStatus.ERROR, errno.EOVERFLOW)
    assert f"at most {MAX_FRAMES}" in resp.text
    assert kept_none(kernel.fetch_raw(320, 240))


# --- RESET, errors --------------------------------------------------------------------


@pytest.mark.parametrize("codec", [Codec.VP9, Codec.H264])
def test_reset_mid_stream_then_feeding_from_a_keyframe(codec: Codec) -> None:
    name = VP9 if codec == Codec.VP9 else H264
    chunks = packets(name) if codec == Codec.VP9 else slices(
        corpus_path(name).read_bytes(), lambda: 1500)
    kernel = Kernel(StatefulHandler(), 6, codec)
    for i, chunk in enumerate(chunks[:12]):
        kernel.feed(chunk, 1000 + i)
    assert len(kernel.pending) >= 4
    kernel.fetch()
    kernel.fetch()
    stream = kernel.handler.stream(6)
    assert stream is not None and len(stream.kept) == len(kernel.pending) > 0
    # STREAMOFF(OUTPUT) in the kernel: its pending frames are forgotten, the next FEED resets
    kernel.pending.clear()
    kernel.feed(chunks[0], 0, flags=DECODE_RESET)
    assert stream.resets == 1 and all(k.info.timestamp < 1000 for k in stream.kept)
    for i, chunk in enumerate(chunks[1:], 1):
        kernel.feed(chunk, i)
    kernel.feed(flags=DECODE_FLUSH, timestamp=10**6)
    assert not kernel.errors
    got = kernel.fetch_all()
    assert [f.picture for f in got] == reference_frames(corpus_path(name), [(320, 240)] * 30)
    assert all(f.frame.timestamp < 1000 for f in got)


def test_corrupt_buffer_is_eilseq_and_the_stream_goes_on() -> None:
    """vp9-320x240 twice (a keyframe at 0 and at 30), packet 5 broken: that
    FEED is DECODE_ERROR / EILSEQ; the others decode; from packet 30 on every
    frame is exactly ffmpeg's again."""
    chunks = packets(VP9) * 2
    broken = bytearray(chunks[5])
    broken[0] ^= 0xFF  # the VP9 frame marker
    chunks[5] = bytes(broken)
    kernel = Kernel(StatefulHandler(), 8, Codec.VP9)
    kernel.feed_all(chunks)
    assert list(kernel.errors) == [5]
    assert (kernel.errors[5].error, kernel.errors[5].status) == (errno.EILSEQ,
                                                                DecodeStatus.ERROR)
    assert "invalid" in kernel.errors[5].text.lower()
    got = kernel.fetch_all()
    stamps = [f.frame.timestamp for f in got]
    assert 5 not in stamps and stamps == sorted(stamps)
    clean = reference_frames(corpus_path(VP9), [(320, 240)] * 30)
    assert [f.picture for f in got if f.frame.timestamp < 5] == clean[:5]
    assert [f.picture for f in got if f.frame.timestamp >= 30] == clean


def damaged(chunks: Sequence[bytes], index: int, span: int = 400) -> list[bytes]:
    """*chunks* with *span* bytes from the middle of chunk *index* scrambled."""
    out = list(chunks)
    data = bytearray(out[index])
    middle = len(data) // 2
    for pos in range(middle, min(middle + span, len(data) - 1)):
        data[pos] ^= 0x5A
    out[index] = bytes(data)
    return out


def test_a_frame_decoded_with_errors_is_listed_corrupt_not_dropped(tmp_path: Path) -> None:
    """h264-high-320x240 with the middle of access unit 5 scrambled: FFmpeg
    conceals the damage ("error while decoding MB") and flags the picture it
    made. The daemon lists that picture with DAEDALUS_FRAME_CORRUPT (the
    kernel errors its buffer) instead of dropping it: all 30 pictures that
    Debian's ffmpeg makes of the file are accounted for, the ones before it
    byte for byte."""
    chunks = damaged(packets(H264), 5)
    path = tmp_path / "damaged.h264"
    path.write_bytes(b"".join(chunks))
    kernel = Kernel(StatefulHandler(), 9, Codec.H264)
    kernel.feed_all(chunks)
    assert not kernel.errors
    got = kernel.fetch_all()
    clean = reference_frames(path, [(320, 240)] * 30)  # ffmpeg made 30 pictures
    assert len(got) == len(clean)
    corrupt = [n for n, f in enumerate(got) if f.frame.corrupt]
    assert len(corrupt) == 1 and corrupt[0] > 0, corrupt
    assert [f.picture for f in got[:corrupt[0]]] == clean[:corrupt[0]]


def test_garbage_on_a_fresh_stream_then_a_keyframe() -> None:
    kernel = Kernel(StatefulHandler(), 9, Codec.VP9)
    resp = kernel.feed(b"\x00" * 64, 1)
    assert (resp.status, resp.error) == (DecodeStatus.ERROR, errno.EILSEQ)
    assert kernel.feed(packets(VP9)[0], 2).frames[0].key
    assert kernel.fetch().frame.timestamp == 2


class Wedging:
    """A real decoder that breaks for good at packet *at* (pts = packet number)."""

    def __init__(self, codec: Codec, at: int) -> None:
        self.real = create_decoder(codec)
        self.at = at

    def decode(self, packet: av.Packet[Any] | None = None) -> list[av.VideoFrame]:
        if packet is not None and packet.pts is not None and packet.pts >= self.at:
            raise av.error.InvalidDataError(-1094995529, "Invalid data found when "
                                                         "processing input")
        return list(self.real.decode(packet))


def test_wedged_decoder_is_replaced_at_the_next_keyframe() -> None:
    made: list[object] = []

    def factory(codec: Codec) -> VideoCodecContext:
        made.append(Wedging(codec, 5) if not made else create_decoder(codec))
        return made[-1]  # type: ignore[return-value]

    chunks = packets(VP9) * 2
    kernel = Kernel(StatefulHandler(decoder_factory=factory), 10, Codec.VP9)
    kernel.feed_all(chunks)
    assert sorted(kernel.errors) == list(range(5, 30))  # until the keyframe
    got = kernel.fetch_all()
    clean = reference_frames(corpus_path(VP9), [(320, 240)] * 30)
    assert [f.picture for f in got if f.frame.timestamp >= 30] == clean
    stream = kernel.handler.stream(10)
    assert stream is not None and stream.restarts == 1


def test_kept_frames_are_bounded_enospc() -> None:
    kernel = Kernel(StatefulHandler(max_kept=MAX_FRAMES + 4), 11, Codec.VP9, auto_fetch=False)
    chunks = packets(VP9)
    for i in range(5):  # 4 kept + 16 more possible: still within 20
        assert kernel.feed(chunks[i], i).ok
    resp = kernel.feed(chunks[5], 5)
    assert (resp.status, resp.error) == (DecodeStatus.ERROR, errno.ENOSPC)
    assert "FETCH" in resp.text
    stream = kernel.handler.stream(11)
    assert stream is not None and len(stream.kept) == 5  # not decoded
    kernel.fetch()
    assert kernel.feed(chunks[5], 5).ok  # room again
    assert MAX_KEPT >= 2 * MAX_FRAMES  # the default: the kernel stops at 16 pending


@pytest.mark.parametrize(("make", "match"), [
    (lambda: pack_decode_req(Codec.VP9, b"abc", stream_id=1, flags=0x10), "flags 0x10"),
    (lambda: pack_decode_req(Codec.VP9, b"abc", stream_id=1, reserved=[0, 0, 0, 1]),
     "reserved"),
    (lambda: pack_decode_req(Codec.VP9, b"abc", stream_id=1, bitstream_len=4), "bitstream_len"),
    (lambda: pack_decode_req(9, b"abc", stream_id=1), "unknown codec 9"),
    (lambda: pack_decode_req(Codec.VP9, stream_id=1)[:-1], "shorter"),
])
def test_malformed_feed_is_einval(make: Callable[[], bytes], match: str) -> None:
    handler = StatefulHandler()
    payload = make()
    status, answer = handler.handle(header(MsgType.FEED, payload), payload)
    resp = parse_frame_resp(answer)
    assert status == 0 and (resp.status, resp.error) == (DecodeStatus.ERROR, errno.EINVAL)
    assert match in resp.text
    assert handler.stream_ids() == [] or match == "unknown codec 9"


def test_codec_is_fixed_per_stream() -> None:
    kernel = Kernel(StatefulHandler(), 12, Codec.VP9)
    assert kernel.feed(packets(VP9)[0], 0).ok
    kernel.codec = Codec.H264
    resp = kernel.feed(b"\x00\x00\x01\x09", 1)
    assert resp.error == errno.EINVAL and "fixed per stream" in resp.text


def test_unknown_opcode_is_eopnotsupp() -> None:
    status, _ = StatefulHandler().handle(header(MsgType.PING, b"x"), b"x")
    assert status == errno.EOPNOTSUPP


# --- FETCH ----------------------------------------------------------------------------


def test_fetch_with_nothing_kept_is_enoent() -> None:
    kernel = Kernel(StatefulHandler(), 13, Codec.VP9)
    status, answer = kernel.fetch_raw(384, 240)  # unknown stream
    assert (status, answer.decode()) == (errno.ENOENT, "no stream 13")
    kernel.feed(packets(VP9)[0], 0)
    kernel.fetch()
    assert kept_none(kernel.fetch_raw(384, 240))  # known, nothing kept


def test_fetch_drops_the_frames_the_kernel_forgot() -> None:
    """A kernel that forgot a frame (here: lost a FEED's answer and did not
    resync): the frame is kept, but the kernel never lists it. The next FETCH
    names the frame the kernel expects, and the unknown one goes instead of
    being handed out in its place."""
    handler = StatefulHandler()
    kernel = Kernel(handler, 16, Codec.VP9)
    chunks = packets(VP9)
    for i in range(3):
        kernel.feed(chunks[i], i)
    payload = pack_decode_req(Codec.VP9, chunks[3], stream_id=16, timestamp=3)
    status, _ = handler.handle(header(MsgType.FEED, payload), payload)  # answer lost
    assert status == 0
    for i in range(4, 6):
        kernel.feed(chunks[i], i)
    got = kernel.fetch_all()
    assert [f.frame.timestamp for f in got] == [0, 1, 2, 4, 5]
    want = reference_frames(corpus_path(VP9), [(320, 240)] * 30)
    assert [f.picture for f in got] == [want[i] for i in (0, 1, 2, 4, 5)]
    stream = handler.stream(16)
    assert stream is not None and stream.orphans == 1


# --- RESYNC: the kernel lost a FEED's answer ----------------------------------------


@pytest.mark.parametrize("lost", [[8], [8, 9, 10], [2, 3], [29], ["drain"],
                                  [27, 28, 29, "drain"]], ids=str)
def test_h264_lost_answers_then_resync_lose_no_frame(lost: list[int | str]) -> None:
    """One access unit per buffer (B-frames: the decoder reorders, and the
    frames a FEED completes belong to earlier buffers too). The answers to
    the FEEDs in *lost* never reach the kernel; its next FEEDs carry RESYNC
    once it has fetched its pending frames. Every picture still comes out,
    byte-exact, in display order, with its own buffer's timestamp, and the
    daemon drops nothing."""
    units = packets(H264)
    handler = StatefulHandler()
    kernel = Kernel(handler, 40, Codec.H264)
    unknown = []  # after each FEED: the kept frames the kernel does not know

    def step(resp: FrameResp) -> None:
        stream = handler.stream(40)
        assert resp.ok and stream is not None
        unknown.append(len(stream.kept) - len(kernel.pending))

    for i, unit in enumerate(units):
        step(kernel.lose(unit, i) if i in lost else kernel.feed(unit, i))
    if "drain" in lost:
        step(kernel.lose(flags=DECODE_FLUSH, timestamp=2**64 - 1))
    assert max(unknown) > 0  # the lost answers listed frames
    kernel.drain()
    assert not kernel.errors and kernel.answers
    assert all(a.ok for a in kernel.answers)
    got = kernel.fetch_all()
    assert [f.picture for f in got] == reference_frames(corpus_path(H264), [(320, 240)] * 30)
    starts = np.cumsum([0] + [len(u) for u in units[:-1]])
    assert [f.frame.timestamp for f in got] == [
        int(np.searchsorted(starts, pos, side="right")) - 1
        for pos in frame_positions(corpus_path(H264))]
    stream = handler.stream(40)
    assert stream is not None and (stream.orphans, stream.resyncs) == (0, kernel.resyncs)


def test_resync_lists_more_than_one_answer_holds_over_several_feeds() -> None:
    """Twenty answers lost in a row (one VP9 frame each): twenty frames the
    kernel does not know, more than one answer lists. The first RESYNC answer
    taken lists the oldest sixteen; the kernel fetches them and resyncs again,
    and the next answer lists the other four, then its own frame."""
    chunks = packets(VP9)
    handler = StatefulHandler()
    kernel = Kernel(handler, 41, Codec.VP9)
    for i, chunk in enumerate(chunks):
        if 3 <= i < 23:
            kernel.lose(chunk, i)
        else:
            kernel.feed(chunk, i)
        if i == 22:
            stream = handler.stream(41)
            # the first RESYNC FEED went out after the kernel fetched 0..2
            assert stream is not None and len(stream.kept) == 20 and not kernel.pending
    kernel.drain()
    assert [[f.timestamp for f in a.frames] for a in kernel.answers] == [
        list(range(3, 19)), list(range(19, 25))]
    got = kernel.fetch_all()
    assert [f.frame.timestamp for f in got] == list(range(30))
    assert [f.picture for f in got] == reference_frames(corpus_path(VP9), [(320, 240)] * 30)
    stream = handler.stream(41)
    assert stream is not None and (stream.orphans, stream.resyncs) == (0, 2 + 19)


def test_resync_with_reset_lists_only_new_frames() -> None:
    """A seek while resyncing: RESET drops the kept frames first, so the
    answer lists only what the FEED itself completed."""
    chunks = packets(VP9)
    handler = StatefulHandler()
    kernel = Kernel(handler, 42, Codec.VP9)
    for i in range(6):
        (kernel.lose if i >= 3 else kernel.feed)(chunks[i], i)
    kernel.pending.clear()  # STREAMOFF(OUTPUT): the kernel forgets its pending frames
    resp = kernel.feed(chunks[0], 100, flags=DECODE_RESET)
    assert resp.ok and [f.timestamp for f in resp.frames] == [100]
    assert not kernel.resync  # fewer than MAX_FRAMES: in step again
    for i in range(1, 30):
        kernel.feed(chunks[i], 100 + i)
    kernel.drain()
    got = kernel.fetch_all()  # 0..2 fetched before the first RESYNC FEED
    assert [f.frame.timestamp for f in got] == [0, 1, 2] + [100 + i for i in range(30)]
    clean = reference_frames(corpus_path(VP9), [(320, 240)] * 30)
    assert [f.picture for f in got] == clean[:3] + clean
    stream = handler.stream(42)
    assert stream is not None and (stream.resets, stream.orphans) == (1, 0)


def test_resync_feed_that_fails_keeps_the_frames_for_the_next_one() -> None:
    """A RESYNC FEED whose own bytes fail is DECODE_ERROR (an error answer
    lists no frame): the kept frames stay, the kernel stays in resync, and the
    next RESYNC FEED lists them before its own."""
    chunks = packets(VP9) * 2
    handler = StatefulHandler()
    kernel = Kernel(handler, 43, Codec.VP9)
    for i in range(5):
        (kernel.lose if i in (3, 4) else kernel.feed)(chunks[i], i)
    broken = bytearray(chunks[5])
    broken[0] ^= 0xFF  # the VP9 frame marker
    resp = kernel.feed(bytes(broken), 5)
    assert (resp.status, resp.error) == (DecodeStatus.ERROR, errno.EILSEQ)
    assert kernel.resync and list(kernel.errors) == [5]
    stream = handler.stream(43)
    assert stream is not None and [k.info.timestamp for k in stream.kept] == [3, 4]
    for i in range(6, 60):
        kernel.feed(chunks[i], i)
    kernel.drain()
    taken = next(a for a in kernel.answers if a.ok)  # the first RESYNC answer taken
    assert [f.timestamp for f in taken.frames][:2] == [3, 4]
    got = kernel.fetch_all()
    stamps = [f.frame.timestamp for f in got]
    assert stamps[:5] == [0, 1, 2, 3, 4] and stamps == sorted(stamps)
    clean = reference_frames(corpus_path(VP9), [(320, 240)] * 30)
    assert [f.picture for f in got[:5]] == clean[:5]
    assert [f.picture for f in got if f.frame.timestamp >= 30] == clean
    assert stream.orphans == 0


def test_resync_feed_with_too_many_frames_of_its_own_is_eoverflow_and_keeps_the_rest() -> None:
    units = packets(H264)
    handler = StatefulHandler()
    kernel = Kernel(handler, 44, Codec.H264)
    """The rest of the stream and a drain in one RESYNC FEED: more than
    MAX_FRAMES frames of its own, so EOVERFLOW and none of them kept; the
    frame of the lost answer stays and the next RESYNC FEED lists it."""
    units = packets(H264)
    handler = StatefulHandler()
    kernel = Kernel(handler, 44, Codec.H264)
    for i in range(5):  # units 3 and 4 complete pictures 0 and 1, from units 0 and 2
        (kernel.lose if i == 4 else kernel.feed)(units[i], i)
    stream = handler.stream(44)
    assert stream is not None
    unknown = [k.info for k in stream.kept if k.info not in kernel.pending]
    assert [f.timestamp for f in unknown] == [2]
    resp = kernel.feed(b"".join(units[5:]), 5, flags=DECODE_FLUSH)
    assert (resp.status, resp.error) == (DecodeStatus.ERROR, errno.EOVERFLOW)
    assert kernel.resync and [k.info for k in stream.kept] == unknown
    resp = kernel.feed(flags=DECODE_FLUSH, timestamp=7)
    assert resp.ok and list(resp.frames) == unknown and not kernel.resync
    got = kernel.fetch_all()
    want = reference_frames(corpus_path(H264), [(320, 240)] * 30)
    assert [f.picture for f in got] == want[:2]  # display order: unit 4 holds picture 1
    assert stream.orphans == 0


def test_resync_room_counts_only_what_the_answer_leaves_kept() -> None:
    """With room for MAX_FRAMES + 4 frames, a RESYNC FEED is decoded while at
    most that many are kept (its answer lists sixteen of them); beyond, it is
    ENOSPC and keeps them all, until a seek drops them."""
    chunks = packets(VP9)
    handler = StatefulHandler(max_kept=MAX_FRAMES + 4)
    kernel = Kernel(handler, 45, Codec.VP9)
    for i in range(MAX_FRAMES + 5):
        assert kernel.lose(chunks[i], i).ok, i
    stream = handler.stream(45)
    assert stream is not None and len(stream.kept) == MAX_FRAMES + 5
    resp = kernel.feed(chunks[21], 21)
    assert (resp.status, resp.error) == (DecodeStatus.ERROR, errno.ENOSPC)
    assert kernel.resync and len(stream.kept) == MAX_FRAMES + 5
    resp = kernel.feed(chunks[0], 100, flags=DECODE_RESET)
    assert resp.ok and [f.timestamp for f in resp.frames] == [100] and not kernel.resync
    assert kernel.fetch().picture == reference_frames(corpus_path(VP9), [(320, 240)] * 30)[0]


def test_resync_is_a_feed_flag_only() -> None:
    """FEED takes DAEDALUS_DECODE_RESYNC; phase 8.4's REQ_DECODE refuses it (EINVAL)."""
    payload = pack_decode_req(Codec.VP9, packets(VP9)[0], stream_id=46, timestamp=1,
                              flags=DECODE_RESYNC)
    resp = parse_frame_resp(StatefulHandler().feed(payload))
    assert resp.ok and [f.timestamp for f in resp.frames] == [1]
    decode = DecodeHandler()
    status, answer = decode.handle(header(MsgType.DECODE, payload), payload)
    resp = parse_frame_resp(answer)
    assert status == 0 and (resp.status, resp.error) == (DecodeStatus.ERROR, errno.EINVAL)
    assert "unknown decode flags 0x4" in resp.text and decode.stream_ids() == []


def test_fetch_of_a_frame_not_kept_is_enoent_and_drops_nothing() -> None:
    kernel = Kernel(StatefulHandler(), 17, Codec.VP9)
    for i, chunk in enumerate(packets(VP9)[:2]):
        kernel.feed(chunk, i)
    first = kernel.pending[0]
    wrong = dataclasses.replace(first, digest=first.digest ^ 1)
    status, answer = kernel.fetch_raw(384, 240, want=wrong)
    assert status == errno.ENOENT and answer.decode().endswith("(2 kept)")
    assert [f.frame.timestamp for f in kernel.fetch_all()] == [0, 1]


@pytest.mark.parametrize(("bytesperline", "height", "max_bytes", "match"), [
    (319, 240, None, "bytesperline 319 is shorter"),
    (320, 239, None, "height 239 is less"),
    (384, 240, 384 * 240 * 3 // 2 - 1, "more than max_bytes"),
    (0, 0, None, "bytesperline 0"),
])
def test_bad_fetch_geometry_is_einval_and_consumes_the_frame(bytesperline: int, height: int,
                                                             max_bytes: int | None,
                                                             match: str) -> None:
    kernel = Kernel(StatefulHandler(), 14, Codec.VP9)
    for i, chunk in enumerate(packets(VP9)[:3]):
        kernel.feed(chunk, i)
    status, answer = kernel.fetch_raw(bytesperline, height, max_bytes)
    assert status == errno.EINVAL and match in answer.decode()
    kernel.pending.pop(0)  # the kernel pops its pending frame whatever the answer
    assert kernel.fetch().frame.timestamp == 1  # the next one, in step


def test_fetch_too_large_for_one_message_is_emsgsize() -> None:
    kernel = Kernel(StatefulHandler(), 15, Codec.VP9)
    kernel.feed(packets(VP9)[0], 0)
    status, answer = kernel.fetch_raw(4096, 240, max_bytes=2**32 - 1)
    assert status == errno.EMSGSIZE and b"one message" in answer
    assert 4096 * 360 + FETCH_RESP_SIZE > MAX_PAYLOAD


@pytest.mark.parametrize(("payload", "match"), [
    (pack_fetch_req(1, bytesperline=384, height=240, max_bytes=10**6)[:-1], "expected 48"),
    (pack_fetch_req(1, bytesperline=384, height=240, max_bytes=10**6, reserved=[0, 5]),
     "reserved"),
    (pack_fetch_req(1, flags=4, bytesperline=384, height=240, max_bytes=10**6), "flags 0x4"),
])
def test_malformed_fetch_is_einval_and_consumes_nothing(payload: bytes, match: str) -> None:
    kernel = Kernel(StatefulHandler(), 1, Codec.VP9)
    kernel.feed(packets(VP9)[0], 0)
    status, answer = kernel.handler.handle(header(MsgType.FETCH, payload), payload)
    assert status == errno.EINVAL and match in answer.decode()
    assert kernel.fetch().frame.timestamp == 0


def test_discard_drops_the_oldest_frame_without_pixels() -> None:
    kernel = Kernel(StatefulHandler(), 16, Codec.VP9)
    for i, chunk in enumerate(packets(VP9)[:2]):
        kernel.feed(chunk, i)
    want = kernel.pending.pop(0)
    status, answer = kernel.fetch_raw(0, 0, 0, flags=FETCH_DISCARD, want=want)  # no geometry
    assert status == 0
    resp, pixels = parse_fetch_resp(answer)
    assert resp.frame == want and resp.bytes == 0 and not pixels
    assert kernel.fetch().frame.timestamp == 1


def test_p010_frames_need_a_p010_stride() -> None:
    path = corpus_path(VP9_10BIT)
    kernel = Kernel(StatefulHandler(), 17, Codec.VP9)
    kernel.feed_all(packets(VP9_10BIT))
    assert {f.pixfmt for f in kernel.pending} == {PixFmt.P010}
    status, answer = kernel.fetch_raw(384, 240)  # an NV12 stride: rows of 640 bytes do not fit
    assert status == errno.EINVAL and b"shorter than the picture's rows (640" in answer
    kernel.pending.pop(0)
    got = kernel.fetch_all()
    want = reference_frames(path, [(320, 240)] * 10, PixFmt.P010)
    assert [f.picture for f in got] == want[1:]


@pytest.mark.parametrize("name", [VP9_10BIT, "h264-high10-320x240", "av1-10bit-320x240"])
def test_10bit_420_is_reported_as_p010(name: str) -> None:
    """10-bit 4:2:0 is delivered (the kernel decides whether its node offers P010)."""
    path = corpus_path(name)
    codec = codecs.BY_NAME[corpus.entry(name).codec].codec
    chunks = slices(path.read_bytes(), lambda: 1000) if codec == Codec.H264 else packets(name)
    kernel = Kernel(StatefulHandler(), 19, codec)
    kernel.feed_all(chunks)
    assert not kernel.errors and {f.pixfmt for f in kernel.pending} == {PixFmt.P010}
    got = kernel.fetch_all()
    assert [f.picture for f in got] == reference_frames(path, [(320, 240)] * 10, PixFmt.P010)


# FFmpeg's pixel formats (as ffprobe names them) and their chroma subsampling.
CHROMA = {"yuv422p": "4:2:2", "yuv444p": "4:4:4"}


@pytest.mark.superseded_in("8.8")  # NV16 / NV24: phases/8.8-perf/tests/test_chroma_host.py
@pytest.mark.parametrize("name", ["h264-high444-176x144", "h264-high422-176x144",
                                  "vp9-p1-444-176x144"])
def test_422_and_444_streams_are_refused_not_converted(name: str,
                                                       caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    """Every FEED that completes a frame is DECODE_ERROR / EOPNOTSUPP naming the
    layout (ffprobe's pix_fmt); no frame is ever listed or kept; the log has one
    warning for the stream, not one per FEED. The daemon of phases 8.5-8.7
    (NV12 and P010 only), also where phase 8.8's distribution is installed."""
    layout.use([])
    try:
        refused_not_converted(name, caplog)
    finally:
        layout.use(None)


def refused_not_converted(name: str, caplog: pytest.LogCaptureFixture) -> None:
    path = corpus_path(name)
    pix_fmt = ffprobe(path, "-show_streams")["streams"][0]["pix_fmt"]
    codec = Codec.H264 if name.startswith("h264") else Codec.VP9
    chunks = slices(path.read_bytes(), lambda: 700) if codec == Codec.H264 else packets(name)
    kernel = Kernel(StatefulHandler(), 20, codec)
    with caplog.at_level(logging.DEBUG, logger="daedalus.m2m"):
        kernel.feed_all(chunks)
    assert not kernel.pending and len(kernel.errors) >= 2
    assert {(r.error, r.text) for r in kernel.errors.values()} == {(
        errno.EOPNOTSUPP, f"the stream decodes to {pix_fmt} ({CHROMA[pix_fmt]} chroma); "
        "daedalus-v4l2 delivers 4:2:0 only (NV12 / P010), so it is refused rather than "
        "converted")}
    assert kept_none(kernel.fetch_raw(64, 16))
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("stream 20 refused: ")


def test_resolution_change_reports_each_frame_at_its_size() -> None:
    path = corpus_path(RESIZE)
    kernel = Kernel(StatefulHandler(), 18, Codec.VP9)
    kernel.feed_all(packets(RESIZE))
    assert not kernel.errors
    got = kernel.fetch_all()
    sizes = [(f.frame.width, f.frame.height) for f in got]
    assert sizes == [(320, 240)] * 10 + [(174, 98)] * 10
    assert [f.picture for f in got] == reference_frames(path, sizes)


# --- AV1: one temporal unit per buffer (on the node from phase 8.6) ----------------------


@pytest.mark.parametrize("transport", ["inline", "dmabuf"])
@pytest.mark.parametrize(("name", "container", "width", "height"), [
    (AV1, "ivf", 320, 240), (AV1_OBU, "obu", 174, 98)])
def test_av1_temporal_unit_per_buffer_is_byte_exact(name: str, container: str, width: int,
                                                    height: int, transport: str) -> None:
    """'AV01' as the node sends it: one temporal unit per FEED, no parser (no
    CONTINUOUS_BYTESTREAM). Each FEED's answer lists the one frame its unit
    shows (a 5-byte show_existing_frame unit too), with that buffer's
    timestamp; the drain adds none. The pictures are Debian ffmpeg's, byte
    for byte, through either transport."""
    path = corpus_path(name)
    info, read = read_all(path)
    assert (info.codec, info.container) == ("av1", container)
    units = [p.data for p in read]
    timestamps = [7_000_000_000 + 40_000_000 * i for i in range(len(units))]
    kernel = (Kernel(StatefulHandler(), 21, Codec.AV1) if transport == "inline"
              else dmabuf_kernel(21, Codec.AV1))
    listed = [kernel.feed(unit, ts).frames for unit, ts in zip(units, timestamps, strict=True)]
    assert not kernel.errors
    assert [[f.timestamp for f in frames] for frames in listed] == [[ts] for ts in timestamps]
    assert not kernel.feed(flags=DECODE_FLUSH, timestamp=2**64 - 1).frames
    got = kernel.fetch_all()
    assert len(got) == len(units) == 10
    assert [f.frame.key for f in got] == [True] + [False] * 9
    assert {(f.frame.width, f.frame.height, f.frame.pixfmt) for f in got} == {
        (width, height, PixFmt.NV12)}
    want = reference_frames(path, [(width, height)] * 10)
    assert [f.picture for f in got] == want
    assert [f.frame.digest for f in got] == list(range(1, 11))
    if kernel.device is not None:
        assert not kernel.device.leaks() and not kernel.device.buffers


# --- phase 8.6: bitstream and pixels through dma-bufs -------------------------------------


def dmabuf_kernel(stream_id: int, codec: Codec, **kwargs: Any) -> Kernel:
    return Kernel(StatefulHandler(), stream_id, codec, device=MemfdDevice(), **kwargs)


@pytest.mark.parametrize(("name", "cut", "offset", "tail"), [
    (VP9, "frames", 13, 7), (VP9, "frames", 0, 0),
    (H264, "random", 4096, 1), (H264, "1000", 1, 0)])
def test_dmabuf_feed_and_fetch_are_byte_exact_like_inline(
        name: str, cut: str, offset: int, tail: int, caplog: pytest.LogCaptureFixture) -> None:
    """The same stream through both transports: the same FEED answers, and
    every CAPTURE buffer holds exactly the bytes the inline FETCH answer
    carries; the pictures are ffmpeg's. ``Kernel`` checks each request's
    syncs and that no fd or mapping outlived it; no view of a mapping
    outlived its access either (close never had to take the buffer away)."""
    path = corpus_path(name)
    rng = random.Random(86)
    chunks = packets(name) if cut == "frames" else slices(
        path.read_bytes(), (lambda: rng.randint(1, 6000)) if cut == "random" else lambda: 1000)
    inline = Kernel(StatefulHandler(), 50, Codec.VP9 if name == VP9 else Codec.H264)
    dmabuf = dmabuf_kernel(50, inline.codec, offset=offset, tail=tail)
    with caplog.at_level(logging.WARNING, logger="daedalus.dispatch"):
        for kernel in (inline, dmabuf):
            kernel.feed_all(chunks)
    assert not inline.errors and not dmabuf.errors
    assert dmabuf.pending == inline.pending  # the same frames, digests, timestamps
    assert dmabuf.device is not None and not dmabuf.device.leaks()
    got, want = dmabuf.fetch_all(), inline.fetch_all()
    assert len(got) == 30 and [f.pixels for f in got] == [f.pixels for f in want]
    assert [f.picture for f in got] == reference_frames(path, [(320, 240)] * 30)
    assert not caplog.records  # no "outlived" warning: every mapping simply unmapped
    assert not dmabuf.device.leaks() and not dmabuf.device.buffers
    assert {e.what for e in dmabuf.device.events} == {"get", "map", "sync", "close", "in_flight"}


@pytest.mark.parametrize(("bytesperline", "height"), [(384, 256), (320, 240), (4096, 240)])
def test_dmabuf_fetch_writes_the_inline_layout_over_an_older_frame(bytesperline: int,
                                                                   height: int) -> None:
    """Padding and the rows past the picture are written as zeros (the
    buffer held something else: the stand-in's stale bytes), the bytes past
    the layout are not touched; and a layout larger than one message
    (inline: EMSGSIZE) is no problem for a dma-buf."""
    chunks = packets(VP9)
    inline, dmabuf = Kernel(StatefulHandler(), 51, Codec.VP9), dmabuf_kernel(51, Codec.VP9)
    for kernel in (inline, dmabuf):
        kernel.feed(chunks[0], 5)
    got = dmabuf.fetch(bytesperline, height)
    size = buffer_size(bytesperline, height)
    assert len(got.pixels) == size and dmabuf.captured is not None
    assert dmabuf.captured[size:] == bytes([STALE_BYTE]) * dmabuf.spare
    assert got.picture == reference_frames(corpus_path(VP9), [(320, 240)] * 30)[0]
    if FETCH_RESP_SIZE + size > MAX_PAYLOAD:
        status, _ = inline.fetch_raw(bytesperline, height)
        assert status == errno.EMSGSIZE
    else:
        assert inline.fetch(bytesperline, height).pixels == got.pixels
    buf = np.frombuffer(got.pixels, np.uint8)
    y = buf[:bytesperline * height].reshape(height, bytesperline)
    assert not y[:, 320:].any() and not y[240:].any()


@pytest.mark.parametrize(("offset", "length", "size"), [
    (0, 101, 100), (90, 11, 100), (101, 0, 100), (2**32 - 1, 2**32 - 1, 100)])
def test_dmabuf_feed_past_its_buffer_is_einval(offset: int, length: int, size: int) -> None:
    """The bytes a FEED names must lie inside its OUTPUT buffer: EINVAL
    otherwise, nothing mapped, the fd closed; the stream goes on."""
    kernel = dmabuf_kernel(52, Codec.VP9)
    assert kernel.device is not None
    kernel.feed(packets(VP9)[0], 0)
    payload = pack_decode_req(Codec.VP9, stream_id=52, flags=DECODE_DMABUF, timestamp=1,
                              bitstream_len=length, bitstream_offset=offset)
    feed = header(MsgType.FEED, payload)
    kernel.device.add_output(feed.cookie, packets(VP9)[1][:size])
    status, answer = kernel.handler.handle(feed, payload)
    resp = parse_frame_resp(answer)
    assert status == 0 and (resp.status, resp.error) == (DecodeStatus.ERROR, errno.EINVAL)
    assert resp.text == (f"OUTPUT buffer: {length} bytes at offset {offset} run past its "
                         f"{size} bytes")
    assert returned(kernel.device, feed.cookie)[1] == [("get", 0), ("close", 0)]
    kernel.feed(packets(VP9)[1], 2)
    assert [f.frame.timestamp for f in kernel.fetch_all()] == [0, 2]


def test_dmabuf_feed_the_kernel_gave_up_on_while_it_was_read_is_not_decoded() -> None:
    """The watchdog fired while the daemon copied the OUTPUT buffer (GET_DMABUF
    succeeded, IN_FLIGHT then says no): the application may have refilled
    the buffer, so the copy is not decoded. DECODE_ERROR / ETIMEDOUT, no
    frame kept, the decoder untouched: the next packet decodes as if the
    stale FEED never came (here the keyframe again, byte-exact with a clean
    decode; a packet decoded from the refilled bytes would be a second
    keyframe decode, not ffmpeg's next frame)."""
    chunks = packets(VP9)
    kernel = dmabuf_kernel(57, Codec.VP9)
    assert kernel.device is not None
    kernel.feed(chunks[0], 0)
    payload = pack_decode_req(Codec.VP9, stream_id=57, flags=DECODE_DMABUF, timestamp=1,
                              bitstream_len=len(chunks[0]))
    feed = header(MsgType.FEED, payload)
    kernel.device.add_output(feed.cookie, chunks[0])  # refilled: the keyframe again
    kernel.device.given_up.add(feed.cookie)
    status, answer = kernel.handler.handle(feed, payload)
    resp = parse_frame_resp(answer)
    assert status == 0 and (resp.status, resp.error) == (DecodeStatus.ERROR, errno.ETIMEDOUT)
    assert not resp.frames and "gave up on this FEED" in resp.text, resp.text
    assert returned(kernel.device, feed.cookie)[1] == FEED_READS
    kernel.feed(chunks[1], 1)
    frames = kernel.fetch_all()
    assert [f.frame.timestamp for f in frames] == [0, 1]
    want = reference_frames(corpus_path(VP9), [(320, 240)] * 30)
    assert [f.picture for f in frames] == want[:2]


def test_dmabuf_feed_whose_buffer_cannot_be_had_is_an_error_after_its_reset() -> None:
    """GET_DMABUF fails (ENOENT: the kernel no longer waits for the FEED):
    DECODE_ERROR with that errno and the ioctl's words. RESET is done all
    the same (the kernel has forgotten its frames: it sent the seek once),
    and the stream decodes from the next keyframe."""
    chunks = packets(VP9)
    kernel = dmabuf_kernel(53, Codec.VP9)
    assert kernel.device is not None
    for i in range(3):
        kernel.feed(chunks[i], i)
    kernel.fetch()
    kernel.pending.clear()  # STREAMOFF(OUTPUT)
    kernel.device.fail = errno.ENOENT
    resp = kernel.feed(chunks[0], 100, flags=DECODE_RESET)
    assert (resp.status, resp.error) == (DecodeStatus.ERROR, errno.ENOENT)
    assert resp.text.startswith("OUTPUT buffer: DAEDALUS_IOC_GET_DMABUF for cookie ")
    assert resp.text.endswith(", buffer 0 failed: No such file or directory")
    stream = kernel.handler.stream(53)
    assert stream is not None and stream.resets == 1 and not stream.kept
    kernel.feed_all(chunks, [200 + i for i in range(30)])
    got = kernel.fetch_all()
    assert [f.picture for f in got] == reference_frames(corpus_path(VP9), [(320, 240)] * 30)
    assert not kernel.device.leaks()


def test_dmabuf_feed_with_a_drain_lists_what_the_drain_completed() -> None:
    """A FLUSH FEED whose buffer fails still drains (an error of the FEED's
    own bytes, like a corrupt buffer): the frames the decoder held back are
    listed, DECODE_OK."""
    units = packets(H264)
    kernel = dmabuf_kernel(54, Codec.H264, auto_fetch=False)
    assert kernel.device is not None
    for i, unit in enumerate(units):
        kernel.feed(unit, i)
    held = 30 - len(kernel.pending)
    assert held > 0
    kernel.device.fail = errno.EIO
    resp = kernel.feed(b"x", 99, flags=DECODE_FLUSH)
    assert resp.ok and len(resp.frames) == held
    assert [f.picture for f in kernel.fetch_all()] == reference_frames(
        corpus_path(H264), [(320, 240)] * 30)


@pytest.mark.parametrize("failure", ["enoent", "small", "read-only"])
def test_dmabuf_fetch_failure_consumes_the_frame(failure: str) -> None:
    """A FETCH whose CAPTURE buffer cannot be had, is smaller than the
    layout, or cannot be written: an error status naming it, and the frame
    is consumed as after a bad geometry (the kernel pops its pending frame
    whatever the answer); the next FETCH gets the next frame."""
    kernel = dmabuf_kernel(55, Codec.VP9)
    assert kernel.device is not None
    for i, chunk in enumerate(packets(VP9)[:3]):
        kernel.feed(chunk, i)
    size = buffer_size(384, 240)
    want = kernel.pending.pop(0)
    payload = pack_fetch_req(55, flags=FETCH_DMABUF, bytesperline=384, height=240,
                             max_bytes=size, timestamp=want.timestamp, digest=want.digest)
    fetch = header(MsgType.FETCH, payload)
    expect: tuple[int, str, list[tuple[str, int]]] = {
        "enoent": (errno.ENOENT, f"cookie {fetch.cookie}, buffer 0 failed: No such file", []),
        "small": (errno.EINVAL, f"384 x 240 takes {size} bytes, the buffer has {size - 1}",
                  [("get", 0), ("close", 0)]),
        "read-only": (errno.EACCES, "read-only", [("get", 0), ("close", 0)]),
    }[failure]
    if failure == "small":
        kernel.device.add_capture(fetch.cookie, size - 1)
    elif failure == "read-only":  # (the kernel hands CAPTURE out read-write)
        kernel.device.add_output(fetch.cookie, b"", size=size)
    status, answer = kernel.handler.handle(fetch, payload)
    assert status == expect[0], answer
    assert expect[1] in answer.decode() and answer.decode().startswith(
        "stream 55: FETCH of a 320x240 nv12 frame: CAPTURE buffer: ")
    assert answer.decode().endswith("; frame dropped")
    if failure != "enoent":
        assert returned(kernel.device, fetch.cookie)[1] == expect[2]
    assert not kernel.device.leaks()
    assert [f.frame.timestamp for f in kernel.fetch_all()] == [1, 2]  # in step


def test_dmabuf_without_a_device_is_eopnotsupp() -> None:
    """A handler never attached (an 8.5 kernel never sets the flags): a
    DMABUF FEED is DECODE_ERROR / EOPNOTSUPP (the kernel refuses the stream),
    a DMABUF FETCH EOPNOTSUPP, consuming its frame; DISCARD still works."""
    kernel = Kernel(StatefulHandler(), 56, Codec.VP9)
    for i, chunk in enumerate(packets(VP9)[:3]):
        kernel.feed(chunk, i)
    payload = pack_decode_req(Codec.VP9, stream_id=56, flags=DECODE_DMABUF, bitstream_len=10)
    status, answer = kernel.handler.handle(header(MsgType.FEED, payload), payload)
    resp = parse_frame_resp(answer)
    assert status == 0 and (resp.status, resp.error) == (DecodeStatus.ERROR, errno.EOPNOTSUPP)
    assert "no device" in resp.text
    assert parse_frame_resp(kernel.handler.feed(payload, cookie=7)).error == errno.EOPNOTSUPP
    status, answer = kernel.fetch_raw(384, 240, flags=FETCH_DMABUF)
    assert status == errno.EOPNOTSUPP and b"no device" in answer
    kernel.pending.pop(0)
    status, answer = kernel.fetch_raw(384, 240, flags=FETCH_DMABUF | FETCH_DISCARD)
    assert status == 0 and parse_fetch_resp(answer, dmabuf=True)[0].bytes == 0
    kernel.pending.pop(0)
    assert [f.frame.timestamp for f in kernel.fetch_all()] == [2]
    # attached, a handler called without the request's cookie cannot name the buffer
    kernel.handler.attach_device(MemfdDevice())
    assert parse_frame_resp(kernel.handler.feed(payload)).error == errno.EOPNOTSUPP


def test_dmabuf_fetch_that_fails_while_writing_leaves_no_fd_and_no_mapping(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A bug in the middle of the layout: the exception reaches daedalusd
    (EIO), but the end of the access is synced and the fd closed; the views
    of the mapping its traceback keeps do not keep the buffer."""
    from daedalus.m2m import kernels

    kernel = dmabuf_kernel(58, Codec.VP9)
    assert kernel.device is not None
    kernel.feed(packets(VP9)[0], 0)

    def broken(frame: Any, pixfmt: Any, bytesperline: int, height: int, out: Any,
               zeroed: bool) -> Any:
        out[:100] = 1
        raise RuntimeError("layout bug")

    monkeypatch.setattr(kernels, "place_reference", broken)
    monkeypatch.setattr(kernels, "_table", kernels.choose(kernels.registered(), "reference"))
    want = kernel.pending.pop(0)
    size = buffer_size(384, 240)
    payload = pack_fetch_req(58, flags=FETCH_DMABUF, bytesperline=384, height=240,
                             max_bytes=size, timestamp=want.timestamp, digest=want.digest)
    fetch = header(MsgType.FETCH, payload)
    kernel.device.add_capture(fetch.cookie, size)
    with caplog.at_level(logging.WARNING, logger="daedalus.dispatch"), \
            pytest.raises(RuntimeError, match="layout bug"):
        kernel.handler.handle(fetch, payload)
    assert "outlived" in caplog.text  # the traceback holds the numpy view
    buffer, events = returned(kernel.device, fetch.cookie)  # no fd, no mapping left
    assert events == WRITES
    assert buffer.written is not None and buffer.written[:100] == b"\x01" * 100


def test_dmabuf_discard_wins_and_maps_nothing() -> None:
    kernel = dmabuf_kernel(57, Codec.VP9)
    for i, chunk in enumerate(packets(VP9)[:2]):
        kernel.feed(chunk, i)
    want = kernel.pending.pop(0)
    status, answer = kernel.fetch_raw(0, 0, 0, flags=FETCH_DISCARD, want=want)  # (checked:
    assert status == 0 and parse_fetch_resp(answer, dmabuf=True)[0].bytes == 0  # no event)
    assert kernel.captured is None
    assert kernel.fetch().frame.timestamp == 1


# --- streams, threads, CLOSE_STREAM ------------------------------------------------------


def test_streams_decode_in_parallel_threads() -> None:
    handler = StatefulHandler()
    results: dict[int, list[bytes]] = {}
    errors: list[BaseException] = []

    def run(stream_id: int, codec: Codec, chunks: list[bytes]) -> None:
        try:
            kernel = Kernel(handler, stream_id, codec)
            kernel.feed_all(chunks)
            results[stream_id] = [f.picture for f in kernel.fetch_all()]
        except BaseException as exc:
            errors.append(exc)

    h264 = slices(corpus_path(H264).read_bytes(), lambda: 777)
    threads = [threading.Thread(target=run, args=(21, Codec.VP9, packets(VP9))),
               threading.Thread(target=run, args=(22, Codec.H264, h264)),
               threading.Thread(target=run, args=(23, Codec.VP9, packets(VP9)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    vp9 = reference_frames(corpus_path(VP9), [(320, 240)] * 30)
    assert results == {21: vp9, 22: reference_frames(corpus_path(H264), [(320, 240)] * 30),
                       23: vp9}


def test_close_stream_drops_feed_state_and_the_decode_handlers() -> None:
    """daedalusd tells every handler with per-stream state (the registry's fan-out)."""
    stateful, decode = StatefulHandler(), DecodeHandler()
    registry = Registry([Registration(stateful, "stateful", (8, 5), (MsgType.FEED,), "s"),
                         Registration(decode, "decode", (8, 4), (MsgType.DECODE,), "d")])
    kernel = Kernel(stateful, 30, Codec.VP9)
    for i, chunk in enumerate(packets(VP9)[:3]):
        kernel.feed(chunk, i)
    other = Kernel(stateful, 31, Codec.VP9)
    other.feed(packets(VP9)[0], 0)
    payload = pack_decode_req(Codec.VP9, packets(VP9)[0], stream_id=30)
    assert decode.handle(header(MsgType.DECODE, payload), payload)[0] == 0
    assert stateful.stream_ids() == [30, 31] and decode.stream_ids() == [30]
    assert registry.close_stream(30) == []
    assert stateful.stream_ids() == [31] and decode.stream_ids() == []
    status, answer = kernel.fetch_raw(384, 240)
    assert (status, answer.decode()) == (errno.ENOENT, "no stream 30")
    assert other.fetch().frame.timestamp == 0  # the other stream is untouched
    # the stream id may come back (the kernel never reuses one, but nothing breaks)
    assert kernel.feed(packets(VP9)[0], 7).frames[0].timestamp == 7


def test_a_fetch_runs_while_a_feed_of_its_stream_decodes() -> None:
    """Pipelining (phase 8.8's kernel sends a FEED and a FETCH of one file at
    once): a FETCH takes only the stream's kept_lock, so it lays its frame out
    while a FEED holds the stream's decoder lock, and the frame is ffmpeg's.
    A FETCH that waited for the FEED would time out here."""
    chunks = packets(VP9)
    handler = StatefulHandler()
    kernel = Kernel(handler, 58, Codec.VP9)
    kernel.feed(chunks[0], 0)
    stream = handler.stream(58)
    assert stream is not None
    got: list[Fetched] = []
    with stream.lock:  # a FEED of the stream decoding
        fetcher = threading.Thread(target=lambda: got.append(kernel.fetch()), daemon=True)
        fetcher.start()
        fetcher.join(30)
        assert not fetcher.is_alive(), "the FETCH waited for the FEED's decoder lock"
    want = reference_frames(corpus_path(VP9), [(320, 240)] * 30)
    assert [f.picture for f in got] == want[:1]


def test_order_key_is_the_stream_and_the_kind_of_a_feed_or_a_fetch() -> None:
    """daedalusd hands one stream's FEEDs, and apart from them its FETCHes, to
    the handler in the order it read them (registry.py's Ordered): the key is
    the stream and the kind, so a FETCH never waits for a FEED."""
    handler = StatefulHandler()
    assert isinstance(handler, Ordered)
    feed = pack_decode_req(Codec.H264, b"\0\0\1\x09", stream_id=7, flags=DECODE_RESYNC,
                           timestamp=3)
    fetch = pack_fetch_req(9, bytesperline=384, height=240, max_bytes=384 * 360)
    assert handler.order_key(header(MsgType.FEED, feed), feed) == (7, MsgType.FEED)
    assert handler.order_key(header(MsgType.FETCH, fetch), fetch) == (9, MsgType.FETCH)
    # too short for the struct: no key (handle answers EINVAL)
    for type_, payload in [(MsgType.FEED, feed[:DECODE_REQ_SIZE - 1]), (MsgType.FEED, b""),
                           (MsgType.FETCH, fetch[:-1]), (MsgType.FETCH, b"")]:
        assert handler.order_key(header(type_, payload), payload) is None
    assert handler.order_key(header(MsgType.DECODE, feed), feed) is None  # not its opcode
    assert handler.stream_ids() == []  # read, nothing opened


def test_close_stream_of_an_unknown_stream_and_close() -> None:
    stateful = StatefulHandler()
    stateful.close_stream(44)  # never fed: nothing to drop, not an error
    Kernel(stateful, 45, Codec.VP9).feed(packets(VP9)[0], 0)
    stateful.close()
    assert stateful.stream_ids() == []


# --- building blocks --------------------------------------------------------------------


def test_byte_timeline() -> None:
    timeline = ByteTimeline()
    for size, stamp in [(10, 100), (0, 999), (5, 200), (20, 300)]:
        timeline.feed(size, stamp)
    assert [timeline.take(n) for n in (3, 7, 1, 4, 12, 8)] == [100, 100, 200, 200, 300, 300]
    assert timeline.pending == 0 and timeline.take(1) is None


@pytest.mark.parametrize(("width", "height", "pixfmt"), [
    (320, 240, PixFmt.NV12), (33, 17, PixFmt.NV12), (1, 1, PixFmt.NV12), (34, 18, PixFmt.P010),
    (17, 5, PixFmt.P010)])
def test_lay_out_and_crop_are_inverse(width: int, height: int, pixfmt: PixFmt) -> None:
    geometry = Geometry(width, height, pixfmt)
    rng = np.random.default_rng(width)
    luma = rng.integers(1, 256, (height, geometry.luma_row), dtype=np.uint8)
    chroma = rng.integers(1, 256, (geometry.chroma_rows, geometry.chroma_row), dtype=np.uint8)
    bpl = align(geometry.min_bytesperline, 64)
    rows = align(height + 1, 2)
    assert fits(geometry, bpl, rows) is None
    out = lay_out(luma, chroma, bpl, rows)
    assert out.size == buffer_size(bpl, rows) == bpl * rows * 3 // 2
    assert crop(out.tobytes(), bpl, rows, geometry) == luma.tobytes() + chroma.tobytes()
    assert int(out.astype(np.int64).sum()) == int(luma.sum()) + int(chroma.sum())  # zeros
    dirty = np.full(out.size, 0xAB, np.uint8)  # a CAPTURE buffer holding an older frame
    assert lay_out(luma, chroma, bpl, rows, out=dirty, zeroed=False) is dirty
    assert np.array_equal(dirty, out)
    assert geometry.packed_size == len(luma.tobytes() + chroma.tobytes())


def test_fits_explains() -> None:
    odd = Geometry(33, 17)
    assert "shorter" in (fits(odd, 33, 18) or "")  # chroma rows are 34 bytes
    assert fits(odd, 34, 18) is None
    assert "chroma rows" in (fits(odd, 34, 17) or "")  # 17 // 2 < 9
    assert layout.buffer_size(64, 17) == 64 * 25


def test_compare_reports_the_first_difference_and_its_frame() -> None:
    a = bytes(range(200))
    assert first_difference(a, a) is None
    b = bytearray(a)
    b[150] ^= 1
    assert first_difference(a, bytes(b)) == 150
    assert first_difference(a, a[:120]) == 120
    assert frame_at(150, [100, 100]) == 1 and frame_at(200, [100, 100]) == 2
    assert compare(a, a, [100, 100]).describe() == "byte-exact: yes"
    assert compare(a, bytes(b), [100, 100]).describe() == (
        "byte-exact: no (first difference at byte 150, frame 1)")
    assert "100 bytes decoded, ffmpeg wrote 200" in compare(a[:100], a, [100]).describe()


def test_timestamps_survive_the_timeval_round_trip() -> None:
    for value in (0, 1, 29, 999_999, 1_000_000, 123_456_789):
        assert timeval_to_timestamp(*timestamp_to_timeval(value)) == value


def test_summary_line() -> None:
    stats = Stats(frames=20, sizes=[(320, 240), (174, 98)], output_errors=[5],
                  capture_errors=[], seconds=2.0)
    assert format_summary("in.ivf", "out.yuv", stats) == (
        "decode: in.ivf: 20 frames, 320x240, 174x98, 10.0 fps, 1 errors (1 OUTPUT) "
        "-> out.yuv")


def test_decode_command_without_a_node_fails_cleanly(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    cmd = DecodeCommand()
    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    args = parser.parse_args([str(corpus_path(VP9)), "-o", str(tmp_path / "out.yuv"),
                              "--device", str(tmp_path / "video99")])
    assert cmd.run(args) == DecodeExit.NO_DEVICE
    assert "cannot open" in capsys.readouterr().err
    args = parser.parse_args([str(tmp_path / "missing.ivf"), "-o", str(tmp_path / "o.yuv")])
    assert cmd.run(args) == DecodeExit.UNREADABLE


def test_decode_command_is_registered() -> None:
    from importlib.metadata import entry_points

    commands = {ep.name: ep for ep in entry_points(group="daedalus.commands")}
    assert commands["decode"].load() is DecodeCommand
    proc = subprocess.run(["daedalus-v4l2", "decode", "--help"], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0 and "--compare" in proc.stdout


# --- through daedalusd's core, handlers from the entry points -----------------------------


def test_handlers_are_registered_by_entry_points() -> None:
    registry = Registry.from_entry_points()
    for opcode in (MsgType.FEED, MsgType.FETCH):
        registration = registry.lookup(opcode)
        assert registration is not None and registration.name == "stateful"
        assert registration.phase == (8, 5)
        assert isinstance(registration.handler, StatefulHandler)
        assert registration.ordered is registration.handler  # per stream, in read order
        assert registration.device_user is registration.handler  # phase 8.6's dma-bufs
    assert registry.lookup(MsgType.CLOSE_STREAM) is None  # the core's, fanned out to:
    owners = {type(r.handler) for r in registry.stream_owners}
    assert {StatefulHandler, DecodeHandler} <= owners
    # HELLO names the newest phase whose handlers are installed: 85 in phase 8.5's
    # environment, 89 once phase 8.9's stateless handler is installed too
    assert registry.hello_phase() >= 85


def test_through_daedalusd_with_the_installed_handlers() -> None:
    """serve() over a SOCK_SEQPACKET pair (one message per read like the chardev):
    HELLO, a VP9 stream fed and fetched, an H.264 stream interleaved with it,
    CLOSE_STREAM, then a FETCH that finds nothing."""
    vp9, h264 = packets(VP9), slices(corpus_path(H264).read_bytes(), lambda: 2500)
    registry = Registry.from_entry_points()

    async def kernel(sock: socket.socket) -> dict[int, list[bytes]]:
        loop = asyncio.get_running_loop()
        cookies = iter(range(1, 1 << 30))

        async def call(type_: int, payload: bytes) -> tuple[Header, bytes]:
            cookie = next(cookies)
            await loop.sock_sendall(sock, pack_header(type_, cookie, len(payload)) + payload)
            data = await asyncio.wait_for(loop.sock_recv(sock, HDR_SIZE + MAX_PAYLOAD), 60)
            answer = parse_header(data)
            assert (answer.type, answer.cookie) == (type_ | RESPONSE, cookie)
            assert answer.payload_len == len(data) - HDR_SIZE
            return answer, data[HDR_SIZE:]

        hello, payload = await call(MsgType.HELLO, pack_hello(phase=85))
        assert hello.status == 0 and parse_hello(payload).phase == registry.hello_phase()
        pending: dict[int, list[FrameInfo]] = {1: [], 2: []}
        pictures: dict[int, list[bytes]] = {1: [], 2: []}

        async def feed(stream_id: int, codec: Codec, data: bytes, ts: int, flags: int = 0
                       ) -> None:
            answer, body = await call(MsgType.FEED, pack_decode_req(
                codec, data, stream_id=stream_id, timestamp=ts, flags=flags))
            resp = parse_frame_resp(body)
            validate_frame_resp(resp)
            assert answer.status == 0 and resp.ok, resp.text
            pending[stream_id] += resp.frames

        async def fetch_all(stream_id: int) -> None:
            while pending[stream_id]:
                want = pending[stream_id].pop(0)
                answer, body = await call(MsgType.FETCH, pack_fetch_req(
                    stream_id, bytesperline=384, height=240, max_bytes=384 * 360,
                    timestamp=want.timestamp, digest=want.digest))
                resp, pixels = parse_fetch_resp(body)
                assert answer.status == 0 and resp.frame == want and resp.bytes == 384 * 360
                pictures[stream_id].append(crop(pixels, 384, 240, Geometry(320, 240)))

        for i in range(max(len(vp9), len(h264))):
            if i < len(vp9):
                await feed(1, Codec.VP9, vp9[i], i)
            if i < len(h264):
                await feed(2, Codec.H264, h264[i], i)
            await fetch_all(1)
        await feed(1, Codec.VP9, b"", 0, DECODE_FLUSH)
        await feed(2, Codec.H264, b"", 0, DECODE_FLUSH)
        await fetch_all(1)
        await fetch_all(2)
        closed, body = await call(MsgType.CLOSE_STREAM, pack_stream(1))
        assert (closed.status, body) == (0, b"")
        gone, body = await call(MsgType.FETCH, pack_fetch_req(1, bytesperline=384, height=240,
                                                              max_bytes=384 * 360))
        assert (gone.status, body) == (errno.ENOENT, b"no stream 1")
        return pictures

    async def main() -> dict[int, list[bytes]]:
        pictures, status = await serve_against(kernel, registry, timeout=300, stop_timeout=10)
        assert status == 0
        return pictures

    pictures = asyncio.run(main())
    assert pictures[1] == reference_frames(corpus_path(VP9), [(320, 240)] * 30)
    assert pictures[2] == reference_frames(corpus_path(H264), [(320, 240)] * 30)


def test_daedalusd_attaches_its_device_to_the_stateful_handler() -> None:
    """serve() gives the handler the fd it serves: a DMABUF FEED's GET_DMABUF
    is the real ioctl on it (on a socket pair: ENOTTY), answered as that
    FEED's DECODE_ERROR naming the request's cookie."""
    registry = Registry.from_entry_points()

    async def kernel(sock: socket.socket) -> FrameResp:
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(sock, pack_header(MsgType.HELLO, 1, 32) + pack_hello(phase=86))
        await asyncio.wait_for(loop.sock_recv(sock, HDR_SIZE + MAX_PAYLOAD), 60)
        payload = pack_decode_req(Codec.VP9, stream_id=1, flags=DECODE_DMABUF,
                                  bitstream_len=100)
        await loop.sock_sendall(sock, pack_header(MsgType.FEED, 77, len(payload)) + payload)
        data = await asyncio.wait_for(loop.sock_recv(sock, HDR_SIZE + MAX_PAYLOAD), 60)
        assert parse_header(data).status == 0
        return parse_frame_resp(data[HDR_SIZE:])

    resp, status = asyncio.run(serve_against(kernel, registry, timeout=120))
    assert status == 0 and (resp.status, resp.error) == (DecodeStatus.ERROR, errno.ENOTTY)
    assert resp.text == ("OUTPUT buffer: DAEDALUS_IOC_GET_DMABUF for cookie 77, buffer 0 "
                         "failed: Inappropriate ioctl for device")


def test_concat_helper_makes_a_second_keyframe(tmp_path: Path) -> None:
    """The guest's corrupt-stream test decodes vp9-320x240 twice in one IVF."""
    data = corpus_path(VP9).read_bytes()
    twice = tmp_path / "twice.ivf"
    twice.write_bytes(concat_ivf([data, data]))
    info, got = read_all(twice)
    assert info.codec == "vp9" and [p.data for p in got] == packets(VP9) * 2
    assert reference(twice) == reference(corpus_path(VP9)) * 2
