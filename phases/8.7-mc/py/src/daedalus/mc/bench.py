"""``daedalus-v4l2 bench-contexts``: aggregate throughput of 1, 2, 4 contexts at once.

Run as root inside a guest (``daedalus-v4l2 guest --phase 8.7 --
daedalus-v4l2 bench-contexts``), against the node and the daedalusd the
testbed started. One run measures, for each count N of ``--contexts``
(default 1, 2, 4), in that order:

- **node**: N decodes of the clip through the node at once, each by the
  project's decode tool (``daedalus-v4l2 decode CLIP -o OUT``, its command
  class run in a worker process), each on its own open file of the node: N
  contexts, N streams in daedalusd;
- **ffmpeg**: the same N decodes in software, no node: each worker decodes
  the clip's packets with the FFmpeg decoder daedalusd uses (PyAV,
  daedalus.codec.session.create_decoder: the codec table's decoder, slice
  threads, its low-delay options), frames left in FFmpeg's own format. This
  is the decoding alone; the node's figure adds everything around it (the
  V4L2 calls, the bridge, laying frames out into the CAPTURE buffers, the
  client writing OUT).

The workers are ``max(--contexts)`` processes started once, before any
measurement (``python -m daedalus.mc.bench --worker CLIP``): each imports
what it needs, reads the clip, says ``ready``, then runs one decode per
command line it is sent (JSON: ``{"mode": "node", "out": PATH}`` or
``{"mode": "ffmpeg"}``) and answers with one JSON line: when it began and
ended (``time.monotonic()``, one clock for every process), frames, errors,
exit status. A run sends its command to N workers at once; its wall time is
from the first worker's start to the last one's end, and its aggregate
throughput is the N decodes' frames over that wall time. So interpreter
start-up and imports (seconds under TCG) are in no figure, and the N
decodes start together. Before the runs, every worker decodes the clip
once in software and the first one once through the node (the daemon makes
its first decoder of the codec), not counted.

Every node decode's OUT is compared byte for byte with Debian's ffmpeg's
decode of the clip (daedalus.m2m.reference, once, before the runs). The
clip is a corpus name or a file; ``--repeat K`` decodes it K times over in
one stream (IVF: one file, frame count and timestamps continued; H.264
Annex-B and AV1 OBU: the bytes one after the other), for runs long enough
to measure.

Output: a table on stdout, and with ``--json FILE`` the same figures as JSON
(for a plot; ``--json -``: one line on stdout after the table, e.g. from a
guest whose files the host does not see). Exit status: 0 every decode
ended with status 0, every frame decoded and every node decode
byte-exact; 1 otherwise (the table says which); 2 the bench could not run
(no clip, a worker that did not start).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack, redirect_stdout
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

PROG = "daedalus-v4l2 bench-contexts"
DEFAULT_CLIP = "vp9-320x240"
DEFAULT_REPEAT = 4
DEFAULT_CONTEXTS = (1, 2, 4)
DEFAULT_TIMEOUT = 600.0   # one run, or a worker's start, under TCG, generously
DECODE_PATIENCE = 120.0   # the decode tool's --timeout (nothing moved for this long)
MODES = ("node", "ffmpeg")


class BenchError(Exception):
    """The bench cannot run (exit status 2)."""


# --- the pure part: figures, table, JSON --------------------------------------------


def contexts_list(text: str) -> list[int]:
    """argparse type: context counts, comma-separated, each >= 1 ("1,2,4")."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text}"
                                         ) from None
    if not counts or any(n < 1 for n in counts):
        raise argparse.ArgumentTypeError(f"context counts must be at least 1: {text}")
    return counts


@dataclass(frozen=True)
class Span:
    """One worker's decode: when it began and ended (time.monotonic), what it
    decoded, its exit status (the decode tool's; 0 for a software decode
    that did not fail) and, for a node decode, whether OUT was byte-exact
    (None: not compared)."""

    start: float
    end: float
    frames: int
    errors: int = 0
    status: int = 0
    byte_exact: bool | None = None
    message: str = ""

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Figures:
    """N decodes at once: wall time (first start to last end), frames of all,
    aggregate frames/s."""

    contexts: int
    wall_s: float
    frames: int
    fps: float
    spans: tuple[Span, ...]

    @classmethod
    def of(cls, spans: Sequence[Span]) -> Figures:
        if not spans:
            raise ValueError("no decode to make figures of")
        wall = max(s.end for s in spans) - min(s.start for s in spans)
        frames = sum(s.frames for s in spans)
        return cls(len(spans), wall, frames, frames / wall if wall > 0 else 0.0, tuple(spans))

    @property
    def ok(self) -> bool:
        return all(s.status == 0 and s.errors == 0 and s.byte_exact is not False
                   for s in self.spans)


@dataclass(frozen=True)
class Run:
    """One context count: the node's figures and software FFmpeg's."""

    node: Figures
    ffmpeg: Figures

    @property
    def contexts(self) -> int:
        return self.node.contexts

    @property
    def ratio(self) -> float:
        """The node's aggregate frames/s over software FFmpeg's."""
        return self.node.fps / self.ffmpeg.fps if self.ffmpeg.fps > 0 else 0.0


@dataclass
class Report:
    clip: str
    repeat: int
    frames_per_context: int   # what software FFmpeg decodes of the (repeated) clip
    size: str
    cpus: int | None
    kernel: str
    software: str
    runs: list[Run] = field(default_factory=list)

    def ok(self) -> bool:
        """Every decode ended well, decoded every frame and (node) was byte-exact."""
        return bool(self.runs) and all(
            run.node.ok and run.ffmpeg.ok
            and all(s.frames == self.frames_per_context for s in run.node.spans)
            and all(s.frames == self.frames_per_context for s in run.ffmpeg.spans)
            for run in self.runs)

    def to_json(self) -> dict[str, Any]:
        def figures(f: Figures) -> dict[str, Any]:
            return {"wall_s": round(f.wall_s, 4), "frames": f.frames, "fps": round(f.fps, 2),
                    "per_context": [{k: (round(v, 4) if isinstance(v, float) else v)
                                     for k, v in asdict(s).items() if k not in ("start", "end")}
                                    | {"seconds": round(s.seconds, 4)} for s in f.spans]}

        one = self.runs[0].node.fps if self.runs and self.runs[0].contexts == 1 else None
        return {
            "clip": self.clip, "repeat": self.repeat,
            "frames_per_context": self.frames_per_context, "size": self.size,
            "cpus": self.cpus, "kernel": self.kernel, "software": self.software,
            "ok": self.ok(),
            "runs": [{"contexts": run.contexts, "node": figures(run.node),
                      "ffmpeg": figures(run.ffmpeg), "node_vs_ffmpeg": round(run.ratio, 4),
                      "node_vs_one_context": (round(run.node.fps / one, 4) if one else None)}
                     for run in self.runs],
        }


def table(report: Report) -> str:
    """The figures as a text table, one row per context count."""
    lines = [f"{PROG}: {report.clip}"
             + (f" x {report.repeat}" if report.repeat > 1 else "")
             + f" ({report.frames_per_context} frames of {report.size} per context), "
               f"{report.cpus} CPUs, kernel {report.kernel}; software: {report.software}"]
    head = ("contexts", "frames", "node s", "node fps", "ffmpeg s", "ffmpeg fps",
            "node/ffmpeg", "node xN/x1", "all ok")
    rows = [head]
    one = next((r.node.fps for r in report.runs if r.contexts == 1), None)
    for run in report.runs:
        ok = (run.node.ok and run.ffmpeg.ok
              and all(s.frames == report.frames_per_context
                      for s in (*run.node.spans, *run.ffmpeg.spans)))
        rows.append((str(run.contexts), str(run.node.frames), f"{run.node.wall_s:.2f}",
                     f"{run.node.fps:.1f}", f"{run.ffmpeg.wall_s:.2f}", f"{run.ffmpeg.fps:.1f}",
                     f"{run.ratio:.3f}", f"{run.node.fps / one:.2f}" if one else "-",
                     "yes" if ok else "NO"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines += ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True))
              for row in rows]
    for run in report.runs:
        for kind, figures in (("node", run.node), ("ffmpeg", run.ffmpeg)):
            for i, s in enumerate(figures.spans):
                if not (s.status == 0 and s.errors == 0 and s.byte_exact is not False
                        and s.frames == report.frames_per_context):
                    exact = {True: "byte-exact", False: "NOT byte-exact", None: "not compared"}
                    lines.append(f"  {run.contexts} contexts, {kind} decode {i}: status "
                                 f"{s.status}, {s.frames} frames, {s.errors} errors, "
                                 f"{exact[s.byte_exact]}{': ' + s.message if s.message else ''}")
    return "\n".join(lines)


def repeat_clip(path: Path, times: int, directory: Path) -> Path:
    """*path* decoded *times* over in one stream, written into *directory*
    (*path* itself for once): IVF through daedalus.parse.corpus.concat_ivf
    (one header, the frame count summed, timestamps continued), Annex-B and
    OBU streams as their bytes one after the other."""
    if times == 1:
        return path
    data = path.read_bytes()
    if data[:4] == b"DKIF":
        from daedalus.parse.corpus import concat_ivf

        joined = concat_ivf([data] * times)
    else:
        joined = data * times
    out = directory / f"{path.stem}-x{times}{path.suffix}"
    out.write_bytes(joined)
    return out


# --- the workers ---------------------------------------------------------------------


def _node_decode(clip: str, out: str, device: str | None, patience: float) -> Span:
    from daedalus.m2m.cli import DecodeCommand
    from daedalus.m2m.clients import SUMMARY

    command = DecodeCommand()
    parser = argparse.ArgumentParser(prog="decode")
    command.add_arguments(parser)
    args = parser.parse_args([clip, "-o", out, "--timeout", str(patience),
                              *(["--device", device] if device else [])])
    printed = io.StringIO()
    start = time.monotonic()
    with redirect_stdout(printed):
        status = command.run(args)
    end = time.monotonic()
    found = next((m for m in map(SUMMARY.match, printed.getvalue().splitlines()) if m), None)
    frames, errors = (int(found["frames"]), int(found["errors"])) if found else (0, 0)
    return Span(start, end, frames, errors, status,
                message="" if status == 0 else f"decode tool exit status {status}")


def _software_decode(codec: int, packets: Sequence[bytes]) -> Span:
    import av

    from daedalus.codec.session import create_decoder
    from daedalus.proto import Codec

    start = time.monotonic()
    try:
        decoder = create_decoder(Codec(codec))
        frames = 0
        for number, data in enumerate(packets):
            packet = av.Packet(data)
            packet.pts = number
            frames += len(decoder.decode(packet))
        frames += len(decoder.decode(None))
    except av.FFmpegError as exc:
        return Span(start, time.monotonic(), 0, 1, 1, message=str(exc))
    return Span(start, time.monotonic(), frames)


def worker(clip: str, device: str | None, patience: float) -> int:
    """A worker process (see the module doc): ``ready``, then one JSON line
    per command line read from stdin, until stdin ends."""
    # everything a decode needs, imported before "ready"
    import av  # noqa: F401

    import daedalus.m2m.cli
    import daedalus.skeleton.v4l2dev  # noqa: F401
    from daedalus.m2m.v4l2 import packets_of
    from daedalus.proto import codecs

    name, _, _, stream = packets_of(clip)
    packets = [data for _, data in stream]
    codec = codecs.BY_NAME[name].codec
    print("ready", flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        if command["mode"] == "node":
            span = _node_decode(clip, command["out"], device, patience)
        else:
            span = _software_decode(codec, packets)
        print(json.dumps(asdict(span)), flush=True)
    return 0


class Workers:
    """*count* worker processes decoding *clip*, started at once; their
    stderr goes to files in *logs*."""

    def __init__(self, count: int, clip: Path, logs: Path, *, device: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, patience: float = DECODE_PATIENCE) -> None:
        self.timeout = timeout
        self.logs = [logs / f"worker-{i}.log" for i in range(count)]
        self.procs: list[subprocess.Popen[bytes]] = []
        argv = [sys.executable, "-m", "daedalus.mc.bench", "--worker", str(clip),
                "--patience", str(patience), *(["--device", device] if device else [])]
        try:
            for path in self.logs:
                with path.open("wb") as log:
                    # unbuffered: a line select() found is all there is to read
                    self.procs.append(subprocess.Popen(argv, bufsize=0, stdin=subprocess.PIPE,
                                                       stdout=subprocess.PIPE, stderr=log))
            deadline = time.monotonic() + timeout
            for i in range(count):
                line = self._line(i, deadline)
                if line != "ready":
                    raise BenchError(f"worker {i} did not start: {line!r}{self._tail(i)}")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def count(self) -> int:
        return len(self.procs)

    def _tail(self, i: int) -> str:
        text = self.logs[i].read_text(errors="replace").strip()
        return f"; its stderr: {text[-1500:]}" if text else ""

    def _line(self, i: int, deadline: float) -> str:
        """Worker *i*'s next line (stripped); "" if it ended first."""
        stream = self.procs[i].stdout
        assert stream is not None
        with selectors.DefaultSelector() as selector:
            selector.register(stream, selectors.EVENT_READ)
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                raise BenchError(f"worker {i} said nothing for {self.timeout:g} s"
                                 f"{self._tail(i)}")
        return stream.readline().decode(errors="replace").strip()

    def run(self, mode: str, contexts: int, outdir: Path) -> list[Span]:
        """One decode in each of the first *contexts* workers, all started at
        once (node: each writes OUT into *outdir*)."""
        if not 0 < contexts <= len(self.procs):
            raise ValueError(f"{contexts} contexts, {len(self.procs)} workers")
        commands = [{"mode": mode, "out": str(outdir / f"{mode}-{contexts}-{i}.yuv")}
                    for i in range(contexts)]
        lines = [(json.dumps(c) + "\n").encode() for c in commands]
        for i, line in enumerate(lines):  # as close together as they can be
            stdin = self.procs[i].stdin
            assert stdin is not None
            stdin.write(line)
            stdin.flush()
        deadline = time.monotonic() + self.timeout
        spans = []
        for i in range(contexts):
            text = self._line(i, deadline)
            if not text:
                raise BenchError(f"worker {i} ended during a {mode} decode{self._tail(i)}")
            spans.append(Span(**json.loads(text)))
        return spans

    def close(self) -> None:
        for proc in self.procs:
            if proc.stdin is not None and not proc.stdin.closed:
                proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


# --- the bench ---------------------------------------------------------------------


def _resolve(clip: str) -> tuple[str, Path]:
    """(name, path) of a corpus name or a file."""
    from daedalus.parse import corpus

    try:
        source = corpus.file_or_vector(clip)
    except corpus.CorpusError as exc:
        raise BenchError(str(exc)) from None
    return (source.name if source == Path(clip) else clip), source


def _size(name: str, width: int, height: int) -> str:
    """The picture size: the file's header's, else (H.264 Annex-B, AV1 OBU:
    the readers do not parse one) the corpus manifest's, else unknown."""
    if width and height:
        return f"{width}x{height}"
    from daedalus.parse import corpus

    try:
        entry = corpus.entry(name)
    except Exception:  # (not a corpus name)
        return "unknown size"
    return f"{entry.width}x{entry.height}"


def _software_name() -> str:
    import av

    versions = getattr(av, "library_versions", {})
    codec = versions.get("libavcodec")
    lavc = f", libavcodec {'.'.join(map(str, codec))}" if codec else ""
    return f"PyAV {av.__version__}{lavc}"


def bench(clip: str, *, repeat: int = DEFAULT_REPEAT,
          contexts: Sequence[int] = DEFAULT_CONTEXTS, device: str | None = None,
          timeout: float = DEFAULT_TIMEOUT, workdir: Path | None = None,
          progress: IO[str] | None = None) -> Report:
    """The whole run (see the module doc); *progress* gets a line per step."""
    from daedalus.m2m.reference import ReferenceError, reference_output
    from daedalus.m2m.v4l2 import packets_of

    def say(text: str) -> None:
        if progress is not None:
            print(f"{PROG}: {text}", file=progress, flush=True)

    name, source = _resolve(clip)
    with ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        path = repeat_clip(source, repeat, workdir)
        try:
            _, width, height, _ = packets_of(path)
            say(f"reference: Debian's ffmpeg decodes {path.name}")
            want = reference_output(path)
        except (OSError, ValueError, ReferenceError) as exc:
            raise BenchError(f"{path}: {exc}") from None
        say(f"starting {max(contexts)} workers")
        workers = stack.enter_context(Workers(max(contexts), path, workdir, device=device,
                                              timeout=timeout))
        # warm-up, not counted: every worker's software decode, and a node
        # decode (the daemon's first decoder of the codec) by the first one
        say("warming up")
        workers.run("ffmpeg", workers.count, workdir)
        workers.run("node", 1, workdir)
        (workdir / "node-1-0.yuv").unlink(missing_ok=True)
        runs: list[Run] = []
        for count in contexts:
            say(f"{count} context(s) through the node")
            node = workers.run("node", count, workdir)
            checked = []
            for i, span in enumerate(node):
                out = workdir / f"node-{count}-{i}.yuv"
                got = out.read_bytes() if out.exists() else b""
                exact = got == want
                checked.append(Span(span.start, span.end, span.frames, span.errors, span.status,
                                    exact, span.message))
                out.unlink(missing_ok=True)
            say(f"{count} software decode(s) at once")
            software = workers.run("ffmpeg", count, workdir)
            runs.append(Run(Figures.of(checked), Figures.of(software)))
        frames = runs[0].ffmpeg.spans[0].frames if runs else 0
        report = Report(name, repeat, frames, _size(name, width, height), os.cpu_count(),
                        platform.release(), _software_name(), runs)
    return report


class BenchCommand:
    NAME = "bench-contexts"
    HELP = ("aggregate decode throughput of 1, 2, 4 contexts of the node at once, against "
            "software FFmpeg (in a guest, as root)")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from daedalus.m2m.cli import positive, seconds

        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        parser.epilog = ("exit status: 0 every decode ended well and every node decode was "
                         "byte-exact; 1 otherwise;\n2 the bench could not run")
        parser.add_argument("--clip", default=DEFAULT_CLIP, metavar="NAME|FILE",
                            help="corpus clip name or file (VP9 IVF, H.264 Annex-B, AV1 IVF or "
                                 "OBU; default: %(default)s)")
        parser.add_argument("--repeat", type=positive, default=DEFAULT_REPEAT, metavar="K",
                            help="decode the clip K times over in one stream "
                                 "(default: %(default)s)")
        parser.add_argument("--contexts", type=contexts_list,
                            default=list(DEFAULT_CONTEXTS), metavar="N,N,...",
                            help="context counts, one run each, in this order "
                                 "(default: 1,2,4)")
        parser.add_argument("--device", metavar="/dev/videoN",
                            help="the decoder node (default: the daedalus-v4l2 node)")
        parser.add_argument("--timeout", type=seconds, default=DEFAULT_TIMEOUT,
                            metavar="SECONDS",
                            help="longest wait for a worker's start or a run "
                                 "(default: %(default)g)")
        parser.add_argument("--json", metavar="FILE",
                            help="also write the figures as JSON (-: one line on stdout, after "
                                 "the table)")

    def run(self, args: argparse.Namespace) -> int:
        try:
            report = bench(args.clip, repeat=args.repeat, contexts=args.contexts,
                           device=args.device, timeout=args.timeout, progress=sys.stderr)
        except BenchError as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            return 2
        print(table(report), flush=True)
        if args.json == "-":
            print(json.dumps(report.to_json()), flush=True)
        elif args.json:
            Path(args.json).write_text(json.dumps(report.to_json(), indent=2) + "\n")
        return 0 if report.ok() else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m daedalus.mc.bench [options]``: the same as the subcommand;
    ``--worker CLIP [--device DEV] [--patience S]``: a worker process."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        from daedalus.m2m.cli import seconds

        parser = argparse.ArgumentParser(prog="python -m daedalus.mc.bench --worker")
        parser.add_argument("clip")
        parser.add_argument("--device")
        parser.add_argument("--patience", type=seconds, default=DECODE_PATIENCE)
        args = parser.parse_args(argv[1:])
        return worker(args.clip, args.device, args.patience)
    command = BenchCommand()
    parser = argparse.ArgumentParser(prog="python -m daedalus.mc.bench", description=command.HELP)
    command.add_arguments(parser)
    return command.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
