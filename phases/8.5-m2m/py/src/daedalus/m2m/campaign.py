"""``daedalus-v4l2 campaign fuzz|kill|soak``: standing reliability campaigns.

Run as root inside a guest (``daedalus-v4l2 guest --phase 8.5 -- daedalus-v4l2
campaign ...``) against the real node and the daedalusd the testbed started.
Every decode goes through the node with the decode tool's client
(v4l2.StatefulDecode) in this process; every picture that should be intact is
compared byte for byte with Debian's ffmpeg (reference.py). Seeded: the same
``--seed`` gives the same streams, kill points and clips, and a finding names
what reproduces it (``--seed S --start I --count 1``).

- **fuzz**: for each stream, a corpus clip of a codec the node offers
  (round robin), mutated by a seeded RNG (mutate.py), then the clean clip
  appended. Counted: streams, buffers, buffers in error, hangs (nothing moved
  for ``--timeout`` s, or a call that never returns), daemon crashes (its pid
  changed or the kernel no longer sees it ready; it is restarted), kernel
  warnings, and whether the stream resumed: every frame of the clean copy
  byte-exact.
- **kill**: a long decode (the clip four times); after a seeded number of
  frames daedalusd is SIGKILLed. Measured: how long the client takes to see
  the first buffer in error and to finish, the new daemon's start (exec to
  ready), and that it then serves a byte-exact decode; the frames before the
  kill must be intact.
- **soak**: one long decode (the clip repeated to ``--frames``), every frame
  compared; kernel Slab / SUnreclaim / VmallocUsed (``/proc/meminfo``) and
  daedalusd's VmRSS sampled at the start, every ``--every`` frames and at the
  end; growth from the first sample after warm-up to the last, and from
  before the decode to after it, against stated limits.

Exit status: 0 nothing found; 1 a finding (a hang, a daemon crash, a lost or
wrong frame, a kernel warning, a client slower to fail than ``--fail-within``,
growth beyond a limit); 2 the campaign could not run (no node, no daemon,
no corpus clip for an offered codec).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Any

from daedalus.m2m.cli import positive, seconds
from daedalus.m2m.layout import Geometry
from daedalus.m2m.mutate import Mutation, digest, mutate, stream_rng
from daedalus.m2m.v4l2 import (
    DecodeError,
    DecodeTimeout,
    Frame,
    M2MNode,
    StatefulDecode,
    Stats,
)
from daedalus.proto import codecs

PROG = "daedalus-v4l2 campaign"
EXIT_CLEAN, EXIT_FINDINGS, EXIT_CANNOT = 0, 1, 2

CLEAN_BASE = 1_000_000      # timestamps of the clean copy after a mutated part
PROGRESS_EVERY = 50         # fuzz streams between progress lines
DEFAULT_TIMEOUT = 60.0      # seconds without progress: a hang
STUCK_GRACE = 30.0          # beyond that, a call that has not returned: stuck for good
BRIDGE_TIMEOUT = Path("/sys/module/daedalus_v4l2/parameters/daemon_timeout_ms")
DEFAULT_CLIP = {"vp9": "vp9-320x240", "h264": "h264-high-320x240", "av1": "av1-320x240"}
# The kernel log lines that fail a guest run (the testbed's list).
KERNEL_BAD = re.compile(
    r"(WARNING:|\bBUG[: ]|Oops|general protection fault|Kernel panic|"
    r"possible circular locking|possible recursive locking|INFO: task .* blocked|"
    r"KASAN|UBSAN|kernel BUG|Call Trace:|RIP: |list_add corruption|refcount_t:)")


class CampaignError(Exception):
    """The campaign cannot run; one line for the user."""


def say(text: str) -> None:
    print(text, flush=True)


class Findings:
    """What a campaign found, each printed on stderr as it is found."""

    def __init__(self, campaign: str) -> None:
        self.campaign = campaign
        self.items: list[str] = []

    def add(self, text: str) -> None:
        self.items.append(text)
        print(f"{PROG} {self.campaign}: finding: {text}", file=sys.stderr, flush=True)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[str]:
        return iter(self.items)


# --- clips -------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    """A corpus clip as the campaigns feed it: packets, and ffmpeg's frames."""

    name: str
    codec: str
    code: str                  # the node's coded format
    width: int
    height: int
    packets: tuple[bytes, ...]
    frames: tuple[bytes, ...]  # Debian ffmpeg's pictures, tightly packed NV12


def load_clip(name: str) -> Clip:
    from daedalus.m2m.reference import ReferenceError, reference_output
    from daedalus.parse import corpus
    from daedalus.parse.readers import read_all

    try:
        entry = corpus.entry(name)
        path = corpus.path(name)
    except corpus.CorpusError as exc:
        raise CampaignError(str(exc)) from None
    if len(entry.sizes) != 1 or entry.bit_depth != 8 or entry.pix_fmt != "yuv420p":
        raise CampaignError(f"{name}: the campaigns take 8-bit clips of one size (4:2:0, "
                            f"NV12 CAPTURE, frames compared at one size), not {entry.sizes} "
                            f"{entry.bit_depth}-bit {entry.pix_fmt}")
    info, packets = read_all(path)
    try:
        want = reference_output(path)
    except ReferenceError as exc:
        raise CampaignError(str(exc)) from None
    size = Geometry(entry.width, entry.height).packed_size
    if len(want) % size:
        raise CampaignError(f"{name}: ffmpeg wrote {len(want)} bytes, not whole "
                            f"{entry.width}x{entry.height} frames")
    frames = tuple(want[i:i + size] for i in range(0, len(want), size))
    return Clip(name, info.codec, codecs.BY_NAME[info.codec].fourcc, entry.width, entry.height,
                tuple(p.data for p in packets), frames)


def offered_codecs(device: Path) -> list[str]:
    """The codecs (phase 8.3's names) whose coded format the node offers."""
    from daedalus.skeleton.v4l2dev import OUTPUT

    with M2MNode(device) as node:
        node.check_m2m()
        formats = node.formats(OUTPUT)
    # AV1 ('AV01') only from phase 8.6 on: the 8.5 node offers VP9 and H.264.
    return [desc.name for desc in codecs.CODECS if desc.fourcc in formats]


def default_clips(codecs: Sequence[str]) -> list[str]:
    """kill and soak: the 320x240 clip of each codec."""
    return [DEFAULT_CLIP[codec] for codec in codecs]


def fuzz_clips(codecs: Sequence[str]) -> list[str]:
    """fuzz: every committed corpus clip of those codecs that the campaigns
    take (8-bit 4:2:0, one size), interleaved by codec so that any run of
    streams covers every codec."""
    from daedalus.parse import corpus

    by_codec = [[e.name for e in corpus.entries(large=False)
                 if e.codec == codec and e.bit_depth == 8 and e.pix_fmt == "yuv420p"
                 and len(e.sizes) == 1]
                for codec in codecs]
    return [name for group in zip_longest(*by_codec) for name in group if name]


# --- the machine: daemon, kernel log, memory ----------------------------------------


def _proc_state(pid: int) -> str | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("State:"):
                return line.split()[1]
    except OSError:
        return None
    return None


def daemon_process() -> int | None:
    """daedalusd's pid: the testbed's pid file, else the one process named so."""
    from daedalus.testbed.guestctl import daemon_pid

    pid = daemon_pid()
    if pid is not None and _proc_state(pid) not in (None, "Z"):
        return pid
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "daedalusd":
                    return int(entry.name)
            except OSError:
                continue
    return None


def daemon_state() -> str:
    from daedalus.testbed.guestctl import daemon_state as state

    return state()


def meminfo() -> dict[str, int]:
    """/proc/meminfo in KiB."""
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            out[key] = int(parts[0])
    return out


def rss_kib(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class KernelLog:
    """New kernel log records since construction that look like a WARN/BUG/oops.

    Reads /dev/kmsg (one record per read, non-blocking, from its end at the
    start), so checking after every stream costs no process; where it cannot
    be opened (not root), there is nothing to check and ``problems`` says so
    once."""

    def __init__(self) -> None:
        self.fd: int | None = None
        try:
            self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            os.lseek(self.fd, 0, os.SEEK_END)
        except OSError as exc:
            print(f"{PROG}: cannot read the kernel log (/dev/kmsg: {exc.strerror}); kernel "
                  "warnings are not counted", file=sys.stderr)
            if self.fd is not None:
                os.close(self.fd)
            self.fd = None

    def report(self, findings: Findings, prefix: str = "") -> int:
        """How many new problem records; the first one becomes a finding."""
        problems = self.problems()
        if problems:
            findings.add(f"{prefix}kernel log: {problems[0]}")
        return len(problems)

    def problems(self) -> list[str]:
        found: list[str] = []
        while self.fd is not None:
            try:
                record = os.read(self.fd, 8192).decode(errors="replace")
            except BlockingIOError:
                break
            except BrokenPipeError:  # records overwritten before we read them
                continue
            message = record.partition(";")[2].splitlines()[0] if ";" in record else record
            if KERNEL_BAD.search(message):
                found.append(message.strip())
        return found

@contextmanager
def bridge_timeout(ms: int | None) -> Iterator[None]:
    """The module's daemon_timeout_ms (the watchdog) set to *ms* inside the block."""
    if ms is None:
        yield
        return
    try:
        saved = BRIDGE_TIMEOUT.read_text().strip()
        BRIDGE_TIMEOUT.write_text(str(ms))
    except OSError as exc:
        raise CampaignError(f"cannot set {BRIDGE_TIMEOUT}: {exc.strerror or exc}") from None
    try:
        yield
    finally:
        BRIDGE_TIMEOUT.write_text(saved)


# --- one decode, watched -----------------------------------------------------------


@dataclass
class Run:
    """One decode through the node, as a campaign sees it."""

    stats: Stats
    frames: list[Frame] = field(default_factory=list)  # those the caller kept
    hang: str | None = None     # nothing moved for the timeout / a call never returned
    stuck: bool = False         # a call never returned: the node may be unusable now
    error: str | None = None    # the decode stopped for another reason
    ended: float | None = None  # time.monotonic() when the decode loop returned
    first_error: float | None = None  # time.monotonic() of the first buffer in error


def run_decode(device: Path, code: str, width: int, height: int,
               packets: Sequence[tuple[int, bytes]], *, timeout: float = DEFAULT_TIMEOUT,
               keep: Callable[[Frame], bool] = lambda frame: True,
               on_frame: Callable[[Frame], None] | None = None,
               started: Callable[[Run], None] | None = None) -> Run:
    """Decode *packets* through *device* in a worker thread; nothing decoded
    is lost track of: a decode that stops moving for *timeout* s is a hang
    (the client's own check), and one whose worker does not come back
    STUCK_GRACE s later (an ioctl or close() that never returns) is stuck."""
    run = Run(Stats())
    box: dict[str, StatefulDecode] = {}

    def got(frame: Frame) -> None:
        if keep(frame):
            run.frames.append(frame)
        if on_frame is not None:
            on_frame(frame)

    def warn(text: str) -> None:
        if run.first_error is None and "ERROR" in text:
            run.first_error = time.monotonic()

    def work() -> None:
        try:
            with M2MNode(device) as node:
                decode = StatefulDecode(node, code, iter(packets), got, timeout=timeout,
                                        width=width, height=height, warn=warn,
                                        fail_fast=None)
                box["decode"] = decode
                run.stats = decode.stats
                try:
                    decode.run()
                finally:
                    run.ended = time.monotonic()
        except DecodeTimeout as exc:
            run.hang = str(exc)
        except DecodeError as exc:
            run.error = str(exc)
        except OSError as exc:
            run.error = f"V4L2 call failed: {exc.strerror or exc}"

    worker = threading.Thread(target=work, name="campaign-decode", daemon=True)
    worker.start()
    if started is not None:
        started(run)
    last: tuple[int, ...] = ()
    moved = time.monotonic()
    while worker.is_alive():
        worker.join(0.5)
        decode = box.get("decode")
        now = time.monotonic()
        mark = ((decode.stats.packets, decode.output_returned, decode.stats.frames,
                 decode.stats.errors, run.ended is not None) if decode is not None else ())
        if mark != last:
            last, moved = mark, now
        elif now - moved > timeout + STUCK_GRACE:
            run.hang = run.hang or (f"a V4L2 call has not returned for {now - moved:.0f} s "
                                    f"({'closing' if run.ended else 'decoding'})")
            run.stuck = True
            break
    return run


def describe_stats(stats: Stats) -> str:
    return (f"{stats.packets} buffers, {stats.frames} frames, {len(stats.output_errors)} "
            f"OUTPUT + {len(stats.capture_errors)} CAPTURE in error")


# --- fuzz ----------------------------------------------------------------------------


@dataclass
class FuzzCounts:
    seed: int
    first: int
    streams: int = 0
    by_codec: dict[str, int] = field(default_factory=dict)
    mutations: dict[str, int] = field(default_factory=dict)
    buffers: int = 0
    output_errors: int = 0
    capture_errors: int = 0
    frames: int = 0
    hangs: int = 0
    crashes: int = 0
    other_stops: int = 0
    resumed: int = 0
    lost_frames: int = 0       # clean-copy frames missing
    wrong_frames: int = 0      # clean-copy frames not byte-exact
    early_stamped: int = 0     # first clean frame stamped with the mutated part's last buffer
    kernel_warnings: int = 0
    digest: str = ""
    seconds: float = 0.0
    findings: Findings = field(default_factory=lambda: Findings("?"))


def fuzz_plan(clips: Sequence[Clip], seed: int, first: int, count: int
              ) -> Iterator[tuple[int, Clip, list[bytes], list[Mutation]]]:
    """Stream *index*: (index, clip, mutated packets, mutations), reproducible alone."""
    for index in range(first, first + count):
        clip = clips[index % len(clips)]
        packets, mutations = mutate(clip.packets, stream_rng(seed, index))
        yield index, clip, packets, mutations


def _check_daemon(pid: int | None, counts_findings: Findings, what: str
                  ) -> tuple[bool, int | None]:
    """(crashed, the pid to watch from now on); a crashed daemon is started again."""
    from daedalus.testbed.guestctl import start_daemon

    now = daemon_process()
    state = daemon_state()
    if now == pid and state == "ready":
        return False, pid
    counts_findings.add(f"{what}: daedalusd crashed (pid {pid} -> {now}, kernel sees "
                           f"{state})")
    try:
        start_daemon()
    except RuntimeError as exc:
        raise CampaignError(f"after a daemon crash: {exc}") from None
    return True, daemon_process()


def judge_clean_copy(frames: Sequence[Frame], want: Sequence[bytes]) -> tuple[int, int, int]:
    """(lost, not byte-exact, early-stamped) for the clean copy at the end of a
    fuzz stream: its frames must be the last len(want) frames delivered, in
    order, byte-exact, and every frame stamped with a clean-copy timestamp
    must be among them. The first clean frame may carry the timestamp of the
    mutated part's last buffer: when a cut left that buffer's bytes without an
    access-unit end, the parser joins them to the clean key frame, and
    dev-decoder.rst gives a frame made of several OUTPUT buffers "the
    timestamp of the OUTPUT buffer queued first" (early-stamped, not a fault)."""
    n = len(want)
    tail, before = list(frames[-n:]), list(frames[:-n])
    lost = n - len(tail)
    # matched from the end: a lost frame shifts nothing after it
    wrong = sum(1 for got, ok in zip(reversed(tail), reversed(want), strict=False)
                if got.data != ok)
    early = sum(1 for f in tail[:1]
                if not lost and f.timestamp < CLEAN_BASE and f.data == want[0])
    # a mutated-part frame among the clean ones, or a clean one before them
    wrong += sum(1 for f in tail[1:] if f.timestamp < CLEAN_BASE)
    wrong += sum(1 for f in before if f.timestamp >= CLEAN_BASE)
    return lost, wrong, early


def fuzz(device: Path, clips: Sequence[Clip], *, seed: int, first: int, count: int,
         timeout: float, verbose: bool) -> FuzzCounts:
    counts = FuzzCounts(seed=seed, first=first, findings=Findings("fuzz"))
    stream_digests = []
    klog = KernelLog()
    pid = daemon_process()
    start = time.monotonic()
    for index, clip, packets, mutations in fuzz_plan(clips, seed, first, count):
        stream_digests.append(digest(packets))
        feed = [*enumerate(packets), *((CLEAN_BASE + i, p) for i, p in enumerate(clip.packets))]
        run = run_decode(device, clip.code, clip.width, clip.height, feed, timeout=timeout)
        stats = run.stats
        counts.streams += 1
        counts.by_codec[clip.codec] = counts.by_codec.get(clip.codec, 0) + 1
        for m in mutations:
            counts.mutations[m.kind] = counts.mutations.get(m.kind, 0) + 1
        counts.buffers += stats.packets
        counts.output_errors += len(stats.output_errors)
        counts.capture_errors += len(stats.capture_errors)
        counts.frames += stats.frames
        what = f"stream {index} ({clip.name}: {' '.join(str(m) for m in mutations)})"
        want = clip.frames
        lost, wrong, early = judge_clean_copy(run.frames, want)
        counts.early_stamped += early
        if run.hang:
            counts.hangs += 1
            counts.findings.add(f"{what}: hang: {run.hang}")
        elif run.error:
            counts.other_stops += 1
            counts.findings.add(f"{what}: the decode stopped: {run.error}")
        if lost or wrong:
            counts.lost_frames += lost
            counts.wrong_frames += wrong
            counts.findings.add(f"{what}: did not resume: {len(want) - lost} of {len(want)} "
                                   f"clean frames, {wrong} not byte-exact "
                                   f"({describe_stats(stats)})")
        else:
            counts.resumed += 1
        if run.stuck:
            counts.findings.add(f"{what}: the node is stuck; the campaign stops here")
            break
        crashed, pid = _check_daemon(pid, counts.findings, what)
        counts.crashes += crashed
        counts.kernel_warnings += klog.report(counts.findings, f"{what}: ")
        if verbose:
            say(f"{what}: {describe_stats(stats)}, clean copy "
                f"{'intact' if not (lost or wrong) else 'NOT intact'}")
        elif counts.streams % PROGRESS_EVERY == 0:
            say(f"  ... {counts.streams} streams, {counts.hangs} hangs, {counts.crashes} "
                f"crashes, {counts.resumed} resumed, {time.monotonic() - start:.0f} s")
    counts.seconds = time.monotonic() - start
    counts.digest = digest([bytes.fromhex(d) for d in stream_digests])
    return counts


def print_fuzz(counts: FuzzCounts, clips: Sequence[Clip]) -> None:
    last = counts.first + counts.streams - 1
    say(f"campaign fuzz: seed {counts.seed}, streams {counts.first}..{last}: "
        f"{counts.streams} streams ("
        + ", ".join(f"{codec} {n}" for codec, n in sorted(counts.by_codec.items()))
        + f"; clips {', '.join(c.name for c in clips)}), {counts.seconds:.0f} s")
    say("  mutations: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.mutations.items())))
    say(f"  buffers {counts.buffers}, in error {counts.output_errors + counts.capture_errors} "
        f"(OUTPUT {counts.output_errors}, CAPTURE {counts.capture_errors}), "
        f"frames {counts.frames}")
    say(f"  hangs {counts.hangs}, daemon crashes {counts.crashes}, kernel warnings "
        f"{counts.kernel_warnings}, decodes stopped otherwise {counts.other_stops}")
    say(f"  resumed at the clean key frame: {counts.resumed} of {counts.streams} streams "
        f"(clean frames lost {counts.lost_frames}, not byte-exact {counts.wrong_frames}; "
        f"first clean frame stamped with the buffer before it: {counts.early_stamped})")
    say(f"  streams digest {counts.digest[:16]}")


# --- kill ----------------------------------------------------------------------------


@dataclass
class KillCounts:
    seed: int
    kills: int = 0
    frames_before: list[int] = field(default_factory=list)
    first_error_s: list[float] = field(default_factory=list)  # SIGKILL -> first ERROR buffer
    fail_s: list[float] = field(default_factory=list)         # SIGKILL -> the decode ended
    start_s: list[float] = field(default_factory=list)        # daemon exec -> ready
    served: int = 0           # next decodes byte-exact
    intact_before: int = 0    # decodes whose frames before the kill were intact
    hangs: int = 0
    kernel_warnings: int = 0
    seconds: float = 0.0
    findings: Findings = field(default_factory=lambda: Findings("?"))


def kill(device: Path, clips: Sequence[Clip], *, seed: int, count: int, timeout: float,
         fail_within: float, verbose: bool) -> KillCounts:
    from daedalus.testbed.guestctl import OUT, kill_daemon, start_daemon

    if not (OUT / "daemon.sh").exists():
        raise CampaignError("kill needs the testbed's daedalusd (run it inside "
                            "`daedalus-v4l2 guest`): it restarts the daemon the same way")
    counts = KillCounts(seed=seed, findings=Findings("kill"))
    klog = KernelLog()
    start = time.monotonic()
    for index in range(count):
        rng = stream_rng(seed, index, "kill")
        clip = clips[index % len(clips)]
        copies = 4
        packets = [(i, p) for i, p in enumerate(clip.packets * copies)]
        want = list(clip.frames) * copies
        after = rng.randint(1, len(clip.frames) * 2)  # frames before the SIGKILL
        what = f"kill {index} ({clip.name}, after {after} frames)"
        reached = threading.Event()
        runs: list[Run] = []

        def on_frame(frame: Frame, after: int = after, reached: threading.Event = reached,
                     runs: list[Run] = runs) -> None:
            if runs and len(runs[0].frames) >= after:
                reached.set()

        done = threading.Event()
        holder: dict[str, Run] = {}

        def decode(packets: list[tuple[int, bytes]] = packets,
                   holder: dict[str, Run] = holder, done: threading.Event = done,
                   clip: Clip = clip, runs: list[Run] = runs,
                   on_frame: Callable[[Frame], None] = on_frame) -> None:
            holder["run"] = run_decode(device, clip.code, clip.width, clip.height, packets,
                                       timeout=timeout, on_frame=on_frame,
                                       started=runs.append)
            done.set()

        threading.Thread(target=decode, daemon=True).start()
        while not reached.is_set() and not done.is_set():
            reached.wait(0.05)
        if done.is_set():
            counts.findings.add(f"{what}: the decode ended before the kill point")
            continue
        killed_at = time.monotonic()
        kill_daemon()
        counts.kills += 1
        counts.frames_before.append(after)
        if not done.wait(timeout + STUCK_GRACE + 60):
            counts.hangs += 1
            counts.findings.add(f"{what}: the client did not end after the SIGKILL; the "
                                   "campaign stops here")
            break
        run = holder["run"]
        if run.stuck or run.hang:
            counts.hangs += 1
            counts.findings.add(f"{what}: hang: {run.hang}")
        ended = (run.ended or time.monotonic()) - killed_at
        counts.fail_s.append(ended)
        if run.first_error is not None:
            counts.first_error_s.append(max(0.0, run.first_error - killed_at))
        if ended > fail_within:
            counts.findings.add(f"{what}: the client took {ended:.2f} s to fail (limit "
                                   f"{fail_within:g} s)")
        got = [f.data for f in run.frames]
        if got == want[:len(got)] and len(got) >= after:
            counts.intact_before += 1
        else:
            counts.findings.add(f"{what}: frames before the kill not intact ({len(got)} "
                                   f"frames)")
        try:
            counts.start_s.append(start_daemon())
        except RuntimeError as exc:
            raise CampaignError(f"{what}: {exc}") from None
        check = run_decode(device, clip.code, clip.width, clip.height,
                           list(enumerate(clip.packets)), timeout=timeout)
        if [f.data for f in check.frames] == list(clip.frames) and not check.stats.errors:
            counts.served += 1
        else:
            counts.findings.add(f"{what}: the next daemon's decode is not byte-exact "
                                   f"({describe_stats(check.stats)})")
        counts.kernel_warnings += klog.report(counts.findings, f"{what}: ")
        if verbose:
            say(f"{what}: client ended {ended:.2f} s after SIGKILL, daemon back in "
                f"{counts.start_s[-1]:.1f} s, next decode "
                f"{'byte-exact' if counts.served == counts.kills else 'NOT byte-exact'}")
    counts.seconds = time.monotonic() - start
    return counts


def _spread(values: Sequence[float]) -> str:
    if not values:
        return "none"
    return (f"min {min(values):.2f}, median {statistics.median(values):.2f}, "
            f"max {max(values):.2f} s")


def print_kill(counts: KillCounts, clips: Sequence[Clip], fail_within: float) -> None:
    say(f"campaign kill: seed {counts.seed}, {counts.kills} SIGKILLs mid-stream (clips "
        f"{', '.join(c.name for c in clips)}), {counts.seconds:.0f} s")
    say(f"  client saw the first buffer in error: {_spread(counts.first_error_s)}")
    slow = sum(1 for s in counts.fail_s if s > fail_within)
    say(f"  client finished: {_spread(counts.fail_s)}; over {fail_within:g} s: {slow}")
    say(f"  daemon start (exec to ready): {_spread(counts.start_s)}")
    say(f"  next decode byte-exact: {counts.served} of {counts.kills}; frames before the "
        f"kill intact: {counts.intact_before} of {counts.kills}")
    say(f"  hangs {counts.hangs}, kernel warnings {counts.kernel_warnings}")


# --- soak ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    frames: int
    seconds: float
    slab_kib: int
    sunreclaim_kib: int
    vmalloc_kib: int
    daemon_rss_kib: int | None

    @classmethod
    def take(cls, frames: int, start: float, pid: int | None) -> Sample:
        mem = meminfo()
        return cls(frames, time.monotonic() - start, mem.get("Slab", 0),
                   mem.get("SUnreclaim", 0), mem.get("VmallocUsed", 0), rss_kib(pid))


@dataclass
class SoakCounts:
    clip: str
    frames_wanted: int
    frames: int = 0
    exact: int = 0
    errors: int = 0
    hang: str | None = None
    crashed: bool = False
    kernel_warnings: int = 0
    samples: list[Sample] = field(default_factory=list)
    growth: dict[str, int] = field(default_factory=dict)
    limits: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    findings: Findings = field(default_factory=lambda: Findings("?"))


def soak(device: Path, clip: Clip, *, frames: int, every: int, timeout: float,
         limits: dict[str, int]) -> SoakCounts:
    copies = math.ceil(frames / len(clip.frames))
    counts = SoakCounts(clip=clip.name, frames_wanted=copies * len(clip.frames), limits=limits,
                        findings=Findings("soak"))
    packets = [(i, p) for i, p in enumerate(clip.packets * copies)]
    klog = KernelLog()
    pid = daemon_process()
    start = time.monotonic()
    counts.samples.append(Sample.take(0, start, pid))

    def on_frame(frame: Frame) -> None:
        n = counts.frames
        counts.frames += 1
        if frame.data == clip.frames[n % len(clip.frames)]:
            counts.exact += 1
        if counts.frames % every == 0:
            counts.samples.append(Sample.take(counts.frames, start, pid))

    run = run_decode(device, clip.code, clip.width, clip.height, packets, timeout=timeout,
                     keep=lambda frame: False, on_frame=on_frame)
    counts.seconds = time.monotonic() - start
    counts.errors = run.stats.errors
    counts.samples.append(Sample.take(counts.frames, start, pid))
    counts.hang = run.hang or run.error
    if counts.hang:
        counts.findings.add(f"the decode stopped: {counts.hang}")
    if counts.frames != counts.frames_wanted or counts.exact != counts.frames or counts.errors:
        counts.findings.add(f"{counts.frames} of {counts.frames_wanted} frames, "
                               f"{counts.exact} byte-exact, {counts.errors} buffers in error")
    if daemon_process() != pid or daemon_state() != "ready":
        counts.crashed = True
        counts.findings.add("daedalusd crashed during the soak")
    counts.kernel_warnings = klog.report(counts.findings)
    # steady state: the first sample at or after the first --every frames, to the
    # last one taken while decoding; and before the decode to after it
    during = [s for s in counts.samples[1:-1] if s.frames >= every]
    first, last = (during[0], during[-1]) if len(during) > 1 else (counts.samples[0],
                                                                   counts.samples[-1])
    before, after = counts.samples[0], counts.samples[-1]
    counts.growth = {
        "daemon_rss_kib": (last.daemon_rss_kib or 0) - (first.daemon_rss_kib or 0),
        "sunreclaim_kib": last.sunreclaim_kib - first.sunreclaim_kib,
        "slab_kib": last.slab_kib - first.slab_kib,
        "vmalloc_kib": after.vmalloc_kib - before.vmalloc_kib,
    }
    for key, limit in limits.items():
        if counts.growth[key] > limit:
            counts.findings.add(f"{key.removesuffix('_kib')} grew {counts.growth[key]} KiB "
                                   f"(limit {limit} KiB)")
    return counts


def print_soak(counts: SoakCounts) -> None:
    say(f"campaign soak: {counts.clip} repeated to {counts.frames_wanted} frames: "
        f"{counts.frames} frames, {counts.exact} byte-exact, {counts.errors} buffers in "
        f"error, {counts.seconds:.0f} s ({counts.frames / max(counts.seconds, 1e-9):.1f} fps)")
    say("  frames  seconds  Slab KiB  SUnreclaim KiB  VmallocUsed KiB  daedalusd VmRSS KiB")
    for s in counts.samples:
        say(f"  {s.frames:6d}  {s.seconds:7.1f}  {s.slab_kib:8d}  {s.sunreclaim_kib:14d}  "
            f"{s.vmalloc_kib:15d}  {s.daemon_rss_kib if s.daemon_rss_kib is not None else '?':>19}")
    say("  growth (first sample after warm-up to the last while decoding; VmallocUsed: "
        "before to after the decode): "
        + ", ".join(f"{k.removesuffix('_kib')} {v:+d} KiB (limit {counts.limits.get(k, '-')})"
                    for k, v in counts.growth.items()))
    say(f"  hang {'yes' if counts.hang else 'no'}, daemon crashed "
        f"{'yes' if counts.crashed else 'no'}, kernel warnings {counts.kernel_warnings}")


# --- the command -------------------------------------------------------------------


class CampaignCommand:
    NAME = "campaign"
    HELP = ("standing reliability campaigns against the decoder node (in a guest, as root): "
            "fuzz, kill, soak")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        parser.epilog = ("exit status: 0 nothing found; 1 a finding (hang, daemon crash, lost "
                         "or wrong frame,\nkernel warning, slow failure, growth beyond a "
                         "limit); 2 the campaign could not run")
        sub = parser.add_subparsers(dest="campaign", required=True, metavar="CAMPAIGN")
        fuzz_p = sub.add_parser("fuzz", help="mutated bitstreams of every offered codec, "
                                "each followed by the clean clip")
        kill_p = sub.add_parser("kill", help="daedalusd SIGKILLed mid-stream, again and again")
        soak_p = sub.add_parser("soak", help="one long decode; kernel slab and daemon RSS "
                                "sampled")
        for p in (fuzz_p, kill_p, soak_p):
            p.add_argument("--device", metavar="/dev/videoN",
                           help="the decoder node (default: the daedalus-v4l2 node)")
            p.add_argument("--clip", action="append", metavar="NAME",
                           help="corpus clip(s) to use, 8-bit, one size (default, for each "
                                "codec the node offers: fuzz every such clip, kill and "
                                "soak the 320x240 one)")
            p.add_argument("--timeout", type=seconds, default=DEFAULT_TIMEOUT,
                           metavar="SECONDS", help="no progress for this long is a hang "
                           "(default: %(default)g)")
            p.add_argument("--bridge-timeout-ms", type=positive, metavar="MS",
                           help="set the module's daemon_timeout_ms (the watchdog) for the "
                                "campaign (default: leave it)")
            p.add_argument("--json", metavar="FILE", help="also write the counts as JSON")
        for p in (fuzz_p, kill_p):
            p.add_argument("--seed", type=int, default=1, help="default: %(default)s")
            p.add_argument("--count", type=positive, default=100 if p is fuzz_p else 10,
                           metavar="N", help="streams / kills (default: %(default)s)")
        fuzz_p.add_argument("--start", type=int, default=0, metavar="INDEX",
                            help="first stream index (reproduce one: --start I --count 1)")
        kill_p.add_argument("--fail-within", type=seconds, default=2.0, metavar="SECONDS",
                            help="a client slower than this to finish after the SIGKILL is a "
                                 "finding (default: %(default)g)")
        soak_p.add_argument("--frames", type=positive, default=10_000, metavar="N",
                            help="frames to decode, rounded up to whole clips "
                                 "(default: %(default)s)")
        soak_p.add_argument("--every", type=positive, default=500, metavar="K",
                            help="sample memory every K frames (default: %(default)s)")
        soak_p.add_argument("--max-rss-growth", type=int, default=8192, metavar="KIB",
                            help="daedalusd VmRSS growth limit (default: %(default)s)")
        soak_p.add_argument("--max-slab-growth", type=int, default=1024, metavar="KIB",
                            help="kernel SUnreclaim growth limit (default: %(default)s)")
        soak_p.add_argument("--max-vmalloc-growth", type=int, default=256, metavar="KIB",
                            help="VmallocUsed after the decode minus before (default: "
                                 "%(default)s)")

    def run(self, args: argparse.Namespace) -> int:
        try:
            return self._run(args)
        except CampaignError as exc:
            print(f"{PROG} {args.campaign}: {exc}", file=sys.stderr)
            return EXIT_CANNOT

    def _run(self, args: argparse.Namespace) -> int:
        from daedalus.skeleton.v4l2dev import find_node

        try:
            device = Path(args.device) if args.device else find_node()
            codecs = offered_codecs(device)
        except (OSError, DecodeError) as exc:
            raise CampaignError(f"no decoder node: {exc}") from None
        if daemon_process() is None or daemon_state() != "ready":
            raise CampaignError(f"daedalusd is not running and connected (kernel: "
                                f"{daemon_state()})")
        names = args.clip or (fuzz_clips(codecs) if args.campaign == "fuzz"
                              else default_clips(codecs))
        clips = [load_clip(name) for name in names]
        for clip in clips:
            if clip.codec not in codecs:
                raise CampaignError(f"{clip.name}: the node does not offer {clip.code}")
        verbose = bool(getattr(args, "verbose", False))
        counts: Any
        with bridge_timeout(args.bridge_timeout_ms):
            if args.campaign == "fuzz":
                counts = fuzz(device, clips, seed=args.seed, first=args.start,
                              count=args.count, timeout=args.timeout, verbose=verbose)
                print_fuzz(counts, clips)
            elif args.campaign == "kill":
                counts = kill(device, clips, seed=args.seed, count=args.count,
                              timeout=args.timeout, fail_within=args.fail_within,
                              verbose=verbose)
                print_kill(counts, clips, args.fail_within)
            else:
                limits = {"daemon_rss_kib": args.max_rss_growth,
                          "sunreclaim_kib": args.max_slab_growth,
                          "vmalloc_kib": args.max_vmalloc_growth}
                counts = soak(device, clips[0], frames=args.frames, every=args.every,
                              timeout=args.timeout, limits=limits)
                print_soak(counts)
        say(f"campaign {args.campaign}: {len(counts.findings)} findings")
        if args.json:
            Path(args.json).write_text(json.dumps(asdict(counts), indent=1,
                                                  default=lambda obj: list(obj)) + "\n")
        return EXIT_FINDINGS if counts.findings else EXIT_CLEAN

