"""Phase 8.4 in the guest: the kernel's decode request path against a fake daemon.

The kernel must pass requests through intact, number streams, and refuse
every RESP_FRAME that does not add up (EINVAL to the daemon, request still
waiting) while accepting a valid one byte for byte. Requests written to the
debugfs trigger are checked before they leave. Layouts come from the
protocol header through cffi.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from daedalus.bridge.fake import (
    CHARDEV,
    DEBUGFS,
    DebugfsCall,
    handshake,
    hdr_bytes,
    parse,
    read_msg,
    struct_bytes,
    struct_from,
    write_errno,
)
from daedalus.proto import ffi, lib
from daedalus.testbed.guestctl import daemon_stopped

pytestmark = pytest.mark.guest

REQ = "struct daedalus_decode_req"
RESP = "struct daedalus_frame_resp"
INFO = "struct daedalus_frame_info"
RESPONSE = lib.DAEDALUS_MSG_DECODE | lib.DAEDALUS_MSG_RESPONSE


def request(bitstream: bytes, codec: int = lib.DAEDALUS_CODEC_VP9, **fields: int) -> bytes:
    return struct_bytes(REQ, codec=codec, bitstream_len=len(bitstream), **fields) + bitstream


def frame(**fields: int) -> bytes:
    base = {"width": 320, "height": 240, "pixfmt": lib.DAEDALUS_PIXFMT_NV12,
            "flags": lib.DAEDALUS_FRAME_KEY, "digest": 0x0123456789ABCDEF, "timestamp": 7}
    base.update(fields)
    return struct_bytes(INFO, **base)


def answer(frames: list[bytes], msg: bytes = b"", **fields: int) -> bytes:
    base = {"status": lib.DAEDALUS_DECODE_OK, "nr_frames": len(frames), "msg_len": len(msg)}
    base.update(fields)
    return struct_bytes(RESP, **base) + b"".join(frames) + msg


@pytest.fixture()
def fake() -> Iterator[int]:
    with daemon_stopped():
        fd = os.open(CHARDEV, os.O_RDWR | os.O_NONBLOCK)
        try:
            handshake(fd)
            yield fd
        finally:
            os.close(fd)


def take_decode(fd: int) -> tuple[int, Any, bytes]:
    type_, cookie, _, payload = parse(read_msg(fd))
    assert type_ == lib.DAEDALUS_MSG_DECODE
    req = struct_from(REQ, payload)
    return cookie, req, payload[ffi.sizeof(REQ):]


def test_request_reaches_the_daemon_intact(fake: int) -> None:
    bitstream = os.urandom(3000)
    call = DebugfsCall("decode", request(bitstream, timestamp=1234))
    call.start()
    cookie, req, got = take_decode(fake)
    assert got == bitstream
    assert req.stream_id > 0 and req.codec == lib.DAEDALUS_CODEC_VP9
    assert req.bitstream_len == len(bitstream) and req.timestamp == 1234
    good = answer([frame(), frame(width=318, height=178, flags=0, timestamp=1234)],
                  b"fine")
    assert write_errno(fake, hdr_bytes(RESPONSE, cookie, good)) is None
    call.wait()
    assert call.error is None and call.answer == good


@pytest.mark.parametrize("bad", [
    "short", "reserved", "too many frames", "msg too long", "length mismatch",
    "unknown status", "error without errno", "ok with errno", "error with frames",
    "bad pixfmt", "zero width", "huge height", "unknown frame flag", "frame reserved",
    "answer longer than the kernel's buffer",
])
def test_malformed_resp_frame_is_rejected(fake: int, bad: str) -> None:
    call = DebugfsCall("decode", request(b"\x00" * 64))
    call.start()
    cookie, _, _ = take_decode(fake)
    payload = {
        "short": answer([])[:-4],
        "reserved": answer([], reserved2=1),
        "too many frames": answer([frame()] * (lib.DAEDALUS_MAX_FRAMES + 1)),
        "msg too long": answer([], b"x" * (lib.DAEDALUS_MAX_MSG + 1)),
        "length mismatch": answer([frame()], nr_frames=2),
        "unknown status": answer([], status=2),
        "error without errno": answer([], b"bad", status=lib.DAEDALUS_DECODE_ERROR),
        "ok with errno": answer([], error=errno.EILSEQ),
        "error with frames": answer([frame()], status=lib.DAEDALUS_DECODE_ERROR,
                                    error=errno.EILSEQ),
        "bad pixfmt": answer([frame(pixfmt=9)]),
        "zero width": answer([frame(width=0)]),
        "huge height": answer([frame(height=100000)]),
        "unknown frame flag": answer([frame(flags=0x80)]),
        "frame reserved": answer([frame(reserved=5)]),
        "answer longer than the kernel's buffer": b"\x00" * (64 * 1024),
    }[bad]
    assert write_errno(fake, hdr_bytes(RESPONSE, cookie, payload)) == errno.EINVAL
    assert call.is_alive()  # still waiting for a valid answer
    err = answer([], b"corrupt", status=lib.DAEDALUS_DECODE_ERROR, error=errno.EILSEQ)
    assert write_errno(fake, hdr_bytes(RESPONSE, cookie, err)) is None
    call.wait()
    assert call.error is None and call.answer == err


def test_daemon_refusal_is_eio(fake: int) -> None:
    call = DebugfsCall("decode", request(b"abc"))
    call.start()
    cookie, _, _ = take_decode(fake)
    assert write_errno(fake, hdr_bytes(RESPONSE, cookie, b"nope", status=errno.ENOMEM)) is None
    call.wait()
    assert call.error == errno.EIO


@pytest.mark.parametrize("bad", ["stream id set", "length mismatch", "unknown codec",
                                 "unknown flag", "reserved", "too short"])
def test_malformed_requests_never_leave(bad: str) -> None:
    data = {
        "stream id set": request(b"abc", stream_id=5),
        "length mismatch": request(b"abc")[:-1],
        "unknown codec": request(b"abc", codec=9),
        "unknown flag": request(b"abc", flags=0x100),
        "reserved": request(b"abc", reserved3=1),
        "too short": request(b"")[:-1],
    }[bad]
    fd = os.open(f"{DEBUGFS}/decode", os.O_RDWR)
    try:
        with pytest.raises(OSError) as exc:
            os.write(fd, data)
        assert exc.value.errno == errno.EINVAL
    finally:
        os.close(fd)


def test_streams_are_numbered_and_closed(fake: int) -> None:
    ids = []
    for codec in (lib.DAEDALUS_CODEC_VP9, lib.DAEDALUS_CODEC_H264):
        call = DebugfsCall("decode", request(b"x", codec=codec))
        call.start()
        cookie, req, _ = take_decode(fake)
        ids.append(int(req.stream_id))
        assert write_errno(fake, hdr_bytes(RESPONSE, cookie, answer([]))) is None
        call.wait()
        assert call.error is None
        # The trigger's file closes: the kernel drops the daemon's decoder.
        type_, cookie, _, payload = parse(read_msg(fake))
        assert type_ == lib.DAEDALUS_MSG_CLOSE_STREAM
        assert struct_from("struct daedalus_stream", payload).stream_id == ids[-1]
        reply = hdr_bytes(lib.DAEDALUS_MSG_CLOSE_STREAM | lib.DAEDALUS_MSG_RESPONSE, cookie)
        assert write_errno(fake, reply) is None
        call.join(10)
        assert not call.is_alive()
    assert ids[0] != ids[1] and all(i > 0 for i in ids)


def test_codec_is_fixed_per_stream(fake: int) -> None:
    fd = os.open(f"{DEBUGFS}/decode", os.O_RDWR)
    first = threading.Thread(target=os.write,
                             args=(fd, request(b"x", codec=lib.DAEDALUS_CODEC_H264)))
    first.start()
    cookie, _, _ = take_decode(fake)
    assert write_errno(fake, hdr_bytes(RESPONSE, cookie, answer([]))) is None
    first.join(10)
    with pytest.raises(OSError) as exc:
        os.write(fd, request(b"y", codec=lib.DAEDALUS_CODEC_VP9))
    assert exc.value.errno == errno.EINVAL
    closer = threading.Thread(target=os.close, args=(fd,))  # sends CLOSE_STREAM
    closer.start()
    type_, cookie, _, _ = parse(read_msg(fake))
    assert type_ == lib.DAEDALUS_MSG_CLOSE_STREAM
    assert write_errno(fake, hdr_bytes(type_ | lib.DAEDALUS_MSG_RESPONSE, cookie)) is None
    closer.join(10)
    assert not closer.is_alive()
