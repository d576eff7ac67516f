"""Phase 8.1 in the guest: the skeleton node as V4L2 clients see it.

Runs inside a booted guest with the phase's module loaded (marker ``guest``);
on the host, shared/testbed/tests/test_guest_tier.py boots the guest that runs
these. Expected values come from the V4L2 spec and the kernel's own headers,
not from the module.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
from pathlib import Path

import pytest
from linuxpy.video import raw

from daedalus.skeleton.v4l2dev import CAPTURE, CARD, OUTPUT, VideoNode, find_node
from daedalus.testbed.guestctl import daemon_stopped

pytestmark = pytest.mark.guest

V4L2_CAP_VIDEO_M2M_MPLANE = 0x00004000
V4L2_CAP_STREAMING = 0x04000000
V4L2_CAP_EXT_PIX_FORMAT = 0x00200000  # set by the V4L2 core for every node
V4L2_CAP_DEVICE_CAPS = 0x80000000
V4L2_FMT_FLAG_COMPRESSED = 0x0001


@pytest.fixture()
def node() -> Path:
    return find_node()


def test_listed_by_v4l2_ctl(node: Path) -> None:
    out = subprocess.run(["v4l2-ctl", "--list-devices"], capture_output=True, text=True,
                         check=True).stdout
    lines = out.splitlines()
    idx = next(i for i, line in enumerate(lines) if line.startswith(f"{CARD} ("))
    assert "platform:daedalus-v4l2" in lines[idx]
    assert lines[idx + 1].strip() == str(node)


def test_querycap(node: Path) -> None:
    with VideoNode(node) as v:
        cap = v.querycap()
    assert cap.driver == "daedalus_v4l2"
    assert cap.card == CARD
    assert cap.bus_info == "platform:daedalus-v4l2"
    assert cap.device_caps == (V4L2_CAP_VIDEO_M2M_MPLANE | V4L2_CAP_STREAMING
                               | V4L2_CAP_EXT_PIX_FORMAT)
    assert cap.capabilities == cap.device_caps | V4L2_CAP_DEVICE_CAPS
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    assert cap.version >> 16 == major and (cap.version >> 8) & 0xFF == minor


@pytest.mark.superseded_in("8.6")  # AV1 joins: phases/8.6-dmabuf/tests/test_av1_guest.py
def test_coded_formats_on_output(node: Path) -> None:
    """VP9 and H.264, exactly, on every kernel: the table's AV1 entry is
    opt-in, and no layer up to phase 8.5 enables it (daedalus-formats.c)."""
    expected = ["VP90", "H264"]
    with VideoNode(node) as v:
        assert v.formats(OUTPUT) == expected
        for i in range(len(expected)):
            assert v.format_flags(OUTPUT, i) & V4L2_FMT_FLAG_COMPRESSED
        assert v.formats(CAPTURE) == ["NV12"]


def test_v4l2_ctl_lists_output_formats(node: Path) -> None:
    out = subprocess.run(["v4l2-ctl", "-d", str(node), "--list-formats-out"],
                         capture_output=True, text=True, check=True).stdout
    # Later layers add flags after "compressed" (dyn-resolution, continuous-bytestream).
    assert re.search(r"'VP90' \(VP9, compressed[,)]", out), out
    assert re.search(r"'H264' \(H.264, compressed[,)]", out), out


def test_s_fmt_output_propagates_to_capture(node: Path) -> None:
    with VideoNode(node) as v:
        out = v.s_fmt(OUTPUT, "H264", 1280, 720)
        assert (out.pixelformat, out.width, out.height, out.num_planes) == ("H264", 1280, 720, 1)
        assert out.sizeimage > 0 and out.bytesperline == 0
        assert v.g_fmt(OUTPUT) == out
        cap = v.g_fmt(CAPTURE)
        assert (cap.pixelformat, cap.width, cap.height) == ("NV12", 1280, 720)
        assert cap.bytesperline >= 1280
        assert cap.sizeimage >= cap.bytesperline * 720 * 3 // 2


def test_try_fmt_corrects_unknown_format(node: Path) -> None:
    with VideoNode(node) as v:
        before = v.g_fmt(OUTPUT)
        fixed = v.try_fmt(OUTPUT, "XXXX", 1, 1)
        assert fixed.pixelformat == "VP90"
        assert fixed.width >= 16 and fixed.height >= 16
        assert v.g_fmt(OUTPUT) == before  # TRY changes nothing


def test_formats_are_per_file_handle(node: Path) -> None:
    with VideoNode(node) as a, VideoNode(node) as b:
        a.s_fmt(OUTPUT, "H264", 640, 480)
        b.s_fmt(OUTPUT, "VP90", 320, 240)
        assert a.g_fmt(OUTPUT).pixelformat == "H264"
        assert b.g_fmt(OUTPUT).pixelformat == "VP90"


def test_enum_framesizes(node: Path) -> None:
    with VideoNode(node) as v:
        fs = v.framesizes("VP90")
        assert fs.type == raw.Frmsizetypes.STEPWISE
        assert fs.stepwise.min_width <= 16 and fs.stepwise.max_width >= 1920
        with pytest.raises(OSError) as exc:
            v.framesizes("XXXX")
        assert exc.value.errno == errno.EINVAL


def test_reqbufs_accepted(node: Path) -> None:
    """REQBUFS is accepted on both queues and count 0 frees everything. The
    skeleton has no buffer queues: a node that reports no buffer capabilities
    hands out no buffers. (A layer that brings queues tests what they
    allocate.)"""
    with VideoNode(node) as v:
        for buf_type in (OUTPUT, CAPTURE):
            rb = v.request_buffers(buf_type, 4)
            if rb.capabilities == 0:
                assert rb.count == 0
            assert v.reqbufs(buf_type, 0) == 0


def test_reqbufs_rejects_wrong_type(node: Path) -> None:
    with VideoNode(node) as v, pytest.raises(OSError) as exc:
        v.reqbufs(raw.BufType.VIDEO_CAPTURE, 4)  # single-planar: not this node's
    assert exc.value.errno == errno.EINVAL


def test_thousand_open_close_cycles(node: Path) -> None:
    for _ in range(1000):
        fd = os.open(node, os.O_RDWR)
        os.close(fd)
    with VideoNode(node) as v:
        assert v.querycap().card == CARD


def _dmesg() -> str:
    return subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout


def test_twenty_load_unload_cycles() -> None:
    with daemon_stopped():  # from phase 8.2 on, a connected daemon pins the module
        _load_unload_cycles()


def _load_unload_cycles() -> None:
    before = len(_dmesg().splitlines())
    nodes = set()
    for _ in range(20):
        subprocess.run(["modprobe", "-r", "daedalus_v4l2"], check=True)
        assert not list(Path("/sys/class/video4linux").glob("video*"))
        subprocess.run(["modprobe", "daedalus_v4l2"], check=True)
        node = find_node()
        with VideoNode(node) as v:
            assert v.querycap().driver == "daedalus_v4l2"
        # every node the module registers (a later phase may add one: 8.9's stateless node)
        nodes.add(len(list(Path("/sys/class/video4linux").glob("video*"))))
    new = _dmesg().splitlines()[before:]
    bad = [line for line in new if re.search(r"WARNING|BUG|Oops|Call Trace|refcount", line)]
    assert not bad, "\n".join(bad)
    assert len(nodes) == 1, nodes  # as many nodes after every load
    assert sum("registered video" in line for line in new) == 20 * nodes.pop()


def test_removal_refused_while_open(node: Path) -> None:
    with VideoNode(node):
        proc = subprocess.run(["modprobe", "-r", "daedalus_v4l2"], capture_output=True,
                              text=True)
        assert proc.returncode != 0
        assert "in use" in proc.stderr
    assert (Path("/sys/module/daedalus_v4l2")).exists()
