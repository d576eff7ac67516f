"""v4l2-compliance's report, read: per device its totals, each test's result
and the failed checks' messages; and the failures that Debian 12's
v4l2-compliance 1.22 reports only because it predates the running kernel.

A run prints one part per device (``-m`` walks the media device, then every
interface of its graph, separated by a line of dashes). ``reports`` reads
them and checks that every test has its result line, so nothing the counts
hold escapes a caller's checks. ``unexplained`` gives a video node's
failures that are not tool age (TOOL_AGE: each names the kernel change, and
whether the running kernel really made it is probed on the node).
"""

from __future__ import annotations

import fcntl
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from linuxpy.video import raw

from daedalus.skeleton.v4l2dev import CAPTURE, OUTPUT, VideoNode, fourcc_str

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


def totals_of(m: re.Match[str]) -> Totals:
    return Totals(int(m[2]), int(m[3]), int(m[4]), int(m[5]))


def reports(out: str) -> list[Report]:
    """Every device's part of *out*, in order (ValueError if one is incomplete)."""
    found = []
    for part in out.split(SEPARATOR):
        total = TOTAL.search(part)
        if not total:
            raise ValueError(f"no totals in a part of the report: {part[-3000:]}")
        results = RESULT.findall(part)
        report = Report(total[1], totals_of(total), results, FAILURE.findall(part))
        # every test has its line, so nothing the counts hold escapes a caller's checks
        if (report.totals.tests != len(results)
                or report.totals.failed != sum(r == "FAIL" for _, r in results)):
            raise ValueError(f"{report.totals} but the result lines are {results}")
        found.append(report)
    return found


def run(argv: list[str]) -> str:
    """v4l2-compliance's standard output (its stderr printed, if any)."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT)
    if proc.returncode < 0:
        raise RuntimeError(f"{argv[0]} killed by signal {-proc.returncode}")
    if proc.stderr.strip():
        print(f"{' '.join(argv)}: stderr:\n{proc.stderr.strip()}")
    return proc.stdout


@cache
def core_names_nv12_y_uv(node: Path) -> bool:
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
def create_bufs_reports_max_num_buffers(node: Path) -> bool:
    """CREATE_BUFS (count 0: nothing allocated) fills max_num_buffers and says so."""
    with VideoNode(node) as v:
        create = raw.v4l2_create_buffers()
        create.count = 0
        create.memory = raw.Memory.MMAP
        create.format.type = OUTPUT
        fcntl.ioctl(v.fd, raw.IOC.CREATE_BUFS, create)
        return bool(create.capabilities & V4L2_BUF_CAP_SUPPORTS_MAX_NUM_BUFFERS
                    and create.max_num_buffers > 0)


V4L2_CTRL_FLAG_READ_ONLY = 0x0004
V4L2_CTRL_FLAG_WRITE_ONLY = 0x0040
V4L2_CTRL_FLAG_NEXT_CTRL = 0x80000000
V4L2_CTRL_FLAG_NEXT_COMPOUND = 0x40000000
V4L2_CTRL_TYPE_INTEGER = 1
V4L2_CTRL_TYPE_BOOLEAN = 2


@cache
def request_test_takes_a_read_only_control(node: Path) -> bool:
    """1.22's request test (testRequests) sets, in and out of a request, the
    node's first integer or boolean control (by id) that is not write-only
    and whose minimum and maximum differ, read-only or not; is that control
    read-only here? Only asked where the media device allocates requests
    (else the test ends before it)."""
    with VideoNode(node) as v:
        qctrl = raw.v4l2_query_ext_ctrl()
        qctrl.id = V4L2_CTRL_FLAG_NEXT_CTRL | V4L2_CTRL_FLAG_NEXT_COMPOUND
        while True:
            try:
                fcntl.ioctl(v.fd, raw.IOC.QUERY_EXT_CTRL, qctrl)
            except OSError:
                return False
            if (qctrl.type in (V4L2_CTRL_TYPE_INTEGER, V4L2_CTRL_TYPE_BOOLEAN)
                    and not qctrl.flags & V4L2_CTRL_FLAG_WRITE_ONLY
                    and qctrl.minimum != qctrl.maximum):
                return bool(qctrl.flags & V4L2_CTRL_FLAG_READ_ONLY)
            qctrl.id |= V4L2_CTRL_FLAG_NEXT_CTRL | V4L2_CTRL_FLAG_NEXT_COMPOUND


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
READ_ONLY_IN_REQUESTS = ("v4l2-compliance's request test sets a read-only control, which the "
                         "kernel refuses; 1.24 skips read-only controls (19460651 \"Add check "
                         "for READ ONLY flag\", v4l-utils 1.24)")
TOOL_AGE = {age.check: age for age in [
    ToolAge("fmtdesc.description mismatch: was 'Y/UV 4:2:0', expected 'Y/CbCr 4:2:0'",
            NV12_RENAMED, core_names_nv12_y_uv),
    # 1.22 stops recording CAPTURE formats at that failed check: G_FMT, TRY_FMT
    # and S_FMT then find the node's NV12 missing
    ToolAge("pixelformat 3231564e (NV12) for buftype 9 not reported by ENUM_FMT",
            NV12_RENAMED, core_names_nv12_y_uv),
    ToolAge("check_0(crbufs.reserved, sizeof(crbufs.reserved))",
            MAX_NUM_BUFFERS, create_bufs_reports_max_num_buffers),
    # from phase 8.9 the media device allocates requests (the stateless node's), so 1.22
    # runs its request test on the stateful node too, with V4L2_CID_MIN_BUFFERS_FOR_CAPTURE
    ToolAge("doioctl(node, VIDIOC_S_EXT_CTRLS, &ctrls)", READ_ONLY_IN_REQUESTS,
            request_test_takes_a_read_only_control),
]}


def unexplained(report: Report, node: Path) -> list[str]:
    """The failures of video node *node*'s *report* that are not tool age (or
    whose tool-age cause the running kernel does not have); the tool-age ones
    are printed with their cause."""
    left = []
    for failure in report.failures:
        age = TOOL_AGE.get(failure)
        if age is None:
            left.append(failure)
        elif not age.present(node):
            left.append(f"{failure} (the tool-age cause, {age.change}, is not in this kernel)")
        else:
            print(f"  tool age: {failure}: {age.change}")
    return left
