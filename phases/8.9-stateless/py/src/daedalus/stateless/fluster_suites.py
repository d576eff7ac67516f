"""fluster test suites of our own, made from the corpus (issue #15, deliverable 5).

fluster (PyPI ``fluster-conformance``) runs a decoder over the vectors of a
test suite, a JSON file, and compares the MD5 of each decode with the
suite's. This module writes such suites from the corpus (phase 8.3's
``corpus.toml``) and runs fluster over them:

- ``python -m daedalus.stateless.fluster_suites generate DIR`` writes one
  ``DIR/<suite>.json`` per suite and copies each vector's file to
  ``DIR/resources/<suite>/<vector>/<file>``, where fluster's ``-r`` looks
  for it (the suite names a file, never a URL: fluster downloads nothing,
  and the directory can be copied into a guest as it is);
- ``... run --suites DIR --decoders D1,D2`` runs fluster on them (``-tsd
  DIR -r DIR/resources -j1 -t N``, the summary as JSON) and prints a table of
  "passed/total" per suite and decoder, as upstream drivers report fluster
  scores, then the vectors that did not pass.

Suites: ``daedalus-VP9`` and ``daedalus-H.264`` hold every
8-bit 4:2:0 clip of the codec, the resolution-change, alt-ref and B-pyramid
ones included; ``daedalus-VP9-not-8bit-420`` and
``daedalus-H.264-not-8bit-420`` the 10-bit, 4:2:2 and 4:4:4 clips, which the
stateless node refuses today: they are in a suite of their own so that the
scores show them (fluster counts them failed, errored or not supported)
without hiding them or diluting the 8-bit scores. The large clips (720p and
up, encoded into the cache on first use) are left out unless asked for
(``--large``).

The expected MD5 (a vector's ``result``) is that of **Debian's ffmpeg
CLI** decoding the file (``daedalus.m2m.reference``: ``-fps_mode
passthrough -autoscale 0``, every frame once and at its own size, samples as
decoded, never range-converted) to raw planar frames in the vector's
``output_format``: ``yuv420p`` for 8-bit 4:2:0 (also for H.264's
full-range ``yuvj420p``, the same layout), ``yuv420p10le``, ``yuv422p``,
``yuv444p`` for the others, tightly packed, frame after frame. That is what
fluster's decoders hash:

- its GStreamer video decoders run ``filesrc ! parsebin ! DECODER !
  video/x-raw ! videoconvert dither=none ! video/x-raw,format=I420 (or
  I420_10LE, Y42B, Y444) ! videocodectestsink``; ``videocodectestsink``
  hashes each frame's visible rows plane after plane, so the node's NV12 /
  P010, converted to planar without dithering, hashes as ffmpeg's planar
  frames; ``parsebin`` reads IVF (``ivfparse``) and Annex B H.264, so the
  corpus files are used as they are;
- its FFmpeg decoders run ``ffmpeg -i FILE -fps_mode passthrough -filter
  format=pix_fmts=FMT -f md5 -``: the same bytes for a clip of one size and
  limited range, but without ``-autoscale 0`` ffmpeg scales the frames after
  a resolution change to the first size, and ``format=yuv420p`` squeezes a
  full-range (``yuvj420p``) clip into limited range, so those vectors do
  not pass with them (a property of those fluster decoders, not of the
  suites).

``generate`` checks each reference decode against ffprobe: as many frames as
the corpus lists and as many bytes as their sizes make in the output format.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daedalus.m2m.reference import ReferenceError, reference_output
from daedalus.parse import corpus
from daedalus.parse.reference import ffprobe, probe_frames
from daedalus.proto.codecs import BY_NAME

PREFIX = "daedalus"
CODECS = ("vp9", "h264")  # the stateless node's codecs (corpus names)
BASE_FORMAT = "yuv420p"
OTHER = "not-8bit-420"
RESOURCES = "resources"
DEFAULT_TIMEOUT = 120  # seconds a decode, fluster's -t (its default is 30)

# output_format -> (luma samples a chroma sample along a row, luma rows a chroma row,
# bytes a sample): the tightly packed planar frame ffmpeg's rawvideo and
# videocodectestsink's MD5 both cover
PLANAR = {
    "yuv420p": (2, 2, 1),
    "yuv420p10le": (2, 2, 2),
    "yuv422p": (2, 1, 1),
    "yuv422p10le": (2, 1, 2),
    "yuv444p": (1, 1, 1),
    "yuv444p10le": (1, 1, 2),
}

# ffprobe's profile names -> fluster's Profile values (fluster.codec.Profile)
H264_PROFILES = frozenset({"Constrained Baseline", "Baseline", "Extended", "Main", "High",
                           "High 10", "High 10 Intra", "High 4:2:2", "High 4:2:2 Intra",
                           "High 4:4:4 Intra", "High 4:4:4 Predictive", "CAVLC 4:4:4",
                           "CAVLC 4:4:4 Intra"})


class SuiteError(RuntimeError):
    """A suite could not be made or run; one line for the user."""


@dataclass(frozen=True)
class Vector:
    """One test vector: corpus clip *name*, its *file*, what fluster's JSON holds."""

    name: str
    file: Path
    output_format: str
    profile: str | None
    source_checksum: str  # MD5 of the file
    result: str           # MD5 of Debian's ffmpeg decode in output_format

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "source": f"daedalus-v4l2 corpus: {self.name} (phases/8.3-parse/corpus/corpus.toml)",
            "source_checksum": self.source_checksum,
            "input_file": self.file.name,
            "output_format": self.output_format,
            "result": self.result,
        }
        if self.profile is not None:
            data["profile"] = self.profile
        return data


@dataclass(frozen=True)
class Suite:
    name: str
    codec: str  # fluster's Codec value: "VP9", "H.264"
    description: str
    vectors: tuple[Vector, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "codec": self.codec, "description": self.description,
                "test_vectors": [v.to_json() for v in self.vectors], "test_method": "md5"}


def output_format(entry: corpus.Entry) -> str:
    """The vector's output_format: the clip's decoded layout (yuvj420p is yuv420p's)."""
    fmt = entry.pix_fmt.replace("yuvj", "yuv")
    if fmt not in PLANAR:
        raise SuiteError(f"{entry.name}: no planar output format for {entry.pix_fmt}")
    return fmt


def suite_name(entry: corpus.Entry) -> str:
    title = BY_NAME[entry.codec].title
    if entry.bit_depth == 8 and output_format(entry) == BASE_FORMAT:
        return f"{PREFIX}-{title}"
    return f"{PREFIX}-{title}-{OTHER}"


def frame_bytes(width: int, height: int, fmt: str) -> int:
    hdiv, vdiv, sample = PLANAR[fmt]
    return sample * (width * height + 2 * -(-width // hdiv) * -(-height // vdiv))


def profile_of(path: Path, codec: str) -> str | None:
    """fluster's profile of the file's stream from ffprobe's, None if fluster has none."""
    streams = ffprobe(path, "-select_streams", "v:0", "-show_entries", "stream=profile")
    name = str(streams.get("streams", [{}])[0].get("profile", ""))
    if codec == "vp9" and name.startswith("Profile "):
        return f"VP9 {name}"
    if codec == "h264" and name in H264_PROFILES:
        return name
    return None


def md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def reference_md5(entry: corpus.Entry, path: Path) -> str:
    """MD5 of Debian's ffmpeg decode of *path* in the vector's output format,
    checked against ffprobe's frames (count and sizes)."""
    fmt = output_format(entry)
    data = reference_output(path, fmt)
    frames = probe_frames(path)
    if len(frames) != entry.frames:
        raise SuiteError(f"{entry.name}: ffprobe shows {len(frames)} frames, the corpus "
                         f"lists {entry.frames}")
    want = sum(frame_bytes(int(f["width"]), int(f["height"]), fmt) for f in frames)
    if len(data) != want:
        raise SuiteError(f"{entry.name}: ffmpeg wrote {len(data)} bytes of {fmt}, "
                         f"{len(frames)} frames of the sizes ffprobe shows make {want}")
    return md5_of(data)


def make_vector(entry: corpus.Entry) -> Vector:
    path = corpus.path(entry.name)
    return Vector(name=entry.name, file=path, output_format=output_format(entry),
                  profile=profile_of(path, entry.codec),
                  source_checksum=md5_of(path.read_bytes()),
                  result=reference_md5(entry, path))


def select(entries: Iterable[corpus.Entry], *, large: bool = False,
           names: Sequence[str] = ()) -> list[corpus.Entry]:
    """The corpus entries of the node's codecs (*names* only, when given)."""
    chosen = [e for e in entries if e.codec in CODECS and (large or not e.large)
              and (not names or e.name in names)]
    unknown = set(names) - {e.name for e in chosen}
    if unknown:
        raise SuiteError(f"no {'/'.join(CODECS)} corpus vector named "
                         f"{', '.join(sorted(unknown))}")
    return chosen


def suite_order(name: str) -> tuple[str, bool]:
    """A codec's suites together, the 8-bit 4:2:0 one first."""
    return (name.removesuffix(f"-{OTHER}"), name.endswith(OTHER))


def build_suites(entries: Iterable[corpus.Entry]) -> list[Suite]:
    """The suites of *entries* (suite_order), vectors in corpus order."""
    groups: dict[str, list[Vector]] = {}
    codec_of: dict[str, str] = {}
    for entry in entries:
        name = suite_name(entry)
        groups.setdefault(name, []).append(make_vector(entry))
        codec_of[name] = BY_NAME[entry.codec].title
    suites = []
    for name in sorted(groups, key=suite_order):
        formats = sorted({v.output_format for v in groups[name]})
        what = ("8-bit 4:2:0 clips (resolution changes included)" if not name.endswith(OTHER)
                else f"clips beyond 8-bit 4:2:0 ({', '.join(formats)}), refused by the "
                     "stateless node today")
        suites.append(Suite(
            name=name, codec=codec_of[name], vectors=tuple(groups[name]),
            description=f"daedalus-v4l2 corpus, {codec_of[name]} {what}; expected MD5s from "
                        "Debian's ffmpeg CLI, frames at their own size, planar"))
    return suites


def write_suites(suites: Iterable[Suite], out_dir: Path) -> list[Path]:
    """DIR/<suite>.json and the vectors' files under DIR/resources/<suite>/<vector>/."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for suite in suites:
        for v in suite.vectors:
            dest = out_dir / RESOURCES / suite.name / v.name
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(v.file, dest / v.file.name)
        path = out_dir / f"{suite.name}.json"
        path.write_text(json.dumps(suite.to_json(), indent=4) + "\n")
        written.append(path)
    return written


def generate(out_dir: Path, *, large: bool = False, names: Sequence[str] = ()) -> list[Path]:
    try:
        suites = build_suites(select(corpus.entries(), large=large, names=names))
    except (ReferenceError, corpus.CorpusError, OSError,
            subprocess.SubprocessError) as exc:
        raise SuiteError(str(exc)) from exc
    return write_suites(suites, out_dir)


# --- running fluster -------------------------------------------------------------------


FLUSTER_MAIN = ("import sys; from fluster.main import fluster_main; "
                "sys.argv[0] = 'fluster'; fluster_main()")


def fluster_argv(suites_dir: Path, decoders: Sequence[str], *, output_dir: Path,
                 summary: Path, jobs: int = 1, timeout: int = DEFAULT_TIMEOUT,
                 suites: Sequence[str] = (), vectors: Sequence[str] = ()) -> list[str]:
    """fluster's command line (its main() under this interpreter)."""
    argv = [sys.executable, "-c", FLUSTER_MAIN, "-ne", "-tsd", str(suites_dir),
            "-r", str(suites_dir / RESOURCES), "-o", str(output_dir),
            "run", "-j", str(jobs), "-t", str(timeout), "-d", *decoders]
    if suites:
        argv += ["-ts", *suites]
    if vectors:
        argv += ["-tv", *vectors]
    return [*argv, "-s", "-f", "json", "-so", str(summary)]


@dataclass(frozen=True)
class Score:
    suite: str
    decoder: str
    passed: int
    total: int
    not_supported: int
    failed: int
    # vector -> fluster's result ("Fail", "Error", "Timeout", "Not supported"...) if not passed
    missed: dict[str, str]

    @property
    def cell(self) -> str:
        return f"{self.passed}/{self.total}"


def scores(summary: dict[str, Any]) -> list[Score]:
    """The scores in fluster's JSON summary (``-f json -so FILE``)."""
    out = []
    for suite, data in summary.get("test_suites", {}).items():
        for decoder, d in data.get("decoders", {}).items():
            missed = {v: r["result"] for v, r in sorted(d.get("vectors", {}).items())
                      if r.get("result") != "Success"}
            out.append(Score(suite=suite, decoder=decoder, passed=int(d["passed"]),
                             total=int(d["total_tests"]),
                             not_supported=int(d.get("not_supported", 0)),
                             failed=int(d.get("failed_error", 0)), missed=missed))
    return out


def fluster_name(decoder: str) -> str:
    """A decoder name as fluster matches it (case-blind, "-Gst1.0" dropped)."""
    return decoder.lower().removesuffix("-gst1.0")


def table(results: Sequence[Score]) -> str:
    """Markdown: a row per suite, a column per decoder, "passed/total" each."""
    decoders = list(dict.fromkeys(s.decoder for s in results))
    suites = sorted(dict.fromkeys(s.suite for s in results), key=suite_order)
    cells = {(s.suite, s.decoder): s.cell for s in results}
    lines = ["|Test suite|" + "|".join(decoders) + "|", "|-|" + "-|" * len(decoders)]
    lines += ["|" + suite + "|" + "|".join(cells.get((suite, d), "-") for d in decoders) + "|"
              for suite in suites]
    return "\n".join(lines)


def misses(results: Sequence[Score]) -> str:
    lines = [f"{s.suite} ({s.decoder}): {vector}: {result}"
             for s in results for vector, result in s.missed.items()]
    return "\n".join(lines)


def run(suites_dir: Path, decoders: Sequence[str], *, jobs: int = 1,
        timeout: int = DEFAULT_TIMEOUT, suites: Sequence[str] = (),
        vectors: Sequence[str] = (), output_dir: Path | None = None,
        quiet: bool = False) -> tuple[int, list[Score]]:
    """Run fluster; (its exit status, the scores of its summary). fluster exits 1
    when any vector did not pass (or nothing ran), the scores tell which."""
    with tempfile.TemporaryDirectory(prefix="daedalus-fluster-") as tmp:
        summary = Path(tmp) / "summary.json"
        argv = fluster_argv(suites_dir, decoders, output_dir=output_dir or Path(tmp) / "out",
                            summary=summary, jobs=jobs, timeout=timeout, suites=suites,
                            vectors=vectors)
        proc = subprocess.run(argv, check=False,
                              stdout=subprocess.DEVNULL if quiet else None)
        if not summary.is_file():
            return proc.returncode, []
        return proc.returncode, scores(json.loads(summary.read_text()))


# --- the command ----------------------------------------------------------------------


def _split(values: Sequence[str] | None) -> list[str]:
    return [v for value in values or () for v in value.split(",") if v]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m daedalus.stateless.fluster_suites",
                                     description=__doc__.split("\n", 1)[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write the suites (JSON) and their vectors into DIR")
    gen.add_argument("dir", type=Path)
    gen.add_argument("--large", action="store_true",
                     help="include the large clips (720p and up; encoded on first use)")
    gen.add_argument("--vectors", nargs="+", default=None,
                     help="only these corpus clips (comma-separated or repeated)")
    rn = sub.add_parser("run", help="run fluster on the suites in DIR, print the scores")
    rn.add_argument("--suites", type=Path, required=True, help="the directory generate wrote")
    rn.add_argument("--decoders", nargs="+", required=True,
                    help="fluster decoder names, e.g. GStreamer-VP9-V4L2SL-Gst1.0 "
                         "(comma-separated or repeated)")
    rn.add_argument("--jobs", type=int, default=1)
    rn.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT,
                    help=f"seconds a decode (default {DEFAULT_TIMEOUT})")
    rn.add_argument("--test-suites", nargs="+", default=None, help="only these suites")
    rn.add_argument("--vectors", nargs="+", default=None, help="only these vectors")
    rn.add_argument("--output", type=Path, default=None,
                    help="where fluster writes decoder output (default: a temporary directory)")
    rn.add_argument("--quiet", action="store_true", help="hide fluster's own output")
    args = parser.parse_args(argv)
    try:
        if args.command == "generate":
            for path in generate(args.dir, large=args.large, names=_split(args.vectors)):
                n = len(json.loads(path.read_text())["test_vectors"])
                print(f"{path}: {n} vectors")
            return 0
        code, results = run(args.suites, _split(args.decoders), jobs=args.jobs,
                            timeout=args.timeout, suites=_split(args.test_suites),
                            vectors=_split(args.vectors), output_dir=args.output,
                            quiet=args.quiet)
    except SuiteError as exc:
        print(f"fluster_suites: {exc}", file=sys.stderr)
        return 2
    if not results:
        print(f"fluster_suites: fluster ran nothing (exit status {code}): a decoder that "
              "cannot run, or no suite of its codec", file=sys.stderr)
        return 2
    print(table(results))
    scored = {fluster_name(s.decoder) for s in results}
    for decoder in _split(args.decoders):
        if fluster_name(decoder) not in scored:
            print(f"{decoder}: no scores (fluster could not run it, or no suite of its codec)")
    if any(s.missed for s in results):
        print("\nnot passed:\n" + misses(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
