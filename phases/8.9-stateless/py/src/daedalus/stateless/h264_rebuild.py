"""SPS / PPS NAL units rebuilt from the V4L2 stateless H.264 controls alone.

A stateless client sends parameter sets as controls, never as NAL units; the
daemon's decoder (FFmpeg) wants NAL units. ``sps_nal`` and ``pps_nal`` write
Annex-B units whose parse gives back the same controls, and which make a
decoder produce the same samples as the client's original units.

What the controls do not carry, and why the rebuilt units still decode to the
same pixels:

* VUI: written absent (vui_parameters_present_flag = 0). vui_parameters() hold
  the sample aspect ratio, overscan, colour description (primaries, transfer,
  matrix, full-range flag), chroma sample location, timing and HRD parameters,
  pic_struct presence, and bitstream_restriction (motion-vector limits,
  num_reorder_frames, max_dec_frame_buffering). None of them is an input of
  the decoding process of clause 8 (sample reconstruction, prediction,
  deblocking, reference marking): they describe how to display, time and
  buffer the output. num_reorder_frames / max_dec_frame_buffering only bound
  the *output* delay; a decoder without them assumes the level's maximum DPB
  size and outputs the same pictures in the same POC order, only later. (In
  a stateless decoder output order is anyway the client's business: frames are
  returned in decode order.) The full-range flag only relabels FFmpeg's pixel
  format (yuvj420p instead of yuv420p), the sample values are the same.
* Frame cropping: V4L2 has no cropping fields; a stateless decoder decodes
  whole macroblocks and the client crops (GStreamer computes the display
  rectangle from its own SPS parse). ``sps_nal`` therefore writes no cropping
  unless given one (``crop=``); cropping never changes decoded samples, only
  which of them are output.
* Scaling matrices: V4L2 passes the one resolved matrix set that applies to
  the picture, not the SPS's and PPS's separately, nor whether a list was
  sent as "use Default" or through a fall-back rule. The rebuilt units write
  every list *explicitly* (scaling_list_present_flag = 1, all values
  delta-coded) instead of re-deriving useDefaultScalingMatrixFlag / fall-back
  flags: explicit lists give the decoder exactly the matrix the client passed,
  whatever rule produced it, so the dequantisation (8.5.9) is bit-exact; a
  re-derivation could only save a few bytes and would be a second, fallible
  copy of Table 7-2. ``pps_nal`` puts them in the PPS (pic_scaling_matrix_-
  present_flag = 1 over a matrix-less SPS); ``parameter_set_nals`` puts them in
  the SPS instead (seq_scaling_matrix_present_flag = 1, all 8 or 12 lists) with a
  PPS that inherits them, which makes *every* list of the control the decoder's,
  also the 8x8 ones a PPS without transform_8x8_mode_flag cannot send (there
  they are unused, and a PPS matrix would leave them to the fall-back rule).
* Slice groups (FMO, Baseline / Extended only): the control has
  num_slice_groups_minus1 but not slice_group_map_type and its maps, so a PPS
  with slice groups cannot be rebuilt (ValueError); V4L2 drivers and FFmpeg
  do not decode FMO either.
"""

from __future__ import annotations

from daedalus.stateless.h264_ctrls import (
    V4L2_H264_PPS_FLAG_BOTTOM_FIELD_PIC_ORDER_IN_FRAME_PRESENT,
    V4L2_H264_PPS_FLAG_CONSTRAINED_INTRA_PRED,
    V4L2_H264_PPS_FLAG_DEBLOCKING_FILTER_CONTROL_PRESENT,
    V4L2_H264_PPS_FLAG_ENTROPY_CODING_MODE,
    V4L2_H264_PPS_FLAG_REDUNDANT_PIC_CNT_PRESENT,
    V4L2_H264_PPS_FLAG_SCALING_MATRIX_PRESENT,
    V4L2_H264_PPS_FLAG_TRANSFORM_8X8_MODE,
    V4L2_H264_PPS_FLAG_WEIGHTED_PRED,
    V4L2_H264_SPS_FLAG_DELTA_PIC_ORDER_ALWAYS_ZERO,
    V4L2_H264_SPS_FLAG_DIRECT_8X8_INFERENCE,
    V4L2_H264_SPS_FLAG_FRAME_MBS_ONLY,
    V4L2_H264_SPS_FLAG_GAPS_IN_FRAME_NUM_VALUE_ALLOWED,
    V4L2_H264_SPS_FLAG_MB_ADAPTIVE_FRAME_FIELD,
    V4L2_H264_SPS_FLAG_QPPRIME_Y_ZERO_TRANSFORM_BYPASS,
    V4L2_H264_SPS_FLAG_SEPARATE_COLOUR_PLANE,
    Pps,
    ScalingMatrix,
    Sps,
    check_ctrl,
    sps_has_chroma_format,
)
from daedalus.stateless.h264_syntax import (
    NAL_PPS,
    NAL_SPS,
    BitWriter,
    Crop,
    annexb,
    matrix_lists,
    write_scaling_list,
)

NAL_REF_IDC = 3  # any non-zero value is allowed for SPS / PPS (7.4.1); x264 and FFmpeg use 3


def _write_lists(w: BitWriter, matrix: ScalingMatrix, chroma_format_idc: int, n: int) -> None:
    for values in matrix_lists(matrix, chroma_format_idc)[:n]:
        w.flag(1)  # scaling_list_present_flag: explicit, see the module docstring
        write_scaling_list(w, values)


def sps_rbsp(sps: Sps, scaling: ScalingMatrix | None = None, *, crop: Crop | None = None) -> bytes:
    """seq_parameter_set_rbsp() of *sps* (7.3.2.1.1): with seq_scaling_matrix_present_flag
    and every list explicit when *scaling* is given, frame cropping when *crop* is given,
    never a VUI."""
    check_ctrl(sps)
    flags = sps.flags
    w = BitWriter()
    w.u(8, sps.profile_idc)
    w.u(8, sum(0x80 >> i for i in range(6) if sps.constraint_set_flags & (1 << i)))
    if sps.constraint_set_flags >> 6:
        raise ValueError(f"constraint_set_flags {sps.constraint_set_flags:#x}: bits above set5")
    w.u(8, sps.level_idc)
    w.ue(sps.seq_parameter_set_id)
    if sps_has_chroma_format(sps.profile_idc):
        w.ue(sps.chroma_format_idc)
        if sps.chroma_format_idc == 3:
            w.flag(flags & V4L2_H264_SPS_FLAG_SEPARATE_COLOUR_PLANE)
        elif flags & V4L2_H264_SPS_FLAG_SEPARATE_COLOUR_PLANE:
            raise ValueError("separate_colour_plane_flag without chroma_format_idc 3")
        w.ue(sps.bit_depth_luma_minus8)
        w.ue(sps.bit_depth_chroma_minus8)
        w.flag(flags & V4L2_H264_SPS_FLAG_QPPRIME_Y_ZERO_TRANSFORM_BYPASS)
        w.flag(scaling is not None)
        if scaling is not None:
            _write_lists(w, scaling, sps.chroma_format_idc, 8 if sps.chroma_format_idc != 3 else 12)
    elif (sps.chroma_format_idc != 1 or sps.bit_depth_luma_minus8 or sps.bit_depth_chroma_minus8
          or flags & (V4L2_H264_SPS_FLAG_SEPARATE_COLOUR_PLANE
                      | V4L2_H264_SPS_FLAG_QPPRIME_Y_ZERO_TRANSFORM_BYPASS)
          or scaling is not None):
        raise ValueError(f"profile_idc {sps.profile_idc} has no chroma format, bit depth, "
                         "transform-bypass or scaling-matrix syntax: 4:2:0 8-bit flat only")
    w.ue(sps.log2_max_frame_num_minus4)
    w.ue(sps.pic_order_cnt_type)
    if sps.pic_order_cnt_type == 0:
        w.ue(sps.log2_max_pic_order_cnt_lsb_minus4)
    elif sps.pic_order_cnt_type == 1:
        w.flag(flags & V4L2_H264_SPS_FLAG_DELTA_PIC_ORDER_ALWAYS_ZERO)
        w.se(sps.offset_for_non_ref_pic)
        w.se(sps.offset_for_top_to_bottom_field)
        w.ue(sps.num_ref_frames_in_pic_order_cnt_cycle)
        for i in range(sps.num_ref_frames_in_pic_order_cnt_cycle):
            w.se(sps.offset_for_ref_frame[i])
    w.ue(sps.max_num_ref_frames)
    w.flag(flags & V4L2_H264_SPS_FLAG_GAPS_IN_FRAME_NUM_VALUE_ALLOWED)
    w.ue(sps.pic_width_in_mbs_minus1)
    w.ue(sps.pic_height_in_map_units_minus1)
    frame_mbs_only = bool(flags & V4L2_H264_SPS_FLAG_FRAME_MBS_ONLY)
    w.flag(frame_mbs_only)
    if not frame_mbs_only:
        w.flag(flags & V4L2_H264_SPS_FLAG_MB_ADAPTIVE_FRAME_FIELD)
    elif flags & V4L2_H264_SPS_FLAG_MB_ADAPTIVE_FRAME_FIELD:
        raise ValueError("mb_adaptive_frame_field_flag with frame_mbs_only_flag")
    w.flag(flags & V4L2_H264_SPS_FLAG_DIRECT_8X8_INFERENCE)
    w.flag(crop is not None)
    if crop is not None:
        for offset in (crop.left, crop.right, crop.top, crop.bottom):
            w.ue(offset)
    w.flag(0)  # vui_parameters_present_flag: see the module docstring
    return w.rbsp()


def sps_nal(sps: Sps, scaling: ScalingMatrix | None = None, *, crop: Crop | None = None) -> bytes:
    """The Annex-B SPS NAL unit (start code included) of the controls; see sps_rbsp."""
    return annexb(NAL_REF_IDC, NAL_SPS, sps_rbsp(sps, scaling, crop=crop))


def pps_rbsp(pps: Pps, sps: Sps, scaling: ScalingMatrix | None = None, *,
             matrix_in_sps: bool = False) -> bytes:
    """pic_parameter_set_rbsp() of *pps* (7.3.2.2). With
    V4L2_H264_PPS_FLAG_SCALING_MATRIX_PRESENT the lists of *scaling* are written
    explicitly (pic_scaling_matrix_present_flag = 1), unless *matrix_in_sps* says the
    SPS written with sps_nal(sps, scaling) carries them (then the PPS inherits them).
    The transform_8x8_mode_flag / matrix / second_chroma_qp_index_offset tail is
    written only when one of them is not its inferred value."""
    check_ctrl(pps)
    if pps.seq_parameter_set_id != sps.seq_parameter_set_id:
        raise ValueError(f"PPS names SPS {pps.seq_parameter_set_id}, "
                         f"given SPS {sps.seq_parameter_set_id}")
    if pps.num_slice_groups_minus1:
        raise ValueError("slice groups (FMO): the V4L2 PPS has no slice_group_map_type / maps")
    flags = pps.flags
    with_matrix = bool(flags & V4L2_H264_PPS_FLAG_SCALING_MATRIX_PRESENT) and not matrix_in_sps
    if with_matrix and scaling is None:
        raise ValueError("V4L2_H264_PPS_FLAG_SCALING_MATRIX_PRESENT without a scaling matrix")
    transform_8x8 = bool(flags & V4L2_H264_PPS_FLAG_TRANSFORM_8X8_MODE)
    w = BitWriter()
    w.ue(pps.pic_parameter_set_id)
    w.ue(pps.seq_parameter_set_id)
    w.flag(flags & V4L2_H264_PPS_FLAG_ENTROPY_CODING_MODE)
    w.flag(flags & V4L2_H264_PPS_FLAG_BOTTOM_FIELD_PIC_ORDER_IN_FRAME_PRESENT)
    w.ue(pps.num_slice_groups_minus1)
    w.ue(pps.num_ref_idx_l0_default_active_minus1)
    w.ue(pps.num_ref_idx_l1_default_active_minus1)
    w.flag(flags & V4L2_H264_PPS_FLAG_WEIGHTED_PRED)
    w.u(2, pps.weighted_bipred_idc)
    w.se(pps.pic_init_qp_minus26)
    w.se(pps.pic_init_qs_minus26)
    w.se(pps.chroma_qp_index_offset)
    w.flag(flags & V4L2_H264_PPS_FLAG_DEBLOCKING_FILTER_CONTROL_PRESENT)
    w.flag(flags & V4L2_H264_PPS_FLAG_CONSTRAINED_INTRA_PRED)
    w.flag(flags & V4L2_H264_PPS_FLAG_REDUNDANT_PIC_CNT_PRESENT)
    if transform_8x8 or with_matrix or (
            pps.second_chroma_qp_index_offset != pps.chroma_qp_index_offset):
        w.flag(transform_8x8)
        w.flag(with_matrix)
        if with_matrix and scaling is not None:
            n = 6 + (2 if sps.chroma_format_idc != 3 else 6) * transform_8x8
            _write_lists(w, scaling, sps.chroma_format_idc, n)
        w.se(pps.second_chroma_qp_index_offset)
    return w.rbsp()


def pps_nal(pps: Pps, sps: Sps, scaling: ScalingMatrix | None = None, *,
            matrix_in_sps: bool = False) -> bytes:
    """The Annex-B PPS NAL unit (start code included) of the controls; see pps_rbsp."""
    return annexb(NAL_REF_IDC, NAL_PPS, pps_rbsp(pps, sps, scaling, matrix_in_sps=matrix_in_sps))


def parameter_set_nals(sps: Sps, pps: Pps, scaling: ScalingMatrix | None = None, *,
                       crop: Crop | None = None) -> bytes:
    """SPS then PPS (Annex B) for one request's controls. When the PPS flag says a
    matrix applies, the SPS carries it, every list explicit, and the PPS inherits it
    (pic_scaling_matrix_present_flag = 0): every list the control carries, 8x8 ones
    included, is then exactly the decoder's. (Write them per request: one SPS can
    only carry one matrix, while PPSs of one SPS may have different ones.)"""
    matrix = scaling if pps.flags & V4L2_H264_PPS_FLAG_SCALING_MATRIX_PRESENT else None
    return sps_nal(sps, matrix, crop=crop) + pps_nal(pps, sps, matrix, matrix_in_sps=True)
