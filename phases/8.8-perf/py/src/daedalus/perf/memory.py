"""``daedalus-v4l2 bench-memory``: daemon and kernel memory across a long decode.

Run as root inside a guest (``daedalus-v4l2 guest --phase 8.8 --
daedalus-v4l2 bench-memory``), against the node and the daedalusd the
testbed started. It decodes one long stream through the node with the decode
tool (``daedalus-v4l2 decode``, a separate process), the clip repeated
``--repeat`` times over (default: ``vp9-320x240`` 100 times, 3,000 frames),
and samples every ``--interval`` seconds, from before the decode starts until
after it ends (after one decode of the clip alone, not sampled, so that the
daemon's first decoder and the kernel's first buffers are not counted as
growth):

- daedalusd's resident set (``VmRSS`` of /proc/PID/status);
- the kernel's ``Slab``, ``SUnreclaim`` and ``VmallocUsed`` (/proc/meminfo):
  the module's per-file state, requests and vmalloc'ed bounce buffers land
  there; the frames' pages (videobuf2-dma-sg) are freed with the buffers and
  are compared before and after (``MemAvailable``).

"Flat" is judged from the figures, not asserted: the mean of the last
quarter of the samples taken while decoding, against the mean of the first
quarter (growth per 1,000 frames), and idle after against idle before.
Output: a table, and the samples as JSON with ``--json FILE`` (``-``: one
line on stdout). Exit status: 0 the decode ended with status 0; 1 it did
not; 2 the bench could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from daedalus.m2m.campaign import rss_kib as read_rss

MEMINFO_KEYS = ("MemAvailable", "Slab", "SUnreclaim", "VmallocUsed")
DEFAULT_CLIP = "vp9-320x240"
DEFAULT_REPEAT = 100
DEFAULT_INTERVAL = 0.5
IDLE_SECONDS = 2.0


@dataclass(frozen=True)
class Sample:
    """One reading: seconds since the start, daedalusd's RSS and the meminfo
    fields (all KiB), and whether the decode was running."""

    t: float
    decoding: bool
    rss_kib: int | None
    meminfo_kib: dict[str, int]


@dataclass
class Report:
    clip: str
    frames: int
    status: int | None = None
    seconds: float = 0.0
    samples: list[Sample] = field(default_factory=list)

    def series(self, key: str, *, decoding: bool | None = None) -> list[int]:
        """The readings of *key* ("rss" or a meminfo field), optionally only
        those taken while decoding (True) or idle (False)."""
        out = []
        for s in self.samples:
            if decoding is not None and s.decoding != decoding:
                continue
            value = _value(s, key)
            if value is not None:
                out.append(value)
        return out

    def growth(self, key: str) -> tuple[float, float, float] | None:
        """(first-quarter mean, last-quarter mean, growth per 1,000 frames)
        of *key* over the samples taken while decoding; None with fewer
        than 4."""
        values = self.series(key, decoding=True)
        if len(values) < 4:
            return None
        quarter = len(values) // 4
        first = sum(values[:quarter]) / quarter
        last = sum(values[-quarter:]) / quarter
        per_k = (last - first) / self.frames * 1000 if self.frames else 0.0
        return first, last, per_k

    def idle_change(self, key: str) -> tuple[int, int] | None:
        """(before, after) of *key*: the first idle reading before the decode
        and the last one after it."""
        running = [s.t for s in self.samples if s.decoding]
        if not running:
            return None
        before = [s for s in self.samples if not s.decoding and s.t < running[0]]
        after = [s for s in self.samples if not s.decoding and s.t > running[-1]]
        if not before or not after:
            return None
        first, last = _value(before[0], key), _value(after[-1], key)
        if first is None or last is None:
            return None
        return first, last

    def table(self) -> str:
        rows = [f"{'what':12s} {'idle before':>12s} {'decode 1st q':>13s} "
                f"{'decode last q':>14s} {'KiB/1k frames':>14s} {'idle after':>11s}"]
        for key in ("rss", *MEMINFO_KEYS):
            grow = self.growth(key)
            idle = self.idle_change(key)
            name = "daedalusd RSS" if key == "rss" else key
            rows.append(
                f"{name:12s} {(idle[0] if idle else '-'):>12} "
                f"{(f'{grow[0]:.0f}' if grow else '-'):>13} "
                f"{(f'{grow[1]:.0f}' if grow else '-'):>14} "
                f"{(f'{grow[2]:+.1f}' if grow else '-'):>14} "
                f"{(idle[1] if idle else '-'):>11}")
        return "\n".join(rows)

    def to_json(self) -> dict[str, object]:
        return {"clip": self.clip, "frames": self.frames, "status": self.status,
                "seconds": round(self.seconds, 3),
                "samples": [asdict(s) for s in self.samples]}


def _value(sample: Sample, key: str) -> int | None:
    return sample.rss_kib if key == "rss" else sample.meminfo_kib.get(key)


def read_meminfo(path: Path = Path("/proc/meminfo")) -> dict[str, int]:
    """The MEMINFO_KEYS fields of /proc/meminfo, in KiB (missing ones left out)."""
    out: dict[str, int] = {}
    for line in path.read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in MEMINFO_KEYS:
            out[name] = int(rest.split()[0])
    return out


class Sampler(threading.Thread):
    """Samples every *interval* seconds until stopped; ``decoding`` says
    which phase the samples belong to."""

    def __init__(self, pid: int | None, interval: float) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.decoding = False
        self.samples: list[Sample] = []
        self.t0 = time.monotonic()
        self._stop_event = threading.Event()

    def sample(self) -> None:
        self.samples.append(Sample(round(time.monotonic() - self.t0, 3), self.decoding,
                                   read_rss(self.pid), read_meminfo()))

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self.sample()


def measure(clip: str, repeat: int, interval: float, device: str | None) -> Report:
    from daedalus.mc.bench import repeat_clip
    from daedalus.parse import corpus
    from daedalus.testbed.guestctl import daemon_pid

    tool = shutil.which("daedalus-v4l2")
    if tool is None:
        raise RuntimeError("daedalus-v4l2 is not on PATH")
    source = corpus.file_or_vector(clip)
    frames_each = corpus.entry(clip).frames if source != Path(clip) else 0
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        stream = repeat_clip(source, repeat, Path(tmp))
        report = Report(clip, frames_each * repeat)
        # one decode first, not sampled: the daemon's first decoder of the
        # codec, the kernel's first buffers and caches are not growth
        subprocess.run([tool, "decode", str(source), "-o", os.devnull,
                        *(["--device", device] if device else [])],
                       capture_output=True, check=False)
        sampler = Sampler(daemon_pid(), interval)
        sampler.start()
        time.sleep(IDLE_SECONDS)
        sampler.decoding = True
        start = time.monotonic()
        proc = subprocess.run([tool, "decode", str(stream), "-o", os.devnull, "--timeout", "120",
                               *(["--device", device] if device else [])],
                              capture_output=True, text=True, check=False)
        report.seconds = time.monotonic() - start
        sampler.decoding = False
        time.sleep(IDLE_SECONDS)
        sampler.stop()
    report.status = proc.returncode
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
    report.samples = sampler.samples
    return report


class MemoryCommand:
    NAME = "bench-memory"
    HELP = ("daedalusd RSS and kernel memory across a long decode through the node "
            "(in a guest, as root)")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from daedalus.m2m.cli import positive, seconds

        parser.add_argument("--clip", default=DEFAULT_CLIP, metavar="NAME",
                            help="corpus clip (default: %(default)s)")
        parser.add_argument("--repeat", type=positive, default=DEFAULT_REPEAT, metavar="K",
                            help="decode the clip K times over in one stream "
                                 "(default: %(default)s)")
        parser.add_argument("--interval", type=seconds, default=DEFAULT_INTERVAL,
                            metavar="SECONDS", help="between samples (default: %(default)g)")
        parser.add_argument("--device", metavar="/dev/videoN",
                            help="the decoder node (default: the daedalus-v4l2 node)")
        parser.add_argument("--json", metavar="FILE|-",
                            help="also write the samples as JSON (-: one line on stdout)")

    def run(self, args: argparse.Namespace) -> int:
        try:
            report = measure(args.clip, args.repeat, args.interval, args.device)
        except Exception as exc:  # the bench could not run: say why, exit 2
            print(f"daedalus-v4l2 bench-memory: {exc}", file=sys.stderr)
            return 2
        print(f"{report.clip} x {args.repeat}: {report.frames} frames, decode status "
              f"{report.status}, {report.seconds:.1f} s, {len(report.samples)} samples (KiB)")
        print(report.table())
        if args.json == "-":
            print(json.dumps(report.to_json()))
        elif args.json:
            Path(args.json).write_text(json.dumps(report.to_json(), indent=2) + "\n")
        return 0 if report.status == 0 else 1
