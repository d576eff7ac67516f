"""The daedalus-v4l2 wire protocol, laid out by the C compiler.

shared/proto/include/daedalus_v4l2_proto.h is the only definition of the wire
format. ``daedalus.proto._proto`` is that header compiled by cffi in API mode
(see cdef.py and _build.py); everything here packs and parses through its
``ffi``, so the sizes, offsets and constants are the compiler's, never a
second copy of the ABI in Python.

Importing this package fails (ImportError) when the extension is missing, was
compiled from a different header (or cdef.py, or C source) than the one in the
checkout, or when cdef.py disagrees with the header's layout.

Besides the wire format the extension carries one C function of its own,
the FNV-1a 64 digest of decoded frames (``fnv1a64``).
"""

from __future__ import annotations

import builtins
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from daedalus.proto import _build

try:
    from daedalus.proto._proto import ffi, lib
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        f"{_build.MODULE} is not built ({exc}); reinstall daedalus-protocol "
        f"(hatch env prune) or run: python {_build.__file__}") from exc

__all__ = [
    "COLOUR_UNSPECIFIED",
    "CTRL_FLAGS",
    "CTRL_IN_REQUEST",
    "DECODE_DMABUF",
    "DECODE_FLAGS",
    "DECODE_FLUSH",
    "DECODE_REQ_SIZE",
    "DECODE_RESET",
    "DECODE_RESYNC",
    "DMABUF_REQ_SIZE",
    "FEED_FLAGS",
    "FETCH_DISCARD",
    "FETCH_DMABUF",
    "FETCH_FLAGS",
    "FETCH_REQ_SIZE",
    "FETCH_RESP_SIZE",
    "FNV1A64_OFFSET_BASIS",
    "FNV1A64_PRIME",
    "FRAME_CORRUPT",
    "FRAME_FLAGS",
    "FRAME_INFO_SIZE",
    "FRAME_KEY",
    "FRAME_RESP_SIZE",
    "HDR_SIZE",
    "HELLO_SIZE",
    "IOC_GET_DMABUF",
    "IOC_IN_FLIGHT",
    "MAGIC",
    "MAX_FRAMES",
    "MAX_HEIGHT",
    "MAX_MSG",
    "MAX_PAYLOAD",
    "MAX_WIDTH",
    "RANGE_FULL",
    "RANGE_LIMITED",
    "RANGE_UNSPECIFIED",
    "REQUEST_CTRLS_MAX",
    "REQUEST_CTRL_SIZE",
    "REQUEST_DECODE_RESP_SIZE",
    "REQUEST_DECODE_SIZE",
    "REQUEST_FLAGS",
    "REQUEST_HOLD",
    "REQUEST_NEW_FRAME",
    "REQUEST_RESET",
    "RESERVED_WORDS",
    "RESPONSE",
    "STREAM_SIZE",
    "VERSION",
    "Codec",
    "DecodeReq",
    "DecodeStatus",
    "DmaBufReq",
    "FetchReq",
    "FetchResp",
    "FrameInfo",
    "FrameResp",
    "Header",
    "Hello",
    "MsgType",
    "PixFmt",
    "ProtocolError",
    "RequestCtrl",
    "RequestDecode",
    "RequestDecodeResp",
    "Stream",
    "VersionMismatch",
    "encode_message",
    "ffi",
    "fnv1a64",
    "lib",
    "pack_decode_req",
    "pack_dmabuf_req",
    "pack_fetch_req",
    "pack_fetch_resp",
    "pack_frame_resp",
    "pack_header",
    "pack_hello",
    "pack_message",
    "pack_request_decode",
    "pack_request_decode_resp",
    "pack_stream",
    "parse_decode_req",
    "parse_dmabuf_req",
    "parse_fetch_req",
    "parse_fetch_resp",
    "parse_frame_resp",
    "parse_header",
    "parse_hello",
    "parse_request_decode",
    "parse_request_decode_resp",
    "parse_stream",
    "request_stream",
    "validate_decode_req",
    "validate_fetch_req",
    "validate_fetch_resp",
    "validate_frame",
    "validate_frame_resp",
    "validate_hello",
    "validate_request",
    "validate_request_decode",
    "validate_request_decode_resp",
]

HDR_STRUCT: Final = "struct daedalus_msg_hdr"
HELLO_STRUCT: Final = "struct daedalus_hello"
DECODE_REQ_STRUCT: Final = "struct daedalus_decode_req"
FRAME_INFO_STRUCT: Final = "struct daedalus_frame_info"
FRAME_RESP_STRUCT: Final = "struct daedalus_frame_resp"
STREAM_STRUCT: Final = "struct daedalus_stream"
FETCH_REQ_STRUCT: Final = "struct daedalus_fetch_req"
FETCH_RESP_STRUCT: Final = "struct daedalus_fetch_resp"
DMABUF_REQ_STRUCT: Final = "struct daedalus_dmabuf_req"
REQUEST_DECODE_STRUCT: Final = "struct daedalus_request_decode"
REQUEST_CTRL_STRUCT: Final = "struct daedalus_request_ctrl"
REQUEST_DECODE_RESP_STRUCT: Final = "struct daedalus_request_decode_resp"
STRUCTS: Final = (HDR_STRUCT, HELLO_STRUCT, DECODE_REQ_STRUCT, FRAME_INFO_STRUCT,
                  FRAME_RESP_STRUCT, STREAM_STRUCT, FETCH_REQ_STRUCT, FETCH_RESP_STRUCT,
                  DMABUF_REQ_STRUCT, REQUEST_DECODE_STRUCT, REQUEST_CTRL_STRUCT,
                  REQUEST_DECODE_RESP_STRUCT)

# Any object with the buffer protocol: bytes, bytearray, memoryview, numpy arrays.
Buffer = Any


def _stamp(name: str) -> str | None:
    value = getattr(lib, name, None)  # missing in an extension built before it existed
    if value is None:
        return None
    text = ffi.string(value)
    return text.decode() if isinstance(text, bytes) else text


def _check_fresh() -> None:
    """Refuse an extension compiled from another version of the header, of
    cdef.py or of _build.py's C source."""
    include = _build.find_include_dir()
    # Without the header (an installed wheel) it is compiled in: nothing to compare.
    if include is not None and _stamp("daedalus_py_header_sha256") != _build.header_sha256(
            include):
        raise ImportError(
            f"{_build.MODULE} was compiled from another {_build.HEADER} than "
            f"{include / _build.HEADER}; rebuild it: python {_build.__file__} "
            "(or hatch env prune)")
    if _stamp("daedalus_py_source_sha256") != _build.source_sha256(_build.load_cdef()):
        raise ImportError(
            f"{_build.MODULE} was compiled from another cdef.py or C source than "
            f"{_build.HERE}; rebuild it: python {_build.__file__} (or hatch env prune)")


def _layout() -> tuple[dict[str, int], int]:
    """Load every struct: cffi compares cdef.py's fields with the compiler's here."""
    try:
        sizes = {ctype: ffi.sizeof(ctype) for ctype in STRUCTS}
        fields = dict(ffi.typeof(HDR_STRUCT).fields)
    except ffi.error as exc:
        raise ImportError(f"cdef.py disagrees with {_build.HEADER}: {exc}") from exc
    return sizes, int(fields["reserved"].type.length)


_check_fresh()
_SIZES, RESERVED_WORDS = _layout()
HDR_SIZE: Final = _SIZES[HDR_STRUCT]
HELLO_SIZE: Final = _SIZES[HELLO_STRUCT]
DECODE_REQ_SIZE: Final = _SIZES[DECODE_REQ_STRUCT]
FRAME_INFO_SIZE: Final = _SIZES[FRAME_INFO_STRUCT]
FRAME_RESP_SIZE: Final = _SIZES[FRAME_RESP_STRUCT]
STREAM_SIZE: Final = _SIZES[STREAM_STRUCT]
FETCH_REQ_SIZE: Final = _SIZES[FETCH_REQ_STRUCT]
FETCH_RESP_SIZE: Final = _SIZES[FETCH_RESP_STRUCT]
DMABUF_REQ_SIZE: Final = _SIZES[DMABUF_REQ_STRUCT]
REQUEST_DECODE_SIZE: Final = _SIZES[REQUEST_DECODE_STRUCT]
REQUEST_CTRL_SIZE: Final = _SIZES[REQUEST_CTRL_STRUCT]
REQUEST_DECODE_RESP_SIZE: Final = _SIZES[REQUEST_DECODE_RESP_STRUCT]
MAGIC: Final = lib.DAEDALUS_PROTO_MAGIC
VERSION: Final = lib.DAEDALUS_PROTO_VERSION
MAX_PAYLOAD: Final = lib.DAEDALUS_MAX_PAYLOAD
# Largest picture the kernel takes; the daemon refuses larger frames itself.
MAX_WIDTH: Final = lib.DAEDALUS_MAX_WIDTH
MAX_HEIGHT: Final = lib.DAEDALUS_MAX_HEIGHT
RESPONSE: Final = lib.DAEDALUS_MSG_RESPONSE
DECODE_FLUSH: Final = lib.DAEDALUS_DECODE_FLUSH
DECODE_RESET: Final = lib.DAEDALUS_DECODE_RESET
DECODE_RESYNC: Final = lib.DAEDALUS_DECODE_RESYNC
DECODE_DMABUF: Final = lib.DAEDALUS_DECODE_DMABUF
DECODE_FLAGS: Final = DECODE_FLUSH  # what REQ_DECODE allows
# what FEED allows
FEED_FLAGS: Final = DECODE_FLUSH | DECODE_RESET | DECODE_RESYNC | DECODE_DMABUF
FETCH_DISCARD: Final = lib.DAEDALUS_FETCH_DISCARD
FETCH_DMABUF: Final = lib.DAEDALUS_FETCH_DMABUF
FETCH_FLAGS: Final = FETCH_DISCARD | FETCH_DMABUF  # what FETCH allows
# The ioctl number as the compiler computes _IOWR(0xDA, 1, struct daedalus_dmabuf_req).
IOC_GET_DMABUF: Final = lib.DAEDALUS_IOC_GET_DMABUF
IOC_IN_FLIGHT: Final = lib.DAEDALUS_IOC_IN_FLIGHT
MAX_FRAMES: Final = lib.DAEDALUS_MAX_FRAMES
MAX_MSG: Final = lib.DAEDALUS_MAX_MSG
FRAME_KEY: Final = lib.DAEDALUS_FRAME_KEY
FRAME_CORRUPT: Final = lib.DAEDALUS_FRAME_CORRUPT
FRAME_FLAGS: Final = FRAME_KEY | FRAME_CORRUPT  # what a frame entry may carry
# A frame's colour description (struct daedalus_frame_info): ITU-T H.273 code
# points for primaries, transfer and matrix, FFmpeg's AVColorRange for range.
COLOUR_UNSPECIFIED: Final = lib.DAEDALUS_COLOUR_UNSPECIFIED
RANGE_UNSPECIFIED: Final = lib.DAEDALUS_RANGE_UNSPECIFIED
RANGE_LIMITED: Final = lib.DAEDALUS_RANGE_LIMITED
RANGE_FULL: Final = lib.DAEDALUS_RANGE_FULL
# DECODE_REQUEST (phase 8.9, protocol v12)
REQUEST_NEW_FRAME: Final = lib.DAEDALUS_REQUEST_NEW_FRAME
REQUEST_HOLD: Final = lib.DAEDALUS_REQUEST_HOLD
REQUEST_RESET: Final = lib.DAEDALUS_REQUEST_RESET
REQUEST_FLAGS: Final = REQUEST_NEW_FRAME | REQUEST_HOLD | REQUEST_RESET
REQUEST_CTRLS_MAX: Final = lib.DAEDALUS_REQUEST_CTRLS_MAX
CTRL_IN_REQUEST: Final = lib.DAEDALUS_CTRL_IN_REQUEST
CTRL_FLAGS: Final = CTRL_IN_REQUEST  # what a control entry may carry
FNV1A64_OFFSET_BASIS: Final = lib.DAEDALUS_FNV1A64_OFFSET_BASIS
FNV1A64_PRIME: Final = lib.DAEDALUS_FNV1A64_PRIME


class MsgType(enum.IntEnum):
    """enum daedalus_msg_type (answers add RESPONSE to the type)."""

    HELLO = lib.DAEDALUS_MSG_HELLO
    PING = lib.DAEDALUS_MSG_PING
    DECODE = lib.DAEDALUS_MSG_DECODE
    CLOSE_STREAM = lib.DAEDALUS_MSG_CLOSE_STREAM
    FEED = lib.DAEDALUS_MSG_FEED
    FETCH = lib.DAEDALUS_MSG_FETCH
    DECODE_REQUEST = lib.DAEDALUS_MSG_DECODE_REQUEST  # phase 8.9


class Codec(enum.IntEnum):
    """enum daedalus_codec."""

    VP9 = lib.DAEDALUS_CODEC_VP9
    H264 = lib.DAEDALUS_CODEC_H264
    AV1 = lib.DAEDALUS_CODEC_AV1


class PixFmt(enum.IntEnum):
    """enum daedalus_pixfmt."""

    NV12 = lib.DAEDALUS_PIXFMT_NV12
    P010 = lib.DAEDALUS_PIXFMT_P010
    NV16 = lib.DAEDALUS_PIXFMT_NV16  # 8-bit 4:2:2 (phase 8.8)
    NV24 = lib.DAEDALUS_PIXFMT_NV24  # 8-bit 4:4:4 (phase 8.8)


class DecodeStatus(enum.IntEnum):
    """daedalus_frame_resp.status."""

    OK = lib.DAEDALUS_DECODE_OK
    ERROR = lib.DAEDALUS_DECODE_ERROR


def describe_type(msg_type: int) -> str:
    """``PING``, ``PING|RESPONSE`` or the number for a type without a name."""
    base = msg_type & ~RESPONSE
    try:
        name = MsgType(base).name
    except ValueError:
        name = str(base)
    return f"{name}|RESPONSE" if msg_type & RESPONSE else name


class ProtocolError(ValueError):
    """A message that does not follow daedalus_v4l2_proto.h."""


class VersionMismatch(ProtocolError):
    """The peer speaks another protocol version."""

    def __init__(self, version: int) -> None:
        super().__init__(f"kernel speaks protocol v{version}, daemon v{VERSION}")
        self.version = version


def _zeros() -> tuple[int, ...]:
    return (0,) * RESERVED_WORDS


def _reserved_words(ctype: str) -> int:
    return int(dict(ffi.typeof(ctype).fields)["reserved"].type.length)


def _reserved(ctype: str, reserved: Sequence[int] | None) -> list[int]:
    return [0] * _reserved_words(ctype) if reserved is None else list(reserved)


def _pack(ctype: str, fields: dict[str, Any]) -> bytes:
    try:
        cdata = ffi.new(f"{ctype} *", fields)
    except (OverflowError, TypeError, IndexError) as exc:
        raise ProtocolError(f"cannot pack {ctype}: {exc}") from exc
    return bytes(ffi.buffer(cdata))


def _unpack(ctype: str, size: int, data: bytes | bytearray | memoryview) -> Any:
    """The struct at the start of *data*, copied (so *data* may be unaligned)."""
    cdata = ffi.new(f"{ctype} *")
    ffi.memmove(cdata, data, size)
    return cdata[0]


@dataclass(frozen=True)
class Header:
    """struct daedalus_msg_hdr."""

    magic: int
    version: int
    type: int
    cookie: int
    payload_len: int
    flags: int
    status: int
    reserved: tuple[int, ...] = field(default_factory=_zeros)

    @property
    def is_response(self) -> bool:
        return bool(self.type & RESPONSE)

    @property
    def opcode(self) -> int:
        """The type without the RESPONSE bit."""
        return self.type & ~RESPONSE

    def pack(self) -> bytes:
        return pack_header(self.type, self.cookie, self.payload_len, status=self.status,
                           flags=self.flags, magic=self.magic, version=self.version,
                           reserved=self.reserved)


@dataclass(frozen=True)
class Hello:
    """struct daedalus_hello."""

    proto_version: int
    max_payload: int
    phase: int
    reserved: tuple[int, ...] = field(default_factory=_zeros)


def pack_header(type: int, cookie: int, payload_len: int, *, status: int = 0, flags: int = 0,
                magic: int = MAGIC, version: int = VERSION,
                reserved: Sequence[int] | None = None) -> bytes:
    """The HDR_SIZE bytes of a struct daedalus_msg_hdr (any field may be set, for tests)."""
    return _pack(HDR_STRUCT, {
        "magic": magic, "version": version, "type": type, "cookie": cookie,
        "payload_len": payload_len, "flags": flags, "status": status,
        "reserved": list(_zeros() if reserved is None else reserved),
    })


def pack_message(type: int, cookie: int, payload: bytes = b"", *, status: int = 0) -> bytes:
    """One whole message (header and payload) as read(2)/write(2) carry it."""
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {len(payload)} bytes exceeds "
                            f"DAEDALUS_MAX_PAYLOAD ({MAX_PAYLOAD})")
    return pack_header(type, cookie, len(payload), status=status) + payload


def parse_header(data: bytes | bytearray | memoryview) -> Header:
    """The header at the start of *data* (a whole message may follow it)."""
    if len(data) < HDR_SIZE:
        raise ProtocolError(f"short message: {len(data)} bytes, a header takes {HDR_SIZE}")
    hdr = _unpack(HDR_STRUCT, HDR_SIZE, data)
    return Header(magic=int(hdr.magic), version=int(hdr.version), type=int(hdr.type),
                  cookie=int(hdr.cookie), payload_len=int(hdr.payload_len),
                  flags=int(hdr.flags), status=int(hdr.status),
                  reserved=tuple(int(w) for w in hdr.reserved))


def pack_hello(proto_version: int = VERSION, max_payload: int = MAX_PAYLOAD, phase: int = 0,
               *, reserved: Sequence[int] | None = None) -> bytes:
    """The HELLO_SIZE bytes of a struct daedalus_hello."""
    return _pack(HELLO_STRUCT, {
        "proto_version": proto_version, "max_payload": max_payload, "phase": phase,
        "reserved": list(_zeros() if reserved is None else reserved),
    })


def parse_hello(data: bytes | bytearray | memoryview) -> Hello:
    """A HELLO payload: exactly one struct daedalus_hello."""
    if len(data) != HELLO_SIZE:
        raise ProtocolError(f"HELLO payload of {len(data)} bytes, expected {HELLO_SIZE}")
    hello = _unpack(HELLO_STRUCT, HELLO_SIZE, data)
    return Hello(proto_version=int(hello.proto_version), max_payload=int(hello.max_payload),
                 phase=int(hello.phase), reserved=tuple(int(w) for w in hello.reserved))


def validate_hello(hello: Hello) -> None:
    """The kernel's HELLO: same protocol version, reserved zero, a usable max_payload."""
    if hello.proto_version != VERSION:
        raise VersionMismatch(hello.proto_version)
    if any(hello.reserved):
        raise ProtocolError(f"HELLO reserved words not zero: {list(hello.reserved)}")
    if hello.max_payload == 0:
        raise ProtocolError("HELLO max_payload is 0")


def validate_request(header: Header, payload: bytes | bytearray | memoryview) -> None:
    """Check a request read from the kernel; the daemon trusts the kernel no more
    than the kernel trusts the daemon. Raises VersionMismatch for another
    protocol version and ProtocolError for anything else out of order."""
    if header.magic != MAGIC:
        raise ProtocolError(f"bad magic {header.magic:#010x}, expected {MAGIC:#010x}")
    if header.version != VERSION:
        raise VersionMismatch(header.version)
    if header.is_response:
        raise ProtocolError(f"the kernel sent a response ({describe_type(header.type)})")
    if header.flags:
        raise ProtocolError(f"flags {header.flags:#x} set, none are defined")
    if header.status:
        raise ProtocolError(f"request with status {header.status}, must be 0")
    if any(header.reserved):
        raise ProtocolError(f"reserved words not zero: {list(header.reserved)}")
    if header.payload_len > MAX_PAYLOAD:
        raise ProtocolError(f"payload_len {header.payload_len} exceeds "
                            f"DAEDALUS_MAX_PAYLOAD ({MAX_PAYLOAD})")
    if header.payload_len != len(payload):
        raise ProtocolError(f"payload_len {header.payload_len} but {len(payload)} payload "
                            "bytes follow the header")


# --- phase 8.4: REQ_DECODE, RESP_FRAME, CLOSE_STREAM --------------------------


def _decode_req_zeros() -> tuple[int, ...]:
    return (0,) * _reserved_words(DECODE_REQ_STRUCT)


@dataclass(frozen=True)
class DecodeReq:
    """struct daedalus_decode_req (the bitstream follows it in the payload, or
    with DECODE_DMABUF lies at bitstream_offset of the OUTPUT buffer)."""

    stream_id: int
    codec: int
    flags: int
    bitstream_len: int
    timestamp: int
    bitstream_offset: int = 0
    reserved: tuple[int, ...] = field(default_factory=_decode_req_zeros)

    @property
    def flush(self) -> bool:
        return bool(self.flags & DECODE_FLUSH)

    @property
    def reset(self) -> bool:
        """FEED only: drop the stream's decoder and kept frames first."""
        return bool(self.flags & DECODE_RESET)

    @property
    def resync(self) -> bool:
        """FEED only: the kernel lost an earlier answer; list every kept frame first."""
        return bool(self.flags & DECODE_RESYNC)

    @property
    def dmabuf(self) -> bool:
        """FEED only: the bitstream is in the OUTPUT buffer (DAEDALUS_IOC_GET_DMABUF),
        bitstream_len bytes at bitstream_offset; none follow the struct."""
        return bool(self.flags & DECODE_DMABUF)


@dataclass(frozen=True)
class FrameInfo:
    """struct daedalus_frame_info: one decoded frame of a RESP_FRAME.

    The colour description (protocol v9) is what the bitstream signals, as
    code points: *primaries*, *transfer*, *matrix* from ITU-T H.273 (FFmpeg's
    AVCOL_PRI / AVCOL_TRC / AVCOL_SPC values, COLOUR_UNSPECIFIED when not
    signalled) and *range* (FFmpeg's AVColorRange: RANGE_UNSPECIFIED,
    RANGE_LIMITED, RANGE_FULL). The kernel maps them to V4L2 colorimetry and
    treats any value it does not know as not signalled."""

    width: int
    height: int
    pixfmt: int
    flags: int
    digest: int
    timestamp: int
    primaries: int = COLOUR_UNSPECIFIED
    transfer: int = COLOUR_UNSPECIFIED
    matrix: int = COLOUR_UNSPECIFIED
    range: int = RANGE_UNSPECIFIED
    reserved: int = 0

    @property
    def key(self) -> bool:
        return bool(self.flags & FRAME_KEY)

    @property
    def corrupt(self) -> bool:
        """Decoded with errors: the kernel errors its buffer instead of fetching pixels."""
        return bool(self.flags & FRAME_CORRUPT)

    @property
    def pixfmt_name(self) -> str:
        """``nv12``, ``p010``, ``nv16``, ``nv24`` or the number for an unknown layout."""
        try:
            return PixFmt(self.pixfmt).name.lower()
        except ValueError:
            return str(self.pixfmt)


@dataclass(frozen=True)
class FrameResp:
    """A RESP_FRAME payload: struct daedalus_frame_resp, its frames and its message."""

    status: int
    error: int
    frames: tuple[FrameInfo, ...] = ()
    message: bytes = b""
    reserved: tuple[int, ...] = (0, 0, 0, 0)

    @property
    def ok(self) -> bool:
        return self.status == DecodeStatus.OK

    @property
    def text(self) -> str:
        """The message as text (invalid UTF-8 replaced, never raised)."""
        return self.message.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Stream:
    """struct daedalus_stream: the payload of CLOSE_STREAM."""

    stream_id: int
    reserved: tuple[int, ...] = (0, 0)


def encode_message(text: str, limit: int = MAX_MSG) -> bytes:
    """*text* as UTF-8, cut to at most *limit* bytes on a character boundary."""
    data = text.encode("utf-8", errors="replace")
    if len(data) <= limit:
        return data
    cut = limit
    while cut > 0 and (data[cut] & 0xC0) == 0x80:  # data[cut] continues a character
        cut -= 1
    return data[:cut]


def pack_decode_req(codec: int, bitstream: Buffer = b"", *, stream_id: int = 0, flags: int = 0,
                    timestamp: int = 0, bitstream_len: int | None = None,
                    bitstream_offset: int = 0,
                    reserved: Sequence[int] | None = None) -> bytes:
    """A REQ_DECODE payload: the struct, then *bitstream*. Every field may be
    set, bitstream_len to a wrong value too (for tests of the checks). A FEED
    with DECODE_DMABUF has no *bitstream*: pass its *bitstream_len* and
    *bitstream_offset* in the OUTPUT buffer instead."""
    data = bytes(bitstream)
    return _pack(DECODE_REQ_STRUCT, {
        "stream_id": stream_id, "codec": codec, "flags": flags,
        "bitstream_len": len(data) if bitstream_len is None else bitstream_len,
        "bitstream_offset": bitstream_offset,
        "timestamp": timestamp, "reserved": _reserved(DECODE_REQ_STRUCT, reserved),
    }) + data


def parse_decode_req(payload: bytes | bytearray | memoryview) -> tuple[DecodeReq, memoryview]:
    """The struct at the start of a REQ_DECODE payload and a view of the bytes
    after it (not checked against bitstream_len: see validate_decode_req)."""
    if len(payload) < DECODE_REQ_SIZE:
        raise ProtocolError(f"REQ_DECODE payload of {len(payload)} bytes is shorter than "
                            f"struct daedalus_decode_req ({DECODE_REQ_SIZE})")
    req = _unpack(DECODE_REQ_STRUCT, DECODE_REQ_SIZE, payload)
    return (DecodeReq(stream_id=int(req.stream_id), codec=int(req.codec),
                      flags=int(req.flags), bitstream_len=int(req.bitstream_len),
                      timestamp=int(req.timestamp),
                      bitstream_offset=int(req.bitstream_offset),
                      reserved=tuple(int(w) for w in req.reserved)),
            memoryview(payload)[DECODE_REQ_SIZE:])


def validate_decode_req(req: DecodeReq, bitstream_bytes: int, *,
                        allowed_flags: int = DECODE_FLAGS) -> None:
    """The checks a daemon makes on a REQ_DECODE (*bitstream_bytes* follow the
    struct): ProtocolError says what is wrong. Whether the codec may change is
    the stream's business, not the request's. A FEED carries the same struct
    and may also set DECODE_RESET, DECODE_RESYNC and DECODE_DMABUF: pass
    ``allowed_flags=FEED_FLAGS``. With DECODE_DMABUF no bitstream byte follows
    the struct and bitstream_len, bitstream_offset describe the OUTPUT buffer
    (whether they fit it is the handler's check, once it has the buffer);
    without it bitstream_offset is zero."""
    if any(req.reserved):
        raise ProtocolError(f"decode_req reserved words not zero: {list(req.reserved)}")
    if req.codec not in set(Codec):
        raise ProtocolError(f"unknown codec {req.codec}")
    if req.flags & ~allowed_flags:
        raise ProtocolError(f"unknown decode flags {req.flags & ~allowed_flags:#x}")
    if req.dmabuf:
        if bitstream_bytes:
            raise ProtocolError(f"DECODE_DMABUF but {bitstream_bytes} bitstream bytes follow "
                                "the request (the bitstream is in the OUTPUT buffer)")
        return
    if req.bitstream_offset:
        raise ProtocolError(f"bitstream_offset {req.bitstream_offset} without DECODE_DMABUF")
    if req.bitstream_len != bitstream_bytes:
        raise ProtocolError(f"bitstream_len {req.bitstream_len} but {bitstream_bytes} "
                            "bitstream bytes follow the request")


def pack_frame_resp(status: int, error: int = 0, frames: Sequence[FrameInfo] = (),
                    message: bytes = b"", *, nr_frames: int | None = None,
                    msg_len: int | None = None,
                    reserved: Sequence[int] | None = None) -> bytes:
    """A RESP_FRAME payload: struct daedalus_frame_resp, one struct
    daedalus_frame_info per frame, then *message* (UTF-8, see encode_message).
    nr_frames and msg_len may be forced to wrong values (for tests)."""
    if len(frames) > MAX_FRAMES:
        raise ProtocolError(f"{len(frames)} frames, a RESP_FRAME holds at most {MAX_FRAMES}")
    if len(message) > MAX_MSG:
        raise ProtocolError(f"message of {len(message)} bytes, at most {MAX_MSG} fit")
    head = _pack(FRAME_RESP_STRUCT, {
        "status": status, "error": error,
        "nr_frames": len(frames) if nr_frames is None else nr_frames,
        "msg_len": len(message) if msg_len is None else msg_len,
        "reserved": _reserved(FRAME_RESP_STRUCT, reserved),
    })
    if not frames:
        return head + bytes(message)
    try:
        infos = ffi.new(f"{FRAME_INFO_STRUCT}[]", [_frame_fields(f) for f in frames])
    except (OverflowError, TypeError, IndexError) as exc:
        raise ProtocolError(f"cannot pack {FRAME_INFO_STRUCT}: {exc}") from exc
    return head + bytes(ffi.buffer(infos)) + bytes(message)


def _frame_fields(f: FrameInfo) -> dict[str, Any]:
    return {"width": f.width, "height": f.height, "pixfmt": f.pixfmt, "flags": f.flags,
            "digest": f.digest, "timestamp": f.timestamp, "primaries": f.primaries,
            "transfer": f.transfer, "matrix": f.matrix, "range": f.range,
            "reserved": f.reserved}


def _frame_info(f: Any) -> FrameInfo:
    """A FrameInfo from a struct daedalus_frame_info cdata."""
    return FrameInfo(width=int(f.width), height=int(f.height), pixfmt=int(f.pixfmt),
                     flags=int(f.flags), digest=int(f.digest), timestamp=int(f.timestamp),
                     primaries=int(f.primaries), transfer=int(f.transfer),
                     matrix=int(f.matrix), range=int(f.range), reserved=int(f.reserved))


def parse_frame_resp(data: bytes | bytearray | memoryview) -> FrameResp:
    """A whole RESP_FRAME payload; ProtocolError unless its lengths add up
    exactly (nr_frames <= MAX_FRAMES, msg_len <= MAX_MSG)."""
    if len(data) < FRAME_RESP_SIZE:
        raise ProtocolError(f"RESP_FRAME payload of {len(data)} bytes is shorter than "
                            f"struct daedalus_frame_resp ({FRAME_RESP_SIZE})")
    resp = _unpack(FRAME_RESP_STRUCT, FRAME_RESP_SIZE, data)
    nr_frames, msg_len = int(resp.nr_frames), int(resp.msg_len)
    if nr_frames > MAX_FRAMES:
        raise ProtocolError(f"nr_frames {nr_frames} exceeds DAEDALUS_MAX_FRAMES ({MAX_FRAMES})")
    if msg_len > MAX_MSG:
        raise ProtocolError(f"msg_len {msg_len} exceeds DAEDALUS_MAX_MSG ({MAX_MSG})")
    expected = FRAME_RESP_SIZE + nr_frames * FRAME_INFO_SIZE + msg_len
    if len(data) != expected:
        raise ProtocolError(f"RESP_FRAME of {len(data)} bytes, but {nr_frames} frames and a "
                            f"{msg_len}-byte message make {expected}")
    frames = []
    if nr_frames:
        infos = ffi.new(f"{FRAME_INFO_STRUCT}[]", nr_frames)
        ffi.memmove(infos, memoryview(data)[FRAME_RESP_SIZE:], nr_frames * FRAME_INFO_SIZE)
        frames = [_frame_info(f) for f in infos]
    return FrameResp(status=int(resp.status), error=int(resp.error), frames=tuple(frames),
                     message=bytes(data[expected - msg_len:expected]),
                     reserved=tuple(int(w) for w in resp.reserved))


def validate_frame_resp(resp: FrameResp) -> None:
    """The kernel's checks on a RESP_FRAME beyond its lengths: reserved zero,
    a known status; OK without an errno, DECODE_ERROR with one and without
    frames; every frame with a known layout and flags, a size, reserved zero.
    (The kernel also caps width and height: see phase 8.1's daedalus.h.)"""
    if any(resp.reserved):
        raise ProtocolError(f"frame_resp reserved words not zero: {list(resp.reserved)}")
    if resp.status == DecodeStatus.OK:
        if resp.error:
            raise ProtocolError(f"DECODE_OK with error {resp.error}")
    elif resp.status == DecodeStatus.ERROR:
        if not resp.error:
            raise ProtocolError("DECODE_ERROR without an errno")
        if resp.frames:
            raise ProtocolError(f"DECODE_ERROR with {len(resp.frames)} frames")
    else:
        raise ProtocolError(f"unknown frame_resp status {resp.status}")
    for n, frame in enumerate(resp.frames):
        validate_frame(frame, f"frame {n}")


def validate_frame(frame: FrameInfo, what: str = "frame") -> None:
    """One struct daedalus_frame_info as the kernel accepts it: a known layout
    and flags, a size, reserved zero (*what* starts the error message). The
    colour description is not checked: any code point is accepted, and one
    the kernel does not know counts as not signalled."""
    if frame.pixfmt not in set(PixFmt):
        raise ProtocolError(f"{what}: unknown pixfmt {frame.pixfmt}")
    if not frame.width or not frame.height:
        raise ProtocolError(f"{what}: size {frame.width}x{frame.height}")
    if frame.flags & ~FRAME_FLAGS:
        raise ProtocolError(f"{what}: unknown flags {frame.flags & ~FRAME_FLAGS:#x}")
    if frame.reserved:
        raise ProtocolError(f"{what}: reserved word not zero: {frame.reserved:#x}")


def pack_stream(stream_id: int, *, reserved: Sequence[int] | None = None) -> bytes:
    """A CLOSE_STREAM payload."""
    return _pack(STREAM_STRUCT, {"stream_id": stream_id,
                                 "reserved": _reserved(STREAM_STRUCT, reserved)})


def parse_stream(data: bytes | bytearray | memoryview) -> Stream:
    """A CLOSE_STREAM payload: exactly one struct daedalus_stream."""
    if len(data) != STREAM_SIZE:
        raise ProtocolError(f"CLOSE_STREAM payload of {len(data)} bytes, expected {STREAM_SIZE}")
    stream = _unpack(STREAM_STRUCT, STREAM_SIZE, data)
    return Stream(stream_id=int(stream.stream_id),
                  reserved=tuple(int(w) for w in stream.reserved))


# --- phase 8.5: FEED (a REQ_DECODE payload, see above), FETCH ------------------


@dataclass(frozen=True)
class FetchReq:
    """struct daedalus_fetch_req: the payload of FETCH."""

    stream_id: int
    flags: int
    bytesperline: int
    height: int
    max_bytes: int
    timestamp: int = 0
    digest: int = 0
    reserved: tuple[int, ...] = (0, 0)

    @property
    def discard(self) -> bool:
        return bool(self.flags & FETCH_DISCARD)

    @property
    def dmabuf(self) -> bool:
        """The pixels go into the CAPTURE buffer (DAEDALUS_IOC_GET_DMABUF), not the
        answer (DISCARD, if also set, wins: nothing is written)."""
        return bool(self.flags & FETCH_DMABUF)

    @property
    def pixel_bytes(self) -> int:
        """Pixel bytes the answer carries without DISCARD: bytesperline * height
        luma rows, then height / 2 chroma rows (bytesperline * height * 3 / 2
        for an even height)."""
        return self.bytesperline * (self.height + self.height // 2)


@dataclass(frozen=True)
class FetchResp:
    """struct daedalus_fetch_resp: the frame and how many pixel bytes follow."""

    frame: FrameInfo
    bytes: int
    reserved: tuple[int, ...] = (0, 0, 0)


def pack_fetch_req(stream_id: int = 0, *, flags: int = 0, bytesperline: int = 0,
                   height: int = 0, max_bytes: int = 0, timestamp: int = 0, digest: int = 0,
                   reserved: Sequence[int] | None = None) -> bytes:
    """A FETCH payload (every field may be set, for tests)."""
    return _pack(FETCH_REQ_STRUCT, {
        "stream_id": stream_id, "flags": flags, "bytesperline": bytesperline,
        "height": height, "max_bytes": max_bytes, "timestamp": timestamp, "digest": digest,
        "reserved": _reserved(FETCH_REQ_STRUCT, reserved),
    })


def parse_fetch_req(data: bytes | bytearray | memoryview) -> FetchReq:
    """A FETCH payload: exactly one struct daedalus_fetch_req."""
    if len(data) != FETCH_REQ_SIZE:
        raise ProtocolError(f"FETCH payload of {len(data)} bytes, expected {FETCH_REQ_SIZE}")
    req = _unpack(FETCH_REQ_STRUCT, FETCH_REQ_SIZE, data)
    return FetchReq(stream_id=int(req.stream_id), flags=int(req.flags),
                    bytesperline=int(req.bytesperline), height=int(req.height),
                    max_bytes=int(req.max_bytes), timestamp=int(req.timestamp),
                    digest=int(req.digest), reserved=tuple(int(w) for w in req.reserved))


def validate_fetch_req(req: FetchReq) -> None:
    """The checks on a FETCH by itself: reserved zero, known flags. Whether its
    geometry holds the frame is the stream's business (it knows the frame)."""
    if any(req.reserved):
        raise ProtocolError(f"fetch_req reserved words not zero: {list(req.reserved)}")
    if req.flags & ~FETCH_FLAGS:
        raise ProtocolError(f"unknown fetch flags {req.flags & ~FETCH_FLAGS:#x}")


def pack_fetch_resp(frame: FrameInfo, pixels: Buffer = b"", *, nr_bytes: int | None = None,
                    reserved: Sequence[int] | None = None) -> bytes:
    """A FETCH answer's payload: struct daedalus_fetch_resp, then *pixels*.
    nr_bytes (the struct's ``bytes``) may be forced to a wrong value (for tests)."""
    data = bytes(pixels)
    return _pack(FETCH_RESP_STRUCT, {
        "frame": _frame_fields(frame),
        "bytes": len(data) if nr_bytes is None else nr_bytes,
        "reserved": _reserved(FETCH_RESP_STRUCT, reserved),
    }) + data


def parse_fetch_resp(data: bytes | bytearray | memoryview, *,
                     dmabuf: bool = False) -> tuple[FetchResp, memoryview]:
    """A whole FETCH answer payload and a view of its pixels; ProtocolError
    unless exactly ``bytes`` pixel bytes follow the struct. The answer to a
    FETCH with FETCH_DMABUF (*dmabuf*) is the struct alone: ``bytes`` is what
    was written into the CAPTURE buffer."""
    if len(data) < FETCH_RESP_SIZE:
        raise ProtocolError(f"FETCH answer of {len(data)} bytes is shorter than "
                            f"struct daedalus_fetch_resp ({FETCH_RESP_SIZE})")
    resp = _unpack(FETCH_RESP_STRUCT, FETCH_RESP_SIZE, data)
    nr_bytes = int(resp.bytes)
    if dmabuf and len(data) != FETCH_RESP_SIZE:
        raise ProtocolError(f"FETCH_DMABUF answer of {len(data)} bytes, but pixels never "
                            f"follow it: {FETCH_RESP_SIZE} expected")
    if not dmabuf and len(data) != FETCH_RESP_SIZE + nr_bytes:
        raise ProtocolError(f"FETCH answer of {len(data)} bytes, but bytes = {nr_bytes} "
                            f"makes {FETCH_RESP_SIZE + nr_bytes}")
    return (FetchResp(frame=_frame_info(resp.frame), bytes=nr_bytes,
                      reserved=tuple(int(w) for w in resp.reserved)),
            memoryview(data)[FETCH_RESP_SIZE:])


def validate_fetch_resp(resp: FetchResp) -> None:
    """The kernel's checks on a FETCH answer besides comparing the frame with
    the one it expects: reserved words zero, the frame well-formed."""
    if any(resp.reserved):
        raise ProtocolError(f"fetch_resp reserved words not zero: {list(resp.reserved)}")
    validate_frame(resp.frame)


# --- phase 8.6: DAEDALUS_IOC_GET_DMABUF ------------------------------------------


@dataclass(frozen=True)
class DmaBufReq:
    """struct daedalus_dmabuf_req: the argument of DAEDALUS_IOC_GET_DMABUF. The
    daemon fills cookie and index; the kernel sets fd and size."""

    cookie: int
    index: int = 0
    flags: int = 0
    fd: int = 0
    size: int = 0
    reserved: tuple[int, ...] = (0, 0)


def pack_dmabuf_req(cookie: int, index: int = 0, *, flags: int = 0, fd: int = 0, size: int = 0,
                    reserved: Sequence[int] | None = None) -> bytes:
    """The DMABUF_REQ_SIZE bytes of a struct daedalus_dmabuf_req: what the daemon
    passes to DAEDALUS_IOC_GET_DMABUF (fd and size zero; every field may be set,
    for tests and for a stand-in kernel's answer)."""
    return _pack(DMABUF_REQ_STRUCT, {
        "cookie": cookie, "index": index, "flags": flags, "fd": fd, "size": size,
        "reserved": _reserved(DMABUF_REQ_STRUCT, reserved),
    })


def parse_dmabuf_req(data: bytes | bytearray | memoryview) -> DmaBufReq:
    """A struct daedalus_dmabuf_req, exactly (as DAEDALUS_IOC_GET_DMABUF left it)."""
    if len(data) != DMABUF_REQ_SIZE:
        raise ProtocolError(f"daedalus_dmabuf_req of {len(data)} bytes, expected "
                            f"{DMABUF_REQ_SIZE}")
    req = _unpack(DMABUF_REQ_STRUCT, DMABUF_REQ_SIZE, data)
    return DmaBufReq(cookie=int(req.cookie), index=int(req.index), flags=int(req.flags),
                     fd=int(req.fd), size=int(req.size),
                     reserved=tuple(int(w) for w in req.reserved))


# --- which stream a request is for ----------------------------------------------


# the requests whose payload names a stream: its struct, which holds stream_id
_STREAM_REQUESTS: Final[dict[int, str]] = {
    MsgType.DECODE: DECODE_REQ_STRUCT,
    MsgType.FEED: DECODE_REQ_STRUCT,
    MsgType.FETCH: FETCH_REQ_STRUCT,
    MsgType.CLOSE_STREAM: STREAM_STRUCT,
    MsgType.DECODE_REQUEST: REQUEST_DECODE_STRUCT,
}


def request_stream(header: Header, payload: bytes | bytearray | memoryview) -> int | None:
    """The stream a request of *header*'s type is for, read from its payload
    where the header's struct puts stream_id; None for a request that names
    no stream (HELLO, PING) or whose payload is too short to hold one."""
    ctype = _STREAM_REQUESTS.get(header.type)
    if ctype is None:
        return None
    field = dict(ffi.typeof(ctype).fields)["stream_id"]
    size = ffi.sizeof(field.type)
    if len(payload) < field.offset + size:
        return None
    value = ffi.new("uint64_t *")
    ffi.memmove(value, memoryview(payload)[field.offset:field.offset + size], size)
    return int(value[0])
# --- phase 8.9: DECODE_REQUEST ------------------------------------------------------


@dataclass(frozen=True)
class RequestCtrl:
    """One struct daedalus_request_ctrl of a DECODE_REQUEST and its value
    (*size* bytes, without the padding)."""

    id: int
    flags: int
    elems: int
    value: bytes

    @property
    def size(self) -> int:
        return len(self.value)

    @property
    def in_request(self) -> bool:
        """The job's request set this control (else it kept an earlier value)."""
        return bool(self.flags & CTRL_IN_REQUEST)


def _request_decode_zeros() -> tuple[int, ...]:
    return (0,) * _reserved_words(REQUEST_DECODE_STRUCT)


@dataclass(frozen=True)
class RequestDecode:
    """struct daedalus_request_decode and the controls that follow it."""

    stream_id: int
    timestamp: int
    codec: int
    flags: int
    bitstream_offset: int
    bitstream_len: int
    pixfmt: int
    width: int
    height: int
    bytesperline: int
    sizeimage: int
    out_index: int = 0
    cap_index: int = 0
    ctrls: tuple[RequestCtrl, ...] = ()
    nr_ctrls: int = 0          # as the struct says (parse checks it against ctrls)
    ctrls_len: int = 0         # likewise
    reserved: tuple[int, ...] = field(default_factory=_request_decode_zeros)

    @property
    def new_frame(self) -> bool:
        return bool(self.flags & REQUEST_NEW_FRAME)

    @property
    def hold(self) -> bool:
        """The application holds the CAPTURE buffer for more OUTPUT buffers."""
        return bool(self.flags & REQUEST_HOLD)

    @property
    def reset(self) -> bool:
        """The first job since OUTPUT started streaming: drop the stream's state."""
        return bool(self.flags & REQUEST_RESET)

    def ctrl(self, ctrl_id: int) -> RequestCtrl | None:
        return next((c for c in self.ctrls if c.id == ctrl_id), None)


def _pad8(size: int) -> int:
    return (size + 7) & ~7


def pack_request_decode(req: RequestDecode, *, nr_ctrls: int | None = None,
                        ctrls_len: int | None = None,
                        reserved: Sequence[int] | None = None) -> bytes:
    """A DECODE_REQUEST payload as the kernel builds it: the struct, then each
    control's struct daedalus_request_ctrl and value padded with zeros to 8
    bytes. nr_ctrls and ctrls_len default to what the controls make and may
    be forced to wrong values (for tests)."""
    entries = b"".join(
        _pack(REQUEST_CTRL_STRUCT, {"id": c.id, "flags": c.flags, "size": c.size,
                                    "elems": c.elems})
        + c.value + bytes(_pad8(c.size) - c.size) for c in req.ctrls)
    return _pack(REQUEST_DECODE_STRUCT, {
        "stream_id": req.stream_id, "timestamp": req.timestamp, "codec": req.codec,
        "flags": req.flags, "out_index": req.out_index,
        "bitstream_offset": req.bitstream_offset, "bitstream_len": req.bitstream_len,
        "cap_index": req.cap_index, "pixfmt": req.pixfmt, "width": req.width,
        "height": req.height, "bytesperline": req.bytesperline, "sizeimage": req.sizeimage,
        "nr_ctrls": len(req.ctrls) if nr_ctrls is None else nr_ctrls,
        "ctrls_len": len(entries) if ctrls_len is None else ctrls_len,
        "reserved": list(req.reserved) if reserved is None else list(reserved),
    }) + entries


def parse_request_decode(payload: bytes | bytearray | memoryview) -> RequestDecode:
    """A whole DECODE_REQUEST payload: the struct and its controls. ProtocolError
    unless the lengths add up exactly: ctrls_len is the bytes after the struct
    (at most DAEDALUS_REQUEST_CTRLS_MAX), nr_ctrls entries fill them, each
    entry's value (``size`` bytes, padded with zeros to 8) stays inside them."""
    if len(payload) < REQUEST_DECODE_SIZE:
        raise ProtocolError(f"DECODE_REQUEST payload of {len(payload)} bytes is shorter than "
                            f"struct daedalus_request_decode ({REQUEST_DECODE_SIZE})")
    r = _unpack(REQUEST_DECODE_STRUCT, REQUEST_DECODE_SIZE, payload)
    nr_ctrls, ctrls_len = int(r.nr_ctrls), int(r.ctrls_len)
    rest = len(payload) - REQUEST_DECODE_SIZE
    if ctrls_len != rest:
        raise ProtocolError(f"ctrls_len {ctrls_len} but {rest} bytes follow the request")
    if ctrls_len > REQUEST_CTRLS_MAX:
        raise ProtocolError(f"ctrls_len {ctrls_len} exceeds DAEDALUS_REQUEST_CTRLS_MAX "
                            f"({REQUEST_CTRLS_MAX})")
    if nr_ctrls > ctrls_len // REQUEST_CTRL_SIZE:
        raise ProtocolError(f"nr_ctrls {nr_ctrls} entries do not fit ctrls_len {ctrls_len}")
    view = memoryview(payload)[REQUEST_DECODE_SIZE:]
    ctrls, pos = [], 0
    for n in range(nr_ctrls):
        if ctrls_len - pos < REQUEST_CTRL_SIZE:
            raise ProtocolError(f"control {n}: its entry runs past ctrls_len {ctrls_len}")
        e = _unpack(REQUEST_CTRL_STRUCT, REQUEST_CTRL_SIZE, view[pos:])
        size = int(e.size)
        start = pos + REQUEST_CTRL_SIZE
        end = start + _pad8(size)
        if end > ctrls_len:
            raise ProtocolError(f"control {n} ({int(e.id):#x}): {size} bytes of value run past "
                                f"ctrls_len {ctrls_len}")
        if any(view[start + size:end]):
            raise ProtocolError(f"control {n} ({int(e.id):#x}): padding not zero")
        ctrls.append(RequestCtrl(id=int(e.id), flags=int(e.flags), elems=int(e.elems),
                                 value=bytes(view[start:start + size])))
        pos = end
    if pos != ctrls_len:
        raise ProtocolError(f"{nr_ctrls} controls take {pos} bytes, ctrls_len is {ctrls_len}")
    return RequestDecode(
        stream_id=int(r.stream_id), timestamp=int(r.timestamp), codec=int(r.codec),
        flags=int(r.flags), bitstream_offset=int(r.bitstream_offset),
        bitstream_len=int(r.bitstream_len), pixfmt=int(r.pixfmt), width=int(r.width),
        height=int(r.height), bytesperline=int(r.bytesperline), sizeimage=int(r.sizeimage),
        out_index=int(r.out_index), cap_index=int(r.cap_index), ctrls=tuple(ctrls),
        nr_ctrls=nr_ctrls, ctrls_len=ctrls_len, reserved=tuple(int(w) for w in r.reserved))


def validate_request_decode(req: RequestDecode) -> None:
    """The checks on a DECODE_REQUEST by itself, beyond its lengths (parse):
    reserved words zero, a known codec, flags, layout and control flags, a
    size within DAEDALUS_MAX_WIDTH x _HEIGHT, no control twice, every control
    with at least one element. Whether the controls are the codec's, of the
    right sizes, and whether the buffers hold what the request says, is the
    handler's business."""
    if any(req.reserved):
        raise ProtocolError(f"request_decode reserved words not zero: {list(req.reserved)}")
    if req.codec not in set(Codec):
        raise ProtocolError(f"unknown codec {req.codec}")
    if req.flags & ~REQUEST_FLAGS:
        raise ProtocolError(f"unknown request flags {req.flags & ~REQUEST_FLAGS:#x}")
    if req.pixfmt not in set(PixFmt):
        raise ProtocolError(f"unknown pixfmt {req.pixfmt}")
    if not (0 < req.width <= MAX_WIDTH and 0 < req.height <= MAX_HEIGHT):
        raise ProtocolError(f"CAPTURE size {req.width}x{req.height} outside 1x1.."
                            f"{MAX_WIDTH}x{MAX_HEIGHT}")
    seen: set[int] = set()
    for ctrl in req.ctrls:
        if ctrl.flags & ~CTRL_FLAGS:
            raise ProtocolError(f"control {ctrl.id:#x}: unknown flags "
                                f"{ctrl.flags & ~CTRL_FLAGS:#x}")
        if ctrl.id in seen:
            raise ProtocolError(f"control {ctrl.id:#x} twice")
        if not ctrl.elems:
            raise ProtocolError(f"control {ctrl.id:#x}: 0 elements")
        seen.add(ctrl.id)


@dataclass(frozen=True)
class RequestDecodeResp:
    """struct daedalus_request_decode_resp and its message."""

    error: int
    bytes: int
    message: builtins.bytes = b""
    reserved: tuple[int, ...] = (0, 0, 0, 0, 0)

    @property
    def text(self) -> str:
        return self.message.decode("utf-8", errors="replace")


def pack_request_decode_resp(error: int = 0, nr_bytes: int = 0, message: bytes = b"", *,
                             msg_len: int | None = None,
                             reserved: Sequence[int] | None = None) -> bytes:
    """A DECODE_REQUEST answer's payload: the struct, then *message* (see
    encode_message). msg_len may be forced to a wrong value (for tests)."""
    if len(message) > MAX_MSG:
        raise ProtocolError(f"message of {len(message)} bytes, at most {MAX_MSG} fit")
    return _pack(REQUEST_DECODE_RESP_STRUCT, {
        "error": error, "bytes": nr_bytes,
        "msg_len": len(message) if msg_len is None else msg_len,
        "reserved": _reserved(REQUEST_DECODE_RESP_STRUCT, reserved),
    }) + bytes(message)


def parse_request_decode_resp(data: bytes | bytearray | memoryview) -> RequestDecodeResp:
    """A whole DECODE_REQUEST answer payload; ProtocolError unless exactly
    msg_len (at most DAEDALUS_MAX_MSG) bytes follow the struct."""
    if len(data) < REQUEST_DECODE_RESP_SIZE:
        raise ProtocolError(f"DECODE_REQUEST answer of {len(data)} bytes is shorter than "
                            f"struct daedalus_request_decode_resp ({REQUEST_DECODE_RESP_SIZE})")
    r = _unpack(REQUEST_DECODE_RESP_STRUCT, REQUEST_DECODE_RESP_SIZE, data)
    msg_len = int(r.msg_len)
    if msg_len > MAX_MSG:
        raise ProtocolError(f"msg_len {msg_len} exceeds DAEDALUS_MAX_MSG ({MAX_MSG})")
    if len(data) != REQUEST_DECODE_RESP_SIZE + msg_len:
        raise ProtocolError(f"DECODE_REQUEST answer of {len(data)} bytes, but msg_len "
                            f"{msg_len} makes {REQUEST_DECODE_RESP_SIZE + msg_len}")
    return RequestDecodeResp(error=int(r.error), bytes=int(r.bytes),
                             message=bytes(data[REQUEST_DECODE_RESP_SIZE:]),
                             reserved=tuple(int(w) for w in r.reserved))


def validate_request_decode_resp(resp: RequestDecodeResp, sizeimage: int, *,
                                 hold: bool = False, took_capture: bool = True) -> None:
    """The kernel's checks on a DECODE_REQUEST answer (daedalus_sl_resp_valid):
    reserved zero; an error without bytes; bytes equal to the request's
    *sizeimage*, from a daemon that took the CAPTURE buffer; neither error nor
    bytes only for a held CAPTURE buffer."""
    if any(resp.reserved):
        raise ProtocolError(f"request_decode_resp reserved words not zero: {list(resp.reserved)}")
    if resp.error:
        if resp.bytes:
            raise ProtocolError(f"error {resp.error} with {resp.bytes} bytes")
        return
    if resp.bytes:
        if resp.bytes != sizeimage:
            raise ProtocolError(f"bytes {resp.bytes}, the request's sizeimage is {sizeimage}")
        if not took_capture:
            raise ProtocolError("bytes written, but the CAPTURE buffer was never taken")
        return
    if not hold:
        raise ProtocolError("neither an error nor a picture, and the CAPTURE buffer is not held")


# --- FNV-1a 64 ----------------------------------------------------------------


def fnv1a64(*buffers: Buffer, seed: int = FNV1A64_OFFSET_BASIS) -> int:
    """FNV-1a 64 over the bytes of *buffers*, in order, as if concatenated.

    Computed in C (the extension's daedalus_fnv1a64, without the GIL) straight
    from each buffer's memory, never copied: bytes, bytearray, memoryview,
    numpy arrays, anything with the buffer protocol that is C-contiguous (a
    strided numpy view is refused with ValueError; a multi-byte array is
    hashed as its bytes in memory order). *seed* continues a digest:
    ``fnv1a64(b, seed=fnv1a64(a)) == fnv1a64(a, b)``.
    """
    digest = seed
    for buf in buffers:
        data = ffi.from_buffer("uint8_t[]", buf)
        digest = lib.daedalus_fnv1a64(digest, data, len(data))
    return int(digest)
