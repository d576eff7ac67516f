"""``daedalus-v4l2 ping``: PING round trips kernel -> daedalusd -> kernel.

The module's debugfs file (default /sys/kernel/debug/daedalus-v4l2/ping) is
the trigger: each write(2) of 1...DAEDALUS_MAX_PAYLOAD bytes sends one PING
with those bytes to the daemon and returns, with the byte count, once the
answer is back (ENOTCONN without a daemon, ETIMEDOUT when it does not answer,
EIO when it answers with an error status); pread(2) at offset 0 then returns
the answer's payload. Every round trip sends fresh random bytes, is timed
around the write and compared byte for byte.

The statistics and comparison are plain functions (run_pings, summarize ...)
so they are tested on the host without the module.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

DEFAULT_DEBUGFS = "/sys/kernel/debug/daedalus-v4l2/ping"
DEFAULT_COUNT = 100
DEFAULT_SIZE = 64

HINTS = {
    errno.ENOTCONN: "no daemon connected (ENOTCONN): start daedalusd",
    errno.ETIMEDOUT: "the daemon did not answer in time (ETIMEDOUT): is daedalusd stuck? "
                     "see its log",
    errno.EIO: "the daemon answered with an error status (EIO): see daedalusd's log",
    errno.EINVAL: "the kernel refused the write (EINVAL): the size must be 1 to "
                  "DAEDALUS_MAX_PAYLOAD bytes",
    errno.ENOENT: "no such file (ENOENT): is debugfs mounted and a daedalus_v4l2 module of "
                  "phase 8.2 or later loaded?",
    errno.EACCES: "permission denied (EACCES): debugfs needs root",
    errno.EPERM: "operation not permitted (EPERM): debugfs needs root",
    errno.ENOMEM: "the kernel is out of memory (ENOMEM): try a smaller --size",
}


class PingError(Exception):
    """A round trip failed; the message is one line for the user."""


def explain(exc: OSError) -> str:
    """What an errno from the ping file most likely means."""
    if exc.errno in HINTS:
        return HINTS[exc.errno]
    name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return f"{exc.strerror or 'error'} ({name})"


def first_mismatch(sent: bytes, got: bytes) -> int | None:
    """Offset of the first byte that differs (a length difference counts at the
    shorter length), or None when equal."""
    if sent == got:
        return None
    for offset, (a, b) in enumerate(zip(sent, got, strict=False)):
        if a != b:
            return offset
    return min(len(sent), len(got))


def percentile(sorted_values: Sequence[int], pct: float) -> int:
    """Nearest-rank percentile of ascending *sorted_values* (not empty)."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(frozen=True)
class Mismatch:
    round_trip: int  # 1-based
    offset: int
    sent_len: int
    got_len: int


@dataclass(frozen=True)
class PingStats:
    """The outcome of *count* round trips of *size* bytes."""

    count: int
    size: int
    latencies_ns: tuple[int, ...]  # one per completed round trip, in order
    mismatches: tuple[Mismatch, ...] = ()

    @property
    def completed(self) -> int:
        return len(self.latencies_ns)

    @property
    def matched(self) -> int:
        return self.completed - len(self.mismatches)

    @property
    def ok(self) -> bool:
        return self.count > 0 and self.matched == self.count

    def latency_us(self, pct: float) -> float:
        return percentile(sorted(self.latencies_ns), pct) / 1000

    @property
    def min_us(self) -> float:
        return min(self.latencies_ns) / 1000

    @property
    def max_us(self) -> float:
        return max(self.latencies_ns) / 1000

    @property
    def busy_s(self) -> float:
        """Time spent inside the timed writes (the round trips themselves)."""
        return sum(self.latencies_ns) / 1e9

    @property
    def round_trips_per_s(self) -> float:
        return self.completed / self.busy_s if self.busy_s > 0 else math.inf

    @property
    def mb_per_s(self) -> float:
        """Megabytes (10^6) of payload echoed per second of round trips."""
        return self.round_trips_per_s * self.size / 1e6


def run_pings(write: Callable[[bytes], int], read_back: Callable[[int], bytes], count: int,
              size: int, *, clock: Callable[[], int] = time.perf_counter_ns,
              random: Callable[[int], bytes] = os.urandom) -> PingStats:
    """*count* round trips: write fresh random bytes (timed), read the answer
    back and compare. Raises PingError on an OSError or a short write."""
    latencies: list[int] = []
    mismatches: list[Mismatch] = []
    for n in range(1, count + 1):
        payload = random(size)
        try:
            start = clock()
            written = write(payload)
            elapsed = clock() - start
            if written != len(payload):
                raise PingError(f"round trip {n} of {count}: short write, {written} of "
                                f"{len(payload)} bytes")
            echo = read_back(len(payload))
        except OSError as exc:
            raise PingError(f"round trip {n} of {count}: {explain(exc)}") from exc
        latencies.append(elapsed)
        offset = first_mismatch(payload, echo)
        if offset is not None:
            mismatches.append(Mismatch(n, offset, len(payload), len(echo)))
    return PingStats(count=count, size=size, latencies_ns=tuple(latencies),
                     mismatches=tuple(mismatches))


def format_summary(stats: PingStats, path: str = DEFAULT_DEBUGFS) -> str:
    lines = [f"ping: {stats.count} round trips of {stats.size} bytes through {path}: "
             f"{stats.matched} matched, {len(stats.mismatches)} mismatched"]
    if stats.completed:
        lines.append(f"latency (us): min {stats.min_us:.1f}, p50 {stats.latency_us(50):.1f}, "
                     f"p99 {stats.latency_us(99):.1f}, max {stats.max_us:.1f}")
        lines.append(f"rate: {stats.round_trips_per_s:.0f} round trips/s, "
                     f"{stats.mb_per_s:.2f} MB/s echoed")
    if stats.mismatches:
        first = stats.mismatches[0]
        lines.append(f"first mismatch: round trip {first.round_trip}, offset {first.offset} "
                     f"(sent {first.sent_len} bytes, got {first.got_len})")
    return "\n".join(lines)


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"count must be at least 1, not {value}")
    return value


def _size(text: str) -> int:
    from daedalus.proto import MAX_PAYLOAD  # here: the CLI loads every command at start

    value = int(text)
    if not 1 <= value <= MAX_PAYLOAD:
        raise argparse.ArgumentTypeError(f"size must be 1 to {MAX_PAYLOAD} bytes, not {value}")
    return value


class PingCommand:
    NAME = "ping"
    HELP = "PING round trips kernel -> daedalusd -> kernel through debugfs, checked byte for byte"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--count", type=_count, default=DEFAULT_COUNT,
                            help="round trips (default: %(default)s)")
        parser.add_argument("--size", type=_size, default=DEFAULT_SIZE, metavar="BYTES",
                            help="payload bytes per round trip (default: %(default)s)")
        parser.add_argument("--debugfs", default=DEFAULT_DEBUGFS, metavar="PATH",
                            help="the module's ping file (default: %(default)s)")

    def run(self, args: argparse.Namespace) -> int:
        path: str = args.debugfs
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            print(f"daedalus-v4l2 ping: cannot open {path}: {explain(exc)}", file=sys.stderr)
            return 1
        try:
            stats = run_pings(lambda data: os.write(fd, data),
                              lambda n: os.pread(fd, n, 0), args.count, args.size)
        except PingError as exc:
            print(f"daedalus-v4l2 ping: {exc}", file=sys.stderr)
            return 1
        finally:
            os.close(fd)
        print(format_summary(stats, path))
        return 0 if stats.ok else 1
