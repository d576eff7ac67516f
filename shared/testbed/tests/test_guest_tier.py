"""Boot one guest per kernel and run the guest-tier tests of phases 8.1...N in it.

The inner pytest runs with the same --phase, so phase N's build is exercised
by the tests of every phase up to N (regression bisecting by phase).

The 6.12 tier runs every guest test but those marked "extended" (720p and up
through every client, 4096x2304: slow under TCG, run with DAEDALUS_EXTENDED=1,
figures on the 8.6 closure page). Each tier's whole inner output (every
test's printed figures) is kept in build/guest-tier-SERIES.log. To keep CI
within its time, the 6.1 tier runs a smoke subset (SMOKE_61: the node, the
bridge's validation, the round trip, byte-exact decodes through every client,
a resolution change, the overflow and stalled-daemon reproductions, an
unbind, and the unmodified clients on everyday streams and on refused ones;
from phase 8.6 the dma-buf memory types, 1080p, imported buffers, AV1 on the
node: its format, small clips, the 10-bit refusal; from phase 8.7 the media
device and its topology, both v4l2-compliance runs, four mixed clients at once
and the daemon restarted under four contexts; from phase 8.8 the 10-bit P010
decodes; from phase 8.9 the stateless node: its decodes, faults, media graph and
v4l2-compliance). The clients' odd-width, resolution-change and slowed-daemon cases,
the colorspace round trip and the bench's smoke run left it at phase 8.8 to
keep CI within its time: they exercise no kernel-version-specific code. The
full 6.1 run is

    DAEDALUS_FULL_61=1 hatch run test shared/testbed/tests/test_guest_tier.py -k "6.1 and not 6.12"

and everything, extended cases included, on both kernels:

    DAEDALUS_EXTENDED=1 DAEDALUS_FULL_61=1 hatch run test shared/testbed/tests/test_guest_tier.py
"""

from __future__ import annotations

import os
import re
import sys

import pytest

from daedalus.testbed import kernels
from daedalus.testbed.guest import GuestConfig, run_guest
from daedalus.testbed.paths import repo_root

pytestmark = pytest.mark.boots

SMOKE_61 = " or ".join([
    "test_node_8_1", "test_malformed_replies_are_rejected", "test_ping_cli_thousand",
    "test_roundtrip_digests_equal_ffmpeg", "test_streams_are_numbered",
    "test_decode_is_byte_exact", "test_resolution_change", "test_ffmpeg_v4l2m2m",
    "test_gstreamer_v4l2", "test_capture_buffers_too_small", "test_a_stalled_daemon",
    "test_unbind_mid_stream", "test_refused_stream_through_ffmpeg_and_gstreamer",
    "test_reqbufs_offers_mmap_and_dmabuf", "(test_large_frames and 1920x1080)",
    "test_decode_importing_capture_buffers", "test_gstreamer_capture_io_mode_dmabuf",
    "(test_av1_guest and not 1280x720 and not 1920x1080)",
    "test_mc_guest", "test_compliance_guest", "test_applications_decoding_at_once",
    "test_daemon_killed_and_restarted_under_four_contexts", "test_p010_guest",
    "test_stateless_guest", "test_stateless_faults_guest", "test_stateless_mc_guest",
])


@pytest.mark.parametrize("series", ["6.12", "6.1"])
def test_guest_tier(series: str, phase: str, guest_kernels: list[str]) -> None:
    if series not in guest_kernels:
        pytest.skip(f"kernel {series} not selected (--kernels)")
    kernel = kernels.resolve(series)
    if not kernel.vmlinuz.exists():
        pytest.skip(f"kernel {series} not installed (daedalus-v4l2 setup)")
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA",
            "--durations=15", f"--phase={phase}", "-m", "guest", str(repo_root())]
    if series == "6.1" and os.environ.get("DAEDALUS_FULL_61") != "1":
        argv[-1:-1] = ["-k", SMOKE_61]
    if os.environ.get("DAEDALUS_EXTENDED") != "1":
        argv[argv.index("guest")] = "guest and not extended"
    result = run_guest(GuestConfig(kernel=kernel, phase=phase, timeout=3000), argv,
                       cwd=repo_root())
    # the whole inner run (its figures: -rA prints every test's output) stays
    # readable after a passing tier: build/guest-tier-SERIES.log
    log = repo_root() / "build" / f"guest-tier-{series}.log"
    log.parent.mkdir(exist_ok=True)
    log.write_text(result.stdout + "\n--- stderr ---\n" + result.stderr)
    print(f"inner run: {log}")
    print(result.stdout[-20000:])
    print(result.stderr[-5000:], file=sys.stderr)
    assert result.status == 0, "\n".join(result.problems) or result.stdout[-3000:]
    counts = summary(result.stdout)
    assert counts.get("passed") and not counts.keys() & {"failed", "error", "errors"}, counts


def summary(stdout: str) -> dict[str, int]:
    """The counts of the inner pytest's last summary line ("3 passed, 1 failed in
    9.1s"); a test's own output may say "failed" (e.g. "STREAMON failed with
    EINVAL") without the run failing."""
    for line in reversed(stdout.splitlines()):
        if re.search(r" in [0-9.]+s\b", line) and re.search(r"\d+ (passed|failed|error)", line):
            return {word: int(n) for n, word in re.findall(r"(\d+) ([a-z]+)", line)}
    return {}


def test_summary_reads_the_last_line_only() -> None:
    out = ("STREAMON(CAPTURE) failed with EINVAL\n"
           "==== 1 failed, 100 passed, 578 deselected in 1981.89s (0:33:01) ====\n")
    assert summary(out) == {"failed": 1, "passed": 100, "deselected": 578}
    assert summary("x failed\n101 passed, 578 deselected in 980.77s (0:16:20)\n") == {
        "passed": 101, "deselected": 578}
    assert summary("no summary") == {}
