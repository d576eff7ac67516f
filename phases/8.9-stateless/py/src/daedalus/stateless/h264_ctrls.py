"""The V4L2 stateless H.264 controls, as plain typed dataclasses.

Mirrors of the uAPI structs in ``<linux/v4l2-controls.h>`` (kernel 6.12):
``struct v4l2_ctrl_h264_sps`` (V4L2_CID_STATELESS_H264_SPS),
``struct v4l2_ctrl_h264_pps`` (V4L2_CID_STATELESS_H264_PPS) and
``struct v4l2_ctrl_h264_scaling_matrix`` (V4L2_CID_STATELESS_H264_SCALING_MATRIX):
every member, same name, same order; the flag constants carry the header's
names and bit values. ``pack`` / ``unpack`` convert to and from the control's
bytes as a client hands them to VIDIOC_S_EXT_CTRLS (little-endian, the uAPI
layout with its padding: 1048, 12 and 480 bytes). The per-picture controls,
``struct v4l2_ctrl_h264_decode_params`` (``DecodeParams``, 560 bytes, with its
16 ``struct v4l2_h264_dpb_entry``) and ``struct v4l2_ctrl_h264_slice_params``
(``SliceParams``, 152 bytes), are mirrored the same way. ``C_TYPES`` gives
each member's C type so the fields can later be mapped onto the cffi structs
of the protocol header.

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

import struct
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


# --- the controls' bytes ------------------------------------------------------------

_SPS = struct.Struct("<12B255i2i2HI")     # 1048 bytes
_PPS = struct.Struct("<6B4bH")            # 12 bytes
_MATRIX = struct.Struct("<480B")          # 480 bytes
SPS_SIZE = _SPS.size
PPS_SIZE = _PPS.size
SCALING_MATRIX_SIZE = _MATRIX.size

_SPS_SCALARS = ("profile_idc", "constraint_set_flags", "level_idc", "seq_parameter_set_id",
                "chroma_format_idc", "bit_depth_luma_minus8", "bit_depth_chroma_minus8",
                "log2_max_frame_num_minus4", "pic_order_cnt_type",
                "log2_max_pic_order_cnt_lsb_minus4", "max_num_ref_frames",
                "num_ref_frames_in_pic_order_cnt_cycle")
_SPS_TAIL = ("offset_for_non_ref_pic", "offset_for_top_to_bottom_field",
             "pic_width_in_mbs_minus1", "pic_height_in_map_units_minus1", "flags")
_PPS_FIELDS = tuple(C_TYPES[Pps])


def pack_sps(sps: Sps) -> bytes:
    check_ctrl(sps)
    return _SPS.pack(*(getattr(sps, n) for n in _SPS_SCALARS), *sps.offset_for_ref_frame,
                     *(getattr(sps, n) for n in _SPS_TAIL))


def unpack_sps(data: bytes) -> Sps:
    v = _SPS.unpack(data)
    sps = Sps(**dict(zip(_SPS_SCALARS, v[:12], strict=True)))
    sps.offset_for_ref_frame = list(v[12:267])
    for name, value in zip(_SPS_TAIL, v[267:], strict=True):
        setattr(sps, name, value)
    return sps


def pack_pps(pps: Pps) -> bytes:
    check_ctrl(pps)
    return _PPS.pack(*(getattr(pps, n) for n in _PPS_FIELDS))


def unpack_pps(data: bytes) -> Pps:
    return Pps(**dict(zip(_PPS_FIELDS, _PPS.unpack(data), strict=True)))


def pack_scaling_matrix(m: ScalingMatrix) -> bytes:
    check_ctrl(m)
    return _MATRIX.pack(*(v for row in m.scaling_list_4x4 for v in row),
                        *(v for row in m.scaling_list_8x8 for v in row))


def unpack_scaling_matrix(data: bytes) -> ScalingMatrix:
    v = _MATRIX.unpack(data)
    return ScalingMatrix([list(v[i * 16:(i + 1) * 16]) for i in range(6)],
                         [list(v[96 + i * 64:96 + (i + 1) * 64]) for i in range(6)])


# --- struct v4l2_ctrl_h264_decode_params ---------------------------------------------

V4L2_H264_NUM_DPB_ENTRIES = 16
V4L2_H264_REF_LIST_LEN = 2 * V4L2_H264_NUM_DPB_ENTRIES

V4L2_H264_TOP_FIELD_REF = 0x1
V4L2_H264_BOTTOM_FIELD_REF = 0x2
V4L2_H264_FRAME_REF = 0x3

V4L2_H264_DPB_ENTRY_FLAG_VALID = 0x01
V4L2_H264_DPB_ENTRY_FLAG_ACTIVE = 0x02
V4L2_H264_DPB_ENTRY_FLAG_LONG_TERM = 0x04
V4L2_H264_DPB_ENTRY_FLAG_FIELD = 0x08

V4L2_H264_DECODE_PARAM_FLAG_IDR_PIC = 0x01
V4L2_H264_DECODE_PARAM_FLAG_FIELD_PIC = 0x02
V4L2_H264_DECODE_PARAM_FLAG_BOTTOM_FIELD = 0x04
V4L2_H264_DECODE_PARAM_FLAG_PFRAME = 0x08
V4L2_H264_DECODE_PARAM_FLAG_BFRAME = 0x10

V4L2_H264_SLICE_TYPE_P = 0
V4L2_H264_SLICE_TYPE_B = 1
V4L2_H264_SLICE_TYPE_I = 2
V4L2_H264_SLICE_TYPE_SP = 3
V4L2_H264_SLICE_TYPE_SI = 4

V4L2_H264_SLICE_FLAG_DIRECT_SPATIAL_MV_PRED = 0x01
V4L2_H264_SLICE_FLAG_SP_FOR_SWITCH = 0x02

_DPB = struct.Struct("<QIHB5xiiI")                 # 32 bytes
_DECODE_TAIL = struct.Struct("<HHiiHHiiiIIIII")   # 48 bytes
DECODE_PARAMS_SIZE = V4L2_H264_NUM_DPB_ENTRIES * _DPB.size + _DECODE_TAIL.size  # 560


@dataclass
class DpbEntry:
    """struct v4l2_h264_dpb_entry."""

    reference_ts: int = 0
    pic_num: int = 0
    frame_num: int = 0
    fields: int = 0
    top_field_order_cnt: int = 0
    bottom_field_order_cnt: int = 0
    flags: int = 0


@dataclass
class DecodeParams:
    """struct v4l2_ctrl_h264_decode_params (``dpb`` always 16 entries)."""

    dpb: list[DpbEntry] = field(
        default_factory=lambda: [DpbEntry() for _ in range(V4L2_H264_NUM_DPB_ENTRIES)])
    nal_ref_idc: int = 0
    frame_num: int = 0
    top_field_order_cnt: int = 0
    bottom_field_order_cnt: int = 0
    idr_pic_id: int = 0
    pic_order_cnt_lsb: int = 0
    delta_pic_order_cnt_bottom: int = 0
    delta_pic_order_cnt0: int = 0
    delta_pic_order_cnt1: int = 0
    dec_ref_pic_marking_bit_size: int = 0
    pic_order_cnt_bit_size: int = 0
    slice_group_change_cycle: int = 0
    flags: int = 0

    def pack(self) -> bytes:
        if len(self.dpb) != V4L2_H264_NUM_DPB_ENTRIES:
            raise ValueError(f"dpb has {len(self.dpb)} entries, not 16")
        out = b"".join(_DPB.pack(e.reference_ts, e.pic_num, e.frame_num, e.fields,
                                 e.top_field_order_cnt, e.bottom_field_order_cnt, e.flags)
                       for e in self.dpb)
        return out + _DECODE_TAIL.pack(
            self.nal_ref_idc, self.frame_num, self.top_field_order_cnt,
            self.bottom_field_order_cnt, self.idr_pic_id, self.pic_order_cnt_lsb,
            self.delta_pic_order_cnt_bottom, self.delta_pic_order_cnt0,
            self.delta_pic_order_cnt1, self.dec_ref_pic_marking_bit_size,
            self.pic_order_cnt_bit_size, self.slice_group_change_cycle, 0, self.flags)

    @classmethod
    def unpack(cls, data: bytes) -> DecodeParams:
        """The control's bytes (the reserved word is not checked: the kernel zeroes
        nothing of a client's padding, the daemon ignores it)."""
        if len(data) != DECODE_PARAMS_SIZE:
            raise ValueError(f"{len(data)} bytes, struct v4l2_ctrl_h264_decode_params "
                             f"has {DECODE_PARAMS_SIZE}")
        dpb = []
        for i in range(V4L2_H264_NUM_DPB_ENTRIES):
            ts, pic_num, frame_num, fields_, top, bottom, flags = _DPB.unpack_from(
                data, i * _DPB.size)
            dpb.append(DpbEntry(ts, pic_num, frame_num, fields_, top, bottom, flags))
        t = _DECODE_TAIL.unpack_from(data, V4L2_H264_NUM_DPB_ENTRIES * _DPB.size)
        return cls(dpb, t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], t[10],
                   t[11], t[13])


# --- struct v4l2_ctrl_h264_slice_params ----------------------------------------------

_SLICE_HEAD = struct.Struct("<IIBBBBbbBbbBBx")   # 20 bytes
_REF_LISTS = struct.Struct(f"<{4 * V4L2_H264_REF_LIST_LEN}B")  # 2 lists of (fields, index)
SLICE_PARAMS_SIZE = _SLICE_HEAD.size + _REF_LISTS.size + 4  # 152
NO_REFERENCE = (0xFF, 0xFF)  # an unused ref_pic_list entry, as GStreamer fills them


@dataclass
class SliceParams:
    """struct v4l2_ctrl_h264_slice_params; ref_pic_list0/1: (fields, index) pairs."""

    header_bit_size: int = 0
    first_mb_in_slice: int = 0
    slice_type: int = 0
    colour_plane_id: int = 0
    redundant_pic_cnt: int = 0
    cabac_init_idc: int = 0
    slice_qp_delta: int = 0
    slice_qs_delta: int = 0
    disable_deblocking_filter_idc: int = 0
    slice_alpha_c0_offset_div2: int = 0
    slice_beta_offset_div2: int = 0
    num_ref_idx_l0_active_minus1: int = 0
    num_ref_idx_l1_active_minus1: int = 0
    ref_pic_list0: list[tuple[int, int]] = field(
        default_factory=lambda: [NO_REFERENCE] * V4L2_H264_REF_LIST_LEN)
    ref_pic_list1: list[tuple[int, int]] = field(
        default_factory=lambda: [NO_REFERENCE] * V4L2_H264_REF_LIST_LEN)
    flags: int = 0

    def pack(self) -> bytes:
        lists = [v for pair in (*self.ref_pic_list0, *self.ref_pic_list1) for v in pair]
        return (_SLICE_HEAD.pack(self.header_bit_size, self.first_mb_in_slice, self.slice_type,
                                 self.colour_plane_id, self.redundant_pic_cnt,
                                 self.cabac_init_idc, self.slice_qp_delta, self.slice_qs_delta,
                                 self.disable_deblocking_filter_idc,
                                 self.slice_alpha_c0_offset_div2, self.slice_beta_offset_div2,
                                 self.num_ref_idx_l0_active_minus1,
                                 self.num_ref_idx_l1_active_minus1)
                + _REF_LISTS.pack(*lists) + struct.pack("<I", self.flags))

    @classmethod
    def unpack(cls, data: bytes) -> SliceParams:
        if len(data) != SLICE_PARAMS_SIZE:
            raise ValueError(f"{len(data)} bytes, struct v4l2_ctrl_h264_slice_params "
                             f"has {SLICE_PARAMS_SIZE}")
        h = _SLICE_HEAD.unpack_from(data)
        v = _REF_LISTS.unpack_from(data, _SLICE_HEAD.size)
        pairs = [(v[2 * i], v[2 * i + 1]) for i in range(2 * V4L2_H264_REF_LIST_LEN)]
        (flags,) = struct.unpack_from("<I", data, _SLICE_HEAD.size + _REF_LISTS.size)
        return cls(header_bit_size=h[0], first_mb_in_slice=h[1], slice_type=h[2],
                   colour_plane_id=h[3], redundant_pic_cnt=h[4], cabac_init_idc=h[5],
                   slice_qp_delta=h[6], slice_qs_delta=h[7], disable_deblocking_filter_idc=h[8],
                   slice_alpha_c0_offset_div2=h[9], slice_beta_offset_div2=h[10],
                   num_ref_idx_l0_active_minus1=h[11], num_ref_idx_l1_active_minus1=h[12],
                   ref_pic_list0=pairs[:V4L2_H264_REF_LIST_LEN],
                   ref_pic_list1=pairs[V4L2_H264_REF_LIST_LEN:], flags=flags)
