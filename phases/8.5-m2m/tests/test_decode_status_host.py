"""The decode tool's exit statuses that the host can provoke (no decoder node here).

Unreadable files, a missing or wrong device, an unwritable output and a bad
command line, each through the installed ``daedalus-v4l2 decode`` as a user
runs it: its status and exactly one line on stderr. The statuses that need
the node and daedalusd (refused, timeout, mismatch, buffers in error, no
daemon) are asserted in the guest (test_m2m_guest.py).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from daedalus.m2m.status import MEANINGS, DecodeExit, epilog
from daedalus.parse import corpus
from daedalus.testbed.paths import repo_root

VP9 = "vp9-320x240"


def decode(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["daedalus-v4l2", "decode", *argv], capture_output=True, text=True,
                          timeout=300, check=False)


def test_statuses_are_distinct_and_each_has_a_meaning() -> None:
    assert [int(s) for s in DecodeExit] == list(range(len(DecodeExit)))
    assert set(MEANINGS) == set(DecodeExit)
    assert (int(DecodeExit.OK), int(DecodeExit.USAGE)) == (0, 2)  # the shell's, argparse's


def test_help_lists_every_status() -> None:
    proc = decode("--help")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout[proc.stdout.index("exit status:"):]
    assert text.strip() == epilog().strip()
    for status in DecodeExit:
        assert re.search(rf"^  {status.value}  {status.name} ", text, re.M), status


def test_the_reference_page_lists_every_status() -> None:
    page = (repo_root() / "docs/content/reference/cli.md").read_text()
    section = page[page.index("## decode"):page.index("## daedalusd")]
    rows = dict(re.findall(r"^\| (\d+) \| `(\w+)` \|", section, re.M))
    assert rows == {str(s.value): s.name for s in DecodeExit}
    for status in DecodeExit:
        row = next(line for line in section.splitlines()
                   if line.startswith(f"| {status.value} | `{status.name}` |"))
        assert f"| {status.meaning} |" in row, row


@pytest.mark.parametrize("content", [None, b"", b"\x13\x37 not a stream" * 9,
                                     b"DKIF\x01\x00"])
def test_an_unreadable_file_is_one_line_and_its_status(content: bytes | None,
                                                       tmp_path: Path) -> None:
    """Missing, empty, not a known container, an IVF header cut short."""
    path = tmp_path / "in.ivf"
    if content is not None:
        path.write_bytes(content)
    proc = decode(str(path), "-o", str(tmp_path / "out.yuv"))
    assert proc.returncode == DecodeExit.UNREADABLE, proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"daedalus-v4l2 decode: {path}: ")
    assert lines[0].count(str(path)) == 1, lines[0]  # the path once, not twice
    assert proc.stdout == ""
    assert not (tmp_path / "out.yuv").exists()


def test_empty_file_says_empty_once(tmp_path: Path) -> None:
    """Issue 9's reproduction: an empty file printed its path twice."""
    empty = tmp_path / "empty.ivf"
    empty.touch()
    proc = decode(str(empty), "-o", str(tmp_path / "o.yuv"))
    assert (proc.returncode, proc.stderr) == (
        DecodeExit.UNREADABLE, f"daedalus-v4l2 decode: {empty}: byte offset 0: empty file\n")


@pytest.mark.parametrize("device,says", [
    ("/nonexistent/video9", "cannot open /nonexistent/video9: No such file or directory"),
    ("/dev/null", "/dev/null is not a V4L2 device (QUERYCAP: "),
])
def test_no_device(device: str, says: str, tmp_path: Path) -> None:
    proc = decode(str(corpus.path(VP9)), "-o", str(tmp_path / "o.yuv"), "--device", device)
    assert proc.returncode == DecodeExit.NO_DEVICE, proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"daedalus-v4l2 decode: {says}"), lines


def test_no_device_by_default_on_a_machine_without_the_module(tmp_path: Path) -> None:
    if any(Path("/sys/class/video4linux").glob("video*")):
        pytest.skip("this machine has V4L2 nodes")
    proc = decode(str(corpus.path(VP9)), "-o", str(tmp_path / "o.yuv"))
    assert proc.returncode == DecodeExit.NO_DEVICE
    assert proc.stderr == ("daedalus-v4l2 decode: cannot open the daedalus-v4l2 node: no V4L2 "
                           "node with card 'daedalus-v4l2' (is daedalus_v4l2 loaded?)\n")


def test_unwritable_output_is_failed(tmp_path: Path) -> None:
    out = tmp_path / "no-such-dir" / "o.yuv"
    proc = decode(str(corpus.path(VP9)), "-o", str(out), "--device", "/dev/null")
    assert proc.returncode == DecodeExit.FAILED, proc.stdout + proc.stderr
    assert proc.stderr == f"daedalus-v4l2 decode: {out}: No such file or directory\n"


def test_bad_command_line_is_usage(tmp_path: Path) -> None:
    proc = decode(str(corpus.path(VP9)), "-o", str(tmp_path / "o.yuv"), "--buffers", "0")
    assert proc.returncode == DecodeExit.USAGE
    assert "must be at least 1" in proc.stderr
