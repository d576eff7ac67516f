"""Phase 8.8 on the host: ``daedalus-v4l2 bench`` (daedalus.perf.bench) and its clips.

The pure parts: the CAPTURE geometry the daemon path lays frames out in
(the node's, phases/8.1-skeleton's daedalus_fill_decoded_fmt), the table
and the JSON document from given results (with and without ``--device``'s
columns and keys), the device figures derived from a round through the
node (ratio, per-frame overhead, a frame count that differs), the
command's arguments, and ``--device`` refusing what is not a decoder node
(exit 2, before any clip is decoded). The decode through a node itself is
test_bench_guest.py's. Then
tiny real runs: corpus clips of 128x96 / 174x98 (NV12 and P010, padded rows)
through the bench, every frame the daemon path laid out compared byte for
byte, padding included, with Debian's ffmpeg's decode of the clip laid out
by this test, each named by its number; and ``--make-clips``
at 128x96 followed by the command on what it made, through its JSON. No
figure is timed: speed is the bench's output, not a test's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from daedalus.m2m import kernels
from daedalus.m2m.layout import Geometry
from daedalus.m2m.reference import reference_output
from daedalus.parse import corpus
from daedalus.perf import bench, clips
from daedalus.perf.bench import BenchCommand, Result, capture_format
from daedalus.proto import FrameInfo, PixFmt

REQUIRED_KEYS = {"file", "codec", "width", "height", "bit_depth", "frames", "threads",
                 "raw_fps", "daemon_fps", "daemon_ratio"}
DEVICE_KEYS = {"device", "device_s", "device_fps", "device_ratio", "bridge_us",
               "device_frames"}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench")
    BenchCommand().add_arguments(parser)
    return parser.parse_args(argv)


# --- the pure parts ---------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height", "pixfmt", "want"), [
    (1920, 1080, PixFmt.NV12, (1920, 1080)),
    (128, 96, PixFmt.NV12, (128, 96)),
    (174, 98, PixFmt.NV12, (176, 98)),    # rows padded to 4 bytes
    (175, 97, PixFmt.NV12, (176, 98)),    # odd sizes rounded up to even first
    (322, 242, PixFmt.NV12, (324, 242)),
    (1920, 1080, PixFmt.P010, (3840, 1080)),
    (175, 97, PixFmt.P010, (352, 98)),
])
def test_capture_format_is_the_nodes(width: int, height: int, pixfmt: PixFmt,
                                     want: tuple[int, int]) -> None:
    assert capture_format(width, height, pixfmt) == want


def _result(name: str, raw: float, daemon: float, **kw: object) -> Result:
    fields: dict[str, object] = dict(
        width=1920, height=1080, bit_depth=8, pixfmt="NV12", frames=60, threads=1, rounds=3,
        raw_s=60 / raw, raw_fps=raw, daemon_s=60 / daemon, daemon_fps=daemon,
        daemon_ratio=daemon / raw, feed_us=12.4, place_us=345.6, place="direct",
        place_speedup=1.704, kernels={"place": {"reference": 589.0, "direct": 345.6}},
        bytesperline=1920, serial_s=60 / (daemon * 0.9), serial_fps=daemon * 0.9,
        serial_ratio=daemon * 0.9 / raw)
    fields.update(kw)
    return Result(name, "vp9", "vp9", **fields)  # type: ignore[arg-type]


def test_table_has_a_row_per_clip_and_names_errors() -> None:
    results = [_result("/clips/vp9-1920x1080.ivf", 100.0, 55.0),
               _result("clip-b.ivf", 80.0, 40.0, bit_depth=10, pixfmt="P010",
                       error="raw FFmpeg decoded 60 frames, the daemon path 59"),
               Result("bad.h264", "h264", "h264", error="UnsupportedLayout: 4:2:2")]
    lines = bench.table(results).splitlines()
    assert lines[0].split() == ["file", "codec", "size", "bits", "frames", "threads",
                                "raw", "fps", "daemon", "fps", "daemon/raw", "serial/raw",
                                "feed", "us", "place", "us", "place", "vs", "reference"]
    assert lines[1].split() == ["vp9-1920x1080.ivf", "vp9", "1920x1080", "8", "60", "1",
                                "100.0", "55.0", "0.550", "0.495", "12", "346", "direct",
                                "1.70x"]
    assert lines[2].split()[:4] == ["clip-b.ivf", "vp9", "1920x1080", "10"]
    assert lines[2].split()[8] == "0.500"
    assert lines[3].split() == ["bad.h264", "h264", *["-"] * 12]
    assert lines[4:] == ["  clip-b.ivf: raw FFmpeg decoded 60 frames, the daemon path 59",
                         "  bad.h264: UnsupportedLayout: 4:2:2"]
    # every row's columns line up with the header's
    widths = {len(line) for line in lines[:4]}
    assert max(widths) == len(lines[0])


def test_table_has_device_columns_only_with_a_device() -> None:
    plain = bench.table([_result("a.ivf", 100.0, 55.0)]).splitlines()
    assert "device" not in plain[0] and "bridge" not in plain[0]
    measured = _result("/clips/a.ivf", 100.0, 55.0).with_device(
        "/dev/video0", bench.Run(60 / 50.0, 60), None)   # 50 fps through the node
    failed = _result("b.ivf", 80.0, 40.0).with_device(
        "/dev/video0", None, "/dev/video0: DecodeTimeout: nothing happened")
    lines = bench.table([measured, failed]).splitlines()
    assert lines[0].split()[:-5] == plain[0].split()
    assert lines[0].endswith("vs reference  device fps  device/raw  bridge us")
    # (1/50 - 1/100) s a frame = 10000 us added by the node
    assert lines[1].split() == ["a.ivf", "vp9", "1920x1080", "8", "60", "1", "100.0", "55.0",
                                "0.550", "0.495", "12", "346", "direct", "1.70x", "50.0",
                                "0.500", "10000"]
    assert lines[2].split()[-4:] == ["1.70x", "-", "-", "-"]
    assert lines[3:] == ["  b.ivf: /dev/video0: DecodeTimeout: nothing happened"]
    assert len({len(line) for line in lines[:3]}) == 1  # aligned: the dashes too
    dashes = bench.table([Result("bad.h264", "h264", "h264", error="refused",
                                 device="/dev/video0")]).splitlines()
    assert dashes[1].split() == ["bad.h264", "h264", *["-"] * 15]


def test_device_figures() -> None:
    base = _result("a.ivf", 100.0, 55.0)   # 60 frames, raw 0.6 s
    got = base.with_device("/dev/video3", bench.Run(1.5, 60), None)
    assert (got.device, got.device_s, got.device_frames, got.error) == (
        "/dev/video3", 1.5, 60, None)
    assert got.device_fps == pytest.approx(40.0)
    assert got.device_ratio == pytest.approx(0.4)
    assert got.bridge_us == pytest.approx((1.5 - 0.6) / 60 * 1e6)
    assert base.with_device("/dev/video3", bench.Run(0.3, 60), None).bridge_us == (
        pytest.approx(-5000.0))   # faster than raw (more threads): negative, not hidden
    short = base.with_device("/dev/video3", bench.Run(1.5, 59), None)
    assert short.error == "raw FFmpeg decoded 60 frames, /dev/video3 59"
    assert short.device_frames == 59
    both = _result("a.ivf", 100.0, 55.0, error="raw FFmpeg decoded 60 frames, the daemon "
                   "path 59").with_device("/dev/video3", None, "/dev/video3: failed")
    assert both.error == ("raw FFmpeg decoded 60 frames, the daemon path 59; "
                          "/dev/video3: failed")
    assert (both.device, both.device_frames, both.device_fps) == ("/dev/video3", 0, 0.0)


def test_json_document_shape() -> None:
    document = bench.report_json([_result("a.ivf", 100.0, 55.0),
                                  Result("bad.h264", "h264", "h264", error="refused")])
    assert set(document) >= {"results", "software", "cpus", "machine", "dispatch"}
    assert document["software"].startswith("PyAV ")
    first, second = document["results"]
    assert REQUIRED_KEYS <= set(first)
    assert first["daemon_ratio"] == 0.55 and first["raw_fps"] == 100.0
    assert first["kernels"] == {"place": {"reference": 589.0, "direct": 345.6}}
    assert first["error"] is None and second["error"] == "refused"
    assert DEVICE_KEYS <= set(first)
    assert first["device"] is None and first["device_frames"] == 0
    assert json.loads(json.dumps(document)) == document  # plain JSON types only
    through = bench.report_json([_result("a.ivf", 100.0, 55.0).with_device(
        "/dev/video0", bench.Run(1.2, 60), None)])["results"][0]
    assert {k: through[k] for k in DEVICE_KEYS} == {
        "device": "/dev/video0", "device_s": 1.2, "device_fps": 50.0, "device_ratio": 0.5,
        "bridge_us": 10000.0, "device_frames": 60}
    assert json.loads(json.dumps(through)) == through


def test_arguments() -> None:
    args = parse(["a.ivf", "b.h264", "--threads", "1", "--json", "-"])
    assert (args.files, args.threads, args.json, args.rounds) == (
        ["a.ivf", "b.h264"], 1, "-", bench.DEFAULT_ROUNDS)
    assert args.make_clips is None
    defaults = parse(["--make-clips", "/tmp/clips"])
    assert defaults.files == [] and defaults.threads is None
    assert defaults.make_clips == Path("/tmp/clips")
    assert (defaults.clip_size, defaults.clip_frames) == ((1920, 1080), 60)
    assert parse(["--make-clips", "d", "--clip-size", "320x240"]).clip_size == (320, 240)
    assert parse(["x", "--threads", "0"]).threads == 0
    assert args.device is None
    assert parse(["x", "--device", "/dev/video3"]).device == "/dev/video3"
    assert parse(["x", "--device", "auto", "--rounds", "1"]).device == "auto"


def test_device_that_is_no_decoder_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    assert BenchCommand().run(parse(["vp9-128x96", "--device", "/nonexistent/video9"])) == 2
    err = capsys.readouterr().err
    assert "cannot open /nonexistent/video9: No such file or directory" in err
    assert "reading" not in err   # refused before any clip
    regular = tmp_path / "video9"
    regular.write_bytes(b"")
    assert BenchCommand().run(parse(["vp9-128x96", "--device", str(regular)])) == 2
    assert "is not a V4L2 device" in capsys.readouterr().err

    # auto: the node find_node() names, or exit 2 with its reason
    from daedalus.skeleton import v4l2dev

    def no_node() -> Path:
        raise FileNotFoundError("no V4L2 node with card 'daedalus-v4l2'")

    monkeypatch.setattr(v4l2dev, "find_node", no_node)
    assert BenchCommand().run(parse(["vp9-128x96", "--device", "auto"])) == 2
    assert "no V4L2 node with card" in capsys.readouterr().err
    monkeypatch.setattr(v4l2dev, "find_node", lambda: regular)
    assert BenchCommand().run(parse(["vp9-128x96", "--device", "auto"])) == 2
    assert f"{regular} is not a V4L2 device" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "option"), [
    (["x", "--threads", "-1"], "--threads"),
    (["x", "--threads", "two"], "--threads"),
    (["x", "--rounds", "0"], "--rounds"),
    (["--make-clips", "d", "--clip-size", "1921x1080"], "--clip-size"),
    (["--make-clips", "d", "--clip-size", "1920"], "--clip-size"),
    (["--make-clips", "d", "--clip-frames", "0"], "--clip-frames"),
])
def test_bad_arguments_are_refused(argv: list[str], option: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse(argv)
    assert exit_.value.code == 2
    assert f"error: argument {option}:" in capsys.readouterr().err


def test_nothing_to_do_and_unknown_clips_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert BenchCommand().run(parse([])) == 2
    assert "no FILE" in capsys.readouterr().err
    assert BenchCommand().run(parse(["/nonexistent/clip.ivf"])) == 2
    assert "neither a file nor a corpus clip" in capsys.readouterr().err


# --- tiny real runs -----------------------------------------------------------------------


def _reference_frames(path: Path, pixfmt: PixFmt, width: int, height: int) -> list[bytes]:
    """Debian's ffmpeg's frames of *path* (one size throughout), tightly packed."""
    data = reference_output(path, "p010le" if pixfmt == PixFmt.P010 else "nv12")
    size = Geometry(width, height, pixfmt).packed_size
    assert len(data) % size == 0
    return [data[i:i + size] for i in range(0, len(data), size)]


def _capture_buffer(frame: bytes, geometry: Geometry, bytesperline: int,
                    height: int) -> bytes:
    """*frame* (tightly packed) laid out as a CAPTURE buffer, by hand: luma
    rows at *bytesperline*, the chroma plane at bytesperline * height, every
    other byte zero."""
    out = bytearray(bytesperline * height * 3 // 2)
    luma = geometry.luma_row * geometry.height
    for row in range(geometry.height):
        src = frame[row * geometry.luma_row:(row + 1) * geometry.luma_row]
        out[row * bytesperline:row * bytesperline + len(src)] = src
    base = bytesperline * height
    for row in range(geometry.chroma_rows):
        src = frame[luma + row * geometry.chroma_row:luma + (row + 1) * geometry.chroma_row]
        out[base + row * bytesperline:base + row * bytesperline + len(src)] = src
    return bytes(out)


@pytest.mark.parametrize("name", ["vp9-128x96", "vp9-174x98", "h264-high-128x96",
                                  "av1-128x96", "av1-10bit-128x96", "vp9-p2-10bit-320x240"])
def test_daemon_path_lays_out_ffmpegs_frames(name: str) -> None:
    entry = corpus.entry(name)
    seen: list[tuple[FrameInfo, bytes, int, int]] = []

    def hook(info: FrameInfo, buffer: np.ndarray, bytesperline: int, height: int) -> None:
        seen.append((info, buffer.tobytes(), bytesperline, height))

    clip = bench.load_clip(name)
    assert clip.codec == entry.codec
    result = bench.measure(clip, threads=1, rounds=1, hook=hook)
    assert result.error is None
    pixfmt = PixFmt.P010 if entry.bit_depth == 10 else PixFmt.NV12
    assert (result.file, result.codec, result.width, result.height, result.bit_depth,
            result.pixfmt, result.frames, result.threads, result.rounds) == (
        name, entry.codec, entry.width, entry.height, entry.bit_depth, pixfmt.name,
        entry.frames, 1, 1)
    assert result.raw_fps > 0 and result.daemon_fps > 0
    assert result.daemon_ratio == pytest.approx(result.daemon_fps / result.raw_fps)
    assert result.serial_fps > 0
    assert result.serial_ratio == pytest.approx(result.serial_fps / result.raw_fps)
    assert min(result.feed_us, result.place_us) > 0
    assert result.place == kernels.table().chosen["place"].name
    assert set(result.kernels["place"]) == {i.name for i in kernels.registered()["place"]}
    assert result.place_speedup > 0
    bytesperline, height = capture_format(entry.width, entry.height, pixfmt)
    assert result.bytesperline == bytesperline

    geometry = Geometry(entry.width, entry.height, pixfmt)
    want = _reference_frames(corpus.path(name), pixfmt, entry.width, entry.height)
    assert len(seen) == len(want) == entry.frames
    for i, ((info, buffer, bpl, rows), frame) in enumerate(zip(seen, want, strict=True)):
        assert (info.width, info.height, info.pixfmt) == (entry.width, entry.height, pixfmt)
        assert (bpl, rows) == (bytesperline, height)
        assert buffer == _capture_buffer(frame, geometry, bpl, rows), f"frame {i}"
        assert info.digest == i + 1, f"frame {i}"  # FEED's entry names it by its number


def test_make_clips_then_bench_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.json"
    status = BenchCommand().run(parse(["--make-clips", str(tmp_path / "clips"),
                                       "--clip-size", "128x96", "--clip-frames", "3"]))
    assert status == 0
    made = capsys.readouterr().out.split()
    names = [f"{s.codec}{'-10bit' if s.bit_depth == 10 else ''}-128x96{s.suffix}"
             for s in clips.CLIPS]
    assert [Path(p).name for p in made] == names == [
        "vp9-128x96.ivf", "vp9-10bit-128x96.ivf", "h264-128x96.h264",
        "h264-10bit-128x96.h264", "av1-128x96.ivf", "av1-10bit-128x96.ivf"]

    status = BenchCommand().run(parse([*made, "--threads", "1", "--rounds", "1",
                                       "--json", str(out)]))
    printed = capsys.readouterr()
    assert status == 0, printed.err
    table = printed.out.splitlines()
    assert len(table) == 1 + len(made)
    assert [row.split()[0] for row in table[1:]] == names
    assert "[6/6] av1-10bit-128x96.ivf" in printed.err  # the progress lines
    results = json.loads(out.read_text())["results"]
    assert [r["file"] for r in results] == made
    for r, spec in zip(results, clips.CLIPS, strict=True):
        assert REQUIRED_KEYS <= set(r)
        assert (r["codec"], r["bit_depth"], r["pixfmt"], r["width"], r["height"],
                r["frames"], r["threads"], r["error"]) == (
            spec.codec, spec.bit_depth, "P010" if spec.bit_depth == 10 else "NV12", 128, 96,
            3, 1, None)
        assert r["raw_fps"] > 0 and r["daemon_fps"] > 0
