"""Phase 8.6 in the guest: bad input gets a clear error and loses nothing (issue #12 item 9).

What the other guest tests cover already is not repeated: 8.5's
test_hostile_guest.py runs the format and buffer abuse (QBUF with bytesused
beyond the buffer is EINVAL, S_FMT of 0x0 and 65535x65535 lands within
16x16...8192x4352) and the memory bounds at every phase, 8.6's node
included; 8.5's test_clients_guest.py and 8.6's test_av1_guest.py refuse
10-bit, 4:2:2 and 4:4:4 streams through the decode tool, FFmpeg and
GStreamer; test_getdmabuf_guest.py has the daemon that answers for a buffer
it never took or with a wrong byte count, and the one that closes its
device mid-write. Here:

1. QBUF(OUTPUT) with bytesused beyond the buffer's length is EINVAL and
   costs nothing: the same buffer, queued right, decodes byte-exact.
2. The decode tool and a packet larger than the OUTPUT buffer: it asks the
   node for buffers as large as the file's largest packet, so a 1,200,000
   byte packet of a 1280x720 stream (over the 1 MiB default, under the
   1,382,400 bytes the node grants at that size) decodes byte-exact; a
   packet over what the node grants (1 MiB + 1 at 128x96, where the bound
   is the codec's 1 MiB) is REFUSED in one line before anything is queued.
3. S_FMT of 0x0 and 65535x65535 at phase 8.6: OUTPUT gets exactly the
   bounds ENUM_FRAMESIZES advertises and a sizeimage within its documented
   bounds (at least 1 MiB; the coded picture's NV12 size, at most 32 MiB:
   13.5 MiB at 4096x2304), CAPTURE keeps the stream's size (dev-decoder.rst)
   whatever it is asked; REQBUFS of 32 buffers at the largest sizes
   allocates no more than the node's buffer budget (max_buffer_mib, lowered
   to 256 MiB for the test).

The padded packets are zero bytes after the frame's own data, which
decoders do not read (corpus.pad_ivf_packet; the pictures are ffmpeg's
decode of the same padded file). Every test fails on a kernel warning,
BUG or oops logged meanwhile.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
from linuxpy.video import raw

from daedalus.m2m.clients import decode, reference_frames, split, summary
from daedalus.m2m.hostile import Client
from daedalus.m2m.layout import Geometry, crop
from daedalus.m2m.reference import reference_output
from daedalus.m2m.status import DecodeExit
from daedalus.m2m.v4l2 import BufferQueue
from daedalus.parse import corpus
from daedalus.parse.readers import read_all
from daedalus.proto import MAX_HEIGHT, MAX_WIDTH
from daedalus.skeleton.v4l2dev import CAPTURE, OUTPUT, find_node
from daedalus.testbed.guestctl import daemon_state

pytestmark = [pytest.mark.guest, pytest.mark.usefixtures("kernel_log")]

MIB = 1 << 20
S_FMT = raw.IOC.S_FMT
BUDGET = Path("/sys/module/daedalus_v4l2/parameters/max_buffer_mib")
BUDGET_MIB = 256
MAX_BUFFERS = 32          # REQBUFS grants at most this many (8.5's clamp)
CLIP = "vp9-320x240"
WAIT = 120.0              # one keyframe decode under TCG, generously



# --- 1 -------------------------------------------------------------------------------------


def test_qbuf_beyond_the_buffer_is_einval_and_the_buffer_then_decodes() -> None:
    """OUTPUT buffer 0 queued with bytesused = its length + 1: EINVAL (vb2's
    check of the plane against the buffer), the buffer still the client's.
    Queued again with the clip's keyframe, it decodes to ffmpeg's frame 0
    and comes back without ERROR."""
    keyframe = read_all(corpus.path(CLIP))[1][0].data
    with closing(Client(find_node())) as c:
        c.set_output_format("VP90", 320, 240)
        fmt = c.g_fmt(CAPTURE)
        cap = BufferQueue(c.fd, CAPTURE)
        out = BufferQueue(c.fd, OUTPUT)
        try:
            for index in range(cap.request(2)):
                cap.queue(index)
            cap.streamon()
            out.request(1)
            out.streamon()
            length = out.lengths[0]
            with pytest.raises(OSError) as info:
                c.qbuf_raw(OUTPUT, 0, bytesused=length + 1, length=length)
            assert info.value.errno == errno.EINVAL
            out.queue(0, keyframe, 0)  # the same buffer: still ours to queue
            frame, done = None, None
            deadline = time.monotonic() + WAIT
            while (frame is None or done is None) and time.monotonic() < deadline:
                done = done or out.dequeue()
                frame = frame or cap.dequeue()
                if frame is None or done is None:
                    c.poll(0.05)
            assert frame is not None and done is not None, f"nothing within {WAIT:g} s"
            assert (done.index, done.error) == (0, False), done
            assert not frame.error and frame.bytesused == fmt.sizeimage, frame
            with cap.view(frame.index) as view:
                picture = crop(view, fmt.bytesperline, fmt.height, Geometry(320, 240))
        finally:
            cap.close()
            out.close()
    assert picture == reference_frames(CLIP)[0]


# --- 2 -------------------------------------------------------------------------------------


def test_decode_tool_asks_for_output_buffers_as_large_as_its_largest_packet(
        tmp_path: Path) -> None:
    """Packet 2 of vp9-1280x720 grown to 1,200,000 bytes: more than the
    node's default 1 MiB OUTPUT buffer, less than the 1280 x 720 x 3 / 2 =
    1,382,400 bytes it grants at that size. Decoded byte-exact, 10 frames,
    no packet skipped."""
    path = tmp_path / "big-packet.ivf"
    path.write_bytes(corpus.pad_ivf_packet(corpus.path("vp9-1280x720").read_bytes(), 2,
                                           1_200_000))
    assert max(len(p.data) for p in read_all(path)[1]) == 1_200_000
    out = tmp_path / "out.yuv"
    proc = decode(path, out, "--compare", "--timeout", "120")
    assert proc.returncode == DecodeExit.OK, proc.stdout + proc.stderr
    assert "byte-exact: yes" in proc.stdout.splitlines()
    got = summary(proc.stdout)
    assert (got.frames, got.sizes, got.errors) == (10, ["1280x720"], 0), proc.stdout
    sizes = [(1280, 720)] * 10
    assert split(out.read_bytes(), sizes) == split(reference_output(path), sizes)
    # the padding changes no picture: ffmpeg's frames of the clip as encoded
    assert split(reference_output(path), sizes) == reference_frames("vp9-1280x720")


def test_decode_tool_refuses_a_packet_larger_than_the_node_grants(tmp_path: Path) -> None:
    """Packet 3 of vp9-128x96 grown to 1 MiB + 1 byte; at 128x96 the node's
    bound is the codec's 1 MiB minimum. REFUSED, one line naming the file,
    the packet and both sizes; nothing queued, nothing written; the node
    serves the next decode."""
    path = tmp_path / "too-big.ivf"
    path.write_bytes(corpus.pad_ivf_packet(corpus.path("vp9-128x96").read_bytes(), 3, MIB + 1))
    out = tmp_path / "out.yuv"
    proc = decode(path, out, "--timeout", "120")
    assert proc.returncode == DecodeExit.REFUSED, proc.stdout + proc.stderr
    assert proc.stderr.splitlines() == [
        f"daedalus-v4l2 decode: {path}: packet 3 is {MIB + 1} bytes, more than an OUTPUT "
        f"buffer holds: {find_node()} grants at most {MIB} bytes for 128x96 VP90; nothing "
        "was queued"]
    assert summary(proc.stdout).frames == 0
    assert out.read_bytes() == b""
    assert daemon_state() == "ready"
    again = decode(corpus.path("vp9-128x96"), tmp_path / "again.yuv", "--compare")
    assert again.returncode == DecodeExit.OK, again.stdout + again.stderr


# --- 3 -------------------------------------------------------------------------------------


@contextmanager
def buffer_budget(mib: int) -> Iterator[None]:
    """The module's max_buffer_mib at *mib* inside the block."""
    saved = BUDGET.read_text().strip()
    BUDGET.write_text(str(mib))
    try:
        yield
    finally:
        BUDGET.write_text(saved)


def granted(c: Client, buf_type: int, count: int) -> tuple[int, list[int]]:
    """REQBUFS(count) of MMAP buffers: how many, and each one's length
    (QUERYBUF); freed again (REQBUFS 0)."""
    got = c.reqbufs_raw(buf_type, count)
    try:
        return got, [c.querybuf(buf_type, index)[0] for index in range(got)]
    finally:
        c.reqbufs_raw(buf_type, 0)


def test_absurd_sizes_are_clamped_and_allocations_stay_within_the_budget() -> None:
    """0x0 and 65535x65535, with sizeimage 0 and 0xFFFFFFFF, on both queues.
    The expected sizes: ENUM_FRAMESIZES' advertised bounds, the protocol's
    DAEDALUS_MAX_WIDTH x DAEDALUS_MAX_HEIGHT, and the OUTPUT bounds of the
    8.6 docs page (1 MiB at least; the coded picture's NV12 size, at most
    32 MiB). CAPTURE takes its size from OUTPUT (dev-decoder.rst: the
    stream's), so S_FMT(CAPTURE) of any size keeps it."""
    with closing(Client(find_node())) as c:
        sizes = c.framesizes("VP90").stepwise
        low = (int(sizes.min_width), int(sizes.min_height))
        high = (int(sizes.max_width), int(sizes.max_height))
        assert high == (MAX_WIDTH, MAX_HEIGHT) == (8192, 4352)
        small = c.fmt(S_FMT, OUTPUT, "VP90", 0, 0, sizeimage=0)
        assert (small["width"], small["height"], small["sizeimage"]) == (*low, MIB)
        cap = c.g_fmt(CAPTURE)  # follows OUTPUT
        assert (cap.width, cap.height, cap.bytesperline) == (*low, low[0])
        assert cap.sizeimage == low[0] * low[1] * 3 // 2
        huge = c.fmt(S_FMT, OUTPUT, "VP90", 65535, 65535, sizeimage=0xFFFFFFFF)
        assert (huge["width"], huge["height"], huge["sizeimage"]) == (*high, 32 * MIB)
        cap = c.g_fmt(CAPTURE)
        nv12 = high[0] * high[1] * 3 // 2
        assert (cap.width, cap.height, cap.bytesperline, cap.sizeimage) == (*high, high[0], nv12)
        uhd = c.fmt(S_FMT, OUTPUT, "VP90", 4096, 2304, sizeimage=0xFFFFFFFF)
        assert uhd["sizeimage"] == 4096 * 2304 * 3 // 2 == 14_155_776  # 13.5 MiB
        # CAPTURE's size is the stream's (dev-decoder.rst), whatever S_FMT asks
        for width, height in ((0, 0), (65535, 65535)):
            got = c.fmt(S_FMT, CAPTURE, "NV12", width, height)
            assert (got["width"], got["height"], got["sizeimage"]) == (
                4096, 2304, 14_155_776), (width, height)

        # REQBUFS of 32 at the largest sizes: no more than the budget
        c.fmt(S_FMT, OUTPUT, "VP90", 65535, 65535, sizeimage=0xFFFFFFFF)
        assert c.g_fmt(CAPTURE).sizeimage == nv12
        budget = BUDGET_MIB * MIB
        with buffer_budget(BUDGET_MIB):
            for buf_type, size in ((OUTPUT, 32 * MIB), (CAPTURE, nv12)):
                count, lengths = granted(c, buf_type, MAX_BUFFERS)
                print(f"REQBUFS({'OUTPUT' if buf_type == OUTPUT else 'CAPTURE'}, "
                      f"{MAX_BUFFERS}) at {high[0]}x{high[1]} within {BUDGET_MIB} MiB: "
                      f"{count} buffers of {size} bytes")
                assert 1 <= count <= min(MAX_BUFFERS, budget // size), count
                assert lengths == [size] * count
    assert daemon_state() == "ready"

