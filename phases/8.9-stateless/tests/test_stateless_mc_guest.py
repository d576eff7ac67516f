"""Phase 8.9 in the guest: one media device, two decoders, and v4l2-compliance.

The stateless node joins phase 8.7's media device with a chain of its own,
registered as the stateful node's is (v4l2_m2m_register_media_controller):
a source and a sink entity on the node's interface, a decoder entity
(MEDIA_ENT_F_PROC_VIDEO_DECODER) between them. The graph therefore has six
entities, two interfaces and eight links; the media core counts the
topology version up for the chain added after the media device was
registered (phase 8.7 registers it; layers publish in order).

v4l2-compliance (Debian 12's 1.22) on the stateless node, and ``-m`` over the
whole graph: the media device's own tests pass, and each video node fails
only where the tool predates the running kernel (daedalus.mc.compliance).
v4l2-compliance cannot stream a stateless decoder (it has no parser to fill
the controls), so the stateless node is checked without ``-s``; our own
client and GStreamer decode through it (test_stateless_guest.py).
"""

from __future__ import annotations

import errno
import fcntl
import os
import subprocess
from pathlib import Path

import pytest
from linuxpy.video import raw

from daedalus.mc.compliance import GRAND_TOTAL, Report, Totals, reports, run, totals_of, unexplained
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
)
from daedalus.skeleton.v4l2dev import CARD, VideoNode, find_node
from daedalus.stateless.client import STATELESS_CARD, find_stateless_node

pytestmark = [pytest.mark.guest, pytest.mark.usefixtures("kernel_log")]

FIXED = MEDIA_LNK_FL_ENABLED | MEDIA_LNK_FL_IMMUTABLE


def chain(card: str) -> tuple[str, str, str]:
    """The entities v4l2_m2m_register_media_controller() names "<node name>-<role>"."""
    return f"{card}-source", f"{card}-proc", f"{card}-sink"


def test_the_media_device_holds_both_decoders_chains() -> None:
    stateful, stateless = find_node(), find_stateless_node()
    media = media_node_of(stateless)
    assert media_node_of(stateful) == media  # one media device for both nodes
    with MediaNode(media) as m:
        topo = m.topology()
    print(topo)
    entities = {e.name: e for e in topo.entities}
    chains = {stateful: chain(CARD), stateless: chain(STATELESS_CARD)}
    assert sorted(entities) == sorted(name for names in chains.values() for name in names)
    want_links = set()
    want_intf_links = set()
    interfaces = {(i.major, i.minor): i for i in topo.interfaces}
    assert len(interfaces) == 2
    for node, (source, proc, sink) in chains.items():
        assert (entities[source].function, entities[proc].function,
                entities[sink].function) == (MEDIA_ENT_F_IO_V4L, MEDIA_ENT_F_PROC_VIDEO_DECODER,
                                             MEDIA_ENT_F_IO_V4L)
        want_links |= {(source, 0, proc, 0, FIXED), (proc, 1, sink, 0, FIXED)}
        rdev = os.stat(node).st_rdev
        intf = interfaces[(os.major(rdev), os.minor(rdev))]
        assert (intf.intf_type, intf.flags) == (MEDIA_INTF_T_V4L_VIDEO, 0)
        want_intf_links |= {(intf.id, source, MEDIA_LNK_FL_INTERFACE_LINK | FIXED),
                            (intf.id, sink, MEDIA_LNK_FL_INTERFACE_LINK | FIXED)}
    pads = sorted((topo.entity(p.entity_id).name, p.index, p.flags) for p in topo.pads)
    assert pads == sorted(pad for source, proc, sink in chains.values() for pad in (
        (source, 0, MEDIA_PAD_FL_SOURCE), (proc, 0, MEDIA_PAD_FL_SINK),
        (proc, 1, MEDIA_PAD_FL_SOURCE), (sink, 0, MEDIA_PAD_FL_SINK)))
    assert topo.data_links() == want_links
    assert topo.interface_links() == want_intf_links
    assert len(topo.links) == 8  # and nothing else


def test_media_ctl_prints_both_chains() -> None:
    stateless = find_stateless_node()
    proc = subprocess.run(["media-ctl", "-p", "-d", str(media_node_of(stateless))],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(proc.stdout)
    source, decoder, sink = chain(STATELESS_CARD)
    out = proc.stdout
    assert f": {source} (1 pad, 1 link)" in out
    assert f"device node name {stateless}" in out
    assert f'-> "{decoder}":0 [ENABLED,IMMUTABLE]' in out
    assert f'-> "{sink}":0 [ENABLED,IMMUTABLE]' in out
    assert out.count("type Node subtype V4L flags 0") == 4  # both chains' two ends


V4L2_DEC_CMD_STOP = 1
V4L2_DEC_CMD_FLUSH = 4
# 1.22 checks a stateless decoder's DECODER_CMD as a stateful one's (STOP must work);
# 1.26's 0914db1b checks FLUSH, and that STOP is refused, as the kernel's stateless
# helpers (v4l2_m2m_ioctl_stateless_decoder_cmd) do
STATELESS_CMD_AGE = ("v4l2-compliance 1.22 wants V4L2_DEC_CMD_STOP of a stateless decoder; 1.26 "
                     "(0914db1b \"codecs: Add stateless (TRY_)DECODER_CMD tests\") wants FLUSH")


def _try_decoder_cmd(node: Path, cmd: int) -> int:
    with VideoNode(node) as v:
        arg = raw.v4l2_decoder_cmd()
        arg.cmd = cmd
        try:
            fcntl.ioctl(v.fd, raw.IOC.TRY_DECODER_CMD, arg)
        except OSError as exc:
            return exc.errno or -1
        return 0


def _check_video_node(report: Report, node: Path) -> None:
    assert report.device == str(node), report.device
    assert report.result("MC information (see 'Media Driver Info' above)") == ["OK"], \
        "v4l2-compliance found no valid media entity for the node"
    left = unexplained(report, node)
    if node == find_stateless_node() and report.result("VIDIOC_(TRY_)DECODER_CMD") == ["FAIL"]:
        # its one failure is 1.22's STOP check ("ret != 0"): tool age where the node
        # takes FLUSH and refuses STOP, as the stateless helpers do
        assert (_try_decoder_cmd(node, V4L2_DEC_CMD_FLUSH),
                _try_decoder_cmd(node, V4L2_DEC_CMD_STOP)) == (0, errno.EINVAL)
        assert "ret != 0" in left, left
        left.remove("ret != 0")
        print(f"  tool age: ret != 0 (DECODER_CMD): {STATELESS_CMD_AGE}")
    assert not left, "\n".join(left)
    assert report.totals.warnings == 0, report


def test_the_stateless_node_fails_only_where_the_tool_predates_the_kernel() -> None:
    node = find_stateless_node()
    out = run(["v4l2-compliance", "-d", str(node)])
    [report] = reports(out)
    print(f"v4l2-compliance -d {node} (stateless), {os.uname().release}: {report.totals}")
    for test in ("VIDIOC_QUERYCAP", "VIDIOC_G/S/TRY_EXT_CTRLS", "VIDIOC_TRY_FMT",
                 "VIDIOC_S_FMT", "VIDIOC_REQBUFS/CREATE_BUFS/QUERYBUF",
                 "Requests"):
        assert report.result(test), (test, report.results)
    _check_video_node(report, node)


def test_the_media_device_and_both_video_interfaces() -> None:
    stateful, stateless = find_node(), find_stateless_node()
    media = media_node_of(stateless)
    out = run(["v4l2-compliance", "-m", str(media)])
    parts = reports(out)
    assert sorted(r.device for r in parts) == sorted([str(media), str(stateful),
                                                      str(stateless)])
    media_report = parts[0]
    assert media_report.device == str(media)
    for report in parts:
        print(f"v4l2-compliance -m {media}, {os.uname().release}: {report.device}: "
              f"{report.totals}")
    for test in ("MEDIA_IOC_DEVICE_INFO", "MEDIA_IOC_G_TOPOLOGY", "MEDIA_IOC_ENUM_ENTITIES/LINKS",
                 "MEDIA_IOC_SETUP_LINK"):
        assert media_report.result(test) and set(media_report.result(test)) == {"OK"}, test
    assert (media_report.totals.failed, media_report.totals.warnings) == (0, 0), \
        media_report.failures
    assert "\tEntities: 6 Interfaces: 2 Pads: 8 Links: 8\n" in out
    for report in parts[1:]:
        _check_video_node(report, Path(report.device))
    grand = GRAND_TOTAL.search(out)
    assert grand and grand[1] == str(media), out[-3000:]
    sums = Totals(*(sum(getattr(r.totals, f) for r in parts)
                    for f in ("tests", "succeeded", "failed", "warnings")))
    assert totals_of(grand) == sums
    print(f"grand total: {totals_of(grand)}")
