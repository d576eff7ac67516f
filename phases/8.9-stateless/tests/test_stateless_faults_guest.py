"""Phase 8.9 in the guest: the stateless node when the daemon is missing or
stuck, and when the device goes away under an open file.

- No daemon: every request completes at once with both buffers flagged
  ERROR (the kernel does not wait for a daemon that is not there), the
  client says daedalusd is not connected, and the next decode with the
  daemon back is byte-exact.
- A daemon that never answers (frozen with SIGSTOP while it holds a
  request): STREAMOFF and close() return without waiting for it, the
  request completes with its buffers in ERROR, and once the daemon runs
  again it serves the next decode byte-exact.
- A platform unbind while the stateless node and its media device are
  open: ioctls fail with ENODEV, close() is clean, and after a bind the
  node decodes again.

Every test runs under the kernel_log fixture: no WARN, BUG, oops or hung
task. The reference is Debian's ffmpeg (daedalus.m2m.reference).
"""

from __future__ import annotations

import errno
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from stateless_decode_cli import decode_stateless

from daedalus.m2m.reference import reference_output
from daedalus.m2m.status import DecodeExit
from daedalus.m2m.v4l2 import BufferQueue, M2MNode
from daedalus.parse import corpus
from daedalus.parse.readers import open_stream
from daedalus.skeleton.v4l2dev import CAPTURE, OUTPUT
from daedalus.stateless import vp9_ctrls
from daedalus.stateless.client import (
    V4L2_PIX_FMT_VP9_FRAME,
    MediaRequest,
    RequestQueue,
    find_media_node,
    find_stateless_node,
    set_controls,
)
from daedalus.stateless.vp9_header import Vp9Parser, fill, split_superframe
from daedalus.testbed.guestctl import (
    OUT,
    daemon_pid,
    daemon_state,
    daemon_stopped,
    start_daemon,
    stop_daemon,
)

pytestmark = [pytest.mark.guest, pytest.mark.usefixtures("kernel_log")]

CLIP = "vp9-320x240"
HANG = 60.0          # what "does not hang" means here: far beyond any decode of one frame
PROMPT = 2.0         # STREAMOFF / close() with the daemon frozen: they must not wait for it
DRIVER = Path("/sys/bus/platform/drivers/daedalus-v4l2")
DEVICE = "daedalus-v4l2"
SUMMARY = re.compile(r"^decode-stateless: .+: (?P<frames>\d+) frames.*, "
                     r"(?P<requests>\d+) requests, (?P<errors>\d+) errors", re.M)
READ = re.compile(r"<- DECODE_REQUEST cookie (?P<cookie>\d+), stream \d+,")


def assert_byte_exact(tmp_path: Path) -> None:
    path = corpus.path(CLIP)
    out = tmp_path / "after.nv12"
    proc = decode_stateless(path, out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out.read_bytes() == reference_output(path)


def first_frame() -> bytes:
    packet = next(iter(open_stream(corpus.path(CLIP))[1]))
    return split_superframe(packet.data)[0]


def test_without_a_daemon_requests_err_at_once_and_say_so(tmp_path: Path) -> None:
    path = corpus.path(CLIP)
    with daemon_stopped():
        start = time.monotonic()
        proc = decode_stateless(path, tmp_path / "none.nv12")
        took = time.monotonic() - start
    print(f"no daemon: decode-stateless exit {proc.returncode} after {took:.1f} s: "
          f"{proc.stdout.strip()} / {proc.stderr.strip()}")
    assert took < HANG, f"decode-stateless took {took:.0f} s without a daemon"
    assert proc.returncode == DecodeExit.NO_DEVICE, proc.stdout + proc.stderr
    assert "daedalusd is not connected" in proc.stderr, proc.stderr
    m = SUMMARY.search(proc.stdout)
    assert m is not None, proc.stdout
    # every request came back, every one in error, no picture
    assert int(m["frames"]) == 0 and int(m["requests"]) >= 1
    assert int(m["errors"]) == int(m["requests"]), proc.stdout
    assert daemon_state() == "ready"
    assert_byte_exact(tmp_path)


@pytest.fixture
def node() -> Iterator[M2MNode]:
    with M2MNode(find_stateless_node()) as n:
        yield n


def test_a_frozen_daemon_holds_up_neither_streamoff_nor_close(node: M2MNode,
                                                             tmp_path: Path) -> None:
    pid = daemon_pid()
    assert pid is not None and daemon_state() == "ready"
    log = OUT / "daemon.log"
    offset = log.stat().st_size
    frame = first_frame()
    ctrl = fill(Vp9Parser().parse(frame), [None] * 8)
    media_fd = os.open(find_media_node(node.path), os.O_RDWR | os.O_CLOEXEC)
    node.set_output_format(V4L2_PIX_FMT_VP9_FRAME, 320, 240)
    output = RequestQueue(node.fd, OUTPUT)
    capture = BufferQueue(node.fd, CAPTURE)
    frozen = False
    try:
        output.request(1)
        capture.request(1)
        output.streamon()
        capture.streamon()
        request = MediaRequest(media_fd)
        # frozen before the request exists: it reaches the bridge and waits there,
        # or the daemon has it read (its log says which); nothing answers it
        os.kill(pid, signal.SIGSTOP)
        frozen = True
        set_controls(node.fd, [(vp9_ctrls.V4L2_CID_STATELESS_VP9_FRAME, ctrl.pack())],
                     request.fd)
        output.queue_in_request(0, frame, 1, request.fd)
        capture.queue(0)
        request.queue()
        time.sleep(1.0)   # the job runs and its message waits for the daemon
        assert not request.wait(0), "the request completed with the daemon frozen"
        start = time.monotonic()
        output.streamoff()
        capture.streamoff()
        streamoff = time.monotonic() - start
        # STREAMOFF returned both buffers (in ERROR): the request is complete
        assert request.wait(HANG), "the request did not complete after STREAMOFF"
        start = time.monotonic()
        request.close()
        output.close()
        capture.close()
        os.close(media_fd)
        media_fd = -1
        node.close()
        closed = time.monotonic() - start
        os.kill(pid, signal.SIGCONT)
        frozen = False
    finally:
        if frozen:
            os.kill(pid, signal.SIGCONT)
        if media_fd >= 0:
            os.close(media_fd)
    with log.open("rb") as f:
        f.seek(offset)
        seen = f.read().decode(errors="replace")
    read = READ.findall(seen)
    print(f"daemon frozen: STREAMOFF took {streamoff:.3f} s, close {closed:.3f} s; the daemon "
          f"had read {len(read)} DECODE_REQUEST(s) when frozen")
    assert streamoff < PROMPT and closed < PROMPT, (streamoff, closed)
    assert daemon_state() == "ready"
    assert_byte_exact(tmp_path)


def wait_for_stateless_node(timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            find_stateless_node()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_unbind_with_the_stateless_node_open_then_close_is_clean(tmp_path: Path) -> None:
    node = M2MNode(find_stateless_node())
    media_fd = os.open(find_media_node(node.path), os.O_RDWR | os.O_CLOEXEC)
    try:
        node.set_output_format(V4L2_PIX_FMT_VP9_FRAME, 320, 240)
        output = RequestQueue(node.fd, OUTPUT)
        output.request(2)
        (DRIVER / "unbind").write_text(DEVICE)
        assert not (DRIVER / DEVICE).exists()
        with pytest.raises(OSError) as info:
            node.set_output_format(V4L2_PIX_FMT_VP9_FRAME, 320, 240)
        assert info.value.errno == errno.ENODEV
        with pytest.raises(OSError) as info:
            MediaRequest(media_fd)
        assert info.value.errno in (errno.ENODEV, errno.EIO), info.value
        output.close()
    finally:
        os.close(media_fd)
        node.close()
        # the old daemon holds the old bridge; a new one connects to the new device
        stop_daemon()
        if not (DRIVER / DEVICE).exists():
            (DRIVER / "bind").write_text(DEVICE)
        wait_for_stateless_node(60)
        start_daemon()
    assert daemon_state() == "ready"
    assert_byte_exact(tmp_path)
