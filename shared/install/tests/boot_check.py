"""Inside a systemd guest booted from an installed machine (test_install_boots):
what a user of the installed decoder sees, as one JSON report on stdout.

Run as root by the testbed's runtime unit once systemd has started the boot's
jobs. Nothing here loads a module or starts the daemon: udev, systemd-modules-
load and daedalusd.service must have done it. The report:

- ``ready_after``: seconds of uptime when /sys/class/misc/daedalus-v4l2/daemon
  read "ready" (None if it never did within WAIT seconds);
- ``service``: systemctl's view of daedalusd.service;
- ``daemon``: its main process's /proc status lines (Uid, Gid, Groups,
  NoNewPrivs, Seccomp, CapEff) and the user name of its uid;
- ``probes``: what that process may do, tried in its mount namespace with
  its credentials (nsenter --setuid/--setgid): each a (what, errno name or
  "ok") pair; ``own_netns``: whether its network namespace is not PID 1's;
- ``security``: `systemd-analyze security` of the unit as loaded;
- ``nodes``: mode and group of the video, media and bridge nodes;
- ``doctor``: `daedalus-v4l2 doctor` of the installed environment, run as
  the ordinary USER (exit status, output);
- ``gstreamer``: gst-launch-1.0 as USER decoding CLIP through the node
  (exit status, log tail, and whether its frames equal Debian's ffmpeg's);
- ``doctor_stopped`` / ``doctor_unloaded`` / ``doctor_no_helper``: doctor
  again after `systemctl stop daedalusd`, after the module and the m2m
  helper are unloaded, and with DKMS's modules gone from the module tree
  (the broken set-ups the docs show).
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from daedalus.m2m import clients

SYSFS = Path("/sys/class/misc/daedalus-v4l2")
WAIT = 300.0  # state-based: the daemon's start under a loaded TCG host can take minutes

PROBE = r"""
import errno, json, os
def attempt(what, fn):
    try:
        fn()
        return [what, "ok"]
    except OSError as exc:
        return [what, errno.errorcode.get(exc.errno, str(exc.errno))]
def opener(path, flags):
    return lambda: os.close(os.open(path, flags))
def lister(path):
    return lambda: os.listdir(path)
out = [
    attempt("open /dev/daedalus-v4l2", opener("/dev/daedalus-v4l2", os.O_RDWR)),
    attempt("read /etc/shadow", opener("/etc/shadow", os.O_RDONLY)),
    attempt("list /home", lister("/home")),
    attempt("stat /dev/video0", lambda: os.stat("/dev/video0")),
    attempt("stat /proc/1/status", lambda: os.stat("/proc/1/status")),
    attempt("read /etc/hostname", opener("/etc/hostname", os.O_RDONLY)),
    attempt("stat /proc/self/status", lambda: os.stat("/proc/self/status")),
]
print(json.dumps(out))
"""


def sh(argv: list[str], timeout: float = 600) -> tuple[int, str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def wait_ready() -> float | None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if read(SYSFS / "daemon") == "ready":
            return uptime()
        time.sleep(0.5)
    return None


def wait_not_ready(limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and read(SYSFS / "daemon") == "ready":
        time.sleep(0.2)


def service() -> dict[str, str]:
    _, text = sh(["systemctl", "show", "daedalusd.service", "-p",
                  "ActiveState,SubState,MainPID,NRestarts,ExecMainStatus"])
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def daemon_status(pid: int) -> dict[str, str]:
    keys = ("Uid", "Gid", "Groups", "NoNewPrivs", "Seccomp", "CapEff", "CapPrm", "CapBnd")
    status: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in keys:
            status[key] = " ".join(value.split())
    uid = int(status["Uid"].split()[0])
    status["user"] = pwd.getpwuid(uid).pw_name
    return status


def probes(pid: int, uid: int, gid: int) -> list[list[str]]:
    code, text = sh(["nsenter", f"--target={pid}", "--mount", f"--setuid={uid}",
                     f"--setgid={gid}", "/usr/bin/python3", "-I", "-c", PROBE])
    if code != 0:
        return [["nsenter", f"failed ({code}): {text.strip()[-300:]}"]]
    return [list(p) for p in json.loads(text)]


def nodes() -> dict[str, str]:
    found: dict[str, str] = {}
    import grp

    paths = [Path("/dev/daedalus-v4l2"), *sorted(Path("/dev").glob("video*")),
             *sorted(Path("/dev").glob("media*"))]
    for path in paths:
        st = path.stat()
        found[str(path)] = f"{st.st_mode & 0o777:04o} {grp.getgrgid(st.st_gid).gr_name}"
    return found


def as_user(user: str, argv: list[str], home: Path, timeout: float = 600) -> tuple[int, str]:
    pw = pwd.getpwnam(user)
    home.mkdir(parents=True, exist_ok=True)
    os.chown(home, pw.pw_uid, pw.pw_gid)
    return sh(["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups",
               "env", "-i", f"HOME={home}", "PATH=/usr/local/bin:/usr/bin:/bin",
               f"XDG_CACHE_HOME={home}/.cache", *argv], timeout)


def hide_dkms_modules() -> tuple[int, str]:
    """The machine as DKMS leaves it when the helper cannot be built (no
    linux-source package): neither the helper nor our module installed. The
    root is read-only here, so the kernel's module tree gets a tmpfs overlay
    without DKMS's modules, and depmod runs on it."""
    release = os.uname().release
    moddir = Path("/lib/modules") / release
    layer = Path("/run/daedalus-overlay")
    (layer / "upper").mkdir(parents=True, exist_ok=True)
    (layer / "work").mkdir(exist_ok=True)
    code, text = sh(["mount", "-t", "overlay", "overlay", "-o",
                     f"lowerdir={moddir},upperdir={layer}/upper,workdir={layer}/work",
                     str(moddir)])
    if code != 0:
        return code, text
    for module in sorted((moddir / "updates" / "dkms").iterdir()):
        module.unlink()
    return sh(["depmod", release])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--user", required=True, help="the ordinary user (group video)")
    parser.add_argument("--prefix", required=True, help="the installed environment")
    parser.add_argument("--clip", required=True, help="a corpus clip for GStreamer")
    args = parser.parse_args()
    report: dict[str, Any] = {"ready_after": wait_ready()}
    report["service"] = service()
    pid = int(report["service"].get("MainPID", "0"))
    if pid:
        report["daemon"] = daemon_status(pid)
        ids = report["daemon"]
        report["probes"] = probes(pid, int(ids["Uid"].split()[0]), int(ids["Gid"].split()[0]))
        report["own_netns"] = os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/1/ns/net")
    report["nodes"] = nodes()
    report["security"] = sh(["systemd-analyze", "security", "--no-pager", "daedalusd.service"])
    doctor = [f"{args.prefix}/bin/daedalus-v4l2", "doctor"]
    home = Path("/tmp") / args.user
    report["doctor"] = as_user(args.user, doctor, home)
    work = home / "gst"
    work.mkdir(parents=True, exist_ok=True)
    os.chown(work, pwd.getpwnam(args.user).pw_uid, -1)
    out = work / "out.nv12"
    argv = clients.gstreamer_argv(args.clip, out, Path("/tmp"))
    code, log = as_user(args.user, argv, home)
    want = clients.reference_frames(args.clip, "NV12")
    got = clients.gst_frames(out.read_bytes(), clients.frame_sizes(args.clip)) \
        if out.exists() else []
    report["gstreamer"] = {"status": code, "log": log[-2000:], "frames": len(got),
                           "expected": len(want), "equal": got == want}
    sh(["systemctl", "stop", "daedalusd.service"])
    wait_not_ready()
    report["doctor_stopped"] = as_user(args.user, doctor, home)
    report["unload"] = sh(["modprobe", "-r", "daedalus_v4l2", "v4l2_mem2mem"])
    report["doctor_unloaded"] = as_user(args.user, doctor, home)
    report["no_helper"] = hide_dkms_modules()
    report["doctor_no_helper"] = as_user(args.user, doctor, home)
    json.dump(report, sys.stdout, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
