"""Phase 8.4 on the host: the DECODE handler in-process, against Debian's ffmpeg.

Every digest is checked against a pure-Python FNV-1a 64 (written out below,
independent of the C one in daedalus.proto) of what the ffmpeg command line
decodes from the same file: ``ffmpeg -i FILE -pix_fmt nv12 -f rawvideo -``
(p010le for 10-bit), cut into frames of width * height * 3 / 2 bytes (twice
that for P010). PyAV's FFmpeg and Debian's are different builds, so this
also shows that the decoders agree bit for bit.

Clips come from phase 8.3's corpus where one fits, else they are generated
with the ffmpeg CLI (daedalus.roundtrip.clips); the corrupt-stream tests need
a keyframe every 10 frames and always use generated clips.

No kernel here: the kernel path is test_roundtrip_guest.py.
"""

from __future__ import annotations

import asyncio
import errno
import io
import logging
import random
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import av
import numpy as np
import pytest
from av.video.codeccontext import VideoCodecContext

from daedalus.codec.session import create_decoder
from daedalus.dispatch import daemon
from daedalus.dispatch.registry import Registry
from daedalus.proto import (
    DECODE_FLUSH,
    DECODE_REQ_SIZE,
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
    pack_frame_resp,
    pack_header,
    pack_hello,
    pack_stream,
    parse_frame_resp,
    parse_header,
    validate_frame_resp,
)
from daedalus.roundtrip.cli import (
    LocalTransport,
    RoundtripCommand,
    RoundtripError,
    run_roundtrip,
)
from daedalus.roundtrip.clips import (
    Clip,
    corpus_clips,
    demux,
    find_clips,
    reference_output,
    split_frames,
)
from daedalus.roundtrip.decode import DecodeHandler
from daedalus.roundtrip.frames import UnsupportedLayout, frame_size, pack

FRAME_LINE = re.compile(r"^\s*(\d+)  (\d+)x(\d+)  (nv12|p010)  fnv1a64=([0-9a-f]{16})$")


def fnv1a64_reference(data: bytes) -> int:
    """FNV-1a 64 by its definition: offset basis 0xcbf29ce484222325, then for
    every byte: xor it in, multiply by the prime 0x100000001b3 modulo 2**64."""
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def test_reference_fnv_vectors() -> None:
    assert fnv1a64_reference(b"") == 0xCBF29CE484222325
    assert fnv1a64_reference(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a64_reference(b"foobar") == 0x85944171F73967E8


# --- clips and a small client of the handler -----------------------------------


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Clip]:
    return find_clips(tmp_path_factory.mktemp("clips"))


@pytest.fixture(scope="session")
def packets(clips: dict[str, Clip]) -> dict[str, list[bytes]]:
    return {name: demux(clip.path) for name, clip in clips.items()}


_cookies = iter(range(1, 1 << 62))


def header(type_: int, payload: bytes) -> Header:
    return Header(magic=MAGIC, version=VERSION, type=type_, cookie=next(_cookies),
                  payload_len=len(payload), flags=0, status=0)


def call(handler: DecodeHandler, payload: bytes) -> FrameResp:
    """One REQ_DECODE; the answer must be one the kernel accepts."""
    status, answer = handler.handle(header(MsgType.DECODE, payload), payload)
    assert status == 0, answer
    resp = parse_frame_resp(answer)
    validate_frame_resp(resp)
    assert len(resp.message) <= MAX_MSG
    resp.message.decode("utf-8")  # valid UTF-8, never cut inside a character
    return resp


def request(handler: DecodeHandler, stream_id: int, codec: Codec, data: bytes = b"",
            timestamp: int = 0, flags: int = 0) -> FrameResp:
    return call(handler, pack_decode_req(codec, data, stream_id=stream_id, flags=flags,
                                         timestamp=timestamp))


@dataclass
class Decoded:
    frames: list[FrameInfo]
    errors: dict[int, FrameResp]  # packet index (-1: the flush) -> error answer

    def by_timestamp(self) -> dict[int, FrameInfo]:
        return {f.timestamp: f for f in self.frames}


def decode_stream(handler: DecodeHandler, stream_id: int, codec: Codec,
                  data: Sequence[bytes], timestamps: Sequence[int] | None = None) -> Decoded:
    """Every packet (timestamp = its index unless given), then a FLUSH."""
    out = Decoded([], {})
    for index, packet in enumerate(data):
        ts = index if timestamps is None else timestamps[index]
        resp = request(handler, stream_id, codec, packet, ts)
        if resp.ok:
            out.frames += resp.frames
        else:
            out.errors[index] = resp
    resp = request(handler, stream_id, codec, flags=DECODE_FLUSH)
    if resp.ok:
        out.frames += resp.frames
    else:
        out.errors[-1] = resp
    return out


def ffmpeg_digests(clip: Clip, frames: Sequence[FrameInfo]) -> list[int]:
    """Pure-Python FNV-1a of ffmpeg's frames, cut at the sizes the handler reported."""
    raw = reference_output(clip.path, clip.pixfmt)
    return [fnv1a64_reference(f) for f in
            split_frames(raw, [(f.width, f.height) for f in frames], clip.pixfmt)]


# --- digests against ffmpeg ------------------------------------------------------


@pytest.mark.parametrize("role", ["vp9", "h264", "av1", "vp9-10bit"])
def test_digests_equal_fnv1a_of_ffmpeg_frames(clips: dict[str, Clip],
                                              packets: dict[str, list[bytes]],
                                              role: str) -> None:
    clip = clips[role]
    got = decode_stream(DecodeHandler(), 1, clip.wire_codec, packets[role])
    assert not got.errors
    assert len(got.frames) == clip.frames
    if role == "vp9":
        assert (clip.width, clip.height, clip.frames) == (320, 240, 30)
    # ffmpeg's output cut into uniform w*h*3/2 (P010: *2) frames
    raw = reference_output(clip.path, clip.pixfmt)
    assert len(raw) == clip.frames * frame_size(clip.width, clip.height, clip.pixfmt)
    assert clip.width * clip.height * 3 // 2 * (2 if clip.pixfmt == PixFmt.P010 else 1) == (
        frame_size(clip.width, clip.height, clip.pixfmt))
    reference = [fnv1a64_reference(raw[i:i + len(raw) // clip.frames])
                 for i in range(0, len(raw), len(raw) // clip.frames)]
    assert [f.digest for f in got.frames] == reference
    assert {(f.width, f.height, f.pixfmt) for f in got.frames} == {
        (clip.width, clip.height, clip.pixfmt)}
    assert got.frames[0].key and got.frames[0].timestamp == 0
    if len(packets[role]) == clip.frames:  # one shown frame per packet
        assert sorted(f.timestamp for f in got.frames) == list(range(clip.frames))


def _corpus_names() -> list[str]:
    try:
        from daedalus.parse import corpus

        return [e.name for e in corpus.entries(large=False)]
    except Exception:
        return []


# Chroma of the corpus layouts the handler refuses (the pixel formats' definitions).
REFUSED_CHROMA = {"yuv422p": "4:2:2", "yuv444p": "4:4:4"}


@pytest.mark.parametrize("name", _corpus_names() or ["(no corpus)"])
def test_every_corpus_vector_matches_ffmpeg(name: str) -> None:
    """Every small phase 8.3 vector: odd and changing sizes, 10-bit, alt-ref, OBU;
    a 4:2:2 / 4:4:4 one is refused (EOPNOTSUPP), never converted."""
    found = {c.name: c for c in corpus_clips()} if name != "(no corpus)" else {}
    if name not in found:
        pytest.skip("phase 8.3's corpus is not available")
    clip = found[name]
    got = decode_stream(DecodeHandler(), 7, clip.wire_codec, demux(clip.path))
    if clip.pix_fmt in REFUSED_CHROMA:
        assert not got.frames and got.errors
        assert {(r.error, r.text) for r in got.errors.values()} == {(
            errno.EOPNOTSUPP, f"the stream decodes to {clip.pix_fmt} "
            f"({REFUSED_CHROMA[clip.pix_fmt]} chroma); daedalus-v4l2 delivers 4:2:0 only "
            "(NV12 / P010), so it is refused rather than converted")}
        return
    assert not got.errors
    assert len(got.frames) == clip.frames
    assert [f.digest for f in got.frames] == ffmpeg_digests(clip, got.frames)
    assert all(f.pixfmt == clip.pixfmt for f in got.frames)


def test_digests_are_deterministic_across_handlers(clips: dict[str, Clip],
                                                   packets: dict[str, list[bytes]]) -> None:
    first = decode_stream(DecodeHandler(), 1, Codec.VP9, packets["vp9"]).frames
    again = decode_stream(DecodeHandler(), 99, Codec.VP9, packets["vp9"]).frames
    assert first == again


def test_different_content_gives_different_digests(clips: dict[str, Clip],
                                                   packets: dict[str, list[bytes]]) -> None:
    handler = DecodeHandler()
    ours = [f.digest for f in decode_stream(handler, 1, Codec.VP9, packets["vp9"]).frames]
    other = [f.digest for f in decode_stream(handler, 2, Codec.VP9,
                                             packets["vp9-other"]).frames]
    assert len(ours) == len(other) == 30
    assert len(set(ours)) == 30  # moving content: every frame differs
    assert not set(ours) & set(other)


# --- corrupt bitstream -----------------------------------------------------------


def flip_first_byte(data: bytes) -> bytes:
    return bytes([data[0] ^ 0xFF]) + data[1:]


def truncate(data: bytes) -> bytes:
    return data[:max(1, len(data) // 3)]


# A corruption each decoder reports (VP9 decodes a truncated frame without
# complaint; H.264 conceals, and flags the frame).
CORRUPTIONS: dict[str, Callable[[bytes], bytes]] = {
    "vp9-gop": flip_first_byte,  # frame marker bits
    "h264-gop": truncate,
    "av1-gop": truncate,
}


@pytest.mark.parametrize("role", list(CORRUPTIONS))
def test_corrupt_packet_is_eilseq_and_decoding_resumes_at_next_keyframe(
        clips: dict[str, Clip], packets: dict[str, list[bytes]], role: str) -> None:
    clip = clips[role]
    codec = clip.wire_codec
    clean = decode_stream(DecodeHandler(), 1, codec, packets[role])
    assert not clean.errors and len(clean.frames) == clip.frames
    assert len(clip.key_packets) >= 2
    bad_index = clip.key_packets[0] + 4
    resume = min(k for k in clip.key_packets if k > bad_index)
    data = list(packets[role])
    data[bad_index] = CORRUPTIONS[role](data[bad_index])

    handler = DecodeHandler()
    got = decode_stream(handler, 1, codec, data)
    assert got.errors, "the corruption went unnoticed"
    for index, resp in got.errors.items():
        assert resp.status == DecodeStatus.ERROR and resp.error == errno.EILSEQ, index
        assert resp.frames == () and resp.text
        assert bad_index <= index < resume or index == -1
    state = handler.stream(1)
    assert state is not None and state.decoders_created == 1 + state.restarts
    # from the next keyframe on, every frame is back and bit-exact
    expected = {ts: f for ts, f in clean.by_timestamp().items() if ts >= resume}
    actual = {ts: f for ts, f in got.by_timestamp().items() if ts >= resume}
    assert actual == expected
    # and the handler goes on serving: the clean stream again, on a new stream
    assert decode_stream(handler, 2, codec, packets[role]).frames == clean.frames


def _fuzz(data: bytes, rng: random.Random) -> bytes:
    kind = rng.choice(["flip", "flip", "truncate", "garbage", "zeros", "duplicate"])
    if kind == "flip":
        mutable = bytearray(data)
        for _ in range(rng.randint(1, 16)):
            mutable[rng.randrange(len(mutable))] ^= 1 << rng.randrange(8)
        return bytes(mutable)
    if kind == "truncate":
        return data[:rng.randrange(1, len(data))] if len(data) > 1 else data
    if kind == "garbage":
        return rng.randbytes(rng.randint(1, 2 * len(data)))
    if kind == "zeros":
        return bytes(len(data))
    return data + data


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("role", list(CORRUPTIONS))
def test_fuzzed_bitstream_never_breaks_the_handler(clips: dict[str, Clip],
                                                   packets: dict[str, list[bytes]],
                                                   role: str, seed: int) -> None:
    """Random damage in the first GOP: every answer is a valid RESP_FRAME, errors
    are EILSEQ, and the second GOP on decodes bit-exact."""
    clip = clips[role]
    codec = clip.wire_codec
    rng = random.Random(f"{role}-{seed}")
    first, second = clip.key_packets[0], clip.key_packets[1]
    data = list(packets[role])
    for index in rng.sample(range(first + 1, second), 3):
        data[index] = _fuzz(data[index], rng)
    handler = DecodeHandler()
    got = decode_stream(handler, 1, codec, data)
    assert all(r.error == errno.EILSEQ for r in got.errors.values())
    clean = decode_stream(handler, 2, codec, packets[role]).by_timestamp()
    assert {ts: f for ts, f in got.by_timestamp().items() if ts >= second} == {
        ts: f for ts, f in clean.items() if ts >= second}


# --- malformed requests ----------------------------------------------------------


@pytest.mark.parametrize(("make", "match"), [
    (lambda: pack_decode_req(Codec.VP9, b"abc")[:DECODE_REQ_SIZE - 1], "shorter than"),
    (lambda: b"", "shorter than"),
    (lambda: pack_decode_req(Codec.VP9, b"abc", stream_id=1, reserved=[0, 0, 7, 0]),
     "reserved"),
    (lambda: pack_decode_req(0, b"abc", stream_id=1), "unknown codec 0"),
    (lambda: pack_decode_req(9, b"abc", stream_id=1), "unknown codec 9"),
    (lambda: pack_decode_req(Codec.VP9, b"abc", stream_id=1, flags=0x100),
     "unknown decode flags 0x100"),
    (lambda: pack_decode_req(Codec.VP9, b"abc", stream_id=1, bitstream_len=4),
     "bitstream_len 4 but 3"),
    (lambda: pack_decode_req(Codec.VP9, b"abc", stream_id=1, bitstream_len=2),
     "bitstream_len 2 but 3"),
    (lambda: pack_decode_req(Codec.VP9, b"abc", stream_id=1, bitstream_len=2**32 - 1),
     "bitstream_len 4294967295 but 3"),
])
def test_malformed_request_is_einval(make: Callable[[], bytes], match: str) -> None:
    handler = DecodeHandler()
    resp = call(handler, make())
    assert (resp.status, resp.error, resp.frames) == (DecodeStatus.ERROR, errno.EINVAL, ())
    assert re.search(match, resp.text), resp.text
    assert handler.stream_ids() == []  # nothing was created for it


def test_codec_change_is_einval_and_the_stream_goes_on(packets: dict[str, list[bytes]]) -> None:
    handler = DecodeHandler()
    vp9 = packets["vp9"]
    first = request(handler, 5, Codec.VP9, vp9[0], 0)
    assert first.ok and len(first.frames) == 1
    for codec in (Codec.H264, Codec.AV1):
        resp = request(handler, 5, codec, vp9[1], 1)
        assert (resp.status, resp.error) == (DecodeStatus.ERROR, errno.EINVAL)
        assert "codec is fixed" in resp.text and "VP9" in resp.text
    rest = decode_stream(handler, 5, Codec.VP9, vp9[1:], timestamps=range(1, len(vp9)))
    alone = decode_stream(DecodeHandler(), 5, Codec.VP9, vp9)
    assert first.frames + tuple(rest.frames) == tuple(alone.frames)


def test_too_many_streams_is_emfile(packets: dict[str, list[bytes]]) -> None:
    handler = DecodeHandler(max_streams=2)
    for stream_id in (1, 2):
        assert request(handler, stream_id, Codec.VP9, packets["vp9"][0]).ok
    resp = request(handler, 3, Codec.VP9, packets["vp9"][0])
    assert (resp.status, resp.error) == (DecodeStatus.ERROR, errno.EMFILE)
    handler.close_stream(1)
    assert request(handler, 3, Codec.VP9, packets["vp9"][0]).ok


def test_unknown_opcode_is_eopnotsupp() -> None:
    status, message = DecodeHandler().handle(header(MsgType.PING, b"x"), b"x")
    assert status == errno.EOPNOTSUPP and message


# --- flush, close, streams --------------------------------------------------------


def test_flush_returns_held_frames_and_restarts_the_decoder(clips: dict[str, Clip],
                                                            packets: dict[str, list[bytes]]
                                                            ) -> None:
    handler = DecodeHandler()
    h264 = packets["h264"]
    before: list[FrameInfo] = []
    for index, data in enumerate(h264):
        before += request(handler, 1, Codec.H264, data, index).frames
    held = clips["h264"].frames - len(before)
    assert held > 0  # B-frames: the decoder holds frames until it is drained
    flushed = request(handler, 1, Codec.H264, flags=DECODE_FLUSH)
    assert flushed.ok and len(flushed.frames) == held
    state = handler.stream(1)
    assert state is not None and state.decoder is None and state.decoders_created == 1
    assert request(handler, 1, Codec.H264, flags=DECODE_FLUSH).frames == ()  # nothing left
    again = decode_stream(handler, 1, Codec.H264, h264)  # a fresh decoder, same frames
    assert again.frames == before + list(flushed.frames)
    assert state.decoders_created == 2


def test_flush_with_the_last_packet(packets: dict[str, list[bytes]]) -> None:
    handler = DecodeHandler()
    h264 = packets["h264"]
    frames: list[FrameInfo] = []
    for index, data in enumerate(h264):
        last = index == len(h264) - 1
        frames += request(handler, 1, Codec.H264, data, index,
                          DECODE_FLUSH if last else 0).frames
    assert frames == decode_stream(DecodeHandler(), 1, Codec.H264, h264).frames


def test_empty_bitstream_is_a_no_op(packets: dict[str, list[bytes]]) -> None:
    handler = DecodeHandler()
    resp = request(handler, 1, Codec.VP9, b"", 0)
    assert resp.ok and resp.frames == ()
    state = handler.stream(1)
    assert state is not None and state.decoder is None  # not even created
    assert decode_stream(handler, 1, Codec.VP9, packets["vp9"]).frames == decode_stream(
        DecodeHandler(), 1, Codec.VP9, packets["vp9"]).frames


def test_close_stream(packets: dict[str, list[bytes]]) -> None:
    handler = DecodeHandler()
    assert request(handler, 4, Codec.VP9, packets["vp9"][0]).ok
    assert handler.stream_ids() == [4]
    handler.close_stream(4)
    assert handler.stream_ids() == []
    handler.close_stream(4)  # unknown (already closed) stream: fine
    # the id may come back as a new stream, of another codec
    assert request(handler, 4, Codec.H264, packets["h264"][0]).ok
    assert handler.stream_ids() == [4]
    # CLOSE_STREAM itself is daedalusd's (shared/dispatch/tests): not this handler's opcode
    status, message = handler.handle(header(MsgType.CLOSE_STREAM, pack_stream(4)),
                                     pack_stream(4))
    assert status == errno.EOPNOTSUPP and message
    assert handler.stream_ids() == [4]


def test_interleaved_streams_keep_their_own_references(packets: dict[str, list[bytes]]
                                                       ) -> None:
    a, b = packets["vp9"], packets["vp9-other"]
    alone_a = decode_stream(DecodeHandler(), 1, Codec.VP9, a).frames
    alone_b = decode_stream(DecodeHandler(), 2, Codec.VP9, b).frames
    handler = DecodeHandler()
    got: dict[int, list[FrameInfo]] = {1: [], 2: []}
    for index, (pa, pb) in enumerate(zip(a, b, strict=True)):
        got[1] += request(handler, 1, Codec.VP9, pa, index).frames
        got[2] += request(handler, 2, Codec.VP9, pb, index).frames
    for stream_id in (1, 2):
        got[stream_id] += request(handler, stream_id, Codec.VP9, flags=DECODE_FLUSH).frames
    assert (got[1], got[2]) == (alone_a, alone_b)


def test_concurrent_streams_in_threads(packets: dict[str, list[bytes]]) -> None:
    """The daemon calls handle() from executor threads: streams in parallel."""
    jobs = [("vp9", Codec.VP9), ("h264", Codec.H264), ("av1", Codec.AV1),
            ("vp9-other", Codec.VP9), ("vp9", Codec.VP9), ("h264-gop", Codec.H264)]
    expected = [decode_stream(DecodeHandler(), 1, codec, packets[role]).frames
                for role, codec in jobs]
    handler = DecodeHandler()
    results: dict[int, list[FrameInfo]] = {}
    failures: list[BaseException] = []

    def work(stream_id: int, role: str, codec: Codec) -> None:
        try:
            results[stream_id] = decode_stream(handler, stream_id, codec, packets[role]).frames
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(10 + n, role, codec))
               for n, (role, codec) in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures
    assert [results[10 + n] for n in range(len(jobs))] == expected


def test_timestamps_are_opaque_64_bit_values(packets: dict[str, list[bytes]]) -> None:
    h264 = packets["h264"]
    stamps = [2**64 - 1 - 7 * n for n in range(len(h264))]
    got = decode_stream(DecodeHandler(), 1, Codec.H264, h264, timestamps=stamps).frames
    plain = decode_stream(DecodeHandler(), 1, Codec.H264, h264).frames
    assert [f.timestamp for f in got] == [stamps[f.timestamp] for f in plain]


# --- the handler against a fake decoder -------------------------------------------


Behaviour = Callable[["av.Packet[Any] | None"], list[av.VideoFrame]]


class FakeDecoder:
    """Stands in for VideoCodecContext: decode() does what *behaviour* says."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour

    def decode(self, packet: av.Packet[Any] | None = None) -> list[av.VideoFrame]:
        return self.behaviour(packet)


def fake_handler(behaviour: Behaviour) -> DecodeHandler:
    def factory(codec: Codec) -> VideoCodecContext:
        return cast(VideoCodecContext, FakeDecoder(behaviour))

    return DecodeHandler(decoder_factory=factory)


def gray_frame(width: int = 64, height: int = 48) -> av.VideoFrame:
    frame = av.VideoFrame(width, height, "yuv420p")
    for plane in frame.planes:
        plane.update(bytes([128]) * plane.buffer_size)
    return frame


def invalid_data(message: str = "Invalid data found when processing input"
                 ) -> av.error.InvalidDataError:
    return av.error.InvalidDataError(-1094995529, message)


def raising(exc: Exception) -> Behaviour:
    def behaviour(packet: av.Packet[Any] | None) -> list[av.VideoFrame]:
        raise exc

    return behaviour


def test_more_frames_than_a_response_holds_is_an_error() -> None:
    handler = fake_handler(lambda packet: [gray_frame()] * (MAX_FRAMES + 1))
    resp = request(handler, 1, Codec.VP9, b"x")
    assert (resp.status, resp.error, resp.frames) == (DecodeStatus.ERROR, errno.EOVERFLOW, ())
    assert "17 frames" in resp.text
    ok = fake_handler(lambda packet: [gray_frame()] * MAX_FRAMES)
    assert len(request(ok, 1, Codec.VP9, b"x").frames) == MAX_FRAMES


def test_oversize_frame_is_an_error_not_a_rejected_answer() -> None:
    handler = fake_handler(lambda packet: [gray_frame(8194, 16)])
    resp = request(handler, 1, Codec.VP9, b"x")
    assert (resp.status, resp.error) == (DecodeStatus.ERROR, errno.EFBIG)


def test_invalid_data_keeps_the_decoder() -> None:
    handler = fake_handler(raising(invalid_data()))
    for n in range(20):
        resp = request(handler, 1, Codec.AV1, b"x", n)
        assert resp.error == errno.EILSEQ and resp.text == (
            "invalid bitstream: Invalid data found when processing input")
    state = handler.stream(1)
    assert state is not None and state.decoder is not None
    assert (state.decoders_created, state.restarts, state.errors) == (1, 0, 20)


class Wedging:
    """A real decoder that breaks for good at packet *at* (pts = packet number)."""

    def __init__(self, codec: Codec, at: int) -> None:
        self.real = create_decoder(codec)
        self.at = at

    def decode(self, packet: av.Packet[Any] | None = None) -> list[av.VideoFrame]:
        if packet is not None and packet.pts is not None and packet.pts >= self.at:
            raise invalid_data()
        return list(self.real.decode(packet))


def test_wedged_decoder_is_replaced_at_the_next_keyframe(clips: dict[str, Clip],
                                                         packets: dict[str, list[bytes]]
                                                         ) -> None:
    clip = clips["vp9-gop"]
    made: list[object] = []

    def factory(codec: Codec) -> VideoCodecContext:
        made.append(Wedging(codec, 5) if not made else create_decoder(codec))
        return cast(VideoCodecContext, made[-1])

    handler = DecodeHandler(decoder_factory=factory)
    got = decode_stream(handler, 1, Codec.VP9, packets["vp9-gop"])
    resume = min(k for k in clip.key_packets if k > 5)
    assert sorted(got.errors) == list(range(5, resume))  # the inter frames until then
    clean = decode_stream(DecodeHandler(), 1, Codec.VP9, packets["vp9-gop"]).frames
    assert [f for f in got.frames if f.timestamp >= resume] == clean[resume:]
    assert [f for f in got.frames if f.timestamp < 5] == clean[:5]
    state = handler.stream(1)
    assert state is not None and state.restarts == 1


def test_other_ffmpeg_errors_reset_the_decoder() -> None:
    external = av.error.ExternalError(-542398533, "Generic error in an external library")
    handler = fake_handler(raising(external))
    resp = request(handler, 1, Codec.H264, b"x")
    assert resp.error == errno.EILSEQ and "decoder reset" in resp.text
    state = handler.stream(1)
    assert state is not None and state.decoder is None
    oom = fake_handler(raising(av.error.MemoryError(12, "Cannot allocate memory")))
    assert request(oom, 1, Codec.H264, b"x").error == errno.ENOMEM


def test_a_bug_is_eio_and_the_handler_survives() -> None:
    handler = fake_handler(raising(RuntimeError("boom")))
    resp = request(handler, 1, Codec.VP9, b"x")
    assert resp.error == errno.EIO and "boom" in resp.text
    assert request(handler, 2, Codec.VP9, b"").ok


def test_long_messages_are_cut_on_a_character_boundary() -> None:
    handler = fake_handler(raising(invalid_data("défaillance " * 100)))
    resp = request(handler, 1, Codec.VP9, b"x")
    assert 250 <= len(resp.message) <= MAX_MSG
    assert resp.text.startswith("invalid bitstream: défaillance")


# --- packing -----------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), [(64, 48), (33, 17), (1, 1), (322, 240)])
def test_nv12_packing(width: int, height: int) -> None:
    rng = np.random.default_rng(width * height)
    cw, ch = (width + 1) // 2, (height + 1) // 2
    y = rng.integers(0, 256, (height, width), dtype=np.uint8)
    u = rng.integers(0, 256, (ch, cw), dtype=np.uint8)
    v = rng.integers(0, 256, (ch, cw), dtype=np.uint8)
    frame = av.VideoFrame(width, height, "yuv420p")
    for plane, data in zip(frame.planes, (y, u, v), strict=True):
        buf = np.frombuffer(memoryview(plane), np.uint8).reshape(-1, plane.line_size)
        buf[:data.shape[0], :data.shape[1]] = data
    packed = pack(frame)
    assert packed.pixfmt == PixFmt.NV12
    uv = np.empty((ch, 2 * cw), np.uint8)
    uv[:, 0::2], uv[:, 1::2] = u, v
    expected = y.tobytes() + uv.tobytes()
    assert packed.tobytes() == expected
    assert len(expected) == frame_size(width, height, PixFmt.NV12)
    assert packed.digest == fnv1a64_reference(expected)


def test_p010_packing() -> None:
    width, height = 34, 18
    rng = np.random.default_rng(10)
    y = rng.integers(0, 1024, (height, width), dtype=np.uint16)
    u = rng.integers(0, 1024, (height // 2, width // 2), dtype=np.uint16)
    v = rng.integers(0, 1024, (height // 2, width // 2), dtype=np.uint16)
    frame = av.VideoFrame(width, height, "yuv420p10le")
    for plane, data in zip(frame.planes, (y, u, v), strict=True):
        buf = np.frombuffer(memoryview(plane), "<u2").reshape(-1, plane.line_size // 2)
        buf[:data.shape[0], :data.shape[1]] = data
    packed = pack(frame)
    assert packed.pixfmt == PixFmt.P010
    uv = np.empty((height // 2, width), "<u2")
    uv[:, 0::2], uv[:, 1::2] = u, v
    expected = (y.astype("<u2") << 6).tobytes() + (uv << 6).tobytes()  # upper 10 bits
    assert packed.tobytes() == expected
    assert len(expected) == frame_size(width, height, PixFmt.P010) == width * height * 3


@pytest.mark.parametrize(("name", "what"), [
    ("yuv422p", "4:2:2 chroma"), ("yuv444p", "4:4:4 chroma"), ("nv16", "4:2:2 chroma"),
    ("nv24", "4:4:4 chroma"), ("yuv444p10le", "4:4:4 chroma"), ("yuv440p", "4:4:0 chroma"),
    ("yuv411p", "4:1:1 chroma"), ("gray", "4:0:0, no chroma"), ("gbrp", "RGB"),
    ("yuv420p12le", "12-bit samples")])
def test_pack_refuses_what_nv12_and_p010_cannot_carry(name: str, what: str) -> None:
    """Never a chroma downscale (or dropped bits): UnsupportedLayout, one line
    naming FFmpeg's layout and the property."""
    with pytest.raises(UnsupportedLayout) as info:
        pack(av.VideoFrame(34, 18, name))
    assert (info.value.pix_fmt, info.value.what) == (name, what)
    text = str(info.value)
    assert text.startswith(f"the stream decodes to {name} ({what}); daedalus-v4l2 delivers ")
    assert text.endswith("so it is refused rather than converted") and "\n" not in text
    assert len(text.encode()) <= MAX_MSG


@pytest.mark.parametrize("name", ["yuv420p", "yuvj420p", "nv12", "nv21", "yuv420p10le",
                                  "p010le"])
def test_pack_takes_every_420_layout(name: str) -> None:
    assert pack(av.VideoFrame(34, 18, name)).pixfmt == (
        PixFmt.P010 if "10" in name else PixFmt.NV12)


def test_full_range_420_is_packed_sample_for_sample() -> None:
    """yuvj420p (full-range H.264 / JPEG): the decoder's samples, not swscale's
    full-to-limited range conversion."""
    rng = np.random.default_rng(7)
    frame = av.VideoFrame(34, 18, "yuvj420p")
    y, u, v = (rng.integers(0, 256, (h, w), dtype=np.uint8) for w, h in
               ((34, 18), (17, 9), (17, 9)))
    for plane, data in zip(frame.planes, (y, u, v), strict=True):
        buf = np.frombuffer(memoryview(plane), np.uint8).reshape(-1, plane.line_size)
        buf[:data.shape[0], :data.shape[1]] = data
    uv = np.empty((9, 34), np.uint8)
    uv[:, 0::2], uv[:, 1::2] = u, v
    assert pack(frame).tobytes() == y.tobytes() + uv.tobytes()


def test_odd_size_p010_keeps_the_last_chroma_column() -> None:
    width, height = 33, 17
    rng = np.random.default_rng(33)
    y = rng.integers(0, 1024, (height, width), dtype=np.uint16)
    u = rng.integers(0, 1024, (9, 17), dtype=np.uint16)
    v = rng.integers(0, 1024, (9, 17), dtype=np.uint16)
    frame = av.VideoFrame(width, height, "yuv420p10le")
    for plane, data in zip(frame.planes, (y, u, v), strict=True):
        buf = np.frombuffer(memoryview(plane), "<u2").reshape(-1, plane.line_size // 2)
        buf[:data.shape[0], :data.shape[1]] = data
    uv = np.empty((9, 34), "<u2")
    uv[:, 0::2], uv[:, 1::2] = u, v
    expected = (y.astype("<u2") << 6).tobytes() + (uv << 6).tobytes()
    assert pack(frame).tobytes() == expected
    assert len(expected) == frame_size(width, height, PixFmt.P010)


def test_a_444_stream_is_eopnotsupp_with_one_warning(caplog: pytest.LogCaptureFixture
                                                     ) -> None:
    """The stand-in decoder makes 4:4:4 frames: every request of the stream gets
    DECODE_ERROR / EOPNOTSUPP naming the layout, no frame; the log has one
    warning for the stream, not one per request."""
    handler = fake_handler(lambda packet: [av.VideoFrame(64, 48, "yuv444p")] * (
        packet is not None))
    with caplog.at_level(logging.DEBUG, logger="daedalus.roundtrip"):
        answers = [request(handler, 5, Codec.H264, b"x", n) for n in range(4)]
    for resp in answers:
        assert (resp.status, resp.error, resp.frames) == (
            DecodeStatus.ERROR, errno.EOPNOTSUPP, ())
        assert resp.text.startswith("the stream decodes to yuv444p (4:4:4 chroma)")
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "stream 5 refused" in warnings[0].getMessage()
    state = handler.stream(5)
    assert state is not None and state.refused == answers[0].text and state.errors == 4


# --- registration and daedalusd ------------------------------------------------------


def test_order_key_is_the_stream() -> None:
    """daedalusd hands one stream's requests to the handler in the order it
    read them (registry.py's Ordered): the key is the stream."""
    handler = DecodeHandler()
    payload = pack_decode_req(Codec.VP9, b"\x82\x49\x83", stream_id=12, flags=DECODE_FLUSH)
    assert handler.order_key(header(MsgType.DECODE, payload), payload) == 12
    short = payload[:DECODE_REQ_SIZE - 1]
    assert handler.order_key(header(MsgType.DECODE, short), short) is None
    assert handler.order_key(header(MsgType.FEED, payload), payload) is None  # not its opcode
    assert handler.stream_ids() == []


def test_handler_is_registered_by_entry_point() -> None:
    registry = Registry.from_entry_points()
    registration = registry.lookup(MsgType.DECODE)
    assert registration is not None and registration.name == "decode"
    assert registration.phase == (8, 4)
    assert isinstance(registration.handler, DecodeHandler)
    # CLOSE_STREAM: the core answers it, after the handlers with per-stream state
    assert registry.lookup(MsgType.CLOSE_STREAM) is None
    assert registration in registry.stream_owners
    assert registration.ordered is registration.handler
    assert registry.hello_phase() >= 84


def test_through_daedalusd(packets: dict[str, list[bytes]]) -> None:
    """serve() over a SOCK_SEQPACKET pair (keeps message boundaries like the
    chardev): two streams' requests in flight at once, then CLOSE_STREAM."""
    a, b = packets["vp9"], packets["h264"]
    expected = {1: decode_stream(DecodeHandler(), 1, Codec.VP9, a).frames,
                2: decode_stream(DecodeHandler(), 2, Codec.H264, b).frames}

    async def kernel(sock: socket.socket) -> dict[int, list[FrameInfo]]:
        loop = asyncio.get_running_loop()
        cookie = 0

        async def send(type_: int, payload: bytes) -> int:
            nonlocal cookie
            cookie += 1
            await loop.sock_sendall(sock, pack_header(type_, cookie, len(payload)) + payload)
            return cookie

        async def recv() -> tuple[Header, bytes]:
            data = await asyncio.wait_for(loop.sock_recv(sock, HDR_SIZE + MAX_PAYLOAD), 30)
            return parse_header(data), data[HDR_SIZE:]

        await send(MsgType.HELLO, pack_hello())
        hello, _ = await recv()
        assert hello.status == 0
        frames: dict[int, list[FrameInfo]] = {1: [], 2: []}
        streams = {1: (Codec.VP9, a), 2: (Codec.H264, b)}
        for index in range(max(len(a), len(b)) + 1):
            waiting = {}
            for stream_id, (codec, data) in streams.items():
                if index < len(data):
                    payload = pack_decode_req(codec, data[index], stream_id=stream_id,
                                              timestamp=index)
                elif index == len(data):
                    payload = pack_decode_req(codec, stream_id=stream_id, flags=DECODE_FLUSH)
                else:
                    continue
                waiting[await send(MsgType.DECODE, payload)] = stream_id
            for _ in range(len(waiting)):  # both in flight: answers in any order
                answer, payload = await recv()
                assert answer.type == MsgType.DECODE | RESPONSE and answer.status == 0
                resp = parse_frame_resp(payload)
                validate_frame_resp(resp)
                frames[waiting.pop(answer.cookie)] += resp.frames
        for stream_id in streams:
            await send(MsgType.CLOSE_STREAM, pack_stream(stream_id))
            answer, payload = await recv()
            assert (answer.type, answer.status, payload) == (
                MsgType.CLOSE_STREAM | RESPONSE, 0, b"")
        return frames

    async def main() -> dict[int, list[FrameInfo]]:
        daemon_end, kernel_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with daemon_end, kernel_end:
            kernel_end.setblocking(False)
            stop = asyncio.Event()
            served = asyncio.create_task(daemon.serve(daemon_end.fileno(), [DecodeHandler],
                                                      stop=stop))
            try:
                return await asyncio.wait_for(kernel(kernel_end), 120)
            finally:
                stop.set()
                assert await asyncio.wait_for(served, 10) == 0

    assert asyncio.run(main()) == expected


# --- the roundtrip command (--local) ---------------------------------------------------


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from daedalus.testbed.cli import main

    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def parse_lines(out: str) -> list[tuple[int, int, int, str, int]]:
    rows = []
    for line in out.splitlines():
        m = FRAME_LINE.match(line)
        assert m, line
        rows.append((int(m[1]), int(m[2]), int(m[3]), m[4], int(m[5], 16)))
    return rows


@pytest.mark.parametrize("role", ["vp9", "h264", "av1", "vp9-10bit"])
def test_cli_local_prints_ffmpeg_digests(clips: dict[str, Clip],
                                         capsys: pytest.CaptureFixture[str], role: str) -> None:
    clip = clips[role]
    code, out, err = run_cli(["roundtrip", "--local", str(clip.path)], capsys)
    assert code == 0, err
    assert "NOT exercised" in err and f"{clip.frames} frames, 0 errors" in err
    rows = parse_lines(out)
    assert [r[0] for r in rows] == list(range(clip.frames))
    assert {r[1:4] for r in rows} == {(clip.width, clip.height, clip.pixfmt.name.lower())}
    raw = reference_output(clip.path, clip.pixfmt)
    size = frame_size(clip.width, clip.height, clip.pixfmt)
    assert [r[4] for r in rows] == [fnv1a64_reference(raw[i:i + size])
                                    for i in range(0, len(raw), size)]


def test_cli_local_is_deterministic_across_processes(clips: dict[str, Clip]) -> None:
    argv = [sys.executable, "-m", "daedalus.testbed.cli", "roundtrip", "--local",
            str(clips["h264"].path)]
    runs = [subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)
            for _ in range(2)]
    assert runs[0].stdout == runs[1].stdout
    assert len(parse_lines(runs[0].stdout)) == clips["h264"].frames


@pytest.fixture()
def corrupt_vp9(clips: dict[str, Clip], tmp_path: Path) -> tuple[Path, int, int]:
    """The vp9-gop clip with packet 4's first byte flipped in place (the IVF
    framing stays intact); (path, bad packet, next keyframe packet)."""
    from daedalus.parse.readers import open_stream

    clip = clips["vp9-gop"]
    _, reader = open_stream(str(clip.path))
    packet = next(p for p in reader if p.index == 4)
    data = bytearray(clip.path.read_bytes())
    payload = packet.offset + 12  # the IVF frame header: le32 size, le64 timestamp
    assert data[payload:payload + len(packet.data)] == packet.data
    data[payload] ^= 0xFF
    path = tmp_path / "corrupt.ivf"
    path.write_bytes(bytes(data))
    return path, 4, min(k for k in clip.key_packets if k > 4)


def test_cli_local_reports_errors_and_goes_on(clips: dict[str, Clip],
                                              corrupt_vp9: tuple[Path, int, int],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path, bad, resume = corrupt_vp9
    code, out, _ = run_cli(["roundtrip", "--local", str(path)], capsys)
    assert code == 1
    errors = [line for line in out.splitlines() if line.startswith("error")]
    assert errors and errors[0].startswith(f"error  packet {bad}: EILSEQ: invalid bitstream")
    frames = parse_lines("\n".join(line for line in out.splitlines()
                                   if not line.startswith("error")))
    clean_code, clean_out, _ = run_cli(["roundtrip", "--local", str(clips["vp9-gop"].path)],
                                       capsys)
    assert clean_code == 0
    clean = [r[4] for r in parse_lines(clean_out)]
    got = [r[4] for r in frames]
    assert got[-(30 - resume):] == clean[resume:]  # every frame from the keyframe on


def test_cli_without_module_explains(clips: dict[str, Clip], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["roundtrip", "--debugfs", str(tmp_path / "nope"),
                            str(clips["vp9"].path)], capsys)
    assert code == 1 and "ENOENT" in err and "phase 8.4" in err
    code, _, err = run_cli(["roundtrip", "--local", str(tmp_path / "missing.ivf")], capsys)
    assert code == 1 and "missing.ivf" in err
    (tmp_path / "junk.ivf").write_bytes(b"not a video file at all")
    code, _, err = run_cli(["roundtrip", "--local", str(tmp_path / "junk.ivf")], capsys)
    assert code == 1 and "junk.ivf" in err


def test_run_roundtrip_refuses_a_malformed_answer(packets: dict[str, list[bytes]]) -> None:
    from daedalus.parse.readers import Packet

    class Liar:
        where = "nowhere"

        def __init__(self, answer: bytes) -> None:
            self.answer = answer

        def round_trip(self, request: bytes) -> bytes:
            return self.answer

        def close(self) -> None:
            pass

    stream = [Packet(index=0, offset=32, data=packets["vp9"][0], pts=0)]
    good = FrameInfo(320, 240, PixFmt.NV12, 0, 1, 0)
    for answer in (b"", pack_frame_resp(0, 0, [good])[:-1],
                   pack_frame_resp(DecodeStatus.ERROR, 0), pack_frame_resp(0, 5)):
        with pytest.raises(RoundtripError, match="packet 0: malformed RESP_FRAME"):
            run_roundtrip(stream, Codec.VP9, Liar(answer), out=io.StringIO())

    class Gone(Liar):
        def round_trip(self, request: bytes) -> bytes:
            raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")

    with pytest.raises(RoundtripError, match="start daedalusd"):
        run_roundtrip(stream, Codec.VP9, Gone(b""), out=io.StringIO())


def test_local_transport_fills_the_stream_id(packets: dict[str, list[bytes]]) -> None:
    transport = LocalTransport()
    answer = transport.round_trip(pack_decode_req(Codec.VP9, packets["vp9"][0]))
    assert parse_frame_resp(answer).ok
    assert transport.handler.stream_ids() == [LocalTransport.STREAM_ID]
    transport.close()
    assert transport.handler.stream_ids() == []


def test_command_metadata() -> None:
    command = RoundtripCommand()
    assert command.NAME == "roundtrip" and "FNV-1a" in command.HELP
    assert {d.codec: d.decoder for d in codecs.CODECS} == {
        Codec.VP9: "vp9", Codec.H264: "h264", Codec.AV1: "libdav1d"}
