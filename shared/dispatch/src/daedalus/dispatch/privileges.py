"""Dropping daedalusd's privileges once it holds the device.

The module's chardev is root-only (the kernel checks CAP_SYS_ADMIN at open),
but what daedalusd does with it afterwards (read requests, parse and decode
the application's bitstream with FFmpeg, write answers, ask for dma-bufs with
ioctls on the open fd) needs no privilege at all. So daedalusd opens the
device as root and then becomes an unprivileged user before it reads any
request: FFmpeg's parse of untrusted input never runs with privileges.

``drop_to(user, group)``:

- resolves *user* (and *group*, default the user's primary group) in the
  passwd and group databases (``resolve``; do it before anything else, so
  an unknown name fails at once);
- clears the supplementary groups, then sets the real, effective and saved
  group ids and then user ids (``setgroups([])``, ``setresgid``,
  ``setresuid``: glibc applies each to every thread of the process). Leaving
  uid 0 clears the capabilities of every thread;
- sets no_new_privs (``prctl(PR_SET_NO_NEW_PRIVS)``): no execve can gain
  privileges again (setuid binaries, file capabilities). The flag is per
  thread; a thread that already runs (a library's worker, e.g. OpenBLAS's
  from ``import numpy``) gets it through a seccomp filter installed with
  SECCOMP_FILTER_FLAG_TSYNC, which the kernel copies to every thread with
  the caller's no_new_privs. That filter allows every system call: it is the
  way to the flag, not a sandbox (systemd's SystemCallFilter= is that);
- changes the working directory to ``/`` and points HOME, USER and LOGNAME
  at the new user, as su(1) and systemd's User= do;
- verifies, and raises ``PrivilegeError`` unless all hold: the real,
  effective and saved ids are the ones asked for, no supplementary groups,
  ``setuid(0)`` fails, and in /proc/self/task/*/status every thread has the
  ids, no effective, permitted or ambient capability, and NoNewPrivs 1.

A process that is not root cannot change its user: ``drop_to`` then only
succeeds if it runs as that user and group already (it still sets
no_new_privs and verifies); otherwise it says so.

After the drop the kernel marks the process not dumpable: its /proc files
are root's, no core dump is written, and no other process of the same user
may ptrace it.
"""

from __future__ import annotations

import ctypes
import grp
import logging
import os
import platform
import pwd
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final

log = logging.getLogger("daedalus.dispatch")

# <linux/prctl.h>
PR_SET_NO_NEW_PRIVS: Final = 38
PR_GET_NO_NEW_PRIVS: Final = 39
# <linux/seccomp.h>
SECCOMP_SET_MODE_FILTER: Final = 1
SECCOMP_FILTER_FLAG_TSYNC: Final = 1
SECCOMP_RET_ALLOW: Final = 0x7FFF0000
# <linux/bpf_common.h>: BPF_RET | BPF_K
BPF_RET_K: Final = 0x06
# __NR_seccomp per architecture (platform.machine()); the architectures
# daedalus-v4l2 builds for and a few more.
SYS_SECCOMP: Final = {
    "x86_64": 317, "i386": 354, "i686": 354,
    "aarch64": 277, "arm64": 277, "riscv64": 277,
    "armv6l": 383, "armv7l": 383, "armv8l": 383,
    "ppc64le": 358, "ppc64": 358, "s390x": 348,
}

TASKS: Final = Path("/proc/self/task")

_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                   ctypes.c_ulong]
_prctl.restype = ctypes.c_int
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


class PrivilegeError(Exception):
    """The privileges could not be dropped (or were not dropped completely):
    daedalusd must not go on."""


@dataclass(frozen=True)
class Account:
    """The user and group to become (``resolve``)."""

    user: str
    group: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True)
class Dropped:
    """What ``drop_to`` made of the process: user *user* (uid *uid*), group
    *group* (gid *gid*), no supplementary groups, no capabilities,
    no_new_privs in each of *threads* threads."""

    user: str
    group: str
    uid: int
    gid: int
    threads: int

    def describe(self) -> str:
        return f"{self.user} (uid {self.uid}, gid {self.gid}), no new privileges"


def resolve(user: str, group: str | None = None) -> Account:
    """*user* and *group* (default: the user's primary group) from the passwd
    and group databases; PrivilegeError for an unknown name or for root."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(f"no such user: {user!r} (create a system user for "
                             "daedalusd, e.g. useradd --system --no-create-home "
                             "--shell /usr/sbin/nologin daedalusd)") from None
    if group is None:
        gid = entry.pw_gid
        try:
            group = grp.getgrgid(gid).gr_name
        except KeyError:
            group = str(gid)
    else:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise PrivilegeError(f"no such group: {group!r}") from None
    if entry.pw_uid == 0 or gid == 0:
        raise PrivilegeError(f"{user}:{group} is uid {entry.pw_uid}, gid {gid}: that is root, "
                             "not an unprivileged user")
    return Account(user=user, group=group, uid=entry.pw_uid, gid=gid, home=entry.pw_dir)


def drop_to(user: str, group: str | None = None) -> Dropped:
    """Become *user* and *group* for good (see the module doc)."""
    return drop(resolve(user, group))


def check(account: Account) -> None:
    """PrivilegeError if this process cannot become *account*: it is not
    root, and not that user and group already."""
    uid, gid = account.uid, account.gid
    if os.geteuid() == 0:
        return
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise PrivilegeError(
            f"cannot become {account.user}:{account.group}: daedalusd runs as uid "
            f"{os.geteuid()} (gid {os.getegid()}), not as root, and only root can change "
            "its user (start it as root, or leave --user out)")


def drop(account: Account) -> Dropped:
    """``drop_to`` with the names resolved already."""
    uid, gid = account.uid, account.gid
    switched = os.geteuid() == 0
    check(account)
    if switched:
        try:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
        except OSError as exc:
            raise PrivilegeError(f"cannot become {account.user}:{account.group}: "
                                 f"{exc.strerror}") from None
    _no_new_privs()
    os.chdir("/")
    os.environ.update(HOME=account.home, USER=account.user, LOGNAME=account.user)
    threads = verify(account, switched=switched)
    return Dropped(account.user, account.group, uid, gid, threads)


def _no_new_privs() -> None:
    """no_new_privs for this thread, then for every other one (see the module doc)."""
    if _prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        code = ctypes.get_errno()
        raise PrivilegeError(f"prctl(PR_SET_NO_NEW_PRIVS) failed: {os.strerror(code)}")
    if all(status.get("NoNewPrivs") == "1" for status in _threads().values()):
        return
    machine = platform.machine()
    number = SYS_SECCOMP.get(machine)
    if number is None:
        raise PrivilegeError(f"the process has other threads and no_new_privs reaches them "
                             f"only through seccomp, whose system call number on {machine} "
                             "daedalusd does not know")
    # struct sock_filter { __u16 code; __u8 jt; __u8 jf; __u32 k; }: one
    # instruction, "return ALLOW". struct sock_fprog { unsigned short len;
    # struct sock_filter *filter; }.
    program = ctypes.create_string_buffer(struct.pack("=HBBI", BPF_RET_K, 0, 0,
                                                      SECCOMP_RET_ALLOW))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(1, ctypes.addressof(program))
    result = _syscall(ctypes.c_long(number), ctypes.c_ulong(SECCOMP_SET_MODE_FILTER),
                      ctypes.c_ulong(SECCOMP_FILTER_FLAG_TSYNC), ctypes.byref(fprog))
    if result != 0:
        code = ctypes.get_errno()
        detail = (f"thread {result} cannot be synchronised" if result > 0
                  else os.strerror(code))
        raise PrivilegeError("setting no_new_privs in the process's other threads (seccomp "
                             f"with SECCOMP_FILTER_FLAG_TSYNC) failed: {detail}")


def _status(path: Path) -> dict[str, str] | None:
    """A /proc status file as {field: value}; None if the thread is gone."""
    try:
        text = path.read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def _threads() -> dict[str, dict[str, str]]:
    """Every thread's /proc status, by thread id."""
    found = {}
    for tid in os.listdir(TASKS):
        status = _status(TASKS / tid / "status")
        if status is not None:
            found[tid] = status
    return found


def verify(account: Account, *, switched: bool = True) -> int:
    """PrivilegeError unless the process is *account*'s user and group for
    good, without capabilities, with no_new_privs, in every thread; the
    number of threads. No supplementary groups if it *switched* from root;
    else (a service manager started it as that user) at most the group."""
    uid, gid = account.uid, account.gid
    what = f"after becoming {account.user}:{account.group}"
    problems = []
    if os.getresuid() != (uid, uid, uid):
        problems.append(f"uids (real, effective, saved) are {os.getresuid()}")
    if os.getresgid() != (gid, gid, gid):
        problems.append(f"gids (real, effective, saved) are {os.getresgid()}")
    if os.getgroups() not in ([], [gid]) or (switched and os.getgroups()):
        problems.append(f"supplementary groups are {os.getgroups()}")
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        problems.append("setuid(0) succeeded")
    if _prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1:
        problems.append("no_new_privs is not set")
    threads = _threads()
    ids = {"Uid": f"{uid}\t{uid}\t{uid}\t{uid}", "Gid": f"{gid}\t{gid}\t{gid}\t{gid}"}
    for tid, status in sorted(threads.items()):
        for key, want in ids.items():
            if status.get(key, "").split() != want.split():
                problems.append(f"thread {tid}: {key} {status.get(key)!r}")
        for key in ("CapEff", "CapPrm", "CapAmb"):
            value = status.get(key)
            if value is not None and int(value, 16) != 0:
                problems.append(f"thread {tid}: {key} {value}")
        if status.get("NoNewPrivs") != "1":
            problems.append(f"thread {tid}: NoNewPrivs {status.get('NoNewPrivs')!r}")
    if problems:
        raise PrivilegeError(f"{what}: " + "; ".join(problems))
    return len(threads)
