"""Phase 8.6 in the guest: DAEDALUS_IOC_GET_DMABUF, checked by a fake daemon.

With daedalusd stopped, this test process opens /dev/daedalus-v4l2 itself,
answers HELLO, and asks the kernel for buffers the way a daemon would, some
of which it must refuse (the kerneldoc of struct daedalus_dmabuf_req):

1. Without any job: a cookie never issued, and HELLO's (in flight, but a
   request without buffers, then answered) are ENOENT; flags or reserved
   words set are EINVAL; any other ioctl number on the chardev is ENOTTY.
   DAEDALUS_IOC_IN_FLIGHT says 0 for HELLO while it waits, ENOENT once it
   is answered and for cookies never issued (and, in 2, for a FEED: 0
   while it waits, ENOENT once answered).
2. A real job: ``daedalus-v4l2 decode`` runs in the background, as an
   application; its first FEED carries DAEDALUS_DECODE_DMABUF and no
   bitstream. GET_DMABUF gives a read-only, close-on-exec dma-buf of the
   OUTPUT buffer holding the clip's first packet at bitstream_offset;
   mapping it for writing is EACCES; index 1 is EINVAL, other cookies
   ENOENT. Malformed answers are refused (EINVAL) and leave the FEED
   waiting (its buffer can still be had); a DECODE_ERROR / EILSEQ answer is
   taken, after which the cookie is ENOENT. The client's OUTPUT buffers come
   back in ERROR and it gives up; with daedalusd back, the next decode is
   byte-exact. The kernel refuses, the job errors, the next job works.
3. A FETCH with DAEDALUS_FETCH_DMABUF: the fake daemon answers the first
   FEED with the frame it decodes itself (PyAV) from the bytes it read
   through the OUTPUT dma-buf, every other FEED with no frame; the kernel
   FETCHes that frame into a CAPTURE buffer the daemon maps read-write and
   writes as the real daemon does (daedalus.m2m.layout.lay_out). FETCH
   answers whose ``bytes`` or frame are wrong, that carry pixels, or that
   come before the daemon took the buffer (a daemon answering for a buffer
   it was never given) are refused (EINVAL: daedalus_dmabuf_fetch_valid);
   the right one is taken and the client's only frame is that frame,
   ffmpeg's frame 0.
4. The daemon goes away mid-write: the fake daemon takes the FETCH's
   CAPTURE buffer, writes half of the frame and closes /dev/daedalus-v4l2
   (what its death does: the file's release) with the buffer still mapped.
   The kernel fails every request in flight (ENOTCONN): the CAPTURE buffer
   comes back in ERROR and empty, the client ends on its own, saying the
   daemon is gone, no half-written frame reaches it, the kernel logs no
   warning; with daedalusd back, the next decode is byte-exact.

Every wait is bounded (poll timeouts; the client's own --timeout), the
client is killed on any way out, and daedalusd is restarted by
``daemon_stopped()`` however a test ends. The bridge's watchdog is raised to
30 s meanwhile, so that the checks between reading a request and answering it
never race it under emulation. Layouts come from the protocol header through
daedalus.proto; nothing here restates the ABI.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import re
import select
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import IO

import av
import numpy as np
import pytest

from daedalus.bridge.fake import chardev, handshake, read_msg, write_errno
from daedalus.codec.session import create_decoder
from daedalus.dispatch.device import DMA_BUF_IOCTL_SYNC, Device, DmaBuf, ioc
from daedalus.m2m.campaign import bridge_timeout
from daedalus.m2m.clients import decode, decode_argv, reference_frames, summary
from daedalus.m2m.layout import Geometry, buffer_size, fits, lay_out
from daedalus.m2m.stateful import read_output
from daedalus.m2m.status import DecodeExit
from daedalus.parse import corpus
from daedalus.parse.readers import read_all
from daedalus.proto import (
    DECODE_REQ_SIZE,
    DMABUF_REQ_SIZE,
    FEED_FLAGS,
    FRAME_KEY,
    HDR_SIZE,
    IOC_GET_DMABUF,
    IOC_IN_FLIGHT,
    MAX_PAYLOAD,
    RESPONSE,
    Codec,
    DecodeReq,
    DecodeStatus,
    DmaBufReq,
    FetchReq,
    FrameInfo,
    Header,
    MsgType,
    PixFmt,
    encode_message,
    pack_dmabuf_req,
    pack_fetch_resp,
    pack_frame_resp,
    pack_header,
    pack_hello,
    pack_message,
    parse_decode_req,
    parse_dmabuf_req,
    parse_fetch_req,
    parse_header,
    validate_decode_req,
    validate_fetch_req,
    validate_request,
)
from daedalus.roundtrip.frames import PackedFrame, pack
from daedalus.testbed.guestctl import KernelLog, daemon_state, daemon_stopped

pytestmark = pytest.mark.guest

CLIP = "vp9-320x240"
WATCHDOG_MS = 30000          # daemon_timeout_ms while the fake daemon holds requests
CLIENT_TIMEOUT = "60"        # the decode tool's --timeout (seconds without progress)
PATIENCE = 300.0             # the tool's start (imports over 9p under TCG) until a request
POLL = 0.5                   # seconds per poll of the chardev between checks on the client
AFTER_EXIT = 2.0             # requests of a client that ended (CLOSE_STREAM) come within this


# --- DAEDALUS_IOC_GET_DMABUF, raw --------------------------------------------------------


def get_dmabuf(fd: int, cookie: int, index: int = 0, *, flags: int = 0,
               reserved: tuple[int, int] | None = None) -> DmaBufReq:
    """The ioctl exactly as asked (any field may be wrong); the struct as the
    kernel left it. OSError with its errno if refused."""
    arg = bytearray(pack_dmabuf_req(cookie, index, flags=flags, reserved=reserved))
    fcntl.ioctl(fd, IOC_GET_DMABUF, arg, True)
    return parse_dmabuf_req(arg)


def refused(fd: int, cookie: int, index: int = 0, *, flags: int = 0,
            reserved: tuple[int, int] | None = None) -> int:
    """The errno of a GET_DMABUF that must fail; a test failure (the fd closed)
    if the kernel hands out a buffer."""
    try:
        got = get_dmabuf(fd, cookie, index, flags=flags, reserved=reserved)
    except OSError as exc:
        assert exc.errno is not None
        return exc.errno
    os.close(got.fd)
    pytest.fail(f"GET_DMABUF(cookie {cookie}, index {index}, flags {flags:#x}, reserved "
                f"{reserved}) handed out fd {got.fd} of {got.size} bytes")


def check_fd(got: DmaBufReq, *, writable: bool) -> None:
    """What the kernel says of every fd it hands out: new, close-on-exec, of
    at least its reported size, open read-only (OUTPUT) or read-write (CAPTURE)."""
    assert got.fd >= 0 and got.size > 0, got
    assert got.reserved == (0, 0) and got.flags == 0, got
    assert fcntl.fcntl(got.fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC, "not O_CLOEXEC"
    mode = fcntl.fcntl(got.fd, fcntl.F_GETFL) & os.O_ACCMODE
    assert mode == (os.O_RDWR if writable else os.O_RDONLY), f"access mode {mode:#o}"
    assert os.lseek(got.fd, 0, os.SEEK_END) >= got.size  # the dma-buf's own size


def in_flight(fd: int, cookie: int) -> int:
    """DAEDALUS_IOC_IN_FLIGHT for *cookie*: 0 (still waiting) or the errno."""
    try:
        fcntl.ioctl(fd, IOC_IN_FLIGHT, struct.pack("=Q", cookie))
    except OSError as exc:
        assert exc.errno is not None
        return exc.errno
    return 0


def still_waiting(fd: int, cookie: int) -> None:
    """The request is still in flight: its buffer can be had (and is let go at once)."""
    os.close(get_dmabuf(fd, cookie).fd)


# --- the fake daemon's side of the chardev -----------------------------------------------


def answer(fd: int, header: Header, payload: bytes = b"") -> int | None:
    """Answer *header*'s request with *payload*: None if taken, else the errno."""
    return write_errno(fd, pack_message(header.opcode | RESPONSE, header.cookie, payload))


@contextmanager
def fake_daemon() -> Iterator[int]:
    """The chardev held by this process (daedalusd stopped, and back after the
    block however it ends), the bridge's watchdog at WATCHDOG_MS meanwhile."""
    with bridge_timeout(WATCHDOG_MS), daemon_stopped(), chardev() as fd:
        yield fd
    assert daemon_state() == "ready", "daedalusd did not come back"


class BackgroundDecode:
    """``daedalus-v4l2 decode FILE -o OUT`` running while the test plays the
    daemon; its stdout and stderr lines are collected as they come. Killed
    (and reaped) when the ``with`` block ends, however it ends."""

    def __init__(self, path: Path, out: Path, *extra: str) -> None:
        self.proc = subprocess.Popen(
            decode_argv(path, out, "--timeout", CLIENT_TIMEOUT, *extra),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._lock = threading.Lock()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [threading.Thread(target=self._collect, args=(pipe, lines), daemon=True)
                         for pipe, lines in ((self.proc.stdout, self.stdout),
                                             (self.proc.stderr, self.stderr))]
        for reader in self._readers:
            reader.start()

    def __enter__(self) -> BackgroundDecode:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        for reader in self._readers:
            reader.join(10)

    def _collect(self, pipe: IO[str], lines: list[str]) -> None:
        for line in pipe:
            with self._lock:
                lines.append(line.rstrip("\n"))

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout: float) -> int:
        """Its exit status; killed (and the test failed) if it runs on past *timeout* s."""
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
            pytest.fail(f"the decode did not end within {timeout:g} s:\n{self.output()}")
        for reader in self._readers:
            reader.join(10)
        return status

    def output(self) -> str:
        with self._lock:
            return ("stdout:\n  " + "\n  ".join(self.stdout) + "\nstderr:\n  "
                    + "\n  ".join(self.stderr))


def poll_request(fd: int) -> tuple[Header, bytes] | None:
    """A request the kernel queued within POLL s (checked as the daemon
    checks it), or None."""
    ready, _, _ = select.select([fd], [], [], POLL)
    if not ready:
        return None
    try:
        msg = os.read(fd, HDR_SIZE + MAX_PAYLOAD)
    except BlockingIOError:
        return None
    header = parse_header(msg)
    validate_request(header, msg[HDR_SIZE:])
    return header, msg[HDR_SIZE:]


def next_request(fd: int, client: BackgroundDecode,
                 timeout: float = PATIENCE) -> tuple[Header, bytes]:
    """The next request the kernel sends (checked as the daemon checks it),
    within *timeout* s; the test fails at once if the client ends first."""
    deadline = time.monotonic() + timeout
    while True:
        got = poll_request(fd)
        if got is not None:
            return got
        if client.returncode is not None:
            pytest.fail(f"the client ended (status {client.returncode}) while the fake "
                        f"daemon waited for a request:\n{client.output()}")
        if time.monotonic() >= deadline:
            pytest.fail(f"no request from the kernel within {timeout:g} s:\n{client.output()}")


def feed_of(header: Header, payload: bytes) -> DecodeReq:
    """The FEED in *payload*, as the daemon checks it."""
    assert header.type == MsgType.FEED, f"expected a FEED, got {header}"
    req, inline = parse_decode_req(payload)
    validate_decode_req(req, len(inline), allowed_flags=FEED_FLAGS)
    assert not (req.reset or req.resync), req  # no seek, no answer lost
    return req


def serve_until_exit(fd: int, client: BackgroundDecode, feed_answer: bytes,
                     timeout: float) -> list[str]:
    """Answer every FEED (FLUSH included) with *feed_answer* and CLOSE_STREAM
    as daedalusd does, until the client exits and AFTER_EXIT s more pass
    without a request. An answer refused because the FEED was cancelled
    meanwhile (the client stopping its queue) is fine if the cookie is gone.
    The requests seen; any other request fails the test."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    ended_at: float | None = None
    while True:
        got = poll_request(fd)
        if got is not None:
            header, payload = got
            if header.type == MsgType.FEED:
                req = feed_of(header, payload)
                assert req.dmabuf or req.flush, req  # bytes never cross inline
                taken = answer(fd, header, feed_answer) is None
                seen.append(("flush" if req.flush else "feed") + ("" if taken else " (gone)"))
                if not taken:  # cancelled meanwhile (the client stopped): gone, not waiting
                    assert refused(fd, header.cookie) == errno.ENOENT, seen
            elif header.type == MsgType.CLOSE_STREAM:
                seen.append("close")
                assert answer(fd, header) is None
            else:
                pytest.fail(f"unexpected request {header} after {seen}:\n{client.output()}")
            continue
        now = time.monotonic()
        if client.returncode is not None:
            ended_at = ended_at or now
            if now - ended_at >= AFTER_EXIT:
                return seen
        elif now >= deadline:
            pytest.fail(f"the client did not end within {timeout:g} s; requests {seen}:\n"
                        f"{client.output()}")


def first_frame(codec: int, bitstream: bytes) -> PackedFrame:
    """The frame of *bitstream* (one keyframe packet) as the daemon decodes and
    packs it (daedalus.codec.session's decoder, phase 8.4's NV12 packing)."""
    decoder = create_decoder(Codec(codec))
    frames = list(decoder.decode(av.Packet(bitstream))) or list(decoder.decode(None))
    assert frames, "PyAV decoded no frame from the first packet"
    return pack(frames[0])


# --- 1: no job -----------------------------------------------------------------------------


def test_get_dmabuf_refuses_cookies_without_a_job_bad_fields_and_other_ioctls() -> None:
    """ENOENT for a cookie never issued and for HELLO's (read and unanswered,
    but without buffers; then answered); EINVAL for flags or a reserved word
    set, checked before the cookie; ENOTTY for any other ioctl number."""
    with fake_daemon() as fd:
        msg = read_msg(fd)
        first = parse_header(msg)
        validate_request(first, msg[HDR_SIZE:])
        assert first.type == MsgType.HELLO, first
        # in flight, but HELLO's job has no buffer
        assert refused(fd, first.cookie) == errno.ENOENT
        assert in_flight(fd, first.cookie) == 0
        assert answer(fd, first, pack_hello()) is None
        assert daemon_state() == "ready"
        for cookie in (first.cookie, 0, first.cookie + 1, first.cookie + 1000, 2**64 - 1):
            assert refused(fd, cookie) == errno.ENOENT, cookie
            assert in_flight(fd, cookie) == errno.ENOENT, cookie
        assert refused(fd, first.cookie + 1000, 1) == errno.ENOENT  # no request: no index
        for flags, reserved in ((1, None), (0x80000000, None), (0, (1, 0)), (0, (0, 7))):
            assert refused(fd, 12345, flags=flags, reserved=reserved) == errno.EINVAL, \
                (flags, reserved)
        assert refused(fd, first.cookie, flags=1) == errno.EINVAL
        others = {
            "number 2": ioc(3, 0xDA, 2, DMABUF_REQ_SIZE),
            "number 0": ioc(3, 0xDA, 0, DMABUF_REQ_SIZE),
            "GET_DMABUF's number, 8 bytes longer": ioc(3, 0xDA, 1, DMABUF_REQ_SIZE + 8),
            "GET_DMABUF's number, 8 bytes shorter": ioc(3, 0xDA, 1, DMABUF_REQ_SIZE - 8),
            "GET_DMABUF's number, write only (_IOW)": ioc(1, 0xDA, 1, DMABUF_REQ_SIZE),
            "IN_FLIGHT's number, read and write": ioc(3, 0xDA, 2, 8),
            "DMA_BUF_IOCTL_SYNC": DMA_BUF_IOCTL_SYNC,
        }
        for name, request in others.items():
            assert request not in (IOC_GET_DMABUF, IOC_IN_FLIGHT)
            with pytest.raises(OSError) as info:
                fcntl.ioctl(fd, request, bytearray(DMABUF_REQ_SIZE + 8), True)
            assert info.value.errno == errno.ENOTTY, name
        assert daemon_state() == "ready"


# --- 2: a FEED's OUTPUT buffer ------------------------------------------------------------


def test_feed_output_buffer_is_read_only_and_only_while_the_feed_waits(tmp_path: Path) -> None:
    """The first FEED of a decode names its OUTPUT buffer: read-only, holding
    the clip's first packet; index 1 EINVAL, other cookies ENOENT; malformed
    answers EINVAL with the FEED still waiting; after a DECODE_ERROR answer
    ENOENT. The client gives up; with daedalusd back the next decode is exact."""
    path = corpus.path(CLIP)
    _, packets = read_all(path)
    packet = packets[0].data
    with fake_daemon() as fd:
        hello = handshake(fd)
        assert daemon_state() == "ready"
        with BackgroundDecode(path, tmp_path / "fake.yuv") as client:
            header, payload = next_request(fd, client)
            req = feed_of(header, payload)
            print(f"first FEED: cookie {header.cookie}, {req}")
            assert req.dmabuf and not req.flush and req.codec == Codec.VP9, req
            assert len(payload) == DECODE_REQ_SIZE, "bitstream bytes crossed inline"
            assert req.bitstream_len == len(packet) > 0, (req, len(packet))

            got = get_dmabuf(fd, header.cookie)
            with DmaBuf(got.fd, got.size, writable=False) as buf:  # closes the fd
                check_fd(got, writable=False)
                end = req.bitstream_offset + req.bitstream_len
                assert got.size >= end, (got, req)
                print(f"OUTPUT dma-buf: fd {got.fd}, {got.size} bytes; bitstream "
                      f"{req.bitstream_len} bytes at {req.bitstream_offset}")
                # mapped for writing: the file is open read-only (do_mmap: EACCES)
                with pytest.raises(OSError) as info:
                    mmap.mmap(got.fd, got.size, mmap.MAP_SHARED,
                              mmap.PROT_READ | mmap.PROT_WRITE)
                assert info.value.errno == errno.EACCES
                # mapped read-only, as the daemon does (DMA_BUF_IOCTL_SYNC around the read)
                with buf.access() as data:
                    assert bytes(data[req.bitstream_offset:end]) == packet

            assert refused(fd, header.cookie, 1) == errno.EINVAL  # its job has buffer 0 only
            assert refused(fd, header.cookie, 0xFFFFFFFF) == errno.EINVAL
            for other in (hello, header.cookie + 1, header.cookie + 1000):
                assert refused(fd, other) == errno.ENOENT, other
            assert refused(fd, header.cookie, flags=1) == errno.EINVAL

            # malformed answers: refused, and the FEED keeps waiting
            response = MsgType.FEED | RESPONSE
            malformed = {
                "DECODE_ERROR without an errno": pack_frame_resp(DecodeStatus.ERROR, 0),
                "DECODE_OK with an errno": pack_frame_resp(DecodeStatus.OK, errno.EILSEQ),
                "a frame counted, none listed": pack_frame_resp(DecodeStatus.OK, nr_frames=1),
                "DECODE_ERROR with a frame": pack_frame_resp(
                    DecodeStatus.ERROR, errno.EILSEQ,
                    [FrameInfo(320, 240, PixFmt.NV12, FRAME_KEY, 1, req.timestamp)]),
                "shorter than struct daedalus_frame_resp": pack_frame_resp(DecodeStatus.OK)[:8],
            }
            for name, body in malformed.items():
                assert write_errno(fd, pack_message(response, header.cookie, body)) \
                    == errno.EINVAL, name
            assert write_errno(fd, pack_message(MsgType.FETCH | RESPONSE, header.cookie,
                                                pack_frame_resp(DecodeStatus.OK))) \
                == errno.EINVAL, "another type's answer"
            assert write_errno(fd, pack_header(response, header.cookie, 16)) == errno.EINVAL, \
                "payload_len beyond the write"
            still_waiting(fd, header.cookie)
            assert in_flight(fd, header.cookie) == 0
            assert in_flight(fd, hello) == in_flight(fd, header.cookie + 1) == errno.ENOENT

            # the job errors: a well-formed DECODE_ERROR / EILSEQ is taken
            error = pack_frame_resp(DecodeStatus.ERROR, errno.EILSEQ,
                                    message=encode_message("fake daemon: corrupt bitstream"))
            assert write_errno(fd, pack_message(response, header.cookie, error)) is None
            assert refused(fd, header.cookie) == errno.ENOENT  # answered
            assert in_flight(fd, header.cookie) == errno.ENOENT
            assert write_errno(fd, pack_message(response, header.cookie, error)) \
                == errno.EINVAL  # and its cookie is gone

            # every later FEED fails too: the client gives up (fail fast), as it would
            # on a stream the daemon cannot decode at all
            seen = serve_until_exit(fd, client, error, timeout=PATIENCE)
            status = client.wait(30)
            print(f"then {seen}; the client ended with {status}:\n{client.output()}")
            stderr = "\n".join(client.stderr)
            assert "packet 0: OUTPUT buffer returned with ERROR" in stderr, client.output()
            assert status == DecodeExit.REFUSED, client.output()
            assert "decoded nothing" in stderr, client.output()
    # daedalusd is back: the next job works
    again = decode(path, tmp_path / "after.yuv", "--compare", "--timeout", "120")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "byte-exact: yes" in again.stdout.splitlines(), again.stdout


# --- 3: a FETCH's CAPTURE buffer -----------------------------------------------------------


def test_fetch_writes_the_frame_into_the_capture_buffer_through_get_dmabuf(
        tmp_path: Path) -> None:
    """A FETCH_DMABUF FETCH names a read-write CAPTURE buffer the fake daemon
    writes its own decode of frame 0 into; wrong answers are EINVAL (among
    them the right one, sent before the daemon took the buffer), the right
    one is taken, and the client's only frame is ffmpeg's frame 0."""
    path = corpus.path(CLIP)
    out = tmp_path / "fake.yuv"
    with fake_daemon() as fd:
        handshake(fd)
        assert daemon_state() == "ready"
        with BackgroundDecode(path, out) as client:
            header, payload = next_request(fd, client)
            req = feed_of(header, payload)
            assert req.dmabuf, req
            # decode the bytes the OUTPUT buffer holds, as daedalusd does
            bitstream = read_output(Device(fd), header.cookie, req)
            frame = first_frame(req.codec, bitstream)
            assert (frame.width, frame.height, frame.pixfmt) == (320, 240, PixFmt.NV12)
            info = frame.info(req.timestamp)
            assert answer(fd, header, pack_frame_resp(DecodeStatus.OK, 0, [info])) is None

            # the kernel announces the size, the client sets CAPTURE up; meanwhile
            # the other FEEDs get no frame
            feeds = 1
            while True:
                header, payload = next_request(fd, client)
                if header.type != MsgType.FEED:
                    break
                req = feed_of(header, payload)
                assert req.dmabuf or req.flush, req
                feeds += 1
                assert answer(fd, header, pack_frame_resp(DecodeStatus.OK)) is None
            assert header.type == MsgType.FETCH, header
            fetch = parse_fetch_req(payload)
            validate_fetch_req(fetch)
            print(f"FETCH after {feeds} FEEDs: cookie {header.cookie}, {fetch}")
            assert fetch.dmabuf and not fetch.discard, fetch
            assert (fetch.timestamp, fetch.digest) == (info.timestamp, info.digest)
            geometry = Geometry(info.width, info.height, PixFmt(info.pixfmt))
            assert fits(geometry, fetch.bytesperline, fetch.height) is None, fetch
            size = buffer_size(fetch.bytesperline, fetch.height)
            assert size == fetch.bytesperline * fetch.height * 3 // 2 <= fetch.max_bytes

            # the right answer before the daemon took the buffer it claims to have
            # written: refused (daedalus_dmabuf_fetch_valid), the FETCH keeps waiting
            assert write_errno(fd, pack_message(MsgType.FETCH | RESPONSE, header.cookie,
                                                pack_fetch_resp(info, nr_bytes=size))) \
                == errno.EINVAL, "an answer for a buffer the daemon never took"
            got = get_dmabuf(fd, header.cookie)  # (which proves the FETCH still waits)
            with DmaBuf(got.fd, got.size, writable=True) as buf:
                check_fd(got, writable=True)
                assert got.size >= size, (got, fetch)
                assert refused(fd, header.cookie, 1) == errno.EINVAL
                with buf.access(write=True) as data:
                    lay_out(frame.luma, frame.chroma, fetch.bytesperline, fetch.height,
                            out=np.frombuffer(data, np.uint8, count=size), zeroed=False)
            check_answers(fd, header, fetch, info, size)

            seen = serve_until_exit(fd, client, pack_frame_resp(DecodeStatus.OK),
                                    timeout=PATIENCE)
            status = client.wait(30)
            print(f"then {seen}; the client ended with {status}:\n{client.output()}")
            assert status == DecodeExit.OK, client.output()
    decoded = out.read_bytes()
    assert decoded == frame.tobytes(), "the client's frame is not the one written"
    assert decoded == reference_frames(CLIP)[0], "the frame is not ffmpeg's frame 0"


def check_answers(fd: int, header: Header, fetch: FetchReq, info: FrameInfo, size: int) -> None:
    """FETCH answers the kernel must refuse (daedalus_dmabuf_fetch_valid:
    exactly a struct daedalus_fetch_resp naming the frame asked for, whose
    bytes are the request's layout), each leaving the FETCH waiting; then the
    right one, after which the cookie has no buffer."""
    response = MsgType.FETCH | RESPONSE
    wrong = {
        "bytes one short": pack_fetch_resp(info, nr_bytes=size - 1),
        "bytes one row more": pack_fetch_resp(info, nr_bytes=size + fetch.bytesperline),
        "bytes 0": pack_fetch_resp(info, nr_bytes=0),
        "pixels inline too": pack_fetch_resp(info, bytes(64), nr_bytes=size),
        "another frame's digest": pack_fetch_resp(replace(info, digest=info.digest ^ 1),
                                                  nr_bytes=size),
        "another timestamp": pack_fetch_resp(replace(info, timestamp=info.timestamp + 1),
                                             nr_bytes=size),
        "reserved set": pack_fetch_resp(info, nr_bytes=size, reserved=(0, 0, 1)),
        "frame reserved set": pack_fetch_resp(replace(info, reserved=1), nr_bytes=size),
        # protocol v9: the colour description is part of the frame named
        "another range": pack_fetch_resp(replace(info, range=info.range ^ 3),
                                         nr_bytes=size),
        "another matrix": pack_fetch_resp(replace(info, matrix=info.matrix ^ 1),
                                          nr_bytes=size),
        "a RESP_FRAME's payload": pack_frame_resp(DecodeStatus.OK),
    }
    for name, body in wrong.items():
        assert write_errno(fd, pack_message(response, header.cookie, body)) == errno.EINVAL, \
            name
    still_waiting(fd, header.cookie)
    assert write_errno(fd, pack_message(response, header.cookie,
                                        pack_fetch_resp(info, nr_bytes=size))) is None
    assert refused(fd, header.cookie) == errno.ENOENT  # answered


# --- 4: the daemon goes away mid-write -------------------------------------------------------


def close_chardev(fd: int) -> None:
    """Close the fake daemon's /dev/daedalus-v4l2 now, as its death would (the
    file's release), leaving *fd* open on /dev/null so that chardev() closes
    that, never a number reused meanwhile."""
    null = os.open(os.devnull, os.O_RDWR)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


def test_a_daemon_closing_its_device_mid_write_fails_the_job_and_the_next_one_works(
        tmp_path: Path) -> None:
    """The fake daemon answers the first FEED with frame 0, takes the FETCH's
    CAPTURE buffer, writes half of the frame into it and closes the chardev
    while the buffer is mapped. The client's CAPTURE buffer comes back in
    ERROR, its later OUTPUT buffers too (no daemon); it ends by itself,
    NO_DEVICE, its last line saying daedalusd is not connected, with no
    frame written. The kernel log has no warning. With daedalusd back, the
    same clip decodes byte-exact."""
    path = corpus.path(CLIP)
    out = tmp_path / "fake.yuv"
    with KernelLog() as kernel_log:
        with fake_daemon() as fd:
            handshake(fd)
            with BackgroundDecode(path, out) as client:
                header, payload = next_request(fd, client)
                req = feed_of(header, payload)
                frame = first_frame(req.codec, read_output(Device(fd), header.cookie, req))
                info = frame.info(req.timestamp)
                assert answer(fd, header, pack_frame_resp(DecodeStatus.OK, 0, [info])) is None
                while True:
                    header, payload = next_request(fd, client)
                    if header.type != MsgType.FEED:
                        break
                    feed_of(header, payload)
                    assert answer(fd, header, pack_frame_resp(DecodeStatus.OK)) is None
                assert header.type == MsgType.FETCH, header
                fetch = parse_fetch_req(payload)
                validate_fetch_req(fetch)
                assert fetch.dmabuf, fetch
                size = buffer_size(fetch.bytesperline, fetch.height)
                pixels = np.zeros(size, np.uint8)
                lay_out(frame.luma, frame.chroma, fetch.bytesperline, fetch.height, out=pixels)
                got = get_dmabuf(fd, header.cookie)
                with DmaBuf(got.fd, got.size, writable=True) as buf:
                    with buf.access(write=True) as data:
                        np.frombuffer(data, np.uint8, count=size)[:size // 2] = \
                            pixels[:size // 2]
                        close_chardev(fd)  # mid-write, the buffer still mapped
                        assert daemon_state() == "disconnected"
                status = client.wait(PATIENCE)
                print(f"the client ended with {status}:\n{client.output()}")
                stderr = client.stderr
        problems = kernel_log.problems()
        lines = kernel_log.read()
    assert status == DecodeExit.NO_DEVICE, client.output()
    assert any(re.fullmatch(r"daedalus-v4l2 decode: CAPTURE buffer \d+ \(timestamp 0\) "
                            r"returned with ERROR; skipped", line) for line in stderr), stderr
    assert stderr[-1].endswith("daedalusd is not connected: start it"), stderr
    assert summary("\n".join(client.stdout)).frames == 0
    assert out.read_bytes() == b"", "a frame reached the client"
    assert any("daemon disconnected" in line for line in lines), lines
    assert not problems, problems
    again = decode(path, tmp_path / "after.yuv", "--compare", "--timeout", "120")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "byte-exact: yes" in again.stdout.splitlines(), again.stdout
