"""The guest CLI contract: exit statuses, timeouts, panics, dmesg checks.

Each test boots a real guest (TCG) through the public command line.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from daedalus.testbed import kernels
from daedalus.testbed.guest import (
    DAEMON_WAIT,
    EXIT_CRASH,
    EXIT_DMESG,
    EXIT_SETUP,
    EXIT_TIMEOUT,
)

pytestmark = pytest.mark.boots


@pytest.fixture(autouse=True)
def _kernel_installed() -> None:
    if not kernels.resolve("6.12").vmlinuz.exists():
        pytest.skip("kernel 6.12 not installed (daedalus-v4l2 setup)")


def guest(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["daedalus-v4l2", "guest", "--phase", "8.1", *args],
                          capture_output=True, text=True, timeout=timeout)


def qemu_pids() -> set[str]:
    out = subprocess.run(["pgrep", "-f", "qemu-system-x86_64.*mount_tag=dout"],
                         capture_output=True, text=True).stdout
    return set(out.split())


def test_status_and_output_are_the_commands() -> None:
    proc = guest("--", "sh", "-c", "echo out-$((6*7)); echo err >&2; exit 7")
    assert proc.returncode == 7
    assert proc.stdout == "out-42\n"
    assert "err" in proc.stderr.splitlines()


def test_false_fails() -> None:
    assert guest("--", "false").returncode == 1


def test_runs_where_the_module_is_modprobeable() -> None:
    proc = guest("--", "sh", "-c", "modprobe -r daedalus_v4l2 && modprobe daedalus_v4l2 "
                 "&& v4l2-ctl -d /dev/video0 --list-formats-out")
    assert proc.returncode == 0, proc.stderr
    assert "'VP90'" in proc.stdout


def test_hung_guest_is_killed_and_reported() -> None:
    before = qemu_pids()
    start = time.monotonic()
    proc = guest("--timeout", "45", "--", "sleep", "1000")
    elapsed = time.monotonic() - start
    assert proc.returncode == EXIT_TIMEOUT
    assert "did not finish within 45 s" in proc.stderr
    assert elapsed < 45 + 60  # killed at the deadline, plus build/setup time
    assert qemu_pids() <= before


def test_panicking_guest_is_reported() -> None:
    proc = guest("--", "sh", "-c", "echo c > /proc/sysrq-trigger; sleep 100")
    assert proc.returncode == EXIT_CRASH
    assert "Kernel panic" in proc.stderr or "kernel panic" in proc.stderr


def test_kernel_warning_fails_a_successful_command() -> None:
    # A line in the kernel log shaped like a WARN() report, injected as root.
    proc = guest("--", "sh", "-c",
                 "echo 'WARNING: CPU: 0 PID: 1 at injected-by-test' > /dev/kmsg")
    assert proc.returncode == EXIT_DMESG
    assert "injected-by-test" in proc.stderr


def test_a_daemon_that_exits_fails_the_run_at_once(tmp_path: Path) -> None:
    """The handshake wait is on state: a daedalusd that dies is not waited
    for (the wait for a running one is 300 s). Made to die by a
    sitecustomize that exits in the guest's daedalusd only."""
    (tmp_path / "sitecustomize.py").write_text(
        "import os, sys\n"
        "if os.environ.get('DAEDALUS_IN_GUEST') == '1' and sys.argv[0].endswith('daedalusd'):\n"
        "    os._exit(3)\n")
    start = time.monotonic()
    proc = subprocess.run(["daedalus-v4l2", "guest", "--phase", "8.2", "--", "true"],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)})
    elapsed = time.monotonic() - start
    assert proc.returncode == EXIT_SETUP, proc.stderr
    assert "daedalusd exited (status 3) before the handshake" in proc.stderr
    assert elapsed < DAEMON_WAIT, f"{elapsed:.0f} s: waited for a dead daemon"
