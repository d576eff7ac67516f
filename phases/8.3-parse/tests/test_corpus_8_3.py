"""Phase 8.3 corpus: the manifest matches the committed files, the vectors are
what the issue asks for, `corpus --check` reproduces them bit for bit, and the
`parse` / `corpus` commands work through the daedalus-v4l2 CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from daedalus.parse import corpus
from daedalus.parse.readers import read_all

ENTRIES = corpus.entries()
needs_ffmpeg = pytest.mark.skipif(not Path(corpus.FFMPEG).is_file(),
                                  reason="needs Debian's ffmpeg (apt-get install ffmpeg)")


def test_manifest_matches_committed_files() -> None:
    committed = [e for e in ENTRIES if e.committed]
    listed = {e.file for e in committed} | {corpus.MANIFEST}
    on_disk = {p.name for p in corpus.corpus_dir().iterdir()}
    assert on_disk == listed
    for e in committed:
        p = corpus.path(e.name)
        assert p.stat().st_size == e.bytes
        assert corpus.sha256(p) == e.sha256, e.name
        info, packets = read_all(p)
        assert (info.codec, info.container, len(packets)) == (e.codec, e.container, e.packets)
    assert sum(e.bytes for e in committed) < 1024 * 1024  # well under 2 MB


def test_manifest_matches_specs() -> None:
    assert [e.name for e in ENTRIES] == [s.name for s in corpus.SPECS]
    for e in ENTRIES:
        s = corpus.spec(e.name)
        assert (e.codec, e.container, e.bit_depth, e.pix_fmt, e.frames, e.large, e.file) == (
            s.codec, s.container, s.bit_depth, s.pix_fmt, s.frames, s.large, s.file)
        assert all(part.pix_fmt == s.pix_fmt for part in s.parts)
        assert e.command == s.command()
        assert "-threads 1" in e.command and "+bitexact" in e.command


def test_what_the_issue_asks_for() -> None:
    have = {(e.codec, e.bit_depth) for e in ENTRIES}
    assert {("vp9", 8), ("vp9", 10), ("av1", 8), ("av1", 10), ("h264", 8), ("h264", 10)} <= have
    sizes = {(e.width, e.height) for e in ENTRIES}
    assert {(128, 96), (320, 240), (1920, 1080), (174, 98)} <= sizes
    assert {e.container for e in ENTRIES} == {"ivf", "annexb", "obu"}
    vp9 = corpus.entry("vp9-320x240")  # phase 8.4's acceptance stream
    assert (vp9.codec, vp9.container, vp9.width, vp9.height, vp9.frames) == (
        "vp9", "ivf", 320, 240, 30)
    assert any(len(e.sizes) > 1 for e in ENTRIES)
    # layouts the daemon refuses rather than converts (4:2:2 / 4:4:4 chroma)
    assert {("h264", "yuv444p"), ("h264", "yuv422p"), ("vp9", "yuv444p")} <= {
        (e.codec, e.pix_fmt) for e in ENTRIES}
    assert {e.pix_fmt for e in ENTRIES if e.bit_depth == 10} == {"yuv420p10le"}
    assert all(not e.committed for e in ENTRIES if e.width >= 1920)


def test_unknown_name() -> None:
    with pytest.raises(corpus.CorpusError, match="no corpus vector named"):
        corpus.path("nope")


def test_concat_ivf() -> None:
    a = corpus.path("vp9-128x96").read_bytes()
    both = corpus.concat_ivf([a, a])
    assert int.from_bytes(both[24:28], "little") == 2 * int.from_bytes(a[24:28], "little")
    assert len(both) == 2 * len(a) - 32


@needs_ffmpeg
def test_pad_ivf_packet_grows_one_packet_and_keeps_the_pictures(tmp_path: Path) -> None:
    """Packet 3 grown by zero bytes; the other packets as they were, and
    ffmpeg decodes the same pictures (the later phases' test of a packet
    larger than a buffer relies on it)."""
    def pictures(path: Path) -> bytes:
        return subprocess.run([corpus.FFMPEG, "-nostdin", "-loglevel", "error", "-i", str(path),
                               "-f", "rawvideo", "-pix_fmt", "yuv420p", "-"],
                              capture_output=True, check=True, timeout=120).stdout

    src = corpus.path("vp9-128x96")
    padded = tmp_path / "padded.ivf"
    padded.write_bytes(corpus.pad_ivf_packet(src.read_bytes(), 3, 5000))
    before, after = read_all(src)[1], read_all(padded)[1]
    assert [len(p.data) for p in after] == [5000 if i == 3 else len(p.data)
                                            for i, p in enumerate(before)]
    assert after[3].data[:len(before[3].data)] == before[3].data
    assert pictures(padded) == pictures(src) != b""
    with pytest.raises(ValueError, match="no packet 10"):
        corpus.pad_ivf_packet(src.read_bytes(), 10, 5000)


@needs_ffmpeg
def test_check_reproduces_committed_vectors() -> None:
    results = corpus.check()
    assert len(results) == sum(1 for e in ENTRIES if e.committed)
    bad = [f"{r.name}: {r.detail}" for r in results if not r.ok]
    assert not bad


@needs_ffmpeg
def test_large_vector_on_demand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAEDALUS_CACHE", str(tmp_path))
    e = corpus.entry("vp9-1920x1080")
    p = corpus.path(e.name)
    assert p == tmp_path / "corpus" / e.file
    assert corpus.sha256(p) == e.sha256  # also reproducible
    mtime = p.stat().st_mtime_ns
    assert corpus.path(e.name).stat().st_mtime_ns == mtime  # cached, not re-encoded


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("daedalus-v4l2")
    argv = [exe] if exe else [sys.executable, "-m", "daedalus.testbed.cli"]
    return subprocess.run([*argv, *args], capture_output=True, text=True, timeout=300)


def test_cli_parse_json() -> None:
    proc = cli("parse", str(corpus.path("vp9-320x240")), "--json")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 30 and rows[0]["keyframe"] and not any(r["keyframe"] for r in rows[1:])
    assert {(r["width"], r["height"]) for r in rows} == {(320, 240)}
    assert all(r["blocks"] for r in rows) and rows[0]["profile"] == "Profile 0"
    assert sum(r["size"] for r in rows) + 32 + 12 * 30 == corpus.entry("vp9-320x240").bytes


def test_cli_parse_text_and_errors(tmp_path: Path) -> None:
    proc = cli("parse", str(corpus.path("h264-high10-320x240")))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "h264 in annexb" in lines[0] and lines[-1] == "10 frames"
    assert "High 10 10-bit" in lines[1] and " KS I " in lines[1]
    bad = tmp_path / "x.ivf"
    bad.write_bytes(b"DKIF" + bytes(10))
    proc = cli("parse", str(bad))
    assert proc.returncode == 1 and "byte offset" in proc.stderr
    proc = cli("parse", str(tmp_path / "missing.ivf"))
    assert proc.returncode == 1 and "No such file" in proc.stderr


@needs_ffmpeg
def test_cli_corpus_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`corpus --out DIR` writes the small vectors and a manifest identical to the
    committed one (the large entries' sha256 come from the committed manifest)."""
    shutil.copy(corpus.corpus_dir() / corpus.MANIFEST, tmp_path / corpus.MANIFEST)
    proc = cli("corpus", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / corpus.MANIFEST).read_text() == (
        corpus.corpus_dir() / corpus.MANIFEST).read_text()
