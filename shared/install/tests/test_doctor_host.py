"""``daedalus-v4l2 doctor`` against fake trees (``--root``): the lines, their order, the fixes
and the exit status for a healthy set-up up to the node and for each thing that can be wrong.

The tree is what a machine shows: /lib/modules/RELEASE (build/Makefile,
modules.dep), /sys/module, the bridge's /sys/class/misc/daedalus-v4l2 files,
a video node's sysfs entry with its media device, and /dev. The bridge device
is a real character device (mknod, so these tests need root, as the suite
does); the video and media nodes are plain files, so the format check, which
opens the node for QUERYCAP, fails with ENOTTY and the decode is skipped: those
two run for real only in the guest. The expected phase is the checkout's newest
phase directory and the protocol version comes from the header through cffi.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

from daedalus.proto import lib
from daedalus.testbed.cli import main
from daedalus.testbed.paths import latest_phase

RELEASE = os.uname().release
OK, FAIL, SKIP = "✓", "✗", "\N{EN DASH}"


@dataclass
class Tree:
    root: Path
    headers: bool = True
    helper: str = "loaded"       # loaded | installed | missing
    module: str = "loaded"       # loaded | installed | missing
    daemon: str = "ready"
    protocol: int = lib.DAEDALUS_PROTO_VERSION
    phase: str = ""
    chardev_mode: int = 0o600
    stateless: bool = False      # phase 8.9's second node, on the same media device

    def write(self, rel: str, text: str = "") -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def build(self) -> Path:
        moddir = f"lib/modules/{RELEASE}"
        if self.headers:
            self.write(f"{moddir}/build/Makefile", "# the kernel's Makefile\n")
        dep = ["kernel/drivers/media/v4l2-core/videobuf2-common.ko.xz:"]
        if self.helper != "missing":
            dep.append("updates/dkms/v4l2-mem2mem.ko.xz: kernel/drivers/media/mc/mc.ko.xz")
        if self.module != "missing":
            dep.append("updates/dkms/daedalus_v4l2.ko.xz: updates/dkms/v4l2-mem2mem.ko.xz")
        self.write(f"{moddir}/modules.dep", "\n".join(dep) + "\n")
        self.write(f"{moddir}/modules.builtin", "kernel/drivers/char/mem.ko\n")
        if self.helper == "loaded":
            self.write("sys/module/v4l2_mem2mem/refcnt", "1\n")
        if self.module == "loaded":
            self.write("sys/module/daedalus_v4l2/refcnt", "1\n")
            misc = "sys/class/misc/daedalus-v4l2"
            self.write(f"{misc}/daemon", f"{self.daemon}\n")
            self.write(f"{misc}/protocol", f"{self.protocol}\n")
            self.write(f"{misc}/phase", f"{self.phase or latest_phase()}\n")
            self.write("sys/class/video4linux/video7/name", "daedalus-v4l2\n")
            self.write("sys/class/video4linux/video7/device/media3/model", "daedalus-v4l2\n")
            self.write("sys/class/video4linux/video1/name", "uvcvideo\n")  # not ours
            if self.stateless:
                self.write("sys/class/video4linux/video8/name", "daedalus-v4l2-stateless\n")
                self.write("sys/class/video4linux/video8/device/media3/model", "daedalus-v4l2\n")
            (self.root / "dev").mkdir(exist_ok=True)
            for node in ("video7", "media3", "video1") + (("video8",) if self.stateless else ()):
                self.write(f"dev/{node}").chmod(0o600)
            chardev = self.root / "dev/daedalus-v4l2"
            try:
                os.mknod(chardev, stat.S_IFCHR | 0o600, os.makedev(10, 123))
            except PermissionError:
                pytest.skip("mknod of the fake /dev/daedalus-v4l2 needs root")
            os.chown(chardev, 0, 0)
            chardev.chmod(self.chardev_mode)
        return self.root


def doctor(tree: Tree, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    status = main(["doctor", "--root", str(tree.build())])
    out = capsys.readouterr().out
    return status, out.splitlines()


def marks(lines: list[str]) -> str:
    return "".join(line[0] for line in lines)


def healthy_lines(root: Path) -> list[str]:
    """Up to the node: everything but the formats (a plain file is no V4L2
    device) and the decode (skipped)."""
    return [
        f"{OK} kernel headers for {RELEASE}",
        f"{OK} m2m helper v4l2_mem2mem loaded",
        f"{OK} daedalus_v4l2 loaded, phase {latest_phase()} (Python: phase {latest_phase()})",
        f"{OK} {root}/dev/daedalus-v4l2: root only (0600, uid 0, group root)",
        f"{OK} video node {root}/dev/video7: readable and writable by you (0600, uid 0, "
        "group root)",
        f"{OK} media node {root}/dev/media3: readable and writable by you (0600, uid 0, "
        "group root)",
        f"{OK} daedalusd connected (ready)",
        f"{OK} protocol v{lib.DAEDALUS_PROTO_VERSION} (module and Python)",
        f"{FAIL} {root}/dev/video7: not a V4L2 device (Inappropriate ioctl for device) — fix: "
        "sudo systemctl stop daedalusd && sudo modprobe -r daedalus_v4l2 && "
        "sudo dkms autoinstall && sudo modprobe daedalus_v4l2 && sudo systemctl start daedalusd",
        f"{SKIP} one-frame decode of doctor-vp9-128x96.ivf — skipped: no node offers VP9 to "
        "NV12",
    ]


def test_healthy_up_to_the_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, lines = doctor(Tree(tmp_path), capsys)
    assert lines == healthy_lines(tmp_path)
    assert status == 1  # the format check failed: a plain file is no V4L2 node


def test_the_stateless_node_is_checked_after_the_stateful_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, lines = doctor(Tree(tmp_path, stateless=True), capsys)
    want = healthy_lines(tmp_path)
    media = want.index(f"{OK} media node {tmp_path}/dev/media3: readable and writable by you "
                       "(0600, uid 0, group root)")
    want.insert(media + 1, f"{OK} stateless video node {tmp_path}/dev/video8: readable and "
                "writable by you (0600, uid 0, group root)")
    assert lines == want
    # no second media line: the stateless node's media device is the stateful node's
    assert sum("media node" in line for line in lines) == 1


def test_headers_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, lines = doctor(Tree(tmp_path, headers=False), capsys)
    assert lines[0] == (f"{FAIL} no kernel headers for {RELEASE} — fix: "
                        "sudo apt-get install linux-headers-$(uname -r)")
    assert lines[1:] == healthy_lines(tmp_path)[1:]
    assert status == 1


@pytest.mark.parametrize("helper", ["missing", "installed"])
def test_helper(helper: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, lines = doctor(Tree(tmp_path, helper=helper), capsys)
    if helper == "missing":
        series = ".".join(RELEASE.split(".")[:2])
        assert lines[1] == (f"{FAIL} m2m helper v4l2_mem2mem not installed for {RELEASE} — "
                            f"fix: sudo apt-get install linux-source-{series} && "
                            "sudo dkms autoinstall")
    else:  # in modules.dep: modprobe daedalus_v4l2 loads it
        assert lines[1] == f"{OK} m2m helper v4l2_mem2mem installed (not loaded yet)"
    assert lines[0] == healthy_lines(tmp_path)[0]
    assert lines[2:] == healthy_lines(tmp_path)[2:]
    assert status == 1


@pytest.mark.parametrize("module", ["installed", "missing"])
def test_module_not_loaded(module: str, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    status, lines = doctor(Tree(tmp_path, module=module), capsys)
    fix = "sudo modprobe daedalus_v4l2"
    if module == "missing":  # not even built for this kernel
        fix = "sudo dkms autoinstall && " + fix
    assert lines == [
        *healthy_lines(tmp_path)[:2],
        f"{FAIL} daedalus_v4l2 not loaded — fix: {fix}",
        f"{SKIP} {tmp_path}/dev/daedalus-v4l2 — skipped: daedalus_v4l2 not loaded",
        f"{SKIP} video and media nodes — skipped: daedalus_v4l2 not loaded",
        f"{SKIP} daedalusd — skipped: daedalus_v4l2 not loaded",
        f"{SKIP} protocol version — skipped: daedalus_v4l2 not loaded",
        f"{SKIP} formats — skipped: no video node you can open",
        f"{SKIP} one-frame decode of doctor-vp9-128x96.ivf — skipped: no video node you can "
        "open",
    ]
    assert status == 1


@pytest.mark.parametrize("state", ["disconnected", "connected"])
def test_daemon_not_ready(state: str, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    status, lines = doctor(Tree(tmp_path, daemon=state), capsys)
    want = healthy_lines(tmp_path)
    if state == "disconnected":
        want[6] = (f"{FAIL} daedalusd not connected (disconnected) — fix: "
                   "sudo systemctl start daedalusd; its log: journalctl -u daedalusd")
    else:
        want[6] = (f"{FAIL} daedalusd connected, but its handshake did not complete — fix: "
                   "journalctl -u daedalusd")
    want[9] = f"{SKIP} one-frame decode of doctor-vp9-128x96.ivf — skipped: daedalusd not ready"
    assert lines == want
    assert status == 1


def test_protocol_mismatch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = lib.DAEDALUS_PROTO_VERSION - 1
    status, lines = doctor(Tree(tmp_path, protocol=old), capsys)
    assert marks(lines) == f"{OK * 7}{FAIL}{FAIL}{SKIP}"
    assert lines[7].startswith(f"{FAIL} protocol: module v{old}, Python "
                               f"v{lib.DAEDALUS_PROTO_VERSION} — fix: sudo systemctl stop "
                               "daedalusd && sudo modprobe -r daedalus_v4l2 && ")
    assert status == 1


def test_phase_mismatch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, lines = doctor(Tree(tmp_path, phase="8.5"), capsys)
    assert lines[2].startswith(f"{FAIL} daedalus_v4l2 loaded, phase 8.5, but this "
                               f"installation's Python is phase {latest_phase()} — fix: ")
    assert lines[3:] == healthy_lines(tmp_path)[3:]
    assert status == 1


@pytest.mark.parametrize("mode", [0o666, 0o660, 0o604])
def test_chardev_too_open(mode: int, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    status, lines = doctor(Tree(tmp_path, chardev_mode=mode), capsys)
    chardev = tmp_path / "dev/daedalus-v4l2"
    assert lines[3] == (f"{FAIL} {chardev} is {mode:04o}, uid 0, group root: others could "
                        f"pose as daedalusd — fix: sudo chown root {chardev} && sudo chmod "
                        f"0600 {chardev} (and drop the udev rule that opened it)")
    assert lines[:3] + lines[4:] == (healthy_lines(tmp_path)[:3]
                                     + healthy_lines(tmp_path)[4:])
    assert status == 1


def test_all_pass_is_status_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The exit status follows the lines: with the two device checks passing
    (replaced here: they need the guest's node), a healthy tree exits 0."""
    from daedalus.install import doctor as mod

    def passes(ctx: mod.Context) -> list[mod.Line]:
        return [mod.Line(mod.Mark.OK, "device check")]

    monkeypatch.setattr(mod, "CHECKS", (*mod.CHECKS[:-2], passes, passes))
    status, lines = doctor(Tree(tmp_path), capsys)
    assert marks(lines) == OK * 10
    assert status == 0


def test_packaged_clip_reference_is_ffmpegs_nv12() -> None:
    """The decode check's reference (PyAV, converted to NV12 by swscale) is
    what Debian's ffmpeg makes of the packaged clip with -pix_fmt nv12: one
    128x96 frame."""
    from importlib import resources

    from daedalus.install.doctor import CLIP, reference_frame
    from daedalus.m2m.reference import reference_output

    with resources.as_file(resources.files("daedalus.install") / "data" / CLIP) as clip:
        want = reference_output(clip, "nv12")
        assert len(want) == 128 * 96 * 3 // 2
        assert reference_frame(clip) == want
