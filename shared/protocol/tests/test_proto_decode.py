"""Phase 8.4 to 8.6 messages (REQ_DECODE, RESP_FRAME, CLOSE_STREAM; FEED, FETCH;
the dma-buf variants of FEED and FETCH and DAEDALUS_IOC_GET_DMABUF's argument)
and the FNV-1a 64 digest.

The layouts themselves are pinned in test_proto_layout.py; here the packing
and parsing helpers are checked field by field at the golden offsets, and
the C digest against published vectors and a pure-Python reference.
"""

from __future__ import annotations

import dataclasses
import random
import sys
from typing import Any

import pytest

from daedalus import proto

FNV_BASIS = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3


def _u(data: bytes, offset: int, width: int) -> int:
    return int.from_bytes(data[offset:offset + width], sys.byteorder)


def fnv1a64_reference(data: bytes, h: int = FNV_BASIS) -> int:
    """FNV-1a 64 by its definition: per byte, xor then multiply modulo 2**64."""
    for byte in data:
        h = ((h ^ byte) * FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h


# --- FNV-1a 64 -----------------------------------------------------------------


@pytest.mark.parametrize(("data", "digest"), [
    # The published FNV-1a 64 test vectors (Fowler/Noll/Vo reference test suite).
    (b"", 0xCBF29CE484222325),
    (b"a", 0xAF63DC4C8601EC8C),
    (b"foobar", 0x85944171F73967E8),
])
def test_fnv1a64_published_vectors(data: bytes, digest: int) -> None:
    assert proto.fnv1a64(data) == digest
    assert fnv1a64_reference(data) == digest


def test_fnv1a64_constants() -> None:
    assert (proto.FNV1A64_OFFSET_BASIS, proto.FNV1A64_PRIME) == (FNV_BASIS, FNV_PRIME)
    assert proto.fnv1a64() == FNV_BASIS


def test_fnv1a64_matches_the_reference_on_random_data() -> None:
    rng = random.Random(84)
    for size in (1, 7, 8, 255, 4096, 65537, 200_000):
        data = rng.randbytes(size)
        assert proto.fnv1a64(data) == fnv1a64_reference(data), size


def test_fnv1a64_is_incremental() -> None:
    rng = random.Random(1)
    parts = [rng.randbytes(n) for n in (0, 1, 100, 3, 0, 5000)]
    whole = b"".join(parts)
    assert proto.fnv1a64(*parts) == proto.fnv1a64(whole) == fnv1a64_reference(whole)
    digest = proto.FNV1A64_OFFSET_BASIS
    for part in parts:
        digest = proto.fnv1a64(part, seed=digest)
    assert digest == proto.fnv1a64(whole)


def test_fnv1a64_takes_any_buffer() -> None:
    data = random.Random(2).randbytes(1000)
    expected = fnv1a64_reference(data)
    assert proto.fnv1a64(bytearray(data)) == expected
    assert proto.fnv1a64(memoryview(b"xx" + data)[2:]) == expected  # offset view, no copy
    assert proto.fnv1a64(memoryview(data).cast("H")) == expected


def test_fnv1a64_numpy_arrays_without_copies() -> None:
    np = pytest.importorskip("numpy")
    words = np.arange(4096, dtype="<u2").reshape(64, 64)
    assert proto.fnv1a64(words) == fnv1a64_reference(words.tobytes())
    rows = np.frombuffer(random.Random(3).randbytes(64 * 100), np.uint8).reshape(64, 100)
    assert proto.fnv1a64(rows[10:20]) == fnv1a64_reference(rows[10:20].tobytes())
    with pytest.raises(ValueError):  # a strided view is not one run of bytes
        proto.fnv1a64(rows[:, :50])


def test_fnv1a64_rejects_non_buffers() -> None:
    with pytest.raises(TypeError):
        proto.fnv1a64("text")  # str has no buffer: encode it first


# --- REQ_DECODE ----------------------------------------------------------------


def test_pack_decode_req_layout() -> None:
    data = proto.pack_decode_req(proto.Codec.H264, b"\x00\x00\x01bits", stream_id=7,
                                 flags=proto.DECODE_FLUSH, timestamp=2**64 - 2)
    assert len(data) == proto.DECODE_REQ_SIZE + 7
    assert [_u(data, o, w) for o, w in ((0, 8), (8, 8), (16, 4), (20, 4), (24, 4))] == [
        7, 2**64 - 2, 2, 1, 7]
    assert data[28:48] == bytes(20)  # bitstream_offset 0, reserved
    assert data[48:] == b"\x00\x00\x01bits"


def test_pack_decode_req_dmabuf_layout_and_round_trip() -> None:
    """A FEED with DECODE_DMABUF: bitstream_len and bitstream_offset (at 28)
    describe the OUTPUT buffer; nothing follows the struct."""
    data = proto.pack_decode_req(proto.Codec.VP9, stream_id=9, timestamp=5,
                                 flags=proto.DECODE_DMABUF, bitstream_len=70000,
                                 bitstream_offset=0x1234)
    assert len(data) == proto.DECODE_REQ_SIZE
    assert [_u(data, o, 4) for o in (20, 24, 28)] == [8, 70000, 0x1234]
    assert data[32:48] == bytes(16)
    req, bitstream = proto.parse_decode_req(data)
    assert req == proto.DecodeReq(stream_id=9, codec=1, flags=8, bitstream_len=70000,
                                  timestamp=5, bitstream_offset=0x1234)
    assert req.dmabuf and not (req.flush or req.reset or req.resync) and not bitstream
    assert req.reserved == (0, 0, 0, 0)
    proto.validate_decode_req(req, len(bitstream), allowed_flags=proto.FEED_FLAGS)


def test_decode_req_round_trip() -> None:
    payload = proto.pack_decode_req(proto.Codec.AV1, b"obu", stream_id=3, timestamp=99)
    req, bitstream = proto.parse_decode_req(payload)
    assert req == proto.DecodeReq(stream_id=3, codec=3, flags=0, bitstream_len=3, timestamp=99)
    assert bytes(bitstream) == b"obu" and not req.flush
    proto.validate_decode_req(req, len(bitstream))
    req, bitstream = proto.parse_decode_req(memoryview(b"?" + payload)[1:])  # unaligned
    assert req.timestamp == 99 and bytes(bitstream) == b"obu"


def test_parse_decode_req_rejects_short_payload() -> None:
    with pytest.raises(proto.ProtocolError, match="shorter than struct daedalus_decode_req"):
        proto.parse_decode_req(bytes(proto.DECODE_REQ_SIZE - 1))


@pytest.mark.parametrize(("kwargs", "extra", "match"), [
    ({"reserved": [0, 0, 0, 1]}, 0, "reserved"),
    ({"bitstream_offset": 16}, 0, "bitstream_offset 16 without DECODE_DMABUF"),
    ({"flags": 8, "bitstream": b""}, 0, "unknown decode flags 0x8"),  # REQ_DECODE: inline
    ({"codec": 0}, 0, "unknown codec 0"),
    ({"codec": 4}, 0, "unknown codec 4"),
    ({"flags": 2}, 0, "unknown decode flags 0x2"),
    ({"bitstream_len": 4}, 0, "bitstream_len 4 but 3"),
    ({}, 1, "bitstream_len 3 but 4"),
])
def test_validate_decode_req_rejects(kwargs: dict[str, Any], extra: int, match: str) -> None:
    args: dict[str, Any] = {"codec": proto.Codec.VP9, "bitstream": b"abc"} | kwargs
    req, bitstream = proto.parse_decode_req(proto.pack_decode_req(**args) + bytes(extra))
    with pytest.raises(proto.ProtocolError, match=match):
        proto.validate_decode_req(req, len(bitstream))


# --- RESP_FRAME ----------------------------------------------------------------

FRAME = proto.FrameInfo(width=320, height=240, pixfmt=proto.PixFmt.NV12, flags=proto.FRAME_KEY,
                        digest=0xFEDCBA9876543210, timestamp=41)


def test_pack_frame_resp_layout() -> None:
    second = proto.FrameInfo(width=1920, height=1080, pixfmt=proto.PixFmt.P010, flags=0,
                             digest=1, timestamp=2**64 - 1)
    data = proto.pack_frame_resp(proto.DecodeStatus.OK, 0, [FRAME, second], b"hi")
    assert len(data) == 32 + 2 * 40 + 2
    assert [_u(data, o, 4) for o in (0, 4, 8, 12)] == [0, 0, 2, 2]
    assert data[16:32] == bytes(16)
    first = data[32:72]
    assert [_u(first, o, 4) for o in (0, 4, 8, 12)] == [320, 240, 1, 1]
    assert (_u(first, 16, 8), _u(first, 24, 8)) == (0xFEDCBA9876543210, 41)
    # no colour given: H.273 "unspecified" (2) three times, range unspecified (0)
    assert first[32:36] == bytes([2, 2, 2, 0]) and first[36:40] == bytes(4)
    assert _u(data[72:112], 24, 8) == 2**64 - 1
    assert data[112:] == b"hi"


def test_frame_colour_description_layout_and_round_trip() -> None:
    """Protocol v9: primaries, transfer, matrix and range are one byte each at
    32..35 (H.273 code points, FFmpeg's AVColorRange), reserved at 36..39."""
    tagged = proto.FrameInfo(width=128, height=96, pixfmt=proto.PixFmt.NV12, flags=0, digest=7,
                             timestamp=3, primaries=9, transfer=16, matrix=9,
                             range=proto.RANGE_FULL)
    data = proto.pack_frame_resp(proto.DecodeStatus.OK, 0, [tagged])
    assert data[32 + 32:32 + 40] == bytes([9, 16, 9, 2, 0, 0, 0, 0])
    resp = proto.parse_frame_resp(data)
    assert resp.frames == (tagged,)
    proto.validate_frame_resp(resp)  # any code point is accepted: the kernel judges them
    odd = dataclasses.replace(tagged, primaries=255, transfer=0, matrix=200, range=7)
    proto.validate_frame_resp(proto.parse_frame_resp(proto.pack_frame_resp(0, 0, [odd])))
    with pytest.raises(proto.ProtocolError, match="cannot pack"):
        proto.pack_frame_resp(0, 0, [dataclasses.replace(tagged, primaries=256)])
    fetched, _ = proto.parse_fetch_resp(proto.pack_fetch_resp(tagged, b"xy"))
    assert fetched.frame == tagged


def test_frame_resp_round_trip() -> None:
    data = proto.pack_frame_resp(proto.DecodeStatus.OK, 0, [FRAME] * proto.MAX_FRAMES)
    resp = proto.parse_frame_resp(data)
    assert resp.ok and resp.frames == (FRAME,) * 16 and resp.message == b""
    proto.validate_frame_resp(resp)
    error = proto.pack_frame_resp(proto.DecodeStatus.ERROR, 84, (), "ungültig".encode())
    resp = proto.parse_frame_resp(error)
    assert (resp.status, resp.error, resp.frames, resp.text) == (1, 84, (), "ungültig")
    proto.validate_frame_resp(resp)
    assert FRAME.key and FRAME.pixfmt_name == "nv12"


def test_pack_frame_resp_refuses_what_does_not_fit() -> None:
    with pytest.raises(proto.ProtocolError, match="at most 16"):
        proto.pack_frame_resp(0, 0, [FRAME] * 17)
    with pytest.raises(proto.ProtocolError, match="at most 256"):
        proto.pack_frame_resp(1, 84, (), b"x" * 257)


@pytest.mark.parametrize(("data", "match"), [
    (bytes(31), "shorter than"),
    (proto.pack_frame_resp(0, 0, [FRAME]) + b"x", "but 1 frames and a 0-byte message make"),
    (proto.pack_frame_resp(0, 0, [FRAME])[:-1], "make 72"),
    (proto.pack_frame_resp(0, 0, [FRAME], nr_frames=17), "exceeds DAEDALUS_MAX_FRAMES"),
    (proto.pack_frame_resp(1, 5, (), b"m", msg_len=257), "exceeds DAEDALUS_MAX_MSG"),
    (proto.pack_frame_resp(1, 5, (), b"m", msg_len=2), "make 34"),
])
def test_parse_frame_resp_rejects_lengths(data: bytes, match: str) -> None:
    with pytest.raises(proto.ProtocolError, match=match):
        proto.parse_frame_resp(data)


@pytest.mark.parametrize(("resp", "match"), [
    (proto.FrameResp(0, 0, reserved=(0, 1, 0, 0)), "reserved"),
    (proto.FrameResp(0, 22), "DECODE_OK with error 22"),
    (proto.FrameResp(1, 0), "without an errno"),
    (proto.FrameResp(1, 84, (FRAME,)), "DECODE_ERROR with 1 frames"),
    (proto.FrameResp(2, 0), "unknown frame_resp status 2"),
    (proto.FrameResp(0, 0, (FRAME.__class__(0, 240, 1, 0, 0, 0),)), "size 0x240"),
    (proto.FrameResp(0, 0, (FRAME.__class__(320, 240, 5, 0, 0, 0),)), "unknown pixfmt 5"),
    (proto.FrameResp(0, 0, (FRAME.__class__(320, 240, 1, 4, 0, 0),)), "unknown flags 0x4"),
    (proto.FrameResp(0, 0, (FRAME.__class__(320, 240, 1, 0, 0, 0, reserved=1),)),
     "reserved"),
])
def test_validate_frame_resp_rejects(resp: proto.FrameResp, match: str) -> None:
    with pytest.raises(proto.ProtocolError, match=match):
        proto.validate_frame_resp(resp)


@pytest.mark.parametrize(("text", "limit", "expected"), [
    ("plain", 256, b"plain"),
    ("x" * 300, 256, b"x" * 256),
    ("ab€", 4, b"ab"),  # € is 3 bytes: not cut in half
    ("ab€", 3, b"ab"),
    ("ab€", 5, "ab€".encode()),
    ("€€", 3, "€".encode()),
    ("😀", 3, b""),
])
def test_encode_message_cuts_on_a_character_boundary(text: str, limit: int,
                                                     expected: bytes) -> None:
    got = proto.encode_message(text, limit)
    assert got == expected and len(got) <= limit
    got.decode("utf-8")  # always valid UTF-8


def test_encode_message_default_limit_is_max_msg() -> None:
    got = proto.encode_message("é" * 200)
    assert len(got) == 256 and got.decode() == "é" * 128


# --- CLOSE_STREAM ----------------------------------------------------------------


def test_stream_round_trip() -> None:
    data = proto.pack_stream(0xDEADBEEF)
    assert len(data) == proto.STREAM_SIZE == 16
    assert _u(data, 0, 4) == 0xDEADBEEF and data[4:] == bytes(12)
    assert proto.parse_stream(data) == proto.Stream(stream_id=0xDEADBEEF)
    assert proto.parse_stream(proto.pack_stream(1, reserved=[0, 2])).reserved == (0, 2)
    for size in (0, 15, 17):
        with pytest.raises(proto.ProtocolError, match="CLOSE_STREAM payload"):
            proto.parse_stream(bytes(size))


# --- FEED and FETCH (phase 8.5) ----------------------------------------------------


def test_feed_allows_reset_and_resync_where_decode_does_not() -> None:
    req, bitstream = proto.parse_decode_req(proto.pack_decode_req(
        proto.Codec.H264, b"abc", flags=proto.DECODE_FLUSH | proto.DECODE_RESET))
    assert req.flush and req.reset and not req.resync
    proto.validate_decode_req(req, len(bitstream), allowed_flags=proto.FEED_FLAGS)
    with pytest.raises(proto.ProtocolError, match="unknown decode flags 0x2"):
        proto.validate_decode_req(req, len(bitstream))
    req, bitstream = proto.parse_decode_req(proto.pack_decode_req(
        proto.Codec.H264, b"abc", flags=proto.DECODE_RESYNC | proto.DECODE_FLUSH))
    assert req.resync and req.flush and not req.reset
    proto.validate_decode_req(req, len(bitstream), allowed_flags=proto.FEED_FLAGS)
    with pytest.raises(proto.ProtocolError, match="unknown decode flags 0x4"):
        proto.validate_decode_req(req, len(bitstream))  # REQ_DECODE: FLUSH only
    req, bitstream = proto.parse_decode_req(proto.pack_decode_req(proto.Codec.H264, b"abc",
                                                                  flags=0x10))
    with pytest.raises(proto.ProtocolError, match="unknown decode flags 0x10"):
        proto.validate_decode_req(req, len(bitstream), allowed_flags=proto.FEED_FLAGS)


@pytest.mark.parametrize(("kwargs", "match"), [
    # the bitstream is in the OUTPUT buffer: no byte may follow the struct
    ({"bitstream": b"abc"}, "DECODE_DMABUF but 3 bitstream bytes follow"),
    ({"bitstream": b"abc", "bitstream_len": 0}, "DECODE_DMABUF but 3 bitstream bytes"),
    ({"bitstream_len": 10, "reserved": [1, 0, 0, 0]}, "reserved"),
    ({"bitstream_len": 10, "flags": proto.DECODE_DMABUF | 0x10}, "unknown decode flags 0x10"),
])
def test_validate_dmabuf_feed_rejects(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"codec": proto.Codec.VP9, "flags": proto.DECODE_DMABUF} | kwargs
    req, bitstream = proto.parse_decode_req(proto.pack_decode_req(**args))
    with pytest.raises(proto.ProtocolError, match=match):
        proto.validate_decode_req(req, len(bitstream), allowed_flags=proto.FEED_FLAGS)


@pytest.mark.parametrize(("length", "offset", "flags"), [
    (0, 0, proto.DECODE_DMABUF | proto.DECODE_FLUSH),  # a drain of an empty buffer
    (2**32 - 1, 2**32 - 1, proto.DECODE_DMABUF),  # whether it fits: the handler's check
    (100, 0, proto.DECODE_DMABUF | proto.DECODE_RESET | proto.DECODE_RESYNC),
])
def test_validate_dmabuf_feed_accepts(length: int, offset: int, flags: int) -> None:
    req, bitstream = proto.parse_decode_req(proto.pack_decode_req(
        proto.Codec.H264, flags=flags, bitstream_len=length, bitstream_offset=offset))
    proto.validate_decode_req(req, len(bitstream), allowed_flags=proto.FEED_FLAGS)
    assert (req.bitstream_len, req.bitstream_offset) == (length, offset)


def test_pack_fetch_req_layout_and_round_trip() -> None:
    data = proto.pack_fetch_req(2**40 + 9, flags=proto.FETCH_DISCARD, bytesperline=384,
                                height=256, max_bytes=147456, timestamp=2**40 + 7,
                                digest=2**64 - 2)
    assert len(data) == proto.FETCH_REQ_SIZE == 48
    assert [_u(data, o, 8) for o in (0, 8, 16)] == [2**40 + 9, 2**40 + 7, 2**64 - 2]
    assert [_u(data, o, 4) for o in (24, 28, 32, 36)] == [1, 384, 256, 147456]
    assert data[40:] == bytes(8)
    req = proto.parse_fetch_req(data)
    assert req == proto.FetchReq(stream_id=2**40 + 9, flags=1, bytesperline=384, height=256,
                                 max_bytes=147456, timestamp=2**40 + 7, digest=2**64 - 2)
    assert req.discard and req.pixel_bytes == 384 * 256 * 3 // 2
    proto.validate_fetch_req(req)
    assert proto.parse_fetch_req(memoryview(b"?" + data)[1:]) == req  # unaligned


@pytest.mark.parametrize(("data", "match"), [
    (bytes(47), "FETCH payload of 47 bytes, expected 48"),
    (bytes(49), "FETCH payload of 49 bytes"),
])
def test_parse_fetch_req_wants_exactly_one_struct(data: bytes, match: str) -> None:
    with pytest.raises(proto.ProtocolError, match=match):
        proto.parse_fetch_req(data)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"reserved": [0, 1]}, "reserved"),
    ({"flags": 4}, "unknown fetch flags 0x4"),
    ({"flags": proto.FETCH_DMABUF | 8}, "unknown fetch flags 0x8"),
])
def test_validate_fetch_req_rejects(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(proto.ProtocolError, match=match):
        proto.validate_fetch_req(proto.parse_fetch_req(proto.pack_fetch_req(1, **kwargs)))


@pytest.mark.parametrize("flags", [proto.FETCH_DMABUF, proto.FETCH_DMABUF | proto.FETCH_DISCARD])
def test_fetch_dmabuf_flag(flags: int) -> None:
    req = proto.parse_fetch_req(proto.pack_fetch_req(3, flags=flags, bytesperline=384,
                                                     height=256, max_bytes=384 * 384))
    proto.validate_fetch_req(req)
    assert req.dmabuf and req.discard == bool(flags & proto.FETCH_DISCARD)
    assert _u(proto.pack_fetch_req(3, flags=flags), 24, 4) == flags


def test_pack_fetch_resp_layout_and_round_trip() -> None:
    data = proto.pack_fetch_resp(FRAME, b"pixels")
    assert len(data) == proto.FETCH_RESP_SIZE + 6 == 62
    assert data[:40] == proto.pack_frame_resp(0, 0, [FRAME])[32:72]  # the frame_info as is
    assert _u(data, 40, 4) == 6 and data[44:56] == bytes(12) and data[56:] == b"pixels"
    resp, pixels = proto.parse_fetch_resp(data)
    assert resp == proto.FetchResp(frame=FRAME, bytes=6) and bytes(pixels) == b"pixels"
    proto.validate_fetch_resp(resp)
    resp, pixels = proto.parse_fetch_resp(proto.pack_fetch_resp(FRAME))  # DISCARD's answer
    assert resp.bytes == 0 and not pixels


@pytest.mark.parametrize(("data", "match"), [
    (bytes(55), "shorter than struct daedalus_fetch_resp"),
    (proto.pack_fetch_resp(FRAME, b"abc", nr_bytes=4), "bytes = 4 makes 60"),
    (proto.pack_fetch_resp(FRAME, b"abc", nr_bytes=2), "bytes = 2 makes 58"),
])
def test_parse_fetch_resp_rejects_lengths(data: bytes, match: str) -> None:
    with pytest.raises(proto.ProtocolError, match=match):
        proto.parse_fetch_resp(data)


def test_fetch_dmabuf_answer_is_the_struct_alone() -> None:
    data = proto.pack_fetch_resp(FRAME, nr_bytes=460800)
    resp, pixels = proto.parse_fetch_resp(data, dmabuf=True)
    assert resp == proto.FetchResp(frame=FRAME, bytes=460800) and not pixels
    with pytest.raises(proto.ProtocolError, match="bytes = 460800 makes"):
        proto.parse_fetch_resp(data)  # inline: the pixels are missing
    with pytest.raises(proto.ProtocolError, match="pixels never follow it: 56 expected"):
        proto.parse_fetch_resp(proto.pack_fetch_resp(FRAME, b"abc"), dmabuf=True)


@pytest.mark.parametrize(("resp", "match"), [
    (proto.FetchResp(FRAME, 0, (0, 0, 1)), "fetch_resp reserved"),
    (proto.FetchResp(FRAME.__class__(320, 240, 9, 0, 0, 0), 0), "unknown pixfmt 9"),
    (proto.FetchResp(FRAME.__class__(320, 0, 1, 0, 0, 0), 0), "size 320x0"),
])
def test_validate_fetch_resp_rejects(resp: proto.FetchResp, match: str) -> None:
    with pytest.raises(proto.ProtocolError, match=match):
        proto.validate_fetch_resp(resp)


# --- DAEDALUS_IOC_GET_DMABUF (phase 8.6) ----------------------------------------------


def test_pack_dmabuf_req_layout_and_round_trip() -> None:
    data = proto.pack_dmabuf_req(2**64 - 3, 1)
    assert len(data) == proto.DMABUF_REQ_SIZE == 32
    assert (_u(data, 0, 8), _u(data, 8, 4)) == (2**64 - 3, 1)
    assert data[12:] == bytes(20)  # flags, fd, size, reserved: zero from the daemon
    assert proto.parse_dmabuf_req(data) == proto.DmaBufReq(cookie=2**64 - 3, index=1)
    # what the kernel leaves in it: the fd (signed) and the size
    answer = proto.pack_dmabuf_req(7, fd=11, size=460800)
    assert (_u(answer, 16, 4), _u(answer, 20, 4)) == (11, 460800)
    got = proto.parse_dmabuf_req(bytearray(answer))
    assert (got.cookie, got.index, got.flags, got.fd, got.size, got.reserved) == (
        7, 0, 0, 11, 460800, (0, 0))
    assert proto.parse_dmabuf_req(proto.pack_dmabuf_req(7, fd=-1)).fd == -1
    assert proto.parse_dmabuf_req(proto.pack_dmabuf_req(7, reserved=[0, 4])).reserved == (0, 4)
    assert proto.parse_dmabuf_req(memoryview(b"?" + data)[1:]).cookie == 2**64 - 3  # unaligned


def test_dmabuf_req_refuses_what_does_not_fit() -> None:
    for size in (0, 31, 33):
        with pytest.raises(proto.ProtocolError, match="daedalus_dmabuf_req of"):
            proto.parse_dmabuf_req(bytes(size))
    with pytest.raises(proto.ProtocolError, match="cannot pack"):
        proto.pack_dmabuf_req(2**64)
    with pytest.raises(proto.ProtocolError, match="cannot pack"):
        proto.pack_dmabuf_req(1, fd=2**31)


# --- the stream a request names (the daemon's log) ---------------------------------------


def _request(msg_type: proto.MsgType, payload: bytes) -> tuple[proto.Header, bytes]:
    data = proto.pack_message(msg_type, 7, payload)
    return proto.parse_header(data), data[proto.HDR_SIZE:]


@pytest.mark.parametrize(("msg_type", "payload"), [
    (proto.MsgType.DECODE,
     proto.pack_decode_req(proto.Codec.VP9, b"\x01\x02", stream_id=2**40 + 3)),
    (proto.MsgType.FEED, proto.pack_decode_req(proto.Codec.H264, stream_id=2**40 + 3)),
    (proto.MsgType.FETCH, proto.pack_fetch_req(2**40 + 3)),
    (proto.MsgType.CLOSE_STREAM, proto.pack_stream(2**40 + 3)),
])
def test_request_stream_reads_stream_id_at_the_golden_offset(
        msg_type: proto.MsgType, payload: bytes) -> None:
    # every one of these structs starts with __u64 stream_id (the header's layout)
    assert _u(payload, 0, 8) == 2**40 + 3
    assert proto.request_stream(*_request(msg_type, payload)) == 2**40 + 3


@pytest.mark.parametrize(("msg_type", "payload"), [
    (proto.MsgType.HELLO, proto.pack_hello()),
    (proto.MsgType.PING, b"\x05" * 16),
    (proto.MsgType.FETCH, b"\x05" * 7),     # too short for a stream_id
    (proto.MsgType.FEED, b""),
])
def test_request_stream_is_none_where_no_stream_is_named(
        msg_type: proto.MsgType, payload: bytes) -> None:
    assert proto.request_stream(*_request(msg_type, payload)) is None
