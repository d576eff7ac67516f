"""Phase 8.9 in the guest: the stateless node driven by our own client, no GStreamer.

Runs inside a booted guest with the phase 8.9 module loaded and daedalusd
(with its stateless DECODE_REQUEST handler) connected. The client is
``daedalus-v4l2 decode-stateless`` (daedalus.stateless.client: every VP9
frame in its own media request, the ``V4L2_CID_STATELESS_VP9_FRAME``
control filled by daedalus.stateless's parser), run as a separate process
as an application would be. The reference is Debian's ffmpeg decoding the
same file to raw NV12 (daedalus.m2m.reference), compared byte for byte.

The request API's refusals are driven directly: a request without the VP9
frame control fails MEDIA_REQUEST_IOC_QUEUE with ENOENT
(media-request-ioc-queue.rst: "some required configuration is missing"),
and an OUTPUT QBUF without a request fails with EBADR (the queue requires
requests, vb2). The kernel_log fixture fails a test on any WARN, BUG, oops
or hung task.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from stateless_decode_cli import decode_stateless

from daedalus.m2m.reference import reference_output
from daedalus.m2m.v4l2 import BufferQueue, M2MNode
from daedalus.parse import corpus
from daedalus.parse.readers import open_stream
from daedalus.skeleton.v4l2dev import OUTPUT
from daedalus.stateless import vp9_ctrls
from daedalus.stateless.client import (
    STATELESS_CARD,
    V4L2_BUF_CAP_SUPPORTS_REQUESTS,
    V4L2_PIX_FMT_VP9_FRAME,
    MediaRequest,
    RequestQueue,
    find_media_node,
    find_stateless_node,
    set_controls,
)
from daedalus.stateless.vp9_header import Vp9Parser, fill, split_superframe

pytestmark = [pytest.mark.guest, pytest.mark.usefixtures("kernel_log")]

CLIPS = ["vp9-320x240", "vp9-320x240-altref"]
SUMMARY = re.compile(r"^decode-stateless: .+: (?P<frames>\d+) frames(?: \((?P<extra>[^)]*)\))?, "
                     r"(?P<sizes>.*), (?P<fps>[\d.]+) fps, (?P<requests>\d+) requests, "
                     r"(?P<errors>\d+) errors")


@pytest.mark.parametrize("name", CLIPS)
def test_decode_through_requests_is_byte_exact(name: str, tmp_path: Path) -> None:
    path = corpus.path(name)
    out = tmp_path / "out.nv12"
    proc = decode_stateless(path, out, "--compare")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "byte-exact: yes" in proc.stdout, proc.stdout
    # and on our side of it: the file equals ffmpeg's frames, as many as the clip has
    assert out.read_bytes() == reference_output(path)
    m = next(filter(None, map(SUMMARY.match, proc.stdout.splitlines())))
    frames_in_file = sum(len(split_superframe(p.data)) for p in open_stream(path)[1])
    assert (int(m["frames"]), int(m["errors"]), m["sizes"]) == (
        corpus.entry(name).frames, 0, "320x240")
    assert int(m["requests"]) == frames_in_file  # hidden frames too: one request each


# the other kinds: H.264 (B-pyramid, several slices per picture, 10-bit), AV1 (hidden and
# re-shown frames; 10-bit), VP9 10-bit and across a resolution change. AV1_FRAME exists
# where the kernel has the AV1 uAPI (6.5+)
KINDS = ["h264-main-bpyramid-320x240", "h264-slices-320x240", "h264-high10-320x240",
         "h264-resize-320x240-128x96", "vp9-p2-10bit-320x240", "vp9-resize-320x240-174x98",
         pytest.param("av1-320x240", marks=pytest.mark.skipif(
             os.uname().release.startswith("6.1."), reason="6.1 has no AV1 stateless uAPI")),
         pytest.param("av1-10bit-128x96", marks=pytest.mark.skipif(
             os.uname().release.startswith("6.1."), reason="6.1 has no AV1 stateless uAPI"))]


@pytest.mark.parametrize("name", KINDS)
def test_every_kind_of_stream_is_byte_exact(name: str, tmp_path: Path) -> None:
    path = corpus.path(name)
    entry = corpus.entry(name)
    out = tmp_path / "out.yuv"
    proc = decode_stateless(path, out, "--compare")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "byte-exact: yes" in proc.stdout, proc.stdout
    fmt = "p010le" if entry.bit_depth == 10 else "nv12"
    assert out.read_bytes() == reference_output(path, fmt)
    m = next(filter(None, map(SUMMARY.match, proc.stdout.splitlines())))
    assert (int(m["frames"]), int(m["errors"])) == (entry.frames, 0), proc.stdout


@pytest.fixture
def node() -> Iterator[M2MNode]:
    with M2MNode(find_stateless_node()) as n:
        yield n


@pytest.fixture
def media_fd(node: M2MNode) -> Iterator[int]:
    fd = os.open(find_media_node(node.path), os.O_RDWR | os.O_CLOEXEC)
    yield fd
    os.close(fd)


def first_frame() -> bytes:
    packet = next(iter(open_stream(corpus.path("vp9-320x240"))[1]))
    return split_superframe(packet.data)[0]


def test_the_node_takes_vp9_frames_in_requests(node: M2MNode) -> None:
    assert node.querycap().card == STATELESS_CARD
    assert V4L2_PIX_FMT_VP9_FRAME in node.formats(OUTPUT)
    fmt = node.set_output_format(V4L2_PIX_FMT_VP9_FRAME, 320, 240)
    assert (fmt.pixelformat, fmt.width, fmt.height) == (V4L2_PIX_FMT_VP9_FRAME, 320, 240)
    rb = node.request_buffers(OUTPUT, 1)
    assert rb.capabilities & V4L2_BUF_CAP_SUPPORTS_REQUESTS
    node.request_buffers(OUTPUT, 0)


def test_output_qbuf_without_a_request_is_ebadr(node: M2MNode) -> None:
    node.set_output_format(V4L2_PIX_FMT_VP9_FRAME, 320, 240)
    queue = BufferQueue(node.fd, OUTPUT)
    queue.request(1)
    try:
        with pytest.raises(OSError) as info:
            queue.queue(0, first_frame(), 1)
        assert info.value.errno == errno.EBADR
    finally:
        queue.close()


def test_request_without_the_frame_control_is_enoent(node: M2MNode, media_fd: int) -> None:
    node.set_output_format(V4L2_PIX_FMT_VP9_FRAME, 320, 240)
    frame = first_frame()
    queue = RequestQueue(node.fd, OUTPUT)
    queue.request(1)
    try:
        with MediaRequest(media_fd) as request:
            queue.queue_in_request(0, frame, 1, request.fd)
            with pytest.raises(OSError) as info:
                request.queue()
            assert info.value.errno == errno.ENOENT
            # the same request with the control is accepted: the control was what lacked
            ctrl = fill(Vp9Parser().parse(frame), [None] * 8)
            set_controls(node.fd, [(vp9_ctrls.V4L2_CID_STATELESS_VP9_FRAME, ctrl.pack())],
                         request.fd)
            request.queue()
    finally:
        queue.close()  # the queued request's buffer comes back without a decode
