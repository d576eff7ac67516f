"""Small runs of the standing campaigns, in the guest against the real node and daemon.

``daedalus-v4l2 campaign fuzz|kill|soak`` through the command's entry point,
with counts small enough for CI (the full runs and their figures are on the
docs' reliability page). Every intact frame the campaigns count is compared
by them with Debian's ffmpeg; the tests check their JSON counts and exit
status. Timing bounds are loose here (a loaded TCG host); the full runs
measure them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from daedalus.m2m.v4l2 import M2MNode
from daedalus.skeleton.v4l2dev import OUTPUT, find_node
from daedalus.testbed.cli import main
from daedalus.testbed.guestctl import daemon_pid, daemon_state

pytestmark = pytest.mark.guest

SMALL = {"VP90": "vp9-128x96", "H264": "h264-high-128x96", "AV01": "av1-320x240"}


def campaign(tmp_path: Path, capsys: pytest.CaptureFixture[str],
             *argv: str) -> tuple[int, str, dict[str, Any]]:
    """``daedalus-v4l2 campaign ARGV`` through the command's own entry (in this
    process: a Python start costs half a minute in a loaded guest)."""
    out = tmp_path / f"{argv[0]}.json"
    status = main(["campaign", *argv, "--json", str(out)])
    captured = capsys.readouterr()
    print(captured.out, captured.err)  # in the report (-rA)
    assert out.exists(), captured.out + captured.err
    return status, captured.out + captured.err, json.loads(out.read_text())


def test_fuzz_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """20 mutated streams over every codec the node offers (small clips), the
    watchdog raised so that a slow guest cannot pass for a lost frame."""
    with M2MNode(find_node()) as node:
        offered = [code for code in SMALL if code in node.formats(OUTPUT)]
    assert {"VP90", "H264"} <= set(offered)
    clips = [arg for code in offered for arg in ("--clip", SMALL[code])]
    pid = daemon_pid()
    status, output, counts = campaign(tmp_path, capsys, "fuzz", "--seed", "1", "--count",
                                      "20", *clips, "--bridge-timeout-ms", "60000")
    assert status == 0, output
    assert counts["streams"] == 20
    assert sum(counts["by_codec"].values()) == 20 and len(counts["by_codec"]) == len(offered)
    assert (counts["hangs"], counts["crashes"], counts["kernel_warnings"]) == (0, 0, 0)
    assert counts["resumed"] == 20 and counts["lost_frames"] == counts["wrong_frames"] == 0
    assert counts["output_errors"] + counts["capture_errors"] > 0  # the mutations bit
    assert counts["buffers"] > 20 * 10
    assert daemon_pid() == pid and daemon_state() == "ready"
    assert "campaign fuzz: 0 findings" in output.splitlines()


def test_kill_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, output, counts = campaign(tmp_path, capsys, "kill", "--seed", "1", "--count", "2",
                                      "--clip", "vp9-128x96", "--clip", "h264-high-128x96",
                                      "--fail-within", "10")
    assert status == 0, output
    assert counts["kills"] == 2 and len(counts["fail_s"]) == 2
    assert all(s < 10 for s in counts["fail_s"]), counts["fail_s"]
    assert counts["served"] == 2 and counts["intact_before"] == 2
    assert len(counts["start_s"]) == 2 and all(s > 0 for s in counts["start_s"])
    assert counts["hangs"] == 0 and counts["kernel_warnings"] == 0
    assert daemon_state() == "ready"


def test_soak_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, output, counts = campaign(tmp_path, capsys, "soak", "--frames", "300", "--every",
                                      "100", "--clip", "vp9-128x96")
    assert status == 0, output
    assert counts["frames"] == counts["exact"] == counts["frames_wanted"] == 300
    assert counts["errors"] == 0 and counts["hang"] is None and not counts["crashed"]
    assert [s["frames"] for s in counts["samples"]] == [0, 100, 200, 300, 300]
    assert all(s["daemon_rss_kib"] for s in counts["samples"])
    for key, limit in counts["limits"].items():
        assert counts["growth"][key] <= limit, (key, counts["growth"])
