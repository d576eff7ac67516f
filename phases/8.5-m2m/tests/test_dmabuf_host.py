"""DMABUF memory and VIDIOC_EXPBUF in the decode client, on the host (no node here).

The V4L2 calls of ``BufferQueue`` go to ``FakeDecoder``, a stand-in for the
node behind a memfd: MMAP buffers are ranges of that memfd (QUERYBUF's
mem_offset), a buffer exported with EXPBUF is a memfd of its own (a
"dma-buf"), and DMABUF buffers are whatever fds QBUF passes. It decodes
like the node, as far as the client can tell: one packet per OUTPUT buffer
(the packet names its frame's size), SOURCE_CHANGE before the first frame
and at a size change (after a LAST buffer), DECODER_CMD STOP ends with a
LAST buffer and EOS, then EPIPE. DMA_BUF_IOCTL_SYNC calls are recorded.
Its CAPTURE format is NV12, rows as long as the picture's; or (``capture``)
P010 as phase 8.8's node gives it (size aligned to 2, rows of 2 bytes a
sample aligned to 4, their padding and the rows past the picture 0xab), or
a format the client does not take.

Checked: the fields BufferQueue puts in QBUF for DMABUF memory and in
EXPBUF; the sync bracket around every CPU access to a dma-buf; the ioctl
numbers against /usr/include/linux/dma-buf.h (and, where a C compiler is
installed, against what it computes from the kernel headers); StatefulDecode
with MMAP, exported and imported CAPTURE buffers and imported OUTPUT
buffers, across resolution changes; the decode command's options; OUTPUT
buffers asked as large as the file's largest packet, and a packet larger
than the node grants refused before anything is queued; P010 CAPTURE (10-bit
streams): frames cropped out of padded rows, each tightly packed as ffmpeg's
``p010le``, through MMAP, exported and imported buffers; the summary line
naming the format and --compare asking ffmpeg for ``p010le``.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import mmap
import os
import re
import select
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np
import pytest
from linuxpy.video import raw

from daedalus.m2m import cli, dmabuf, v4l2
from daedalus.m2m.cli import DecodeCommand
from daedalus.m2m.dmabuf import (
    DMA_BUF_IOCTL_SYNC,
    DMA_BUF_SYNC_END,
    DMA_BUF_SYNC_READ,
    DMA_BUF_SYNC_START,
    DMA_BUF_SYNC_WRITE,
    DmaBuf,
)
from daedalus.m2m.status import DecodeExit
from daedalus.m2m.v4l2 import (
    CAPTURE_FORMATS,
    DMABUF,
    EVENT_EOS,
    EVENT_SOURCE_CHANGE,
    EXPBUF_FLAGS,
    MMAP,
    V4L2_DEC_CMD_STOP,
    BufferQueue,
    DecodeError,
    ExportingContext,
    Frame,
    M2MNode,
    PacketTooLarge,
    StatefulDecode,
    Stats,
    largest_packet,
)
from daedalus.parse import corpus
from daedalus.parse.reference import have_ffprobe, probe_packets
from daedalus.skeleton.v4l2dev import CAPTURE, OUTPUT, PixFormat, fourcc

DMA_BUF_H = Path("/usr/include/linux/dma-buf.h")
FAKE_OUTPUT_MIN = 4096   # the fake node's OUTPUT sizeimage, at least (the node: 1 MiB)
FAKE_OUTPUT_MAX = 8192   # and at most (the node: the coded picture's NV12 size)
PAGE = mmap.PAGESIZE
USERPTR = int(raw.Memory.USERPTR)


def memfd(size: int, name: str = "dma-buf") -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    return fd


def same_file(a: int, b: int) -> bool:
    sa, sb = os.fstat(a), os.fstat(b)
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


# --- the fake node ---------------------------------------------------------------------


@dataclass
class FakeBuffer:
    length: int
    offset: int = 0              # MMAP: where in the node's memfd
    exported: list[int] = field(default_factory=list)  # EXPBUF memfds (the fake's)
    imported: int = -1           # DMABUF: the fake's dup of the fd QBUF passed
    queued: bool = False
    bytesused: int = 0
    flags: int = 0
    timestamp: tuple[int, int] = (0, 0)
    sequence: int = 0


@dataclass
class FakeQueue:
    memory: int = MMAP
    buffers: list[FakeBuffer] = field(default_factory=list)
    queued: list[int] = field(default_factory=list)
    done: list[int] = field(default_factory=list)
    streaming: bool = False
    min_length: int = 0


def frame_bytes(timestamp: int, width: int, height: int) -> bytes:
    """What the fake decodes packet *timestamp* to: NV12 of width x height."""
    size = width * height * 3 // 2
    return ((np.arange(size, dtype=np.uint32) * 7 + timestamp * 31) & 0xFF).astype(
        np.uint8).tobytes()


def p010_frame(timestamp: int, width: int, height: int) -> bytes:
    """What the fake decodes packet *timestamp* to when its CAPTURE is P010:
    tightly packed P010 of width x height (2 bytes a sample, little-endian,
    the 10-bit value in the upper bits), as ffmpeg's p010le is laid out."""
    samples = width * height + 2 * ((width + 1) // 2) * ((height + 1) // 2)
    values = (np.arange(samples, dtype=np.uint32) * 7 + timestamp * 31) & 0x3FF
    return (values << 6).astype("<u2").tobytes()


def p010_buffer(packed: bytes, width: int, height: int, fmt: PixFormat) -> bytes:
    """*packed* laid out by hand in a CAPTURE buffer of *fmt*: luma rows at
    bytesperline, CbCr rows from bytesperline * fmt.height; the rest 0xab."""
    bpl, luma, chroma = fmt.bytesperline, 2 * width, 4 * ((width + 1) // 2)
    buf = bytearray(b"\xab" * fmt.sizeimage)
    for row in range(height):
        buf[row * bpl:row * bpl + luma] = packed[row * luma:(row + 1) * luma]
    base, split = bpl * fmt.height, luma * height
    for row in range((height + 1) // 2):
        buf[base + row * bpl:base + row * bpl + chroma] = packed[
            split + row * chroma:split + (row + 1) * chroma]
    return bytes(buf)


def packet(width: int, height: int) -> bytes:
    return f"{width}x{height};".encode() + bytes(range(40))


class FakeFile:
    """One open of the fake node: its memfd, formats, queues and decoding state."""

    def __init__(self, kernel: FakeDecoder) -> None:
        self.kernel = kernel
        self.fd = memfd(PAGE, "fake-video")
        self.heap = 0
        self.queues = {int(OUTPUT): FakeQueue(), int(CAPTURE): FakeQueue()}
        self.out_fmt = PixFormat("VP90", 16, 16, 1, 0, 4096, 0)
        self.cap_fmt = self.nv12(16, 16)
        self.visible = (16, 16)
        self.events: list[tuple[int, int]] = []
        self.pending: list[tuple[int, int, int]] = []  # (timestamp, width, height)
        self.size: tuple[int, int] | None = None       # the stream's, once known
        self.stale = False       # CAPTURE must be set up again (SOURCE_CHANGE sent)
        self.last_pending = False  # a LAST buffer is owed (size change)
        self.stop = False
        self.drained = False
        self.last_dequeued = False
        self.sequence = 0

    @staticmethod
    def nv12(width: int, height: int) -> PixFormat:
        return PixFormat("NV12", width, height, 1, width, width * height * 3 // 2, 0)

    def capture_format(self, width: int, height: int) -> PixFormat:
        """The CAPTURE format of a width x height stream (the kernel's ``capture``)."""
        code = self.kernel.capture
        if code == "NV12":
            return self.nv12(width, height)
        w, h = width + width % 2, height + height % 2
        bpl = (2 * w + 3) // 4 * 4
        return PixFormat(code, w, h, 1, bpl, bpl * h * 3 // 2, 0)

    def picture(self, timestamp: int, width: int, height: int) -> bytes:
        """Frame *timestamp* as the fake writes it in its CAPTURE buffer."""
        if self.cap_fmt.pixelformat == "NV12":
            return frame_bytes(timestamp, width, height)
        return p010_buffer(p010_frame(timestamp, width, height), width, height, self.cap_fmt)

    def fmt(self, buf_type: int) -> PixFormat:
        return self.out_fmt if buf_type == OUTPUT else self.cap_fmt

    # memory

    def alloc(self, length: int) -> int:
        offset = self.heap
        self.heap += -(-length // PAGE) * PAGE
        os.ftruncate(self.fd, max(self.heap, PAGE))
        return offset

    def read(self, buf: FakeBuffer, queue: FakeQueue, size: int) -> bytes:
        if queue.memory == DMABUF:
            return os.pread(buf.imported, size, 0)
        return os.pread(self.fd, size, buf.offset)

    def write(self, buf: FakeBuffer, queue: FakeQueue, data: bytes) -> None:
        if queue.memory == DMABUF:
            os.pwrite(buf.imported, data, 0)
            return
        if buf.exported and self.kernel.export_only:
            # only the dma-bufs get the frame: a read through the node's mapping
            # would see this instead
            os.pwrite(self.fd, b"\xee" * len(data), buf.offset)
        else:
            os.pwrite(self.fd, data, buf.offset)
        for fd in buf.exported:
            os.pwrite(fd, data, 0)

    def free(self, queue: FakeQueue) -> None:
        for buf in queue.buffers:
            for fd in buf.exported:
                os.close(fd)
            if buf.imported >= 0:
                os.close(buf.imported)
        queue.buffers.clear()
        queue.queued.clear()
        queue.done.clear()

    # decoding

    def pump(self) -> None:
        out = self.queues[int(OUTPUT)]
        cap = self.queues[int(CAPTURE)]
        while out.streaming and out.queued:
            index = out.queued.pop(0)
            buf = out.buffers[index]
            data = self.read(buf, out, buf.bytesused)
            width, height = (int(v) for v in data.split(b";")[0].decode().split("x"))
            ts = buf.timestamp[0] * 1_000_000 + buf.timestamp[1]
            self.pending.append((ts, width, height))
            buf.queued = False
            out.done.append(index)
        while True:
            if self.last_pending:
                if not (cap.streaming and cap.queued):
                    return
                self.finish(cap, last=True)
                self.last_pending = False
                self.events.append((EVENT_SOURCE_CHANGE, 1))
                return
            if self.pending:
                ts, width, height = self.pending[0]
                if (width, height) != self.size:
                    self.cap_fmt = self.capture_format(width, height)
                    self.visible = (width, height)
                    self.stale = True
                    if self.size is None:
                        self.events.append((EVENT_SOURCE_CHANGE, 1))
                    else:
                        self.last_pending = True
                    self.size = (width, height)
                    continue
                if self.stale or not cap.streaming or not cap.queued:
                    return
                self.pending.pop(0)
                self.finish(cap, data=self.picture(ts, width, height), timestamp=ts)
                continue
            if self.stop and not self.drained and not out.queued:
                if self.size is None:
                    self.events.append((EVENT_EOS, 0))
                    self.drained = True
                    return
                if self.stale or not cap.streaming or not cap.queued:
                    return
                self.finish(cap, last=True)
                self.events.append((EVENT_EOS, 0))
                self.drained = True
            return

    def finish(self, cap: FakeQueue, data: bytes = b"", timestamp: int = 0,
               last: bool = False) -> None:
        index = cap.queued.pop(0)
        buf = cap.buffers[index]
        if data:
            self.write(buf, cap, data)
        buf.bytesused = len(data)
        buf.flags = v4l2.BUF_FLAG_LAST if last else 0
        buf.timestamp = divmod(timestamp, 1_000_000)
        buf.sequence = self.sequence
        self.sequence += 1
        buf.queued = False
        cap.done.append(index)

    # ioctls

    def ioctl(self, request: int, arg: Any) -> None:
        kernel = self.kernel
        if request == raw.IOC.REQBUFS:
            self.reqbufs(arg)
        elif request == raw.IOC.CREATE_BUFS:
            kernel.created.append((int(arg.format.type), int(arg.count),
                                   int(arg.format.fmt.pix_mp.plane_fmt[0].sizeimage)))
            queue = self.queues[int(arg.format.type)]
            size = int(arg.format.fmt.pix_mp.plane_fmt[0].sizeimage)
            if arg.memory != MMAP or size < self.fmt(arg.format.type).sizeimage:
                raise OSError(errno.EINVAL, "CREATE_BUFS")
            arg.index = len(queue.buffers)
            for _ in range(arg.count):
                queue.buffers.append(FakeBuffer(size, self.alloc(size)))
        elif request == raw.IOC.G_FMT:
            fmt = self.fmt(arg.type)
            arg.fmt.pix_mp.pixelformat = fourcc(fmt.pixelformat)
            arg.fmt.pix_mp.width, arg.fmt.pix_mp.height = fmt.width, fmt.height
            arg.fmt.pix_mp.num_planes = 1
            arg.fmt.pix_mp.plane_fmt[0].sizeimage = fmt.sizeimage
            arg.fmt.pix_mp.plane_fmt[0].bytesperline = fmt.bytesperline
        elif request == raw.IOC.QUERYBUF:
            buf = self.queues[int(arg.type)].buffers[arg.index]
            arg.m.planes[0].length = buf.length
            arg.m.planes[0].m.mem_offset = buf.offset
        elif request == raw.IOC.EXPBUF:
            kernel.expbufs.append({"type": int(arg.type), "index": int(arg.index),
                                   "plane": int(arg.plane), "flags": int(arg.flags)})
            buf = self.queues[int(arg.type)].buffers[arg.index]
            fd = memfd(buf.length)
            os.pwrite(fd, os.pread(self.fd, buf.length, buf.offset), 0)
            buf.exported.append(fd)
            arg.fd = os.dup(fd)  # the caller's, as EXPBUF's is
        elif request == raw.IOC.QBUF:
            self.qbuf(arg)
        elif request == raw.IOC.DQBUF:
            self.dqbuf(arg)
        elif request in (raw.IOC.STREAMON, raw.IOC.STREAMOFF):
            queue = self.queues[int(arg.value)]
            queue.streaming = request == raw.IOC.STREAMON
            if arg.value == CAPTURE and queue.streaming:
                self.stale = False
            if not queue.streaming:
                for index in queue.queued + queue.done:
                    queue.buffers[index].queued = False
                queue.queued.clear()
                queue.done.clear()
                if arg.value == CAPTURE:
                    self.last_dequeued = False
            self.pump()
        else:
            raise OSError(errno.ENOTTY, f"fake node: ioctl {request:#x}")

    def reqbufs(self, arg: Any) -> None:
        queue = self.queues[int(arg.type)]
        self.kernel.reqbufs.append((int(arg.type), int(arg.count), int(arg.memory)))
        if arg.memory not in (MMAP, DMABUF):
            raise OSError(errno.EINVAL, "REQBUFS: memory")
        if queue.streaming:
            raise OSError(errno.EBUSY, "REQBUFS while streaming")
        self.free(queue)
        queue.memory = int(arg.memory)
        arg.count = min(int(arg.count), 32)
        length = self.fmt(arg.type).sizeimage
        queue.min_length = length
        for _ in range(arg.count):
            queue.buffers.append(FakeBuffer(length, self.alloc(length) if arg.memory == MMAP
                                            else 0))

    def qbuf(self, arg: Any) -> None:
        queue = self.queues[int(arg.type)]
        plane = arg.m.planes[0]
        self.kernel.qbufs.append({"type": int(arg.type), "index": int(arg.index),
                                  "memory": int(arg.memory), "fd": int(plane.m.fd),
                                  "length": int(plane.length),
                                  "bytesused": int(plane.bytesused)})
        if arg.memory != queue.memory or arg.index >= len(queue.buffers):
            raise OSError(errno.EINVAL, "QBUF")
        buf = queue.buffers[arg.index]
        if queue.memory == DMABUF:
            size = os.fstat(plane.m.fd).st_size
            if plane.length != size or size < queue.min_length:
                raise OSError(errno.EINVAL, "QBUF: dma-buf too small")
            if buf.imported >= 0:
                os.close(buf.imported)
            buf.imported = os.dup(plane.m.fd)  # vb2 takes its own reference
            buf.length = size
        if arg.type == OUTPUT:
            buf.bytesused = int(plane.bytesused)
            buf.timestamp = (int(arg.timestamp.secs), int(arg.timestamp.usecs))
        buf.queued = True
        queue.queued.append(int(arg.index))
        self.pump()

    def dqbuf(self, arg: Any) -> None:
        queue = self.queues[int(arg.type)]
        if arg.memory != queue.memory:
            raise OSError(errno.EINVAL, "DQBUF: memory")
        self.pump()
        if not queue.done:
            if arg.type == CAPTURE and self.last_dequeued:
                raise OSError(errno.EPIPE, "DQBUF after LAST")
            raise OSError(errno.EAGAIN, "DQBUF")
        index = queue.done.pop(0)
        buf = queue.buffers[index]
        arg.index = index
        arg.flags = buf.flags
        arg.sequence = buf.sequence
        arg.timestamp.secs, arg.timestamp.usecs = buf.timestamp
        arg.m.planes[0].bytesused = buf.bytesused
        if queue.memory == DMABUF:
            arg.m.planes[0].m.fd = buf.imported
        if arg.type == CAPTURE and buf.flags & v4l2.BUF_FLAG_LAST:
            self.last_dequeued = True

    def close(self) -> None:
        for queue in self.queues.values():
            self.free(queue)
        os.close(self.fd)


class FakeDecoder:
    """Every open of the fake node, and what the client asked of it."""

    def __init__(self, export_only: bool = False, capture: str = "NV12") -> None:
        self.files: dict[int, FakeFile] = {}
        self.export_only = export_only
        self.capture = capture  # the CAPTURE fourcc a stream gets: NV12, P010 or another
        self.qbufs: list[dict[str, int]] = []
        self.expbufs: list[dict[str, int]] = []
        self.reqbufs: list[tuple[int, int, int]] = []
        self.created: list[tuple[int, int, int]] = []
        self.syncs: list[tuple[int, int]] = []
        self.output_sizeimage: list[int] = []  # what S_FMT(OUTPUT) asked for

    def open(self) -> FakeNode:
        f = FakeFile(self)
        self.files[f.fd] = f
        return FakeNode(f)

    def ioctl(self, fd: int, request: int, arg: Any) -> None:
        if fd not in self.files:
            raise OSError(errno.EBADF, "not a fake node")
        self.files[fd].ioctl(request, arg)

    def sync(self, fd: int, request: int, arg: Any) -> None:
        assert request == DMA_BUF_IOCTL_SYNC
        os.fstat(fd)  # an open fd
        self.syncs.append((fd, int(arg.flags)))


class FakeNode(M2MNode):
    """M2MNode's calls that StatefulDecode and ExportingContext make, on a FakeFile."""

    def __init__(self, f: FakeFile) -> None:  # no open(2)
        self.file = f
        self.path = Path(f"/dev/fake-video{f.fd}")
        self.fd = f.fd

    def close(self) -> None:
        if self.fd >= 0:
            self.file.kernel.files.pop(self.fd)
            self.file.close()
            self.fd = -1

    def check_m2m(self) -> None:
        pass

    def formats(self, buf_type: int) -> list[str]:
        return ["VP90"] if buf_type == OUTPUT else ["NV12"]

    def set_output_format(self, code: str, width: int, height: int,
                          sizeimage: int = 0) -> PixFormat:
        """Clamps sizeimage as the node does, here to [FAKE_OUTPUT_MIN, FAKE_OUTPUT_MAX]."""
        self.file.kernel.output_sizeimage.append(sizeimage)
        granted = min(max(sizeimage, FAKE_OUTPUT_MIN), FAKE_OUTPUT_MAX)
        self.file.out_fmt = PixFormat(code, width, height, 1, 0, granted, 0)
        return self.file.out_fmt

    def g_fmt(self, buf_type: int) -> PixFormat:
        return self.file.fmt(buf_type)

    def visible_rect(self) -> tuple[int, int, int, int]:
        return 0, 0, *self.file.visible

    def subscribe(self, event_type: int) -> None:
        pass

    def dequeue_event(self) -> tuple[int, int] | None:
        self.file.pump()
        return self.file.events.pop(0) if self.file.events else None

    def decoder_cmd(self, cmd: int) -> None:
        assert cmd == V4L2_DEC_CMD_STOP
        self.file.stop = True
        self.file.pump()

    def poll(self, timeout: float) -> int:
        return select.POLLIN


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDecoder]:
    fake = FakeDecoder()
    monkeypatch.setattr(v4l2, "_ioctl", fake.ioctl)
    monkeypatch.setattr(dmabuf, "_ioctl", fake.sync)
    yield fake
    for f in list(fake.files.values()):
        f.close()


# --- the ioctl numbers -------------------------------------------------------------------


def header_defines(path: Path) -> dict[str, str]:
    out = {}
    for m in re.finditer(r"^#define\s+(\w+)\s+(.+?)\s*$", path.read_text(), re.M):
        out[m[1]] = m[2]
    return out


def evaluate(expr: str, names: dict[str, int]) -> int:
    """A C constant expression of numbers, shifts, ors and names already known."""
    text = re.sub(r"\b[A-Z_][A-Z0-9_]*\b", lambda m: str(names[m[0]]), expr)
    assert re.fullmatch(r"[\d\s()<|x]+", text), text
    return int(eval(text))  # only digits, parentheses, << and |


@pytest.mark.skipif(not DMA_BUF_H.exists(), reason=f"no {DMA_BUF_H} (linux-libc-dev)")
def test_dma_buf_numbers_are_linux_dma_buf_h() -> None:
    defines = header_defines(DMA_BUF_H)
    flags: dict[str, int] = {}
    for name in ("DMA_BUF_SYNC_READ", "DMA_BUF_SYNC_WRITE", "DMA_BUF_SYNC_START",
                 "DMA_BUF_SYNC_END"):
        flags[name] = evaluate(defines[name], flags)
    assert flags == {"DMA_BUF_SYNC_READ": DMA_BUF_SYNC_READ,
                     "DMA_BUF_SYNC_WRITE": DMA_BUF_SYNC_WRITE,
                     "DMA_BUF_SYNC_START": DMA_BUF_SYNC_START,
                     "DMA_BUF_SYNC_END": DMA_BUF_SYNC_END}
    assert defines["DMA_BUF_BASE"] == f"'{dmabuf.DMA_BUF_BASE}'"
    m = re.fullmatch(r"_IOW\((\w+),\s*(\d+),\s*struct (\w+)\)", defines["DMA_BUF_IOCTL_SYNC"])
    assert m and m[1] == "DMA_BUF_BASE" and m[3] == "dma_buf_sync"
    members = re.search(r"struct dma_buf_sync \{(.*?)\};", DMA_BUF_H.read_text(), re.S)
    assert members is not None
    fields = re.findall(r"^\s*(__u\d+)\s+(\w+);", members[1], re.M)
    assert fields == [("__u64", "flags")]  # 8 bytes: dma_buf_sync's only member
    assert DMA_BUF_IOCTL_SYNC == dmabuf._iow(dmabuf.DMA_BUF_BASE, int(m[2]), 8) == 0x40086200


@pytest.mark.skipif(shutil.which("cc") is None or not DMA_BUF_H.exists(),
                    reason="needs a C compiler and the kernel's uapi headers")
def test_numbers_and_structs_agree_with_the_c_compiler(tmp_path: Path) -> None:
    source = tmp_path / "numbers.c"
    source.write_text("""
#include <stddef.h>
#include <stdio.h>
#include <fcntl.h>
#include <linux/dma-buf.h>
#include <linux/videodev2.h>
int main(void)
{
    printf("%lu %d %d %d %d\\n", (unsigned long)DMA_BUF_IOCTL_SYNC, DMA_BUF_SYNC_START,
           DMA_BUF_SYNC_END, DMA_BUF_SYNC_READ, DMA_BUF_SYNC_WRITE);
    printf("%lu %lu %lu %lu %d %d\\n", (unsigned long)VIDIOC_EXPBUF,
           (unsigned long)VIDIOC_CREATE_BUFS, sizeof(struct v4l2_exportbuffer),
           offsetof(struct v4l2_exportbuffer, fd), V4L2_MEMORY_DMABUF, O_CLOEXEC | O_RDWR);
    printf("%lu %lu\\n", offsetof(struct v4l2_plane, m.fd), sizeof(struct dma_buf_sync));
    return 0;
}
""")
    exe = tmp_path / "numbers"
    subprocess.run(["cc", "-o", str(exe), str(source)], check=True, capture_output=True)
    lines = subprocess.run([str(exe)], check=True, capture_output=True,
                           text=True).stdout.splitlines()
    assert [int(v) for v in lines[0].split()] == [
        DMA_BUF_IOCTL_SYNC, DMA_BUF_SYNC_START, DMA_BUF_SYNC_END, DMA_BUF_SYNC_READ,
        DMA_BUF_SYNC_WRITE]
    expbuf, create_bufs, size, fd_at, memory, flags = (int(v) for v in lines[1].split())
    assert expbuf == raw.IOC.EXPBUF & 0xFFFFFFFF
    assert create_bufs == raw.IOC.CREATE_BUFS & 0xFFFFFFFF
    assert (size, fd_at) == (ctypes.sizeof(raw.v4l2_exportbuffer),
                             raw.v4l2_exportbuffer.fd.offset)
    assert (memory, flags) == (DMABUF, EXPBUF_FLAGS)
    plane_fd, sync_size = (int(v) for v in lines[2].split())
    assert plane_fd == raw.v4l2_plane.m.offset + type(raw.v4l2_plane().m).fd.offset
    assert sync_size == ctypes.sizeof(dmabuf.dma_buf_sync)


# --- BufferQueue ------------------------------------------------------------------------


def test_qbuf_of_an_imported_capture_buffer_passes_its_fd_and_size(
        kernel: FakeDecoder) -> None:
    node = kernel.open()
    queue = BufferQueue(node.fd, CAPTURE)
    assert queue.request(2, DMABUF) == 2
    assert kernel.reqbufs == [(CAPTURE, 2, DMABUF)]
    theirs = [memfd(5 * PAGE), memfd(6 * PAGE)]
    for index, fd in enumerate(theirs):
        queue.attach(index, fd)
        os.close(fd)  # the queue keeps a dup
    assert queue.lengths == [5 * PAGE, 6 * PAGE]
    queue.queue(1)
    queue.queue(0)
    got = kernel.qbufs
    assert [(q["index"], q["memory"], q["length"], q["bytesused"]) for q in got] == [
        (1, DMABUF, 6 * PAGE, 0), (0, DMABUF, 5 * PAGE, 0)]
    dup = queue.dmabufs[1]
    assert dup is not None and got[0]["fd"] == dup.fd
    queue.release()
    assert kernel.reqbufs[-1] == (CAPTURE, 0, DMABUF)
    with pytest.raises(OSError):
        os.fstat(got[0]["fd"])  # the dups are closed with the buffers
    node.close()


def test_qbuf_of_an_imported_output_buffer_writes_through_the_dma_buf(
        kernel: FakeDecoder) -> None:
    node = kernel.open()
    queue = BufferQueue(node.fd, OUTPUT)
    assert queue.request(1, DMABUF) == 1
    theirs = memfd(4096)
    queue.attach(0, theirs)
    kernel.syncs.clear()
    queue.queue(0, packet(16, 16), timestamp=3_000_007)
    assert os.pread(theirs, len(packet(16, 16)), 0) == packet(16, 16)
    dup = queue.dmabufs[0]
    assert dup is not None
    assert kernel.syncs == [(dup.fd, DMA_BUF_SYNC_START | DMA_BUF_SYNC_WRITE),
                            (dup.fd, DMA_BUF_SYNC_END | DMA_BUF_SYNC_WRITE)]
    q = kernel.qbufs[-1]
    assert (q["memory"], q["fd"], q["length"], q["bytesused"]) == (
        DMABUF, dup.fd, 4096, len(packet(16, 16)))
    queue.release()
    os.close(theirs)
    node.close()


def test_attach_needs_a_dmabuf_queue_and_queue_needs_an_attached_buffer(
        kernel: FakeDecoder) -> None:
    node = kernel.open()
    queue = BufferQueue(node.fd, CAPTURE)
    queue.request(1)
    fd = memfd(PAGE)
    with pytest.raises(ValueError, match="DMABUF"):
        queue.attach(0, fd)
    queue.request(1, DMABUF)
    with pytest.raises(ValueError, match="no dma-buf attached"):
        queue.queue(0)
    os.close(fd)
    queue.release()
    node.close()


def test_expbuf_asks_for_plane_0_cloexec_rdwr(kernel: FakeDecoder) -> None:
    node = kernel.open()
    queue = BufferQueue(node.fd, CAPTURE)
    assert queue.request(3) == 3
    fd = queue.export(2)
    assert kernel.expbufs == [{"type": CAPTURE, "index": 2, "plane": 0,
                               "flags": os.O_CLOEXEC | os.O_RDWR}]
    assert same_file(fd, node.file.queues[CAPTURE].buffers[2].exported[0])
    os.close(fd)  # the caller's
    queue.release()
    node.close()


def test_reads_through_a_dma_buf_are_bracketed_by_sync(kernel: FakeDecoder) -> None:
    node = kernel.open()
    queue = BufferQueue(node.fd, CAPTURE)
    queue.request(2)
    queue.read_through_exports()
    views = [d for d in queue.dmabufs if d is not None]
    assert len(views) == 2 and len(kernel.expbufs) == 2
    os.pwrite(node.file.queues[CAPTURE].buffers[1].exported[0], b"frame", 0)
    kernel.syncs.clear()
    with queue.view(1) as view:
        assert kernel.syncs == [(views[1].fd, DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ)]
        assert bytes(view[:5]) == b"frame"
    assert kernel.syncs[-1] == (views[1].fd, DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ)
    assert len(kernel.syncs) == 2
    queue.release()
    assert all(d.fd == -1 for d in views)  # the exported fds are the queue's, closed
    node.close()


def test_mmap_queue_is_as_before(kernel: FakeDecoder) -> None:
    """MMAP: REQBUFS and QBUF with memory MMAP, no fd, no sync; the node's mapping."""
    node = kernel.open()
    queue = BufferQueue(node.fd, OUTPUT)
    assert queue.request(2) == 2 and queue.count == 2
    queue.queue(1, packet(16, 16), 5)
    q = kernel.qbufs[-1]
    assert (q["memory"], q["fd"], q["length"], q["bytesused"]) == (
        MMAP, 0, 4096, len(packet(16, 16)))
    buf = node.file.queues[OUTPUT].buffers[1]
    assert os.pread(node.fd, len(packet(16, 16)), buf.offset) == packet(16, 16)
    with queue.view(1) as view:
        assert bytes(view[:len(packet(16, 16))]) == packet(16, 16)
    assert kernel.syncs == [] and kernel.reqbufs == [(OUTPUT, 2, MMAP)]
    queue.release()
    assert kernel.reqbufs[-1] == (OUTPUT, 0, MMAP)
    node.close()


def test_create_asks_for_the_size_in_the_queues_format(kernel: FakeDecoder) -> None:
    node = kernel.open()
    queue = BufferQueue(node.fd, CAPTURE)
    assert queue.create(3, 3 * PAGE + 5) == 3
    assert kernel.created == [(CAPTURE, 3, 3 * PAGE + 5)]
    assert queue.lengths == [3 * PAGE + 5] * 3 and queue.count == 3
    queue.release()
    node.close()


def test_dmabuf_size_and_mapping(kernel: FakeDecoder) -> None:
    fd = memfd(3 * PAGE)
    buf = DmaBuf(os.dup(fd), owned=True, writable=True)
    assert buf.size == 3 * PAGE
    buf.write(b"abc", 10)
    assert os.pread(fd, 3, 10) == b"abc"
    with pytest.raises(ValueError, match="exceed"):
        buf.write(b"x" * 10, 3 * PAGE - 5)
    buf.close()
    with pytest.raises(ValueError, match="closed"), buf.read():
        pass
    os.close(fd)


def test_sync_is_repeated_on_eagain_and_eintr(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = [errno.EINTR, errno.EAGAIN, 0]
    seen: list[int] = []

    def ioctl(fd: int, request: int, arg: Any) -> None:
        seen.append(int(arg.flags))
        code = answers.pop(0)
        if code:
            raise OSError(code, os.strerror(code))

    monkeypatch.setattr(dmabuf, "_ioctl", ioctl)
    dmabuf.sync(5, DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ)
    assert seen == [DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ] * 3
    monkeypatch.setattr(dmabuf, "_ioctl", lambda fd, request, arg: (_ for _ in ()).throw(
        OSError(errno.EINVAL, "bad")))
    with pytest.raises(OSError):
        dmabuf.sync(5, 0)


# --- StatefulDecode ---------------------------------------------------------------------


SIZES = [(32, 16)] * 5 + [(16, 8)] * 3 + [(48, 32)] * 4  # shrink, then grow


def stream(sizes: list[tuple[int, int]]) -> Iterator[tuple[int, bytes]]:
    return ((index, packet(w, h)) for index, (w, h) in enumerate(sizes))


def expected(sizes: list[tuple[int, int]]) -> list[Frame]:
    return [Frame(w, h, index, False, frame_bytes(index, w, h))
            for index, (w, h) in enumerate(sizes)]


def run_decode(node: FakeNode, sizes: list[tuple[int, int]] = SIZES,
               **options: Any) -> tuple[list[Frame], Stats]:
    frames: list[Frame] = []
    decode = StatefulDecode(node, "VP90", stream(sizes), frames.append, buffers=4,
                            timeout=5, width=32, height=16, **options)
    stats = decode.run()
    return frames, stats


def test_decode_with_mmap_capture(kernel: FakeDecoder) -> None:
    node = kernel.open()
    frames, stats = run_decode(node)
    assert frames == expected(SIZES)
    assert stats.sizes == [(32, 16), (16, 8), (48, 32)] and stats.epipe_after_last
    assert {q["memory"] for q in kernel.qbufs} == {MMAP}
    assert kernel.expbufs == [] and kernel.syncs == []
    node.close()


def test_decode_reading_capture_through_exported_dma_bufs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake writes each frame only into the buffer's exported dma-buf (the
    node's mapping gets 0xee): the frames are right only when read there."""
    fake = FakeDecoder(export_only=True)
    monkeypatch.setattr(v4l2, "_ioctl", fake.ioctl)
    monkeypatch.setattr(dmabuf, "_ioctl", fake.sync)
    node = fake.open()
    frames, stats = run_decode(node, capture_export=True)
    assert frames == expected(SIZES) and stats.epipe_after_last
    assert {q["memory"] for q in fake.qbufs} == {MMAP}
    # every CAPTURE buffer exported at every set-up (3 sizes x 4 buffers)
    assert len(fake.expbufs) == 12
    assert {(e["type"], e["plane"], e["flags"]) for e in fake.expbufs} == {
        (CAPTURE, 0, EXPBUF_FLAGS)}
    reads = [flags for _, flags in fake.syncs]
    assert reads == [DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ,
                     DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ] * len(SIZES)
    node.close()


def test_decode_importing_capture_buffers_exported_by_a_second_context(
        kernel: FakeDecoder) -> None:
    node = kernel.open()
    other = kernel.open()
    asked: list[tuple[int, int]] = []
    with ExportingContext(other) as exporter:

        def source(count: int, sizeimage: int) -> list[int]:
            asked.append((count, sizeimage))
            return exporter.capture(count, sizeimage)

        frames, stats = run_decode(node, capture_from=source)
        assert other.fd >= 0  # an open node handed in is left open
    assert frames == expected(SIZES) and stats.epipe_after_last
    sizes = [w * h * 3 // 2 for w, h in [(32, 16), (16, 8), (48, 32)]]
    assert asked == [(4, size) for size in sizes]  # asked again at each change
    # the shrink reuses the larger buffers; the growth needs new ones
    assert kernel.created == [(CAPTURE, 4, sizes[0]), (CAPTURE, 4, sizes[2])]
    cap = [q for q in kernel.qbufs if q["type"] == CAPTURE]
    assert {q["memory"] for q in cap} == {DMABUF}
    assert all(q["length"] in (sizes[0], sizes[2]) for q in cap)
    assert all(q["fd"] > 0 for q in cap)
    assert [r for r in kernel.reqbufs if r[0] == CAPTURE and r[1]] == [(CAPTURE, 4, DMABUF)] * 3
    reads = [flags for _, flags in kernel.syncs if flags & DMA_BUF_SYNC_READ]
    assert len(reads) == 2 * len(SIZES)
    assert not other.file.queues[CAPTURE].buffers  # freed with the exporting context
    other.close()
    node.close()


def test_decode_importing_output_buffers(kernel: FakeDecoder) -> None:
    node = kernel.open()
    other = kernel.open()
    with ExportingContext(other) as exporter:
        frames, _ = run_decode(node, [(32, 16)] * 6, output_from=exporter.output,
                               capture_from=exporter.capture)
    assert frames == expected([(32, 16)] * 6)
    out = [q for q in kernel.qbufs if q["type"] == OUTPUT]
    assert {q["memory"] for q in out} == {DMABUF} and len(out) == 6
    assert [q["bytesused"] for q in out] == [len(packet(32, 16))] * 6
    writes = [flags for _, flags in kernel.syncs if flags & DMA_BUF_SYNC_WRITE]
    assert writes == [DMA_BUF_SYNC_START | DMA_BUF_SYNC_WRITE,
                      DMA_BUF_SYNC_END | DMA_BUF_SYNC_WRITE] * 6
    assert (OUTPUT, 4, 4096) in kernel.created
    other.close()
    node.close()


def test_a_source_that_gives_too_few_or_too_small_buffers(kernel: FakeDecoder) -> None:
    small = [memfd(64) for _ in range(4)]
    with pytest.raises(DecodeError, match=r"3 dma-bufs were provided for 4 CAPTURE buffers"):
        run_decode(kernel.open(), capture_from=lambda count, size: small[:3])
    with pytest.raises(DecodeError, match=r"has 64 bytes, the format's sizeimage is 768"):
        run_decode(kernel.open(), capture_from=lambda count, size: small)
    for fd in small:
        os.close(fd)


def test_a_node_that_refuses_dmabuf_memory(kernel: FakeDecoder,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    node = kernel.open()
    reqbufs = node.file.reqbufs

    def mmap_only(arg: Any) -> None:
        if arg.memory != MMAP and arg.count:
            raise OSError(errno.EINVAL, "REQBUFS")
        reqbufs(arg)

    monkeypatch.setattr(node.file, "reqbufs", mmap_only)
    with pytest.raises(DecodeError, match=r"REQBUFS\(OUTPUT, DMABUF\) failed with EINVAL"):
        run_decode(node, output_from=lambda count, size: [])
    node.close()


def test_capture_export_and_capture_from_exclude_each_other() -> None:
    with pytest.raises(ValueError, match="exclude"):
        StatefulDecode(cast(M2MNode, None), "VP90", iter(()), lambda frame: None,
                       capture_export=True, capture_from=lambda count, size: [])


def test_exporting_context_sizes_and_reuse(kernel: FakeDecoder) -> None:
    other = kernel.open()
    with ExportingContext(other) as exporter:
        # smaller than the context's own CAPTURE format (16x16 NV12, 384 bytes)
        fds = exporter.capture(2, 100)
        assert kernel.created == [(CAPTURE, 2, 384)]
        assert [os.fstat(fd).st_size for fd in fds] == [384, 384]
        assert exporter.capture(2, 384) == fds and exporter.capture(1, 200) == fds[:1]
        assert len(kernel.created) == 1
        more = exporter.capture(3, 384)
        assert kernel.created[-1] == (CAPTURE, 3, 384) and len(more) == 3
        assert exporter.pools[CAPTURE].fds == more
    assert not other.file.queues[CAPTURE].buffers
    other.close()


def test_exporting_context_says_which_step_failed(kernel: FakeDecoder,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    other = kernel.open()
    ioctl = kernel.ioctl

    def no_expbuf(fd: int, request: int, arg: Any) -> None:
        if request == raw.IOC.EXPBUF:
            raise OSError(errno.ENOTTY, os.strerror(errno.ENOTTY))
        ioctl(fd, request, arg)

    monkeypatch.setattr(v4l2, "_ioctl", no_expbuf)
    with ExportingContext(other) as exporter, pytest.raises(
            DecodeError, match=r"cannot provide 2 CAPTURE buffers of 384 bytes: EXPBUF "
                               r"failed: Inappropriate ioctl"):
        exporter.capture(2, 384)
    assert not other.file.queues[CAPTURE].buffers
    other.close()


# --- the decode command ---------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    DecodeCommand().add_arguments(p)
    return p


def test_decode_options_and_their_help(capsys: pytest.CaptureFixture[str]) -> None:
    args = parser().parse_args(["in.ivf", "-o", "out.yuv"])
    assert (args.capture_io, args.output_io) == ("mmap", "mmap")
    args = parser().parse_args(["in.ivf", "-o", "out.yuv", "--capture-io", "import",
                                "--output-io", "dmabuf"])
    assert (args.capture_io, args.output_io) == ("import", "dmabuf")
    for bad in (["--capture-io", "userptr"], ["--output-io", "export"]):
        with pytest.raises(SystemExit) as info:
            parser().parse_args(["in.ivf", "-o", "out.yuv", *bad])
        assert info.value.code == 2
    capsys.readouterr()
    with pytest.raises(SystemExit):
        parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--capture-io {mmap,export,import}" in text
    assert "--output-io {mmap,dmabuf}" in text
    assert "the node offers MMAP and DMABUF memory, no USERPTR" in text
    doc = " ".join((cli.__doc__ or "").split())
    assert "the node offers MMAP and DMABUF (no USERPTR)" in doc
    assert "offers MMAP and DMABUF memory (no USERPTR)" in " ".join((v4l2.__doc__ or "").split())


class RecordingDecode:
    """Stands in for StatefulDecode: records its options, decodes one frame."""

    seen: ClassVar[dict[str, Any]] = {}

    def __init__(self, node: M2MNode, code: str, packets: object,
                 on_frame: Callable[[Frame], None], **options: Any) -> None:
        RecordingDecode.seen = options
        self.on_frame = on_frame
        self.stats = Stats()

    def run(self) -> Stats:
        self.on_frame(Frame(2, 2, 0, True, bytes(6)))
        self.stats.frames = 1
        self.stats.sizes = [(2, 2)]
        return self.stats


class StubNode:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> StubNode:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def close(self) -> None:
        return None


class StubExporter:
    made: ClassVar[list[StubExporter]] = []

    def __init__(self, node: Path) -> None:
        self.node = node
        self.closed = False
        StubExporter.made.append(self)

    def __enter__(self) -> StubExporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.closed = True

    def capture(self, count: int, sizeimage: int) -> list[int]:
        return []

    def output(self, count: int, sizeimage: int) -> list[int]:
        return []


@pytest.mark.parametrize(("options", "export", "capture", "output"), [
    ([], False, None, None),
    (["--capture-io", "mmap", "--output-io", "mmap"], False, None, None),
    (["--capture-io", "export"], True, None, None),
    (["--capture-io", "import"], False, "capture", None),
    (["--output-io", "dmabuf"], False, None, "output"),
    (["--capture-io", "import", "--output-io", "dmabuf"], False, "capture", "output"),
])
def test_decode_command_hands_the_buffer_options_on(
        options: list[str], export: bool, capture: str | None, output: str | None,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from daedalus.parse import corpus

    monkeypatch.setattr(cli, "M2MNode", StubNode)
    monkeypatch.setattr(cli, "ExportingContext", StubExporter)
    monkeypatch.setattr(cli, "StatefulDecode", RecordingDecode)
    monkeypatch.setattr(cli, "daemon_connected", lambda: True)
    StubExporter.made = []
    args = parser().parse_args([str(corpus.path("vp9-320x240")), "-o",
                                str(tmp_path / "out.yuv"), "--device", "/dev/video-x",
                                *options])
    assert DecodeCommand().run(args) == DecodeExit.OK, capsys.readouterr()
    seen = RecordingDecode.seen
    assert seen["capture_export"] is export
    if capture is None and output is None:
        assert StubExporter.made == []
    else:
        [exporter] = StubExporter.made
        assert exporter.node == Path("/dev/video-x") and exporter.closed
    for key, want in (("capture_from", capture), ("output_from", output)):
        if want is None:
            assert seen[key] is None
        else:
            assert seen[key] == getattr(StubExporter.made[0], want)


def test_decode_command_when_the_second_context_cannot_be_opened(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from daedalus.parse import corpus

    def busy(node: Path) -> None:
        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))

    monkeypatch.setattr(cli, "M2MNode", StubNode)
    monkeypatch.setattr(cli, "ExportingContext", busy)
    args = parser().parse_args([str(corpus.path("vp9-320x240")), "-o",
                                str(tmp_path / "out.yuv"), "--device", "/dev/video-x",
                                "--capture-io", "import"])
    assert DecodeCommand().run(args) == DecodeExit.NO_DEVICE
    assert capsys.readouterr().err == (
        "daedalus-v4l2 decode: cannot open a second context of /dev/video-x to export buffers "
        "from: Device or resource busy\n")


# --- OUTPUT buffers for the largest packet -----------------------------------------------


@pytest.mark.skipif(not have_ffprobe(), reason="needs Debian's ffprobe (apt-get install ffmpeg)")
@pytest.mark.parametrize("name", ["vp9-320x240", "h264-high-320x240", "av1-174x98"])
def test_largest_packet_is_ffprobes(name: str) -> None:
    """IVF, Annex-B and OBU: the index and size of the largest packet, as
    ffprobe's demuxer sees the packets."""
    sizes = [size for _, size in probe_packets(corpus.path(name))]
    assert largest_packet(corpus.path(name)) == (sizes.index(max(sizes)), max(sizes))


def test_output_buffers_are_asked_as_large_as_the_largest_packet(kernel: FakeDecoder) -> None:
    node = kernel.open()
    sizes = [(32, 16)] * 3
    frames, _ = run_decode(node, sizes, largest_packet=(1, 6000))
    assert frames == expected(sizes)
    assert kernel.output_sizeimage == [6000]
    assert node.file.out_fmt.sizeimage == 6000
    node.close()
    node = kernel.open()
    run_decode(node, sizes)  # not known: the node's default
    assert kernel.output_sizeimage[-1] == 0 and node.file.out_fmt.sizeimage == FAKE_OUTPUT_MIN
    node.close()


def test_a_packet_larger_than_the_node_grants_is_refused_before_anything_is_queued(
        kernel: FakeDecoder) -> None:
    node = kernel.open()
    with pytest.raises(PacketTooLarge) as info:
        run_decode(node, [(32, 16)] * 3, largest_packet=(2, FAKE_OUTPUT_MAX + 1))
    assert str(info.value) == (
        f"packet 2 is {FAKE_OUTPUT_MAX + 1} bytes, more than an OUTPUT buffer holds: "
        f"{node.path} grants at most {FAKE_OUTPUT_MAX} bytes for 32x16 VP90; nothing was queued")
    assert kernel.qbufs == []
    node.close()


def test_decode_command_refuses_a_file_with_a_packet_too_large(
        tmp_path: Path, kernel: FakeDecoder, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Packet 3 of vp9-128x96 grown past what the fake node grants: REFUSED,
    one line naming the file, the packet and both sizes; the summary says
    no frame; nothing is queued."""
    big = tmp_path / "big.ivf"
    big.write_bytes(corpus.pad_ivf_packet(corpus.path("vp9-128x96").read_bytes(), 3,
                                          FAKE_OUTPUT_MAX + 1))
    nodes: list[FakeNode] = []

    def open_node(path: Path) -> FakeNode:
        nodes.append(kernel.open())
        return nodes[-1]

    monkeypatch.setattr(cli, "M2MNode", open_node)
    monkeypatch.setattr(cli, "daemon_connected", lambda: True)
    out = tmp_path / "out.yuv"
    args = parser().parse_args([str(big), "-o", str(out), "--device", "/dev/video-x"])
    assert DecodeCommand().run(args) == DecodeExit.REFUSED
    captured = capsys.readouterr()
    assert captured.err == (
        f"daedalus-v4l2 decode: {big}: packet 3 is {FAKE_OUTPUT_MAX + 1} bytes, more than an "
        f"OUTPUT buffer holds: {nodes[0].path} grants at most {FAKE_OUTPUT_MAX} bytes for "
        "128x96 VP90; nothing was queued\n")
    assert captured.out.startswith(f"decode: {big}: 0 frames, no picture, ")
    assert kernel.output_sizeimage == [FAKE_OUTPUT_MAX + 1] and kernel.qbufs == []
    assert out.read_bytes() == b""


# --- P010 CAPTURE (10-bit streams) ---------------------------------------------------------


P010_SIZES = [(33, 17)] * 3 + [(16, 8)] * 2 + [(47, 31)] * 2  # odd sizes, padded rows


def expected_p010(sizes: list[tuple[int, int]]) -> list[Frame]:
    return [Frame(w, h, index, False, p010_frame(index, w, h), "P010")
            for index, (w, h) in enumerate(sizes)]


def p010_sizeimage(width: int, height: int) -> int:
    w, h = width + width % 2, height + height % 2
    return (2 * w + 3) // 4 * 4 * h * 3 // 2


@pytest.mark.parametrize("capture_io", ["mmap", "export", "import"])
def test_p010_capture_is_cropped_out_of_padded_rows_into_packed_frames(
        capture_io: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CAPTURE format G_FMT gives (P010: 33x17 is 34x18 with rows of 68
    bytes, 47x31 is 48x32 with rows of 96) is taken, and every frame comes out
    as tightly packed P010 of the visible size (rows of 2 bytes a sample, no
    padding, no row past the picture), across resolution changes, whether
    CAPTURE is read through the node's mapping, exported dma-bufs or
    imported ones; imported buffers are asked P010's sizeimage."""
    fake = FakeDecoder(export_only=capture_io == "export", capture="P010")
    monkeypatch.setattr(v4l2, "_ioctl", fake.ioctl)
    monkeypatch.setattr(dmabuf, "_ioctl", fake.sync)
    node = fake.open()
    other = fake.open()
    asked: list[int] = []
    with ExportingContext(other) as exporter:

        def source(count: int, sizeimage: int) -> list[int]:
            asked.append(sizeimage)
            return exporter.capture(count, sizeimage)

        frames, stats = run_decode(node, P010_SIZES, capture_export=capture_io == "export",
                                   capture_from=source if capture_io == "import" else None)
    assert frames == expected_p010(P010_SIZES)
    assert [len(f.data) for f in frames[:1]] == [33 * 17 * 2 + 17 * 2 * 9 * 2]
    assert stats.pixfmts == ["P010"] and stats.errors == 0 and stats.epipe_after_last
    assert stats.sizes == [(33, 17), (16, 8), (47, 31)]
    if capture_io == "import":
        assert asked == [p010_sizeimage(w, h) for w, h in stats.sizes] == [1836, 384, 4608]
    else:
        assert asked == []
    other.close()
    node.close()


def test_nv12_frames_say_nv12(kernel: FakeDecoder) -> None:
    node = kernel.open()
    frames, stats = run_decode(node, [(32, 16)] * 2)
    assert {f.pixfmt for f in frames} == {"NV12"} and stats.pixfmts == ["NV12"]
    node.close()


def test_a_capture_format_other_than_nv12_or_p010_is_a_decode_error(
        kernel: FakeDecoder) -> None:
    kernel.capture = "YUYV"
    node = kernel.open()
    with pytest.raises(DecodeError) as info:
        run_decode(node, [(32, 16)] * 2)
    assert str(info.value) == ("CAPTURE format is YUYV; this client writes NV12, P010, NV16 "
                               "or NV24")
    assert sorted(CAPTURE_FORMATS) == ["NV12", "NV16", "NV24", "P010"]
    node.close()


class FramesDecode:
    """Stands in for StatefulDecode: hands out ``frames`` (data, fourcc) of 128x96."""

    frames: ClassVar[list[tuple[bytes, str]]] = []

    def __init__(self, node: M2MNode, code: str, packets: object,
                 on_frame: Callable[[Frame], None], **options: Any) -> None:
        self.on_frame = on_frame
        self.stats = Stats()

    def run(self) -> Stats:
        for index, (data, pixfmt) in enumerate(FramesDecode.frames):
            self.on_frame(Frame(128, 96, index, index == 0, data, pixfmt))
            self.stats.frames += 1
            if pixfmt not in self.stats.pixfmts:
                self.stats.pixfmts.append(pixfmt)
        self.stats.sizes = [(128, 96)]
        return self.stats


@pytest.mark.parametrize(("pixfmt", "pix_fmt"), [("P010", "p010le"), ("NV12", "nv12")])
def test_decode_command_compares_p010_frames_with_ffmpegs_p010le(
        pixfmt: str, pix_fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """--compare of a 10-bit clip's frames: Debian's ffmpeg is asked for
    p010le when they came as P010 (byte-exact, the line names P010) and for
    nv12 when they came as NV12 (the 8-bit line as ever); frames in the other
    layout than ffmpeg's are a MISMATCH."""
    from daedalus.m2m.reference import reference_output

    name = "av1-10bit-128x96"
    path = corpus.path(name)
    want = reference_output(path, pix_fmt)
    size = 128 * 96 * 3 // 2 * (2 if pixfmt == "P010" else 1)
    assert len(want) == 10 * size
    FramesDecode.frames = [(want[i * size:(i + 1) * size], pixfmt) for i in range(10)]
    monkeypatch.setattr(cli, "M2MNode", StubNode)
    monkeypatch.setattr(cli, "StatefulDecode", FramesDecode)
    monkeypatch.setattr(cli, "daemon_connected", lambda: True)
    out = tmp_path / "out.yuv"
    args = parser().parse_args([str(path), "-o", str(out), "--device", "/dev/video-x",
                                "--compare"])
    assert DecodeCommand().run(args) == DecodeExit.OK, capsys.readouterr()
    lines = capsys.readouterr().out.splitlines()
    suffix = f" -> {out} (P010)" if pixfmt == "P010" else f" -> {out}"
    assert lines[0].startswith(f"decode: {path}: 10 frames, 128x96, ")
    assert lines[0].endswith(f" fps, 0 errors{suffix}")
    assert lines[1:] == ["byte-exact: yes"]
    # the same bytes said to be the other format: ffmpeg's other layout differs
    other = "NV12" if pixfmt == "P010" else "P010"
    FramesDecode.frames = [(data, other) for data, _ in FramesDecode.frames]
    assert DecodeCommand().run(args) == DecodeExit.MISMATCH
    assert capsys.readouterr().out.splitlines()[1].startswith("byte-exact: no (")


def test_decode_command_cannot_compare_frames_in_two_formats(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    FramesDecode.frames = [(bytes(128 * 96 * 3 // 2), "NV12"), (bytes(128 * 96 * 3), "P010")]
    monkeypatch.setattr(cli, "M2MNode", StubNode)
    monkeypatch.setattr(cli, "StatefulDecode", FramesDecode)
    monkeypatch.setattr(cli, "daemon_connected", lambda: True)
    out = tmp_path / "out.yuv"
    args = parser().parse_args([str(corpus.path("vp9-128x96")), "-o", str(out), "--device",
                                "/dev/video-x", "--compare"])
    assert DecodeCommand().run(args) == DecodeExit.FAILED
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0].endswith(f" -> {out} (NV12, P010)")
    assert captured.err == ("daedalus-v4l2 decode: frames in NV12 and P010: ffmpeg writes one "
                            "pix_fmt for the whole file, they cannot be compared with it\n")
