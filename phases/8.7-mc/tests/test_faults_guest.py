"""Phase 8.7 in the guest: bad input with several contexts (the issue's item 5).

"A context closed with jobs in flight and the daemon mid-decode, a client
that queues CAPTURE buffers too small for the stream, STREAMOFF of either
queue mid-stream, the daemon restarted while four contexts stream: no hang,
no WARN, each affected buffer errored, other contexts go on."

Every case runs on the node as built (phase 8.6's dma-buf transport: the
daemon reads OUTPUT and writes CAPTURE buffers through dma-bufs), with
several contexts at once. The faulted context is driven by the project's
client, daedalus.m2m.v4l2's StatefulDecode (subclassed where the test must
act between its steps); the other contexts are StatefulDecode runs in threads
of their own (``Decoder``) that decode whole passes of a small corpus clip,
VP9 and H.264, until the fault is over and one pass more, so each is mid-
stream when the fault hits and decodes after it. Every frame of theirs is
compared byte for byte, in order, with Debian's ffmpeg decoding the very
bytes they were fed (``References``: the clip's passes concatenated).

1. close() of a context streaming 1080p VP9 (OUTPUT and CAPTURE buffers
   queued) while daedalusd holds one of its requests: the daemon is frozen
   (SIGSTOP) at a moment its --verbose log shows a request read and not
   answered for every context (a context has one request out at a time, so
   one is the 1080p one's). close() returns within 2 s; resumed, the daemon
   finishes that request and the kernel refuses its answer (the request
   died with the file); the other contexts stay byte-exact.
2. CAPTURE buffers too small for the stream (vp9-resize-176x144-352x288,
   CAPTURE imported as DMABUF from other contexts): dma-bufs of a 16x16
   format queued and streaming before the header are neither written nor
   handed back until the client stops CAPTURE (all come back, their fill
   pattern intact), QBUF of them after SOURCE_CHANGE is EINVAL; at the
   growth to 352x288 the 176x144 dma-bufs are EINVAL too; CREATE_BUFS one
   byte short of the format's sizeimage is EINVAL (the full size is
   granted). Set up right, every one of the 32 frames is ffmpeg's.
3. STREAMOFF mid-stream of OUTPUT (a seek), of CAPTURE, and of both: every
   buffer of a stopped queue is the client's again (QUERYBUF: neither
   QUEUED nor DONE), no call hangs, and after STREAMON: from the next
   keyframe on every frame, byte-exact (OUTPUT; with CAPTURE too, nothing
   decoded before the seek comes after it), or the decode goes on where it
   was (CAPTURE alone: only the frames done but not dequeued at STREAMOFF
   are lost, as VIDIOC_STREAMOFF documents, and at most the one frame whose
   FETCH the STREAMOFF cancelled comes back in ERROR, empty, in its place).
4. daedalusd SIGKILLed while four contexts stream, then started again: every
   context's decode ends (LAST buffer) without the daemon, every OUTPUT
   buffer it queued comes back, each has buffers in ERROR (CAPTURE ones
   empty), the frames it got are ffmpeg's; after the restart a new decode on
   each of the four open files is byte-exact.

What the 8.5 / 8.6 tests cover already, on one context, runs on this node
too and is not repeated: test_hostile_guest.py (MMAP CAPTURE buffers queued
for 16x16 and refused at STREAMON; close() under a stopped daemon),
test_m2m_guest.py (an OUTPUT seek back to packet 0; a killed daemon under
the decode tool). The kernel_log fixture fails a test on any WARN, BUG,
oops or hung task meanwhile.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import itertools
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest
from linuxpy.video import raw

from daedalus.m2m.clients import frame_sizes, reference_frames, split
from daedalus.m2m.dmabuf import DmaBuf
from daedalus.m2m.hostile import Client
from daedalus.m2m.reference import reference_output
from daedalus.m2m.v4l2 import (
    DMABUF,
    BufferQueue,
    DmabufSource,
    ExportingContext,
    Frame,
    M2MNode,
    StatefulDecode,
    Stats,
)
from daedalus.parse import corpus
from daedalus.parse.corpus import concat_ivf
from daedalus.parse.readers import read_all
from daedalus.proto import codecs
from daedalus.skeleton.v4l2dev import CAPTURE, find_node
from daedalus.testbed.guestctl import (
    OUT,
    daemon_pid,
    daemon_state,
    kill_daemon,
    start_daemon,
)

pytestmark = [pytest.mark.guest, pytest.mark.usefixtures("kernel_log")]

WAIT = 120.0          # StatefulDecode's timeout: seconds without progress, under TCG
JOIN = 300.0          # a decode thread's whole run, at most
BUFFERS = 4           # per queue, every context here
MAX_PASSES = 200      # a context decoding alongside a fault stops after this many passes
OTHERS = ["h264-high-176x144", "vp9-128x96"]  # the contexts that must go on
QUEUED_OR_DONE = int(raw.BufferFlag.QUEUED) | int(raw.BufferFlag.DONE)
CAPTURE_ERROR = re.compile(r"CAPTURE buffer \d+ \(timestamp (?P<ts>\d+)\) returned with ERROR")
PATTERN = 0xA5        # fill of the too-small CAPTURE dma-bufs


# --- clips and the reference ---------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    """A corpus clip as packets, fed in whole passes with timestamps counting on."""

    name: str
    code: str             # the OUTPUT fourcc
    width: int
    height: int
    packets: tuple[bytes, ...]

    @classmethod
    def load(cls, name: str) -> Clip:
        info, packets = read_all(corpus.path(name))
        entry = corpus.entry(name)
        return cls(name, codecs.BY_NAME[info.codec].fourcc, entry.width, entry.height,
                   tuple(p.data for p in packets))

    @property
    def largest(self) -> tuple[int, int]:
        """(index, bytes) of the largest packet (StatefulDecode sizes OUTPUT by it)."""
        return max(enumerate(len(p) for p in self.packets), key=lambda item: item[1])

    def passes(self, count: int) -> list[tuple[int, bytes]]:
        return list(enumerate(self.packets * count))


class References:
    """Debian's ffmpeg decoding *passes* passes of a clip back to back (the
    bytes a context was fed: IVF parts joined by corpus.concat_ivf, an H.264
    byte stream repeated), cut into frames; each computed once."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.done: dict[tuple[str, int], list[bytes]] = {}

    def frames(self, name: str, passes: int = 1) -> list[bytes]:
        key = (name, passes)
        if key not in self.done:
            if passes == 1:
                self.done[key] = reference_frames(name)
            else:
                source = corpus.path(name)
                data = source.read_bytes()
                joined = (concat_ivf([data] * passes) if source.suffix == ".ivf"
                          else data * passes)
                path = self.tmp / f"{passes}x-{source.name}"
                path.write_bytes(joined)
                self.done[key] = split(reference_output(path), frame_sizes(name) * passes)
        return self.done[key]

    def digests(self, name: str, passes: int = 1) -> list[bytes]:
        return [sha256(frame) for frame in self.frames(name, passes)]


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@pytest.fixture(scope="module")
def refs(tmp_path_factory: pytest.TempPathFactory) -> References:
    return References(tmp_path_factory.mktemp("references"))


# --- contexts decoding in threads of their own ------------------------------------------------


class Counted(StatefulDecode):
    """StatefulDecode that, once the drain is over, takes the OUTPUT buffers
    done just before the LAST CAPTURE buffer (its loop may end first), so
    ``output_returned`` counts every OUTPUT buffer that came back."""

    def _after_last(self) -> bool:
        moved = super()._after_last()
        if self.done:
            self._output()
        return moved


class Decoder(threading.Thread):
    """One context decoding *packets* with StatefulDecode in a thread of its own:
    on *node* (left open) or on a new open file of the node (closed at the end)."""

    def __init__(self, clip: Clip, packets: Iterator[tuple[int, bytes]],
                 node: M2MNode | None = None) -> None:
        super().__init__(name=f"decode {clip.name}", daemon=True)
        self.clip = clip
        self.packets = packets
        self.node = node
        self.frames: list[tuple[int, bytes]] = []   # (timestamp, sha256 of the picture)
        self.times: list[float] = []
        self.warnings: list[str] = []
        self.started = threading.Event()   # the first frame, or the end
        self.stats: Stats | None = None
        self.error: BaseException | None = None
        self.returned = 0                   # OUTPUT buffers dequeued
        self.ended = 0.0

    def _frame(self, frame: Frame) -> None:
        self.frames.append((frame.timestamp, sha256(frame.data)))
        self.times.append(time.monotonic())
        self.started.set()

    def run(self) -> None:
        node = self.node
        decode = None
        try:
            if node is None:
                node = M2MNode(find_node())
            decode = Counted(node, self.clip.code, self.packets, self._frame,
                             buffers=BUFFERS, timeout=WAIT, width=self.clip.width,
                             height=self.clip.height, warn=self.warnings.append,
                             largest_packet=self.clip.largest)
            self.stats = decode.run()
        except BaseException as exc:
            self.error = exc
        finally:
            self.ended = time.monotonic()
            if decode is not None:
                self.returned = decode.output_returned
            if self.node is None and node is not None:
                node.close()
            self.started.set()

    def wait_frames(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.frames) < count and self.is_alive():
            assert time.monotonic() < deadline, f"{self.name}: {len(self.frames)} frames " \
                f"after {timeout:.0f} s"
            time.sleep(0.02)
        assert self.error is None, f"{self.name}: {self.error!r}"
        assert len(self.frames) >= count, f"{self.name} ended with {len(self.frames)} frames"

    def result(self) -> Stats:
        self.join(JOIN)
        assert not self.is_alive(), f"{self.name} did not end within {JOIN:.0f} s"
        assert self.error is None, f"{self.name}: {self.error!r}\n" + "\n".join(self.warnings)
        assert self.stats is not None
        return self.stats


def passes_until(clip: Clip, release: threading.Event) -> Iterator[tuple[int, bytes]]:
    """Whole passes of *clip* while *release* is not set, then one pass more
    (decoded after the release, so after the fault), at most MAX_PASSES."""
    extra = 1
    for count in range(MAX_PASSES):
        if release.is_set():
            if not extra:
                return
            extra -= 1
        base = count * len(clip.packets)
        for index, data in enumerate(clip.packets):
            yield base + index, data


@contextmanager
def alongside(names: list[str]) -> Iterator[list[Decoder]]:
    """Contexts decoding *names* in threads while the block runs: each has a
    frame out before the block starts, and ends after it (released, then one
    more pass and the drain)."""
    release = threading.Event()
    runs = [Decoder(clip, passes_until(clip, release)) for clip in map(Clip.load, names)]
    for run in runs:
        run.start()
    try:
        for run in runs:
            run.wait_frames(1, WAIT)
        yield runs
    finally:
        release.set()
        for run in runs:
            run.join(JOIN)


def assert_went_on(run: Decoder, refs: References, start: float, end: float) -> None:
    """*run* decoded across the fault (from *start* to *end*): frames out before
    and after it, every one ffmpeg's, in order, no buffer in error."""
    stats = run.result()
    n = len(run.clip.packets)
    assert stats.packets % n == 0, stats.packets
    passes = stats.packets // n
    before = sum(1 for t in run.times if t < start)
    after = sum(1 for t in run.times if t > end)
    print(f"  {run.clip.name} alongside: {passes} passes, {stats.frames} frames "
          f"({before} before the fault, {after} after), {stats.errors} errors")
    assert stats.errors == 0, run.warnings
    assert before >= 1 and after >= 1, (before, after)
    want = refs.digests(run.clip.name, passes)
    assert len(run.frames) == len(want), (len(run.frames), len(want))
    wrong = [i for i, ((_, got), w) in enumerate(zip(run.frames, want, strict=True)) if got != w]
    assert not wrong, f"{run.clip.name}: frames {wrong[:10]} differ from ffmpeg's"


def held_by_driver(queue: BufferQueue) -> list[int]:
    """Buffers of *queue* that QUERYBUF reports QUEUED or DONE (the driver's or
    waiting in the done list): after STREAMOFF, none."""
    held = []
    for index in range(queue.count):
        plane = raw.v4l2_plane()
        buf = raw.v4l2_buffer()
        buf.index = index
        buf.type = queue.type
        buf.memory = queue.memory
        buf.length = 1
        buf.m.planes = ctypes.pointer(plane)
        fcntl.ioctl(queue.fd, raw.IOC.QUERYBUF, buf)
        if buf.flags & QUEUED_OR_DONE:
            held.append(index)
    return held


def errno_of(call: Callable[[], object]) -> int | None:
    try:
        call()
    except OSError as exc:
        return exc.errno
    return None


# --- 1: close() while the daemon is mid-request ----------------------------------------------


class DaemonLog:
    """daedalusd's log (the testbed starts it with --verbose: every message it
    reads and writes, with the stream a request is for) from now on: the FEED /
    FETCH requests it has read and not answered, their streams, and the answers
    the kernel refused (the request was gone: cancelled by a STREAMOFF or a
    close)."""

    READ = re.compile(r"<- (?P<type>FEED|FETCH) cookie (?P<cookie>\d+), "
                      r"stream (?P<stream>\d+),")
    ANSWERED = re.compile(r"-> (?:FEED|FETCH)\|RESPONSE cookie (?P<cookie>\d+),")
    REFUSED = re.compile(r"the kernel refused the answer to (?P<type>FEED|FETCH) "
                         r"cookie (?P<cookie>\d+)")

    def __init__(self, path: Path = OUT / "daemon.log") -> None:
        self.path = path
        self.offset = path.stat().st_size
        self.rest = b""
        self.read: dict[int, tuple[str, int]] = {}    # cookie: (type, stream)
        self.answered: set[int] = set()
        self.refused: dict[int, str] = {}

    def poll(self) -> None:
        with self.path.open("rb") as log:
            log.seek(self.offset)
            data = log.read()
        self.offset += len(data)
        *lines, self.rest = (self.rest + data).split(b"\n")
        for raw_line in lines:
            line = raw_line.decode(errors="replace")
            if m := self.READ.search(line):
                self.read[int(m["cookie"])] = (m["type"], int(m["stream"]))
            elif m := self.ANSWERED.search(line):
                self.answered.add(int(m["cookie"]))
            elif m := self.REFUSED.search(line):
                self.refused[int(m["cookie"])] = m["type"]

    def streams(self) -> set[int]:
        """The streams of every request read so far."""
        return {stream for _, stream in self.read.values()}

    def unanswered(self) -> dict[int, tuple[str, int]]:
        return {cookie: seen for cookie, seen in self.read.items()
                if cookie not in self.answered and cookie not in self.refused}


class Stepped(StatefulDecode):
    """StatefulDecode driven one step at a time by the test's own thread (not
    ``run``), which picks the moment of the fault."""

    def begin(self) -> None:
        self._start()
        self._refill()

    def step(self) -> None:
        self.node.poll(0.02)
        self._events()
        self._output()
        self._capture()
        self._after_last()

    def unmap(self) -> None:
        """Drop the buffers' mappings, which hold the file open: close() is
        then its release."""
        for queue in (self.output, self.capture.queue if self.capture else None):
            if queue is not None:
                for mapped in queue.maps:
                    mapped.close()
                queue.maps.clear()


LARGE = "vp9-1920x1080"
CLOSE_LIMIT = 2.0
FREEZES = 400     # attempts at catching every context with a request in the daemon


def stopped(pid: int, timeout: float = 10.0) -> None:
    """Wait until every thread of *pid* is stopped (SIGSTOP delivered)."""
    deadline = time.monotonic() + timeout
    while True:
        states = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                stat = (task / "stat").read_text()
            except OSError:
                continue
            states.append(stat.rpartition(")")[2].split()[0])
        if states and all(state in ("T", "t") for state in states):
            return
        assert time.monotonic() < deadline, f"daedalusd not stopped after {timeout:g} s: {states}"
        time.sleep(0.005)


def test_close_while_the_daemon_is_mid_request_returns_promptly_and_others_go_on(
        refs: References) -> None:
    """The daemon is frozen (SIGSTOP) at a moment its log shows a request of
    the 1080p context read and not answered (its log names each request's
    stream; a context can have a FEED and a FETCH out at once, so counting
    requests does not tell whose they are). That context is closed while the
    daemon holds its request, then the daemon resumes and finishes the
    request, whose answer the kernel refuses."""
    big = Clip.load(LARGE)
    pid = daemon_pid()
    assert pid is not None and daemon_state() == "ready"
    log = DaemonLog()
    got: list[int] = []
    frozen = False
    with alongside(OTHERS) as others:
        log.poll()
        theirs = log.streams()
        node = M2MNode(find_node())
        x = Stepped(node, big.code, ((ts, big.packets[ts % len(big.packets)])
                                     for ts in itertools.count()),
                    lambda frame: got.append(frame.timestamp), buffers=BUFFERS, timeout=WAIT,
                    width=big.width, height=big.height, largest_packet=big.largest)
        try:
            x.begin()
            deadline = time.monotonic() + 600
            while len(got) < 2:
                assert time.monotonic() < deadline, f"{len(got)} 1080p frames in 600 s"
                x.step()
            log.poll()
            ours = log.streams() - theirs
            assert len(theirs) == len(others) and len(ours) == 1, (theirs, ours)
            stream = ours.pop()
            in_flight: dict[int, tuple[str, int]] = {}
            tries = 0
            while tries < FREEZES:
                tries += 1
                for _ in range(3):
                    x.step()
                os.kill(pid, signal.SIGSTOP)
                frozen = True
                stopped(pid)
                log.poll()
                in_flight = log.unanswered()
                if any(s == stream for _, s in in_flight.values()):
                    break
                os.kill(pid, signal.SIGCONT)
                frozen = False
            assert frozen, f"never a request of the 1080p stream in the daemon in {FREEZES} tries"
            assert x.capture is not None and x.capture.queue.streaming
            output_queued = x.output.count - len(x.free_output)
            capture_queued = x.capture.queue.count
            x.unmap()
            start = time.monotonic()
            node.close()
            end = time.monotonic()
            os.kill(pid, signal.SIGCONT)
            frozen = False
        finally:
            if frozen:
                os.kill(pid, signal.SIGCONT)
            x.unmap()
            node.close()
    closed = end - start
    held = {c for c, (_, s) in in_flight.items() if s == stream}
    deadline = time.monotonic() + 120
    while not log.refused.keys() & held and time.monotonic() < deadline:
        time.sleep(0.1)
        log.poll()
    refused = {c: log.refused[c] for c in sorted(log.refused.keys() & held)}
    print(f"1080p context (stream {stream}) closed after {len(got)} frames with "
          f"{output_queued} OUTPUT and {capture_queued} CAPTURE buffers queued, daedalusd "
          f"stopped holding {in_flight} (try {tries}): close() took {closed:.3f} s; its "
          f"answers the kernel refused after it: {refused}")
    assert output_queued >= 1 and capture_queued >= 1
    assert closed < CLOSE_LIMIT, f"close() took {closed:.1f} s"
    assert refused, ("no request of the closed context that the daemon held at the close had "
                     f"its answer refused (held: {held}; refused: {log.refused})")
    for run in others:
        assert_went_on(run, refs, start, end)
    assert daemon_state() == "ready"


# --- 2: CAPTURE buffers too small for the stream -----------------------------------------------


RESIZE = "vp9-resize-176x144-352x288"


@dataclass
class Refusals:
    """What the node did with buffers too small for the format (one set-up)."""

    returned_early: list[int] = field(default_factory=list)   # DQBUF before STREAMOFF
    held: list[int] = field(default_factory=list)             # QUEUED/DONE after STREAMOFF
    intact: list[bool] = field(default_factory=list)          # the fill pattern, per buffer
    qbuf: list[int | None] = field(default_factory=list)      # errno of QBUF of each again
    create_short: int | None = -1   # errno of CREATE_BUFS one byte short of sizeimage
    create_full: int | None = -1    # ... and of exactly sizeimage
    sizeimage: int = 0
    lengths: list[int] = field(default_factory=list)


def filled(fd: int) -> bool:
    """Whether the dma-buf *fd* still holds PATTERN in every byte."""
    buf = DmaBuf(fd, owned=False)
    try:
        with buf.read() as view:
            return view.tobytes() == bytes([PATTERN]) * buf.size
    finally:
        buf.close()


def fill(fd: int) -> None:
    buf = DmaBuf(fd, owned=False, writable=True)
    try:
        buf.write(bytes([PATTERN]) * buf.size)
    finally:
        buf.close()


class Undersized(StatefulDecode):
    """StatefulDecode that first queues CAPTURE buffers too small for the stream:
    imported dma-bufs (*small*, filled with PATTERN) of the 16x16 format S_FMT
    gives, streaming before the first frame; then, at every SOURCE_CHANGE,
    before it sets CAPTURE up right from *right*, it queues the previous
    buffers again and asks CREATE_BUFS for one byte less than the new
    format's sizeimage."""

    def __init__(self, client: Client, clip: Clip, on_frame: Callable[[Frame], None],
                 small: list[int], right: DmabufSource) -> None:
        super().__init__(client, clip.code, iter(clip.passes(1)), on_frame, buffers=BUFFERS,
                         timeout=WAIT, width=16, height=16, capture_from=right,
                         largest_packet=clip.largest)
        self.client = client
        self.small = small
        self.early: BufferQueue | None = None
        self.refusals: list[Refusals] = []

    def _start(self) -> None:
        super()._start()
        early = BufferQueue(self.node.fd, CAPTURE)
        count = early.request(len(self.small), DMABUF)
        for index in range(count):
            early.attach(index, self.small[index])
            early.queue(index)
        early.streamon()
        self.early = early

    def _refuse(self, queue: BufferQueue, *, early: bool) -> None:
        seen = Refusals(lengths=list(queue.lengths))
        if early:
            while (buf := queue.dequeue()) is not None:
                seen.returned_early.append(buf.index)
        queue.streamoff()
        seen.held = held_by_driver(queue)
        if early:
            seen.intact = [filled(fd) for fd in self.small[:queue.count]]
        for index in range(queue.count):
            seen.qbuf.append(errno_of(partial(queue.queue, index)))
        seen.sizeimage = self.node.g_fmt(CAPTURE).sizeimage
        seen.create_short = errno_of(
            lambda: self.client.create_bufs(CAPTURE, 1, seen.sizeimage - 1, DMABUF))
        seen.create_full = errno_of(
            lambda: self.client.create_bufs(CAPTURE, 1, seen.sizeimage, DMABUF))
        self.refusals.append(seen)

    def _setup_capture(self) -> None:
        if self.early is not None:
            early, self.early = self.early, None
            try:
                self._refuse(early, early=True)
            finally:
                early.close()
        elif self.capture is not None:
            self._refuse(self.capture.queue, early=False)
        super()._setup_capture()


def test_capture_buffers_too_small_are_refused_and_others_go_on(refs: References) -> None:
    clip = Clip.load(RESIZE)
    frames: list[Frame] = []
    with alongside(OTHERS) as others, closing(Client(find_node())) as client, \
            closing(M2MNode(find_node())) as tiny_node, \
            closing(M2MNode(find_node())) as right_node:
        # two more contexts of the node allocate and export the CAPTURE buffers:
        # one at 16x16 (S_FMT(OUTPUT) 16x16 makes its CAPTURE format 16x16), one
        # whose buffers are exactly the stream's
        tiny_node.set_output_format("VP90", 16, 16)
        right_node.set_output_format("VP90", 16, 16)
        small_size = tiny_node.g_fmt(CAPTURE).sizeimage
        with ExportingContext(tiny_node) as tiny, ExportingContext(right_node) as right:
            small = tiny.capture(BUFFERS, small_size)
            for fd in small:
                fill(fd)
            x = Undersized(client, clip, frames.append, small, right.capture)
            start = time.monotonic()
            stats = x.run()
            end = time.monotonic()
            intact_at_end = [filled(fd) for fd in small]
    assert len(x.refusals) == 2, x.refusals
    early, growth = x.refusals
    print(f"CAPTURE {small_size}-byte dma-bufs streaming before the header: "
          f"{early.returned_early} back before STREAMOFF, QBUF at {early.sizeimage} bytes: "
          f"{early.qbuf}; CREATE_BUFS {early.sizeimage - 1}: {early.create_short}, "
          f"{early.sizeimage}: {early.create_full}; at the growth, {growth.lengths}-byte "
          f"dma-bufs QBUF at {growth.sizeimage}: {growth.qbuf}; CREATE_BUFS "
          f"{growth.sizeimage - 1}: {growth.create_short}; then {stats.frames} frames")
    # before the header: no frame went into them, none was handed back
    assert early.returned_early == [] and early.held == []
    assert early.intact == [True] * BUFFERS and intact_at_end == [True] * BUFFERS
    for seen in (early, growth):
        assert max(seen.lengths) < seen.sizeimage, seen
        assert seen.held == [], seen
        assert seen.qbuf == [errno.EINVAL] * len(seen.lengths), seen
        assert (seen.create_short, seen.create_full) == (errno.EINVAL, None), seen
    assert growth.sizeimage > early.sizeimage
    # set up right: every frame, at its size, ffmpeg's
    assert stats.errors == 0 and stats.source_changes == 2, stats
    assert [(f.width, f.height) for f in frames] == frame_sizes(RESIZE)
    want = reference_frames(RESIZE)
    wrong = [i for i, (f, w) in enumerate(zip(frames, want, strict=True)) if f.data != w]
    assert not wrong, f"frames {wrong} differ from ffmpeg's"
    for run in others:
        assert_went_on(run, refs, start, end)
    assert daemon_state() == "ready"


# --- 3: STREAMOFF of either queue mid-stream ---------------------------------------------------


SEEKING = "vp9-176x144"   # 10 packets, 10 frames, a keyframe first
SEEK_PASSES = 6           # 60 packets, keyframes at 0, 10, ... 50
RESTART_AFTER = 3         # frames out before the STREAMOFF


class Restarting(StatefulDecode):
    """StatefulDecode that, once *at* frames are out, stops *queues* ("OUTPUT",
    "CAPTURE" or both) between two of its steps, checks that every buffer of
    them came back, and starts them again: OUTPUT goes on from the next
    keyframe after everything queued so far (dev-decoder.rst's seek),
    CAPTURE gets all its buffers queued again."""

    def __init__(self, node: M2MNode, clip: Clip, passes: int, queues: set[str],
                 at: int) -> None:
        self.frames: list[Frame] = []
        self.warnings: list[str] = []
        super().__init__(node, clip.code, iter(clip.passes(passes)), self.frames.append,
                         buffers=BUFFERS, timeout=WAIT, width=clip.width, height=clip.height,
                         warn=self.warnings.append, largest_packet=clip.largest)
        self.stream = clip.passes(passes)
        self.gop = len(clip.packets)
        self.queues = queues
        self.at = at
        self.restarted_at: int | None = None   # frames out at the restart
        self.keyframe: int | None = None       # OUTPUT resumed at this packet
        self.held: dict[str, list[int]] = {}
        self.streamoff_seconds = 0.0
        self.capture_count = 0

    def _capture(self) -> bool:
        moved = super()._capture()
        if self.restarted_at is None and len(self.frames) >= self.at:
            self._restart()
            moved = True
        return moved

    def _restart(self) -> None:
        assert self.capture is not None
        cap = self.capture.queue
        self.restarted_at = len(self.frames)
        self.capture_count = cap.count
        start = time.monotonic()
        if "CAPTURE" in self.queues:
            cap.streamoff()
        if "OUTPUT" in self.queues:
            self.output.streamoff()
        self.streamoff_seconds = time.monotonic() - start
        if "CAPTURE" in self.queues:
            self.held["CAPTURE"] = held_by_driver(cap)
        if "OUTPUT" in self.queues:
            self.held["OUTPUT"] = held_by_driver(self.output)
            # packets 0 ... stats.packets - 1 were queued: on from the next keyframe
            self.keyframe = -(-self.stats.packets // self.gop) * self.gop
            assert self.keyframe < len(self.stream), "the stream ended before the seek"
            self.output.streamon()
            self.free_output = list(range(self.output.count))
            self.packets = iter(self.stream[self.keyframe:])
        if "CAPTURE" in self.queues:
            for index in range(cap.count):
                cap.queue(index)
            cap.streamon()


@pytest.mark.parametrize("queues", ["OUTPUT", "CAPTURE", "OUTPUT+CAPTURE"])
def test_streamoff_mid_stream_loses_no_buffer_and_decoding_resumes(
        queues: str, refs: References) -> None:
    clip = Clip.load(SEEKING)
    assert len(clip.packets) == len(frame_sizes(SEEKING))  # one frame per packet, in order
    want = refs.frames(SEEKING, SEEK_PASSES)
    with alongside(OTHERS) as others, M2MNode(find_node()) as node:
        x = Restarting(node, clip, SEEK_PASSES, set(queues.split("+")), RESTART_AFTER)
        start = time.monotonic()
        stats = x.run()
        end = time.monotonic()
    assert x.restarted_at is not None
    stamps = [f.timestamp for f in x.frames]
    errored = [int(m["ts"]) for line in x.warnings if (m := CAPTURE_ERROR.search(line))]
    before, after = stamps[:x.restarted_at], stamps[x.restarted_at:]
    print(f"STREAMOFF({queues}) after {x.restarted_at} frames: {x.streamoff_seconds:.3f} s, "
          f"buffers still the driver's: {x.held}; OUTPUT resumed at packet {x.keyframe}; "
          f"frames after: {after[:3]}...{after[-3:]} ({len(after)}), CAPTURE errors at "
          f"{errored}")
    assert all(held == [] for held in x.held.values()), x.held
    assert x.streamoff_seconds < CLOSE_LIMIT
    assert stats.epipe_after_last, "no LAST buffer at the end of the drain"
    assert stamps == sorted(set(stamps)), stamps
    assert all(f.data == want[f.timestamp] for f in x.frames), "a frame is not ffmpeg's"
    assert before == list(range(len(before))), before
    if x.keyframe is not None:
        # the seek: from the next keyframe on, every frame; old ones only first
        assert stats.errors == 0, x.warnings
        new = [ts for ts in stamps if ts >= x.keyframe]
        assert new == list(range(x.keyframe, len(want))), new
        old = [ts for ts in stamps if ts < x.keyframe]
        assert old == list(range(len(old))), old
        if "CAPTURE" in queues:  # nothing decoded before the seek comes after it
            assert after == new, after
    else:
        # CAPTURE alone: decoding went on; lost are the frames done and not
        # dequeued at STREAMOFF; the frame whose FETCH it cancelled may come
        # back in ERROR, empty, at its place
        assert len(errored) <= 1 and stats.capture_error_bytes == [0] * len(errored), errored
        resumed = sorted(after + errored)
        assert resumed == list(range(resumed[0], len(want))), resumed
        assert resumed[0] - len(before) <= x.capture_count, (before, resumed)
    for run in others:
        assert_went_on(run, refs, start, end)
    assert daemon_state() == "ready"


# --- 4: the daemon killed and restarted under four contexts ------------------------------------


FOUR = ["vp9-320x240", "vp9-176x144", "vp9-128x96", "vp9-352x288"]
KILL_AFTER = 2    # frames every context has out before the kill
ENDED_WITHIN = 60.0


def until_halted(clip: Clip, halt: threading.Event) -> Iterator[tuple[int, bytes]]:
    """*clip*'s packets over and over until *halt* is set (then nothing more,
    mid-pass), at most MAX_PASSES passes."""
    for ts in range(MAX_PASSES * len(clip.packets)):
        if halt.is_set():
            return
        yield ts, clip.packets[ts % len(clip.packets)]


def test_daemon_killed_and_restarted_under_four_contexts(refs: References) -> None:
    clips = [Clip.load(name) for name in FOUR]
    for clip in clips:
        assert len(clip.packets) == len(frame_sizes(clip.name))  # timestamp = frame index
    halt = threading.Event()
    nodes = [M2MNode(find_node()) for _ in clips]
    runs: list[Decoder] = []   # every thread started, joined before its file is closed
    try:
        first = [Decoder(clip, until_halted(clip, halt), node) for clip, node in zip(
            clips, nodes, strict=True)]
        runs += first
        for run in first:
            run.start()
        for run in first:
            run.wait_frames(KILL_AFTER, WAIT)
        kill_daemon()
        killed = time.monotonic()
        halt.set()
        stats = [run.result() for run in first]
        ended = [run.ended - killed for run in first]
        restart = start_daemon()
        again = [Decoder(clip, iter(clip.passes(1)), node) for clip, node in zip(
            clips, nodes, strict=True)]
        runs += again
        for run in again:
            run.start()
        second = [run.result() for run in again]
    finally:
        halt.set()
        for run in runs:
            if run.ident is not None:
                run.join(JOIN)
        if daemon_state() != "ready":
            start_daemon()
        if not any(run.is_alive() for run in runs):
            for node in nodes:
                node.close()
    for run, st, took in zip(first, stats, ended, strict=True):
        print(f"{run.clip.name}: {len(run.frames)} frames, then SIGKILL; {len(st.output_errors)} "
              f"OUTPUT and {len(st.capture_errors)} CAPTURE buffers in ERROR; all {st.packets} "
              f"OUTPUT buffers back: {run.returned == st.packets}; ended {took:.2f} s after "
              f"the kill")
    print(f"daedalusd back in {restart:.1f} s; then each context: "
          + ", ".join(f"{s.frames} frames, {s.errors} errors" for s in second))
    for run, st, took in zip(first, stats, ended, strict=True):
        n = len(run.clip.packets)
        want = refs.digests(run.clip.name, -(-st.packets // n))
        stamps = [ts for ts, _ in run.frames]
        assert took < ENDED_WITHIN, f"{run.clip.name}: ended {took:.0f} s after the kill"
        assert st.epipe_after_last, f"{run.clip.name}: no LAST buffer"
        assert run.returned == st.packets, (run.clip.name, run.returned, st.packets)
        assert st.errors >= 1, f"{run.clip.name}: the kill cost no buffer"
        assert st.capture_error_bytes == [0] * len(st.capture_errors)
        assert stamps == sorted(set(stamps)) and len(stamps) >= KILL_AFTER, stamps
        assert all(got == want[ts] for ts, got in run.frames), run.clip.name
    for run, st in zip(again, second, strict=True):
        assert st.errors == 0, run.warnings
        assert [got for _, got in run.frames] == refs.digests(run.clip.name), run.clip.name
    assert daemon_state() == "ready"
