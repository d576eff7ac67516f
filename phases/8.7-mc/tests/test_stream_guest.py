"""Phase 8.7 in the guest: multi-frame streams through a ring of buffers (issue item 2).

``daedalus-v4l2 decode`` keeps a ring of OUTPUT and CAPTURE buffers in
flight: ``--buffers N`` of each queue, 4 by default (the roadmap's 4-deep
ring), and daedalusd keeps each context's decoder, with its reference
frames, from one job (one OUTPUT buffer) to the next. Every clip here is
one keyframe followed by inter frames only (ffprobe says so), so a
byte-exact decode is also the proof that the reference frames outlived the
job that decoded them.

The clips: VP9 320x240 and H.264 High 320x240 (B-frames, ``-bf 2``), and
AV1 320x240, 30 frames each; VP9, H.264 and AV1 at 1920x1080, 10 frames
each (phase 8.3's corpus, the large ones encoded on first use). Each is
decoded by the tool through the node at the default depth, and the H.264
clip also with ``--buffers 1`` and ``--buffers 8``: the output must not
change with the depth.

What is checked, against sources the tool does not control:

- pixels: byte for byte against Debian's ffmpeg decoding the same file to
  ``-pix_fmt nv12 -f rawvideo`` (daedalus.m2m.reference), frame by frame;
- frame count: ffprobe's ``-show_frames`` (Debian's ffprobe) count, which
  also gives the frame types (one keyframe, then inter frames; B-frames in
  the H.264 clips);
- the ring: the kernel's own record of the tool's buffer traffic, the
  ``v4l2:v4l2_qbuf`` / ``v4l2:v4l2_dqbuf`` trace events (emitted by the V4L2
  core for every successful VIDIOC_QBUF / DQBUF, with the buffer's index and
  queue type), recorded with the ``counter`` trace clock so that events on
  either vCPU are in the order they happened. From them: the buffer indices
  each queue used (exactly 0..N-1), the most buffers queued at once (N), and
  that the ring is kept full: every CAPTURE DQBUF finds N buffers queued,
  and until the last packet is queued, every OUTPUT buffer returned is
  refilled before the tool waits for the next (N queued at the start of
  each run of DQBUFs).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from daedalus.m2m.clients import (
    DECODE_TIMEOUT,
    decode_argv,
    frame_sizes,
    reference_frames,
    split,
    summary,
)
from daedalus.m2m.status import DecodeExit
from daedalus.parse import corpus
from daedalus.parse.readers import read_all
from daedalus.parse.reference import probe_frames
from daedalus.testbed.guestctl import daemon_state

pytestmark = [pytest.mark.guest, pytest.mark.usefixtures("kernel_log")]

SMALL = ["vp9-320x240", "h264-high-320x240", "av1-320x240-30f"]
LARGE = ["vp9-1920x1080", "h264-high-1920x1080", "av1-1920x1080"]
DEFAULT_RING = 4          # the roadmap's depth, the tool's default: these decodes pass no --buffers
DEPTH_CLIP = "h264-high-320x240"  # B-frames: frames leave the decoder out of order
DEPTHS = [1, 8]
PATIENCE = "120"          # the tool's --timeout: a 1080p frame under TCG takes a while

TRACEFS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
EVENTS = ("v4l2/v4l2_qbuf", "v4l2/v4l2_dqbuf")
# "  daedalus-v4l2-412     [001] .....   8812: v4l2_qbuf: minor = 0, index = 3,
#  type = VIDEO_OUTPUT_MPLANE, bytesused = ..." (a "(tgid)" column with record-tgid)
TRACE_LINE = re.compile(r"-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[\d+\].*?\s"
                        r"(?P<event>v4l2_qbuf|v4l2_dqbuf): minor = \d+, "
                        r"index = (?P<index>\d+), type = (?P<type>\w+),")
ENTRIES = re.compile(r"entries-in-buffer/entries-written: (\d+)/(\d+)")
OUTPUT_TYPE = "VIDEO_OUTPUT_MPLANE"
CAPTURE_TYPE = "VIDEO_CAPTURE_MPLANE"


# --- the kernel's record of the buffer traffic -------------------------------------------


def tracefs() -> Path:
    """Where tracefs is (debugfs, which the guest mounts, automounts it under
    tracing/); mounted at /sys/kernel/tracing if neither has it."""
    for root in TRACEFS:
        if (root / "trace").exists():
            return root
    subprocess.run(["mount", "-t", "tracefs", "tracefs", str(TRACEFS[0])], check=True,
                   timeout=30)
    return TRACEFS[0]


class BufferTrace:
    """The v4l2_qbuf / v4l2_dqbuf trace events while the block runs, read
    into ``text`` at its end; tracefs is left as it was found."""

    def __init__(self) -> None:
        self.root = tracefs()
        self.text = ""

    def _write(self, name: str, value: str) -> None:
        (self.root / name).write_text(value)

    def _read(self, name: str) -> str:
        return (self.root / name).read_text().strip()

    def __enter__(self) -> BufferTrace:
        clock = re.search(r"\[(\S+)\]", self._read("trace_clock"))
        self.saved_clock = clock[1] if clock else "local"
        self.saved_on = self._read("tracing_on")
        # "0" or "1" ("0*" / "1*" while soft-disabled: the bit that can be written back)
        self.saved_events = {e: self._read(f"events/{e}/enable")[:1] for e in EVENTS}
        self._write("tracing_on", "0")
        self._write("trace_clock", "counter")  # one order across CPUs; empties the buffer
        self._write("trace", "")                # and once more, whatever the clock was
        for event in EVENTS:
            self._write(f"events/{event}/enable", "1")
        self._write("tracing_on", "1")
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self._write("tracing_on", "0")
            self.text = (self.root / "trace").read_text()
        finally:
            for event, enable in self.saved_events.items():
                self._write(f"events/{event}/enable", enable)
            self._write("trace_clock", self.saved_clock)
            self._write("tracing_on", self.saved_on)

    def events(self, pid: int) -> list[tuple[str, str, int]]:
        """(queue type, event, buffer index) of process *pid*, in order."""
        counts = ENTRIES.search(self.text)
        assert counts is not None, self.text[:2000]
        assert counts[1] == counts[2], f"the trace buffer lost events: {counts[0]}"
        return [(m["type"], m["event"], int(m["index"]))
                for m in map(TRACE_LINE.search, self.text.splitlines())
                if m is not None and int(m["pid"]) == pid]


@dataclass(frozen=True)
class Ring:
    """One queue's buffer traffic, from the trace."""

    indices: frozenset[int]    # the buffers ever queued
    queued: int                # QBUFs
    dequeued: int              # DQBUFs
    deepest: int               # the most buffers queued at once
    at_dequeue: tuple[int, ...]  # buffers queued at each DQBUF
    at_wait: tuple[int, ...]   # at the first DQBUF after QBUFs, before the last QBUF


def ring(events: list[tuple[str, str, int]], buf_type: str) -> Ring:
    queued: set[int] = set()
    deepest = 0
    at_dequeue: list[int] = []
    waits: list[tuple[int, int]] = []  # (position, buffers queued)
    previous = ""
    mine = [(event, index) for kind, event, index in events if kind == buf_type]
    for position, (event, index) in enumerate(mine):
        if event == "v4l2_qbuf":
            assert index not in queued, f"{buf_type} buffer {index} queued twice"
            queued.add(index)
            deepest = max(deepest, len(queued))
        else:
            assert index in queued, f"{buf_type} buffer {index} dequeued, never queued"
            at_dequeue.append(len(queued))
            if previous == "v4l2_qbuf":
                waits.append((position, len(queued)))
            queued.discard(index)
        previous = event
    qbufs = [i for i, (event, _) in enumerate(mine) if event == "v4l2_qbuf"]
    last = qbufs[-1] if qbufs else -1
    return Ring(indices=frozenset(index for event, index in mine if event == "v4l2_qbuf"),
                queued=len(qbufs), dequeued=len(mine) - len(qbufs), deepest=deepest,
                at_dequeue=tuple(at_dequeue),
                at_wait=tuple(depth for position, depth in waits if position < last))


# --- the independent references ------------------------------------------------------


@cache
def want(name: str) -> tuple[bytes, ...]:
    """Debian's ffmpeg's frames of clip *name* (one software decode per run)."""
    return tuple(reference_frames(name))


@cache
def probed(name: str) -> tuple[dict[str, Any], ...]:
    """ffprobe -show_frames of clip *name*: key_frame, pict_type, width, height."""
    return tuple(probe_frames(corpus.path(name)))


# --- the decode ----------------------------------------------------------------------


@dataclass(frozen=True)
class Streamed:
    status: int
    stdout: str
    stderr: str
    output: bytes
    output_ring: Ring
    capture_ring: Ring


def stream(name: str, tmp_path: Path, *extra: str) -> Streamed:
    """``daedalus-v4l2 decode`` of clip *name* through the node, its buffer
    traffic traced."""
    out = tmp_path / "out.yuv"
    argv = decode_argv(corpus.path(name), out, "--timeout", PATIENCE, *extra)
    with BufferTrace() as trace:
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        try:
            stdout, stderr = child.communicate(timeout=DECODE_TIMEOUT)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            raise
    events = trace.events(child.pid)
    return Streamed(child.returncode, stdout, stderr,
                    out.read_bytes() if out.exists() else b"",
                    ring(events, OUTPUT_TYPE), ring(events, CAPTURE_TYPE))


def check(name: str, got: Streamed, depth: int) -> None:
    """Byte-exact, ffprobe's frame count, and a ring of *depth* kept full."""
    assert got.status == DecodeExit.OK, got.stdout + got.stderr
    frames = probed(name)
    result = summary(got.stdout)
    assert (result.frames, result.errors) == (len(frames), 0), got.stdout
    sizes = frame_sizes(name)
    assert len(sizes) == len(frames) == corpus.entry(name).frames
    assert split(got.output, sizes) == list(want(name))
    packets = len(read_all(corpus.path(name))[1])
    out, cap = got.output_ring, got.capture_ring
    # OUTPUT: one packet per buffer, the ring refilled as buffers come back (the
    # last few may still be on the queue when the drain ends: STREAMOFF takes them)
    assert out.queued == packets and packets - depth <= out.dequeued <= packets
    assert out.indices == frozenset(range(depth)) and out.deepest == depth
    assert out.at_wait and set(out.at_wait) == {depth}, out
    # CAPTURE: every buffer queued, each requeued once its frame is read; the
    # last one (flagged LAST) may be an empty buffer after the last frame
    assert cap.indices == frozenset(range(depth)) and cap.deepest == depth
    assert set(cap.at_dequeue) == {depth}, cap
    assert len(frames) <= cap.dequeued <= len(frames) + 1
    assert daemon_state() == "ready"


def test_the_clips_are_what_the_issue_names() -> None:
    """From the corpus manifest and ffprobe, not from the decode: VP9 at
    320x240 (30 frames) and 1080p (10); H.264 with B-frames and AV1, at least
    30 frames at no more than 640x480 and at least 10 at 1080p. Each is one
    keyframe and then inter frames only, so it cannot decode without the
    reference frames of earlier jobs."""
    shape = {name: (corpus.entry(name).codec, corpus.entry(name).width,
                    corpus.entry(name).height, corpus.entry(name).frames)
             for name in SMALL + LARGE}
    assert shape["vp9-320x240"] == ("vp9", 320, 240, 30)
    assert shape["vp9-1920x1080"] == ("vp9", 1920, 1080, 10)
    for codec in ("h264", "av1"):
        small = [s for s in shape.values() if s[0] == codec and s[1] * s[2] <= 640 * 480]
        large = [s for s in shape.values() if s[0] == codec and s[1:3] == (1920, 1080)]
        assert small and all(s[3] >= 30 for s in small), codec
        assert large and all(s[3] >= 10 for s in large), codec
    for name in SMALL + LARGE:
        frames = probed(name)
        assert len(frames) == corpus.entry(name).frames, name
        assert [f["key_frame"] for f in frames] == [1] + [0] * (len(frames) - 1), name
        assert {(f["width"], f["height"]) for f in frames} == {shape[name][1:3]}, name
        if shape[name][0] == "h264":
            assert "B" in {f["pict_type"] for f in frames}, name


@pytest.mark.parametrize("name", SMALL + LARGE)
def test_stream_through_the_default_ring_is_byte_exact(name: str, tmp_path: Path) -> None:
    """No --buffers: the tool's default ring is the roadmap's 4 of each queue."""
    check(name, stream(name, tmp_path), DEFAULT_RING)


@pytest.mark.parametrize("depth", DEPTHS)
def test_the_ring_depth_is_configurable_and_changes_no_pixel(depth: int,
                                                             tmp_path: Path) -> None:
    """--buffers 1 (one buffer each way: every frame waits for the previous
    one to be read) and 8: exactly that many buffers per queue, kept full,
    and the same frames, byte for byte."""
    check(DEPTH_CLIP, stream(DEPTH_CLIP, tmp_path, "--buffers", str(depth)), depth)
