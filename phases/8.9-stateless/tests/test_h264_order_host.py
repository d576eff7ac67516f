"""Decode-order H.264 output (issue #15 item 2), on the host.

A stateless request must complete with its own picture, FFmpeg outputs in display
order. daedalus.stateless.h264_order answers with a bank of decoders of fixed
reorder depth (see its docstring). Checked here against Debian's ffmpeg CLI (an
independent FFmpeg 5.1 build), on the B-pyramid, High, High 10 and resolution-
change clips of the corpus:

* packets fed one at a time in decode order, each POC taken as the display rank
  ffprobe gives the packet (pkt_pos -> packet): every packet returns exactly one
  picture, with its own pts, and its bytes equal the ffmpeg CLI's rawvideo frame
  (native pix_fmt, -autoscale 0) of that same packet; the B-pyramid clip needs
  depths 0, 1 and 2 and costs 3 decodes per packet;
* why not simpler: a plain PyAV decoder (also with flags=low_delay) returns fewer
  pictures right after their packet; an SPS whose VUI says max_num_reorder_frames
  = 0 returns pictures at once but drops the out-of-order ones.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import av
import av.video.frame
import numpy as np
import pytest

from daedalus.parse import corpus
from daedalus.parse.readers import read_all
from daedalus.stateless.h264_order import (
    DecodeOrderH264,
    later_count,
    with_reorder,
)
from daedalus.stateless.h264_syntax import NAL_SPS, parse_sps, split_annexb

FFMPEG = os.environ.get("DAEDALUS_FFMPEG", "/usr/bin/ffmpeg")
FFPROBE = os.environ.get("DAEDALUS_FFPROBE", "/usr/bin/ffprobe")
needs_ffmpeg = pytest.mark.skipif(not (Path(FFMPEG).is_file() and Path(FFPROBE).is_file()),
                                  reason="needs Debian's ffmpeg / ffprobe (apt-get install ffmpeg)")

CLIPS = [
    "h264-main-bpyramid-320x240",
    "h264-high-320x240",
    "h264-high10-320x240",
    "h264-resize-176x144-352x288",
    "h264-resize-320x240-128x96",
    "h264-resize-352x288-176x144",
]
# bytes per luma sample x samples per picture / luma samples
SIZE_FACTOR = {"yuv420p": (1, 1.5), "yuvj420p": (1, 1.5), "yuv420p10le": (2, 1.5)}


@dataclass
class Reference:
    packets: list[bytes]       # access units, decode order
    display_rank: list[int]    # per packet: its position in ffmpeg's output
    frames: list[bytes]        # per packet: the ffmpeg CLI's picture of it


def reference(name: str) -> Reference:
    path = corpus.path(name)
    _, packets = read_all(path)
    probe = subprocess.run(
        [FFPROBE, "-v", "error", "-of", "json", "-select_streams", "v:0", "-show_frames",
         "-show_entries", "frame=pkt_pos,width,height,pix_fmt", os.fspath(path)],
        capture_output=True, text=True, check=True, timeout=120)
    shown = json.loads(probe.stdout)["frames"]
    pix_fmt = shown[0]["pix_fmt"]
    raw = subprocess.run([FFMPEG, "-nostdin", "-v", "error", "-i", os.fspath(path),
                          "-autoscale", "0", "-f", "rawvideo", "-pix_fmt", pix_fmt, "-"],
                         capture_output=True, check=True, timeout=120).stdout
    index_of = {p.offset: i for i, p in enumerate(packets)}
    rank = [-1] * len(packets)
    frames = [b""] * len(packets)
    pos = 0
    for r, f in enumerate(shown):
        assert f["pix_fmt"] == pix_fmt
        depth, factor = SIZE_FACTOR[pix_fmt]
        n = int(f["width"] * f["height"] * factor) * depth
        k = index_of[int(f["pkt_pos"])]
        rank[k], frames[k] = r, raw[pos:pos + n]
        pos += n
    assert pos == len(raw), "ffprobe's frame sizes do not add up to ffmpeg's output"
    assert sorted(rank) == list(range(len(packets))), "not one displayed frame per packet"
    return Reference([p.data for p in packets], rank, frames)


def picture_bytes(frame: av.video.frame.VideoFrame) -> bytes:
    """The visible samples of each plane, rows without their padding (rawvideo layout)."""
    bps = 2 if frame.format.name.endswith(("le", "be")) else 1
    out = b""
    for plane in frame.planes:
        rows = np.frombuffer(memoryview(plane), np.uint8).reshape(-1, plane.line_size)
        out += rows[:plane.height, :plane.width * bps].tobytes()
    return out


@needs_ffmpeg
@pytest.mark.parametrize("name", CLIPS)
def test_own_picture_per_packet_byte_exact(name: str) -> None:
    ref = reference(name)
    bank = DecodeOrderH264()
    for k, packet in enumerate(ref.packets):
        frame = bank.decode(packet, ref.display_rank[k])
        assert frame.pts == k
        assert picture_bytes(frame) == ref.frames[k], f"{name}: picture of packet {k} differs"
    n = len(ref.packets)
    depth = max(later_count(ref.display_rank[:k], ref.display_rank[k]) for k in range(n))
    assert bank.depths == list(range(depth + 1))
    # all members created in the first GOP: each packet decoded once per depth,
    # plus the replays (packets since the IDR) when a depth was first needed
    assert n * len(bank.depths) <= bank.decodes <= n * len(bank.depths) + 16
    if name == "h264-main-bpyramid-320x240":
        assert bank.depths == [0, 1, 2]


def _plain(packets: list[bytes], *, reorder: int | None = None,
           options: dict[str, str] | None = None) -> tuple[list[list[int]], list[int]]:
    ctx = av.CodecContext.create("h264", "r")
    ctx.options = options or {}
    ctx.thread_type = "SLICE"
    ctx.thread_count = 1
    per_packet = []
    for k, data in enumerate(packets):
        pkt = av.Packet(data if reorder is None else with_reorder(data, reorder))
        pkt.pts = pkt.dts = k
        per_packet.append([int(f.pts or 0) for f in ctx.decode(pkt)])
    return per_packet, [int(f.pts or 0) for f in ctx.decode(None)]


@needs_ffmpeg
def test_why_a_bank_plain_decoders_delay_or_drop() -> None:
    ref = reference("h264-main-bpyramid-320x240")
    n = len(ref.packets)
    for options in ({}, {"flags": "low_delay"}):
        per, tail = _plain(ref.packets, options=options)
        own = sum(out == [k] for k, out in enumerate(per))
        assert own < n and tail, "expected display-order, delayed output"
        shown = sorted([*(x for out in per for x in out), *tail])
        assert shown == list(range(n))  # nothing lost, only late
    per, tail = _plain(ref.packets, reorder=0)
    shown = [*(x for out in per for x in out), *tail]
    assert all(out in ([], [k]) for k, out in enumerate(per))  # at once when at all ...
    assert len(shown) < n  # ... but the out-of-order pictures are dropped


def test_later_count() -> None:
    # decode order I0 P8 B4 b2 b6 P16: n_k = earlier pictures displayed later
    pocs = [0, 8, 4, 2, 6, 16]
    assert [later_count(pocs[:k], pocs[k]) for k in range(len(pocs))] == [0, 0, 1, 2, 1, 0]


@needs_ffmpeg
def test_rewritten_sps_same_controls() -> None:
    """with_reorder changes the VUI only: the SPS parses to the same controls and
    cropping (the decode test above proves the samples unchanged)."""
    ref = reference("h264-high-320x240")
    for depth in (0, 3):
        before = [u for u in split_annexb(ref.packets[0]) if u.nal_type == NAL_SPS]
        after = [u for u in split_annexb(with_reorder(ref.packets[0], depth))
                 if u.nal_type == NAL_SPS]
        assert len(before) == len(after) == 1
        a, b = parse_sps(before[0].nal), parse_sps(after[0].nal)
        assert (a.sps, a.crop) == (b.sps, b.crop) and b.vui_parameters_present_flag
