"""Our fluster suites (daedalus.stateless.fluster_suites) on the host: made and proven.

The suites are generated from the corpus into a temporary directory, with
each vector's expected MD5 from Debian's ffmpeg CLI. Checked here:

- fluster's own ``TestSuite.from_json_file`` loads every suite: the JSON is
  the format fluster reads; the suites hold the corpus's VP9 and H.264 clips
  (from ``corpus.toml``), the 8-bit 4:2:0 ones in ``daedalus-<codec>``, the
  others in ``daedalus-<codec>-not-8bit-420``; every vector's file is where
  fluster's test looks for it and has the MD5 the suite gives;
- fluster itself, with software decoders it has, passes small vectors:
  ``GStreamer-VP9-libvpx`` (libvpx through GStreamer's ``parsebin`` and
  ``videocodectestsink``, a decoder independent of ffmpeg) on VP9 clips with
  hidden alt-ref frames, a resolution change and 10-bit 4:2:0;
  ``FFmpeg-H.264`` (the ffmpeg CLI with its ``format`` filter and ``md5``
  muxer) on H.264 clips of two sizes, one with a B-pyramid. Those MD5s
  agreeing shows the expected MD5s and the output format are the ones
  fluster's decoders hash;
- the path the node's frames take in fluster's V4L2 GStreamer decoders: the
  decoder's NV12 / P010 (here libvpx's frames converted to them without
  dithering) through ``videoconvert dither=none`` to I420 / I420_10LE hashes
  as the suite's MD5.

Skipped with a reason when fluster, Debian's ffmpeg or the GStreamer
elements are missing.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from daedalus.parse import corpus
from daedalus.stateless import fluster_suites as fs

FFMPEG = Path("/usr/bin/ffmpeg")
VP9_VECTORS = ["vp9-128x96", "vp9-320x240-altref", "vp9-resize-320x240-174x98",
               "vp9-p2-10bit-320x240"]
H264_VECTORS = ["h264-high-128x96", "h264-high-174x98", "h264-main-bpyramid-320x240"]
CHECKSUM = re.compile(r"checksum-type=\(string\)MD5, checksum=\(string\)([0-9a-f]{32})")

pytestmark = pytest.mark.skipif(not FFMPEG.is_file(), reason="Debian's ffmpeg is not installed")


def gst_elements(*names: str) -> str | None:
    """None when gst-inspect-1.0 finds every element, else why not."""
    inspect = shutil.which("gst-inspect-1.0")
    if inspect is None:
        return "gst-inspect-1.0 is not installed"
    missing = [n for n in names
               if subprocess.run([inspect, "--exists", n], check=False).returncode != 0]
    return f"GStreamer has no {', '.join(missing)}" if missing else None


@pytest.fixture(scope="module")
def suites_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("suites")
    fs.generate(out)
    return out


def suite_json(suites_dir: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(suites_dir.glob("*.json"))}


def test_suites_load_in_fluster(suites_dir: Path) -> None:
    test_suite = pytest.importorskip("fluster.test_suite", reason="fluster is not installed")
    codec = pytest.importorskip("fluster.codec")
    resources = suites_dir / fs.RESOURCES
    loaded = {name: test_suite.TestSuite.from_json_file(str(path), str(resources))
              for name, path in suite_json(suites_dir).items()}

    # the corpus's own description of the clips, independent of the suites
    want: dict[str, set[str]] = {}
    for e in corpus.entries(large=False):
        if e.codec not in ("vp9", "h264"):
            continue
        title = {"vp9": "VP9", "h264": "H.264"}[e.codec]
        base = e.bit_depth == 8 and e.pix_fmt in ("yuv420p", "yuvj420p")
        want.setdefault(f"daedalus-{title}" + ("" if base else "-not-8bit-420"), set()).add(e.name)
    assert {n: set(s.test_vectors) for n, s in loaded.items()} == want
    assert "vp9-resize-320x240-174x98" in want["daedalus-VP9"]
    assert "h264-main-bpyramid-320x240" in want["daedalus-H.264"]
    assert want["daedalus-VP9-not-8bit-420"] == {"vp9-p2-10bit-320x240", "vp9-p1-444-176x144"}
    assert want["daedalus-H.264-not-8bit-420"] == {
        "h264-high10-320x240", "h264-high422-176x144", "h264-high444-176x144"}

    for name, suite in loaded.items():
        assert suite.codec == (codec.Codec.VP9 if "VP9" in name else codec.Codec.H264)
        assert suite.test_method == test_suite.TestMethod.MD5
        for vector in suite.test_vectors.values():
            entry = corpus.entry(vector.name)
            expected_format = {"yuvj420p": "yuv420p"}.get(entry.pix_fmt, entry.pix_fmt)
            assert vector.output_format == codec.OutputFormat(expected_format)
            assert vector.profile is not None
            # where fluster's Test._find_input_path looks first
            path = resources / name / vector.name / vector.input_file
            data = path.read_bytes()
            assert hashlib.sha256(data).hexdigest() == entry.sha256
            assert hashlib.md5(data).hexdigest() == vector.source_checksum
            assert re.fullmatch(r"[0-9a-f]{32}", vector.result)


def run_fluster(suites_dir: Path, tmp_path: Path, decoder: str,
                vectors: list[str]) -> list[fs.Score]:
    pytest.importorskip("fluster.main", reason="fluster is not installed")
    code, results = fs.run(suites_dir, [decoder], jobs=1, timeout=60, vectors=vectors,
                           output_dir=tmp_path / "out", quiet=True)
    assert results, f"fluster ran nothing with {decoder} (exit status {code})"
    return results


def test_fluster_gstreamer_libvpx_vp9(suites_dir: Path, tmp_path: Path) -> None:
    why = gst_elements("parsebin", "vp9dec", "videoconvert", "videocodectestsink")
    if why:
        pytest.skip(why)
    results = run_fluster(suites_dir, tmp_path, "GStreamer-VP9-libvpx-Gst1.0", VP9_VECTORS)
    assert {(s.suite, s.cell) for s in results} == {("daedalus-VP9", "3/3"),
                                                    ("daedalus-VP9-not-8bit-420", "1/1")}
    assert all(not s.missed for s in results)
    table = fs.table(results)
    assert "|daedalus-VP9|3/3|" in table and "|daedalus-VP9-not-8bit-420|1/1|" in table


def test_fluster_ffmpeg_h264(suites_dir: Path, tmp_path: Path) -> None:
    results = run_fluster(suites_dir, tmp_path, "FFmpeg-H.264", H264_VECTORS)
    assert [(s.suite, s.decoder, s.cell, s.missed) for s in results] == [
        ("daedalus-H.264", "FFmpeg-H.264", "3/3", {})]


@pytest.mark.parametrize(("name", "decoded", "hashed"), [
    ("vp9-resize-320x240-174x98", "NV12", "I420"),
    ("vp9-p2-10bit-320x240", "P010_10LE", "I420_10LE"),
])
def test_v4l2_capture_formats_hash_as_the_suite(suites_dir: Path, name: str, decoded: str,
                                                hashed: str) -> None:
    why = gst_elements("parsebin", "vp9dec", "videoconvert", "videocodectestsink")
    if why:
        pytest.skip(why)
    suite = "daedalus-VP9" if decoded == "NV12" else "daedalus-VP9-not-8bit-420"
    data = suite_json(suites_dir)[suite].read_text()
    (vector,) = [v for v in json.loads(data)["test_vectors"] if v["name"] == name]
    clip = suites_dir / fs.RESOURCES / suite / name / vector["input_file"]
    # the tail is fluster's GStreamerVideo.gen_pipeline after a V4L2 decoder
    pipeline = (f"filesrc location={clip} ! parsebin ! vp9dec ! videoconvert dither=none ! "
                f"video/x-raw,format={decoded} ! videoconvert dither=none ! "
                f"video/x-raw,format={hashed} ! videocodectestsink")
    proc = subprocess.run(["gst-launch-1.0", "-m", *pipeline.split()], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    checksums = CHECKSUM.findall(proc.stdout)
    assert checksums == [vector["result"]]
