"""Hostile clients of the stateful decoder node (issue #9's guest suite).

Each scenario is what an unprivileged user (or a buggy application) can do to
``/dev/videoN`` without any help from root: formats that change under queued
buffers, a stalled daemon, too many open files, abusive formats and buffers,
random ioctl sequences. Scenarios report what happened as JSON lines (one
event per line: errnos, buffer flags, digests of decoded frames, elapsed
times); the guest tests in ``phases/8.5-m2m/tests/test_hostile_guest.py``
assert on them.

Running as nobody: ``run_unprivileged()`` forks the calling process, drops
to uid/gid 65534 with no supplementary groups and no capabilities, and runs
the scenario there; the events come back on a pipe. Forking (not a fresh
interpreter) matters in the guest: importing this package takes about a
minute under TCG, where every file lookup crosses 9p. A scenario that does
not end within its timeout is SIGKILLed; one that does not die then (stuck
in the kernel) is reported with its kernel stack, and the caller goes on.
Every call a scenario makes runs under a watchdog that reports any call
taking longer than its limit (``stuck``).

Privileged parts stay with the caller (root): chmod of the node, daemon
control (SIGSTOP, a fake daemon on ``/dev/daedalus-v4l2``), module
parameters. ``stall()`` and ``FakeDaemon`` are those parts for the stalled
daemon and drain scenarios.

Command line (in a guest, as root)::

    python -m daedalus.m2m.hostile SCENARIO [--seed N] [--sequences N] [--user UID]

prints the events and exits 0 when the scenario ran to its end (asserting
is the tests' business). ``stall`` stops and resumes daedalusd itself and
``drain`` replaces it with the fake daemon for the run.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import fcntl
import hashlib
import json
import mmap
import os
import random
import select
import signal
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
from linuxpy.video import raw

from daedalus.dispatch.device import Device
from daedalus.m2m.layout import Geometry, buffer_size, crop, fits, lay_out
from daedalus.m2m.v4l2 import (
    EVENT_EOS,
    EVENT_SOURCE_CHANGE,
    V4L2_DEC_CMD_START,
    V4L2_DEC_CMD_STOP,
    BufferQueue,
    Dequeued,
    LastBufferDequeued,
    M2MNode,
    timestamp_to_timeval,
    timeval_to_timestamp,
)
from daedalus.proto import (
    FRAME_KEY,
    HDR_SIZE,
    MAX_PAYLOAD,
    RESPONSE,
    DecodeStatus,
    FrameInfo,
    MsgType,
    PixFmt,
    fnv1a64,
    pack_fetch_resp,
    pack_frame_resp,
    pack_hello,
    pack_message,
    parse_decode_req,
    parse_fetch_req,
    parse_header,
)
from daedalus.skeleton.v4l2dev import CAPTURE, OUTPUT, PixFormat, find_node, fourcc

NOBODY = 65534
CHARDEV = Path("/dev/daedalus-v4l2")
PARAMS = Path("/sys/module/daedalus_v4l2/parameters")
MAX_CONTEXTS = PARAMS / "max_contexts"
DAEMON_TIMEOUT = PARAMS / "daemon_timeout_ms"
CALL_LIMIT = 10.0        # seconds any single call may take before it counts as hung
EXIT_STUCK = 3           # a scenario's exit status when its watchdog fired
MMAP = int(raw.Memory.MMAP)
DMABUF = int(raw.Memory.DMABUF)
USERPTR = int(raw.Memory.USERPTR)
VP9_CLIP = "vp9-320x240"
H264_CLIP = "h264-high-320x240"

# The fake daemon's frames (drain scenario): small enough that a FETCH is quick.
FAKE_WIDTH = 64
FAKE_HEIGHT = 48
FAKE_PER_ANSWER = 16     # frames per FEED answer and per FLUSH answer


class ScenarioError(Exception):
    """A scenario could not get to the point it tests (one line)."""


# --- reporting and the watchdog ---------------------------------------------------------


class Reporter:
    """Events as JSON lines on a file descriptor; unbuffered and thread-safe, so
    whatever was reported before a hang reaches the caller."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()

    def __call__(self, event: str, **fields: Any) -> None:
        line = (json.dumps({"event": event, **fields}, default=str) + "\n").encode()
        with self.lock:
            view = memoryview(line)
            while view:
                view = view[os.write(self.fd, view):]


class Watchdog:
    """Times every step of a scenario; a step that outlives its limit is
    reported as ``stuck`` (and, if *fatal*, ends the process at once: its
    other threads may be stuck in the kernel, the caller's timeout then
    finds the process)."""

    def __init__(self, report: Reporter, limit: float = CALL_LIMIT, fatal: bool = True) -> None:
        self.report = report
        self.limit = limit
        self.fatal = fatal
        self.active: dict[int, tuple[str, float, float]] = {}
        self.fired: set[tuple[int, float]] = set()
        self.slowest: tuple[float, str] = (0.0, "")
        threading.Thread(target=self._run, name="watchdog", daemon=True).start()

    @contextmanager
    def step(self, what: str, limit: float | None = None) -> Iterator[None]:
        ident = threading.get_ident()
        start = time.monotonic()
        self.active[ident] = (what, start, self.limit if limit is None else limit)
        try:
            yield
        finally:
            self.active.pop(ident, None)
            elapsed = time.monotonic() - start
            if elapsed > self.slowest[0]:
                self.slowest = (elapsed, what)

    def call(self, what: str, fn: Callable[..., Any], *args: Any,
             limit: float | None = None) -> tuple[Any, int | None, float]:
        """(value, None, seconds) or (None, errno, seconds) when *fn* raised OSError."""
        start = time.monotonic()
        with self.step(what, limit):
            try:
                value, err = fn(*args), None
            except OSError as exc:
                value, err = None, exc.errno
        return value, err, time.monotonic() - start

    def _run(self) -> None:
        while True:
            time.sleep(0.2)
            now = time.monotonic()
            for ident, (what, start, limit) in list(self.active.items()):
                if now - start > limit and (ident, start) not in self.fired:
                    self.fired.add((ident, start))
                    self.report("stuck", call=what, seconds=round(now - start, 1), limit=limit,
                                fatal=self.fatal)
                    if self.fatal:
                        os._exit(EXIT_STUCK)


class Control:
    """Lines from the caller (e.g. ``continue`` once the daemon runs again)."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd
        self.buffer = b""

    def wait(self, word: str, timeout: float) -> bool:
        if self.fd is None:
            return True
        deadline = time.monotonic() + timeout
        while True:
            lines = self.buffer.split(b"\n")
            if word.encode() in lines[:-1]:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                chunk = os.read(self.fd, 4096)
                if not chunk:
                    return False
                self.buffer += chunk


# --- what a scenario gets -------------------------------------------------------------------


@dataclass
class Options:
    """Everything a scenario needs, prepared by the (privileged) caller before
    the fork: the unprivileged process reads no file but the node."""

    node: Path
    vp9: list[bytes]                   # packets of corpus vp9-320x240 (30, a keyframe first)
    h264: list[bytes] = field(default_factory=list)  # packets of h264-high-320x240
    seed: int = 0
    sequences: int = 500               # fuzz
    contexts: int = 32                 # fairness
    max_contexts: int | None = None    # the module parameter, if the module has it
    cycles: int = 1000                 # memory: open/close cycles
    stall_buffers: int = 16
    wait: float = 60.0                 # longest wait for the decoder to act (scaled by the caller)


def load_options(node: Path | None = None, **fields: Any) -> Options:
    """Options with the corpus clips' packets (phase 8.3's reader) and the module's
    max_contexts parameter read now, as root."""
    from daedalus.parse import corpus
    from daedalus.parse.readers import read_all

    _, vp9 = read_all(corpus.path(VP9_CLIP))
    _, h264 = read_all(corpus.path(H264_CLIP))
    return Options(node=node or find_node(), vp9=[p.data for p in vp9],
                   h264=[p.data for p in h264], max_contexts=read_max_contexts(), **fields)


def read_max_contexts() -> int | None:
    try:
        return int(MAX_CONTEXTS.read_text().strip())
    except (OSError, ValueError):
        return None


def meminfo() -> dict[str, int]:
    """Kernel memory figures of /proc/meminfo, in kB."""
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("MemFree", "Slab", "SReclaimable", "SUnreclaim", "VmallocUsed",
                   "KernelStack", "PageTables"):
            out[key] = int(rest.split()[0])
    return out


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- an open file of the node, with the raw ioctls the scenarios abuse ---------------


class Client(M2MNode):
    """M2MNode (non-blocking) plus raw forms of the buffer ioctls: every field
    can be set to what a hostile caller would set. Errors are OSError."""

    def io(self, request: int, arg: Any) -> None:
        fcntl.ioctl(self.fd, request, arg)

    def fmt(self, request: int, buf_type: int, code: str | int, width: int, height: int,
            sizeimage: int = 0, num_planes: int = 1) -> dict[str, int | str]:
        """S_FMT / TRY_FMT with every field chosen; the format the driver returned."""
        f = raw.v4l2_format()
        f.type = buf_type
        pix = f.fmt.pix_mp
        pix.pixelformat = fourcc(code) if isinstance(code, str) else code
        pix.width = width
        pix.height = height
        pix.num_planes = num_planes
        pix.plane_fmt[0].sizeimage = sizeimage
        self.io(request, f)
        return asdict(self._pix(f))

    def reqbufs_raw(self, buf_type: int, count: int, memory: int = MMAP) -> int:
        rb = raw.v4l2_requestbuffers()
        rb.type = buf_type
        rb.count = count
        rb.memory = memory
        self.io(raw.IOC.REQBUFS, rb)
        return int(rb.count)

    def create_bufs(self, buf_type: int, count: int, sizeimage: int,
                    memory: int = MMAP) -> tuple[int, int]:
        """CREATE_BUFS with the current format but *sizeimage*: (first index, count)."""
        cb = raw.v4l2_create_buffers()
        cb.count = count
        cb.memory = memory
        cb.format.type = buf_type
        self.io(raw.IOC.G_FMT, cb.format)
        cb.format.fmt.pix_mp.plane_fmt[0].sizeimage = sizeimage
        self.io(raw.IOC.CREATE_BUFS, cb)
        return int(cb.index), int(cb.count)

    def _buf(self, buf_type: int, index: int, nplanes: int = 1,
             memory: int = MMAP) -> tuple[Any, Any]:
        planes = (raw.v4l2_plane * max(1, nplanes))()
        buf = raw.v4l2_buffer()
        buf.index = index
        buf.type = buf_type
        buf.memory = memory
        buf.length = nplanes
        buf.m.planes = ctypes.cast(planes, ctypes.POINTER(raw.v4l2_plane))
        return buf, planes

    def querybuf(self, buf_type: int, index: int) -> tuple[int, int]:
        """(plane length, mmap offset) of a buffer."""
        buf, planes = self._buf(buf_type, index)
        self.io(raw.IOC.QUERYBUF, buf)
        return int(planes[0].length), int(planes[0].m.mem_offset)

    def qbuf_raw(self, buf_type: int, index: int, *, bytesused: int = 0, length: int = 0,
                 data_offset: int = 0, nplanes: int = 1, memory: int = MMAP, fd: int = -1,
                 timestamp: int = 0) -> None:
        buf, planes = self._buf(buf_type, index, nplanes, memory)
        for plane in planes:
            plane.bytesused = bytesused
            plane.length = length
            plane.data_offset = data_offset
            if memory == DMABUF:
                plane.m.fd = fd
        buf.timestamp.secs, buf.timestamp.usecs = timestamp_to_timeval(timestamp)
        self.io(raw.IOC.QBUF, buf)

    def dqbuf_raw(self, buf_type: int) -> Dequeued:
        """DQBUF; OSError(EAGAIN) when nothing is done, as the kernel says."""
        buf, planes = self._buf(buf_type, 0)
        self.io(raw.IOC.DQBUF, buf)
        return Dequeued(index=int(buf.index), flags=int(buf.flags),
                        bytesused=int(planes[0].bytesused),
                        timestamp=timeval_to_timestamp(int(buf.timestamp.secs),
                                                       int(buf.timestamp.usecs)),
                        sequence=int(buf.sequence))

    def stream(self, on: bool, buf_type: int) -> None:
        self.io(raw.IOC.STREAMON if on else raw.IOC.STREAMOFF, ctypes.c_int(buf_type))

    def decoder_cmd_raw(self, cmd: int, flags: int = 0) -> None:
        dc = raw.v4l2_decoder_cmd()
        dc.cmd = cmd
        dc.flags = flags
        self.io(raw.IOC.DECODER_CMD, dc)

    def selection(self, target: int) -> tuple[int, int, int, int]:
        sel = raw.v4l2_selection()
        sel.type = CAPTURE
        sel.target = target
        self.io(raw.IOC.G_SELECTION, sel)
        return int(sel.r.left), int(sel.r.top), int(sel.r.width), int(sel.r.height)

    def subscribe_raw(self, event_type: int) -> None:
        sub = raw.v4l2_event_subscription()
        sub.type = event_type
        self.io(raw.IOC.SUBSCRIBE_EVENT, sub)

    def expbuf(self, buf_type: int, index: int) -> int:
        eb = raw.v4l2_exportbuffer()
        eb.type = buf_type
        eb.index = index
        eb.flags = os.O_CLOEXEC
        self.io(raw.IOC.EXPBUF, eb)
        os.close(int(eb.fd))
        return 0

    def map(self, length: int, offset: int) -> None:
        """mmap and unmap at once (the mapping itself is what is tested)."""
        mmap.mmap(self.fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE,
                  offset=offset).close()


def _open(node: Path) -> Client:
    return Client(node)


def _picture(cap: BufferQueue, buf: Dequeued, fmt: PixFormat, visible: Geometry) -> bytes:
    with memoryview(cap.maps[buf.index]) as view:  # released before any munmap
        return crop(view, fmt.bytesperline, fmt.height, visible)


def _buffer(buf: Dequeued) -> dict[str, Any]:
    return {"index": buf.index, "flags": buf.flags, "bytesused": buf.bytesused,
            "timestamp": buf.timestamp, "error": buf.error, "last": buf.last}


@dataclass
class Drive:
    """What came out of one stretch of decoding (see ``_drive``)."""

    frames: list[tuple[int, str]] = field(default_factory=list)   # (timestamp, sha256)
    output_errors: list[int] = field(default_factory=list)        # timestamps
    capture_errors: list[dict[str, Any]] = field(default_factory=list)
    last: dict[str, Any] | None = None
    epipe: bool = False
    eos: bool = False
    source_changes: int = 0
    timed_out: str = ""


def _drive(c: Client, out: BufferQueue, cap: BufferQueue, todo: list[tuple[int, bytes]],
           free: list[int], wait: float) -> Drive:
    """Queue *todo* on OUTPUT (buffers *free*), DECODER_CMD STOP after the last
    packet, and collect CAPTURE buffers until the LAST one, an EPIPE, or *wait*
    seconds without progress."""
    fmt = c.g_fmt(CAPTURE)
    _, _, width, height = c.visible_rect()
    visible = Geometry(width, height)
    result = Drive()
    stop_sent = False
    progress = time.monotonic()
    while True:
        moved = False
        while (buf := out.dequeue()) is not None:
            moved = True
            if buf.error:
                result.output_errors.append(buf.timestamp)
            free.append(buf.index)
        while free and todo:
            timestamp, data = todo.pop(0)
            out.queue(free.pop(), data, timestamp)
            moved = True
        if not todo and not stop_sent:
            c.decoder_cmd(V4L2_DEC_CMD_STOP)
            stop_sent = True
        while (event := c.dequeue_event()) is not None:
            if event[0] == EVENT_EOS:
                result.eos = True
            elif event[0] == EVENT_SOURCE_CHANGE:
                result.source_changes += 1
        try:
            got = cap.dequeue()
        except LastBufferDequeued:
            result.timed_out = "EPIPE before a LAST buffer"
            return result
        if got is not None:
            moved = True
            if got.error:
                result.capture_errors.append(_buffer(got))
            elif got.bytesused:
                result.frames.append((got.timestamp, digest(_picture(cap, got, fmt, visible))))
            if got.last:
                result.last = _buffer(got)
                break
            cap.queue(got.index)
        now = time.monotonic()
        if moved:
            progress = now
        elif now - progress > wait:
            result.timed_out = f"nothing moved for {wait:.0f} s ({len(result.frames)} frames)"
            return result
        else:
            time.sleep(0.005)
    try:
        cap.dequeue()
    except LastBufferDequeued:
        result.epipe = True
    deadline = time.monotonic() + 1.0
    while not result.eos and time.monotonic() < deadline:
        event = c.dequeue_event()
        if event is None:
            time.sleep(0.01)
        elif event[0] == EVENT_EOS:
            result.eos = True
    return result


def _wait_event(c: Client, kind: int, wait: float,
                out: BufferQueue | None = None) -> tuple[bool, float, list[dict[str, Any]]]:
    """Wait for an event of *kind*: (seen, seconds, OUTPUT buffers returned meanwhile)."""
    start = time.monotonic()
    returned: list[dict[str, Any]] = []
    while time.monotonic() - start < wait:
        event = c.dequeue_event()
        if event is not None and event[0] == kind:
            return True, time.monotonic() - start, returned
        while out is not None and (buf := out.dequeue()) is not None:
            returned.append(_buffer(buf))
        if event is None:
            c.poll(0.05)
    return False, time.monotonic() - start, returned


# --- scenario 1: CAPTURE buffers too small for the stream's real size --------------------


def overflow(opts: Options, report: Reporter, control: Control) -> None:
    """CAPTURE buffers queued for 16x16 (1,536 bytes), then a 320x240 stream:
    STREAMON(CAPTURE) must refuse them (EINVAL) or hand them back in error,
    empty; never write a 320x240 frame into them. Then the client sets CAPTURE
    up at the new size and decodes the rest of the clip."""
    dog = Watchdog(report)
    c = _open(opts.node)
    with dog.step("S_FMT(OUTPUT, VP90 16x16)"):
        c.set_output_format("VP90", 16, 16)
    small = c.g_fmt(CAPTURE)
    report("small_format", width=small.width, height=small.height,
           sizeimage=small.sizeimage)
    cap = BufferQueue(c.fd, CAPTURE)
    with dog.step("REQBUFS(CAPTURE, 4) and QBUF, not streaming"):
        count = cap.request(4)
        for index in range(count):
            cap.queue(index)
    report("capture_queued", count=count, lengths=cap.lengths)
    c.subscribe(EVENT_SOURCE_CHANGE)
    c.subscribe(EVENT_EOS)
    out = BufferQueue(c.fd, OUTPUT)
    with dog.step("REQBUFS(OUTPUT, 4), STREAMON(OUTPUT), two packets"):
        out_count = out.request(4)
        out.streamon()
        for index in (0, 1):
            out.queue(index, opts.vp9[index], index)
    free = list(range(2, out_count))
    with dog.step("waiting for SOURCE_CHANGE", limit=opts.wait + CALL_LIMIT):
        seen, seconds, returned = _wait_event(c, EVENT_SOURCE_CHANGE, opts.wait, out)
    free += [b["index"] for b in returned]
    report("source_change", seen=seen, seconds=round(seconds, 3), output=returned)
    if not seen:
        raise ScenarioError(f"no SOURCE_CHANGE within {opts.wait:.0f} s")
    big = c.g_fmt(CAPTURE)
    report("new_format", width=big.width, height=big.height, sizeimage=big.sizeimage,
           bytesperline=big.bytesperline, visible=c.visible_rect())

    _, err, seconds = dog.call("STREAMON(CAPTURE) with the too-small buffers", cap.streamon)
    report("streamon_small", errno=err, seconds=round(seconds, 3))
    if err is None:
        back: list[dict[str, Any]] = []
        epipe = False
        start, settle = time.monotonic(), None
        with dog.step("waiting for the too-small CAPTURE buffers",
                      limit=opts.wait + CALL_LIMIT):
            while len(back) < count and time.monotonic() - start < opts.wait:
                try:
                    buf = cap.dequeue()
                except LastBufferDequeued:
                    epipe = True
                    break
                if buf is not None:
                    back.append(_buffer(buf))
                    settle = settle or time.monotonic()
                elif settle is not None and time.monotonic() - settle > 1.0:
                    break
                else:
                    time.sleep(0.01)
        report("small_returned", buffers=back, epipe=epipe,
               seconds=round(time.monotonic() - start, 3))
        with dog.step("STREAMOFF(CAPTURE)"):
            cap.streamoff()

    # Done right: REQBUFS 0, G_FMT, buffers of the new size, STREAMON.
    with dog.step("REQBUFS(CAPTURE, 0)"):
        cap.release()
    fmt = c.g_fmt(CAPTURE)
    with dog.step("REQBUFS(CAPTURE, 4) at the new size, QBUF, STREAMON"):
        count = cap.request(4)
        for index in range(count):
            cap.queue(index)
        cap.streamon()
    report("resetup", count=count, lengths=cap.lengths, sizeimage=fmt.sizeimage,
           width=fmt.width, height=fmt.height)
    todo = [(i, data) for i, data in enumerate(opts.vp9)][2:]
    with dog.step("decoding the rest of the clip", limit=4 * opts.wait + CALL_LIMIT):
        result = _drive(c, out, cap, todo, free, opts.wait)
    report("decoded", **asdict(result))
    with dog.step("close"):
        cap.close()
        out.close()
        c.close()


# --- scenario 2: a stalled daemon ----------------------------------------------------------


def _feeding(opts: Options, buffers: int) -> tuple[Client, BufferQueue, int]:
    """A new context streaming OUTPUT with up to *buffers* VP9 packets queued
    (how many REQBUFS granted is the third value)."""
    c = _open(opts.node)
    c.set_output_format("VP90", 320, 240)
    out = BufferQueue(c.fd, OUTPUT)
    granted = out.request(buffers)
    out.streamon()
    for index in range(granted):
        out.queue(index, opts.vp9[index % len(opts.vp9)], index)
    return c, out, granted


def _stall_victim(opts: Options, inherited: list[int], go: int, status: int) -> NoReturn:
    """The forked client that the caller SIGKILLs while it closes a stalled context."""
    code = 1
    try:
        for fd in inherited:
            os.close(fd)
        v, out, _ = _feeding(opts, opts.stall_buffers)
        os.read(go, 1)
        for m in out.maps:
            m.close()  # a mapping keeps the file open: close() must be the release
        os.write(status, b"c")
        os.close(v.fd)
        os.write(status, b"d")
        code = 0
    finally:
        os._exit(code)


def stall_client(opts: Options, report: Reporter, control: Control) -> None:
    """Runs while the caller holds daedalusd stopped (SIGSTOP) with a long
    bridge timeout. Context A has 16 buffers queued (a FEED in flight);
    context D has a FEED in flight and a thread blocked in its own
    DECODER_CMD(STOP); then another open file B must be served at once, A's
    close() must return quickly and a client killed in close() must die
    quickly. After ``continue`` (the daemon runs again) D's thread must end."""
    dog = Watchdog(report, limit=opts.wait + 60, fatal=False)  # measure, do not die
    go_r, go_w = os.pipe()
    st_r, st_w = os.pipe()
    victim = os.fork()
    if victim == 0:
        _stall_victim(opts, [report.fd, go_w, st_r]
                      + ([control.fd] if control.fd is not None else []), go_r, st_w)
    os.close(go_r)
    os.close(st_w)

    a, a_out, granted = _feeding(opts, opts.stall_buffers)
    report("a_queued", buffers=granted)

    d = _open(opts.node)
    d.set_output_format("VP90", 320, 240)
    d_out = BufferQueue(d.fd, OUTPUT)
    d_out.request(1)
    d_out.streamon()
    d_out.queue(0, opts.vp9[0], 0)
    time.sleep(1.0)  # both pumps are now waiting for the daemon
    d_calls: dict[str, tuple[int | None, float]] = {}

    def stop_d() -> None:
        for name, fn in (("DECODER_CMD(STOP)", lambda: d.decoder_cmd(V4L2_DEC_CMD_STOP)),
                         ("G_SELECTION", d.visible_rect)):
            _, err, seconds = dog.call(f"D {name}", fn)
            d_calls[name] = (err, round(seconds, 3))

    blocked = threading.Thread(target=stop_d, name="D", daemon=True)
    blocked.start()
    time.sleep(0.5)

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        value, err, seconds = dog.call(f"B {name}", fn)
        report("b_call", call=name, errno=err, seconds=round(seconds, 3))
        return value

    b = timed("open", lambda: _open(opts.node))
    if b is None:
        raise ScenarioError("another open file could not be opened")
    timed("QUERYCAP", b.querycap)
    timed("G_FMT(OUTPUT)", lambda: b.g_fmt(OUTPUT))
    timed("G_FMT(CAPTURE)", lambda: b.g_fmt(CAPTURE))
    timed("S_FMT(OUTPUT)", lambda: b.set_output_format("VP90", 320, 240))
    b_cap = BufferQueue(b.fd, CAPTURE)
    timed("REQBUFS(CAPTURE, 2)", lambda: b_cap.request(2))
    timed("QBUF(CAPTURE)", lambda: b_cap.queue(0))
    timed("STREAMON(CAPTURE)", b_cap.streamon)
    timed("DQBUF(CAPTURE) O_NONBLOCK", lambda: b.dqbuf_raw(CAPTURE))

    for m in a_out.maps:
        m.close()  # a mapping keeps the file open: close() must be the release
    a_out.maps.clear()
    a_closed: dict[str, Any] = {}

    def close_a() -> None:  # in a thread: a close() that hangs must not hide the rest
        _, err, seconds = dog.call("close(A) with 16 buffers queued", os.close, a.fd)
        a_closed.update(errno=err, seconds=round(seconds, 3))

    closer = threading.Thread(target=close_a, name="close A", daemon=True)
    start = time.monotonic()
    closer.start()
    closer.join(10.0)
    report("a_close", buffers=granted, done=not closer.is_alive(),
           **(a_closed or {"errno": None, "seconds": round(time.monotonic() - start, 3)}))

    os.write(go_w, b"g")
    ready, _, _ = select.select([st_r], [], [], opts.wait + 30)
    said = os.read(st_r, 1) if ready else b""
    if said != b"c":
        report("victim", ready=False)
    else:
        time.sleep(0.5)
        ready, _, _ = select.select([st_r], [], [], 0)
        closed = bool(ready) and os.read(st_r, 1) == b"d"
        start = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        reaped = False
        while time.monotonic() - start < 10.0:
            if os.waitpid(victim, os.WNOHANG)[0]:
                reaped = True
                break
            time.sleep(0.02)
        report("victim", ready=True, closed_before_kill=closed, reaped=reaped,
               seconds=round(time.monotonic() - start, 3), pid=victim,
               state="" if reaped else proc_state(victim))
    report("measured")

    if not control.wait("continue", timeout=900):
        raise ScenarioError("the caller never said continue")
    blocked.join(opts.wait + 60)
    report("d_calls", calls=d_calls, still_blocked=blocked.is_alive())
    closer.join(opts.wait + 60)
    report("a_close_final", done=not closer.is_alive(), **a_closed)
    a.fd = -1
    for name, fn in (("close(B)", b.close), ("close(D)", d.close)):
        _, err, seconds = dog.call(name, fn)
        report("closed", call=name, errno=err, seconds=round(seconds, 3))


def stall(opts: Options, daemon_pid: int, *, daemon_timeout_ms: int = 30000,
          timeout: float = 240.0) -> Outcome:
    """As root: stop daedalusd (SIGSTOP) with the bridge timeout raised to
    *daemon_timeout_ms* (a FEED stays in flight for that long), run
    ``stall_client`` as nobody, then resume the daemon and let the client end."""
    saved = DAEMON_TIMEOUT.read_text().strip()
    DAEMON_TIMEOUT.write_text(str(daemon_timeout_ms))
    resumed = threading.Event()

    def resume() -> None:
        if not resumed.is_set():
            os.kill(daemon_pid, signal.SIGCONT)
            resumed.set()

    def on_event(event: dict[str, Any]) -> str | None:
        if event.get("event") == "measured":
            resume()
            return "continue"
        return None

    os.kill(daemon_pid, signal.SIGSTOP)
    try:
        return run_unprivileged("stall", opts, timeout=timeout, on_event=on_event)
    finally:
        resume()
        DAEMON_TIMEOUT.write_text(saved)


# --- scenario 3: memory and the context limit ----------------------------------------------


def memory(opts: Options, report: Reporter, control: Control) -> None:
    """Open files beyond max_contexts; an OUTPUT sizeimage of 2^31; REQBUFS 1000;
    kernel memory over 1,000 open/close cycles."""
    dog = Watchdog(report)
    attempts = opts.max_contexts + 3 if opts.max_contexts else 64
    before = meminfo()
    fds: list[int] = []
    failures: list[int] = []
    for _ in range(attempts):
        try:
            with dog.step("open"):
                fds.append(os.open(opts.node, os.O_RDWR | os.O_NONBLOCK))
        except OSError as exc:
            failures.append(exc.errno or 0)
    held = meminfo()
    opened = len(fds)
    reopen: int | None = None
    if fds and failures:
        os.close(fds.pop())
        try:
            with dog.step("open after a close"):
                fds.append(os.open(opts.node, os.O_RDWR | os.O_NONBLOCK))
        except OSError as exc:
            reopen = exc.errno
    for fd in fds:
        with dog.step("close"):
            os.close(fd)
    report("contexts", attempts=attempts, opened=opened, failures=failures,
           reopen_errno=reopen, before=before, held=held, after=meminfo())

    c = _open(opts.node)
    with dog.step("S_FMT(OUTPUT, sizeimage 2^31)"):
        asked = c.fmt(raw.IOC.S_FMT, OUTPUT, "VP90", 320, 240, sizeimage=1 << 31)
    got = c.g_fmt(OUTPUT)
    out_count, out_err, out_seconds = dog.call("REQBUFS(OUTPUT, 1000)", c.reqbufs_raw, OUTPUT,
                                               1000, limit=120.0)  # old kernels: 1 GiB
    length = c.querybuf(OUTPUT, 0)[0] if out_count else 0
    dog.call("REQBUFS(OUTPUT, 0)", c.reqbufs_raw, OUTPUT, 0)
    cap_count, cap_err, _ = dog.call("REQBUFS(CAPTURE, 1000)", c.reqbufs_raw, CAPTURE, 1000)
    dog.call("REQBUFS(CAPTURE, 0)", c.reqbufs_raw, CAPTURE, 0)
    c.close()
    report("clamps", s_fmt_sizeimage=asked["sizeimage"], g_fmt_sizeimage=got.sizeimage,
           output_count=out_count, output_errno=out_err, output_length=length,
           output_seconds=round(out_seconds, 3),
           capture_count=cap_count, capture_errno=cap_err)

    for _ in range(50):  # warm-up: slab caches reach their steady state
        os.close(os.open(opts.node, os.O_RDWR | os.O_NONBLOCK))
    start_mem, start = meminfo(), time.monotonic()
    for _ in range(opts.cycles):
        with dog.step("open/close cycle"):
            fd = os.open(opts.node, os.O_RDWR | os.O_NONBLOCK)
            os.close(fd)
    report("cycles", cycles=opts.cycles, seconds=round(time.monotonic() - start, 3),
           before=start_mem, after=meminfo())


# --- scenario 4: the drain with a daemon that answers 16 + 16 + 16 -----------------------


def drain_client(opts: Options, report: Reporter, control: Control) -> None:
    """Two OUTPUT buffers and DECODER_CMD STOP to a daemon that answers each FEED
    and the FLUSH with 16 frames (``FakeDaemon``); CAPTURE is set up on
    SOURCE_CHANGE as dev-decoder.rst says, a second after it."""
    dog = Watchdog(report)
    c = _open(opts.node)
    c.set_output_format("VP90", FAKE_WIDTH, FAKE_HEIGHT)
    c.subscribe(EVENT_SOURCE_CHANGE)
    c.subscribe(EVENT_EOS)
    out = BufferQueue(c.fd, OUTPUT)
    with dog.step("two OUTPUT buffers, STREAMON, DECODER_CMD(STOP)"):
        out.request(2)
        out.streamon()
        out.queue(0, bytes(range(1, 101)), 1)
        out.queue(1, bytes(range(2, 102)), 2)
        c.decoder_cmd(V4L2_DEC_CMD_STOP)
    with dog.step("waiting for SOURCE_CHANGE", limit=opts.wait + CALL_LIMIT):
        seen, seconds, returned = _wait_event(c, EVENT_SOURCE_CHANGE, opts.wait, out)
    report("source_change", seen=seen, seconds=round(seconds, 3), output=returned)
    if not seen:
        raise ScenarioError(f"no SOURCE_CHANGE within {opts.wait:.0f} s")
    time.sleep(1.0)  # the pump goes on with the drain meanwhile
    fmt = c.g_fmt(CAPTURE)
    _, _, width, height = c.visible_rect()
    visible = Geometry(width, height)
    cap = BufferQueue(c.fd, CAPTURE)
    with dog.step("CAPTURE set up"):
        for index in range(cap.request(4)):
            cap.queue(index)
        cap.streamon()
    buffers: list[dict[str, Any]] = []
    output = list(returned)
    progress = time.monotonic()
    epipe_early = False
    with dog.step("dequeuing until LAST", limit=4 * opts.wait + CALL_LIMIT):
        while True:
            while (buf := out.dequeue()) is not None:
                output.append(_buffer(buf))
            try:
                got = cap.dequeue()
            except LastBufferDequeued:
                epipe_early = True
                break
            if got is None:
                if time.monotonic() - progress > opts.wait:
                    break
                time.sleep(0.005)
                continue
            progress = time.monotonic()
            entry = _buffer(got)
            if got.bytesused and not got.error:
                entry["sha256"] = digest(_picture(cap, got, fmt, visible))
            buffers.append(entry)
            if got.last:
                break
            cap.queue(got.index)
    epipe = epipe_early
    if not epipe_early:
        try:
            cap.dequeue()
        except LastBufferDequeued:
            epipe = True
    eos, _, _ = _wait_event(c, EVENT_EOS, 1.0)
    report("drain", buffers=buffers, output=output, epipe=epipe, epipe_before_last=epipe_early,
           eos=eos, width=width, height=height)
    cap.close()
    out.close()
    c.close()


def fake_frame_pixels(n: int) -> bytes:
    """Frame *n* of the fake daemon, tightly packed NV12: luma all n + 1, chroma all 200 - n."""
    luma = FAKE_WIDTH * FAKE_HEIGHT
    return bytes([n + 1]) * luma + bytes([200 - n]) * (luma // 2)


def fake_frame(n: int) -> FrameInfo:
    return FrameInfo(width=FAKE_WIDTH, height=FAKE_HEIGHT, pixfmt=PixFmt.NV12,
                     flags=FRAME_KEY if n % FAKE_PER_ANSWER == 0 else 0,
                     digest=fnv1a64(fake_frame_pixels(n)), timestamp=(n + 1) * 1000)


class FakeDaemon(threading.Thread):
    """A daemon on /dev/daedalus-v4l2 (the real one stopped) that answers every
    FEED with bitstream with the next 16 frames, a FLUSH with 16 more, FETCH
    with the frame it names (laid out as asked) and CLOSE_STREAM. Frames
    have distinct byte patterns (``fake_frame_pixels``) and timestamps
    (n + 1) us. ``log`` records every request."""

    def __init__(self, feeds_with_frames: int = 2) -> None:
        super().__init__(name="fake-daemon", daemon=True)
        self.feeds_with_frames = feeds_with_frames
        self.fd = -1
        self.next_frame = 0
        self.feeds = 0
        self.known: dict[tuple[int, int], int] = {}
        self.log: list[tuple[str, int]] = []        # (request, frame or count)
        self.errors: list[str] = []
        self.stopping = threading.Event()

    def connect(self, timeout: float = 10.0) -> None:
        self.fd = os.open(CHARDEV, os.O_RDWR)
        msg = self._read(timeout)
        if msg is None:
            raise ScenarioError("no HELLO from the kernel")
        hdr = parse_header(msg)
        if hdr.type != MsgType.HELLO:
            raise ScenarioError(f"expected HELLO, got type {hdr.type}")
        os.write(self.fd, pack_message(MsgType.HELLO | RESPONSE, hdr.cookie, pack_hello()))
        self.start()

    def close(self) -> None:
        self.stopping.set()
        self.join(10)
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _read(self, timeout: float) -> bytes | None:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        return os.read(self.fd, HDR_SIZE + MAX_PAYLOAD) if ready else None

    def _frames(self, count: int) -> list[FrameInfo]:
        frames = []
        for n in range(self.next_frame, self.next_frame + count):
            info = fake_frame(n)
            self.known[(info.timestamp, info.digest)] = n
            frames.append(info)
        self.next_frame += count
        return frames

    def _answer(self, type_: int, cookie: int, payload: bytes = b"", status: int = 0) -> None:
        try:
            os.write(self.fd, pack_message(type_ | RESPONSE, cookie, payload, status=status))
        except OSError as exc:
            self.errors.append(f"answer to type {type_} refused: {os.strerror(exc.errno or 0)}")

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                msg = self._read(0.1)
            except OSError as exc:
                self.errors.append(f"read: {exc}")
                return
            if msg is not None:
                try:
                    self._serve(msg)
                except Exception as exc:  # a test helper: record, keep serving
                    self.errors.append(f"{type(exc).__name__}: {exc}")

    def _serve(self, msg: bytes) -> None:
        hdr = parse_header(msg)
        payload = msg[HDR_SIZE:]
        if hdr.type == MsgType.FEED:
            req, _ = parse_decode_req(payload)
            if req.flush:
                frames = self._frames(FAKE_PER_ANSWER)
                self.log.append(("flush", len(frames)))
            else:
                self.feeds += 1
                count = FAKE_PER_ANSWER if self.feeds <= self.feeds_with_frames else 0
                frames = self._frames(count)
                self.log.append(("feed", len(frames)))
            self._answer(hdr.type, hdr.cookie, pack_frame_resp(DecodeStatus.OK, 0, frames))
        elif hdr.type == MsgType.FETCH:
            fetch = parse_fetch_req(payload)
            n = self.known.get((fetch.timestamp, fetch.digest))
            if n is None:
                self.log.append(("fetch-unknown", fetch.timestamp))
                self._answer(hdr.type, hdr.cookie, status=errno.ENOENT)
                return
            info = fake_frame(n)
            if fetch.discard:
                self.log.append(("discard", n))
                self._answer(hdr.type, hdr.cookie, pack_fetch_resp(info))
                return
            geometry = Geometry(FAKE_WIDTH, FAKE_HEIGHT)
            if fits(geometry, fetch.bytesperline, fetch.height) is not None:
                self.log.append(("fetch-misfit", n))
                self._answer(hdr.type, hdr.cookie, status=errno.EINVAL)
                return
            packed = np.frombuffer(fake_frame_pixels(n), np.uint8)
            split = FAKE_WIDTH * FAKE_HEIGHT
            luma = packed[:split].reshape(FAKE_HEIGHT, FAKE_WIDTH)
            chroma = packed[split:].reshape(FAKE_HEIGHT // 2, FAKE_WIDTH)
            if fetch.dmabuf:  # phase 8.6: into the CAPTURE buffer, as daedalusd does
                size = buffer_size(fetch.bytesperline, fetch.height)
                with Device(self.fd).get_dmabuf(hdr.cookie) as buf, \
                        buf.access(write=True) as data:
                    lay_out(luma, chroma, fetch.bytesperline, fetch.height,
                            out=np.frombuffer(data, np.uint8, count=size), zeroed=False)
                self.log.append(("fetch", n))
                self._answer(hdr.type, hdr.cookie, pack_fetch_resp(info, nr_bytes=size))
                return
            pixels = lay_out(luma, chroma, fetch.bytesperline, fetch.height)
            self.log.append(("fetch", n))
            self._answer(hdr.type, hdr.cookie, pack_fetch_resp(info, pixels.tobytes()))
        elif hdr.type == MsgType.PING:
            self._answer(hdr.type, hdr.cookie, payload)
        elif hdr.type == MsgType.CLOSE_STREAM:
            self.log.append(("close", 0))
            self._answer(hdr.type, hdr.cookie)
        else:
            self.log.append((f"type-{hdr.type}", 0))
            self._answer(hdr.type, hdr.cookie, status=errno.EOPNOTSUPP)


# --- scenario 5: many contexts at once ---------------------------------------------------


def _keyframe(opts: Options, name: str, barrier: threading.Barrier | None = None
              ) -> dict[str, Any]:
    """One context decodes the clip's keyframe with CAPTURE set up beforehand:
    how long from QBUF to the decoded frame, and what came back."""
    result: dict[str, Any] = {"name": name}
    c: Client | None = None
    ready = False
    try:
        c = _open(opts.node)
        c.set_output_format("VP90", 320, 240)
        fmt = c.g_fmt(CAPTURE)
        cap = BufferQueue(c.fd, CAPTURE)
        for index in range(cap.request(2)):
            cap.queue(index)
        cap.streamon()
        out = BufferQueue(c.fd, OUTPUT)
        out.request(1)
        out.streamon()
        ready = True
    except OSError as exc:
        result["setup_errno"] = exc.errno
    try:
        if barrier is not None:
            try:
                barrier.wait(timeout=4 * opts.wait)
            except threading.BrokenBarrierError:
                result["barrier"] = "broken"
        if not ready or c is None:
            return result
        start = time.monotonic()
        out.queue(0, opts.vp9[0], 0)
        result["queued_at"] = start  # CLOCK_MONOTONIC: comparable across processes
        frame: Dequeued | None = None
        done: Dequeued | None = None
        end = start + opts.wait
        while (frame is None or done is None) and time.monotonic() < end:
            if done is None and (done := out.dequeue()) is not None and done.error:
                end = min(end, time.monotonic() + 2.0)  # refused: no frame is coming
            if frame is None and (frame := cap.dequeue()) is not None:
                result["done_at"] = time.monotonic()
                result["seconds"] = round(result["done_at"] - start, 3)
                result["capture"] = _buffer(frame)
                if frame.bytesused and not frame.error:
                    result["sha256"] = digest(_picture(cap, frame, fmt, Geometry(320, 240)))
            if frame is None or done is None:
                c.poll(0.05)
        result["output"] = None if done is None else _buffer(done)
        result["waited"] = round(time.monotonic() - start, 3)
        return result
    except OSError as exc:
        result["errno"] = exc.errno
        return result
    finally:
        if c is not None:
            c.close()


def keyframe(opts: Options, report: Reporter, control: Control) -> None:
    """One keyframe decode, timed (the unit the other deadlines scale with)."""
    dog = Watchdog(report, limit=opts.wait + CALL_LIMIT)
    with dog.step("one keyframe"):
        report("keyframe", **_keyframe(opts, "single"))


def fairness(opts: Options, report: Reporter, control: Control) -> None:
    """opts.contexts contexts (threads, one open file each) queue the keyframe
    at the same moment; every one must get its frame."""
    dog = Watchdog(report, limit=4 * opts.wait + CALL_LIMIT, fatal=False)
    barrier = threading.Barrier(opts.contexts + 1)
    results: list[dict[str, Any] | None] = [None] * opts.contexts

    def worker(i: int) -> None:
        with dog.step(f"context {i}"):
            results[i] = _keyframe(opts, f"context {i}", barrier)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True)
               for i in range(opts.contexts)]
    for t in threads:
        t.start()
    try:
        barrier.wait(timeout=4 * opts.wait)
    except threading.BrokenBarrierError:
        report("barrier", broken=True)
    start = time.monotonic()
    report("flood", at=start)  # every context is queueing its keyframe now
    for t in threads:
        t.join(max(0.0, 4 * opts.wait - (time.monotonic() - start)))
    report("fairness", contexts=opts.contexts, seconds=round(time.monotonic() - start, 3),
           results=results, unfinished=sum(t.is_alive() for t in threads))


# --- scenario 6: format and buffer abuse ---------------------------------------------------


def abuse(opts: Options, report: Reporter, control: Control) -> None:
    """Every abusive call reports ``call`` with its errno (None: accepted) and
    what the driver returned."""
    dog = Watchdog(report)
    c = _open(opts.node)

    def attempt(name: str, fn: Callable[[], Any]) -> Any:
        value, err, seconds = dog.call(name, fn)
        report("call", call=name, errno=err, value=value, seconds=round(seconds, 4))
        return value

    s_fmt, try_fmt = raw.IOC.S_FMT, raw.IOC.TRY_FMT
    unknown = fourcc("ABCD")
    for kind, buf_type, code in (("OUTPUT", OUTPUT, "VP90"), ("CAPTURE", CAPTURE, "NV12")):
        for width, height in ((0, 0), (65535, 65535), (17, 15), (1, 1), (0xFFFFFFFF, 3),
                              (8193, 4353)):
            attempt(f"S_FMT({kind}) {code} {width}x{height}",
                    partial(c.fmt, s_fmt, buf_type, code, width, height))
        attempt(f"S_FMT({kind}) unknown fourcc",
                partial(c.fmt, s_fmt, buf_type, unknown, 320, 240))
        attempt(f"S_FMT({kind}) fourcc 0", partial(c.fmt, s_fmt, buf_type, 0, 320, 240))
        attempt(f"TRY_FMT({kind}) 65535x65535",
                partial(c.fmt, try_fmt, buf_type, code, 65535, 65535))
        attempt(f"S_FMT({kind}) num_planes 0",
                partial(c.fmt, s_fmt, buf_type, code, 320, 240, num_planes=0))
        attempt(f"S_FMT({kind}) num_planes 200",
                partial(c.fmt, s_fmt, buf_type, code, 320, 240, num_planes=200))
    for size in (0xFFFFFFFF, 1 << 31, 1):
        attempt(f"S_FMT(OUTPUT) sizeimage {size}",
                partial(c.fmt, s_fmt, OUTPUT, "VP90", 320, 240, sizeimage=size))
    attempt("S_FMT(type 0)", lambda: c.fmt(s_fmt, 0, "VP90", 320, 240))
    attempt("S_FMT(type 1000)", lambda: c.fmt(s_fmt, 1000, "VP90", 320, 240))
    attempt("S_FMT(single-planar OUTPUT)", lambda: c.fmt(s_fmt, 2, "VP90", 320, 240))

    # sane formats again, then buffer counts
    attempt("S_FMT(OUTPUT) VP90 320x240", lambda: c.fmt(s_fmt, OUTPUT, "VP90", 320, 240))
    for kind, buf_type in (("OUTPUT", OUTPUT), ("CAPTURE", CAPTURE)):
        for count in (0, 1, 33, 1000, 1 << 31, 0xFFFFFFFF, 0):
            attempt(f"REQBUFS({kind}, {count})",
                    partial(c.reqbufs_raw, buf_type, count))
        attempt(f"REQBUFS({kind}, 2, USERPTR)",
                partial(c.reqbufs_raw, buf_type, 2, USERPTR))
        attempt(f"REQBUFS({kind}, 2, memory 99)", partial(c.reqbufs_raw, buf_type, 2, 99))
        attempt(f"REQBUFS({kind}, 0, DMABUF)", partial(c.reqbufs_raw, buf_type, 0, DMABUF))
    attempt("REQBUFS(type 77, 2)", lambda: c.reqbufs_raw(77, 2))

    # CREATE_BUFS with tiny sizes: refused, or buffers of the format's size
    for kind, buf_type in (("OUTPUT", OUTPUT), ("CAPTURE", CAPTURE)):
        attempt(f"G_FMT({kind}) for CREATE_BUFS", partial(_fmt_dict, c, buf_type))
        for size, count in ((1, 1), (0, 1), (1, 1000), (16, 0)):
            created = attempt(f"CREATE_BUFS({kind}, count {count}, sizeimage {size})",
                              partial(c.create_bufs, buf_type, count, size))
            if created and created[1]:
                index = created[0]
                attempt(f"QUERYBUF({kind}) created by sizeimage {size}",
                        partial(c.querybuf, buf_type, index))
                if buf_type == CAPTURE:
                    attempt(f"QBUF(CAPTURE) created by sizeimage {size}",
                            partial(c.qbuf_raw, CAPTURE, index))
        attempt(f"REQBUFS({kind}, 0) after CREATE_BUFS",
                partial(c.reqbufs_raw, buf_type, 0))

    # QBUF abuse on OUTPUT
    count = attempt("REQBUFS(OUTPUT, 2)", lambda: c.reqbufs_raw(OUTPUT, 2)) or 0
    length = attempt("QUERYBUF(OUTPUT, 0)", lambda: c.querybuf(OUTPUT, 0)[0]) or 0
    offset = attempt("QUERYBUF(OUTPUT, 1) offset", lambda: c.querybuf(OUTPUT, 1)[1]) or 0
    attempt("STREAMON(OUTPUT)", lambda: c.stream(True, OUTPUT))
    attempt("DQBUF(OUTPUT) streaming, empty", lambda: c.dqbuf_raw(OUTPUT))
    abusive: list[tuple[str, dict[str, int]]] = [
        ("bytesused > length", {"bytesused": length + 1, "length": length}),
        ("bytesused 0xFFFFFFFF", {"bytesused": 0xFFFFFFFF, "length": length}),
        ("data_offset beyond length", {"bytesused": length, "length": length,
                                       "data_offset": length + 4096}),
        ("data_offset == bytesused", {"bytesused": 64, "length": length, "data_offset": 64}),
        ("data_offset 0xFFFFFFF0", {"bytesused": 64, "length": length,
                                    "data_offset": 0xFFFFFFF0}),
        ("index 99", {"index": 99, "bytesused": 64, "length": length}),
        ("index 0xFFFFFFFF", {"index": 0xFFFFFFFF, "bytesused": 64, "length": length}),
        ("no planes", {"bytesused": 64, "length": length, "nplanes": 0}),
        ("9 planes", {"bytesused": 64, "length": length, "nplanes": 9}),
        ("DMABUF fd -1 on an MMAP queue", {"bytesused": 64, "length": length,
                                           "memory": DMABUF, "fd": -1}),
        ("length 1 (wrong plane length)", {"bytesused": 64, "length": 1}),
    ]
    for name, fields in abusive:
        index = fields.pop("index", 0)
        attempt(f"QBUF(OUTPUT) {name}",
                partial(c.qbuf_raw, OUTPUT, index, **fields))
    attempt("QBUF(OUTPUT) garbage, whole buffer", lambda: _qbuf_garbage(c, length, offset))
    attempt("QBUF(OUTPUT) the same buffer again",
            lambda: c.qbuf_raw(OUTPUT, 1, bytesused=64, length=length))
    back: list[dict[str, Any]] = []
    start = time.monotonic()
    with dog.step("waiting for the garbage OUTPUT buffer", limit=opts.wait + CALL_LIMIT):
        while not back and time.monotonic() - start < opts.wait:
            try:
                back.append(_buffer(c.dqbuf_raw(OUTPUT)))
            except BlockingIOError:
                time.sleep(0.02)
    report("garbage_returned", buffers=back, seconds=round(time.monotonic() - start, 3))

    # mmap abuse
    attempt("mmap beyond the buffer", lambda: c.map(length + 4096, 0))
    attempt("mmap at a bogus offset", lambda: c.map(4096, 0x7FFF0000))
    attempt("EXPBUF(OUTPUT, 99)", lambda: c.expbuf(OUTPUT, 99))

    # CAPTURE: DQBUF when not streaming, when streaming and empty
    attempt("DQBUF(CAPTURE) not streaming", lambda: c.dqbuf_raw(CAPTURE))
    attempt("STREAMON(CAPTURE) without buffers", lambda: c.stream(True, CAPTURE))
    attempt("REQBUFS(CAPTURE, 2)", lambda: c.reqbufs_raw(CAPTURE, 2))
    attempt("STREAMON(CAPTURE)", lambda: c.stream(True, CAPTURE))
    attempt("DQBUF(CAPTURE) streaming, empty", lambda: c.dqbuf_raw(CAPTURE))
    attempt("STREAMON(type 77)", lambda: c.stream(True, 77))
    attempt("STREAMOFF(OUTPUT)", lambda: c.stream(False, OUTPUT))
    attempt("STREAMOFF(OUTPUT) again", lambda: c.stream(False, OUTPUT))
    attempt("REQBUFS(OUTPUT, 0)", lambda: c.reqbufs_raw(OUTPUT, 0))
    attempt("STREAMON(OUTPUT) without buffers", lambda: c.stream(True, OUTPUT))
    attempt("DQBUF(OUTPUT) not streaming", lambda: c.dqbuf_raw(OUTPUT))

    # commands, selections, events
    attempt("DECODER_CMD(99)", lambda: c.decoder_cmd_raw(99))
    attempt("DECODER_CMD(PAUSE)", lambda: c.decoder_cmd_raw(2))
    attempt("DECODER_CMD(RESUME)", lambda: c.decoder_cmd_raw(3))
    attempt("DECODER_CMD(STOP, flags ~0)", lambda: c.decoder_cmd_raw(V4L2_DEC_CMD_STOP,
                                                                     0xFFFFFFFF))
    attempt("DECODER_CMD(STOP) not streaming", lambda: c.decoder_cmd_raw(V4L2_DEC_CMD_STOP))
    attempt("DECODER_CMD(START)", lambda: c.decoder_cmd_raw(V4L2_DEC_CMD_START))
    attempt("G_SELECTION(target 999)", lambda: c.selection(999))
    attempt("SUBSCRIBE_EVENT(0x12345)", lambda: c.subscribe_raw(0x12345))
    attempt("DQEVENT with none pending", lambda: c.dequeue_event())
    with dog.step("close"):
        c.close()


def _fmt_dict(c: Client, buf_type: int) -> dict[str, Any]:
    return asdict(c.g_fmt(buf_type))


def _qbuf_garbage(c: Client, length: int, offset: int) -> None:
    """Buffer 1 of OUTPUT filled with seeded garbage to its last byte, queued."""
    data = random.Random(length).randbytes(length)
    with mmap.mmap(c.fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE,
                   offset=offset) as m:
        m[:] = data
    c.qbuf_raw(OUTPUT, 1, bytesused=length, length=length, timestamp=7)


# --- scenario 7: random valid-ioctl sequences ----------------------------------------------


class _FuzzFile:
    """One open file of the fuzzer and the buffers it knows about."""

    def __init__(self, node: Path) -> None:
        self.node = node
        self.c = _open(node)
        self.counts = {int(OUTPUT): 0, int(CAPTURE): 0}
        self.maps: dict[int, mmap.mmap] = {}
        self.codec = "VP90"
        self.cursor = 0
        self.timestamp = 0

    def unmap(self) -> None:
        for m in self.maps.values():
            m.close()
        self.maps.clear()

    def close(self, unmap_first: bool) -> None:
        if unmap_first:
            self.unmap()
        self.c.close()
        self.unmap()  # with the mappings last, their munmap is the release

    def mapped(self, index: int) -> tuple[mmap.mmap, int]:
        length, offset = self.c.querybuf(OUTPUT, index)
        if index not in self.maps:
            self.maps[index] = mmap.mmap(self.c.fd, length, mmap.MAP_SHARED,
                                         mmap.PROT_READ | mmap.PROT_WRITE, offset=offset)
        return self.maps[index], length


class Fuzzer:
    """Random sequences of well-formed ioctls on one or two open files, with the
    corpus clips' real packets queued on OUTPUT. ``run`` returns the counts."""

    SIZES = ((320, 240), (16, 16), (176, 144), (64, 48), (1280, 720))

    def __init__(self, opts: Options, dog: Watchdog) -> None:
        self.opts = opts
        self.dog = dog
        self.rng = random.Random(opts.seed)
        self.counts: Counter[str] = Counter()
        self.seconds: dict[str, float] = {}
        self.calls = 0
        ops: list[tuple[Callable[[_FuzzFile], None], float]] = [
            (self.qbuf_output, 3), (self.qbuf_capture, 3), (self.dqbuf, 3),
            (self.streamon, 2), (self.streamoff, 1), (self.reqbufs, 2), (self.s_fmt_output, 1),
            (self.s_fmt_capture, 0.5), (self.g_fmt, 1), (self.decoder_cmd, 1),
            (self.event, 1), (self.create_bufs, 0.5), (self.poll, 0.5), (self.pause, 1),
        ]
        self.ops = [op for op, _ in ops]
        self.weights = [w for _, w in ops]

    def call(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        value, err, seconds = self.dog.call(name, partial(fn, *args, **kwargs))
        self.calls += 1
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.counts[f"{name}: {errno.errorcode.get(err, err) if err else 'ok'}"] += 1
        return value

    # the operations -------------------------------------------------------------------

    def s_fmt_output(self, f: _FuzzFile) -> None:
        f.codec = self.rng.choice(("VP90", "H264"))
        width, height = self.rng.choice(self.SIZES)
        size = self.rng.choice((0, 4096, 1 << 20))
        self.call("S_FMT(OUTPUT)", f.c.set_output_format, f.codec, width, height, size)

    def s_fmt_capture(self, f: _FuzzFile) -> None:
        width, height = self.rng.choice(self.SIZES)
        self.call("S_FMT(CAPTURE)", f.c.s_fmt, CAPTURE, "NV12", width, height)

    def g_fmt(self, f: _FuzzFile) -> None:
        self.call("G_FMT", f.c.g_fmt, self.rng.choice((OUTPUT, CAPTURE)))

    def reqbufs(self, f: _FuzzFile) -> None:
        buf_type = int(self.rng.choice((OUTPUT, CAPTURE)))
        count = self.rng.choice((0, 1, 2, 3, 4, 8, 32))
        if buf_type == OUTPUT:
            f.unmap()
        granted = self.call("REQBUFS", f.c.reqbufs_raw, buf_type, count)
        if granted is not None:
            f.counts[buf_type] = granted

    def create_bufs(self, f: _FuzzFile) -> None:
        buf_type = int(self.rng.choice((OUTPUT, CAPTURE)))
        count = self.rng.choice((1, 2))
        got = self.call("CREATE_BUFS", lambda: f.c.create_bufs(
            buf_type, count, f.c.g_fmt(buf_type).sizeimage))
        if got is not None:
            f.counts[buf_type] = got[0] + got[1]

    def _packet(self, f: _FuzzFile) -> bytes:
        packets = self.opts.h264 if f.codec == "H264" and self.opts.h264 else self.opts.vp9
        packet = packets[f.cursor % len(packets)]
        f.cursor += 1
        if self.rng.random() < 0.1:
            f.cursor = 0  # back to the keyframe now and then
        return packet

    def qbuf_output(self, f: _FuzzFile) -> None:
        count = f.counts[int(OUTPUT)]
        if not count:
            self.call("QBUF(OUTPUT) no buffers", f.c.qbuf_raw, OUTPUT, 0, bytesused=1)
            return
        index = self.rng.randrange(count)
        got = self.call("QUERYBUF+mmap(OUTPUT)", f.mapped, index)
        if got is None:
            return
        m, length = got
        data = self._packet(f)[:length]
        m[:len(data)] = data
        f.timestamp += 1
        self.call("QBUF(OUTPUT)", f.c.qbuf_raw, OUTPUT, index, bytesused=max(1, len(data)),
                  length=length, timestamp=f.timestamp)

    def qbuf_capture(self, f: _FuzzFile) -> None:
        index = self.rng.randrange(max(1, f.counts[int(CAPTURE)]))
        self.call("QBUF(CAPTURE)", f.c.qbuf_raw, CAPTURE, index)

    def dqbuf(self, f: _FuzzFile) -> None:
        self.call("DQBUF", f.c.dqbuf_raw, self.rng.choice((OUTPUT, CAPTURE)))

    def streamon(self, f: _FuzzFile) -> None:
        self.call("STREAMON", f.c.stream, True, self.rng.choice((OUTPUT, CAPTURE)))

    def streamoff(self, f: _FuzzFile) -> None:
        self.call("STREAMOFF", f.c.stream, False, self.rng.choice((OUTPUT, CAPTURE)))

    def decoder_cmd(self, f: _FuzzFile) -> None:
        cmd = self.rng.choice((V4L2_DEC_CMD_STOP, V4L2_DEC_CMD_STOP, V4L2_DEC_CMD_START))
        self.call("DECODER_CMD", f.c.decoder_cmd_raw, cmd)

    def event(self, f: _FuzzFile) -> None:
        if self.rng.random() < 0.5:
            kind = self.rng.choice((EVENT_SOURCE_CHANGE, EVENT_EOS))
            self.call("SUBSCRIBE_EVENT", f.c.subscribe_raw, kind)
        else:
            self.call("DQEVENT", f.c.dequeue_event)

    def poll(self, f: _FuzzFile) -> None:
        self.call("poll", f.c.poll, 0)

    def pause(self, f: _FuzzFile) -> None:
        time.sleep(self.rng.random() * 0.02)  # lets the pump and the daemon move

    # sequences ---------------------------------------------------------------------------

    def _prefix(self, f: _FuzzFile) -> None:
        """The usual start of a decode, so sequences reach streaming states often."""
        self.call("S_FMT(OUTPUT)", f.c.set_output_format, "VP90", 320, 240)
        f.counts[int(OUTPUT)] = self.call("REQBUFS", f.c.reqbufs_raw, OUTPUT, 4) or 0
        self.call("STREAMON", f.c.stream, True, OUTPUT)
        if self.rng.random() < 0.5:
            f.counts[int(CAPTURE)] = self.call("REQBUFS", f.c.reqbufs_raw, CAPTURE, 4) or 0
            for index in range(f.counts[int(CAPTURE)]):
                self.call("QBUF(CAPTURE)", f.c.qbuf_raw, CAPTURE, index)
            self.call("STREAMON", f.c.stream, True, CAPTURE)

    def sequence(self) -> None:
        files = [self.call("open", _FuzzFile, self.opts.node)
                 for _ in range(self.rng.choice((1, 1, 2)))]
        live = [f for f in files if f is not None]
        for f in live:
            if self.rng.random() < 0.7:
                self._prefix(f)
        for _ in range(self.rng.randint(3, 12)):
            if not live:
                break
            i = self.rng.randrange(len(live))
            if self.rng.random() < 0.03:  # close and reopen mid-sequence
                self.call("close", live[i].close, self.rng.random() < 0.5)
                reopened = self.call("open", _FuzzFile, self.opts.node)
                if reopened is None:
                    live.pop(i)
                else:
                    live[i] = reopened
                continue
            op = self.rng.choices(self.ops, self.weights)[0]
            op(live[i])
        for f in live:
            self.call("close", f.close, self.rng.random() < 0.5)


def fuzz(opts: Options, report: Reporter, control: Control) -> None:
    """opts.sequences random sequences (seed opts.seed); every call under a
    CALL_LIMIT watchdog; then one keyframe decode to show the node still works."""
    dog = Watchdog(report)
    fuzzer = Fuzzer(opts, dog)
    report("seed", seed=opts.seed, sequences=opts.sequences)
    start = time.monotonic()
    for n in range(opts.sequences):
        fuzzer.sequence()
        if (n + 1) % 100 == 0:
            report("progress", sequences=n + 1, calls=fuzzer.calls,
                   seconds=round(time.monotonic() - start, 1))
    report("fuzz", seed=opts.seed, sequences=opts.sequences, calls=fuzzer.calls,
           seconds=round(time.monotonic() - start, 3),
           slowest=[round(dog.slowest[0], 3), dog.slowest[1]],
           counts=dict(sorted(fuzzer.counts.items())),
           call_seconds={k: round(v, 2) for k, v in sorted(fuzzer.seconds.items(),
                                                              key=lambda kv: -kv[1])})
    with dog.step("keyframe after the fuzzing", limit=opts.wait + CALL_LIMIT):
        report("keyframe", **_keyframe(opts, "after fuzzing"))


# --- a whole clip, as nobody (the daemon serves after the stall) ------------------------


def decode(opts: Options, report: Reporter, control: Control) -> None:
    """The VP9 clip through the node: each frame's timestamp and sha256."""
    dog = Watchdog(report, limit=4 * opts.wait + CALL_LIMIT)
    c = _open(opts.node)
    c.set_output_format("VP90", 320, 240)
    c.subscribe(EVENT_SOURCE_CHANGE)
    c.subscribe(EVENT_EOS)
    cap = BufferQueue(c.fd, CAPTURE)
    out = BufferQueue(c.fd, OUTPUT)
    with dog.step("decoding the clip"):
        start = time.monotonic()
        for index in range(cap.request(6)):
            cap.queue(index)
        cap.streamon()
        out.request(4)
        out.streamon()
        result = _drive(c, out, cap, list(enumerate(opts.vp9)), list(range(out.count)),
                        opts.wait)
    report("decoded", seconds=round(time.monotonic() - start, 3), **asdict(result))
    cap.close()
    out.close()
    c.close()


Scenario = Callable[[Options, Reporter, Control], None]
SCENARIOS: dict[str, Scenario] = {
    "overflow": overflow,
    "stall": stall_client,
    "memory": memory,
    "drain": drain_client,
    "keyframe": keyframe,
    "fairness": fairness,
    "abuse": abuse,
    "fuzz": fuzz,
    "decode": decode,
}


# --- running a scenario as another user --------------------------------------------------


def capabilities() -> int:
    """CapEff of this process."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    raise RuntimeError("no CapEff in /proc/self/status")


def drop_privileges(uid: int = NOBODY, gid: int = NOBODY) -> None:
    """Become uid/gid, no supplementary groups, no capabilities (checked)."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise RuntimeError("could not change user")
    if capabilities():
        raise RuntimeError(f"capabilities left after the change of user: {capabilities():#x}")


def proc_state(pid: int) -> str:
    """State, wchan and (as root) kernel stack of a process, for a report."""
    parts = []
    for name in ("stat", "wchan", "stack"):
        try:
            text = Path(f"/proc/{pid}/{name}").read_text(errors="replace").strip()
        except OSError as exc:
            text = f"({exc.strerror})"
        if name == "stat":
            text = text.rpartition(")")[2].split()[0] if ")" in text else text
        parts.append(f"{name}: {text}")
    return "; ".join(parts)


@dataclass
class Outcome:
    """What a scenario's process reported and how it ended."""

    scenario: str
    events: list[dict[str, Any]]
    status: int | None     # exit status; -N: killed by signal N; None: never reaped
    seconds: float
    timed_out: bool
    unkillable: str        # the process state when SIGKILL did not end it, else ""

    def all(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == event]

    def get(self, event: str) -> dict[str, Any] | None:
        found = self.all(event)
        return found[-1] if found else None

    def __getitem__(self, event: str) -> dict[str, Any]:
        found = self.get(event)
        if found is None:
            raise KeyError(f"{self.scenario}: no {event!r} event\n{self.describe()}")
        return found

    @property
    def stuck(self) -> list[dict[str, Any]]:
        return self.all("stuck")

    @property
    def ok(self) -> bool:
        """Ran to its end: exit 0, no timeout, no watchdog report."""
        return self.status == 0 and not self.timed_out and not self.stuck

    def describe(self, tail: int = 12) -> str:
        how = ("timed out" if self.timed_out else f"exit {self.status}")
        lines = [f"scenario {self.scenario}: {how} after {self.seconds:.1f} s"]
        if self.unkillable:
            lines.append(f"did not die on SIGKILL: {self.unkillable}")
        for e in self.all("stuck") + self.all("error"):
            lines.append(json.dumps(e)[:3000])
        lines += [json.dumps(e)[:600] for e in self.events[-tail:]]
        return "\n".join(lines)


def _child(name: str, opts: Options, uid: int | None, gid: int, out_w: int,
           ctl_r: int | None, inherited: list[int]) -> NoReturn:
    code = 1
    report = Reporter(out_w)
    try:
        for fd in inherited:
            os.close(fd)
        # nothing of the caller's (a fake daemon's chardev, the node) stays open here
        for entry in os.listdir("/proc/self/fd"):
            if int(entry) > 2 and int(entry) not in (out_w, ctl_r):
                try:
                    os.close(int(entry))
                except OSError:
                    pass
        if uid is not None:
            drop_privileges(uid, gid)
        report("start", scenario=name, pid=os.getpid(), uid=os.getuid(), gid=os.getgid(),
               groups=os.getgroups(), capabilities=capabilities())
        SCENARIOS[name](opts, report, Control(ctl_r))
        report("end")
        code = 0
    except BaseException:
        try:
            report("error", traceback=traceback.format_exc())
        except BaseException:
            pass
    finally:
        os._exit(code)


def run_unprivileged(name: str, opts: Options, *, timeout: float, uid: int | None = NOBODY,
                     gid: int = NOBODY,
                     on_event: Callable[[dict[str, Any]], str | None] | None = None,
                     echo: Callable[[dict[str, Any]], None] | None = None) -> Outcome:
    """Run scenario *name* in a forked process as *uid*/*gid* (None: as we are).
    *on_event* sees each event as it comes and may answer with a line for
    the scenario's Control. After *timeout* seconds the process is SIGKILLed;
    if it does not die within 10 s more it is left behind and reported."""
    out_r, out_w = os.pipe()
    ctl_r, ctl_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(name, opts, uid, gid, out_w, ctl_r, [out_r, ctl_w])
    os.close(out_w)
    os.close(ctl_r)
    events: list[dict[str, Any]] = []
    pending = b""
    timed_out = False
    try:
        while True:
            left = start + timeout - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([out_r], [], [], min(left, 1.0))
            if not ready:
                continue
            chunk = os.read(out_r, 1 << 16)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                try:
                    event = json.loads(line)
                except ValueError:
                    event = {"event": "garbage", "text": line.decode(errors="replace")}
                events.append(event)
                if event.get("event") == "stuck" and event.get("fatal"):
                    # the process is ending itself; give it 10 s, not the whole timeout
                    timeout = min(timeout, time.monotonic() - start + 10.0)
                if echo is not None:
                    echo(event)
                answer = on_event(event) if on_event is not None else None
                if answer:
                    os.write(ctl_w, answer.encode() + b"\n")
    finally:
        os.close(out_r)
        os.close(ctl_w)
    status: int | None = None
    unkillable = ""
    grace = 10.0
    if timed_out:
        os.kill(pid, signal.SIGKILL)
    else:
        grace = max(grace, timeout - (time.monotonic() - start))
    deadline = time.monotonic() + grace
    while True:
        done, raw_status = os.waitpid(pid, os.WNOHANG)
        if done:
            status = os.waitstatus_to_exitcode(raw_status)
            break
        if time.monotonic() > deadline:
            if not timed_out:  # ended its output but not its life
                timed_out = True
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 10.0
                continue
            unkillable = proc_state(pid)
            break
        time.sleep(0.02)
    return Outcome(name, events, status, time.monotonic() - start, timed_out, unkillable)


# --- the command line ------------------------------------------------------------------------


@contextmanager
def fake_daemon() -> Iterator[FakeDaemon]:
    """The real daedalusd stopped, a FakeDaemon in its place; the real one back after."""
    from daedalus.testbed import guestctl

    was_running = guestctl.stop_daemon()
    fake = FakeDaemon()
    try:
        fake.connect()
        yield fake
    finally:
        fake.close()
        if was_running:
            guestctl.start_daemon()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m daedalus.m2m.hostile",
        description="Run one hostile-client scenario against the daedalus-v4l2 node and "
                    "print its events (JSON lines). As root, the node is made "
                    "world-accessible for the run and the scenario runs as --user.")
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--seed", type=int, default=None, help="fuzz: the generator's seed")
    parser.add_argument("--sequences", type=int, default=500, help="fuzz: sequences")
    parser.add_argument("--contexts", type=int, default=None,
                        help="fairness: contexts (default min(max_contexts, 32))")
    parser.add_argument("--user", type=int, default=NOBODY, help="uid and gid to run as")
    parser.add_argument("--wait", type=float, default=60.0,
                        help="longest wait for the decoder to act, seconds")
    parser.add_argument("--timeout", type=float, default=900.0, help="scenario timeout")
    args = parser.parse_args(argv)

    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    opts = load_options(seed=seed, sequences=args.sequences, wait=args.wait)
    opts.contexts = args.contexts or min(opts.max_contexts or 32, 32)
    print(json.dumps({"event": "options", "scenario": args.scenario, "seed": seed,
                      "node": str(opts.node), "max_contexts": opts.max_contexts}), flush=True)
    root = os.getuid() == 0
    uid = args.user if root else None
    saved_mode = opts.node.stat().st_mode & 0o777
    if root:
        os.chmod(opts.node, 0o666)

    def echo(event: dict[str, Any]) -> None:
        print(json.dumps(event), flush=True)

    try:
        if args.scenario == "stall":
            from daedalus.testbed import guestctl

            pid = guestctl.daemon_pid()
            if pid is None:
                parser.error("stall needs the testbed's daedalusd (no pid file)")
            outcome = stall(opts, pid, timeout=args.timeout)
            for event in outcome.events:
                echo(event)
        elif args.scenario == "drain":
            with fake_daemon() as fake:
                outcome = run_unprivileged("drain", opts, timeout=args.timeout, uid=uid,
                                           gid=args.user, echo=echo)
                print(json.dumps({"event": "fake_daemon", "log": fake.log,
                                  "errors": fake.errors}), flush=True)
        else:
            outcome = run_unprivileged(args.scenario, opts, timeout=args.timeout, uid=uid,
                                       gid=args.user, echo=echo)
    finally:
        if root:
            os.chmod(opts.node, saved_mode)
    print(outcome.describe(tail=0), file=sys.stderr)
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main())
