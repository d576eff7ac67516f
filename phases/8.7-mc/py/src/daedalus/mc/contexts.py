"""Several applications decoding on the node at once (phase 8.7, issue item 3).

What the phase's tests of several contexts share (test directories are not
packages):

- ``Client``: one application, run as its own process on a corpus clip, as a
  user would run it: the project's ``daedalus-v4l2 decode``, FFmpeg 5.1's
  ``*_v4l2m2m`` or GStreamer 1.22's ``v4l2*dec`` (the command lines of
  daedalus.m2m.clients). ``Client.frames()`` cuts what it wrote into the
  visible pictures, to compare with Debian's ffmpeg's software decode
  (daedalus.m2m.clients.reference_frames). ``start`` runs one, and
  ``run_at_once`` starts several together and waits for all.
- ``DecoderGates``: a decoder factory for phase 8.5's ``StatefulHandler``
  (its ``decoder_factory``) that puts gates in front of the real decoders'
  ``decode()``, inside the handler, where a slow frame would be:

  - a *start line*: the first packet of every decoder waits until *line*
    decoders wait there, then all go on together, so that many contexts
    are certainly decoding at once (and not one after the other because
    one client started faster);
  - a *hold*: one packet of one stream waits until the test lets it go: a
    frame that takes as long as the test wants, to show what the other
    contexts do meanwhile.

  Each ``arm()`` starts a ``GateRound`` (the previous round's gates open);
  the round counts the real ``decode()`` calls running at once
  (``max_running``).
- ``with_handler`` and ``serving``: daedalusd's own core
  (daedalus.dispatch.daemon.serve, with the installed handlers and one of
  them replaced) serving the module's device from a thread of this process,
  in place of the daedalusd the testbed started (stopped meanwhile with
  daedalus.testbed.guestctl.daemon_stopped); ``serving_on`` is the same on
  any fd (a socket pair, on the host).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import av
from av.video.codeccontext import VideoCodecContext

from daedalus.codec.session import DecoderFactory, create_decoder
from daedalus.dispatch.daemon import DEFAULT_DEVICE, open_device, serve
from daedalus.dispatch.registry import Handler, Registration, Registry
from daedalus.m2m.clients import (
    GST_DECODER,
    decode_argv,
    ffmpeg_argv,
    frame_sizes,
    gst_frames,
    gstreamer_argv,
    split,
)
from daedalus.parse import corpus
from daedalus.proto import Codec

CLIENT_TIMEOUT = 600.0  # one small client under TCG, with others beside it, generously
GATE_LIMIT = 300.0      # no gate holds a decoder longer than this
POLL = 0.05

# --- clients ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Client:
    """One application decoding corpus clip *clip* into *out*."""

    label: str
    kind: str                # "tool", "ffmpeg" or "gst"
    clip: str                # corpus name
    argv: tuple[str, ...]
    out: Path

    def frames(self) -> list[bytes]:
        """What the client wrote, cut into its frames' visible pictures
        (tightly packed NV12, as daedalus.m2m.clients.reference_frames)."""
        data = self.out.read_bytes() if self.out.exists() else b""
        sizes = frame_sizes(self.clip)
        return gst_frames(data, sizes) if self.kind == "gst" else split(data, sizes)


def _workdir(workdir: Path, kind: str, name: str) -> Path:
    path = workdir / f"{kind}-{name}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def decode_tool(name: str, workdir: Path, *extra: str) -> Client:
    """``daedalus-v4l2 decode CLIP -o OUT`` (*extra*: more options)."""
    out = _workdir(workdir, "tool", name) / "out.yuv"
    return Client(f"decode tool, {name}", "tool", name,
                  tuple(decode_argv(corpus.path(name), out, *extra)), out)


def ffmpeg(name: str, workdir: Path, *extra: str) -> Client:
    """``ffmpeg -c:v vp9_v4l2m2m|h264_v4l2m2m -i CLIP ... -f rawvideo OUT``."""
    out = _workdir(workdir, "ffmpeg", name) / "out.yuv"
    codec = corpus.entry(name).codec
    return Client(f"ffmpeg {codec}_v4l2m2m, {name}", "ffmpeg", name,
                  tuple(ffmpeg_argv(name, out, *extra)), out)


def gstreamer(name: str, workdir: Path, *options: str) -> Client:
    """daedalus.m2m.clients.gstreamer's pipeline (``filesrc ! [matroskademux|
    h264parse] ! v4l2*dec [options] ! video/x-raw,format=NV12 ! filesink``)."""
    where = _workdir(workdir, "gst", name)
    out = where / "out.yuv"
    codec = corpus.entry(name).codec
    return Client(f"GStreamer {GST_DECODER[codec][-1]}, {name}", "gst", name,
                  tuple(gstreamer_argv(name, out, where, options)), out)


@dataclass(frozen=True)
class Finished:
    """A client's run: exit status (None: killed at its timeout), what it
    printed (stdout and stderr), when it started and ended (time.monotonic)."""

    client: Client
    status: int | None
    log: str
    started: float
    ended: float

    @property
    def seconds(self) -> float:
        return self.ended - self.started


class Running:
    """A client's process, its output going to a file next to its OUT."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.log_path = client.out.with_suffix(".log")
        with self.log_path.open("wb") as log:
            self.started = time.monotonic()
            self.proc = subprocess.Popen(client.argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        self.ended: float | None = None

    def poll(self) -> bool:
        """Whether it has ended (noting when, to within POLL)."""
        if self.ended is None and self.proc.poll() is not None:
            self.ended = time.monotonic()
        return self.ended is not None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def finished(self) -> Finished:
        ended = self.ended if self.ended is not None else time.monotonic()
        status = self.proc.returncode if self.ended is not None else None
        log = self.log_path.read_text(errors="replace")
        return Finished(self.client, status, log, self.started, ended)

    def wait(self, timeout: float = CLIENT_TIMEOUT) -> Finished:
        """Its run, once ended (killed after *timeout* s: status None)."""
        return wait_all([self], timeout)[0]


def start(client: Client) -> Running:
    return Running(client)


def wait_all(running: Sequence[Running], timeout: float = CLIENT_TIMEOUT) -> list[Finished]:
    """Each run once all ended; those still running after *timeout* s are
    killed (status None)."""
    deadline = time.monotonic() + timeout
    try:
        while not all([r.poll() for r in running]) and time.monotonic() < deadline:
            time.sleep(POLL)
    finally:
        for r in running:
            if not r.poll():
                r.kill()
    return [r.finished() for r in running]


def run_at_once(clients: Sequence[Client], timeout: float = CLIENT_TIMEOUT) -> list[Finished]:
    """Start every client (one process each, one after the other without
    waiting), then wait for all."""
    running: list[Running] = []
    try:
        for client in clients:
            running.append(start(client))
    except BaseException:
        for r in running:
            r.kill()
        raise
    return wait_all(running, timeout)


# --- gates in front of the daemon's decoders ------------------------------------------


@dataclass
class GateRound:
    """One arming of DecoderGates: its settings and what happened.

    ``line_met``: *line* decoders waited at the start line at once (all went
    on together); ``line_given_up``: the line waited *limit* s for them and
    let everyone go. ``holding`` is set while the held packet waits,
    ``resumed`` once it went on (``release()``, or *limit*: ``hold_given_up``).
    ``max_running``:
    the most real ``decode()`` calls that ran at the same time."""

    line: int = 0
    hold: Codec | None = None
    hold_at: int = 0
    limit: float = GATE_LIMIT
    cond: threading.Condition = field(default_factory=threading.Condition)
    at_line: int = 0
    line_met: bool = False
    line_given_up: bool = False
    held_decoder: bool = False   # the decoder to hold a packet of was made
    holding: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    resumed: threading.Event = field(default_factory=threading.Event)
    hold_given_up: bool = False  # the held packet went on at *limit*, unreleased
    running: int = 0
    max_running: int = 0
    closed: bool = False         # a later arm() (or disarm) opened every gate

    def release(self) -> None:
        """Let the held packet go on."""
        self.released.set()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.released.set()

    # -- the gates, called from the daemon's worker threads --------------------------

    def wait_at_line(self) -> None:
        with self.cond:
            if self.line <= 0 or self.line_met or self.line_given_up or self.closed:
                return
            self.at_line += 1
            if self.at_line >= self.line:
                self.line_met = True
                self.cond.notify_all()
                return
            if not self.cond.wait_for(lambda: self.line_met or self.line_given_up
                                      or self.closed, self.limit):
                self.line_given_up = True
                self.cond.notify_all()

    def wait_held(self) -> None:
        self.holding.set()
        self.hold_given_up = not self.released.wait(self.limit)
        self.resumed.set()

    def enter(self) -> None:
        with self.cond:
            self.running += 1
            self.max_running = max(self.max_running, self.running)

    def leave(self) -> None:
        with self.cond:
            self.running -= 1


class _GatedDecoder:
    """A real decoder (what create_decoder makes) whose ``decode()`` passes the
    round's gates first: the start line before its first packet, the hold
    before packet number *hold_at* (the handler numbers a stream's packets
    from 0 as their pts, daedalus.codec.session) if it is the held decoder."""

    def __init__(self, real: VideoCodecContext, gates: GateRound, held: bool) -> None:
        self.real = real
        self.gates = gates
        self.held = held
        self.first = True

    def decode(self, packet: av.Packet[Any] | None = None) -> list[av.VideoFrame]:
        if packet is not None:
            if self.first:
                self.first = False
                self.gates.wait_at_line()
            if self.held and packet.pts == self.gates.hold_at:
                self.gates.wait_held()
        self.gates.enter()
        try:
            return list(self.real.decode(packet))
        finally:
            self.gates.leave()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class DecoderGates:
    """A decoder factory (``StatefulHandler(decoder_factory=gates.factory)``)
    whose decoders pass the current round's gates (see the module doc).
    Until ``arm()`` the round has no gate: the decoders are the real ones
    in all but name."""

    def __init__(self, make: DecoderFactory = create_decoder) -> None:
        self._make = make
        self._lock = threading.Lock()
        self.round = GateRound()

    def arm(self, *, line: int = 0, hold: Codec | None = None, hold_at: int = 0,
            limit: float = GATE_LIMIT) -> GateRound:
        """A new round, for the decoders made from now on: the start line for
        *line* decoders (0: none); with *hold*, packet *hold_at* of the first
        decoder of that codec waits until ``round.release()``. No gate holds
        longer than *limit* s. Decoders of the previous round pass its gates
        from now on."""
        new = GateRound(line=line, hold=hold, hold_at=hold_at, limit=limit)
        with self._lock:
            old, self.round = self.round, new
        old.close()
        return new

    def disarm(self) -> None:
        """No gates from now on (every decoder of earlier rounds goes on)."""
        self.arm()

    def factory(self, codec: Codec) -> VideoCodecContext:
        real = self._make(codec)
        with self._lock:
            gates = self.round
            held = gates.hold is not None and gates.hold == codec and not gates.held_decoder
            if held:
                gates.held_decoder = True
        return cast(VideoCodecContext, _GatedDecoder(real, gates, held))


# --- daedalusd's core in this process ---------------------------------------------------


def with_handler(handler: Handler, registry: Registry | None = None) -> Registry:
    """*registry* (default: the handlers the installed entry points register,
    as daedalusd loads them) with *handler* in place of whatever claims its
    opcodes."""
    base = Registry.from_entry_points() if registry is None else registry
    opcodes = tuple(int(op) for op in handler.OPCODES)
    kept = [r for r in base.registrations if not set(r.opcodes) & set(opcodes)]
    kind = type(handler)
    mine = Registration(handler=handler, name=handler.NAME, phase=handler.PHASE,
                        opcodes=opcodes, owner=f"{kind.__module__}:{kind.__qualname__} "
                                               "(in process)")
    return Registry([*kept, mine])


@contextmanager
def serving(registry: Registry, device: str = DEFAULT_DEVICE, *, wait: float = 30.0,
            ready_timeout: float = 120.0) -> Iterator[None]:
    """daedalusd's core serving *registry* on the module's *device* in a
    thread of this process, inside the block; the kernel's handshake is done
    when the block starts (debugfs ``daemon`` reads ``ready``). No other
    daedalusd may be connected (daedalus.testbed.guestctl.daemon_stopped).
    Inside a guest, as root."""
    from daedalus.testbed.guestctl import daemon_state

    fd = open_device(device, wait)
    try:
        with serving_on(fd, registry, lambda: daemon_state() == "ready",
                        ready_timeout=ready_timeout, what=daemon_state):
            yield
    finally:
        os.close(fd)


@contextmanager
def serving_on(fd: int, registry: Registry, ready: Callable[[], bool], *,
               ready_timeout: float = 120.0,
               what: Callable[[], str] = lambda: "not ready") -> Iterator[None]:
    """``serve(fd, registry)`` in a thread of this process (its own event
    loop) inside the block, which starts once *ready()* (polled; RuntimeError
    naming *what()* after *ready_timeout* s, or if the daemon ended first).
    At the end the daemon is stopped as SIGTERM stops daedalusd, and its
    thread joined; *fd* stays open (the caller's)."""
    begun = threading.Event()
    box: dict[str, Any] = {}

    def run() -> None:
        async def main() -> int:
            box["loop"] = asyncio.get_running_loop()
            box["stop"] = stop = asyncio.Event()
            begun.set()
            return await serve(fd, registry, stop=stop)

        try:
            box["status"] = asyncio.run(main())
        except BaseException as exc:  # (reported by the caller)
            box["error"] = exc
        finally:
            begun.set()

    thread = threading.Thread(target=run, name="daedalusd (in process)", daemon=True)
    thread.start()
    try:
        begun.wait(ready_timeout)
        deadline = time.monotonic() + ready_timeout
        while not ready():
            if "error" in box or "status" in box or time.monotonic() >= deadline:
                raise RuntimeError(f"the in-process daemon did not become ready ({what()}; "
                                   f"{box.get('error') or box.get('status')})")
            time.sleep(POLL)
        yield
    finally:
        loop, stop = box.get("loop"), box.get("stop")
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # (the loop ended meanwhile)
                pass
        thread.join(60)
