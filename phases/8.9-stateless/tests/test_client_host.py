"""daedalus.stateless.client on the host: its uAPI numbers and structs, and its request sequence.

No node is needed. The numbers and layouts are checked against what a C
compiler makes of <linux/media.h>, <linux/videodev2.h> and
<linux/v4l2-controls.h> (the host's linux-libc-dev). The sequence runs
against a fake kernel (``FakeStateless``: it replaces the ioctls of phase
8.5's V4L2 layer and of the client, and backs the buffers with a memfd that
the client maps as it would the node's buffers). The fake does what the
node and the daemon do with a request: it refuses one without its buffer
or its VP9 frame control (ENOENT) and an OUTPUT QBUF without a request
(EBADR); it checks every control against the frame the OUTPUT buffer
carries and against the reference slots it models itself
(daedalus.stateless.vp9_check, the daemon's checker: an independent
parse and slot bookkeeping); and it "decodes" by writing a picture that
says which request it belongs to (the request's number in every visible
luma sample, other bytes in the row padding), so what the client outputs
shows which requests' pictures it kept and how it cropped them. The count
of shown pictures is Debian's ffprobe's.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import select
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from linuxpy.video import raw

from daedalus.m2m import v4l2
from daedalus.m2m.v4l2 import Frame, M2MNode
from daedalus.parse import corpus
from daedalus.parse.readers import Packet, open_stream
from daedalus.parse.reference import have_ffprobe, probe_frames
from daedalus.proto import Codec
from daedalus.skeleton.v4l2dev import CAPTURE, OUTPUT, PixFormat
from daedalus.stateless import client, vp9_ctrls
from daedalus.stateless.client import (
    MEDIA_IOC_REQUEST_ALLOC,
    MEDIA_REQUEST_IOC_QUEUE,
    MEDIA_REQUEST_IOC_REINIT,
    V4L2_BUF_FLAG_REQUEST_FD,
    V4L2_CTRL_WHICH_REQUEST_VAL,
    H264StatelessDecode,
    MediaRequest,
    StatelessStats,
    Vp9StatelessDecode,
    decode_for_codec,
    ext_controls,
    request_ns,
)
from daedalus.stateless.client_av1 import Av1StatelessDecode
from daedalus.stateless.vp9_check import Vp9RefSlots, check
from daedalus.stateless.vp9_header import Vp9Parser, split_superframe

UAPI = Path("/usr/include/linux")


# --- the numbers and structs, against the C compiler ------------------------------------


@pytest.mark.skipif(shutil.which("cc") is None or not (UAPI / "media.h").exists(),
                    reason="needs a C compiler and the uapi headers (linux-libc-dev)")
def test_numbers_and_structs_agree_with_the_c_compiler(tmp_path: Path) -> None:
    source = tmp_path / "numbers.c"
    source.write_text("""
#include <stddef.h>
#include <stdio.h>
#include <linux/media.h>
#include <linux/videodev2.h>
#include <linux/v4l2-controls.h>
#define U(x) ((unsigned long)(x))
int main(void)
{
    printf("%lu %lu %lu %lu\\n", U(MEDIA_IOC_REQUEST_ALLOC), U(MEDIA_REQUEST_IOC_QUEUE),
           U(MEDIA_REQUEST_IOC_REINIT), U(MEDIA_INTF_T_V4L_VIDEO));
    printf("%lu %lu %lu %lu %lu\\n", U(V4L2_CTRL_WHICH_REQUEST_VAL),
           U(V4L2_BUF_FLAG_REQUEST_FD), U(V4L2_BUF_FLAG_IN_REQUEST),
           U(V4L2_BUF_CAP_SUPPORTS_REQUESTS), U(V4L2_CID_STATELESS_VP9_FRAME));
    printf("%lu %lu %lu\\n", U(V4L2_PIX_FMT_VP9_FRAME), U(V4L2_PIX_FMT_H264_SLICE),
           U(V4L2_PIX_FMT_NV12));
    printf("%lu %lu %lu %lu %lu %lu\\n", U(VIDIOC_S_EXT_CTRLS),
           sizeof(struct v4l2_ext_controls), offsetof(struct v4l2_ext_controls, which),
           offsetof(struct v4l2_ext_controls, request_fd),
           offsetof(struct v4l2_ext_controls, controls), sizeof(struct v4l2_ext_control));
    printf("%lu %lu %lu\\n", offsetof(struct v4l2_ext_control, size),
           offsetof(struct v4l2_ext_control, ptr), sizeof(struct v4l2_ctrl_vp9_frame));
    printf("%lu %lu %lu %lu\\n", U(VIDIOC_QBUF), sizeof(struct v4l2_buffer),
           offsetof(struct v4l2_buffer, flags), offsetof(struct v4l2_buffer, request_fd));
    return 0;
}
""")
    exe = tmp_path / "numbers"
    subprocess.run(["cc", "-o", str(exe), str(source)], check=True, capture_output=True)
    lines = [[int(v) for v in line.split()] for line in subprocess.run(
        [str(exe)], check=True, capture_output=True, text=True).stdout.splitlines()]
    assert lines[0] == [MEDIA_IOC_REQUEST_ALLOC, MEDIA_REQUEST_IOC_QUEUE,
                        MEDIA_REQUEST_IOC_REINIT, client.MEDIA_INTF_T_V4L_VIDEO]
    assert lines[1] == [V4L2_CTRL_WHICH_REQUEST_VAL, V4L2_BUF_FLAG_REQUEST_FD,
                        client.V4L2_BUF_FLAG_IN_REQUEST, client.V4L2_BUF_CAP_SUPPORTS_REQUESTS,
                        vp9_ctrls.V4L2_CID_STATELESS_VP9_FRAME]
    assert lines[2] == [int.from_bytes(code.encode(), "little") for code in (
        client.V4L2_PIX_FMT_VP9_FRAME, client.V4L2_PIX_FMT_H264_SLICE, client.V4L2_PIX_FMT_NV12)]
    ext = raw.v4l2_ext_controls
    assert lines[3] == [raw.IOC.S_EXT_CTRLS & 0xFFFFFFFF, ctypes.sizeof(ext),
                        ext.m1.offset, ext.request_fd.offset, ext.controls.offset,
                        ctypes.sizeof(raw.v4l2_ext_control)]
    one = raw.v4l2_ext_control
    assert lines[4] == [one.size.offset, one.m1.offset, vp9_ctrls.FRAME_SIZE]
    buf = raw.v4l2_buffer
    assert lines[5] == [raw.IOC.QBUF & 0xFFFFFFFF, ctypes.sizeof(buf), buf.flags.offset,
                        buf.m2.offset]


def test_ext_controls_point_at_the_payloads_in_the_request() -> None:
    payload = bytes(range(168))
    ctrls, _array, _keep = ext_controls([(vp9_ctrls.V4L2_CID_STATELESS_VP9_FRAME, payload),
                                         (0x00A40A2D, b"\x07" * 5)], request_fd=42)
    assert (ctrls.which, ctrls.count, ctrls.request_fd) == (V4L2_CTRL_WHICH_REQUEST_VAL, 2, 42)
    seen = [(ctrls.controls[i].id, ctrls.controls[i].size,
             ctypes.string_at(ctrls.controls[i].ptr, ctrls.controls[i].size)) for i in range(2)]
    assert seen == [(0x00A40A2C, 168, payload), (0x00A40A2D, 5, b"\x07" * 5)]
    current, _a, _k = ext_controls([(1, b"x")], request_fd=None)
    assert (current.which, current.request_fd) == (0, 0)  # V4L2_CTRL_WHICH_CUR_VAL


def test_request_timestamps_are_what_the_kernel_keeps_in_nanoseconds() -> None:
    # v4l2_timeval_to_ns(): tv_sec * 10^9 + tv_usec * 10^3 of the QBUF timeval
    assert [request_ns(n) for n in (1, 2, 999_999, 1_000_001)] == [
        1000, 2000, 999_999_000, 1_000_001_000]


def test_decode_class_per_codec() -> None:
    assert decode_for_codec("h264") is H264StatelessDecode
    assert decode_for_codec("vp9") is Vp9StatelessDecode
    assert decode_for_codec("av1") is Av1StatelessDecode
    with pytest.raises(ValueError):
        decode_for_codec("hevc")


# --- the sequence, against a fake kernel ------------------------------------------------

WIDTH, HEIGHT = 320, 240
STRIDE = 384            # wider than the picture: the padding must not reach the output
OUT_SIZE = 1 << 20
CAP_SIZE = STRIDE * HEIGHT * 3 // 2
PAD = 0xEE
U32 = 0xFFFFFFFF
NAMES = {int(getattr(raw.IOC, n)) & U32: n for n in
         ("REQBUFS", "QUERYBUF", "QBUF", "DQBUF", "STREAMON", "STREAMOFF", "S_EXT_CTRLS")}
NAMES |= {MEDIA_IOC_REQUEST_ALLOC: "REQUEST_ALLOC", MEDIA_REQUEST_IOC_QUEUE: "REQUEST_QUEUE",
          MEDIA_REQUEST_IOC_REINIT: "REQUEST_REINIT"}


def offset_of(buf_type: int, index: int) -> int:
    return index * OUT_SIZE if buf_type == OUTPUT else 8 * OUT_SIZE + index * mmap.PAGESIZE * (
        -(-CAP_SIZE // mmap.PAGESIZE))


@dataclass
class FakeRequest:
    fd: int
    ctrls: dict[int, bytes] = field(default_factory=dict)
    buffer: tuple[int, int, bytes] | None = None   # OUTPUT index, timestamp (us), bytes
    state: str = "idle"


@dataclass
class Done:
    index: int
    flags: int
    timestamp: int


class FakeStateless:
    """The stateless node, its media device and the daemon behind them (module doc)."""

    def __init__(self) -> None:
        self.memfd = os.memfd_create("fake-stateless")
        os.ftruncate(self.memfd, offset_of(CAPTURE, 8))
        self.media_fd = os.open(os.devnull, os.O_RDONLY)
        self.calls: list[tuple[str, dict[str, int]]] = []
        self.requests: dict[int, FakeRequest] = {}
        self.current: dict[int, bytes] = {}   # S_EXT_CTRLS outside requests
        self.counts = {OUTPUT: 0, CAPTURE: 0}
        self.capture_ready: list[int] = []
        self.done: dict[int, list[Done]] = {OUTPUT: [], CAPTURE: []}
        self.parser = Vp9Parser()
        self.refs = Vp9RefSlots()
        self.problems: list[tuple[int, list[str]]] = []
        self.fail: set[int] = set()   # request timestamps whose decode "fails"

    def close(self) -> None:
        os.close(self.memfd)
        os.close(self.media_fd)
        for request in self.requests.values():
            try:
                os.close(request.fd)
            except OSError:
                pass

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def ioctl(self, fd: int, request: int, arg: Any = 0) -> None:
        name = NAMES[int(request) & U32]
        seen: dict[str, int] = {}
        self.calls.append((name, seen))
        getattr(self, name.lower())(fd, arg, seen)

    # V4L2 queue ioctls
    def reqbufs(self, fd: int, rb: Any, seen: dict[str, int]) -> None:
        seen |= {"type": rb.type, "count": rb.count, "memory": rb.memory}
        rb.count = min(rb.count, 8)
        self.counts[rb.type] = rb.count

    def querybuf(self, fd: int, buf: Any, seen: dict[str, int]) -> None:
        seen |= {"type": buf.type, "index": buf.index}
        buf.m.planes[0].length = OUT_SIZE if buf.type == OUTPUT else CAP_SIZE
        buf.m.planes[0].m.mem_offset = offset_of(buf.type, buf.index)

    def streamon(self, fd: int, arg: Any, seen: dict[str, int]) -> None:
        seen["type"] = arg.value

    def streamoff(self, fd: int, arg: Any, seen: dict[str, int]) -> None:
        seen["type"] = arg.value

    def qbuf(self, fd: int, buf: Any, seen: dict[str, int]) -> None:
        plane = buf.m.planes[0]
        seen |= {"type": buf.type, "index": buf.index, "flags": buf.flags,
                 "request_fd": buf.m2.request_fd, "bytesused": plane.bytesused,
                 "usecs": buf.timestamp.usecs}
        if buf.type == CAPTURE:
            self.capture_ready.append(buf.index)
            return
        request = self.requests.get(buf.m2.request_fd)
        if not buf.flags & V4L2_BUF_FLAG_REQUEST_FD:
            raise OSError(errno.EBADR, "OUTPUT requires requests")
        if request is None or request.buffer is not None:
            raise OSError(errno.EINVAL, "bad request fd")
        data = os.pread(self.memfd, plane.bytesused, offset_of(OUTPUT, buf.index))
        usecs = buf.timestamp.secs * 1_000_000 + buf.timestamp.usecs
        request.buffer = (buf.index, usecs, data)

    def dqbuf(self, fd: int, buf: Any, seen: dict[str, int]) -> None:
        seen["type"] = buf.type
        if not self.done[buf.type]:
            raise BlockingIOError(errno.EAGAIN, "nothing done")
        done = self.done[buf.type].pop(0)
        buf.index = done.index
        buf.flags = done.flags
        buf.timestamp.secs, buf.timestamp.usecs = divmod(done.timestamp, 1_000_000)
        buf.m.planes[0].bytesused = CAP_SIZE if buf.type == CAPTURE else 0

    # controls and requests
    def s_ext_ctrls(self, fd: int, ctrls: Any, seen: dict[str, int]) -> None:
        seen |= {"which": ctrls.which, "request_fd": ctrls.request_fd, "count": ctrls.count}
        if ctrls.which == 0:  # the file's current values (the format control, at set-up)
            target = self.current
        else:
            assert ctrls.which == V4L2_CTRL_WHICH_REQUEST_VAL
            target = self.requests[ctrls.request_fd].ctrls
        for i in range(ctrls.count):
            one = ctrls.controls[i]
            seen |= {"id": one.id, "size": one.size}
            target[one.id] = ctypes.string_at(one.ptr, one.size)

    def request_alloc(self, fd: int, out: Any, seen: dict[str, int]) -> None:
        assert fd == self.media_fd
        request = FakeRequest(os.open(os.devnull, os.O_RDONLY))
        self.requests[request.fd] = request
        out.value = request.fd
        seen["fd"] = request.fd

    def request_reinit(self, fd: int, arg: Any, seen: dict[str, int]) -> None:
        seen["fd"] = fd
        request = self.requests[fd]
        if request.state == "queued":
            raise OSError(errno.EBUSY, "queued")
        self.requests[fd] = FakeRequest(fd)

    def request_queue(self, fd: int, arg: Any, seen: dict[str, int]) -> None:
        seen["fd"] = fd
        request = self.requests[fd]
        if request.buffer is None or vp9_ctrls.V4L2_CID_STATELESS_VP9_FRAME not in request.ctrls:
            raise OSError(errno.ENOENT, "required configuration missing")
        request.state = "completed"
        index, usecs, data = request.buffer
        ctrl = vp9_ctrls.Vp9Frame.unpack(request.ctrls[vp9_ctrls.V4L2_CID_STATELESS_VP9_FRAME])
        problems = check(ctrl, data, self.refs, self.parser)
        if problems:
            self.problems.append((usecs, problems))
        h = self.parser.parse_and_advance(data)
        self.refs.update(h.refresh_frame_flags, usecs * 1000)
        cap = self.capture_ready.pop(0)
        flags = raw.BufferFlag.ERROR if usecs in self.fail or problems else 0
        self.picture(cap, usecs)
        self.done[OUTPUT].append(Done(index, int(flags), usecs))
        self.done[CAPTURE].append(Done(cap, int(flags), usecs))

    def picture(self, index: int, number: int) -> None:
        """Request *number*'s "picture": *number* in every visible luma sample,
        128 + *number* in the visible chroma, PAD in the row padding."""
        rows = bytearray([PAD]) * CAP_SIZE
        for row in range(HEIGHT * 3 // 2):
            value = number & 0xFF if row < HEIGHT else (128 + number) & 0xFF
            rows[row * STRIDE:row * STRIDE + WIDTH] = bytes([value]) * WIDTH
        os.pwrite(self.memfd, bytes(rows), offset_of(CAPTURE, index))


class FakeNode(M2MNode):
    """The node's calls the decode makes besides the queue ioctls."""

    def __init__(self, kernel: FakeStateless) -> None:  # no open(2) of a device
        self.path = Path("/dev/fake-stateless")
        self.fd = os.dup(kernel.memfd)      # the buffers are mapped from it
        self.out: PixFormat | None = None

    def check_m2m(self) -> None:
        pass

    def formats(self, buf_type: int) -> list[str]:
        return ["VP9F", "S264", "AV1F"] if buf_type == OUTPUT else ["NV12"]

    def set_output_format(self, code: str, width: int, height: int,
                          sizeimage: int = 0) -> PixFormat:
        self.out = PixFormat(code, width, height, 1, 0, OUT_SIZE, 0)
        return self.out

    def g_fmt(self, buf_type: int) -> PixFormat:
        assert buf_type == CAPTURE and self.out is not None  # after S_FMT(OUTPUT)
        return PixFormat("NV12", self.out.width, self.out.height, 1, STRIDE, CAP_SIZE, 0)

    def poll(self, timeout: float) -> int:
        return select.POLLIN


F = TypeVar("F", bound=FakeStateless)


def install(monkeypatch: pytest.MonkeyPatch, fake: F) -> F:
    """*fake* in place of the ioctls of the V4L2 layer and of the client, its
    requests' state in place of waiting on a request's fd."""
    monkeypatch.setattr(v4l2, "_ioctl", fake.ioctl)
    monkeypatch.setattr(client, "_ioctl", fake.ioctl)
    monkeypatch.setattr(MediaRequest, "wait",
                        lambda self, timeout: fake.requests[self.fd].state == "completed")
    return fake


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeStateless]:
    fake = install(monkeypatch, FakeStateless())
    yield fake
    fake.close()


def run_decode(kernel: FakeStateless, name: str, buffers: int,
               packets: int | None = None) -> tuple[Vp9StatelessDecode, list[Frame]]:
    info, stream = open_stream(corpus.path(name))
    assert (info.codec, info.width, info.height) == ("vp9", WIDTH, HEIGHT)
    items = ((p.index, p.data) for i, p in enumerate(stream) if packets is None or i < packets)
    frames: list[Frame] = []
    node = FakeNode(kernel)
    decode = Vp9StatelessDecode(node, kernel.media_fd, items, frames.append, buffers=buffers,
                                timeout=1.0)
    try:
        decode.run()
    finally:
        node.close()
    return decode, frames


def test_each_frame_is_one_request_in_the_documented_order(kernel: FakeStateless) -> None:
    decode, frames = run_decode(kernel, "vp9-320x240", buffers=1, packets=2)
    assert kernel.names() == [
        "S_EXT_CTRLS", "REQBUFS", "QUERYBUF", "REQBUFS", "QUERYBUF", "STREAMON", "STREAMON",
        "REQUEST_ALLOC", "S_EXT_CTRLS", "QBUF", "QBUF", "REQUEST_QUEUE", "DQBUF", "DQBUF",
        "REQUEST_REINIT", "S_EXT_CTRLS", "QBUF", "QBUF", "REQUEST_QUEUE", "DQBUF", "DQBUF",
        "STREAMOFF", "REQBUFS", "STREAMOFF", "REQBUFS"]
    calls = [seen for _, seen in kernel.calls]
    # the frame header set as the file's value before CAPTURE is set up: CAPTURE's
    # pixel format follows it (dev-stateless-decoder.rst)
    assert calls[0] == {"which": 0, "request_fd": 0, "count": 1,
                        "id": vp9_ctrls.V4L2_CID_STATELESS_VP9_FRAME,
                        "size": vp9_ctrls.FRAME_SIZE}
    assert vp9_ctrls.V4L2_CID_STATELESS_VP9_FRAME in kernel.current
    request_fd = calls[7]["fd"]
    assert calls[1] == {"type": OUTPUT, "count": 1, "memory": v4l2.MMAP}
    assert calls[3] == {"type": CAPTURE, "count": 1, "memory": v4l2.MMAP}
    sizes = [len(p.data) for p in open_stream(corpus.path("vp9-320x240"))[1]][:2]
    for first, number in ((8, 1), (15, 2)):
        ctrl, out, cap, queue = calls[first], calls[first + 1], calls[first + 2], calls[first + 3]
        assert ctrl == {"which": V4L2_CTRL_WHICH_REQUEST_VAL, "request_fd": request_fd,
                        "count": 1, "id": vp9_ctrls.V4L2_CID_STATELESS_VP9_FRAME,
                        "size": vp9_ctrls.FRAME_SIZE}
        assert (out["type"], out["flags"], out["request_fd"], out["usecs"], out["bytesused"]) \
            == (OUTPUT, V4L2_BUF_FLAG_REQUEST_FD, request_fd, number, sizes[number - 1])
        assert (cap["type"], cap["flags"]) == (CAPTURE, 0)  # CAPTURE: no request
        assert queue == {"fd": request_fd}
    assert calls[14] == {"fd": request_fd}  # REINIT of the same request
    assert [f.timestamp for f in frames] == [1, 2]
    assert decode.stats.frames == 2 and decode.stats.errors == []


@pytest.mark.skipif(not have_ffprobe(), reason="needs Debian's ffprobe")
def test_altref_clip_hidden_frame_is_decoded_not_output(kernel: FakeStateless) -> None:
    name = "vp9-320x240-altref"
    decode, frames = run_decode(kernel, name, buffers=4)
    frames_in_file = [f for p in open_stream(corpus.path(name))[1]
                      for f in split_superframe(p.data)]
    shown = len(probe_frames(corpus.path(name)))
    # every control agreed with its frame and named the references the slots hold
    assert kernel.problems == []
    assert decode.stats.requests == len(frames_in_file) == shown + 1
    assert (decode.stats.frames, decode.stats.hidden) == (shown, 1)
    hidden = sorted(set(range(1, len(frames_in_file) + 1)) - {f.timestamp for f in frames})
    assert len(hidden) == 1
    luma = WIDTH * HEIGHT
    for frame in frames:  # cropped: the request's samples only, no padding
        n = frame.timestamp
        assert len(frame.data) == luma * 3 // 2
        assert frame.data == bytes([n & 0xFF]) * luma + bytes([(128 + n) & 0xFF]) * (luma // 2)
    # requests 1..4 were allocated once each, then reinitialized
    allocs = kernel.names().count("REQUEST_ALLOC")
    assert allocs == 4 and kernel.names().count("REQUEST_REINIT") == len(frames_in_file) - 4


def test_a_buffer_in_error_is_counted_and_not_output(kernel: FakeStateless) -> None:
    kernel.fail = {3}
    decode, frames = run_decode(kernel, "vp9-320x240", buffers=2, packets=5)
    assert decode.stats.errors == [3]
    assert [f.timestamp for f in frames] == [1, 2, 4, 5]


def test_the_fake_refuses_what_the_node_refuses(kernel: FakeStateless) -> None:
    """The guest test's two refusals, here to pin the fake to the node's rules."""
    node = FakeNode(kernel)
    try:
        queue = client.RequestQueue(node.fd, OUTPUT)
        queue.request(1)
        with pytest.raises(OSError) as info:
            queue.queue(0, b"frame", 1)  # phase 8.5's QBUF: no request
        assert info.value.errno == errno.EBADR
        request = MediaRequest(kernel.media_fd)
        queue.queue_in_request(0, b"frame", 1, request.fd)
        with pytest.raises(OSError) as info:
            request.queue()  # no VP9 frame control
        assert info.value.errno == errno.ENOENT
        queue.release()
    finally:
        node.close()


# --- the command, where it needs no node --------------------------------------------------


def run_command(*argv: str) -> int:
    import argparse

    from daedalus.stateless.cli import StatelessDecodeCommand

    command = StatelessDecodeCommand()
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return command.run(parser.parse_args(list(argv)))


def test_command_takes_h264_then_wants_the_node(capsys: pytest.CaptureFixture[str],
                                                tmp_path: Path) -> None:
    """H.264 is driven now: without the node the command says so (no refusal)."""
    from daedalus.m2m.status import DecodeExit

    status = run_command(str(corpus.path("h264-high-320x240")), "--device",
                         str(tmp_path / "video9"), "--media", str(tmp_path / "media9"))
    assert status == DecodeExit.NO_DEVICE
    assert "video9" in capsys.readouterr().err


def test_command_without_the_node_is_no_device(capsys: pytest.CaptureFixture[str],
                                               tmp_path: Path) -> None:
    from daedalus.m2m.status import DecodeExit

    status = run_command(str(corpus.path("vp9-320x240")), "--device", str(tmp_path / "video9"),
                         "--media", str(tmp_path / "media9"))
    assert status == DecodeExit.NO_DEVICE
    assert "video9" in capsys.readouterr().err


# --- H.264: the client's requests through the daemon's handler --------------------------


class FakeStatelessH264(FakeStateless):
    """The fake node with the daemon's real handler behind it: each queued request
    becomes a DECODE_REQUEST as daedalus_sl_build makes it (every H.264 control of
    the node, IN_REQUEST for the request's), its buffers memfds; the handler's
    CAPTURE bytes are copied into the node's CAPTURE buffer. ``codec``: the node's
    format, whose every control goes (a dynamic array's ``elems`` its value's count)."""

    codec: Codec = Codec.H264

    def __init__(self) -> None:
        from daedalus.dispatch.loopback import MemfdDevice
        from daedalus.stateless.handler import StatelessHandler

        super().__init__()
        self.handler = StatelessHandler()
        self.device = MemfdDevice()
        self.handler.attach_device(self.device)
        self.cookie = 0
        self.answers: list[int] = []

    def request_queue(self, fd: int, arg: Any, seen: dict[str, int]) -> None:
        from daedalus.proto import (
            CTRL_IN_REQUEST,
            REQUEST_NEW_FRAME,
            PixFmt,
            RequestCtrl,
            RequestDecode,
            pack_request_decode,
            parse_request_decode_resp,
        )
        from daedalus.stateless.handler import CODEC_CTRLS

        seen["fd"] = fd
        request = self.requests[fd]
        assert request.buffer is not None
        request.state = "completed"
        index, usecs, data = request.buffer
        ctrls = tuple(RequestCtrl(cid, CTRL_IN_REQUEST if cid in request.ctrls else 0,
                                  len(value) // spec.size if spec.max_elems > 1 else 1, value)
                      for cid, spec in CODEC_CTRLS[self.codec].items()
                      for value in [request.ctrls.get(cid, bytes(spec.size))])
        self.cookie += 1
        req = RequestDecode(stream_id=1, timestamp=usecs * 1000, codec=self.codec,
                            flags=REQUEST_NEW_FRAME, bitstream_offset=0,
                            bitstream_len=len(data), pixfmt=PixFmt.NV12, width=WIDTH,
                            height=HEIGHT, bytesperline=STRIDE, sizeimage=CAP_SIZE,
                            ctrls=ctrls)
        self.device.add_output(self.cookie, data, index=0)
        self.device.add_capture(self.cookie, CAP_SIZE, index=1)
        resp = parse_request_decode_resp(self.handler.decode_request(pack_request_decode(req),
                                                                     self.cookie))
        written = self.device.remove(self.cookie, 1).written
        self.device.remove(self.cookie, 0)
        self.answers.append(resp.error)
        cap = self.capture_ready.pop(0)
        if not resp.error and written is not None:
            os.pwrite(self.memfd, written[:CAP_SIZE], offset_of(CAPTURE, cap))
        flags = raw.BufferFlag.ERROR if resp.error else 0
        self.done[OUTPUT].append(Done(index, int(flags), usecs))
        self.done[CAPTURE].append(Done(cap, int(flags), usecs))


def decode_through_handler(fake: FakeStatelessH264, decode_class: type[Vp9StatelessDecode],
                           stream: Iterator[Packet]) -> tuple[StatelessStats, list[Frame]]:
    """*stream* decoded by *decode_class* on *fake* (4 buffers each side), which is
    closed after it; the run's stats and the frames the client output."""
    frames: list[Frame] = []
    node = FakeNode(fake)
    try:
        decode = decode_class(node, fake.media_fd, ((p.index, p.data) for p in stream),
                              frames.append, buffers=4, timeout=1.0)
        stats = decode.run()
    finally:
        node.close()
        fake.close()
    return stats, frames


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs Debian's ffmpeg")
def test_h264_client_through_the_handler_is_ffmpegs_decode(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """H264StatelessDecode on a B-frame clip: one request per picture (S_EXT_CTRLS of
    SPS, PPS, DECODE_PARAMS), every answer a picture, and the pictures it outputs
    (display order, cropped NV12) are Debian's ffmpeg's decode byte for byte."""
    from daedalus.m2m.reference import reference_output
    from daedalus.stateless.h264_requests import (
        V4L2_CID_STATELESS_H264_DECODE_PARAMS,
        V4L2_CID_STATELESS_H264_PPS,
        V4L2_CID_STATELESS_H264_SPS,
    )

    fake = install(monkeypatch, FakeStatelessH264())
    path = corpus.path("h264-high-320x240")
    info, stream = open_stream(path)
    assert info.codec == "h264"   # (an Annex-B reader does not parse the size)
    stats, frames = decode_through_handler(fake, H264StatelessDecode, stream)
    want = reference_output(path, "nv12")
    size = WIDTH * HEIGHT * 3 // 2
    assert fake.answers == [0] * 30 and stats.requests == 30 and not stats.errors
    assert [len(f.data) for f in frames] == [size] * 30
    assert b"".join(f.data for f in frames) == want
    sets = [seen for name, seen in fake.calls if name == "S_EXT_CTRLS"]
    # first the SPS alone as the file's value (CAPTURE's format follows it), then per
    # request SPS, PPS, DECODE_PARAMS (the id seen is the last control's)
    assert (sets[0]["which"], sets[0]["count"], sets[0]["id"]) == (
        0, 1, V4L2_CID_STATELESS_H264_SPS)
    assert [seen["id"] for seen in sets[1:]] == [V4L2_CID_STATELESS_H264_DECODE_PARAMS] * 30
    assert [seen["count"] for seen in sets[1:]] == [3] * 30
    assert V4L2_CID_STATELESS_H264_SPS < V4L2_CID_STATELESS_H264_PPS


class FakeStatelessAv1(FakeStatelessH264):
    """The same with the node's AV1 controls."""

    codec = Codec.AV1


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs Debian's ffmpeg")
def test_av1_client_through_the_handler_is_ffmpegs_decode(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """Av1StatelessDecode on a clip with hidden frames and show_existing_frame: the
    SEQUENCE control alone as the file's value first (CAPTURE follows it), then one
    request per frame (SEQUENCE, FRAME, TILE_GROUP_ENTRY), every answer a picture, and
    the pictures it outputs (hidden ones where the stream shows them again, cropped
    NV12) are Debian's ffmpeg's decode byte for byte."""
    from daedalus.m2m.reference import reference_output
    from daedalus.stateless import av1_ctrls

    fake = install(monkeypatch, FakeStatelessAv1())
    path = corpus.path("av1-320x240")
    info, stream = open_stream(path)
    assert (info.codec, info.width, info.height) == ("av1", WIDTH, HEIGHT)
    stats, frames = decode_through_handler(fake, decode_for_codec("av1"), stream)
    want = reference_output(path, "nv12")
    size = WIDTH * HEIGHT * 3 // 2
    shown = len(probe_frames(path))
    assert stats.hidden > 0 and stats.shown_again > 0
    assert stats.requests == shown - stats.shown_again + stats.hidden
    assert fake.answers == [0] * stats.requests and not stats.errors
    assert [len(f.data) for f in frames] == [size] * shown
    assert b"".join(f.data for f in frames) == want
    sets = [seen for name, seen in fake.calls if name == "S_EXT_CTRLS"]
    assert (sets[0]["which"], sets[0]["count"], sets[0]["id"], sets[0]["size"]) == (
        0, 1, av1_ctrls.V4L2_CID_STATELESS_AV1_SEQUENCE, 12)
    # per request SEQUENCE, FRAME, TILE_GROUP_ENTRY (the id / size seen are the last
    # control's: one 16-byte entry, the clip has one tile per frame)
    assert [(seen["count"], seen["id"], seen["size"]) for seen in sets[1:]] == [
        (3, av1_ctrls.V4L2_CID_STATELESS_AV1_TILE_GROUP_ENTRY, 16)] * stats.requests
