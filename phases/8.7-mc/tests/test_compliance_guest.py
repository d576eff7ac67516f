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

import fcntl
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from linuxpy.video import raw

from daedalus.mc.topology import media_node_of
from daedalus.parse import corpus
from daedalus.skeleton.v4l2dev import CAPTURE, OUTPUT, VideoNode, find_node, fourcc_str

pytestmark = [pytest.mark.guest, pytest.mark.usefixtures("kernel_log")]

H264 = "h264-high-320x240"
TIMEOUT = 900  # one run under TCG, generously
V4L2_BUF_CAP_SUPPORTS_MAX_NUM_BUFFERS = 1 << 7  # <linux/videodev2.h>, 6.8+

TOTAL = re.compile(r"^Total for (?:\S+ )?device (\S+): (\d+), Succeeded: (\d+), Failed: (\d+), "
                   r"Warnings: (\d+)$", re.M)
GRAND_TOTAL = re.compile(r"^Grand Total for (?:\S+ )?device (\S+): (\d+), Succeeded: (\d+), "
                         r"Failed: (\d+), Warnings: (\d+)$", re.M)
RESULT = re.compile(r"^\ttest (.+?): (OK|OK \(Not Supported\)|FAIL)$", re.M)
FAILURE = re.compile(r"^\s+fail: [\w.-]+\(\d+\): (.*)$", re.M)
SEPARATOR = "\n" + "-" * 80 + "\n"  # walkTopology's, before each interface of -m


@dataclass(frozen=True)
class Totals:
    tests: int
    succeeded: int
    failed: int
    warnings: int

    def __str__(self) -> str:
        return (f"{self.tests} tests, {self.succeeded} succeeded, {self.failed} failed, "
                f"{self.warnings} warnings")


@dataclass(frozen=True)
class Report:
    """One device's part of a v4l2-compliance run."""

    device: str
    totals: Totals
    results: list[tuple[str, str]]  # (test, OK / OK (Not Supported) / FAIL), in order
    failures: list[str]  # the failed checks' messages

    def result(self, test: str) -> list[str]:
        return [result for name, result in self.results if name == test]


def _totals(m: re.Match[str]) -> Totals:
    return Totals(int(m[2]), int(m[3]), int(m[4]), int(m[5]))


def _reports(out: str) -> list[Report]:
    reports = []
    for part in out.split(SEPARATOR):
        total = TOTAL.search(part)
        assert total, part[-3000:]
        results = RESULT.findall(part)
        report = Report(total[1], _totals(total), results, FAILURE.findall(part))
        # every test has its line, so nothing the counts hold escapes the checks below
        assert report.totals.tests == len(results), (report.totals, results)
        assert report.totals.failed == sum(r == "FAIL" for _, r in results), results
        reports.append(report)
    return reports


def _run(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode >= 0, f"{argv[0]} killed by signal {-proc.returncode}"
    if proc.stderr.strip():
        print(f"{' '.join(argv)}: stderr:\n{proc.stderr.strip()}")
    return proc.stdout


@cache
def _core_names_nv12_y_uv(node: Path) -> bool:
    """The V4L2 core describes NV12 (on the node's CAPTURE queue) as 'Y/UV 4:2:0'."""
    with VideoNode(node) as v:
        for index in range(64):
            desc = raw.v4l2_fmtdesc()
            desc.index = index
            desc.type = CAPTURE
            try:
                fcntl.ioctl(v.fd, raw.IOC.ENUM_FMT, desc)
            except OSError:
                return False
            if fourcc_str(desc.pixelformat) == "NV12":
                return bool(desc.description == b"Y/UV 4:2:0")
    return False


@cache
def _create_bufs_reports_max_num_buffers(node: Path) -> bool:
    """CREATE_BUFS (count 0: nothing allocated) fills max_num_buffers and says so."""
    with VideoNode(node) as v:
        create = raw.v4l2_create_buffers()
        create.count = 0
        create.memory = raw.Memory.MMAP
        create.format.type = OUTPUT
        fcntl.ioctl(v.fd, raw.IOC.CREATE_BUFS, create)
        return bool(create.capabilities & V4L2_BUF_CAP_SUPPORTS_MAX_NUM_BUFFERS
                    and create.max_num_buffers > 0)


@dataclass(frozen=True)
class ToolAge:
    """A v4l2-compliance 1.22 check that fails because the kernel changed after it."""

    check: str  # the failure as 1.22 prints it
    change: str  # the kernel change it predates
    present: Callable[[Path], bool]  # whether the running kernel has that change


NV12_RENAMED = ("the V4L2 core's NV12 description became 'Y/UV 4:2:0' (6a394d563dff \"media: "
                "v4l2-ioctl.c: Unify YCbCr/YUV terms in format descriptions\", 6.2; 6.1.2 stable)")
MAX_NUM_BUFFERS = ("a reserved word of struct v4l2_create_buffers became max_num_buffers, "
                   "filled by the core (d055a76c0065 \"media: core: Report the maximum "
                   "possible number of buffers for the queue\", 6.8)")
TOOL_AGE = {age.check: age for age in [
    ToolAge("fmtdesc.description mismatch: was 'Y/UV 4:2:0', expected 'Y/CbCr 4:2:0'",
            NV12_RENAMED, _core_names_nv12_y_uv),
    # 1.22 stops recording CAPTURE formats at that failed check: G_FMT, TRY_FMT
    # and S_FMT then find the node's NV12 missing
    ToolAge("pixelformat 3231564e (NV12) for buftype 9 not reported by ENUM_FMT",
            NV12_RENAMED, _core_names_nv12_y_uv),
    ToolAge("check_0(crbufs.reserved, sizeof(crbufs.reserved))",
            MAX_NUM_BUFFERS, _create_bufs_reports_max_num_buffers),
]}


def _check_video_node(report: Report, node: Path) -> None:
    assert report.device == str(node), report.device
    assert report.result("MC information (see 'Media Driver Info' above)") == ["OK"], \
        "v4l2-compliance found no valid media entity for the node"
    assert report.result("VIDIOC_(TRY_)DECODER_CMD") == ["OK"], report.failures
    unexplained = []
    for failure in report.failures:
        age = TOOL_AGE.get(failure)
        if age is None:
            unexplained.append(failure)
        elif not age.present(node):
            unexplained.append(f"{failure} (the tool-age cause, {age.change}, is not in "
                               f"this kernel)")
        else:
            print(f"  tool age: {failure}: {age.change}")
    assert not unexplained, "\n".join(unexplained)
    assert report.totals.warnings == 0, report


def test_video_node_streams_and_fails_only_where_the_tool_predates_the_kernel() -> None:
    node = find_node()
    clip = corpus.path(H264)
    out = _run(["v4l2-compliance", "-d", str(node), "-s", "10", "--stream-from", str(clip)])
    [report] = _reports(out)
    print(f"v4l2-compliance -d {node} -s 10 --stream-from {clip.name}, "
          f"{os.uname().release}: {report.totals}")
    for test in ("blocking wait", "MMAP (select)", "MMAP (epoll)"):
        assert report.result(test) == ["OK"], f"streaming test {test!r} did not pass"
    _check_video_node(report, node)


def test_media_device_passes_and_its_video_interface_fails_only_for_tool_age() -> None:
    node = find_node()
    media = media_node_of(node)
    out = _run(["v4l2-compliance", "-m", str(media)])
    reports = _reports(out)
    assert [r.device for r in reports] == [str(media), str(node)]  # the graph's one interface
    media_report, video_report = reports
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
    assert _totals(grand) == Totals(m.tests + v.tests, m.succeeded + v.succeeded,
                                    m.failed + v.failed, m.warnings + v.warnings)
    print(f"grand total: {_totals(grand)}")
