"""Decode-order output from FFmpeg's H.264 decoder: each packet's own picture, at once.

A stateless V4L2 request carries one picture in *decode* order and must complete
with that picture in its CAPTURE buffer before the next request runs. FFmpeg's
h264 decoder returns pictures in *display* order, delayed by its reorder depth
(AVCodecContext.has_b_frames). What was measured (PyAV 18 / libavcodec 62, see
tests/test_h264_order_host.py for the numbers):

* AV_CODEC_FLAG_LOW_DELAY ("flags=low_delay"): no effect; the h264 decoder does
  not read it any more. Output stays delayed.
* An SPS whose VUI says bitstream_restriction max_num_reorder_frames = 0: FFmpeg
  then keeps has_b_frames at 0 and outputs every picture at once -- but a
  picture whose POC is below the last one output is *dropped* ("no picture
  ooo" in h264_select_output_frame): every B-frame of a reordered stream is lost.
* The output policy (h264_select_output_frame) with has_b_frames = R, fixed by
  an SPS VUI saying max_num_reorder_frames = R (the "Increasing reorder buffer"
  heuristic is off when bitstream_restriction_flag is set): each new picture
  joins the delayed set; when it holds more than R pictures the one of lowest
  POC leaves it, output unless its POC is below the last output POC (then
  dropped). So after every picture the delayed set is the R highest POCs seen
  since the last IDR, and picture k leaves at once, *output*, exactly when
  R = n_k, the number of pictures decoded before k (since the last IDR) whose
  POC is greater than k's: with fewer it is dropped (a later picture was output
  already), with more it stays delayed.

Hence ``DecodeOrderH264``: a bank of decoders, decoder R fed every packet with its
SPS rewritten to carry max_num_reorder_frames = R (nothing else changes: VUI
fields are not inputs of the decoding process, see h264_rebuild's docstring). For
picture k it computes n_k from the POCs and returns decoder n_k's output of that
very packet. Every decoder decodes every picture (the pictures a decoder does
not output are still decoded and kept as references), so samples are FFmpeg's
own. Decoders are created when a depth is first needed, by replaying the
packets since the last IDR. Cost: (D + 1) decodes per picture for a stream of
reorder depth D (1 for I/P streams, 2 for B without pyramid, 3 with x264's
b-pyramid = normal).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import av
import av.video.codeccontext
import av.video.frame

from daedalus.stateless.h264_rebuild import sps_rbsp
from daedalus.stateless.h264_syntax import (
    NAL_IDR,
    NAL_SPS,
    BitWriter,
    annexb,
    matrix_of,
    parse_sps,
    split_annexb,
)

MAX_REORDER = 16  # max_num_reorder_frames <= max_dec_frame_buffering <= MaxDpbFrames <= 16
NAL_REF_IDC_SPS = 3


class OrderError(RuntimeError):
    """The decoder bank did not produce the packet's own picture."""


def _bits(data: bytes) -> str:
    return "".join(f"{b:08b}" for b in data)


def with_vui_reorder(rbsp: bytes, num_reorder_frames: int, max_dec_frame_buffering: int) -> bytes:
    """*rbsp*, a seq_parameter_set_rbsp() written without VUI (its last syntax element
    is vui_parameters_present_flag = 0), with a vui_parameters() holding only
    bitstream_restriction: max_num_reorder_frames / max_dec_frame_buffering as given,
    the other restriction fields at their "no restriction" values (E.2.1)."""
    if not 0 <= num_reorder_frames <= max_dec_frame_buffering <= MAX_REORDER:
        raise ValueError(f"need 0 <= num_reorder_frames ({num_reorder_frames}) <= "
                         f"max_dec_frame_buffering ({max_dec_frame_buffering}) <= 16")
    body = _bits(rbsp).rstrip("0")  # drop the alignment zeros after the stop bit
    if not body.endswith("01"):
        raise ValueError("the RBSP does not end with vui_parameters_present_flag = 0")
    w = BitWriter()
    for bit in body[:-2]:
        w.flag(bit == "1")
    w.flag(1)  # vui_parameters_present_flag
    for _ in range(5):  # aspect_ratio, overscan, video_signal_type, chroma_loc, timing_info
        w.flag(0)
    w.flag(0)  # nal_hrd_parameters_present_flag
    w.flag(0)  # vcl_hrd_parameters_present_flag
    w.flag(0)  # pic_struct_present_flag
    w.flag(1)  # bitstream_restriction_flag
    w.flag(1)  # motion_vectors_over_pic_boundaries_flag
    w.ue(0)    # max_bytes_per_pic_denom: no limit
    w.ue(0)    # max_bits_per_mb_denom: no limit
    w.ue(16)   # log2_max_mv_length_horizontal: the maximum
    w.ue(16)   # log2_max_mv_length_vertical
    w.ue(num_reorder_frames)
    w.ue(max_dec_frame_buffering)
    return w.rbsp()


def sps_nal_with_reorder(sps_nal: bytes, num_reorder_frames: int) -> bytes:
    """An SPS NAL unit (header byte first, no start code) rebuilt through the V4L2
    controls it parses to (h264_rebuild.sps_rbsp: same SPS, cropping and matrix,
    every list explicit) with a VUI saying max_num_reorder_frames; Annex B."""
    info = parse_sps(sps_nal)
    s = info.sps
    matrix = matrix_of(info.lists, s.chroma_format_idc) if info.seq_scaling_matrix_present_flag \
        else None
    rbsp = sps_rbsp(s, matrix, crop=info.crop)
    dpb = max(num_reorder_frames, s.max_num_ref_frames)
    return annexb(NAL_REF_IDC_SPS, NAL_SPS, with_vui_reorder(rbsp, num_reorder_frames, dpb))


def with_reorder(packet: bytes, num_reorder_frames: int) -> bytes:
    """An Annex-B access unit with every SPS replaced by sps_nal_with_reorder."""
    out = []
    for unit in split_annexb(packet):
        if unit.nal_type == NAL_SPS:
            out.append(sps_nal_with_reorder(unit.nal, num_reorder_frames))
        else:
            out.append(unit.prefix + unit.nal)
    return b"".join(out)


def is_idr(packet: bytes) -> bool:
    """Whether an Annex-B access unit holds an IDR slice (nal_unit_type 5)."""
    return any(u.nal_type == NAL_IDR for u in split_annexb(packet))


def later_count(earlier_pocs: Iterable[int], poc: int) -> int:
    """n_k: how many pictures decoded earlier (since the last IDR) display after *poc*."""
    return sum(1 for p in earlier_pocs if p > poc)


@dataclass
class _Member:
    depth: int
    ctx: av.video.codeccontext.VideoCodecContext


class DecodeOrderH264:
    """Feed access units in decode order with their POC; get each one's picture back
    at once (see the module docstring). ``decode`` raises OrderError if the expected
    decoder does not output exactly that picture (the stream broke an assumption:
    the caller completes the request with an error)."""

    def __init__(self, *, thread_count: int = 1, max_history: int = 4096) -> None:
        self.thread_count = thread_count
        self.max_history = max_history
        self._members: dict[int, _Member] = {}
        self._history: list[bytes] = []  # packets since the last IDR, while complete
        self._history_complete = True
        self._pocs: list[int] = []
        self._count = 0
        self.decodes = 0  # packets sent to FFmpeg, replays included (a cost measure)

    @property
    def depths(self) -> list[int]:
        return sorted(self._members)

    def _new_member(self, depth: int) -> _Member:
        ctx = av.CodecContext.create("h264", "r")
        assert isinstance(ctx, av.video.codeccontext.VideoCodecContext)
        ctx.thread_type = "SLICE"  # frame threads would add thread_count - 1 pictures of delay
        ctx.thread_count = self.thread_count
        return _Member(depth, ctx)

    def _send(self, member: _Member, packet: bytes, pts: int) -> list[av.video.frame.VideoFrame]:
        pkt = av.Packet(with_reorder(packet, member.depth))
        pkt.pts = pkt.dts = pts
        self.decodes += 1
        return [f for f in member.ctx.decode(pkt) if isinstance(f, av.video.frame.VideoFrame)]

    def _member(self, depth: int) -> _Member:
        member = self._members.get(depth)
        if member is None:
            if depth > MAX_REORDER:
                raise OrderError(f"{depth} earlier pictures display later: above the DPB size")
            if not self._history_complete:
                raise OrderError(f"reorder depth {depth} first needed {len(self._pocs)} "
                                 "pictures after the last IDR: no history to replay")
            member = self._new_member(depth)
            first = self._count - len(self._history)
            for i, packet in enumerate(self._history):
                self._send(member, packet, first + i)
            self._members[depth] = member
        return member

    def decode(self, packet: bytes, poc: int, *,
               idr: bool | None = None) -> av.video.frame.VideoFrame:
        """The picture of access unit *packet* (Annex B, SPS/PPS included where the
        stream has them), whose PicOrderCnt is *poc* (V4L2: min of decode_params'
        top/bottom_field_order_cnt). *idr* defaults to looking for an IDR slice."""
        if idr is None:
            idr = is_idr(packet)
        if idr:
            self._history = []
            self._history_complete = True
            self._pocs = []
        depth = later_count(self._pocs, poc)
        wanted = self._member(depth)
        pts = self._count
        mine: list[av.video.frame.VideoFrame] = []
        for member in list(self._members.values()):
            frames = self._send(member, packet, pts)
            if member is wanted:
                mine = frames
        self._count += 1
        self._pocs.append(poc)
        if self._history_complete:
            self._history.append(packet)
            if len(self._history) > self.max_history:
                self._history = []
                self._history_complete = False
        if [f.pts for f in mine] != [pts]:
            raise OrderError(f"packet {pts} (POC {poc}, {depth} earlier pictures display later): "
                             f"decoder of depth {depth} output pts {[f.pts for f in mine]}")
        return mine[0]

    def reset(self) -> None:
        """Forget every decoder (a seek, a STREAMOFF): the next packet must be an IDR."""
        self._members.clear()
        self._history = []
        self._history_complete = True
        self._pocs = []
