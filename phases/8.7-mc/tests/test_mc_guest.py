"""Phase 8.7 in the guest: the media controller, read as an application reads it.

The node's /dev/mediaN is found from the video node through sysfs, as
v4l2-compliance finds it (daedalus.mc.topology). What it must show:

1. MEDIA_IOC_DEVICE_INFO: driver ``daedalus_v4l2``, model ``daedalus-v4l2``,
   bus_info VIDIOC_QUERYCAP's, the running kernel's version.
2. MEDIA_IOC_G_TOPOLOGY: the memory-to-memory graph v4l2-mem2mem builds, a
   source entity (the OUTPUT queue's DMA), the decoder (function
   MEDIA_ENT_F_PROC_VIDEO_DECODER) and a sink entity (the CAPTURE queue's
   DMA), linked source -> proc -> sink by enabled, immutable data links; one
   V4L video interface, the video node's major:minor, linked to both DMA
   entities. Topology version 0: the graph was complete before the media
   device was registered (the probe order), nothing was added after.
3. ``media-ctl -p`` (v4l-utils 1.22, the old ENUM_ENTITIES API) prints the
   same graph, the video node as the device node of both DMA entities.
4. Unloading with /dev/mediaN open: the open file pins the module (the
   media core's cdev belongs to it), so ``modprobe -r`` is refused; an
   unbind tears the device down under the open file, whose ioctls then fail
   with EIO and whose poll reports an error and hang-up; the close is clean,
   the module unloads and loads again, and the next decode is byte-exact.
   The kernel log shows no warning throughout (kernel_log).
"""

from __future__ import annotations

import errno
import os
import re
import select
import subprocess
import time
from pathlib import Path

import pytest

from daedalus.m2m.clients import decode, summary
from daedalus.m2m.reference import reference_output
from daedalus.mc.topology import (
    MEDIA_ENT_F_IO_V4L,
    MEDIA_ENT_F_PROC_VIDEO_DECODER,
    MEDIA_INTF_T_V4L_VIDEO,
    MEDIA_LNK_FL_ENABLED,
    MEDIA_LNK_FL_IMMUTABLE,
    MEDIA_LNK_FL_INTERFACE_LINK,
    MEDIA_PAD_FL_SINK,
    MEDIA_PAD_FL_SOURCE,
    MediaNode,
    media_node_of,
    media_nodes_of,
)
from daedalus.parse import corpus
from daedalus.skeleton.v4l2dev import CARD, VideoNode, find_node
from daedalus.testbed.guestctl import daemon_state, daemon_stopped

pytestmark = [pytest.mark.guest, pytest.mark.usefixtures("kernel_log")]

DRIVER_NAME = "daedalus_v4l2"
MODULE = Path("/sys/module/daedalus_v4l2")
PLATFORM_DRIVER = Path("/sys/bus/platform/drivers/daedalus-v4l2")
DEVICE = "daedalus-v4l2"
VP9 = "vp9-320x240"

# the entities v4l2_m2m_register_media_controller() names "<video node name>-<role>"
SOURCE, PROC, SINK = f"{CARD}-source", f"{CARD}-proc", f"{CARD}-sink"
FIXED = MEDIA_LNK_FL_ENABLED | MEDIA_LNK_FL_IMMUTABLE


def _kernel_major_minor() -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    assert m, os.uname().release
    return int(m[1]), int(m[2])


def test_the_node_has_one_media_device_describing_the_driver() -> None:
    node = find_node()
    media = media_node_of(node)
    assert media_nodes_of(node) == [media]  # one media device on the node's device
    with VideoNode(node) as v:
        cap = v.querycap()
    with MediaNode(media) as m:
        info = m.device_info()
    print(f"{node} -> {media}: {info}")
    assert (info.driver, info.model, info.serial) == (DRIVER_NAME, CARD, "")
    assert info.driver == cap.driver
    assert info.bus_info == cap.bus_info == f"platform:{DEVICE}"
    # LINUX_VERSION_CODE, filled by the media core (the sublevel is Debian's, not uname's)
    assert (info.media_version >> 16, (info.media_version >> 8) & 0xFF) == _kernel_major_minor()
    assert info.driver_version == info.media_version
    assert info.hw_revision == 0
    assert (Path("/sys/bus/media/devices") / media.name / "model").read_text() == f"{CARD}\n"


# phase 8.9 adds the stateless node's chain (test_stateless_mc_guest.py)
@pytest.mark.superseded_in("8.9")
def test_the_topology_is_source_decoder_sink_with_the_video_node_on_both_dma_ends() -> None:
    node = find_node()
    rdev = os.stat(node).st_rdev
    with MediaNode(media_node_of(node)) as m:
        topo = m.topology()
    print(topo)
    entities = {e.name: e for e in topo.entities}
    assert sorted(entities) == sorted([SOURCE, PROC, SINK])
    assert {name: (e.function, e.flags) for name, e in entities.items()} == {
        SOURCE: (MEDIA_ENT_F_IO_V4L, 0),
        PROC: (MEDIA_ENT_F_PROC_VIDEO_DECODER, 0),
        SINK: (MEDIA_ENT_F_IO_V4L, 0),
    }
    pads = sorted((topo.entity(p.entity_id).name, p.index, p.flags) for p in topo.pads)
    assert pads == sorted([(SOURCE, 0, MEDIA_PAD_FL_SOURCE), (PROC, 0, MEDIA_PAD_FL_SINK),
                           (PROC, 1, MEDIA_PAD_FL_SOURCE), (SINK, 0, MEDIA_PAD_FL_SINK)])
    assert topo.data_links() == {(SOURCE, 0, PROC, 0, FIXED), (PROC, 1, SINK, 0, FIXED)}
    assert len(topo.interfaces) == 1
    intf = topo.interfaces[0]
    assert (intf.intf_type, intf.flags) == (MEDIA_INTF_T_V4L_VIDEO, 0)
    assert (intf.major, intf.minor) == (os.major(rdev), os.minor(rdev))
    assert topo.interface_links() == {(intf.id, SOURCE, MEDIA_LNK_FL_INTERFACE_LINK | FIXED),
                                      (intf.id, SINK, MEDIA_LNK_FL_INTERFACE_LINK | FIXED)}
    assert len(topo.links) == 4  # and nothing else
    # media_device_register() sets the version to 0 and every graph object
    # created after it counts it up: 0 means the graph was built first
    assert topo.version == 0


def _media_ctl_entities(out: str) -> dict[str, list[str]]:
    """media-ctl -p's "Device topology" as {entity name: its lines, stripped, the
    entity id left out of the first}."""
    blocks = {}
    for block in out.split("Device topology\n", 1)[1].strip().split("\n\n"):
        first, *rest = block.splitlines()
        m = re.fullmatch(r"- entity \d+: (\S+) (\(.*\))", first)
        assert m, block
        blocks[m[1]] = [m[2]] + [line.strip() for line in rest]
    return blocks


# phase 8.9 adds the stateless node's chain (test_stateless_mc_guest.py)
@pytest.mark.superseded_in("8.9")
def test_media_ctl_prints_the_decoder_between_the_video_node_s_two_ends() -> None:
    node = find_node()
    media = media_node_of(node)
    proc = subprocess.run(["media-ctl", "-p", "-d", str(media)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(proc.stdout)
    lines = proc.stdout.splitlines()
    for field, value in (("driver", DRIVER_NAME), ("model", CARD),
                         ("bus info", f"platform:{DEVICE}")):
        assert any(re.fullmatch(rf"{field}\s+{re.escape(value)}", line) for line in lines), \
            field
    # ENUM_ENTITIES reports a function outside the old ranges as an unknown
    # device node (the media core's workaround for old media-ctl), so the
    # decoder shows as "Node/Unknown" here; G_TOPOLOGY gives its function
    assert _media_ctl_entities(proc.stdout) == {
        SOURCE: ["(1 pad, 1 link)", "type Node subtype V4L flags 0",
                 f"device node name {node}",
                 "pad0: Source", f'-> "{PROC}":0 [ENABLED,IMMUTABLE]'],
        PROC: ["(2 pads, 2 links)", "type Node subtype Unknown flags 0",
               "pad0: Sink", f'<- "{SOURCE}":0 [ENABLED,IMMUTABLE]',
               "pad1: Source", f'-> "{SINK}":0 [ENABLED,IMMUTABLE]'],
        SINK: ["(1 pad, 1 link)", "type Node subtype V4L flags 0",
               f"device node name {node}",
               "pad0: Sink", f'<- "{PROC}":1 [ENABLED,IMMUTABLE]'],
    }


def _module_refcount() -> int:
    return int((MODULE / "refcnt").read_text())


def _modprobe_remove() -> subprocess.CompletedProcess[str]:
    return subprocess.run(["modprobe", "-r", "daedalus_v4l2"], capture_output=True, text=True,
                          timeout=120)


def _wait_for_node(timeout: float) -> Path:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return find_node()
        except OSError:  # no node yet, or one going away
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _restore_device() -> None:
    """Whatever state the test ended in: the module loaded, the device bound."""
    if not MODULE.exists():
        subprocess.run(["modprobe", "daedalus_v4l2"], check=True, timeout=120)
    elif not (PLATFORM_DRIVER / DEVICE).exists():
        (PLATFORM_DRIVER / "bind").write_text(DEVICE)
    _wait_for_node(60)


def test_unload_with_the_media_node_open_is_refused_then_unbind_fails_its_ioctls(
        tmp_path: Path) -> None:
    media = media_node_of(find_node())
    with daemon_stopped():  # a connected daemon pins the module too
        try:
            before = _module_refcount()
            held = MediaNode(media)  # the process holding /dev/mediaN open
            try:
                assert _module_refcount() == before + 1
                refused = _modprobe_remove()
                assert refused.returncode != 0 and "in use" in refused.stderr, refused
                assert MODULE.exists()
                assert held.device_info().driver == DRIVER_NAME  # the device still works

                (PLATFORM_DRIVER / "unbind").write_text(DEVICE)
                assert not (PLATFORM_DRIVER / DEVICE).exists()
                assert not media.exists()  # /dev/mediaN went with the device
                for call in (held.device_info, held.topology):
                    with pytest.raises(OSError) as exc:
                        call()
                    assert exc.value.errno == errno.EIO, call
                poller = select.poll()
                poller.register(held.fd, select.POLLIN | select.POLLPRI)
                [(_, events)] = poller.poll(1000)
                assert events & (select.POLLERR | select.POLLHUP) == (
                    select.POLLERR | select.POLLHUP), events
                print(f"after the unbind, on the held {media}: MEDIA_IOC_DEVICE_INFO and "
                      f"MEDIA_IOC_G_TOPOLOGY EIO, poll {events:#x}")
                refused = _modprobe_remove()  # the open file still pins the module
                assert refused.returncode != 0 and "in use" in refused.stderr, refused
            finally:
                held.close()
            assert _module_refcount() == before
            removed = _modprobe_remove()
            assert removed.returncode == 0, removed
            assert not MODULE.exists()
            subprocess.run(["modprobe", "daedalus_v4l2"], check=True, timeout=120)
            node = _wait_for_node(60)
            with MediaNode(media_node_of(node)) as m:
                assert m.device_info().bus_info == f"platform:{DEVICE}"
        finally:
            _restore_device()
    assert daemon_state() == "ready"
    clip = corpus.path(VP9)
    out = tmp_path / "out.yuv"
    proc = decode(clip, out, "--compare")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "byte-exact: yes" in proc.stdout.splitlines()
    assert summary(proc.stdout).frames == 30
    assert out.read_bytes() == reference_output(clip)
