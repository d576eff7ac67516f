"""H.264 slice headers (7.3.3) parsed against the V4L2 SPS / PPS controls.

Used on both sides of the stateless node: the daemon checks a request's
DECODE_PARAMS / SLICE_PARAMS against the slices in its OUTPUT buffer
(``daedalus.stateless.handler``), and our client fills those controls from
its own parse (``daedalus.stateless.h264_requests``).

``parse_slice_header`` reads every syntax element of slice_header() up to
slice_data(), including ref_pic_list_modification(), pred_weight_table() and
dec_ref_pic_marking() (kept: the memory-management operations drive the
client's reference marking), and measures what V4L2 wants in bits:
``header_bit_size`` (the NAL header byte plus the RBSP bits of the header,
emulation-prevention bytes excluded: GStreamer's get_slice_header_bit_size),
``pic_order_cnt_bit_size`` and ``dec_ref_pic_marking_bit_size``.

Not covered (H264SyntaxError): slice groups (FMO: the V4L2 PPS cannot carry
them anyway), MVC / SVC NAL units (types 20, 21).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from daedalus.stateless.h264_ctrls import (
    V4L2_H264_PPS_FLAG_BOTTOM_FIELD_PIC_ORDER_IN_FRAME_PRESENT,
    V4L2_H264_PPS_FLAG_DEBLOCKING_FILTER_CONTROL_PRESENT,
    V4L2_H264_PPS_FLAG_ENTROPY_CODING_MODE,
    V4L2_H264_PPS_FLAG_REDUNDANT_PIC_CNT_PRESENT,
    V4L2_H264_PPS_FLAG_WEIGHTED_PRED,
    V4L2_H264_SLICE_FLAG_DIRECT_SPATIAL_MV_PRED,
    V4L2_H264_SLICE_FLAG_SP_FOR_SWITCH,
    V4L2_H264_SLICE_TYPE_B,
    V4L2_H264_SLICE_TYPE_I,
    V4L2_H264_SLICE_TYPE_P,
    V4L2_H264_SLICE_TYPE_SI,
    V4L2_H264_SLICE_TYPE_SP,
    V4L2_H264_SPS_FLAG_DELTA_PIC_ORDER_ALWAYS_ZERO,
    V4L2_H264_SPS_FLAG_FRAME_MBS_ONLY,
    V4L2_H264_SPS_FLAG_SEPARATE_COLOUR_PLANE,
    Pps,
    SliceParams,
    Sps,
)
from daedalus.stateless.h264_syntax import NAL_IDR, NAL_SLICE, BitReader, H264SyntaxError, nal_rbsp


@dataclass
class SliceHeader:
    """The syntax elements of one slice header (7.4.3), the V4L2 bit sizes, and
    the presence of the optional ones (what a check may compare)."""

    nal_ref_idc: int
    nal_unit_type: int
    first_mb_in_slice: int = 0
    slice_type: int = 0            # slice_type % 5 (V4L2_H264_SLICE_TYPE_*)
    pic_parameter_set_id: int = 0
    colour_plane_id: int = 0
    frame_num: int = 0
    field_pic_flag: bool = False
    bottom_field_flag: bool = False
    idr_pic_id: int = 0
    pic_order_cnt_lsb: int = 0
    delta_pic_order_cnt_bottom: int = 0
    delta_pic_order_cnt0: int = 0
    delta_pic_order_cnt1: int = 0
    redundant_pic_cnt: int = 0
    direct_spatial_mv_pred_flag: bool = False
    num_ref_idx_l0_active_minus1: int = 0
    num_ref_idx_l1_active_minus1: int = 0
    no_output_of_prior_pics_flag: bool = False
    long_term_reference_flag: bool = False
    adaptive_ref_pic_marking_mode_flag: bool = False
    # (memory_management_control_operation, value1, value2) with value1 / value2 the
    # operation's difference_of_pic_nums_minus1 / long_term_pic_num /
    # long_term_frame_idx / max_long_term_frame_idx_plus1 as 8.2.5.4 reads them
    mmco: list[tuple[int, int, int]] = field(default_factory=list)
    cabac_init_idc: int = 0
    slice_qp_delta: int = 0
    sp_for_switch_flag: bool = False
    slice_qs_delta: int = 0
    disable_deblocking_filter_idc: int = 0
    slice_alpha_c0_offset_div2: int = 0
    slice_beta_offset_div2: int = 0
    header_bit_size: int = 0
    pic_order_cnt_bit_size: int = 0
    dec_ref_pic_marking_bit_size: int = 0
    present: frozenset[str] = frozenset()  # optional elements the bitstream carries

    @property
    def idr(self) -> bool:
        return self.nal_unit_type == NAL_IDR

    def slice_params(self) -> SliceParams:
        """struct v4l2_ctrl_h264_slice_params of this slice, as GStreamer's
        fill_slice_params (reference lists left unused: this client's requests are
        frame-based, where the lists are the decoder's business)."""
        return SliceParams(
            header_bit_size=self.header_bit_size, first_mb_in_slice=self.first_mb_in_slice,
            slice_type=self.slice_type, colour_plane_id=self.colour_plane_id,
            redundant_pic_cnt=self.redundant_pic_cnt, cabac_init_idc=self.cabac_init_idc,
            slice_qp_delta=self.slice_qp_delta, slice_qs_delta=self.slice_qs_delta,
            disable_deblocking_filter_idc=self.disable_deblocking_filter_idc,
            slice_alpha_c0_offset_div2=self.slice_alpha_c0_offset_div2,
            slice_beta_offset_div2=self.slice_beta_offset_div2,
            num_ref_idx_l0_active_minus1=self.num_ref_idx_l0_active_minus1,
            num_ref_idx_l1_active_minus1=self.num_ref_idx_l1_active_minus1,
            flags=(V4L2_H264_SLICE_FLAG_DIRECT_SPATIAL_MV_PRED
                   if self.direct_spatial_mv_pred_flag else 0)
            | (V4L2_H264_SLICE_FLAG_SP_FOR_SWITCH if self.sp_for_switch_flag else 0))


def slice_pps_id(nal: bytes) -> int:
    """pic_parameter_set_id of a slice NAL unit (its third syntax element)."""
    r = BitReader(nal_rbsp(nal)[:16])
    r.ue()
    r.ue()
    return r.ue()


def _skip_ref_pic_list_modification(r: BitReader) -> None:
    if r.flag():  # ref_pic_list_modification_flag_lX
        while True:
            idc = r.ue()
            if idc == 3:
                return
            if idc > 5:
                raise H264SyntaxError(f"modification_of_pic_nums_idc {idc}")
            r.ue()  # abs_diff_pic_num_minus1 / long_term_pic_num / abs_diff_view_idx_minus1


def _skip_pred_weight_table(r: BitReader, h: SliceHeader, chroma_array_type: int) -> None:
    r.ue()  # luma_log2_weight_denom
    if chroma_array_type:
        r.ue()  # chroma_log2_weight_denom
    lists = [h.num_ref_idx_l0_active_minus1]
    if h.slice_type == V4L2_H264_SLICE_TYPE_B:
        lists.append(h.num_ref_idx_l1_active_minus1)
    for n in lists:
        for _ in range(n + 1):
            if r.flag():
                r.se()
                r.se()
            if chroma_array_type and r.flag():
                for _ in range(4):
                    r.se()


def parse_slice_header(nal: bytes, sps: Sps, pps: Pps) -> SliceHeader:
    """slice_header() of a slice NAL unit (type 1 or 5, header byte included)
    against the SPS / PPS controls it refers to."""
    if not nal:
        raise H264SyntaxError("empty NAL unit")
    kind = nal[0] & 0x1F
    if kind not in (NAL_SLICE, NAL_IDR):
        raise H264SyntaxError(f"NAL unit type {kind} is not a slice of a picture (1 or 5)")
    r = BitReader(nal_rbsp(nal))
    h = SliceHeader(nal_ref_idc=nal[0] >> 5 & 3, nal_unit_type=kind)
    present: set[str] = set()
    h.first_mb_in_slice = r.ue()
    raw_type = r.ue()
    if raw_type > 9:
        raise H264SyntaxError(f"slice_type {raw_type}")
    h.slice_type = raw_type % 5
    h.pic_parameter_set_id = r.ue()
    if h.pic_parameter_set_id != pps.pic_parameter_set_id:
        raise H264SyntaxError(f"the slice names PPS {h.pic_parameter_set_id}, the PPS given is "
                              f"{pps.pic_parameter_set_id}")
    if pps.num_slice_groups_minus1:
        raise H264SyntaxError("slice groups (FMO) are not supported")
    if sps.flags & V4L2_H264_SPS_FLAG_SEPARATE_COLOUR_PLANE:
        h.colour_plane_id = r.u(2)
        present.add("colour_plane_id")
    h.frame_num = r.u(sps.log2_max_frame_num_minus4 + 4)
    if not sps.flags & V4L2_H264_SPS_FLAG_FRAME_MBS_ONLY:
        h.field_pic_flag = r.flag()
        if h.field_pic_flag:
            h.bottom_field_flag = r.flag()
    if h.idr:
        h.idr_pic_id = r.ue()
    bottom_present = (pps.flags & V4L2_H264_PPS_FLAG_BOTTOM_FIELD_PIC_ORDER_IN_FRAME_PRESENT
                      and not h.field_pic_flag)
    start = r.pos
    if sps.pic_order_cnt_type == 0:
        h.pic_order_cnt_lsb = r.u(sps.log2_max_pic_order_cnt_lsb_minus4 + 4)
        if bottom_present:
            h.delta_pic_order_cnt_bottom = r.se()
    elif (sps.pic_order_cnt_type == 1
          and not sps.flags & V4L2_H264_SPS_FLAG_DELTA_PIC_ORDER_ALWAYS_ZERO):
        h.delta_pic_order_cnt0 = r.se()
        if bottom_present:
            h.delta_pic_order_cnt1 = r.se()
    h.pic_order_cnt_bit_size = r.pos - start
    if pps.flags & V4L2_H264_PPS_FLAG_REDUNDANT_PIC_CNT_PRESENT:
        h.redundant_pic_cnt = r.ue()
        present.add("redundant_pic_cnt")
    if h.slice_type == V4L2_H264_SLICE_TYPE_B:
        h.direct_spatial_mv_pred_flag = r.flag()
        present.add("direct_spatial_mv_pred_flag")
    h.num_ref_idx_l0_active_minus1 = pps.num_ref_idx_l0_default_active_minus1
    h.num_ref_idx_l1_active_minus1 = pps.num_ref_idx_l1_default_active_minus1
    inter = h.slice_type in (V4L2_H264_SLICE_TYPE_P, V4L2_H264_SLICE_TYPE_SP,
                             V4L2_H264_SLICE_TYPE_B)
    if inter:
        if r.flag():  # num_ref_idx_active_override_flag
            h.num_ref_idx_l0_active_minus1 = r.ue()
            if h.slice_type == V4L2_H264_SLICE_TYPE_B:
                h.num_ref_idx_l1_active_minus1 = r.ue()
        present.add("num_ref_idx_l0_active_minus1")
        if h.slice_type == V4L2_H264_SLICE_TYPE_B:
            present.add("num_ref_idx_l1_active_minus1")
        if h.num_ref_idx_l0_active_minus1 > 31 or h.num_ref_idx_l1_active_minus1 > 31:
            raise H264SyntaxError("num_ref_idx_active_minus1 above 31")
    if h.slice_type not in (V4L2_H264_SLICE_TYPE_I, V4L2_H264_SLICE_TYPE_SI):
        _skip_ref_pic_list_modification(r)
        if h.slice_type == V4L2_H264_SLICE_TYPE_B:
            _skip_ref_pic_list_modification(r)
    chroma_array_type = (0 if sps.flags & V4L2_H264_SPS_FLAG_SEPARATE_COLOUR_PLANE
                         else sps.chroma_format_idc)
    if ((pps.flags & V4L2_H264_PPS_FLAG_WEIGHTED_PRED
         and h.slice_type in (V4L2_H264_SLICE_TYPE_P, V4L2_H264_SLICE_TYPE_SP))
            or (pps.weighted_bipred_idc == 1 and h.slice_type == V4L2_H264_SLICE_TYPE_B)):
        _skip_pred_weight_table(r, h, chroma_array_type)
    if h.nal_ref_idc:
        start = r.pos
        if h.idr:
            h.no_output_of_prior_pics_flag = r.flag()
            h.long_term_reference_flag = r.flag()
        else:
            h.adaptive_ref_pic_marking_mode_flag = r.flag()
            if h.adaptive_ref_pic_marking_mode_flag:
                while True:
                    op = r.ue()
                    if op == 0:
                        break
                    if op > 6:
                        raise H264SyntaxError(f"memory_management_control_operation {op}")
                    v1 = r.ue() if op in (1, 2, 3, 4, 6) else 0
                    v2 = r.ue() if op == 3 else 0
                    h.mmco.append((op, v1, v2))
                    if len(h.mmco) > 66:
                        raise H264SyntaxError("more memory management operations than a DPB")
        h.dec_ref_pic_marking_bit_size = r.pos - start
    if (pps.flags & V4L2_H264_PPS_FLAG_ENTROPY_CODING_MODE
            and h.slice_type not in (V4L2_H264_SLICE_TYPE_I, V4L2_H264_SLICE_TYPE_SI)):
        h.cabac_init_idc = r.ue()
        present.add("cabac_init_idc")
    h.slice_qp_delta = r.se()
    if h.slice_type in (V4L2_H264_SLICE_TYPE_SP, V4L2_H264_SLICE_TYPE_SI):
        if h.slice_type == V4L2_H264_SLICE_TYPE_SP:
            h.sp_for_switch_flag = r.flag()
        h.slice_qs_delta = r.se()
        present.add("slice_qs_delta")
    if pps.flags & V4L2_H264_PPS_FLAG_DEBLOCKING_FILTER_CONTROL_PRESENT:
        h.disable_deblocking_filter_idc = r.ue()
        present.add("disable_deblocking_filter_idc")
        if h.disable_deblocking_filter_idc != 1:
            h.slice_alpha_c0_offset_div2 = r.se()
            h.slice_beta_offset_div2 = r.se()
            present.add("slice_alpha_c0_offset_div2")
            present.add("slice_beta_offset_div2")
    h.header_bit_size = 8 + r.pos
    h.present = frozenset(present)
    return h


# What a SLICE_PARAMS control must agree on with the slice it describes: the
# elements always in the bitstream, and the optional ones when present.
SLICE_PARAMS_ALWAYS = ("header_bit_size", "first_mb_in_slice", "slice_type", "slice_qp_delta")
SLICE_PARAMS_OPTIONAL = ("colour_plane_id", "redundant_pic_cnt", "cabac_init_idc",
                         "slice_qs_delta", "disable_deblocking_filter_idc",
                         "slice_alpha_c0_offset_div2", "slice_beta_offset_div2",
                         "num_ref_idx_l0_active_minus1", "num_ref_idx_l1_active_minus1")


def slice_params_problems(ctrl: SliceParams, h: SliceHeader) -> list[str]:
    """Where a SLICE_PARAMS control contradicts the slice header *h*."""
    out = []
    for name in SLICE_PARAMS_ALWAYS + tuple(n for n in SLICE_PARAMS_OPTIONAL if n in h.present):
        got, want = getattr(ctrl, name), getattr(h, name)
        if got != want:
            out.append(f"SLICE_PARAMS.{name} {got}, the slice's {want}")
    if "direct_spatial_mv_pred_flag" in h.present:
        got_flag = bool(ctrl.flags & V4L2_H264_SLICE_FLAG_DIRECT_SPATIAL_MV_PRED)
        if got_flag != h.direct_spatial_mv_pred_flag:
            out.append(f"SLICE_PARAMS DIRECT_SPATIAL_MV_PRED {int(got_flag)}, the slice's "
                       f"{int(h.direct_spatial_mv_pred_flag)}")
    return out
