"""However the guest runner ends, its QEMU ends with it (daedalus.testbed.reaper).

The runner here is a small Python process that starts its child through the
same launcher as ``daedalus-v4l2 guest`` (``reaper.child``), with ``sleep``
standing in for QEMU so that no guest boots. Each test ends the runner from
outside and checks that the child is gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daedalus.testbed import reaper

RUNNER = """
import sys
from daedalus.testbed import reaper
with reaper.child(["sleep", "600"]) as proc:
    print(proc.pid, flush=True)
    proc.wait()
"""


def _gone(pid: int, start: str, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stat = reaper._stat(pid)
        if stat is None or stat[0] == "Z" or stat[2] != start:
            return True
        time.sleep(0.05)
    return False


class Run:
    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.child = int(self.proc.stdout.readline())
        stat = reaper._stat(self.child)
        assert stat is not None and stat[0] != "Z"
        self.start = stat[2]

    def child_gone(self) -> bool:
        return _gone(self.child, self.start)


@pytest.fixture()
def runs() -> Iterator[list[Run]]:
    started: list[Run] = []
    yield started
    for run in started:  # never leave a sleep behind, whatever failed
        if not run.child_gone():
            os.kill(run.child, signal.SIGKILL)
        run.proc.kill()
        run.proc.wait()


def _runner(runs: list[Run], *prefix: str) -> Run:
    run = Run([*prefix, sys.executable, "-c", RUNNER])
    runs.append(run)
    return run


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGTERM, 128 + signal.SIGTERM),
                                             (signal.SIGHUP, 128 + signal.SIGHUP),
                                             # an uncaught KeyboardInterrupt
                                             (signal.SIGINT, -signal.SIGINT)])
def test_signal_ends_runner_and_child(runs: list[Run], sig: int, status: int) -> None:
    run = _runner(runs)
    assert run.proc.poll() is None
    run.proc.send_signal(sig)
    assert run.proc.wait(timeout=10) == status
    assert run.child_gone()


def test_sigkill_of_runner_ends_child(runs: list[Run]) -> None:
    run = _runner(runs)
    run.proc.kill()
    run.proc.wait(timeout=10)
    assert run.child_gone()  # PR_SET_PDEATHSIG


def test_timeout_ends_child(runs: list[Run]) -> None:
    """`timeout` signals its own process group; the child has a session of its own."""
    run = _runner(runs, "timeout", "2")
    assert run.proc.wait(timeout=15) == 124
    assert run.child_gone()


def test_killed_hatch_ends_runner_and_child(runs: list[Run], tmp_path: Path) -> None:
    """hatch does not pass SIGTERM on and its command's shell stays, so the
    runner watches the hatch process itself (here a shell named hatch)."""
    hatch = tmp_path / "hatch"
    hatch.symlink_to("/bin/sh")
    (tmp_path / "runner.py").write_text(RUNNER)
    # "; exit" keeps each shell alive as a parent instead of exec'ing its command
    inner = f"sh -c '{sys.executable} {tmp_path / 'runner.py'}; exit'; exit"
    run = Run([str(hatch), "-c", inner])
    runs.append(run)
    run.proc.terminate()
    run.proc.wait(timeout=10)
    assert run.child_gone()


def test_child_in_own_session_and_handlers_restored(runs: list[Run]) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with reaper.child(["sleep", "600"]) as proc:
        assert os.getsid(proc.pid) == proc.pid
        assert signal.getsignal(signal.SIGTERM) is not before
    assert proc.returncode is not None  # killed and reaped on leaving the block
    assert signal.getsignal(signal.SIGTERM) is before
