"""H.264 stateless requests from an Annex-B stream: the controls a client sets
and the OUTPUT buffer it queues, per frame (pure: no device, no ioctl).

``H264RequestBuilder.feed`` takes the stream's access units in decode order
(the container packets of ``daedalus.parse.readers``) and gives one
``H264Request`` per picture, filled as GStreamer's v4l2slh264dec
(gstv4l2codech264dec.c) fills them in frame-based decode mode with Annex-B
start codes:

* SPS / PPS / SCALING_MATRIX from our parse (``h264_syntax.parse_sps`` /
  ``parse_pps``: fill_sequence, fill_pps, fill_scaling_matrix); the
  SCALING_MATRIX control only when V4L2_H264_PPS_FLAG_SCALING_MATRIX_PRESENT;
* DECODE_PARAMS (fill_decoder_params): nal_ref_idc, frame_num, idr_pic_id,
  pic_order_cnt_lsb, the delta_pic_order_cnt's and the two bit sizes from the
  first slice's header (``h264_slice``), top / bottom_field_order_cnt of the
  picture (8.2.1, POC types 0, 1 and 2), flags IDR_PIC; and ``dpb[]``: every
  reference picture the client's DPB holds before this picture (after the
  marking of the previous ones, 8.2.5: sliding window and
  memory_management_control_operation 1..6), each named by the timestamp of
  the request that decoded it (``reference_ts``), with pic_num (PicNum /
  LongTermPicNum relative to this picture), frame_num, fields FRAME,
  both field order counts and flags VALID | ACTIVE (| LONG_TERM). An IDR gets
  an empty dpb[] (it marks every earlier picture unused);
* the OUTPUT buffer: the picture's slice NAL units, each behind a 3-byte
  start code (needs_start_codes), nothing else (SPS / PPS / SEI / AUD stay
  out: they are controls or not needed);
* SLICE_PARAMS of the first slice (``slice_params``) is built too, for a
  client that wants to send it; GStreamer sends none in frame-based mode.

Timestamps: request n (from 1) is queued with timestamp n and named by
``timestamp_ns(n)`` (the client's ``request_ns``; n * 1000 by default).

Not handled (H264StreamError): field pictures (field_pic_flag 1; they would
need two requests per frame with HOLD), gaps in frame_num, FMO.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from daedalus.stateless.h264_ctrls import (
    V4L2_H264_DECODE_PARAM_FLAG_IDR_PIC,
    V4L2_H264_DPB_ENTRY_FLAG_ACTIVE,
    V4L2_H264_DPB_ENTRY_FLAG_LONG_TERM,
    V4L2_H264_DPB_ENTRY_FLAG_VALID,
    V4L2_H264_FRAME_REF,
    V4L2_H264_PPS_FLAG_SCALING_MATRIX_PRESENT,
    DecodeParams,
    DpbEntry,
    SliceParams,
    pack_pps,
    pack_scaling_matrix,
    pack_sps,
)
from daedalus.stateless.h264_slice import SliceHeader, parse_slice_header, slice_pps_id
from daedalus.stateless.h264_syntax import (
    NAL_IDR,
    NAL_PPS,
    NAL_SLICE,
    NAL_SPS,
    PpsInfo,
    SpsInfo,
    parse_pps,
    parse_sps,
    split_annexb,
)

V4L2_CID_CODEC_STATELESS_BASE = 0x00A40000 | 0x900
V4L2_CID_STATELESS_H264_SPS = V4L2_CID_CODEC_STATELESS_BASE + 2
V4L2_CID_STATELESS_H264_PPS = V4L2_CID_CODEC_STATELESS_BASE + 3
V4L2_CID_STATELESS_H264_SCALING_MATRIX = V4L2_CID_CODEC_STATELESS_BASE + 4
V4L2_CID_STATELESS_H264_SLICE_PARAMS = V4L2_CID_CODEC_STATELESS_BASE + 6
V4L2_CID_STATELESS_H264_DECODE_PARAMS = V4L2_CID_CODEC_STATELESS_BASE + 7

START_CODE = b"\x00\x00\x01"


class H264StreamError(ValueError):
    """A stream this client cannot turn into frame-based requests."""


@dataclass
class RefPic:
    """A picture of the client's DPB (frames only)."""

    ts: int
    frame_num: int
    top: int
    bottom: int
    long_term: bool = False
    long_term_frame_idx: int = 0


@dataclass
class H264Request:
    """One picture: its request's controls and OUTPUT buffer bytes."""

    number: int                       # the request's timestamp (see the module doc)
    ts: int                           # ns, what a later DECODE_PARAMS names it by
    bitstream: bytes                  # the slice NAL units, start codes included
    sps: SpsInfo
    pps: PpsInfo
    decode_params: DecodeParams
    slices: list[SliceHeader]
    access_unit: int                  # index of the access unit it came from
    controls: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def idr(self) -> bool:
        return self.slices[0].idr

    @property
    def poc(self) -> int:
        return min(self.decode_params.top_field_order_cnt,
                   self.decode_params.bottom_field_order_cnt)

    def slice_params(self) -> SliceParams:
        return self.slices[0].slice_params()


def controls_of(sps: SpsInfo, pps: PpsInfo, dp: DecodeParams, *,
                slice_params: SliceParams | None = None) -> list[tuple[int, bytes]]:
    """(id, bytes) of the request's controls, in GStreamer's order."""
    out = [(V4L2_CID_STATELESS_H264_SPS, pack_sps(sps.sps)),
           (V4L2_CID_STATELESS_H264_PPS, pack_pps(pps.pps))]
    if pps.pps.flags & V4L2_H264_PPS_FLAG_SCALING_MATRIX_PRESENT:
        out.append((V4L2_CID_STATELESS_H264_SCALING_MATRIX, pack_scaling_matrix(pps.matrix)))
    out.append((V4L2_CID_STATELESS_H264_DECODE_PARAMS, dp.pack()))
    if slice_params is not None:
        out.append((V4L2_CID_STATELESS_H264_SLICE_PARAMS, slice_params.pack()))
    return out


@dataclass
class _Poc:
    """8.2.1's state carried from picture to picture."""

    prev_msb: int = 0
    prev_lsb: int = 0
    prev_frame_num_offset: int = 0
    prev_frame_num: int = 0


class H264RequestBuilder:
    """Access units in, requests out (see the module docstring)."""

    def __init__(self, *, timestamp_ns: Callable[[int], int] = lambda n: n * 1000,
                 first_number: int = 1) -> None:
        self.timestamp_ns = timestamp_ns
        self.number = first_number - 1
        self.sps_by_id: dict[int, SpsInfo] = {}
        self.pps_by_id: dict[int, PpsInfo] = {}
        self.refs: list[RefPic] = []
        self.max_long_term_frame_idx: int | None = None
        self.poc = _Poc()
        self.units = 0

    # -- the stream ---------------------------------------------------------------------

    def feed(self, access_unit: bytes) -> list[H264Request]:
        """The requests of one access unit (a picture per first_mb_in_slice 0)."""
        index = self.units
        self.units += 1
        out: list[H264Request] = []
        pending: list[tuple[bytes, SliceHeader]] = []
        for unit in split_annexb(access_unit):
            kind = unit.nal_type
            if kind == NAL_SPS:
                info = parse_sps(unit.nal)
                self.sps_by_id[info.sps.seq_parameter_set_id] = info
            elif kind == NAL_PPS:
                pinfo = parse_pps(unit.nal, self.sps_by_id)
                self.pps_by_id[pinfo.pps.pic_parameter_set_id] = pinfo
            elif kind in (NAL_SLICE, NAL_IDR):
                pps = self.pps_by_id.get(slice_pps_id(unit.nal))
                if pps is None:
                    raise H264StreamError(f"access unit {index}: a slice names a PPS not seen")
                sps = self.sps_by_id[pps.pps.seq_parameter_set_id]
                h = parse_slice_header(unit.nal, sps.sps, pps.pps)
                if h.first_mb_in_slice == 0 and pending:
                    out.append(self._picture(pending, index))
                    pending = []
                pending.append((unit.nal, h))
            elif kind in (2, 3, 4, 20, 21):
                raise H264StreamError(f"access unit {index}: NAL unit type {kind} "
                                      "(data partitioning / MVC) is not supported")
        if pending:
            out.append(self._picture(pending, index))
        return out

    def requests(self, access_units: Iterable[bytes]) -> list[H264Request]:
        return [r for au in access_units for r in self.feed(au)]

    # -- one picture --------------------------------------------------------------------

    def _picture(self, slices: list[tuple[bytes, SliceHeader]], index: int) -> H264Request:
        first = slices[0][1]
        if first.field_pic_flag:
            raise H264StreamError(f"access unit {index}: a field picture (frame-based "
                                  "requests of whole frames only)")
        pps = self.pps_by_id[first.pic_parameter_set_id]
        sps = self.sps_by_id[pps.pps.seq_parameter_set_id]
        s = sps.sps
        max_frame_num = 1 << (s.log2_max_frame_num_minus4 + 4)
        if first.idr:
            self.refs = []
            self.max_long_term_frame_idx = None if not first.long_term_reference_flag else 0
        elif (first.frame_num != self.poc.prev_frame_num
              and first.frame_num != (self.poc.prev_frame_num + 1) % max_frame_num):
            raise H264StreamError(f"access unit {index}: a gap in frame_num "
                                  f"({self.poc.prev_frame_num} -> {first.frame_num})")
        top, bottom = self._order_counts(sps, first, max_frame_num)
        self.number += 1
        ts = self.timestamp_ns(self.number)
        dp = DecodeParams(
            nal_ref_idc=first.nal_ref_idc, frame_num=first.frame_num,
            top_field_order_cnt=top, bottom_field_order_cnt=bottom,
            idr_pic_id=first.idr_pic_id, pic_order_cnt_lsb=first.pic_order_cnt_lsb,
            delta_pic_order_cnt_bottom=first.delta_pic_order_cnt_bottom,
            delta_pic_order_cnt0=first.delta_pic_order_cnt0,
            delta_pic_order_cnt1=first.delta_pic_order_cnt1,
            dec_ref_pic_marking_bit_size=first.dec_ref_pic_marking_bit_size,
            pic_order_cnt_bit_size=first.pic_order_cnt_bit_size,
            flags=V4L2_H264_DECODE_PARAM_FLAG_IDR_PIC if first.idr else 0)
        if not first.idr:
            for i, ref in enumerate(self.refs):
                if i >= len(dp.dpb):
                    raise H264StreamError(f"access unit {index}: more than 16 references")
                wrap = ref.frame_num - max_frame_num if ref.frame_num > first.frame_num \
                    else ref.frame_num
                dp.dpb[i] = DpbEntry(
                    reference_ts=ref.ts, frame_num=ref.frame_num, fields=V4L2_H264_FRAME_REF,
                    pic_num=ref.long_term_frame_idx if ref.long_term else wrap & 0xFFFF_FFFF,
                    top_field_order_cnt=ref.top, bottom_field_order_cnt=ref.bottom,
                    flags=V4L2_H264_DPB_ENTRY_FLAG_VALID | V4L2_H264_DPB_ENTRY_FLAG_ACTIVE
                    | (V4L2_H264_DPB_ENTRY_FLAG_LONG_TERM if ref.long_term else 0))
        bitstream = b"".join(START_CODE + nal for nal, _ in slices)
        req = H264Request(self.number, ts, bitstream, sps, pps, dp, [h for _, h in slices],
                          index)
        req.controls = controls_of(sps, pps, dp)
        self._mark(first, ts, top, bottom, max_frame_num)
        return req

    def _order_counts(self, sps: SpsInfo, h: SliceHeader, max_frame_num: int) -> tuple[int, int]:
        """TopFieldOrderCnt, BottomFieldOrderCnt of a frame (8.2.1.1 - 8.2.1.3)."""
        s, st = sps.sps, self.poc
        if s.pic_order_cnt_type == 0:
            if h.idr:
                st.prev_msb = st.prev_lsb = 0
            max_lsb = 1 << (s.log2_max_pic_order_cnt_lsb_minus4 + 4)
            lsb = h.pic_order_cnt_lsb
            if lsb < st.prev_lsb and st.prev_lsb - lsb >= max_lsb // 2:
                msb = st.prev_msb + max_lsb
            elif lsb > st.prev_lsb and lsb - st.prev_lsb > max_lsb // 2:
                msb = st.prev_msb - max_lsb
            else:
                msb = st.prev_msb
            top = msb + lsb
            bottom = top + h.delta_pic_order_cnt_bottom
            if h.nal_ref_idc:
                st.prev_msb, st.prev_lsb = msb, lsb
            return top, bottom
        offset = 0 if h.idr else (
            st.prev_frame_num_offset + max_frame_num if st.prev_frame_num > h.frame_num
            else st.prev_frame_num_offset)
        st.prev_frame_num_offset = offset
        if s.pic_order_cnt_type == 2:
            poc = 0 if h.idr else 2 * (offset + h.frame_num) - (0 if h.nal_ref_idc else 1)
            return poc, poc
        n = s.num_ref_frames_in_pic_order_cnt_cycle
        abs_frame_num = offset + h.frame_num if n else 0
        if not h.nal_ref_idc and abs_frame_num > 0:
            abs_frame_num -= 1
        expected = 0
        if abs_frame_num > 0:
            cycles, in_cycle = divmod(abs_frame_num - 1, n)
            expected = cycles * sum(s.offset_for_ref_frame[:n]) + sum(
                s.offset_for_ref_frame[:in_cycle + 1])
        if not h.nal_ref_idc:
            expected += s.offset_for_non_ref_pic
        top = expected + h.delta_pic_order_cnt0
        return top, top + s.offset_for_top_to_bottom_field + h.delta_pic_order_cnt1

    def _mark(self, h: SliceHeader, ts: int, top: int, bottom: int, max_frame_num: int) -> None:
        """8.2.5 for the picture just decoded (frames), and 8.2.1's carried state."""
        st = self.poc
        st.prev_frame_num = h.frame_num
        if not h.nal_ref_idc:
            return
        current = RefPic(ts, h.frame_num, top, bottom)
        if h.idr:
            if h.long_term_reference_flag:
                current.long_term = True
            self.refs = [current]
            return

        def wrap(ref: RefPic) -> int:
            return ref.frame_num - max_frame_num if ref.frame_num > h.frame_num \
                else ref.frame_num

        mmco5 = False
        if h.adaptive_ref_pic_marking_mode_flag:
            for op, v1, v2 in h.mmco:
                if op in (1, 3):
                    pic_num = h.frame_num - (v1 + 1)
                    target = next((r for r in self.refs
                                   if not r.long_term and wrap(r) == pic_num), None)
                    if target is None:
                        continue
                    if op == 1:
                        self.refs.remove(target)
                    else:
                        self.refs = [r for r in self.refs
                                     if not (r.long_term and r.long_term_frame_idx == v2)]
                        target.long_term, target.long_term_frame_idx = True, v2
                elif op == 2:
                    self.refs = [r for r in self.refs
                                 if not (r.long_term and r.long_term_frame_idx == v1)]
                elif op == 4:
                    self.max_long_term_frame_idx = None if v1 == 0 else v1 - 1
                    self.refs = [r for r in self.refs if not r.long_term or (
                        v1 and r.long_term_frame_idx <= v1 - 1)]
                elif op == 5:
                    self.refs = []
                    self.max_long_term_frame_idx = None
                    mmco5 = True
                elif op == 6:
                    self.refs = [r for r in self.refs
                                 if not (r.long_term and r.long_term_frame_idx == v1)]
                    current.long_term, current.long_term_frame_idx = True, v1
        else:
            sps_max = max(1, self.sps_by_id[self.pps_by_id[h.pic_parameter_set_id]
                                            .pps.seq_parameter_set_id].sps.max_num_ref_frames)
            if len(self.refs) >= sps_max:
                short = [r for r in self.refs if not r.long_term]
                if short:
                    self.refs.remove(min(short, key=wrap))
        if mmco5:
            # 8.2.1: after memory_management_control_operation 5 the picture counts
            # as frame_num 0 with its order counts made relative
            low = min(top, bottom)
            current.frame_num = 0
            current.top, current.bottom = top - low, bottom - low
            st.prev_msb, st.prev_lsb = 0, current.top
            st.prev_frame_num_offset = 0
            st.prev_frame_num = 0
        self.refs.append(current)
