"""``daedalus-v4l2 bench FILE...``: raw FFmpeg decoding against the daemon's per-frame path
and, with ``--device``, against the decode through the node.

For each clip (a file, or a corpus name), in one run, on the host (or in a
guest):

- **raw**: the clip's packets through the FFmpeg decoder daedalusd uses
  (PyAV, ``daedalus.codec.session.create_decoder``: the codec table's
  decoder, slice threads, its low-delay options), frames discarded;
- **daemon**: the same decode, and for every frame what daedalusd does
  with it, without the kernel: phase 8.5's FEED keeps FFmpeg's picture and
  makes its answer entry (``daedalus.m2m.stateful.frame_entry``: layout
  check, colour, the frame's number as its digest), then FETCH with
  DAEDALUS_FETCH_DMABUF lays it out into the CAPTURE buffer
  (``KeptFrame.place``: the per-frame kernel ``place`` of
  ``daedalus.m2m.kernels``, with ``zeroed=False``, as
  ``daedalus.m2m.stateful.write_capture`` calls it), here one buffer kept
  for the run in the CAPTURE format the node sets for the picture
  (``capture_format``). Pipelined, as daedalusd runs a stream's FEED and
  FETCH at once for phase 8.8's kernel (``daedalus_m2m.pipelined``): frame
  N is laid out on a second thread while frame N+1 decodes, one layout in
  flight at a time, as the kernel has one FETCH of a file out at a time.
  ``serial``: the same work one step after the other, as phases 8.5 to 8.7
  send a file's requests one at a time;
- **device** (only with ``--device /dev/videoN``, in a guest with the
  module and daedalusd; ``--device auto``: the daedalus-v4l2 node,
  ``daedalus.skeleton.v4l2dev.find_node``): the same packets decoded
  through the node by the project's client, ``daedalus.m2m.v4l2.
  StatefulDecode`` (the decode tool's: MMAP queues, its default ring of 4
  buffers a queue, the codec's coded format on OUTPUT, OUTPUT buffers asked
  as large as the largest packet), frames counted and discarded. The node
  is opened before the clock starts; the clock covers the whole stream:
  S_FMT, REQBUFS, STREAMON, the SOURCE_CHANGE, every packet and frame and
  the drain. The client hands on each frame as a copy cropped to the
  visible picture (``Frame.data``): that copy is the client's cost, and is
  in ``device_s``. daedalusd decodes with its own thread count (FFmpeg's
  automatic one), so compare ``device`` with a raw run of the same count:
  leave ``--threads`` out.

The packets are read into memory first (phase 8.3's readers, as the
decode tool reads them), each decoder is made before its clock starts, and
the kinds are run ``--rounds`` times, alternately (raw, serial, daemon,
device); each keeps its fastest round. The ratio daemon / raw is the share
of FFmpeg's speed the daemon's path keeps (1.0: it costs nothing on top of
decoding), ``serial_ratio`` the same without pipelining; ``device_ratio``
(device / raw) is the same for the node, and ``bridge_us`` = (device_s -
raw_s) / frames x 10^6 is what the node (kernel, bridge, daemon, client)
adds to each frame, in microseconds. The pipelined daemon rounds
also time the two steps on their own (``feed_us``, ``place_us``:
microseconds per frame, from that fastest round; ``place``: the
implementation the dispatch table chose, ``DAEDALUS_DISPATCH`` overrides).
Then every registered implementation of ``place`` lays the clip's first
frames out (at most KERNEL_FRAMES, best of KERNEL_ROUNDS):
``kernels`` = ``{"place": {"reference": us, "direct": us, ...}}`` per
frame, and ``place_speedup`` = the reference's time over the chosen one's.

Output: a table on stdout, a progress line per step on stderr, and with
``--json FILE`` (``-``: stdout, after the table) ``{"results": [{"file",
"codec", "decoder", "width", "height", "bit_depth", "pixfmt", "frames",
"threads", "rounds", "raw_s", "raw_fps", "daemon_s", "daemon_fps",
"daemon_ratio", "feed_us", "place_us", "place", "place_speedup", "kernels",
"bytesperline", "serial_s", "serial_fps", "serial_ratio", "device",
"device_s", "device_fps", "device_ratio", "bridge_us", "device_frames",
"error"}], "software", "cpus", "machine", "dispatch"}``; ``device`` is the
node's path, null without ``--device`` (then the other device figures are
0); the table has the columns "device
fps", "device/raw" and "bridge us" only with ``--device``.
``threads`` is the decoder's thread count as FFmpeg set it (``--threads``;
without it FFmpeg's automatic count, what daedalusd uses). Exit status: 0
every clip measured; 1 a clip failed (its row says why: unreadable, a
decoder error, a layout the daemon refuses, raw and daemon frame counts
differ, the node failed the decode or gave another number of frames than
raw FFmpeg); 2 the bench could not run (also: the node cannot be opened or
is not a memory-to-memory device).

``--make-clips DIR`` makes clips first (daedalus.perf.clips) and prints
their paths; without FILE it stops there.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
from av.video.codeccontext import VideoCodecContext

from daedalus.codec.session import create_decoder
from daedalus.m2m import kernels
from daedalus.m2m.layout import LAYOUTS, buffer_size
from daedalus.m2m.stateful import KeptFrame, frame_entry
from daedalus.proto import FrameInfo, PixFmt
from daedalus.proto.codecs import BY_NAME

PROG = "daedalus-v4l2 bench"
DEFAULT_ROUNDS = 3
SIZE_STEP = 2   # DAEDALUS_SIZE_STEP: CAPTURE widths and heights are even
STRIDE_ALIGN = 4  # daedalus_fill_decoded_fmt(): rows padded to 4 bytes
KERNEL_FRAMES = 8  # frames each per-frame kernel implementation is timed on
KERNEL_ROUNDS = 5

# Called by the daemon path for every frame (tests): its FEED answer entry
# and the CAPTURE buffer it was laid out in, with that buffer's geometry
# (bytesperline, height). The buffer is reused by the next frame.
FrameHook = Callable[[FrameInfo, npt.NDArray[np.uint8], int, int], None]


class BenchError(Exception):
    """The bench cannot run (exit status 2)."""


def _align(value: int, to: int) -> int:
    return (value + to - 1) // to * to


def capture_format(width: int, height: int, pixfmt: PixFmt) -> tuple[int, int]:
    """(bytesperline, height) of the CAPTURE format the node sets for a
    picture of *width* x *height* (phases/8.1-skeleton's
    daedalus_fill_decoded_fmt): the size rounded up to even, rows padded to
    a multiple of 4 bytes; P010 rows take two bytes a sample. (Its buffer:
    ``buffer_size(bytesperline, height, pixfmt)``.)"""
    sample = LAYOUTS[pixfmt].sample
    return (_align(_align(width, SIZE_STEP) * sample, STRIDE_ALIGN),
            _align(height, SIZE_STEP))


# --- one clip -------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    """A clip read into memory: as named, its codec (the codec table's
    name), its packets, and as phase 8.3's readers give them the picture's
    size and each packet's number (the timestamps the node is given)."""

    file: str
    codec: str
    packets: tuple[bytes, ...]
    width: int = 0
    height: int = 0
    timestamps: tuple[int, ...] = ()


def load_clip(name: str) -> Clip:
    """A file or a corpus clip's packets (phase 8.3's readers); BenchError if
    it is neither or cannot be read."""
    from daedalus.m2m.v4l2 import packets_of
    from daedalus.parse import corpus

    try:
        path = corpus.file_or_vector(name)
    except corpus.CorpusError as exc:
        raise BenchError(str(exc)) from None
    try:
        codec, width, height, stream = packets_of(path)
        pairs = tuple(stream)
    except (OSError, ValueError) as exc:
        raise BenchError(f"{name}: {exc}") from None
    if not pairs:
        raise BenchError(f"{name}: no packets")
    return Clip(name, codec, tuple(data for _, data in pairs), width, height,
                tuple(number for number, _ in pairs))


@dataclass(frozen=True)
class Run:
    """One decode of a clip: seconds, frames, and (daemon path) the seconds
    of its steps summed over the frames."""

    seconds: float
    frames: int
    feed_s: float = 0.0
    place_s: float = 0.0


def _decoder(clip: Clip, threads: int | None) -> VideoCodecContext:
    return create_decoder(BY_NAME[clip.codec].codec, threads=threads)


def _packets(clip: Clip) -> list[av.Packet[Any]]:
    packets = []
    for number, data in enumerate(clip.packets):
        packet = av.Packet(data)
        packet.pts = number
        packets.append(packet)
    return packets


def raw_run(clip: Clip, threads: int | None) -> Run:
    """Decode *clip*, frames discarded."""
    decoder = _decoder(clip, threads)
    packets = _packets(clip)
    frames = 0
    start = time.perf_counter()
    for packet in packets:
        frames += len(decoder.decode(packet))
    frames += len(decoder.decode(None))
    return Run(time.perf_counter() - start, frames)


class DaemonPath:
    """The daemon's work for each decoded frame (see the module doc), into
    one CAPTURE buffer, remade when the picture's geometry changes. Keeps
    the first KERNEL_FRAMES frames (*keep*) for the kernels' timing."""

    def __init__(self, hook: FrameHook | None = None, keep: int = 0) -> None:
        self.hook = hook
        self.capture = np.empty(0, np.uint8)
        self.geometry = (0, 0, 0)  # bytesperline, height, pixfmt
        self.feed_s = self.place_s = 0.0
        self.first: FrameInfo | None = None
        self.bits = 0
        self.number = 0
        self.keep = keep
        self.kept: list[KeptFrame] = []

    def frame(self, frame: av.VideoFrame, timestamp: int) -> None:
        """FEED then FETCH of *frame*, one after the other."""
        self.fetch(self.feed(frame, timestamp))

    def feed(self, frame: av.VideoFrame, timestamp: int) -> KeptFrame:
        """What FEED does with a decoded frame: keep it, make its entry."""
        t0 = time.perf_counter()
        self.number += 1
        kept = KeptFrame(frame_entry(frame, timestamp, self.number), frame)
        self.feed_s += time.perf_counter() - t0
        if self.first is None:
            self.first = kept.info
            self.bits = max(c.bits for c in frame.format.components)
        if len(self.kept) < self.keep:
            self.kept.append(kept)
        return kept

    def fetch(self, kept: KeptFrame) -> None:
        """What FETCH (DMABUF) does: lay the frame out into the CAPTURE buffer.
        One at a time (the pipelined run's single worker)."""
        info = kept.info
        bytesperline, height = capture_format(info.width, info.height, PixFmt(info.pixfmt))
        if (bytesperline, height, info.pixfmt) != self.geometry:  # a new CAPTURE format
            self.capture = np.zeros(buffer_size(bytesperline, height, PixFmt(info.pixfmt)),
                                    np.uint8)
            self.geometry = (bytesperline, height, info.pixfmt)
        t2 = time.perf_counter()
        kept.place(bytesperline, height, self.capture, zeroed=False)
        self.place_s += time.perf_counter() - t2
        if self.hook is not None:
            self.hook(info, self.capture, bytesperline, height)


def daemon_run(clip: Clip, threads: int | None, hook: FrameHook | None = None,
               keep: int = 0, pipelined: bool = True) -> tuple[Run, DaemonPath]:
    """Decode *clip* and put every frame through the daemon's path:
    *pipelined*, each frame's layout on a second thread while the next
    frame decodes (one layout in flight); else one step after the other."""
    decoder = _decoder(clip, threads)
    packets = _packets(clip)
    path = DaemonPath(hook, keep)
    frames = 0
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fetch") as fetcher:
        out: concurrent.futures.Future[None] | None = None
        start = time.perf_counter()
        for packet in [*packets, None]:
            for frame in decoder.decode(packet):
                kept = path.feed(frame, frame.pts if frame.pts is not None else frames)
                frames += 1
                if not pipelined:
                    path.fetch(kept)
                    continue
                if out is not None:
                    out.result()  # the kernel has one FETCH of a file out at a time
                out = fetcher.submit(path.fetch, kept)
        if out is not None:
            out.result()
        seconds = time.perf_counter() - start
    return Run(seconds, frames, path.feed_s, path.place_s), path


class DeviceFailed(Exception):
    """The decode through the node failed (the result's error)."""


def open_device(device: str | Path) -> None:
    """BenchError unless *device* opens as a memory-to-memory device."""
    from daedalus.m2m.v4l2 import DecodeError, M2MNode

    try:
        with M2MNode(device) as node:
            node.check_m2m()
    except OSError as exc:
        raise BenchError(f"cannot open {device}: {exc.strerror or exc}") from None
    except DecodeError as exc:  # NotADecoder
        raise BenchError(str(exc)) from None


def device_run(clip: Clip, device: str | Path,
               warn: Callable[[str], None] | None = None) -> Run:
    """Decode *clip* through the node *device* (see the module doc), frames
    counted; DeviceFailed if the client gives up."""
    from daedalus.m2m.v4l2 import DecodeError, Frame, M2MNode, StatefulDecode

    frames = 0

    def count(frame: Frame) -> None:
        nonlocal frames
        frames += 1

    timestamps = clip.timestamps or tuple(range(len(clip.packets)))
    stream = list(zip(timestamps, clip.packets, strict=True))
    largest = max(stream, key=lambda pair: len(pair[1]))
    try:
        with M2MNode(device) as node:
            decode = StatefulDecode(node, BY_NAME[clip.codec].fourcc, iter(stream), count,
                                    width=clip.width, height=clip.height, warn=warn,
                                    largest_packet=(largest[0], len(largest[1])))
            start = time.perf_counter()
            decode.run()
            seconds = time.perf_counter() - start
    except (DecodeError, OSError) as exc:
        raise DeviceFailed(f"{device}: {type(exc).__name__}: {exc}") from None
    return Run(seconds, frames)


def time_kernels(frames: Sequence[KeptFrame]) -> dict[str, dict[str, float]]:
    """Microseconds per frame of every registered implementation of the
    per-frame kernels on *frames* (best of KERNEL_ROUNDS), each into a
    CAPTURE buffer of the node's format, as FETCH into a mapped buffer."""
    if not frames:
        return {}
    out: dict[str, dict[str, float]] = {}
    info = frames[0].info
    bytesperline, height = capture_format(info.width, info.height, PixFmt(info.pixfmt))
    capture = np.zeros(buffer_size(bytesperline, height, PixFmt(info.pixfmt)), np.uint8)
    same = [k for k in frames if (k.info.width, k.info.height, k.info.pixfmt) ==
            (info.width, info.height, info.pixfmt)]
    for impl in kernels.registered()["place"]:
        table = kernels.Table({"place": impl})
        best = float("inf")
        for _ in range(KERNEL_ROUNDS):
            start = time.perf_counter()
            for kept in same:
                table.place(kept.picture, PixFmt(kept.info.pixfmt), bytesperline, height,
                            capture, False)
            best = min(best, time.perf_counter() - start)
        out.setdefault("place", {})[impl.name] = best / len(same) * 1e6
    return out


def threads_of(threads: int | None, clip: Clip) -> int:
    """The thread count FFmpeg's decoder of *clip* runs with for *threads*."""
    return int(_decoder(clip, threads).thread_count)


@dataclass(frozen=True)
class Result:
    """One clip's figures (a JSON result; see the module doc)."""

    file: str
    codec: str
    decoder: str
    width: int = 0
    height: int = 0
    bit_depth: int = 0
    pixfmt: str = ""
    frames: int = 0
    threads: int = 0
    rounds: int = 0
    raw_s: float = 0.0
    raw_fps: float = 0.0
    daemon_s: float = 0.0
    daemon_fps: float = 0.0
    daemon_ratio: float = 0.0
    feed_us: float = 0.0
    place_us: float = 0.0
    place: str = ""
    place_speedup: float = 0.0
    kernels: dict[str, dict[str, float]] = field(default_factory=dict)
    bytesperline: int = 0
    serial_s: float = 0.0
    serial_fps: float = 0.0
    serial_ratio: float = 0.0
    device: str | None = None
    device_s: float = 0.0
    device_fps: float = 0.0
    device_ratio: float = 0.0
    bridge_us: float = 0.0
    device_frames: int = 0
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        def rounded(value: Any) -> Any:
            if isinstance(value, float):
                return round(value, 4)
            if isinstance(value, dict):
                return {k: rounded(v) for k, v in value.items()}
            return value

        return {k: rounded(v) for k, v in asdict(self).items()}

    def with_device(self, device: str, run: Run | None, failure: str | None) -> Result:
        """This result with the figures of the decode through *device*
        (*run*: its fastest round, None if none ended) and its error:
        *failure*, or frame counts that differ from raw FFmpeg's."""
        error = failure
        if error is None and run is not None and run.frames != self.frames:
            error = f"raw FFmpeg decoded {self.frames} frames, {device} {run.frames}"
        if self.error is not None:
            error = self.error if error is None else f"{self.error}; {error}"
        if run is None:
            return replace(self, device=device, error=error)
        rate = fps(run)
        return replace(
            self, device=device, device_s=run.seconds, device_fps=rate,
            device_ratio=rate / self.raw_fps if self.raw_fps > 0 else 0.0,
            bridge_us=((run.seconds - self.raw_s) / self.frames * 1e6 if self.frames
                       else 0.0),
            device_frames=run.frames, error=error)


def fps(run: Run) -> float:
    return run.frames / run.seconds if run.seconds > 0 else 0.0


def measure(clip: Clip, *, threads: int | None = None, rounds: int = DEFAULT_ROUNDS,
            hook: FrameHook | None = None, device: str | Path | None = None,
            progress: Callable[[str], None] | None = None) -> Result:
    """*clip*'s figures: raw, daemon and (with *device*) device decodes
    alternately, *rounds* each, the fastest of each kept. *hook* sees the
    daemon path's frames of the first round. A failure of the clip (a
    decoder error, a layout the daemon refuses, frame counts that differ,
    the node failing the decode) is the result's ``error``; after the node
    failed a round it is not asked again."""
    decoder = BY_NAME[clip.codec].decoder
    raw: Run | None = None
    daemon: Run | None = None
    serial: Run | None = None
    path: DaemonPath | None = None
    node: Run | None = None
    failure: str | None = None
    sample: list[KeptFrame] = []
    try:
        count = threads_of(threads, clip)
        for i in range(rounds):
            if progress is not None:
                progress(f"round {i + 1}/{rounds}: raw FFmpeg")
            got = raw_run(clip, threads)
            raw = got if raw is None or got.seconds < raw.seconds else raw
            if progress is not None:
                progress(f"round {i + 1}/{rounds}: daemon path, serial")
            got = daemon_run(clip, threads, pipelined=False)[0]
            serial = got if serial is None or got.seconds < serial.seconds else serial
            if progress is not None:
                progress(f"round {i + 1}/{rounds}: daemon path, pipelined")
            run, ran = daemon_run(clip, threads, hook if i == 0 else None,
                                  keep=KERNEL_FRAMES if i == 0 else 0)
            if i == 0:
                sample = ran.kept
            if daemon is None or run.seconds < daemon.seconds:
                daemon, path = run, ran
            if device is not None and failure is None:
                if progress is not None:
                    progress(f"round {i + 1}/{rounds}: through {device}")
                try:
                    got = device_run(clip, device, warn=progress)
                except DeviceFailed as exc:
                    failure = str(exc)
                else:
                    node = got if node is None or got.seconds < node.seconds else node
        if progress is not None:
            progress("per-frame kernels")
        timed = time_kernels(sample)
    except (av.FFmpegError, ValueError) as exc:  # (UnsupportedLayout is a ValueError)
        return Result(clip.file, clip.codec, decoder, error=f"{type(exc).__name__}: {exc}")
    assert raw is not None and daemon is not None and path is not None and serial is not None
    result = _figures(clip, count, rounds, raw, daemon, path, timed)
    result = replace(result, serial_s=serial.seconds, serial_fps=fps(serial),
                     serial_ratio=fps(serial) / fps(raw) if fps(raw) > 0 else 0.0)
    return result if device is None else result.with_device(str(device), node, failure)


def _figures(clip: Clip, count: int, rounds: int, raw: Run, daemon: Run, path: DaemonPath,
             timed: dict[str, dict[str, float]]) -> Result:
    """The raw and daemon-path figures of *clip* from the fastest rounds."""
    decoder = BY_NAME[clip.codec].decoder
    info = path.first
    if info is None or raw.frames == 0:
        return Result(clip.file, clip.codec, decoder, threads=count,
                      error="no frame decoded")
    error = (None if raw.frames == daemon.frames
             else f"raw FFmpeg decoded {raw.frames} frames, the daemon path {daemon.frames}")
    per = 1e6 / daemon.frames
    chosen = kernels.table().chosen["place"].name
    place = timed.get("place", {})
    speedup = (place[kernels.REFERENCE] / place[chosen]
               if place.get(chosen) and kernels.REFERENCE in place else 0.0)
    return Result(
        clip.file, clip.codec, decoder, info.width, info.height, path.bits,
        PixFmt(info.pixfmt).name, raw.frames, count, rounds, raw.seconds, fps(raw),
        daemon.seconds, fps(daemon), fps(daemon) / fps(raw) if fps(raw) > 0 else 0.0,
        daemon.feed_s * per, daemon.place_s * per, chosen, speedup, timed,
        path.geometry[0], error=error)


# --- the report ------------------------------------------------------------------------


def software() -> str:
    """PyAV's and its libavcodec's versions."""
    lavc = av.library_versions.get("libavcodec")
    return f"PyAV {av.__version__}" + (f", libavcodec {'.'.join(map(str, lavc))}"
                                       if lavc else "")


def report_json(results: Sequence[Result]) -> dict[str, Any]:
    return {"results": [r.to_json() for r in results], "software": software(),
            "cpus": os.cpu_count(), "machine": platform.machine(),
            "dispatch": kernels.table().describe()}


TABLE_HEAD = ("file", "codec", "size", "bits", "frames", "threads", "raw fps", "daemon fps",
              "daemon/raw", "serial/raw", "feed us", "place us", "place", "vs reference")
DEVICE_HEAD = ("device fps", "device/raw", "bridge us")  # with --device


def table(results: Sequence[Result]) -> str:
    """The results as a text table, one row per clip; a failed clip's row
    names its error instead of figures. The device columns are there when
    a result has a device; a clip the node did not decode has dashes
    there."""
    with_device = any(r.device is not None for r in results)
    head = TABLE_HEAD + DEVICE_HEAD if with_device else TABLE_HEAD
    rows: list[tuple[str, ...]] = [head]
    errors = []
    for r in results:
        name = Path(r.file).name
        if r.error is not None and not r.frames:
            rows.append((name, r.codec, *("-",) * (len(head) - 2)))
        else:
            cells: tuple[str, ...] = (
                name, r.codec, f"{r.width}x{r.height}", str(r.bit_depth), str(r.frames),
                str(r.threads), f"{r.raw_fps:.1f}", f"{r.daemon_fps:.1f}",
                f"{r.daemon_ratio:.3f}", f"{r.serial_ratio:.3f}", f"{r.feed_us:.0f}",
                f"{r.place_us:.0f}", r.place,
                f"{r.place_speedup:.2f}x")
            if with_device:
                cells += ((f"{r.device_fps:.1f}", f"{r.device_ratio:.3f}",
                           f"{r.bridge_us:.0f}") if r.device_frames else ("-",) * 3)
            rows.append(cells)
        if r.error is not None:
            errors.append(f"  {name}: {r.error}")
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) if i < 2 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in rows]
    return "\n".join([*lines, *errors])


def bench(files: Sequence[str], *, threads: int | None = None, rounds: int = DEFAULT_ROUNDS,
          device: str | Path | None = None,
          progress: Callable[[str], None] | None = None) -> list[Result]:
    """Every clip of *files* measured, in order, with *device* also through
    that node (BenchError: a clip cannot be read, the node cannot be
    opened)."""
    if device is not None:
        open_device(device)
    clips = []
    for name in files:
        if progress is not None:
            progress(f"reading {name}")
        clips.append(load_clip(name))
    results = []
    for i, clip in enumerate(clips, 1):
        def step(text: str, i: int = i, clip: Clip = clip) -> None:
            if progress is not None:
                progress(f"[{i}/{len(clips)}] {Path(clip.file).name}: {text}")

        results.append(measure(clip, threads=threads, rounds=rounds, device=device,
                               progress=step))
    return results


# --- the command -------------------------------------------------------------------------


def threads_arg(text: str) -> int:
    """argparse type: a thread count >= 0 (0: FFmpeg's automatic count)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (automatic) or more, not {value}")
    return value


def size_arg(text: str) -> tuple[int, int]:
    """argparse type: WIDTHxHEIGHT, both even and at least 16."""
    width, sep, height = text.lower().partition("x")
    try:
        size = (int(width), int(height))
    except ValueError:
        size = (0, 0)
    if not sep or min(size) < 16 or size[0] % 2 or size[1] % 2:
        raise argparse.ArgumentTypeError(f"not an even WIDTHxHEIGHT of at least 16x16: {text}")
    return size


class BenchCommand:
    NAME = "bench"
    HELP = ("decode throughput: raw FFmpeg against the daemon's per-frame path (decode, "
            "FEED's entry, CAPTURE layout) and, with --device in a guest, the node, per clip")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from daedalus.m2m.cli import positive
        from daedalus.perf import clips

        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        parser.epilog = ("exit status: 0 every clip measured; 1 a clip failed (its row says "
                         "why); 2 the bench could not run")
        parser.add_argument("files", nargs="*", metavar="FILE",
                            help="clips (VP9 IVF, H.264 Annex-B, AV1 IVF or OBU) or corpus "
                                 "names")
        parser.add_argument("--threads", type=threads_arg, metavar="N",
                            help="decoder threads (0: FFmpeg's automatic count; default: "
                                 "the daemon's, automatic)")
        parser.add_argument("--rounds", type=positive, default=DEFAULT_ROUNDS, metavar="R",
                            help="decode each clip R times each way, keep the fastest "
                                 "(default: %(default)s)")
        parser.add_argument("--device", metavar="PATH",
                            help="also decode each clip through this V4L2 node (in a guest; "
                                 "auto: the daedalus-v4l2 node) and give the per-frame "
                                 "overhead of the node")
        parser.add_argument("--json", metavar="OUT",
                            help="also write the figures as JSON (-: on stdout, after the "
                                 "table)")
        parser.add_argument("--make-clips", type=Path, metavar="DIR",
                            help="first make VP9 / H.264 / AV1 8- and 10-bit clips in DIR "
                                 "with Debian's ffmpeg (then FILE may be omitted)")
        parser.add_argument("--clip-size", type=size_arg, default=clips.DEFAULT_SIZE,
                            metavar="WxH", help="--make-clips: picture size (default: "
                                                "1920x1080)")
        parser.add_argument("--clip-frames", type=positive, default=clips.DEFAULT_FRAMES,
                            metavar="N", help="--make-clips: frames per clip "
                                              "(default: %(default)s)")

    def run(self, args: argparse.Namespace) -> int:
        from daedalus.perf.clips import ClipError, make_clips

        def say(text: str) -> None:
            print(f"{PROG}: {text}", file=sys.stderr, flush=True)

        if not args.files and args.make_clips is None:
            say("no FILE (and no --make-clips DIR)")
            return 2
        if args.make_clips is not None:
            try:
                made = make_clips(args.make_clips, size=args.clip_size,
                                  frames=args.clip_frames, progress=say)
            except ClipError as exc:
                say(str(exc))
                return 2
            for path in made:
                print(path, flush=True)
        if not args.files:
            return 0
        device: str | None = args.device
        if device == "auto":
            from daedalus.skeleton.v4l2dev import find_node

            try:
                device = str(find_node())
            except OSError as exc:  # FileNotFoundError: no node
                say(str(exc))
                return 2
            say(f"device: {device}")
        try:
            results = bench(args.files, threads=args.threads, rounds=args.rounds,
                            device=device, progress=say)
        except BenchError as exc:
            say(str(exc))
            return 2
        print(table(results), flush=True)
        document = report_json(results)
        if args.json == "-":
            print(json.dumps(document), flush=True)
        elif args.json:
            Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
        return 0 if all(r.error is None for r in results) else 1
