"""Phase 8.5 in the guest: a refused stream, driven with raw ioctls (issue #12 item 9).

A stream the node cannot output puts the file in dev-decoder.rst's fatal
state: 4:2:2 / 4:4:4 chroma, which daedalusd refuses (EOPNOTSUPP), and
10-bit frames (P010), which the kernel refuses while CAPTURE offers NV12
only. CAPTURE is set up early from G_FMT, as FFmpeg and GStreamer do. What
the application sees, in this order:

1. the OUTPUT buffers done before, then the buffer whose packet was refused,
   flagged V4L2_BUF_FLAG_ERROR, with the bytesused and timestamp it was
   queued with; exactly one buffer in error, the last. VP9's decoder holds no
   frame back, so for VP9 that is packet 0, the first DQBUF (H.264 reorders:
   the refusal comes at a later packet);
2. then EIO: DQBUF on both queues, QBUF, STREAMON, DECODER_CMD; poll(2)
   returns at once, readable and writable, not POLLERR;
3. the kernel log names the refusal (``stream N refused: ...``);
4. STREAMOFF and REQBUFS(0) of both queues end the state (dev-decoder.rst's
   reinitialization): the same file then decodes an 8-bit clip of the same
   codec (a file's stream keeps its codec) byte for byte as Debian's ffmpeg.

Every test fails on a kernel warning, BUG or oops logged meanwhile.
"""

from __future__ import annotations

import errno
import re
import select
import time
from collections.abc import Callable

import pytest

from daedalus.m2m.reference import reference_output
from daedalus.m2m.v4l2 import (
    V4L2_DEC_CMD_STOP,
    BufferQueue,
    Dequeued,
    Frame,
    M2MNode,
    StatefulDecode,
    packets_of,
)
from daedalus.parse import corpus
from daedalus.skeleton.v4l2dev import CAPTURE, OUTPUT, find_node
from daedalus.testbed.guestctl import KernelLog, daemon_state

pytestmark = [pytest.mark.guest, pytest.mark.usefixtures("kernel_log")]

# the corpus' refused clips: what the kernel's "refused" line names
REFUSED = {
    "vp9-p1-444-176x144": "4:4:4",
    "vp9-p2-10bit-320x240": "P010",
    "h264-high444-176x144": "4:4:4",
    "h264-high422-176x144": "4:2:2",
    "h264-high10-320x240": "P010",
}
CODE = {"vp9": "VP90", "h264": "H264"}
AFTER = {"vp9": "vp9-128x96", "h264": "h264-high-128x96"}  # 8-bit, 10 frames each
BUFFERS = 4
WAIT = 120.0  # the first frames' decode under TCG, generously



def fails_with_eio(call: Callable[[], object]) -> None:
    with pytest.raises(OSError) as info:
        call()
    assert info.value.errno == errno.EIO, info.value


def until_eio(node: M2MNode, output: BufferQueue,
              packets: list[tuple[int, bytes]]) -> tuple[list[Dequeued], dict[int, int]]:
    """Queue *packets* one per OUTPUT buffer, each buffer again once it is back,
    and dequeue OUTPUT until DQBUF fails with EIO: the buffers dequeued, and
    the bytes queued per timestamp. No refill after a buffer in error, or
    once a QBUF met the EIO (the buffers done before are still to dequeue)."""
    free = list(range(output.request(BUFFERS)))
    todo = list(packets)
    queued: dict[int, int] = {}
    returned: list[Dequeued] = []
    refill = True
    deadline = time.monotonic() + WAIT
    while True:
        assert time.monotonic() < deadline, f"no EIO within {WAIT:g} s: {returned}"
        while refill and free and todo:
            timestamp, data = todo[0]
            try:
                output.queue(free[0], data, timestamp)
            except OSError as exc:
                assert exc.errno == errno.EIO, exc
                refill = False
                break
            free.pop(0)
            todo.pop(0)
            queued[timestamp] = len(data)
            if not output.streaming:
                output.streamon()
        try:
            buf = output.dequeue()
        except OSError as exc:
            assert exc.errno == errno.EIO, exc
            return returned, queued
        if buf is None:
            node.poll(0.05)
            continue
        returned.append(buf)
        if buf.error:
            refill = False
        else:
            free.append(buf.index)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_buffer_comes_back_in_error_then_eio_until_streamoff(
        name: str, kernel_log: KernelLog) -> None:
    codec, width, height, stream = packets_of(corpus.path(name))
    code = CODE[codec]
    packets = list(stream)
    with M2MNode(find_node()) as node:
        node.set_output_format(code, width or 320, height or 240)
        output = BufferQueue(node.fd, OUTPUT)
        capture = BufferQueue(node.fd, CAPTURE)
        try:
            for index in range(capture.request(BUFFERS)):  # set up early, from G_FMT
                capture.queue(index)
            capture.streamon()
            returned, queued = until_eio(node, output, packets)

            # 1. what was done, then the refused buffer, in error, as queued
            assert returned, "DQBUF(OUTPUT) failed with EIO before any buffer came back"
            refused = returned[-1]
            assert refused.error, returned
            assert [b for b in returned if b.error] == [refused], returned
            assert [b.timestamp for b in returned] == [t for t, _ in packets[:len(returned)]]
            assert refused.bytesused == queued[refused.timestamp]
            if codec == "vp9":
                assert len(returned) == 1 and refused.timestamp == packets[0][0], returned

            # 2. the fatal state: EIO everywhere, poll ready at once
            fails_with_eio(output.dequeue)
            fails_with_eio(capture.dequeue)
            fails_with_eio(lambda: output.queue(refused.index, packets[0][1], 1000))
            fails_with_eio(output.streamon)
            fails_with_eio(lambda: node.decoder_cmd(V4L2_DEC_CMD_STOP))
            start = time.monotonic()
            events = node.poll(5.0)
            waited = time.monotonic() - start
            assert events & select.POLLIN and events & select.POLLOUT, events
            assert not events & select.POLLERR, events
            assert waited < 5.0

            # 3. the kernel says why
            said = [line for line in kernel_log.read() if re.search(r"stream \d+ refused: ", line)]
            assert said and REFUSED[name] in said[-1], said

            # 4. dev-decoder.rst's reinitialization ends the state
            output.streamoff()
            capture.streamoff()
        finally:
            capture.close()
            output.close()

        after = corpus.path(AFTER[codec])
        again_codec, again_width, again_height, again = packets_of(after)
        assert again_codec == codec
        frames: list[Frame] = []
        stats = StatefulDecode(node, code, again, frames.append, width=again_width,
                               height=again_height, timeout=WAIT).run()
    assert stats.errors == 0 and stats.frames == 10, stats
    assert b"".join(f.data for f in frames) == reference_output(after)
    assert daemon_state() == "ready"
