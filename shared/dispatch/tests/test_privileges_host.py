"""daedalusd's privilege drop (privileges.py, ``daedalusd --user``) on the host.

The drop cannot be undone, so each one happens in a forked child (or in a
daedalusd process) that reports what it can and cannot do afterwards: its
ids, groups, capabilities and no_new_privs as the kernel shows them in
/proc, whether setuid(0) and opening root's files fail, and whether an fd
opened before the drop (the chardev's stand-in: a root-only FIFO) still
works while its path no longer opens. Dropping needs root: those tests skip
without it.
"""

from __future__ import annotations

import asyncio
import errno
import grp
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from daedalus.dispatch import daemon, privileges
from daedalus.dispatch.loopback import recv, send, serve_against
from daedalus.proto import RESPONSE, Header, MsgType, pack_hello, parse_hello

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root "
                                                           "(the host tests run as root)")
CAPS = ("CapEff", "CapPrm", "CapAmb")


@pytest.fixture()
def nobody() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("this system has no user nobody")


@pytest.fixture()
def world() -> Iterator[Path]:
    """A directory everyone may enter and read, root's: a 0600 file in it is
    refused to others by its own mode, a 0644 one is not."""
    path = Path(tempfile.mkdtemp(prefix="daedalus-privileges-"))
    try:
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path)


def statuses(pid: int | str = "self") -> dict[str, dict[str, str]]:
    """Every thread's /proc status of process *pid*, by thread id."""
    out: dict[str, dict[str, str]] = {}
    task = Path(f"/proc/{pid}/task")
    for tid in os.listdir(task):
        try:
            text = (task / tid / "status").read_text()
        except FileNotFoundError:
            continue
        out[tid] = {k: v.strip() for k, _, v in (ln.partition(":") for ln in text.splitlines())}
    return out


def in_child(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """What *work* returns, run in a forked child (whose privileges it may
    drop); its exception as AssertionError."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never back into pytest
        try:
            os.close(read_end)
            try:
                result: dict[str, Any] = {"result": work()}
            except BaseException as exc:
                result = {"error": f"{exc!r}\n{traceback.format_exc()}"}
            with os.fdopen(write_end, "w") as out:
                json.dump(result, out)
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as report:
        text = report.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, text
    got = json.loads(text)
    if "error" in got:
        raise AssertionError(f"the child failed: {got['error']}")
    return dict(got["result"])


def assert_unprivileged(threads: dict[str, dict[str, str]], uid: int, gid: int) -> None:
    """Every thread (its /proc status): *uid* and *gid* as real, effective,
    saved and filesystem ids, no supplementary group, no_new_privs, and no
    effective, permitted or ambient capability."""
    for tid, status in threads.items():
        assert status["Uid"].split() == [str(uid)] * 4, tid
        assert status["Gid"].split() == [str(gid)] * 4, tid
        assert status["Groups"] == "", tid
        assert status["NoNewPrivs"] == "1", tid
        for cap in CAPS:
            assert int(status[cap], 16) == 0, (tid, cap, status[cap])


def open_errno(path: str | Path, flags: int = os.O_RDONLY) -> int | None:
    """None if *path* opens with *flags*, else the errno."""
    try:
        os.close(os.open(path, flags))
    except OSError as exc:
        return exc.errno
    return None


# --- drop_to in a child -----------------------------------------------------------


@needs_root
def test_drop_to_nobody_leaves_no_privilege_in_any_thread(nobody: pwd.struct_passwd,
                                                          world: Path) -> None:
    secret = world / "secret"
    secret.write_bytes(b"root's")
    secret.chmod(0o600)
    public = world / "public"
    public.write_bytes(b"everyone's")
    public.chmod(0o644)
    device = world / "device"  # the chardev's stand-in: root's, mode 0600
    os.mkfifo(device, 0o600)
    assert stat.S_IMODE(os.stat(device).st_mode) == 0o600

    def work() -> dict[str, Any]:
        fd = os.open(device, os.O_RDWR | os.O_NONBLOCK)  # as root, before the drop
        done = threading.Event()
        worker = threading.Thread(target=done.wait)  # a library's thread (OpenBLAS...)
        worker.start()
        try:
            dropped = privileges.drop_to("nobody")
            report: dict[str, Any] = {
                "dropped": [dropped.user, dropped.uid, dropped.gid, dropped.threads],
                "resuid": os.getresuid(), "resgid": os.getresgid(),
                "groups": os.getgroups(), "cwd": os.getcwd(), "home": os.environ["HOME"],
                "threads": statuses(), "worker": worker.native_id,
            }
            calls: list[tuple[str, Callable[[], None]]] = [
                ("setuid", lambda: os.setuid(0)), ("setgid", lambda: os.setgid(0)),
                ("setgroups", lambda: os.setgroups([0]))]
            for name, call in calls:
                try:
                    call()
                    report[name] = None
                except OSError as exc:
                    report[name] = exc.errno
            report["open"] = {
                "secret": open_errno(secret), "public": open_errno(public),
                "shadow": open_errno("/etc/shadow"), "passwd": open_errno("/etc/passwd"),
                "create": open_errno(world / "new", os.O_WRONLY | os.O_CREAT),
                "device": open_errno(device, os.O_RDWR | os.O_NONBLOCK),
            }
            os.write(fd, b"still mine")  # the fd opened as root still works
            report["fd"] = os.read(fd, 64).decode()
            return report
        finally:
            done.set()
            worker.join()
            os.close(fd)

    got = in_child(work)
    uid, gid = nobody.pw_uid, nobody.pw_gid
    assert got["dropped"][:3] == ["nobody", uid, gid]
    assert got["resuid"] == [uid] * 3 and got["resgid"] == [gid] * 3
    assert got["groups"] == []
    assert (got["cwd"], got["home"]) == ("/", nobody.pw_dir)
    threads = got["threads"]
    assert str(got["worker"]) in threads and len(threads) >= 2  # the worker got it too
    assert_unprivileged(threads, uid, gid)
    assert got["setuid"] == errno.EPERM
    assert got["setgid"] == errno.EPERM
    assert got["setgroups"] == errno.EPERM
    assert got["open"] == {"secret": errno.EACCES, "public": None,
                           "shadow": errno.EACCES, "passwd": None,
                           "create": errno.EACCES, "device": errno.EACCES}
    assert got["fd"] == "still mine"


@needs_root
def test_drop_to_a_group_other_than_the_primary(nobody: pwd.struct_passwd) -> None:
    other = next((g for g in grp.getgrall() if g.gr_gid not in (0, nobody.pw_gid)), None)
    if other is None:
        pytest.skip("no group other than root's and nobody's")

    def work() -> dict[str, Any]:
        privileges.drop_to("nobody", other.gr_name)
        return {"resgid": os.getresgid(), "groups": os.getgroups()}

    got = in_child(work)
    assert got == {"resgid": [other.gr_gid] * 3, "groups": []}


@needs_root
def test_a_process_that_is_not_root_cannot_become_another_user(
        nobody: pwd.struct_passwd) -> None:
    other = next((p for p in pwd.getpwall()
                  if p.pw_uid not in (0, nobody.pw_uid) and p.pw_gid != 0), None)
    if other is None:
        pytest.skip("no user other than root and nobody")

    def work() -> dict[str, Any]:
        os.setgroups([])
        os.setresgid(nobody.pw_gid, nobody.pw_gid, nobody.pw_gid)
        os.setresuid(nobody.pw_uid, nobody.pw_uid, nobody.pw_uid)
        try:
            privileges.drop_to(other.pw_name)
        except privileges.PrivilegeError as exc:
            refused = str(exc)
        else:
            refused = ""
        again = privileges.drop_to("nobody")  # already nobody: no_new_privs, verified
        return {"refused": refused, "resuid": os.getresuid(), "again": again.uid,
                "nnp": statuses()[str(os.getpid())]["NoNewPrivs"]}

    got = in_child(work)
    assert f"cannot become {other.pw_name}:" in got["refused"]
    assert "not as root" in got["refused"]
    assert got["resuid"] == [nobody.pw_uid] * 3  # unchanged by the refusal
    assert (got["again"], got["nnp"]) == (nobody.pw_uid, "1")


@pytest.mark.parametrize(("user", "group", "message"), [
    ("no-such-user-daedalus", None, "no such user: 'no-such-user-daedalus'"),
    ("nobody", "no-such-group-daedalus", "no such group: 'no-such-group-daedalus'"),
    ("root", None, "that is root"),
    ("nobody", "root", "that is root"),
])
def test_resolve_refuses_unknown_names_and_root(nobody: pwd.struct_passwd, user: str,
                                                group: str | None, message: str) -> None:
    with pytest.raises(privileges.PrivilegeError) as exc:
        privileges.resolve(user, group)
    assert message in str(exc.value)


# --- the daemon core after the drop --------------------------------------------------


class Echo:
    OPCODES: ClassVar[tuple[int, ...]] = (MsgType.PING,)
    PHASE: ClassVar[tuple[int, int]] = (8, 2)
    NAME: ClassVar[str] = "echo"

    def handle(self, header: Header, payload: bytes) -> tuple[int, bytes]:
        return 0, payload[::-1]


@needs_root
def test_the_core_serves_after_the_drop_and_opens_nothing_by_path(
        nobody: pwd.struct_passwd) -> None:
    """After the drop, HELLO and PINGs in flight in the worker threads are
    answered, and the daemon core neither imports a module nor opens a file
    (Python's audit events): what it needs was there before the drop."""
    def work() -> dict[str, Any]:
        privileges.drop_to("nobody")
        events: list[list[str]] = []

        def audit(event: str, args: tuple[Any, ...]) -> None:
            if event in ("open", "import", "os.listdir", "os.scandir"):
                events.append([event, repr(args[0])])

        async def kernel(sock: socket.socket) -> list[str]:
            await send(sock, MsgType.HELLO, 1, pack_hello(phase=82))
            header, payload = await recv(sock)
            answers = [f"{header.type:#x} {header.status} {parse_hello(payload).phase}"]
            for cookie in range(2, 10):
                await send(sock, MsgType.PING, cookie, f"ping {cookie}".encode())
            for _ in range(2, 10):
                header, payload = await recv(sock)
                answers.append(f"{header.type:#x} {header.cookie} {header.status} "
                               f"{payload.decode()}")
            return sorted(answers)

        sys.addaudithook(audit)
        answers, status = asyncio.run(serve_against(kernel, [Echo]))
        return {"answers": answers, "status": status, "events": list(events),
                "uid": os.geteuid()}

    got = in_child(work)
    assert got["uid"] == nobody.pw_uid
    assert got["status"] == 0
    pong = MsgType.PING | RESPONSE
    assert got["answers"] == sorted([f"{MsgType.HELLO | RESPONSE:#x} 0 82"] + [
        f"{pong:#x} {c} 0 {f'ping {c}'[::-1]}" for c in range(2, 10)])
    assert got["events"] == []


# --- daedalusd --user --------------------------------------------------------------


def daedalusd(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "daedalus.dispatch.daemon", *args],
                            stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@needs_root
def test_daedalusd_user_runs_as_that_user_and_keeps_the_device(
        nobody: pwd.struct_passwd, world: Path) -> None:
    device = world / "daedalus-v4l2"  # root's, 0600, like the chardev
    os.mkfifo(device, 0o600)
    proc = daedalusd("--device", str(device), "--wait", "5", "--user", "nobody")
    try:
        assert proc.stderr is not None
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if "handlers:" in line or "no handlers installed" in line:
                break  # serving
        log = "".join(lines)
        assert proc.poll() is None, log
        uid, gid = nobody.pw_uid, nobody.pw_gid
        assert (f"<6>daedalusd: running as nobody (uid {uid}, gid {gid}), no new privileges"
                in log)
        assert log.index("connected to") < log.index("running as nobody")
        threads = statuses(proc.pid)
        assert threads
        assert_unprivileged(threads, uid, gid)
        assert os.readlink(f"/proc/{proc.pid}/cwd") == "/"
        fds = [os.readlink(f"/proc/{proc.pid}/fd/{fd}")
               for fd in os.listdir(f"/proc/{proc.pid}/fd")]
        assert fds.count(str(device)) == 1  # opened once, as root, and kept
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=30)[1]
        assert proc.returncode == 0, log + rest
        assert "<6>daedalusd: SIGTERM received, shutting down" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@needs_root
@pytest.mark.parametrize(("args", "message"), [
    (["--user", "no-such-user-daedalus"], "<2>daedalusd: no such user: 'no-such-user-daedalus'"),
    (["--user", "nobody", "--group", "no-such-group-daedalus"],
     "<2>daedalusd: no such group: 'no-such-group-daedalus'"),
    (["--user", "root"], "that is root, not an unprivileged user"),
])
def test_daedalusd_refuses_a_user_it_cannot_become_before_opening_the_device(
        world: Path, args: list[str], message: str) -> None:
    device = world / "daedalus-v4l2"
    os.mkfifo(device, 0o600)  # opens at once: a daemon that went on would serve it
    proc = daedalusd("--device", str(device), "--wait", "5", *args)
    try:
        err = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err
    assert message in err
    assert "connected to" not in err and "handlers:" not in err


def test_group_without_user_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        daemon.main(["--group", "nogroup", "--device", "/nonexistent", "--wait", "0"])
    assert exc.value.code == 2
    assert "--group needs --user" in capsys.readouterr().err


@needs_root
def test_a_failed_drop_is_fatal_and_nothing_is_served(
        world: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    device = world / "daedalus-v4l2"
    os.mkfifo(device, 0o600)
    served: list[int] = []

    def drop(account: privileges.Account) -> privileges.Dropped:
        raise privileges.PrivilegeError("after becoming nobody:nogroup: setuid(0) succeeded")

    async def run(fd: int, registry: object) -> int:
        served.append(fd)
        return 0

    monkeypatch.setattr(privileges, "drop", drop)
    monkeypatch.setattr(daemon, "_run", run)
    fds_before = set(os.listdir("/proc/self/fd"))
    assert daemon.main(["--device", str(device), "--wait", "5", "--user", "nobody"]) == 1
    err = capsys.readouterr().err
    assert ("<2>daedalusd: after becoming nobody:nogroup: setuid(0) succeeded: exiting"
            in err)
    assert served == []
    assert set(os.listdir("/proc/self/fd")) <= fds_before  # the device was closed
