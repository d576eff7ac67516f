"""A stateless-decoder client of the daedalus-v4l2 stateless node, from our own parser.

The sequence is the kernel's
Documentation/userspace-api/media/v4l/dev-stateless-decoder.rst, multi-planar
API, MMAP buffers, one plane per buffer, one request in flight at a time.
Phase 8.5's V4L2 layer (daedalus.m2m.v4l2: ``M2MNode``, ``BufferQueue``,
DQBUF, mmap) does everything but what this interface adds, which is here:

- the media request API (<linux/media.h>): ``MEDIA_IOC_REQUEST_ALLOC`` on
  /dev/mediaN gives a request fd; ``MEDIA_REQUEST_IOC_QUEUE`` and
  ``MEDIA_REQUEST_IOC_REINIT`` act on it; poll(2) says ``POLLPRI`` once the
  request completed (``MediaRequest``);
- ``VIDIOC_S_EXT_CTRLS`` with ``which = V4L2_CTRL_WHICH_REQUEST_VAL`` and
  ``request_fd``: compound controls go in by pointer (``struct
  v4l2_ext_control``'s ``size`` and ``ptr``) into the request, not the file
  (``set_controls``);
- ``VIDIOC_QBUF`` of an OUTPUT buffer with ``V4L2_BUF_FLAG_REQUEST_FD`` and
  ``request_fd`` (``RequestQueue.queue_in_request``). The node's OUTPUT queue
  requires requests: a QBUF without one fails with EBADR.

The node (``find_stateless_node``) is the /dev/videoN whose sysfs name and
QUERYCAP card are ``daedalus-v4l2-stateless``; its media device
(``find_media_node``) is the /dev/mediaN on the same device whose topology
has a V4L video interface with the node's major:minor.

VP9 (``Vp9StatelessDecode``; the OUTPUT format ``V4L2_PIX_FMT_VP9_FRAME``,
one frame per buffer). Each container packet is split into its frames
(``split_superframe``: a superframe's hidden alt-ref frame and the shown
frame behind it each get their own request, as GStreamer's vp9parse with
``alignment=frame`` does). For every frame, parsed with ``Vp9Parser``:

1. its size is the stream's: the first frame (and a key frame of another
   size) sets the queues up: STREAMOFF and free both queues if they were
   set up, S_FMT(OUTPUT, VP9F, frame size), G_FMT(CAPTURE) (it follows
   OUTPUT: NV12), REQBUFS(MMAP) on both, STREAMON both;
2. a ``show_existing_frame`` frame is not sent: its picture is the one the
   client kept for that slot, output again (GStreamer does the same);
3. otherwise the request: REINIT (or ALLOC the first time) the request of
   the OUTPUT buffer, S_EXT_CTRLS(REQUEST_VAL) of
   ``V4L2_CID_STATELESS_VP9_FRAME`` (``vp9_header.fill``, the LAST / GOLDEN
   / ALTREF references named by the timestamps of the requests whose frames
   the slots hold, in nanoseconds, as GStreamer's ``_fill_refs`` does), the
   frame copied into the OUTPUT buffer, QBUF(OUTPUT) in the request with the
   frame's timestamp, QBUF(CAPTURE), MEDIA_REQUEST_IOC_QUEUE, poll the
   request for POLLPRI, DQBUF both;
4. buffers flagged ``V4L2_BUF_FLAG_ERROR`` are counted; otherwise the
   CAPTURE picture is cropped to the frame size (tightly packed NV12, as
   ``ffmpeg -pix_fmt nv12 -f rawvideo`` writes it) and output if the frame
   is shown (a hidden frame is decoded but not output, as in GStreamer);
   either way it is kept for the slots the frame refreshes.

Timestamps: the n-th request of the stream (from 1; 0 would read as "no
reference" in the control) is queued with ``timestamp = {0 s, n us}``, which
the kernel keeps as ``n * 1000`` ns, the value the control names it by.

H.264 (``H264StatelessDecode``; the OUTPUT format ``V4L2_PIX_FMT_H264_SLICE``,
frame-based, Annex-B start codes: the node's only decode mode and start-code
menu values). Each access unit goes through ``h264_requests.
H264RequestBuilder``, which gives per picture the SPS / PPS / SCALING_MATRIX
(when flagged) / DECODE_PARAMS controls (dpb[] naming references by request
timestamp, as GStreamer's v4l2slh264dec) and the OUTPUT bytes (its slice NAL
units); the queues are set up for the SPS's coded size (again at an IDR of
another size), one request per picture as for VP9 (step 3), and the CAPTURE
picture cropped to the SPS's visible rectangle. Pictures are output in display
order (sorted by POC, an IDR period at a time). Field pictures, 10-bit and
non-4:2:0 streams are refused.

AV1 (``client_av1.Av1StatelessDecode``; the OUTPUT format
``V4L2_PIX_FMT_AV1_FRAME``): per frame the controls ``av1_fill.fill_stream``
gives, the queues set up for the sequence's largest frame with the SEQUENCE
control set before CAPTURE (NV12 or P010), a client show_existing_frame
outputs the kept picture again (see that module).

Every wait is bounded by ``timeout`` (a DecodeTimeout names what was awaited).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import select
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from linuxpy.video import raw

from daedalus.m2m.layout import Geometry, crop
from daedalus.m2m.v4l2 import (
    CAPTURE_FORMATS,
    DEFAULT_BUFFERS,
    DEFAULT_TIMEOUT,
    BufferQueue,
    DecodeError,
    DecodeTimeout,
    Dequeued,
    Frame,
    M2MNode,
    StreamRefused,
    daemon_hint,
    timestamp_to_timeval,
)
from daedalus.skeleton.v4l2dev import CAPTURE, OUTPUT, PixFormat, find_node
from daedalus.stateless import vp9_ctrls
from daedalus.stateless.h264_requests import (
    V4L2_CID_STATELESS_H264_SPS,
    H264Request,
    H264RequestBuilder,
    H264StreamError,
)
from daedalus.stateless.h264_syntax import H264SyntaxError
from daedalus.stateless.vp9_header import (
    NUM_REF_FRAMES,
    Vp9FrameHeader,
    Vp9HeaderError,
    Vp9Parser,
    fill,
    split_superframe,
)

STATELESS_CARD = "daedalus-v4l2-stateless"  # DAEDALUS_NAME "-stateless": sysfs name and card

# <linux/ioctl.h> on x86-64 / arm64: dir << 30 | size << 16 | type << 8 | nr
_IOC_NONE = 0
_IOC_READ = 2


def _ioc(direction: int, kind: str, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (ord(kind) << 8) | nr


# <linux/media.h>
MEDIA_IOC_REQUEST_ALLOC = _ioc(_IOC_READ, "|", 0x05, ctypes.sizeof(ctypes.c_int))
MEDIA_REQUEST_IOC_QUEUE = _ioc(_IOC_NONE, "|", 0x80, 0)
MEDIA_REQUEST_IOC_REINIT = _ioc(_IOC_NONE, "|", 0x81, 0)
MEDIA_INTF_T_V4L_VIDEO = 0x00000200

# <linux/videodev2.h>
V4L2_CTRL_WHICH_REQUEST_VAL = 0x0F010000
V4L2_BUF_FLAG_IN_REQUEST = 0x00000080
V4L2_BUF_FLAG_REQUEST_FD = 0x00800000
V4L2_BUF_CAP_SUPPORTS_REQUESTS = 1 << 3
V4L2_PIX_FMT_VP9_FRAME = "VP9F"
V4L2_PIX_FMT_H264_SLICE = "S264"
V4L2_PIX_FMT_NV12 = "NV12"
V4L2_PIX_FMT_P010 = "P010"

V4L2_PIX_FMT_AV1_FRAME = "AV1F"

# the container codec (daedalus.parse.readers) -> the stateless OUTPUT format
CODED_FORMATS = {"vp9": V4L2_PIX_FMT_VP9_FRAME, "h264": V4L2_PIX_FMT_H264_SLICE,
                 "av1": V4L2_PIX_FMT_AV1_FRAME}


def _ioctl(fd: int, request: int, arg: ctypes.Structure | ctypes.c_int | int = 0) -> None:
    """The request API's and S_EXT_CTRLS's ioctls (a host test's fake replaces it)."""
    fcntl.ioctl(fd, request, arg)  # OSError(errno) on failure


def request_ns(number: int) -> int:
    """The kernel's timestamp (ns) of a buffer queued with timestamp *number*
    (``timestamp_to_timeval``: {number // 10**6 s, number % 10**6 us}): what
    a control names that request's frame by."""
    secs, usecs = timestamp_to_timeval(number)
    return secs * 1_000_000_000 + usecs * 1000


# --- finding the node and its media device --------------------------------------------


def find_stateless_node() -> Path:
    """The daedalus-v4l2 stateless /dev/videoN (sysfs name, then QUERYCAP card)."""
    return find_node(STATELESS_CARD)


def find_media_node(video: str | Path) -> Path:
    """The /dev/mediaN of *video*: on the node's device in sysfs, with a V4L
    video interface of the node's major:minor in its topology."""
    from daedalus.mc.topology import MediaNode, media_nodes_of

    rdev = os.stat(video).st_rdev
    wanted = (os.major(rdev), os.minor(rdev))
    for media in media_nodes_of(video):
        with MediaNode(media) as m:
            interfaces = m.topology().interfaces
        if any(i.intf_type == MEDIA_INTF_T_V4L_VIDEO and (i.major, i.minor) == wanted
               for i in interfaces):
            return media
    raise FileNotFoundError(f"no media device has {video} among its interfaces")


# --- the request API ----------------------------------------------------------------


class MediaRequest:
    """One media request fd (MEDIA_IOC_REQUEST_ALLOC); closes on exit from a with block."""

    def __init__(self, media_fd: int) -> None:
        fd = ctypes.c_int(-1)
        _ioctl(media_fd, MEDIA_IOC_REQUEST_ALLOC, fd)
        self.fd = int(fd.value)

    def __enter__(self) -> MediaRequest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def queue(self) -> None:
        """MEDIA_REQUEST_IOC_QUEUE: the driver validates it (ENOENT: a required
        control or the buffer missing) and runs it."""
        _ioctl(self.fd, MEDIA_REQUEST_IOC_QUEUE)

    def reinit(self) -> None:
        """MEDIA_REQUEST_IOC_REINIT: empty again, for the next frame (EBUSY while
        queued and not yet completed)."""
        _ioctl(self.fd, MEDIA_REQUEST_IOC_REINIT)

    def wait(self, timeout: float) -> bool:
        """poll(2) for POLLPRI (the request completed) for up to *timeout* s."""
        poller = select.poll()
        poller.register(self.fd, select.POLLPRI)
        ready = poller.poll(max(0, int(timeout * 1000)))
        return bool(ready and ready[0][1] & select.POLLPRI)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def ext_controls(controls: Sequence[tuple[int, bytes]], request_fd: int | None) -> tuple[
        raw.v4l2_ext_controls, ctypes.Array[raw.v4l2_ext_control],
        list[ctypes.Array[ctypes.c_char]]]:
    """The ``struct v4l2_ext_controls`` of S_EXT_CTRLS for compound *controls*
    ((id, payload) each, ``size`` and ``ptr`` set): into request *request_fd*
    (``which = V4L2_CTRL_WHICH_REQUEST_VAL``), or the file's current values
    (``V4L2_CTRL_WHICH_CUR_VAL``, 0) when None. The arrays it points to come
    back too: keep them alive across the ioctl."""
    array = (raw.v4l2_ext_control * len(controls))()
    payloads = []
    for one, (cid, data) in zip(array, controls, strict=True):
        buf = ctypes.create_string_buffer(data, len(data))
        payloads.append(buf)
        one.id = cid
        one.size = len(data)
        one.ptr = ctypes.addressof(buf)
    ctrls = raw.v4l2_ext_controls()
    ctrls.which = V4L2_CTRL_WHICH_REQUEST_VAL if request_fd is not None else 0
    ctrls.count = len(controls)
    ctrls.request_fd = request_fd if request_fd is not None else 0
    ctrls.controls = ctypes.cast(array, ctypes.POINTER(raw.v4l2_ext_control))
    return ctrls, array, payloads


def set_controls(fd: int, controls: Sequence[tuple[int, bytes]],
                 request_fd: int | None = None) -> None:
    """VIDIOC_S_EXT_CTRLS of compound *controls* (see ``ext_controls``)."""
    ctrls, _array, _payloads = ext_controls(controls, request_fd)
    _ioctl(fd, raw.IOC.S_EXT_CTRLS, ctrls)


class RequestQueue(BufferQueue):
    """Phase 8.5's BufferQueue (MMAP) plus QBUF in a media request."""

    def queue_in_request(self, index: int, data: bytes, timestamp: int,
                         request_fd: int) -> None:
        """QBUF of OUTPUT buffer *index* holding *data*, with *timestamp* (see
        ``request_ns``), into request *request_fd* (V4L2_BUF_FLAG_REQUEST_FD)."""
        if len(data) > self.lengths[index]:
            raise DecodeError(f"a frame of {len(data)} bytes does not fit an OUTPUT buffer "
                              f"of {self.lengths[index]}")
        buf, plane = self._buffer(index)
        self._fill(index, data)
        plane.bytesused = len(data)
        plane.length = self.lengths[index]
        buf.timestamp.secs, buf.timestamp.usecs = timestamp_to_timeval(timestamp)
        buf.flags = V4L2_BUF_FLAG_REQUEST_FD
        buf.m2.request_fd = request_fd
        _ioctl(self.fd, raw.IOC.QBUF, buf)


# --- the decode -----------------------------------------------------------------------


@dataclass
class StatelessStats:
    frames: int = 0              # pictures output (shown frames and show_existing_frame)
    requests: int = 0            # requests queued
    hidden: int = 0              # frames decoded but not shown
    shown_again: int = 0         # show_existing_frame frames (no request)
    errors: list[int] = field(default_factory=list)  # request numbers whose buffers erred
    sizes: list[tuple[int, int]] = field(default_factory=list)  # each distinct size
    frame_bytes: list[int] = field(default_factory=list)  # per picture output
    pixfmts: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _Queues:
    width: int
    height: int
    capture_fmt: PixFormat
    output: RequestQueue
    capture: BufferQueue
    requests: list[MediaRequest | None]


class Vp9StatelessDecode:
    """One decode of VP9 *packets* ((index, bytes) of a container) through the
    stateless node (see the module doc); *on_frame* gets every output picture
    in display order.

    CAPTURE buffers are reused as soon as they are dequeued, also those whose
    picture a later frame references: unlike hardware decoders, which read
    reference pictures back from the CAPTURE buffers they wrote, the daemon
    keeps its own references (the FFmpeg decoder's frame pool), so the
    client needs no CAPTURE buffer per reference slot. The control still
    names the references, by timestamp, and the daemon checks them against
    the slots it holds (vp9_check)."""

    def __init__(self, node: M2MNode, media_fd: int, packets: Iterator[tuple[int, bytes]],
                 on_frame: Callable[[Frame], None], *, buffers: int = DEFAULT_BUFFERS,
                 timeout: float = DEFAULT_TIMEOUT, log: Callable[[str], None] | None = None,
                 warn: Callable[[str], None] | None = None) -> None:
        self.node = node
        self.media_fd = media_fd
        self.packets = packets
        self.on_frame = on_frame
        self.buffers = buffers
        self.timeout = timeout
        self.log = log or (lambda text: None)
        self.warn = warn or self.log
        self.stats = StatelessStats()
        self.parser = Vp9Parser()
        self.slot_ts: list[int | None] = [None] * NUM_REF_FRAMES   # ns, per reference slot
        self.slot_pics: list[Frame | None] = [None] * NUM_REF_FRAMES
        self.queues: _Queues | None = None
        self.number = 0   # the last request's timestamp

    # -- set-up ---------------------------------------------------------------------

    CODED_FORMAT = V4L2_PIX_FMT_VP9_FRAME

    def _configure(self, width: int, height: int, fmt_control: tuple[int, bytes],
                   pixelformat: str) -> _Queues:
        """Both queues for frames of *width* x *height* (see step 1): the
        codec's format control (*fmt_control*: the frame header, the SPS) is
        set outside any request before CAPTURE is looked at, as
        dev-stateless-decoder.rst asks, and CAPTURE must then be *pixelformat*
        (NV12 for 8-bit 4:2:0, P010 for 10-bit)."""
        self._teardown()
        self.node.check_m2m()
        offered = self.node.formats(OUTPUT)
        fourcc = self.CODED_FORMAT
        if fourcc not in offered:
            raise StreamRefused(f"{self.node.path} does not offer {fourcc} "
                                f"(it offers {', '.join(offered) or 'none'})")
        out = self.node.set_output_format(fourcc, width, height)
        if (out.pixelformat, out.width, out.height) != (fourcc, width, height):
            raise StreamRefused(f"S_FMT(OUTPUT, {fourcc} {width}x{height}) "
                                f"gave {out.pixelformat} {out.width}x{out.height}")
        try:
            set_controls(self.node.fd, [fmt_control])
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            raise StreamRefused(f"the node refuses the stream's control {fmt_control[0]:#x} "
                                "(EINVAL): it has no CAPTURE format for this bit depth or "
                                "chroma format") from None
        cap = self.node.g_fmt(CAPTURE)
        if cap.pixelformat != pixelformat or cap.width < width or cap.height < height:
            raise DecodeError(f"CAPTURE format {cap.pixelformat} {cap.width}x{cap.height} "
                              f"for {width}x{height} frames: this client wants {pixelformat} "
                              "at least as large")
        output = RequestQueue(self.node.fd, OUTPUT)
        capture = BufferQueue(self.node.fd, CAPTURE)
        queues = _Queues(width, height, cap, output, capture, [])
        self.queues = queues
        count = output.request(self.buffers)
        if count < 1 or capture.request(self.buffers) < 1:
            raise DecodeError("REQBUFS granted no buffers")
        queues.requests = [None] * count
        output.streamon()
        capture.streamon()
        self.log(f"OUTPUT {out.pixelformat} {width}x{height}, {count} buffers of "
                 f"{out.sizeimage} bytes; CAPTURE {cap.pixelformat} {cap.width}x{cap.height}, "
                 f"bytesperline {cap.bytesperline}, {capture.count} buffers")
        return queues

    def _teardown(self) -> None:
        queues, self.queues = self.queues, None
        if queues is None:
            return
        queues.output.close()
        queues.capture.close()
        for request in queues.requests:
            if request is not None:
                request.close()

    # -- the loop -------------------------------------------------------------------

    def run(self) -> StatelessStats:
        start = time.monotonic()
        try:
            for index, packet in self.packets:
                try:
                    frames = split_superframe(packet)
                except Vp9HeaderError as exc:
                    raise DecodeError(f"packet {index}: {exc}") from None
                for frame in frames:
                    self._frame(index, frame)
        finally:
            self.stats.seconds = time.monotonic() - start
            self._teardown()
        return self.stats

    def _frame(self, index: int, data: bytes) -> None:
        try:
            h = self.parser.parse(data)
        except Vp9HeaderError as exc:
            raise DecodeError(f"packet {index}: {exc}") from None
        if h.show_existing_frame:
            self.parser.advance(h)
            self._show_existing(index, h)
            return
        if h.color.bit_depth not in (8, 10) or not (h.color.subsampling_x and
                                                     h.color.subsampling_y):
            raise StreamRefused(f"packet {index}: a {h.color.bit_depth}-bit frame with "
                                f"subsampling ({h.color.subsampling_x}, "
                                f"{h.color.subsampling_y}): the node's CAPTURE formats NV12 "
                                "and P010 carry 4:2:0 at 8 and 10 bits only")
        capture = V4L2_PIX_FMT_NV12 if h.color.bit_depth == 8 else V4L2_PIX_FMT_P010
        ctrl = fill(h, self.slot_ts)
        queues = self.queues
        if queues is None or (h.width, h.height, capture) != (
                queues.width, queues.height, queues.capture_fmt.pixelformat):
            if queues is not None and not h.key_frame:
                raise DecodeError(f"packet {index}: the frame size or depth changes to "
                                  f"{h.width}x{h.height} {capture} on an inter frame (this "
                                  "client sets the queues up again on key frames only)")
            queues = self._configure(h.width, h.height,
                                     (vp9_ctrls.V4L2_CID_STATELESS_VP9_FRAME, ctrl.pack()),
                                     capture)
        self.number += 1
        picture = self._request(queues, data,
                                [(vp9_ctrls.V4L2_CID_STATELESS_VP9_FRAME, ctrl.pack())],
                                self.number, h.key_frame)
        self.parser.advance(h)
        for slot in range(NUM_REF_FRAMES):
            if h.refresh_frame_flags & (1 << slot):
                self.slot_ts[slot] = request_ns(self.number)
                self.slot_pics[slot] = picture
        if picture is None:
            return
        if h.show_frame:
            self._output(picture)
        else:
            self.stats.hidden += 1

    def _show_existing(self, index: int, h: Vp9FrameHeader) -> None:
        picture = self.slot_pics[h.frame_to_show_map_idx]
        self.stats.shown_again += 1
        if picture is None:
            self.stats.errors.append(self.number)
            self.warn(f"packet {index}: show_existing_frame of slot "
                      f"{h.frame_to_show_map_idx}, which holds no decoded picture")
            return
        self._output(picture)

    def _output(self, picture: Frame) -> None:
        size = (picture.width, picture.height)
        if size not in self.stats.sizes:
            self.stats.sizes.append(size)
        if picture.pixfmt not in self.stats.pixfmts:
            self.stats.pixfmts.append(picture.pixfmt)
        self.stats.frames += 1
        self.stats.frame_bytes.append(len(picture.data))
        self.on_frame(picture)

    def _request(self, queues: _Queues, data: bytes, controls: Sequence[tuple[int, bytes]],
                 number: int, key: bool,
                 visible: tuple[int, int] | None = None) -> Frame | None:
        """Steps 3 and 4 for one frame: its picture (cropped to *visible*, width
        and height, when given), None when a buffer erred."""
        slot = (number - 1) % len(queues.requests)
        request = queues.requests[slot]
        if request is None:
            request = queues.requests[slot] = MediaRequest(self.media_fd)
        else:
            request.reinit()
        set_controls(self.node.fd, controls, request.fd)
        queues.output.queue_in_request(slot, data, number, request.fd)
        cap_index = slot % queues.capture.count
        queues.capture.queue(cap_index)
        request.queue()
        self.stats.requests += 1
        if not request.wait(self.timeout):
            raise DecodeTimeout(f"request {number} did not complete within {self.timeout:g} s"
                                f"{daemon_hint()}")
        out = self._dequeue(queues.output, "OUTPUT", number)
        cap = self._dequeue(queues.capture, "CAPTURE", number)
        if out.index != slot or cap.index != cap_index:
            raise DecodeError(f"request {number}: DQBUF gave OUTPUT {out.index} / CAPTURE "
                              f"{cap.index}, {slot} / {cap_index} were queued")
        if cap.timestamp != number:
            raise DecodeError(f"request {number}: the CAPTURE buffer carries timestamp "
                              f"{cap.timestamp}, not its OUTPUT buffer's")
        if out.error or cap.error:
            self.stats.errors.append(number)
            self.warn(f"request {number}: {'OUTPUT' if out.error else 'CAPTURE'} buffer "
                      "returned with ERROR (the frame was not decoded)")
            return None
        fmt = queues.capture_fmt
        width, height = visible or (queues.width, queues.height)
        geometry = Geometry(width, height, CAPTURE_FORMATS[fmt.pixelformat])
        with queues.capture.view(cap.index) as view:
            picture = crop(view, fmt.bytesperline, fmt.height, geometry)
        return Frame(width, height, number, key, picture, fmt.pixelformat)

    def _dequeue(self, queue: BufferQueue, name: str, number: int) -> Dequeued:
        """DQBUF of *queue*, waiting (the request completes with its OUTPUT
        buffer; the CAPTURE buffer is done right after)."""
        deadline = time.monotonic() + self.timeout
        while True:
            buf = queue.dequeue()
            if buf is not None:
                return buf
            if time.monotonic() > deadline:
                raise DecodeTimeout(f"request {number} completed, but its {name} buffer did "
                                    f"not come back within {self.timeout:g} s")
            self.node.poll(0.05)


class H264StatelessDecode(Vp9StatelessDecode):
    """One decode of H.264 *packets* (Annex-B access units, decode order)
    through the stateless node: the controls and OUTPUT bytes of every
    picture come from ``h264_requests.H264RequestBuilder`` (the pure part,
    tested on the host through the daemon's handler), this class only queues
    them (see the module doc). *on_frame* gets the pictures in display order:
    those since the last IDR are held and given out sorted by POC at the next
    IDR and at the end (a simple, GOP-long reorder buffer)."""

    CODED_FORMAT = V4L2_PIX_FMT_H264_SLICE

    def __init__(self, node: M2MNode, media_fd: int, packets: Iterator[tuple[int, bytes]],
                 on_frame: Callable[[Frame], None], **kwargs: Any) -> None:
        super().__init__(node, media_fd, packets, on_frame, **kwargs)
        self.builder = H264RequestBuilder(timestamp_ns=request_ns)
        self.pending: list[tuple[int, Frame]] = []   # (POC, picture) since the last IDR

    def run(self) -> StatelessStats:
        start = time.monotonic()
        try:
            for index, packet in self.packets:
                try:
                    requests = self.builder.feed(packet)
                except (H264StreamError, H264SyntaxError) as exc:
                    raise DecodeError(f"packet {index}: {exc}") from None
                for req in requests:
                    self._h264_frame(index, req)
            self._flush()
        finally:
            self.stats.seconds = time.monotonic() - start
            self._teardown()
        return self.stats

    def _h264_frame(self, index: int, req: H264Request) -> None:
        s = req.sps.sps
        if (s.bit_depth_luma_minus8 not in (0, 2) or s.chroma_format_idc != 1
                or s.bit_depth_chroma_minus8 != s.bit_depth_luma_minus8):
            raise StreamRefused(f"packet {index}: {8 + s.bit_depth_luma_minus8}-bit, "
                                f"chroma_format_idc {s.chroma_format_idc}: the node's CAPTURE "
                                "formats NV12 and P010 carry 4:2:0 at 8 and 10 bits only")
        capture = V4L2_PIX_FMT_P010 if s.bit_depth_luma_minus8 else V4L2_PIX_FMT_NV12
        x, y, w, h = req.sps.visible_rect()
        if x or y:
            raise StreamRefused(f"packet {index}: cropping from the top / left is not "
                                "handled by this client")
        coded = req.sps.coded_size()
        queues = self.queues
        if queues is None or (*coded, capture) != (queues.width, queues.height,
                                                   queues.capture_fmt.pixelformat):
            if queues is not None and not req.idr:
                raise DecodeError(f"packet {index}: the coded size or depth changes to "
                                  f"{coded[0]}x{coded[1]} {capture} on a non-IDR picture")
            self._flush()
            sps = next(c for c in req.controls if c[0] == V4L2_CID_STATELESS_H264_SPS)
            queues = self._configure(*coded, sps, capture)
        if req.idr:
            self._flush()
        self.number = req.number
        picture = self._request(queues, req.bitstream, req.controls, req.number, req.idr,
                                visible=(w, h))
        if picture is not None:
            self.pending.append((req.poc, picture))

    def _flush(self) -> None:
        for _, picture in sorted(self.pending, key=lambda item: item[0]):
            self._output(picture)
        self.pending = []


def decode_for_codec(codec: str) -> type[Vp9StatelessDecode]:
    """The decode class of a container codec (ValueError for a codec the node
    has no format for)."""
    if codec == "vp9":
        return Vp9StatelessDecode
    if codec == "h264":
        return H264StatelessDecode
    if codec == "av1":
        from daedalus.stateless.client_av1 import Av1StatelessDecode  # it imports this module
        return Av1StatelessDecode
    raise ValueError(f"codec {codec!r} has no stateless format on the node "
                     f"(it offers {', '.join(CODED_FORMATS)})")
