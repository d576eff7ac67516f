"""A stateful-decoder client of a V4L2 memory-to-memory node, on linuxpy's raw structs.

The sequence is the kernel's Documentation/userspace-api/media/v4l/dev-decoder.rst,
multi-planar API, one plane per buffer. The node offers MMAP and DMABUF
memory (no USERPTR) on both queues, and VIDIOC_EXPBUF of its MMAP buffers.
The decode uses MMAP by default; CAPTURE can be read through exported
dma-bufs instead, or import DMABUF buffers, and OUTPUT too can import them
(``StatefulDecode``'s options; ``ExportingContext`` is a source of such
buffers: a second open of the node, exporting its own MMAP buffers):

1. S_FMT(OUTPUT) with the coded format; REQBUFS, QUERYBUF and mmap the
   OUTPUT buffers; SUBSCRIBE_EVENT for SOURCE_CHANGE and EOS; STREAMON(OUTPUT);
   queue bitstream, one packet per buffer, its timestamp the packet's index.
2. On V4L2_EVENT_SOURCE_CHANGE: G_FMT(CAPTURE), G_SELECTION(COMPOSE) for the
   visible rectangle, REQBUFS/QUERYBUF/mmap CAPTURE (DMABUF: REQBUFS, and a
   dma-buf of at least sizeimage per buffer, mapped), queue every buffer,
   STREAMON(CAPTURE). The CAPTURE format is the one G_FMT gives: NV12 for
   an 8-bit stream, and from phase 8.8's node P010 for a 10-bit one, NV16
   for 8-bit 4:2:2 and NV24 for 8-bit 4:4:4 (before it such a stream ends in
   the fatal state, step 6); any other is a DecodeError.
3. Loop: DQBUF(CAPTURE) hands out a decoded frame (written out cropped to
   the visible rectangle, tightly packed in the CAPTURE format, then
   requeued); DQBUF(OUTPUT) returns consumed bitstream buffers, which are
   refilled. Buffers flagged V4L2_BUF_FLAG_ERROR are counted and skipped.
4. At the end of the file: DECODER_CMD(STOP); the drain ends with a CAPTURE
   buffer flagged V4L2_BUF_FLAG_LAST (and V4L2_EVENT_EOS), after which
   DQBUF(CAPTURE) fails with EPIPE. If no frame was decoded at all, CAPTURE
   was never set up and the EOS event alone ends the drain.
5. A SOURCE_CHANGE while CAPTURE streams (dynamic resolution change): the
   frames of the old size end with a LAST buffer; then STREAMOFF(CAPTURE),
   REQBUFS(0), G_FMT and new buffers as in step 2, and decoding goes on.
6. The fatal state: when the daemon refuses the stream (a pixel layout it
   does not deliver) or a frame needs a CAPTURE format the node does not
   offer, the node returns every queued buffer with ERROR, then QBUF,
   STREAMON, DECODER_CMD and DQBUF fail with EIO (poll(2) says POLLERR, which
   alone proves nothing: it also means a queue without buffers). The first
   EIO ends the decode with ``NodeStopped``.

The CPU reads a frame out of a dma-buf (imported or exported) through
mmap(2) of its fd, between DMA_BUF_IOCTL_SYNC START|READ and END|READ
(dmabuf.py); OUTPUT bitstream is written between START|WRITE and END|WRITE.

The file descriptor is non-blocking and every wait is a poll(2) with a
timeout: when nothing moves for ``timeout`` seconds the decode fails with a
message saying what it was waiting for. It never hangs.

Low-level pieces (``M2MNode``, ``BufferQueue``) are reused by the guest tests.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import select
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from linuxpy.video import raw

from daedalus.m2m.dmabuf import DmaBuf
from daedalus.m2m.layout import BY_FOURCC, Geometry, crop
from daedalus.proto import PixFmt
from daedalus.skeleton.v4l2dev import CAPTURE, OUTPUT, PixFormat, VideoNode, fourcc

V4L2_DEC_CMD_START = 0
V4L2_DEC_CMD_STOP = 1
BUF_FLAG_ERROR = int(raw.BufferFlag.ERROR)
BUF_FLAG_LAST = int(raw.BufferFlag.LAST)
BUF_FLAG_KEYFRAME = int(raw.BufferFlag.KEYFRAME)
EVENT_EOS = int(raw.EventType.EOS)
EVENT_SOURCE_CHANGE = int(raw.EventType.SOURCE_CHANGE)
CAP_M2M_MPLANE = int(raw.Capability.VIDEO_M2M_MPLANE)
DAEMON_STATE = Path("/sys/kernel/debug/daedalus-v4l2/daemon")

# the CAPTURE formats this client crops, by fourcc (daedalus.m2m.layout's table): NV12
# (8-bit 4:2:0), P010 (10-bit 4:2:0, 16-bit little-endian samples, the value in the
# upper 10 bits), NV16 (8-bit 4:2:2), NV24 (8-bit 4:4:4)
CAPTURE_FORMATS: dict[str, PixFmt] = {fourcc: layout.pixfmt
                                      for fourcc, layout in BY_FOURCC.items()}

DEFAULT_BUFFERS = 4      # per queue: the roadmap's 4-deep ring
DEFAULT_TIMEOUT = 10.0   # seconds without any progress
EVENT_GRACE = 1.0        # after a LAST buffer, how long its event may take
FAIL_FAST = 8            # OUTPUT buffers all in error, nothing decoded: give up


class DecodeError(Exception):
    """The decode cannot go on; one line for the user."""


class DecodeTimeout(DecodeError):
    """Nothing moved for the decode's timeout."""


class StreamRefused(DecodeError):
    """The node refuses the stream: its coded format is not offered, or every
    OUTPUT buffer came back in error before anything was decoded."""


class PacketTooLarge(StreamRefused):
    """The stream's largest packet does not fit the largest OUTPUT buffer the
    node grants for it (S_FMT(OUTPUT) clamps sizeimage); nothing was queued."""


class NodeStopped(StreamRefused):
    """The node put the stream in the fatal state of dev-decoder.rst: every
    queued buffer came back with ERROR and the next V4L2 call failed with EIO.
    The daemon refused the stream, or a frame needs a CAPTURE pixel format the
    node does not offer (unsupported.py tells which from the file)."""


class NotADecoder(DecodeError):
    """The node is not a multi-planar memory-to-memory device (or not V4L2 at all)."""


def _ioctl(fd: int, request: int, arg: ctypes.Structure | ctypes.c_int) -> None:
    fcntl.ioctl(fd, request, arg)  # OSError(errno) on failure


def timestamp_to_timeval(value: int) -> tuple[int, int]:
    """A packet index as (seconds, microseconds): the kernel keeps it as
    nanoseconds and gives it back unchanged."""
    return divmod(value, 1_000_000)


def timeval_to_timestamp(secs: int, usecs: int) -> int:
    return secs * 1_000_000 + usecs


def daemon_connected() -> bool | None:
    """Whether daedalusd is connected, as the module's debugfs says; None when
    it cannot tell (debugfs not mounted or readable: not root, or no module)."""
    try:
        state = DAEMON_STATE.read_text().strip()
    except OSError:
        return None
    return state != "disconnected"


def daemon_hint() -> str:
    """What the module's debugfs says about daedalusd, if it says anything."""
    try:
        state = DAEMON_STATE.read_text().strip()
    except OSError:
        return ""
    if state == "disconnected":
        return " (daedalusd is not connected: start it)"
    return f" (daedalusd: {state})"


@dataclass(frozen=True)
class Dequeued:
    """One buffer DQBUF handed back."""

    index: int
    flags: int
    bytesused: int
    timestamp: int
    sequence: int

    @property
    def error(self) -> bool:
        return bool(self.flags & BUF_FLAG_ERROR)

    @property
    def last(self) -> bool:
        return bool(self.flags & BUF_FLAG_LAST)

    @property
    def key(self) -> bool:
        return bool(self.flags & BUF_FLAG_KEYFRAME)


class LastBufferDequeued(Exception):
    """DQBUF(CAPTURE) failed with EPIPE: the LAST buffer was already dequeued."""


MMAP = int(raw.Memory.MMAP)
DMABUF = int(raw.Memory.DMABUF)
MEMORY_NAMES = {MMAP: "MMAP", DMABUF: "DMABUF"}
EXPBUF_FLAGS = os.O_CLOEXEC | os.O_RDWR  # VIDIOC_EXPBUF: the dma-buf fd's open flags


class BufferQueue:
    """The buffers of one queue (OUTPUT or CAPTURE, multi-planar, one plane).

    ``request(count)`` allocates MMAP buffers and maps them through the node.
    ``request(count, DMABUF)`` only sets the queue up for imported buffers:
    ``attach(index, fd)`` then gives each index its dma-buf, which QBUF
    passes in ``m.fd`` (with ``length`` the dma-buf's size) every time.
    ``export(index)`` is VIDIOC_EXPBUF of an MMAP buffer; ``read_through_exports()``
    makes the queue read its MMAP buffers through their exported dma-bufs.

    ``view(index)`` is the CPU's access to a buffer: the node's mapping
    (MMAP), or the dma-buf's bracketed by DMA_BUF_IOCTL_SYNC (imported or
    exported buffers)."""

    def __init__(self, fd: int, buf_type: int) -> None:
        self.fd = fd
        self.type = buf_type
        self.memory = MMAP
        self.maps: list[mmap.mmap] = []           # MMAP: the node's mappings
        self.dmabufs: list[DmaBuf | None] = []    # imported, or exported to read through
        self.lengths: list[int] = []
        self.granted = 0
        self.streaming = False

    @property
    def count(self) -> int:
        return len(self.maps) if self.memory == MMAP else self.granted

    @property
    def allocated(self) -> bool:
        """Whether there are buffers to free (MMAP: mapped ones, as ever)."""
        return bool(self.maps) if self.memory == MMAP else self.granted > 0

    def request(self, count: int, memory: int = MMAP) -> int:
        """REQBUFS(count) of *memory*; MMAP buffers are mapped. The count the
        driver granted. DMABUF buffers still need ``attach`` before QBUF."""
        self.release()
        rb = raw.v4l2_requestbuffers()
        rb.type = self.type
        rb.count = count
        rb.memory = memory
        _ioctl(self.fd, raw.IOC.REQBUFS, rb)
        self.memory = memory
        self.granted = int(rb.count)
        self.dmabufs = [None] * self.granted
        if memory == MMAP:
            self._map_all()
        else:
            self.lengths = [0] * self.granted
        return self.granted

    def attach(self, index: int, fd: int) -> None:
        """Buffer *index* of a DMABUF queue is the dma-buf *fd*: a dup of it is
        kept (and mapped) until ``release``, so the caller may close its own."""
        if self.memory != DMABUF:
            raise ValueError("attach() needs a queue requested with DMABUF memory")
        old = self.dmabufs[index]
        if old is not None:
            old.close()
        own = os.dup(fd)
        try:
            dmabuf = DmaBuf(own, owned=True, writable=self.type == OUTPUT)
        except BaseException:
            os.close(own)
            raise
        self.dmabufs[index] = dmabuf
        self.lengths[index] = dmabuf.size

    def export(self, index: int) -> int:
        """VIDIOC_EXPBUF of MMAP buffer *index* (plane 0): a dma-buf fd
        (O_CLOEXEC | O_RDWR) that the caller owns and closes."""
        exp = raw.v4l2_exportbuffer()
        exp.type = self.type
        exp.index = index
        exp.plane = 0
        exp.flags = EXPBUF_FLAGS
        _ioctl(self.fd, raw.IOC.EXPBUF, exp)
        return int(exp.fd)

    def read_through_exports(self) -> None:
        """Export every MMAP buffer and access it through its dma-buf from now on
        (the exported fds are closed on ``release``)."""
        if self.memory != MMAP:
            raise ValueError("only MMAP buffers are exported")
        for index in range(self.granted):
            fd = self.export(index)
            try:
                self.dmabufs[index] = DmaBuf(fd, owned=True, writable=self.type == OUTPUT)
            except BaseException:
                os.close(fd)
                raise

    @contextmanager
    def view(self, index: int) -> Iterator[memoryview]:
        """Buffer *index*'s bytes for the CPU to read; the view is released
        on the way out (copy what is kept)."""
        dmabuf = self.dmabufs[index] if index < len(self.dmabufs) else None
        if dmabuf is not None:
            with dmabuf.read() as view:
                yield view
        else:
            with memoryview(self.maps[index]) as view:  # released before any munmap
                yield view

    def _fill(self, index: int, data: bytes) -> None:
        dmabuf = self.dmabufs[index] if index < len(self.dmabufs) else None
        if dmabuf is not None:
            dmabuf.write(data)
        else:
            self.maps[index][:len(data)] = data

    def release(self) -> None:
        """Unmap (and close the dma-bufs of) the buffers and free them
        (REQBUFS 0) if there are any."""
        if not self.allocated:
            return
        for m in self.maps:
            m.close()
        for dmabuf in self.dmabufs:
            if dmabuf is not None:
                dmabuf.close()
        self.maps.clear()
        self.dmabufs.clear()
        self.lengths.clear()
        self.granted = 0
        rb = raw.v4l2_requestbuffers()
        rb.type = self.type
        rb.count = 0
        rb.memory = self.memory
        _ioctl(self.fd, raw.IOC.REQBUFS, rb)

    def create(self, count: int, sizeimage: int) -> int:
        """CREATE_BUFS of *count* MMAP buffers of *sizeimage* bytes each (the
        queue's current format with that plane size), mapped like ``request``'s;
        the queue must have no buffers. The count the driver granted."""
        self.release()
        create = raw.v4l2_create_buffers()
        create.count = count
        create.memory = MMAP
        create.format.type = self.type
        _ioctl(self.fd, raw.IOC.G_FMT, create.format)
        create.format.fmt.pix_mp.num_planes = 1
        create.format.fmt.pix_mp.plane_fmt[0].sizeimage = sizeimage
        _ioctl(self.fd, raw.IOC.CREATE_BUFS, create)
        self.memory = MMAP
        self.granted = int(create.index) + int(create.count)
        self.dmabufs = [None] * self.granted
        self._map_all()
        return int(create.count)

    def _map_all(self) -> None:
        for index in range(self.granted):
            buf, plane = self._buffer(index)
            _ioctl(self.fd, raw.IOC.QUERYBUF, buf)
            self.lengths.append(int(plane.length))
            self.maps.append(mmap.mmap(self.fd, plane.length, mmap.MAP_SHARED,
                                       mmap.PROT_READ | mmap.PROT_WRITE,
                                       offset=plane.m.mem_offset))

    def _buffer(self, index: int) -> tuple[raw.v4l2_buffer, raw.v4l2_plane]:
        plane = raw.v4l2_plane()
        buf = raw.v4l2_buffer()
        buf.index = index
        buf.type = self.type
        buf.memory = self.memory
        buf.length = 1  # planes in m.planes
        buf.m.planes = ctypes.pointer(plane)
        return buf, plane

    def queue(self, index: int, data: bytes | None = None, timestamp: int = 0) -> None:
        """QBUF: OUTPUT buffers with *data* (its bytesused) and *timestamp*;
        DMABUF buffers with their dma-buf in ``m.fd`` and its size in ``length``."""
        buf, plane = self._buffer(index)
        if self.memory == DMABUF:
            dmabuf = self.dmabufs[index]
            if dmabuf is None:
                raise ValueError(f"DMABUF buffer {index} has no dma-buf attached")
            plane.m.fd = dmabuf.fd
            plane.length = self.lengths[index]
        if data is not None:
            self._fill(index, data)
            plane.bytesused = len(data)
            plane.length = self.lengths[index]
            buf.timestamp.secs, buf.timestamp.usecs = timestamp_to_timeval(timestamp)
        _ioctl(self.fd, raw.IOC.QBUF, buf)

    def dequeue(self) -> Dequeued | None:
        """DQBUF without blocking: None when nothing is done (EAGAIN);
        LastBufferDequeued on EPIPE."""
        buf, plane = self._buffer(0)
        try:
            _ioctl(self.fd, raw.IOC.DQBUF, buf)
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                raise LastBufferDequeued from None
            raise
        return Dequeued(index=int(buf.index), flags=int(buf.flags),
                        bytesused=int(plane.bytesused),
                        timestamp=timeval_to_timestamp(int(buf.timestamp.secs),
                                                       int(buf.timestamp.usecs)),
                        sequence=int(buf.sequence))

    def streamon(self) -> None:
        _ioctl(self.fd, raw.IOC.STREAMON, ctypes.c_int(self.type))
        self.streaming = True

    def streamoff(self) -> None:
        _ioctl(self.fd, raw.IOC.STREAMOFF, ctypes.c_int(self.type))
        self.streaming = False

    def close(self) -> None:
        """STREAMOFF and free the buffers, ignoring errors (cleanup paths)."""
        try:
            if self.streaming:
                self.streamoff()
        except OSError:
            pass
        try:
            self.release()
        except OSError:
            pass


class M2MNode(VideoNode):
    """Phase 8.1's VideoNode plus the ioctls of a stateful decoder."""

    def __enter__(self) -> M2MNode:
        return self

    def check_m2m(self) -> None:
        try:
            caps = self.querycap()
        except OSError as exc:
            raise NotADecoder(f"{self.path} is not a V4L2 device (QUERYCAP: "
                              f"{exc.strerror or exc})") from None
        if not caps.device_caps & CAP_M2M_MPLANE:
            raise NotADecoder(f"{self.path} ({caps.card}) is not a multi-planar "
                              "memory-to-memory device")

    def set_output_format(self, code: str, width: int, height: int,
                          sizeimage: int = 0) -> PixFormat:
        fmt = raw.v4l2_format()
        fmt.type = OUTPUT
        pix = fmt.fmt.pix_mp
        pix.pixelformat = fourcc(code)
        pix.width = width
        pix.height = height
        pix.num_planes = 1
        pix.plane_fmt[0].sizeimage = sizeimage
        _ioctl(self.fd, raw.IOC.S_FMT, fmt)
        return self._pix(fmt)

    def visible_rect(self) -> tuple[int, int, int, int]:
        """G_SELECTION(CAPTURE, COMPOSE): left, top, width, height."""
        sel = raw.v4l2_selection()
        sel.type = CAPTURE  # the core hands drivers the single-planar type
        sel.target = raw.SelectionTarget.COMPOSE
        _ioctl(self.fd, raw.IOC.G_SELECTION, sel)
        return int(sel.r.left), int(sel.r.top), int(sel.r.width), int(sel.r.height)

    def subscribe(self, event_type: int) -> None:
        sub = raw.v4l2_event_subscription()
        sub.type = event_type
        _ioctl(self.fd, raw.IOC.SUBSCRIBE_EVENT, sub)

    def dequeue_event(self) -> tuple[int, int] | None:
        """DQEVENT: (type, source-change flags), or None when none is pending."""
        ev = raw.v4l2_event()
        try:
            _ioctl(self.fd, raw.IOC.DQEVENT, ev)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise
        changes = int(ev.u.src_change.changes) if ev.type == EVENT_SOURCE_CHANGE else 0
        return int(ev.type), changes

    def decoder_cmd(self, cmd: int) -> None:
        dc = raw.v4l2_decoder_cmd()
        dc.cmd = cmd
        _ioctl(self.fd, raw.IOC.DECODER_CMD, dc)

    def poll(self, timeout: float) -> int:
        """poll(2) for POLLIN | POLLOUT | POLLPRI; the returned events (0 on timeout)."""
        poller = select.poll()
        poller.register(self.fd, select.POLLIN | select.POLLOUT | select.POLLPRI)
        ready = poller.poll(max(0, int(timeout * 1000)))
        return ready[0][1] if ready else 0


DmabufSource = Callable[[int, int], Sequence[int]]
"""Supplies dma-bufs for a queue to import: called with (count, sizeimage), it
returns *count* dma-buf fds of at least *sizeimage* bytes each. The importer
dups what it keeps, so the fds stay the source's; it is asked again, after
the importer has let go of the previous ones, when the size changes."""


class _ExportPool:
    """One queue of the exporting context: its MMAP buffers and their dma-bufs."""

    def __init__(self, fd: int, buf_type: int) -> None:
        self.queue = BufferQueue(fd, buf_type)
        self.fds: list[int] = []
        self.size = 0

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()
        self.size = 0
        self.queue.close()


class ExportingContext:
    """A second open of the decoder node that only allocates MMAP buffers and
    exports them (VIDIOC_EXPBUF), for another context to import as DMABUF:
    ``capture`` and ``output`` are DmabufSources for the two queues. The
    buffers and their fds live until ``close`` (or until a larger size or
    count is asked for; the old ones are then freed). Nothing is ever queued
    or streamed here; the context is idle, a buffer allocator.

    How it gets buffers of a given size: CREATE_BUFS, whose format carries the
    plane's sizeimage outright (vb2 hands it to queue_setup, which takes any
    size at least the context's own format's). REQBUFS would allocate the
    context's own format's sizeimage, which follows its S_FMT(OUTPUT) and so
    needs the stream's coded format and size, which a DmabufSource is not
    told; an idle context never parses a header either. The size asked of
    CREATE_BUFS is the larger of the importer's sizeimage and this context's
    G_FMT sizeimage (queue_setup refuses less); a larger dma-buf imports fine."""

    def __init__(self, node: str | Path | M2MNode) -> None:
        """*node*: the device to open (closed with this context), or an open node
        (left open)."""
        self.owns_node = not isinstance(node, M2MNode)
        self.node = node if isinstance(node, M2MNode) else M2MNode(node)
        self.pools = {CAPTURE: _ExportPool(self.node.fd, CAPTURE),
                      OUTPUT: _ExportPool(self.node.fd, OUTPUT)}

    def __enter__(self) -> ExportingContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def capture(self, count: int, sizeimage: int) -> list[int]:
        """A DmabufSource of CAPTURE buffers (frames in any CAPTURE format: the
        size asked is the importer's sizeimage, whatever its format)."""
        return self._provide(CAPTURE, count, sizeimage)

    def output(self, count: int, sizeimage: int) -> list[int]:
        """A DmabufSource of OUTPUT buffers (bitstream)."""
        return self._provide(OUTPUT, count, sizeimage)

    def _provide(self, buf_type: int, count: int, sizeimage: int) -> list[int]:
        pool = self.pools[buf_type]
        if len(pool.fds) >= count and pool.size >= sizeimage:
            return pool.fds[:count]
        pool.close()
        name = "CAPTURE" if buf_type == CAPTURE else "OUTPUT"
        step = "G_FMT"
        try:
            size = max(sizeimage, self.node.g_fmt(buf_type).sizeimage)
            step = "CREATE_BUFS"
            granted = pool.queue.create(count, size)
            if granted < count:
                raise DecodeError(f"the exporting context got {granted} {name} buffers of "
                                  f"CREATE_BUFS, not {count}")
            step = "EXPBUF"
            for index in range(granted):
                pool.fds.append(pool.queue.export(index))
        except OSError as exc:
            pool.close()
            raise DecodeError(f"the exporting context cannot provide {count} {name} buffers "
                              f"of {sizeimage} bytes: {step} failed: "
                              f"{exc.strerror or exc}") from None
        except BaseException:
            pool.close()
            raise
        pool.size = min(pool.queue.lengths) if pool.queue.lengths else size
        return list(pool.fds)

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()
        if self.owns_node:
            self.node.close()


@dataclass(frozen=True)
class Frame:
    """A decoded picture, tightly packed in its CAPTURE format *pixfmt* (NV12,
    P010 for a 10-bit stream, NV16 / NV24 for 8-bit 4:2:2 / 4:4:4), as
    ffmpeg's rawvideo writes it (``-pix_fmt nv12`` / ``p010le`` / ``nv16``
    / ``nv24``) and as the decode wrote it."""

    width: int
    height: int
    timestamp: int
    key: bool
    data: bytes
    pixfmt: str = "NV12"   # the CAPTURE fourcc: NV12, P010, NV16 or NV24


@dataclass
class Stats:
    frames: int = 0
    sizes: list[tuple[int, int]] = field(default_factory=list)  # each distinct size, in order
    frame_sizes: list[tuple[int, int]] = field(default_factory=list)  # per frame
    pixfmts: list[str] = field(default_factory=list)  # each distinct CAPTURE format of a frame
    timestamps: list[int] = field(default_factory=list)
    packets: int = 0               # packets queued on OUTPUT
    output_errors: list[int] = field(default_factory=list)   # packet indexes
    capture_errors: list[int] = field(default_factory=list)  # CAPTURE sequence numbers
    capture_error_bytes: list[int] = field(default_factory=list)  # their bytesused
    skipped: list[int] = field(default_factory=list)         # packets too large to queue
    source_changes: int = 0
    epipe_after_last: bool = False
    seconds: float = 0.0

    @property
    def errors(self) -> int:
        return len(self.output_errors) + len(self.capture_errors) + len(self.skipped)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _Capture:
    fmt: PixFormat
    visible: Geometry
    queue: BufferQueue


class StatefulDecode:
    """One decode of a packet stream through a stateful m2m node (see the module doc).

    *packets* yields (timestamp, bytes); *on_frame* gets every decoded
    picture in the order the node returns them. *log* gets the steps (debug),
    *warn* every buffer in error and every packet skipped. *fail_fast*: give
    up (StreamRefused) when the first that many OUTPUT buffers all come back
    in error before any frame; None decodes to the end whatever comes back
    (a fuzzing campaign wants to see the clean part after a bad one).

    How the buffers are provided (the node offers MMAP and DMABUF memory):
    by default both queues are MMAP, read and written through the node's
    mappings. *capture_export*: CAPTURE stays MMAP, but every buffer is
    exported (VIDIOC_EXPBUF) and frames are read through the dma-bufs.
    *capture_from*: CAPTURE imports DMABUF buffers from that DmabufSource
    (asked again after every resolution change); *output_from* likewise for
    OUTPUT, whose bitstream is then written through the dma-bufs.

    *largest_packet*: (timestamp, bytes) of the largest packet *packets*
    will yield, when known (``largest_packet()`` of a file). The OUTPUT
    buffers are then asked that large (S_FMT's sizeimage; the node grants up
    to the coded picture's NV12 size, at least 1 MiB), and a node that
    grants less refuses the stream before anything is queued
    (PacketTooLarge). Without it, a packet larger than its OUTPUT buffer is
    skipped with a warning (counted in ``Stats.skipped``)."""

    def __init__(self, node: M2MNode, code: str, packets: Iterator[tuple[int, bytes]],
                 on_frame: Callable[[Frame], None], *, buffers: int = DEFAULT_BUFFERS,
                 timeout: float = DEFAULT_TIMEOUT, width: int = 0, height: int = 0,
                 log: Callable[[str], None] | None = None,
                 warn: Callable[[str], None] | None = None,
                 fail_fast: int | None = FAIL_FAST, capture_export: bool = False,
                 capture_from: DmabufSource | None = None,
                 output_from: DmabufSource | None = None,
                 largest_packet: tuple[int, int] | None = None) -> None:
        if capture_export and capture_from is not None:
            raise ValueError("capture_export (MMAP) and capture_from (DMABUF) exclude "
                             "each other")
        self.node = node
        self.capture_export = capture_export
        self.capture_from = capture_from
        self.output_from = output_from
        self.output_limit = 0  # the largest packet an OUTPUT buffer takes
        self.largest_packet = largest_packet
        self.fail_fast = fail_fast
        self.code = code
        self.packets = packets
        self.on_frame = on_frame
        self.buffers = buffers
        self.timeout = timeout
        self.width = width
        self.height = height
        self.log = log or (lambda text: None)
        self.warn = warn or self.log
        self.stats = Stats()
        self.output = BufferQueue(node.fd, OUTPUT)
        self.capture: _Capture | None = None
        self.free_output: list[int] = []
        self.eof = False
        self.stop_sent = False
        self.change_pending = False
        self.eos = False
        self.last_at: float | None = None  # when the LAST buffer came, awaiting its event
        self.done = False
        self.output_returned = 0

    # -- set-up -------------------------------------------------------------------

    def _start(self) -> None:
        self.node.check_m2m()
        offered = self.node.formats(OUTPUT)
        if self.code not in offered:
            raise StreamRefused(f"{self.node.path} does not offer the coded format "
                              f"{self.code} (it offers {', '.join(offered) or 'none'})")
        wanted = self.largest_packet[1] if self.largest_packet is not None else 0
        fmt = self.node.set_output_format(self.code, self.width or 320, self.height or 240,
                                          sizeimage=wanted)
        if fmt.pixelformat != self.code:
            raise DecodeError(f"S_FMT(OUTPUT, {self.code}) gave {fmt.pixelformat}")
        if self.largest_packet is not None and wanted > fmt.sizeimage:
            raise PacketTooLarge(
                f"packet {self.largest_packet[0]} is {wanted} bytes, more than an OUTPUT "
                f"buffer holds: {self.node.path} grants at most {fmt.sizeimage} bytes for "
                f"{fmt.width}x{fmt.height} {self.code}; nothing was queued")
        count = self._request(self.output, self.output_from, fmt.sizeimage)
        self.output_limit = fmt.sizeimage
        self.free_output = list(range(count))
        self.node.subscribe(EVENT_SOURCE_CHANGE)
        self.node.subscribe(EVENT_EOS)
        self.output.streamon()
        self.log(f"OUTPUT: {fmt.pixelformat}, {count} {MEMORY_NAMES[self.output.memory]} "
                 f"buffers of {fmt.sizeimage} bytes")

    def _request(self, queue: BufferQueue, source: DmabufSource | None, sizeimage: int) -> int:
        """The queue's buffers: MMAP, or DMABUF imported from *source*."""
        name = "OUTPUT" if queue.type == OUTPUT else "CAPTURE"
        memory = MMAP if source is None else DMABUF
        try:
            count = queue.request(self.buffers, memory)
        except OSError as exc:
            if memory != DMABUF or exc.errno != errno.EINVAL:
                raise
            raise DecodeError(f"REQBUFS({name}, DMABUF) failed with EINVAL: the node does "
                              "not import dma-bufs") from None
        if count < 1:
            raise DecodeError(f"REQBUFS({name}) granted no buffers")
        if source is not None:
            fds = list(source(count, sizeimage))
            if len(fds) < count:
                raise DecodeError(f"{len(fds)} dma-bufs were provided for {count} {name} "
                                  "buffers")
            for index in range(count):
                queue.attach(index, fds[index])
            small = min(queue.lengths[:count])
            if small < sizeimage:
                raise DecodeError(f"a dma-buf provided for {name} has {small} bytes, the "
                                  f"format's sizeimage is {sizeimage}")
        elif self.capture_export and queue.type == CAPTURE:
            queue.read_through_exports()
        return count

    def _setup_capture(self) -> None:
        """CAPTURE for the stream's current geometry (first time or after a change)."""
        if self.capture is not None:
            self.capture.queue.close()  # STREAMOFF, REQBUFS 0
        fmt = self.node.g_fmt(CAPTURE)
        left, top, width, height = self.node.visible_rect()
        pixfmt = CAPTURE_FORMATS.get(fmt.pixelformat)
        if pixfmt is None:
            *others, last = CAPTURE_FORMATS
            raise DecodeError(f"CAPTURE format is {fmt.pixelformat}; this client writes "
                              f"{', '.join(others)} or {last}")
        if (left, top) != (0, 0) or left + width > fmt.width or top + height > fmt.height:
            raise DecodeError(f"visible rectangle {width}x{height}+{left}+{top} is not "
                              f"within the {fmt.width}x{fmt.height} CAPTURE format")
        queue = self.capture.queue if self.capture is not None else BufferQueue(
            self.node.fd, CAPTURE)
        count = self._request(queue, self.capture_from, fmt.sizeimage)
        for index in range(count):
            queue.queue(index)
        queue.streamon()
        self.capture = _Capture(fmt, Geometry(width, height, pixfmt), queue)
        self.change_pending = False
        self.last_at = None
        self.stats.source_changes += 1
        how = " (read through EXPBUF dma-bufs)" if self.capture_export else ""
        self.log(f"CAPTURE: {fmt.pixelformat} {fmt.width}x{fmt.height}, bytesperline "
                 f"{fmt.bytesperline}, visible {width}x{height}, {count} "
                 f"{MEMORY_NAMES[queue.memory]} buffers{how}")

    # -- the loop -----------------------------------------------------------------

    def run(self) -> Stats:
        start = time.monotonic()
        try:
            self._start()
            self._refill()
            progress_at = time.monotonic()
            while not self.done:
                events = self.node.poll(0.1)
                moved = self._events()
                moved |= self._output()
                moved |= self._capture()
                moved |= self._after_last()
                now = time.monotonic()
                if moved:
                    progress_at = now
                elif now - progress_at > self.timeout:
                    raise DecodeTimeout(f"nothing happened for {self.timeout:g} s while "
                                      f"{self._waiting_for()}{daemon_hint()}")
                elif events:
                    # poll(2) reports something we cannot act on yet (POLLERR while no
                    # buffer is queued, POLLIN for the LAST buffer we wait behind): a
                    # short nap instead of spinning
                    time.sleep(0.005)
            self._check_epipe()
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            raise NodeStopped(f"the node stopped the stream (a V4L2 call failed with EIO "
                              f"after {self.stats.frames} frames): it refused the stream or "
                              f"has no CAPTURE format for its frames{daemon_hint()}") from None
        finally:
            self.stats.seconds = time.monotonic() - start
            if self.capture is not None:
                self.capture.queue.close()
            self.output.close()
        return self.stats

    def _waiting_for(self) -> str:
        if self.capture is None:
            return (f"waiting for the first decoded frame (SOURCE_CHANGE); "
                    f"{self.stats.packets} packets queued, {self.output_returned} returned")
        if self.change_pending:
            return "waiting for the LAST buffer of the old resolution"
        if self.last_at is not None:
            return "waiting for the event that follows the LAST buffer"
        if self.stop_sent:
            return f"draining (DECODER_CMD STOP sent), {self.stats.frames} frames so far"
        return f"decoding, {self.stats.frames} frames so far"

    def _events(self) -> bool:
        moved = False
        while (event := self.node.dequeue_event()) is not None:
            moved = True
            kind, changes = event
            if kind == EVENT_SOURCE_CHANGE:
                self.log(f"event SOURCE_CHANGE (changes {changes:#x})")
                self.change_pending = True
            elif kind == EVENT_EOS:
                self.log("event EOS")
                self.eos = True
        if self.change_pending and (self.capture is None or not self.capture.queue.streaming):
            self._setup_capture()
            moved = True
        return moved

    def _refill(self) -> bool:
        moved = False
        while self.free_output and not self.eof:
            try:
                timestamp, data = next(self.packets)
            except StopIteration:
                self.eof = True
                break
            index = self.free_output[-1]
            limit = self.output.lengths[index]
            if self.output.memory == DMABUF:  # a dma-buf may be larger than the format's
                limit = min(limit, self.output_limit)
            if len(data) > limit:
                self.stats.skipped.append(timestamp)
                self.warn(f"packet {timestamp}: {len(data)} bytes exceed the OUTPUT buffer's "
                          f"{limit}; skipped")
                continue
            self.free_output.pop()
            self.output.queue(index, data, timestamp)
            self.stats.packets += 1
            moved = True
        if self.eof and not self.stop_sent:
            self.node.decoder_cmd(V4L2_DEC_CMD_STOP)
            self.stop_sent = True
            self.log(f"end of file after {self.stats.packets} packets: DECODER_CMD STOP")
            moved = True
        return moved

    def _output(self) -> bool:
        moved = False
        while (buf := self.output.dequeue()) is not None:
            moved = True
            self.output_returned += 1
            if buf.error:
                self.stats.output_errors.append(buf.timestamp)
                self.warn(f"packet {buf.timestamp}: OUTPUT buffer returned with ERROR "
                          "(the decoder rejected it)")
            self.free_output.append(buf.index)
        if (self.fail_fast is not None and self.stats.frames == 0 and self.capture is None
                and self.output_returned >= min(self.fail_fast, max(1, self.stats.packets))
                and len(self.stats.output_errors) == self.output_returned):
            raise StreamRefused(f"the decoder returned all {self.output_returned} OUTPUT "
                              f"buffers so far with ERROR and decoded nothing{daemon_hint()}")
        return self._refill() or moved

    def _capture(self) -> bool:
        cap = self.capture
        if cap is None or not cap.queue.streaming or self.last_at is not None:
            return False
        moved = False
        while True:
            try:
                buf = cap.queue.dequeue()
            except LastBufferDequeued:
                raise DecodeError("DQBUF(CAPTURE) failed with EPIPE before a LAST buffer "
                                  "was seen") from None
            if buf is None:
                return moved
            moved = True
            if buf.error:
                self.stats.capture_errors.append(buf.sequence)
                self.stats.capture_error_bytes.append(buf.bytesused)
                self.warn(f"CAPTURE buffer {buf.sequence} (timestamp {buf.timestamp}) "
                          "returned with ERROR; skipped")
            elif buf.bytesused:
                self._write(cap, buf)
            if buf.last:
                self.last_at = time.monotonic()
                self.log(f"LAST buffer (bytesused {buf.bytesused})")
                return True
            cap.queue.queue(buf.index)

    def _write(self, cap: _Capture, buf: Dequeued) -> None:
        with cap.queue.view(buf.index) as view:  # released before any munmap
            picture = crop(view, cap.fmt.bytesperline, cap.fmt.height, cap.visible)
        size = (cap.visible.width, cap.visible.height)
        if size not in self.stats.sizes:
            self.stats.sizes.append(size)
        pixfmt = cap.fmt.pixelformat
        if pixfmt not in self.stats.pixfmts:
            self.stats.pixfmts.append(pixfmt)
        self.stats.frames += 1
        self.stats.frame_sizes.append(size)
        self.stats.timestamps.append(buf.timestamp)
        self.on_frame(Frame(size[0], size[1], buf.timestamp, buf.key, picture, pixfmt))

    def _after_last(self) -> bool:
        """After a LAST buffer: a resolution change (set CAPTURE up again) or
        the end of the drain (done). A drain that ends before any frame was
        decoded (CAPTURE never set up) has no LAST buffer to wait for: its EOS
        event ends the decode."""
        if self.capture is None and self.eos and self.stop_sent and not self.change_pending:
            self.warn("the drain ended (EOS) before any frame was decoded: no picture")
            self.done = True
            return True
        if self.last_at is None:
            return False
        if self.change_pending:
            self._setup_capture()
            return True
        if self.eos or (self.stop_sent and time.monotonic() - self.last_at > EVENT_GRACE):
            if not self.eos:
                self.log("no EOS event after the LAST buffer; the drain is over all the same")
            self.done = True
            return True
        return False

    def _check_epipe(self) -> None:
        """dev-decoder.rst: after the LAST buffer DQBUF(CAPTURE) fails with EPIPE."""
        if self.capture is None:
            return
        try:
            buf = self.capture.queue.dequeue()
        except LastBufferDequeued:
            self.stats.epipe_after_last = True
            return
        self.log(f"DQBUF(CAPTURE) after the LAST buffer gave {buf} instead of EPIPE")


def largest_packet(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(index, bytes) of the largest packet of a file, the first of equals
    ((0, 0) for a file without packets): one pass of phase 8.3's readers,
    which raise ReaderError for a malformed file."""
    from daedalus.parse.readers import open_stream

    best = (0, 0)
    for p in open_stream(path)[1]:
        if len(p.data) > best[1]:
            best = (p.index, len(p.data))
    return best


def packets_of(path: str | os.PathLike[str]) -> tuple[str, int, int, Iterator[tuple[int, bytes]]]:
    """(codec, width, height, (index, bytes) per packet) of a file, with phase 8.3's readers."""
    from daedalus.parse.readers import open_stream

    info, packets = open_stream(path)
    return info.codec, info.width, info.height, ((p.index, p.data) for p in packets)
