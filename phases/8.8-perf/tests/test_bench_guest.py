"""Phase 8.8 in the guest: ``daedalus-v4l2 bench --device`` (the guest half of the bench).

A smoke run of the console script, as a person runs it in a guest:
``daedalus-v4l2 bench vp9-128x96 --device auto --rounds 1 --json -``. It
must exit 0 (every clip measured, the node gave as many frames as raw
FFmpeg), name the node ``find_node()`` finds, print the device columns and
a progress line for the round through the node, and its JSON row must count
the corpus entry's frames twice (raw FFmpeg's, the node's), with a frame
rate through the node and a per-frame overhead that is a number. No figure
is judged: speed under TCG says nothing, the closure page's run does.

The kernel_log fixture fails the test on any WARN, BUG, oops or hung task.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from daedalus.parse import corpus
from daedalus.skeleton.v4l2dev import find_node
from daedalus.testbed.guestctl import daemon_state, tool

pytestmark = [pytest.mark.guest, pytest.mark.usefixtures("kernel_log")]

CLIP = "vp9-128x96"


def test_bench_through_the_node_smoke() -> None:
    entry = corpus.entry(CLIP)
    node = str(find_node())
    proc = subprocess.run([tool("daedalus-v4l2"), "bench", CLIP, "--device", "auto",
                           "--rounds", "1", "--json", "-"],
                          capture_output=True, text=True, timeout=900)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].endswith("device fps  device/raw  bridge us")
    assert lines[1].split()[0] == CLIP
    assert f"device: {node}" in proc.stderr
    assert f"[1/1] {CLIP}: round 1/1: through {node}" in proc.stderr

    document = json.loads(lines[-1])
    (row,) = document["results"]
    assert (row["file"], row["codec"], row["error"], row["device"]) == (
        CLIP, entry.codec, None, node)
    assert row["device_frames"] == row["frames"] == entry.frames
    assert row["device_fps"] > 0 and row["device_s"] > 0 and row["raw_fps"] > 0
    assert isinstance(row["bridge_us"], float)
    assert isinstance(row["device_ratio"], float) and row["device_ratio"] > 0
    assert daemon_state() == "ready"
