"""Inside a guest: control the daedalusd that the testbed started.

Guest-tier tests that need the module unloaded, or the device to themselves
(a fake daemon), stop the daemon with ``daemon_stopped()`` and get it back
afterwards. The kernel's own view (debugfs ``daemon``: disconnected,
connected or ready) is what they wait on, not process states.
``KernelLog`` reads what the kernel logs from a point on (warnings, BUGs,
oopses: ``KernelLog.problems()``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PIDFILE = Path("/run/daedalusd.pid")
OUT = Path(os.environ.get("DAEDALUS_OUT", "/run/daedalus"))
STATE = Path("/sys/kernel/debug/daedalus-v4l2/daemon")


def daemon_state() -> str:
    """disconnected, connected, ready, or absent (module not loaded / below 8.2)."""
    try:
        return STATE.read_text().strip()
    except OSError:
        return "absent"


def _wait_state(want: set[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    state = daemon_state()
    while state not in want and time.monotonic() < deadline:
        time.sleep(0.05)
        state = daemon_state()
    return state


def daemon_pid() -> int | None:
    """The pid of the daedalusd the testbed (or start_daemon) started."""
    try:
        return int(PIDFILE.read_text().strip())
    except (OSError, ValueError):
        return None


def stop_daemon(timeout: float = 10.0) -> bool:
    """SIGTERM daedalusd and wait until the kernel sees it gone; True if it ran."""
    pid = daemon_pid()
    if pid is None:
        return False
    PIDFILE.unlink(missing_ok=True)
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    state = _wait_state({"disconnected", "absent"}, timeout)
    if state not in ("disconnected", "absent"):
        os.kill(pid, signal.SIGKILL)
        _wait_state({"disconnected", "absent"}, timeout)
    return True


def kill_daemon(timeout: float = 10.0) -> None:
    """SIGKILL daedalusd (a crash: no goodbye, requests in flight) and wait
    until the kernel sees it gone."""
    pid = daemon_pid()
    if pid is None:
        raise RuntimeError("no daedalusd to kill (no pid file)")
    PIDFILE.unlink(missing_ok=True)
    os.kill(pid, signal.SIGKILL)
    state = _wait_state({"disconnected", "absent"}, timeout)
    if state not in ("disconnected", "absent"):
        raise RuntimeError(f"the kernel still sees daedalusd {state} {timeout:.0f} s after "
                           "SIGKILL")


DAEMON_WAIT = 300.0  # as guest-init.sh: the daemon's start is imports, minutes under load


def start_daemon(timeout: float = DAEMON_WAIT) -> float:
    """Start daedalusd as the testbed did and wait for the handshake; the
    seconds it took. Waits on state, not on speed: as long as the daemon
    runs, up to *timeout*; a daemon that exits fails at once, with its log."""
    script = OUT / "daemon.sh"
    if not script.exists():
        raise RuntimeError("this guest runs without daedalusd (no daemon.sh)")
    log_path = OUT / "daemon.log"
    log_start = log_path.stat().st_size if log_path.exists() else 0
    with log_path.open("ab") as log:
        start = time.monotonic()
        proc = subprocess.Popen(["sh", str(script)], stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    PIDFILE.write_text(f"{proc.pid}\n")
    deadline = start + timeout
    while (state := daemon_state()) != "ready":
        status = proc.poll()
        if status is not None:
            with log_path.open("rb") as log:
                log.seek(log_start)
                tail = log.read().decode(errors="replace").strip()[-2000:]
            raise RuntimeError(f"daedalusd exited (status {status}) before the handshake "
                               f"(state {state}); its log:\n{tail}")
        if time.monotonic() >= deadline:
            raise RuntimeError(f"daedalusd did not connect within {timeout:.0f} s (state "
                               f"{state}, still running)")
        time.sleep(0.05)
    return time.monotonic() - start


@contextmanager
def daemon_stopped() -> Iterator[None]:
    """No daemon inside the block; the one that ran before comes back after it."""
    was_running = stop_daemon()
    try:
        yield
    finally:
        if was_running and daemon_state() != "absent":
            start_daemon()


def tool(name: str) -> str:
    """The *name* command of this Python environment (next to sys.executable), so a
    test runs the checkout's own tools whatever else PATH holds; else *name*."""
    import sys

    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


KERNEL_BAD = re.compile(
    r"WARNING:|BUG[: ]|Oops|general protection|hung_task|blocked for more than|"
    r"Call Trace|RIP: |KASAN|UBSAN|refcount_t:|list_add corruption|Kernel panic|"
    r"possible (circular|recursive) locking")


class KernelLog:
    """The kernel log from its creation on (/dev/kmsg), one line per record;
    a context manager."""

    def __init__(self) -> None:
        self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self.fd, 0, os.SEEK_END)
        self.lines: list[str] = []

    def __enter__(self) -> KernelLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self) -> list[str]:
        """Every line logged since the start (read so far and new)."""
        while True:
            try:
                record = os.read(self.fd, 8192)
            except BlockingIOError:
                return self.lines
            except BrokenPipeError:  # records overwritten meanwhile; go on with the next
                continue
            text = record.decode(errors="replace")
            self.lines.append(text.partition(";")[2].split("\n")[0])

    def problems(self) -> list[str]:
        """The lines that are warnings, BUGs, oopses, hung tasks, lockdep reports."""
        return [line for line in self.read() if KERNEL_BAD.search(line)]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
