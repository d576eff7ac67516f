"""Install daedalus-v4l2 as a user would, then boot it with systemd (issue #16).

On the host (the testbed's root filesystem, which the guest boots from):
shared/install/install.sh --no-start --kernel <6.12 guest kernel> builds and
installs both DKMS packages against Debian's headers of the guest kernel,
the daemon's environment under PREFIX, the unit, the udev rule and the
sysusers/modprobe/modules-load files. An ordinary user in group video is
created if missing. Then one guest boots with systemd as PID 1 (the testbed's
``init="systemd"``): nothing of the harness is loaded or started, so the
module must come up from modules-load.d, the nodes get their group from the
udev rule and daedalusd is started by udev's SYSTEMD_WANTS. boot_check.py
reports, and this test asserts:

- the daemon became ready with no help, runs as the system user, with no
  capability, no new privileges and a seccomp filter; in its mount namespace
  with its credentials it cannot reopen the bridge or read /etc/shadow, and
  sees no /home, no /dev/video0 and no other process's /proc entry; it has
  a network namespace of its own;
- `systemd-analyze security` of the unit as the booted system loaded it
  rates it "OK", exposure <= 2.0;
- the two video nodes and the media node are 0660 group video, the bridge 0600 root;
- `daedalus-v4l2 doctor` run as the ordinary user passes every check
  (exit 0), including a one-frame decode through the node;
- GStreamer, as that user, decodes a corpus clip through the node byte for
  byte as Debian's ffmpeg does;
- doctor fails (exit 1) with the daemon stopped, with the module and helper
  unloaded, and with the helper (and so the module) not installed, naming
  the fix.

The install stays on the host (it is the testbed's machine); rerunning
replaces it. Marked "boots": it boots its own guest.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import subprocess
import sys

import pytest

from daedalus.testbed import kernels
from daedalus.testbed.guest import GuestConfig, run_guest
from daedalus.testbed.paths import repo_root

pytestmark = pytest.mark.boots

PREFIX = "/opt/daedalus-v4l2"
USER = "daedalus-demo"       # the ordinary user of the proof
DAEMON_USER = "daedalusd"    # sysusers.d's system user
CLIP = "h264-high-320x240"
# services of the testbed host that fail on the guest's read-only root
MASK = ("postgresql.service", "postgresql@15-main.service")


def ensure_user() -> None:
    try:
        pw = pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", "--groups",
                        "video", USER], check=True)
        return
    groups = subprocess.run(["id", "-nG", pw.pw_name], capture_output=True, text=True,
                            check=True).stdout.split()
    assert "video" in groups, f"{USER} exists but is not in group video"


def test_installed_system_boots_and_decodes_for_an_ordinary_user(phase: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("installing needs root")
    kernel = kernels.resolve("6.12")
    if not kernel.vmlinuz.exists():
        pytest.skip("kernel 6.12 not installed (daedalus-v4l2 setup)")
    install = repo_root() / "shared" / "install" / "install.sh"
    proc = subprocess.run([str(install), "--no-start", "--prefix", PREFIX,
                           "--kernel", kernel.release], capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, f"install.sh failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    ensure_user()
    argv = [sys.executable, str(repo_root() / "shared/install/tests/boot_check.py"),
            "--user", USER, "--prefix", PREFIX, "--clip", CLIP]
    result = run_guest(GuestConfig(kernel=kernel, phase=phase, init="systemd",
                                   mask_units=MASK, timeout=1500), argv)
    print(result.stdout)
    assert result.status == 0, "\n".join([*result.problems, result.stderr[-3000:],
                                          result.daemon_log[-6000:]])
    report = json.loads(result.stdout)
    print(f"daemon ready at {report['ready_after']} s of uptime; boot {result.boot_seconds} s")

    assert report["ready_after"] is not None, "daedalusd never became ready:\n" + \
        result.daemon_log[-6000:]
    assert report["service"]["ActiveState"] == "active"
    daemon = report["daemon"]
    assert daemon["user"] == DAEMON_USER
    assert len(set(daemon["Uid"].split())) == 1 and len(set(daemon["Gid"].split())) == 1
    assert daemon["Groups"] == ""
    assert daemon["NoNewPrivs"] == "1"
    assert daemon["Seccomp"] == "2"
    assert int(daemon["CapEff"], 16) == 0 and int(daemon["CapPrm"], 16) == 0
    probes = dict(report["probes"])
    # permissions alone refuse the first two; the unit's sandbox the others
    # (ProtectHome, PrivateDevices, ProtectProc=invisible, PrivateNetwork)
    for what in ("open /dev/daedalus-v4l2", "read /etc/shadow", "list /home",
                 "stat /dev/video0", "stat /proc/1/status"):
        assert probes[what] != "ok", f"the daemon's user may {what}"
    assert probes["read /etc/hostname"] == "ok", probes  # the probe itself works
    assert probes["stat /proc/self/status"] == "ok", probes
    assert report["own_netns"], "daedalusd shares the host's network namespace"

    code, text = report["security"]
    exposure = re.search(r"Overall exposure level for daedalusd.service: (\d+\.\d+) (\w+)", text)
    assert exposure, text[-2000:]
    print(f"systemd-analyze security daedalusd.service: {exposure[1]} {exposure[2]}")
    assert float(exposure[1]) <= 2.0 and exposure[2] == "OK", text[-3000:]

    modes = report["nodes"]
    assert modes["/dev/daedalus-v4l2"] == "0600 root"
    # both of the module's video nodes (the stateful one and, from phase 8.9, the stateless
    # one) are the group video's; the guest has no other video device
    videos = {k: v for k, v in modes.items() if k.startswith("/dev/video")}
    assert len(videos) == 2 and set(videos.values()) == {"0660 video"}, modes
    assert any(k.startswith("/dev/media") and v == "0660 video" for k, v in modes.items()), modes

    code, text = report["doctor"]
    assert code == 0 and "✗" not in text, text
    assert "one-frame decode" in text and "byte-exact" in text, text
    assert "✓ stateless video node" in text, text  # the installed module is phase 8.9's

    gst = report["gstreamer"]
    assert gst["status"] == 0, gst["log"]
    assert gst["frames"] == gst["expected"] > 0 and gst["equal"], gst

    code, text = report["doctor_stopped"]
    assert code == 1 and "✗ daedalusd" in text and "systemctl start daedalusd" in text, text
    assert report["unload"][0] == 0, report["unload"]
    code, text = report["doctor_unloaded"]
    assert code == 1 and "✗ daedalus_v4l2 not loaded" in text and "modprobe" in text, text
    assert report["no_helper"][0] == 0, report["no_helper"]
    code, text = report["doctor_no_helper"]
    assert code == 1 and "✗ m2m helper" in text and "linux-source" in text, text
