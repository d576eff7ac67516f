"""The daedalus-v4l2 wire protocol, laid out by the C compiler.

shared/proto/include/daedalus_v4l2_proto.h is the only definition of the wire
format. ``daedalus.proto._proto`` is that header compiled by cffi in API mode
(see cdef.py and _build.py); everything here packs and parses through its
``ffi``, so the sizes, offsets and constants are the compiler's, never a
second copy of the ABI in Python.

Importing this package fails (ImportError) when the extension is missing, was
compiled from a different header than the one in the checkout, or when cdef.py
disagrees with the header's layout.
"""

from __future__ import annotations

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
    "HDR_SIZE", "HELLO_SIZE", "MAGIC", "MAX_PAYLOAD", "RESERVED_WORDS", "RESPONSE", "VERSION",
    "Header", "Hello", "MsgType", "ProtocolError", "VersionMismatch", "ffi", "lib",
    "pack_header", "pack_hello", "pack_message", "parse_header", "parse_hello",
    "validate_hello", "validate_request",
]

HDR_STRUCT: Final = "struct daedalus_msg_hdr"
HELLO_STRUCT: Final = "struct daedalus_hello"


def _check_fresh() -> None:
    """Refuse an extension compiled from another version of the header."""
    include = _build.find_include_dir()
    if include is None:  # an installed wheel: the header is compiled in, nothing to compare
        return
    built = ffi.string(lib.daedalus_py_header_sha256)
    built = built.decode() if isinstance(built, bytes) else built
    if built != _build.header_sha256(include):
        raise ImportError(
            f"{_build.MODULE} was compiled from another {_build.HEADER} than "
            f"{include / _build.HEADER}; rebuild it: python {_build.__file__} "
            "(or hatch env prune)")


def _layout() -> tuple[int, int, int]:
    """Load both structs: cffi compares cdef.py's fields with the compiler's here."""
    try:
        hdr_size = ffi.sizeof(HDR_STRUCT)
        hello_size = ffi.sizeof(HELLO_STRUCT)
        fields = dict(ffi.typeof(HDR_STRUCT).fields)
    except ffi.error as exc:
        raise ImportError(f"cdef.py disagrees with {_build.HEADER}: {exc}") from exc
    return hdr_size, hello_size, int(fields["reserved"].type.length)


_check_fresh()
HDR_SIZE, HELLO_SIZE, RESERVED_WORDS = _layout()
MAGIC: Final = lib.DAEDALUS_PROTO_MAGIC
VERSION: Final = lib.DAEDALUS_PROTO_VERSION
MAX_PAYLOAD: Final = lib.DAEDALUS_MAX_PAYLOAD
RESPONSE: Final = lib.DAEDALUS_MSG_RESPONSE


class MsgType(enum.IntEnum):
    """enum daedalus_msg_type (answers add RESPONSE to the type)."""

    HELLO = lib.DAEDALUS_MSG_HELLO
    PING = lib.DAEDALUS_MSG_PING


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
