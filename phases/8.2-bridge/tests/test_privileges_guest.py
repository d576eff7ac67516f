"""Phase 8.2 in the guest: ``daedalusd --user nobody`` on the real chardev.

The chardev is root's (mode 0600, CAP_SYS_ADMIN at open). daedalusd opens it
as root, then becomes nobody before it reads the kernel's HELLO, and serves
from then on without any privilege: the kernel's view of the process
(/proc/PID/task/*/status) shows nobody's ids in every thread, no
capabilities and no_new_privs, and PINGs through the debugfs ping file still
come back byte for byte. The testbed's own daemon is stopped for the test and
comes back after it (``daemon_stopped``).
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import time
from pathlib import Path

import pytest

from daedalus.bridge.fake import CHARDEV, DebugfsCall
from daedalus.testbed.guestctl import DAEMON_WAIT, daemon_state, daemon_stopped, tool

pytestmark = [pytest.mark.guest, pytest.mark.usefixtures("kernel_log")]

CAPS = ("CapEff", "CapPrm", "CapAmb")


def thread_statuses(pid: int) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    task = Path(f"/proc/{pid}/task")
    for tid in os.listdir(task):
        try:
            text = (task / tid / "status").read_text()
        except FileNotFoundError:
            continue
        out[tid] = {k: v.strip() for k, _, v in (ln.partition(":") for ln in text.splitlines())}
    return out


def wait_ready(proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until the kernel reports the handshake done; fails with the daemon's
    log if it exits first or does not connect within DAEMON_WAIT s."""
    deadline = time.monotonic() + DAEMON_WAIT
    while (state := daemon_state()) != "ready":
        status = proc.poll()
        if status is not None:
            pytest.fail(f"daedalusd --user nobody exited (status {status}) before the "
                        f"handshake (state {state}):\n{log.read_text(errors='replace')}")
        if time.monotonic() >= deadline:
            pytest.fail(f"daedalusd --user nobody did not connect within {DAEMON_WAIT:.0f} s "
                        f"(state {state}):\n{log.read_text(errors='replace')}")
        time.sleep(0.05)


def test_daedalusd_user_nobody_serves_the_chardev_without_privileges(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    uid, gid = nobody.pw_uid, nobody.pw_gid
    log = tmp_path / "daemon.log"
    with daemon_stopped():
        assert daemon_state() == "disconnected"
        with log.open("wb") as out:
            proc = subprocess.Popen([tool("daedalusd"), "--user", "nobody", "--verbose"],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        try:
            wait_ready(proc, log)
            threads = thread_statuses(proc.pid)
            assert threads
            for tid, fields in threads.items():
                assert fields["Uid"].split() == [str(uid)] * 4, tid
                assert fields["Gid"].split() == [str(gid)] * 4, tid
                assert fields["Groups"] == "", tid
                assert fields["NoNewPrivs"] == "1", tid
                for cap in CAPS:
                    assert int(fields[cap], 16) == 0, (tid, cap, fields[cap])
            fds = [os.readlink(f"/proc/{proc.pid}/fd/{fd}")
                   for fd in os.listdir(f"/proc/{proc.pid}/fd")]
            assert fds.count(CHARDEV) == 1  # opened once, as root, kept across the drop

            for size in (1, 4096, 65536):
                payload = os.urandom(size)
                pinger = DebugfsCall("ping", payload, len(payload))
                pinger.start()
                pinger.join(30)
                assert pinger.error is None, pinger.error
                assert pinger.answer == payload
            ping = subprocess.run([tool("daedalus-v4l2"), "ping", "--count", "100"],
                                  capture_output=True, text=True, timeout=300)
            assert ping.returncode == 0, ping.stdout + ping.stderr
            assert proc.poll() is None

            text = log.read_text(errors="replace")
            dropped = f"running as nobody (uid {uid}, gid {gid}), no new privileges"
            assert dropped in text, text
            # the drop came before the first request read (the kernel's HELLO)
            assert text.index(dropped) < text.index("kernel speaks protocol"), text
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                status = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise
        assert status == 0, log.read_text(errors="replace")
        assert daemon_state() == "disconnected"
    assert daemon_state() == "ready"  # the testbed's daemon is back
