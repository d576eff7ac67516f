"""Phase 8.6 in the guest: dma-buf memory on the decoder node.

The node's queues are vb2 dma-sg with MMAP and DMABUF memory (no
USERPTR), and VIDIOC_EXPBUF exports its MMAP buffers. Checked through the
project's decode tool (daedalus.m2m.v4l2) and GStreamer, byte for byte
against Debian's ffmpeg (daedalus.m2m.reference):

- ``--capture-io export``: MMAP CAPTURE buffers, every frame read through
  the buffer's exported dma-buf (mmap of the fd, DMA_BUF_IOCTL_SYNC around
  the read);
- ``--capture-io import``: a second context of the node allocates CAPTURE
  buffers (CREATE_BUFS with the first context's sizeimage) and exports them;
  the decoding context imports them with V4L2_MEMORY_DMABUF, and is handed
  new ones at a resolution change; ``--output-io dmabuf`` does the same for
  the bitstream;
- GStreamer's ``capture-io-mode=dmabuf``: v4l2vp9dec / v4l2h264dec export
  the CAPTURE buffers and hand dma-buf memory downstream.

The large vectors (720p, 1080p) are encoded on first use (corpus.path).
"""

from __future__ import annotations

import errno
import re
from pathlib import Path

import pytest
from linuxpy.video import raw

from daedalus.m2m.clients import (
    decode,
    frame_sizes,
    gst_frames,
    gstreamer,
    reference_frames,
    split,
    summary,
)
from daedalus.m2m.reference import reference_output
from daedalus.parse import corpus
from daedalus.proto import DMABUF_REQ_SIZE, HDR_SIZE
from daedalus.skeleton.v4l2dev import CAPTURE, OUTPUT, VideoNode, find_node
from daedalus.testbed.guestctl import OUT, daemon_state

pytestmark = pytest.mark.guest

SMALL = ["vp9-320x240", "h264-high-320x240"]
LARGE = ["vp9-1280x720", "h264-high-1280x720", "vp9-1920x1080", "h264-high-1920x1080"]
# daedalusd --verbose logs every message it reads and writes (daemon.py)
MESSAGE = re.compile(r"(?:<- \S+ cookie \d+(?:, stream \d+)?|-> \S+ cookie \d+, status \d+), "
                     r"(?P<bytes>\d+) payload bytes")
RESIZES = ["vp9-resize-176x144-352x288", "h264-resize-352x288-176x144",
           "vp9-resize-320x240-174x98"]
PATIENCE = "120"  # --timeout: a 1080p frame under TCG takes a while

V4L2_BUF_CAP_SUPPORTS_MMAP = 0x00000001
V4L2_BUF_CAP_SUPPORTS_USERPTR = 0x00000002
V4L2_BUF_CAP_SUPPORTS_DMABUF = 0x00000004


def decoded_byte_exact(name: str, tmp_path: Path, *options: str) -> None:
    """``daedalus-v4l2 decode --compare`` with *options*: exit 0, byte-exact,
    every frame at its size and no buffer in error; then compared once more
    outside the tool, frame by frame."""
    path = corpus.path(name)
    out = tmp_path / "out.yuv"
    proc = decode(path, out, "--compare", "--timeout", PATIENCE, *options)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "byte-exact: yes" in proc.stdout.splitlines()
    sizes = frame_sizes(name)
    got = summary(proc.stdout)
    assert (got.frames, got.errors) == (len(sizes), 0), proc.stdout
    assert got.sizes == list(dict.fromkeys(f"{w}x{h}" for w, h in sizes))
    assert split(out.read_bytes(), sizes) == split(reference_output(path), sizes)


def chardev_bytes_since(offset: int) -> tuple[int, int]:
    """Messages and bytes (headers included) that crossed /dev/daedalus-v4l2
    since byte *offset* of the daemon's log."""
    with (OUT / "daemon.log").open("rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    sizes = [int(m["bytes"]) for m in MESSAGE.finditer(text)]
    # at most one DAEDALUS_IOC_GET_DMABUF (32 bytes each way) per request
    ioctls = len(sizes) // 2
    return len(sizes), sum(sizes) + HDR_SIZE * len(sizes) + 2 * DMABUF_REQ_SIZE * ioctls


@pytest.mark.parametrize("name", LARGE)
def test_large_frames_decode_byte_exact_with_kilobytes_through_the_chardev(
        name: str, tmp_path: Path) -> None:
    """720p and 1080p, which the inline transport refused: byte-exact through
    the default MMAP buffers, and what crosses /dev/daedalus-v4l2 per frame is
    a few hundred bytes of requests and answers (the issue's bound: 4 KiB),
    counted from the daemon's log of every message."""
    start = (OUT / "daemon.log").stat().st_size
    decoded_byte_exact(name, tmp_path)
    messages, total = chardev_bytes_since(start)
    frames = len(frame_sizes(name))
    print(f"{name}: {messages} messages, {total} bytes through the chardev, "
          f"{total / frames:.0f} bytes per frame")
    assert messages >= 2 * frames  # a FEED and a FETCH at least per frame: the log counts
    assert total / frames <= 4096


def test_reqbufs_offers_mmap_and_dmabuf_and_refuses_userptr() -> None:
    """Both queues: REQBUFS with V4L2_MEMORY_USERPTR fails with EINVAL, and
    the capabilities REQBUFS reports say MMAP and DMABUF, not USERPTR."""
    with VideoNode(find_node()) as v:
        for buf_type in (OUTPUT, CAPTURE):
            with pytest.raises(OSError) as info:
                v.request_buffers(buf_type, 2, raw.Memory.USERPTR)
            assert info.value.errno == errno.EINVAL, buf_type
            for memory in (raw.Memory.MMAP, raw.Memory.DMABUF):
                caps = v.request_buffers(buf_type, 0, memory).capabilities
                assert caps & V4L2_BUF_CAP_SUPPORTS_MMAP, (buf_type, memory)
                assert caps & V4L2_BUF_CAP_SUPPORTS_DMABUF, (buf_type, memory)
                assert not caps & V4L2_BUF_CAP_SUPPORTS_USERPTR, (buf_type, memory)


@pytest.mark.parametrize("name", SMALL)
def test_decode_reading_capture_through_exported_dma_bufs(name: str, tmp_path: Path) -> None:
    decoded_byte_exact(name, tmp_path, "--capture-io", "export")


@pytest.mark.parametrize("name", [*SMALL, "vp9-1920x1080"])
def test_decode_importing_capture_buffers_of_a_second_context(name: str,
                                                              tmp_path: Path) -> None:
    """The issue's "a second context that imports, through V4L2_MEMORY_DMABUF,
    CAPTURE buffers exported from the first decodes byte-exact too"."""
    decoded_byte_exact(name, tmp_path, "--capture-io", "import")


@pytest.mark.parametrize("name", RESIZES)
def test_imported_capture_buffers_across_a_resolution_change(name: str,
                                                             tmp_path: Path) -> None:
    """Growth and shrink: after the LAST buffer the decode lets go of the
    imported dma-bufs and asks the second context again, for the new size."""
    decoded_byte_exact(name, tmp_path, "--capture-io", "import")


@pytest.mark.parametrize("name", SMALL)
def test_decode_importing_output_and_capture_buffers(name: str, tmp_path: Path) -> None:
    decoded_byte_exact(name, tmp_path, "--capture-io", "import", "--output-io", "dmabuf")


@pytest.mark.parametrize("name", SMALL)
def test_gstreamer_capture_io_mode_dmabuf(name: str, tmp_path: Path) -> None:
    code, log, data = gstreamer(name, tmp_path, decoder_options=["capture-io-mode=dmabuf"])
    assert code == 0, log
    assert "bug in decoder" not in log, log
    assert gst_frames(data, frame_sizes(name)) == reference_frames(name)
    assert daemon_state() == "ready"
