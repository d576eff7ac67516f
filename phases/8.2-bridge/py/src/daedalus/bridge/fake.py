"""A fake daemon for guest tests: raw messages on /dev/daedalus-v4l2.

Tests that must write what a real daemon never would (malformed answers,
answers that come late or never) open the chardev themselves with the real
daedalusd stopped, and use these helpers. Layouts come from the protocol
header through cffi; nothing here restates the ABI.
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from daedalus.proto import ffi, lib

CHARDEV = "/dev/daedalus-v4l2"
DEBUGFS = "/sys/kernel/debug/daedalus-v4l2"
HDR: int = ffi.sizeof("struct daedalus_msg_hdr")


class FakeDaemonError(AssertionError):
    """The kernel sent something a daemon should never see."""


@contextmanager
def chardev(flags: int = os.O_RDWR | os.O_NONBLOCK) -> Iterator[int]:
    """/dev/daedalus-v4l2 opened by this process, the fake daemon, for the block
    (the real daedalusd must be stopped first: only one process may hold the
    device; see daedalus.testbed.guestctl.daemon_stopped). Closing it fails
    every request still waiting with ENOTCONN."""
    fd = os.open(CHARDEV, flags)
    try:
        yield fd
    finally:
        os.close(fd)


def hdr_bytes(type_: int, cookie: int, payload: bytes = b"", **fields: int) -> bytes:
    """A header (fields overridable, e.g. magic=0, reserved4=1) then *payload*."""
    h = ffi.new("struct daedalus_msg_hdr *")
    h.magic = lib.DAEDALUS_PROTO_MAGIC
    h.version = lib.DAEDALUS_PROTO_VERSION
    h.type = type_
    h.cookie = cookie
    h.payload_len = len(payload)
    for name, value in fields.items():
        if name.startswith("reserved"):
            h.reserved[int(name[len("reserved"):])] = value
        else:
            setattr(h, name, value)
    return bytes(ffi.buffer(h)) + payload


def struct_bytes(ctype: str, **fields: Any) -> bytes:
    """The bytes of a protocol struct with the given fields (others zero)."""
    p = ffi.new(f"{ctype} *")
    for name, value in fields.items():
        if name.startswith("reserved") and name != "reserved":
            p.reserved[int(name[len("reserved"):])] = value
        else:
            setattr(p, name, value)
    return bytes(ffi.buffer(p))


def struct_from(ctype: str, data: bytes) -> Any:
    """A cdata copy of *data* read as *ctype* (e.g. "struct daedalus_decode_req")."""
    p = ffi.new(f"{ctype} *")
    size = ffi.sizeof(ctype)
    if len(data) < size:
        raise FakeDaemonError(f"{len(data)} bytes is short of {ctype} ({size})")
    ffi.memmove(p, data[:size], size)
    return p


def hello_payload(version: int | None = None, reserved0: int = 0) -> bytes:
    return struct_bytes("struct daedalus_hello",
                        proto_version=lib.DAEDALUS_PROTO_VERSION if version is None else version,
                        max_payload=lib.DAEDALUS_MAX_PAYLOAD, phase=0, reserved0=reserved0)


def parse(msg: bytes) -> tuple[int, int, int, bytes]:
    """(type, cookie, status, payload) of a message read from the chardev, checked."""
    h = struct_from("struct daedalus_msg_hdr", msg)
    if h.magic != lib.DAEDALUS_PROTO_MAGIC or h.version != lib.DAEDALUS_PROTO_VERSION:
        raise FakeDaemonError("bad magic/version from the kernel")
    if h.flags or any(r for r in h.reserved) or len(msg) != HDR + h.payload_len:
        raise FakeDaemonError("malformed header from the kernel")
    return int(h.type), int(h.cookie), int(h.status), msg[HDR:]


def read_msg(fd: int, timeout: float = 5.0) -> bytes:
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        raise FakeDaemonError(f"no message from the kernel within {timeout} s")
    return os.read(fd, HDR + lib.DAEDALUS_MAX_PAYLOAD)


def write_errno(fd: int, data: bytes) -> int | None:
    """Write one message; None if accepted, else the errno the kernel returned."""
    try:
        os.write(fd, data)
    except OSError as exc:
        return exc.errno
    return None


def handshake(fd: int) -> int:
    """Answer the kernel's HELLO as a daemon of this protocol version; its cookie."""
    type_, cookie, status, _ = parse(read_msg(fd))
    if type_ != lib.DAEDALUS_MSG_HELLO or status:
        raise FakeDaemonError(f"expected HELLO, got type {type_}")
    err = write_errno(fd, hdr_bytes(type_ | lib.DAEDALUS_MSG_RESPONSE, cookie,
                                    hello_payload()))
    if err is not None:
        raise FakeDaemonError(f"HELLO answer refused: {os.strerror(err)}")
    return cookie


class DebugfsCall(threading.Thread):
    """One write to a debugfs trigger in the background, then a read of the answer."""

    def __init__(self, name: str, payload: bytes, read_len: int = 1 << 20) -> None:
        super().__init__(daemon=True)
        self.path = f"{DEBUGFS}/{name}"
        self.payload = payload
        self.read_len = read_len
        self.error: int | None = None
        self.answer = b""
        self.elapsed = 0.0
        self.answered = threading.Event()  # set before the file is closed

    def run(self) -> None:
        fd = os.open(self.path, os.O_RDWR)
        start = time.monotonic()
        try:
            os.write(fd, self.payload)
            self.answer = os.pread(fd, self.read_len, 0)
        except OSError as exc:
            self.error = exc.errno
        finally:
            self.elapsed = time.monotonic() - start
            self.answered.set()
            os.close(fd)  # may itself send a request (CLOSE_STREAM)

    def wait(self, timeout: float = 10.0) -> None:
        if not self.answered.wait(timeout):
            raise FakeDaemonError(f"{self.path}: no answer within {timeout} s")
