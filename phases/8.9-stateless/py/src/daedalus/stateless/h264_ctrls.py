"""The V4L2 stateless H.264 parameter-set controls, as plain typed dataclasses.

Mirrors of the uAPI structs in ``<linux/v4l2-controls.h>`` (kernel 6.12):
``struct v4l2_ctrl_h264_sps`` (V4L2_CID_STATELESS_H264_SPS),
``struct v4l2_ctrl_h264_pps`` (V4L2_CID_STATELESS_H264_PPS) and
``struct v4l2_ctrl_h264_scaling_matrix`` (V4L2_CID_STATELESS_H264_SCALING_MATRIX):
every member, same name, same order; the flag constants carry the header's
names and bit values. ``C_TYPES`` gives each member's C type so the fields can
later be mapped onto the cffi structs of the protocol header.

What the controls mean (Documentation/userspace-api/media/v4l/
ext-ctrls-codec-stateless.rst): every member is the H.264 syntax element of
the same name (7.4.2.1.1 / 7.4.2.2), except

* ``constraint_set_flags``: constraint_set0_flag ... constraint_set5_flag as
  bits 0x01 ... 0x20 (set0 is the *lowest* bit, while in the bitstream it is
  the first, i.e. most significant, bit of the byte after profile_idc);
* ``offset_for_ref_frame[255]``: entries 0 ..
  num_ref_frames_in_pic_order_cnt_cycle - 1 are the syntax elements, the rest
  are zero (GStreamer copies exactly that many into a zeroed struct); 255
  entries suffice since num_ref_frames_in_pic_order_cnt_cycle <= 255;
* ``V4L2_H264_PPS_FLAG_SCALING_MATRIX_PRESENT``: set when *either* the SPS
  (seq_scaling_matrix_present_flag) or the PPS (pic_scaling_matrix_present_flag)
  carries a matrix; the SCALING_MATRIX control then holds the matrices that
  apply to the picture, already resolved through the fall-back rules of
  Table 7-2;
* ``scaling_list_4x4[6][16]`` / ``scaling_list_8x8[6][64]``: "after applying the
  inverse scanning process", i.e. in *raster* order (row-major), not in the
  zig-zag order of the bitstream; 4x4 lists ordered Intra Y, Intra Cb,
  Intra Cr, Inter Y, Inter Cb, Inter Cr and 8x8 lists Intra Y, Inter Y,
  Intra Cb, Inter Cb, Intra Cr, Inter Cr -- both exactly Table 7-2's indices
  0..5 and 6..11.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

# --- flags, as in the header --------------------------------------------------

V4L2_H264_SPS_CONSTRAINT_SET0_FLAG = 0x01
V4L2_H264_SPS_CONSTRAINT_SET1_FLAG = 0x02
V4L2_H264_SPS_CONSTRAINT_SET2_FLAG = 0x04
V4L2_H264_SPS_CONSTRAINT_SET3_FLAG = 0x08
V4L2_H264_SPS_CONSTRAINT_SET4_FLAG = 0x10
V4L2_H264_SPS_CONSTRAINT_SET5_FLAG = 0x20

V4L2_H264_SPS_FLAG_SEPARATE_COLOUR_PLANE = 0x01
V4L2_H264_SPS_FLAG_QPPRIME_Y_ZERO_TRANSFORM_BYPASS = 0x02
V4L2_H264_SPS_FLAG_DELTA_PIC_ORDER_ALWAYS_ZERO = 0x04
V4L2_H264_SPS_FLAG_GAPS_IN_FRAME_NUM_VALUE_ALLOWED = 0x08
V4L2_H264_SPS_FLAG_FRAME_MBS_ONLY = 0x10
V4L2_H264_SPS_FLAG_MB_ADAPTIVE_FRAME_FIELD = 0x20
V4L2_H264_SPS_FLAG_DIRECT_8X8_INFERENCE = 0x40

V4L2_H264_PPS_FLAG_ENTROPY_CODING_MODE = 0x0001
V4L2_H264_PPS_FLAG_BOTTOM_FIELD_PIC_ORDER_IN_FRAME_PRESENT = 0x0002
V4L2_H264_PPS_FLAG_WEIGHTED_PRED = 0x0004
V4L2_H264_PPS_FLAG_DEBLOCKING_FILTER_CONTROL_PRESENT = 0x0008
V4L2_H264_PPS_FLAG_CONSTRAINED_INTRA_PRED = 0x0010
V4L2_H264_PPS_FLAG_REDUNDANT_PIC_CNT_PRESENT = 0x0020
V4L2_H264_PPS_FLAG_TRANSFORM_8X8_MODE = 0x0040
V4L2_H264_PPS_FLAG_SCALING_MATRIX_PRESENT = 0x0080

# V4L2_H264_SPS_HAS_CHROMA_FORMAT(sps): the profiles whose SPS carries
# chroma_format_idc, bit depths, qpprime_y_zero_transform_bypass_flag and the
# sequence scaling matrix (7.3.2.1.1).
PROFILES_WITH_CHROMA_FORMAT = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139,
                                         134, 135})


def sps_has_chroma_format(profile_idc: int) -> bool:
    """V4L2_H264_SPS_HAS_CHROMA_FORMAT of the header."""
    return profile_idc in PROFILES_WITH_CHROMA_FORMAT


# --- the structs -------------------------------------------------------------


def _zeros(n: int) -> list[int]:
    return [0] * n


@dataclass
class Sps:
    """struct v4l2_ctrl_h264_sps."""

    profile_idc: int = 0
    constraint_set_flags: int = 0
    level_idc: int = 0
    seq_parameter_set_id: int = 0
    chroma_format_idc: int = 0
    bit_depth_luma_minus8: int = 0
    bit_depth_chroma_minus8: int = 0
    log2_max_frame_num_minus4: int = 0
    pic_order_cnt_type: int = 0
    log2_max_pic_order_cnt_lsb_minus4: int = 0
    max_num_ref_frames: int = 0
    num_ref_frames_in_pic_order_cnt_cycle: int = 0
    offset_for_ref_frame: list[int] = field(default_factory=lambda: _zeros(255))
    offset_for_non_ref_pic: int = 0
    offset_for_top_to_bottom_field: int = 0
    pic_width_in_mbs_minus1: int = 0
    pic_height_in_map_units_minus1: int = 0
    flags: int = 0


@dataclass
class Pps:
    """struct v4l2_ctrl_h264_pps."""

    pic_parameter_set_id: int = 0
    seq_parameter_set_id: int = 0
    num_slice_groups_minus1: int = 0
    num_ref_idx_l0_default_active_minus1: int = 0
    num_ref_idx_l1_default_active_minus1: int = 0
    weighted_bipred_idc: int = 0
    pic_init_qp_minus26: int = 0
    pic_init_qs_minus26: int = 0
    chroma_qp_index_offset: int = 0
    second_chroma_qp_index_offset: int = 0
    flags: int = 0


@dataclass
class ScalingMatrix:
    """struct v4l2_ctrl_h264_scaling_matrix (raster order, see the module docstring)."""

    scaling_list_4x4: list[list[int]] = field(
        default_factory=lambda: [_zeros(16) for _ in range(6)])
    scaling_list_8x8: list[list[int]] = field(
        default_factory=lambda: [_zeros(64) for _ in range(6)])

    @classmethod
    def flat(cls) -> ScalingMatrix:
        """Flat_4x4_16 / Flat_8x8_16 everywhere (what applies without any matrix)."""
        return cls([[16] * 16 for _ in range(6)], [[16] * 64 for _ in range(6)])


# member -> (C type, array shape) of each struct; () for a scalar
C_TYPES: dict[type, dict[str, tuple[str, tuple[int, ...]]]] = {
    Sps: {
        "profile_idc": ("__u8", ()), "constraint_set_flags": ("__u8", ()),
        "level_idc": ("__u8", ()), "seq_parameter_set_id": ("__u8", ()),
        "chroma_format_idc": ("__u8", ()), "bit_depth_luma_minus8": ("__u8", ()),
        "bit_depth_chroma_minus8": ("__u8", ()), "log2_max_frame_num_minus4": ("__u8", ()),
        "pic_order_cnt_type": ("__u8", ()), "log2_max_pic_order_cnt_lsb_minus4": ("__u8", ()),
        "max_num_ref_frames": ("__u8", ()),
        "num_ref_frames_in_pic_order_cnt_cycle": ("__u8", ()),
        "offset_for_ref_frame": ("__s32", (255,)), "offset_for_non_ref_pic": ("__s32", ()),
        "offset_for_top_to_bottom_field": ("__s32", ()),
        "pic_width_in_mbs_minus1": ("__u16", ()),
        "pic_height_in_map_units_minus1": ("__u16", ()), "flags": ("__u32", ()),
    },
    Pps: {
        "pic_parameter_set_id": ("__u8", ()), "seq_parameter_set_id": ("__u8", ()),
        "num_slice_groups_minus1": ("__u8", ()),
        "num_ref_idx_l0_default_active_minus1": ("__u8", ()),
        "num_ref_idx_l1_default_active_minus1": ("__u8", ()),
        "weighted_bipred_idc": ("__u8", ()), "pic_init_qp_minus26": ("__s8", ()),
        "pic_init_qs_minus26": ("__s8", ()), "chroma_qp_index_offset": ("__s8", ()),
        "second_chroma_qp_index_offset": ("__s8", ()), "flags": ("__u16", ()),
    },
    ScalingMatrix: {
        "scaling_list_4x4": ("__u8", (6, 16)), "scaling_list_8x8": ("__u8", (6, 64)),
    },
}

_RANGES = {"__u8": (0, 0xFF), "__s8": (-0x80, 0x7F), "__u16": (0, 0xFFFF),
           "__s32": (-0x8000_0000, 0x7FFF_FFFF), "__u32": (0, 0xFFFF_FFFF)}


def _check(name: str, value: object, ctype: str, shape: tuple[int, ...]) -> None:
    if shape:
        if not isinstance(value, list) or len(value) != shape[0]:
            raise ValueError(f"{name}: want a list of {shape[0]}, got {value!r:.60}")
        for i, item in enumerate(value):
            _check(f"{name}[{i}]", item, ctype, shape[1:])
        return
    lo, hi = _RANGES[ctype]
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"{name} = {value!r} does not fit {ctype}")


def check_ctrl(ctrl: Sps | Pps | ScalingMatrix) -> None:
    """ValueError unless every member fits its C type and array shape."""
    types = C_TYPES[type(ctrl)]
    assert [f.name for f in fields(ctrl)] == list(types)
    for name, (ctype, shape) in types.items():
        _check(name, getattr(ctrl, name), ctype, shape)
