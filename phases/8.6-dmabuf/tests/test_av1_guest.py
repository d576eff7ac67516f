"""Phase 8.6 in the guest: AV1 on the stateful node.

From this phase on the node offers 'AV01' on OUTPUT (compat.h: the value
ChromeOS' V4L2 stack uses for stateful AV1; neither 6.1 nor 6.12 defines a
stateful AV1 format), enabled by the dma-buf layer on phase 8.1's opt-in
table entry: one temporal unit per OUTPUT buffer, so DYN_RESOLUTION and no
CONTINUOUS_BYTESTREAM. Phases 8.1-8.5 still offer VP9 and H.264 only (their
tests say so: test_node_8_1.py, and test_m2m_guest.py's refusal of AV1).

Checked through the project's decode tool, which reads AV1 in IVF and as a
low-overhead OBU stream (phase 8.3's readers) and finds the fourcc in
daedalus.proto.codecs, byte for byte against Debian's ffmpeg: ``--compare``,
then frame by frame outside the tool. The large vectors (720p, 1080p) are
encoded on first use (corpus.path). CAPTURE is NV12 only, so 10-bit AV1 is
refused cleanly (the node's fatal state; the tool exits REFUSED naming the
depth).
"""

from __future__ import annotations

import errno
import fcntl
import re
import subprocess
from pathlib import Path

import pytest
from linuxpy.video import raw

from daedalus.m2m.clients import decode, frame_sizes, split, summary
from daedalus.m2m.reference import reference_output
from daedalus.m2m.status import DecodeExit
from daedalus.parse import corpus
from daedalus.parse.readers import read_all
from daedalus.skeleton.v4l2dev import CAPTURE, OUTPUT, VideoNode, find_node
from daedalus.testbed.guestctl import daemon_state

pytestmark = pytest.mark.guest

V4L2_FMT_FLAG_COMPRESSED = 0x0001
V4L2_FMT_FLAG_CONTINUOUS_BYTESTREAM = 0x0004
V4L2_FMT_FLAG_DYN_RESOLUTION = 0x0008
MIB = 1 << 20

SMALL = ["av1-320x240", "av1-174x98"]  # IVF; OBU stream of an odd size
LARGE = ["av1-1280x720", "av1-1920x1080"]
TEN_BIT = ["av1-10bit-128x96", "av1-10bit-320x240"]  # IVF; OBU stream
PATIENCE = "120"  # --timeout: a 1080p frame under TCG takes a while


def dmesg() -> str:
    return subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout


@pytest.mark.superseded_in("8.8")  # P010 joins CAPTURE: phases/8.8-perf/tests/test_p010_guest.py
def test_output_offers_av01_one_temporal_unit_per_buffer() -> None:
    """ENUM_FMT(OUTPUT): VP9, H.264, then AV1 as 'AV01', described "AV1",
    compressed with dynamic resolution and not a continuous bytestream. The
    V4L2 core does not know 'AV01': the node's own description keeps it from
    warning ("Unknown pixelformat"). CAPTURE stays NV12 only."""
    with VideoNode(find_node()) as v:
        assert v.formats(OUTPUT) == ["VP90", "H264", "AV01"]
        assert v.formats(CAPTURE) == ["NV12"]
        flags = v.format_flags(OUTPUT, 2)
        desc = raw.v4l2_fmtdesc()
        desc.index = 2
        desc.type = OUTPUT
        fcntl.ioctl(v.fd, raw.IOC.ENUM_FMT, desc)
    assert flags == V4L2_FMT_FLAG_COMPRESSED | V4L2_FMT_FLAG_DYN_RESOLUTION
    assert not flags & V4L2_FMT_FLAG_CONTINUOUS_BYTESTREAM
    assert desc.description.decode() == "AV1"
    out = subprocess.run(["v4l2-ctl", "-d", str(find_node()), "--list-formats-out"],
                         capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if "'AV01'" in x)
    assert "(AV1, compressed" in line and "dyn-resolution" in line, out
    assert "continuous-bytestream" not in line, out
    assert "Unknown pixelformat" not in dmesg()


def test_av01_is_negotiated_like_the_other_codecs() -> None:
    """TRY_FMT and S_FMT keep 'AV01' (one 1 MiB buffer per temporal unit at
    least) and S_FMT carries its size to CAPTURE; ENUM_FRAMESIZES answers
    for it."""
    with VideoNode(find_node()) as v:
        tried = v.try_fmt(OUTPUT, "AV01", 1280, 720)
        assert (tried.pixelformat, tried.width, tried.height) == ("AV01", 1280, 720)
        out = v.s_fmt(OUTPUT, "AV01", 174, 98)
        assert (out.pixelformat, out.width, out.height) == ("AV01", 174, 98)
        assert out.sizeimage >= MIB and out.bytesperline == 0
        assert v.g_fmt(OUTPUT) == out
        cap = v.g_fmt(CAPTURE)
        assert (cap.pixelformat, cap.width, cap.height) == ("NV12", 174, 98)
        fs = v.framesizes("AV01")
        assert fs.type == raw.Frmsizetypes.STEPWISE
        assert fs.stepwise.min_width <= 16 and fs.stepwise.max_width >= 1920
        with pytest.raises(OSError) as info:
            v.framesizes("AV1F")  # the stateless format is not this node's
        assert info.value.errno == errno.EINVAL


def decoded_byte_exact(name: str, tmp_path: Path) -> None:
    """``daedalus-v4l2 decode --compare``: exit 0, byte-exact, every frame at
    its size, no buffer in error; then compared once more outside the tool,
    frame by frame."""
    path = corpus.path(name)
    out = tmp_path / "out.yuv"
    proc = decode(path, out, "--compare", "--timeout", PATIENCE)
    assert proc.returncode == DecodeExit.OK, proc.stdout + proc.stderr
    assert "byte-exact: yes" in proc.stdout.splitlines()
    sizes = frame_sizes(name)
    got = summary(proc.stdout)
    assert (got.frames, got.errors) == (len(sizes), 0), proc.stdout
    assert len(read_all(path)[1]) == len(sizes)  # one temporal unit, one buffer, one frame
    assert got.sizes == list(dict.fromkeys(f"{w}x{h}" for w, h in sizes))
    assert split(out.read_bytes(), sizes) == split(reference_output(path), sizes)


@pytest.mark.parametrize("name", SMALL)
def test_av1_decode_is_byte_exact(name: str, tmp_path: Path) -> None:
    decoded_byte_exact(name, tmp_path)
    assert daemon_state() == "ready"


@pytest.mark.parametrize("name", LARGE)
def test_av1_large_frames_decode_byte_exact(name: str, tmp_path: Path) -> None:
    """720p and 1080p through the dma-buf transport (OUTPUT and CAPTURE
    buffers mapped by the daemon, no frame cap)."""
    decoded_byte_exact(name, tmp_path)


@pytest.mark.superseded_in("8.8")  # P010: phases/8.8-perf/tests/test_p010_guest.py decodes it
@pytest.mark.parametrize("name", TEN_BIT)
def test_av1_10bit_is_refused_cleanly(name: str, tmp_path: Path) -> None:
    """CAPTURE offers NV12 only: the first 10-bit frame puts the stream in
    the fatal state; the tool exits REFUSED, its last line naming the depth
    (probed from the file, IVF or OBU), writes no picture, and the daemon
    stays up."""
    path = corpus.path(name)
    out = tmp_path / "out.yuv"
    proc = decode(path, out, "--timeout", PATIENCE)
    assert proc.returncode == DecodeExit.REFUSED, proc.stdout + proc.stderr
    last = proc.stderr.splitlines()[-1]
    assert last.startswith(f"daedalus-v4l2 decode: {path}: refused: AV1 "), proc.stderr
    assert last.endswith(", yuv420p10le (10-bit): the node offers NV12 (8-bit) only"), last
    assert summary(proc.stdout).frames == 0
    assert not out.exists() or out.stat().st_size == 0
    assert re.search(r"stream \d+ refused: ", dmesg())
    assert daemon_state() == "ready"
