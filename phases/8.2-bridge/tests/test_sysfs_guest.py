"""Phase 8.2 in the guest: the bridge's status in sysfs, readable by any user.

/sys/class/misc/daedalus-v4l2/ has three world-readable files: ``daemon``
(disconnected, connected or ready), ``protocol`` (the module's
DAEDALUS_PROTO_VERSION) and ``phase`` ("8.N"). They are what an ordinary
user's ``daedalus-v4l2 doctor`` reads, while the chardev itself stays
root-only. The unprivileged reads run in a separate process under
``setpriv`` as nobody (uid and gid 65534, no supplementary groups), with the
system's Python and the standard library only (the project's environment
may live where nobody cannot read). The expected protocol version comes from
the protocol header through cffi, the phase from ``--phase``.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from daedalus.bridge.fake import CHARDEV, chardev, handshake
from daedalus.proto import lib
from daedalus.testbed.guestctl import daemon_stopped

pytestmark = [pytest.mark.guest, pytest.mark.usefixtures("kernel_log")]

SYSFS = Path("/sys/class/misc/daedalus-v4l2")
FILES = ("daemon", "protocol", "phase")
NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"

# Run as nobody: the three files' contents (or the errno of reading them), the
# uid it ran as, and the errno of opening the chardev (None if it opened).
SNIPPET = """
import json, os, sys
sysfs, chardev, names = sys.argv[1], sys.argv[2], sys.argv[3:]
out = {"uid": os.getuid(), "euid": os.geteuid(), "files": {}, "open_errno": None}
for name in names:
    try:
        with open(os.path.join(sysfs, name)) as f:
            out["files"][name] = f.read()
    except OSError as exc:
        out["files"][name] = exc.errno
try:
    os.close(os.open(chardev, os.O_RDWR))
except OSError as exc:
    out["open_errno"] = exc.errno
print(json.dumps(out))
"""


def read_as_root() -> dict[str, str]:
    return {name: (SYSFS / name).read_text() for name in FILES}


def read_as_nobody() -> dict[str, object]:
    proc = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         SYSTEM_PYTHON, "-I", "-c", SNIPPET, str(SYSFS), CHARDEV, *FILES],
        capture_output=True, text=True, cwd="/", timeout=60)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout)
    assert result["uid"] == NOBODY and result["euid"] == NOBODY
    return result


def expected(state: str, phase: str) -> dict[str, str]:
    return {"daemon": f"{state}\n", "protocol": f"{lib.DAEDALUS_PROTO_VERSION}\n",
            "phase": f"{phase}\n"}


def test_files_are_world_readable_and_read_only() -> None:
    for name in FILES:
        st = os.stat(SYSFS / name)
        assert stat.S_ISREG(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o444, f"{name}: {oct(st.st_mode)}"
        with pytest.raises(OSError) as exc:
            (SYSFS / name).write_text("ready\n")
        assert exc.value.errno == errno.EACCES  # even root: sysfs refuses a file without store


def test_root_reads_ready_protocol_and_phase(phase: str) -> None:
    assert read_as_root() == expected("ready", phase)


def test_unprivileged_user_reads_status_but_cannot_open_chardev(phase: str) -> None:
    st = os.stat(CHARDEV)
    assert stat.S_ISCHR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == 0
    result = read_as_nobody()
    assert result["files"] == expected("ready", phase)
    assert result["open_errno"] == errno.EACCES


def test_daemon_state_follows_the_chardev(phase: str) -> None:
    """Stopped: disconnected; opened by a (fake) daemon: connected until its
    HELLO answer, then ready; closed: disconnected again. The harness's
    daedalusd comes back after the block."""
    with daemon_stopped():
        assert read_as_root() == expected("disconnected", phase)
        assert read_as_nobody()["files"] == expected("disconnected", phase)
        with chardev() as fd:
            assert read_as_root()["daemon"] == "connected\n"
            handshake(fd)
            assert read_as_root()["daemon"] == "ready\n"
            assert read_as_nobody()["files"] == expected("ready", phase)
        assert read_as_root()["daemon"] == "disconnected\n"
    assert read_as_root() == expected("ready", phase)
