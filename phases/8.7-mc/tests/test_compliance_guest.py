"""Phase 8.7 in the guest: v4l2-compliance with no failure of ours.

Debian 12's v4l2-compliance 1.22, the two runs of the issue:

- the video node, streaming: ``v4l2-compliance -d /dev/videoN -s 10
  --stream-from h264-high-320x240``. It finds the node's media device itself
  (sysfs, bus_info), reads the function of the entity behind the node's
  interface and checks it in the DECODER_CMD test (a stateful decoder's must
  be MEDIA_ENT_F_PROC_VIDEO_DECODER), which fails at phases 8.5 and 8.6;
- the media device: ``v4l2-compliance -m /dev/mediaN``: its own tests
  (DEVICE_INFO, G_TOPOLOGY, ENUM_ENTITIES/LINKS, SETUP_LINK), then every
  interface of the graph, the video node, without streaming.

The media device's tests, DECODER_CMD and the MC information test pass.
Every other failure must be one that 1.22 reports because it predates the
running kernel (TOOL_AGE); each names the kernel change, and whether the
running kernel really made it is probed on the node (the V4L2 core's NV12
description, CREATE_BUFS's max_num_buffers capability), so that a failure is
only excused where its cause is present. Any other failure, or any warning,
fails the test. The totals are printed (closure page).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daedalus.mc.compliance import GRAND_TOTAL, Report, Totals, reports, run, totals_of, unexplained
from daedalus.mc.topology import media_node_of
from daedalus.parse import corpus
from daedalus.skeleton.v4l2dev import find_node

pytestmark = [pytest.mark.guest, pytest.mark.usefixtures("kernel_log")]

H264 = "h264-high-320x240"


def _check_video_node(report: Report, node: Path) -> None:
    assert report.device == str(node), report.device
    assert report.result("MC information (see 'Media Driver Info' above)") == ["OK"], \
        "v4l2-compliance found no valid media entity for the node"
    assert report.result("VIDIOC_(TRY_)DECODER_CMD") == ["OK"], report.failures
    left = unexplained(report, node)
    assert not left, "\n".join(left)
    assert report.totals.warnings == 0, report


def test_video_node_streams_and_fails_only_where_the_tool_predates_the_kernel() -> None:
    node = find_node()
    clip = corpus.path(H264)
    out = run(["v4l2-compliance", "-d", str(node), "-s", "10", "--stream-from", str(clip)])
    [report] = reports(out)
    print(f"v4l2-compliance -d {node} -s 10 --stream-from {clip.name}, "
          f"{os.uname().release}: {report.totals}")
    for test in ("blocking wait", "MMAP (select)", "MMAP (epoll)"):
        assert report.result(test) == ["OK"], f"streaming test {test!r} did not pass"
    _check_video_node(report, node)


# phase 8.9 adds the stateless node's interface (test_stateless_mc_guest.py)
@pytest.mark.superseded_in("8.9")
def test_media_device_passes_and_its_video_interface_fails_only_for_tool_age() -> None:
    node = find_node()
    media = media_node_of(node)
    out = run(["v4l2-compliance", "-m", str(media)])
    parts = reports(out)
    assert [r.device for r in parts] == [str(media), str(node)]  # the graph's one interface
    media_report, video_report = parts
    print(f"v4l2-compliance -m {media}, {os.uname().release}: {media_report.device}: "
          f"{media_report.totals}; {video_report.device}: {video_report.totals}")
    for test in ("MEDIA_IOC_DEVICE_INFO", "MEDIA_IOC_G_TOPOLOGY", "MEDIA_IOC_ENUM_ENTITIES/LINKS",
                 "MEDIA_IOC_SETUP_LINK"):
        assert media_report.result(test) and set(media_report.result(test)) == {"OK"}, test
    assert (media_report.totals.failed, media_report.totals.warnings) == (0, 0), \
        media_report.failures
    assert "\tEntities: 3 Interfaces: 1 Pads: 4 Links: 4\n" in out
    _check_video_node(video_report, node)
    grand = GRAND_TOTAL.search(out)
    assert grand and grand[1] == str(media), out[-3000:]
    m, v = media_report.totals, video_report.totals
    assert totals_of(grand) == Totals(m.tests + v.tests, m.succeeded + v.succeeded,
                                    m.failed + v.failed, m.warnings + v.warnings)
    print(f"grand total: {totals_of(grand)}")
