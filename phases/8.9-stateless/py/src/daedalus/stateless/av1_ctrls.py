"""The AV1 stateless controls (Linux 6.5+ uAPI) as ctypes structures.

Mirrors include/uapi/linux/v4l2-controls.h: ``struct v4l2_ctrl_av1_sequence``
(``V4L2_CID_STATELESS_AV1_SEQUENCE``, 12 bytes), ``struct
v4l2_ctrl_av1_tile_group_entry`` (``..._TILE_GROUP_ENTRY``, a dynamic array of
16-byte entries), ``struct v4l2_ctrl_av1_frame`` (``..._FRAME``, 1784 bytes)
and ``struct v4l2_ctrl_av1_film_grain`` (``..._FILM_GRAIN``, 194 bytes).
ctypes lays the fields out as the C compiler does (natural alignment, the
kernel's explicit ``reserved`` padding), so ``bytes(ctrl)`` is the payload a
client hands to ``VIDIOC_S_EXT_CTRLS`` on a little-endian host and
:func:`unpack` reads one back; the host test pins ``sizeof`` and field offsets
against the header compiled with the C compiler.
"""

from __future__ import annotations

import ctypes
from typing import TypeVar

V4L2_CID_CODEC_STATELESS_BASE = 0x00A40000 | 0x900
V4L2_CID_STATELESS_AV1_SEQUENCE = V4L2_CID_CODEC_STATELESS_BASE + 500
V4L2_CID_STATELESS_AV1_TILE_GROUP_ENTRY = V4L2_CID_CODEC_STATELESS_BASE + 501
V4L2_CID_STATELESS_AV1_FRAME = V4L2_CID_CODEC_STATELESS_BASE + 502
V4L2_CID_STATELESS_AV1_FILM_GRAIN = V4L2_CID_CODEC_STATELESS_BASE + 505

V4L2_AV1_TOTAL_REFS_PER_FRAME = 8
V4L2_AV1_CDEF_MAX = 8
V4L2_AV1_NUM_PLANES_MAX = 3
V4L2_AV1_MAX_SEGMENTS = 8
V4L2_AV1_MAX_OPERATING_POINTS = 32
V4L2_AV1_REFS_PER_FRAME = 7
V4L2_AV1_MAX_NUM_Y_POINTS = 16
V4L2_AV1_MAX_NUM_CB_POINTS = 16
V4L2_AV1_MAX_NUM_CR_POINTS = 16
V4L2_AV1_AR_COEFFS_SIZE = 25
V4L2_AV1_MAX_NUM_PLANES = 3
V4L2_AV1_MAX_TILE_COLS = 64
V4L2_AV1_MAX_TILE_ROWS = 64
V4L2_AV1_MAX_TILE_COUNT = 512
V4L2_AV1_SEG_LVL_MAX = 8
V4L2_AV1_PRIMARY_REF_NONE = 7

# struct v4l2_ctrl_av1_sequence flags
V4L2_AV1_SEQUENCE_FLAG_STILL_PICTURE = 0x00000001
V4L2_AV1_SEQUENCE_FLAG_USE_128X128_SUPERBLOCK = 0x00000002
V4L2_AV1_SEQUENCE_FLAG_ENABLE_FILTER_INTRA = 0x00000004
V4L2_AV1_SEQUENCE_FLAG_ENABLE_INTRA_EDGE_FILTER = 0x00000008
V4L2_AV1_SEQUENCE_FLAG_ENABLE_INTERINTRA_COMPOUND = 0x00000010
V4L2_AV1_SEQUENCE_FLAG_ENABLE_MASKED_COMPOUND = 0x00000020
V4L2_AV1_SEQUENCE_FLAG_ENABLE_WARPED_MOTION = 0x00000040
V4L2_AV1_SEQUENCE_FLAG_ENABLE_DUAL_FILTER = 0x00000080
V4L2_AV1_SEQUENCE_FLAG_ENABLE_ORDER_HINT = 0x00000100
V4L2_AV1_SEQUENCE_FLAG_ENABLE_JNT_COMP = 0x00000200
V4L2_AV1_SEQUENCE_FLAG_ENABLE_REF_FRAME_MVS = 0x00000400
V4L2_AV1_SEQUENCE_FLAG_ENABLE_SUPERRES = 0x00000800
V4L2_AV1_SEQUENCE_FLAG_ENABLE_CDEF = 0x00001000
V4L2_AV1_SEQUENCE_FLAG_ENABLE_RESTORATION = 0x00002000
V4L2_AV1_SEQUENCE_FLAG_MONO_CHROME = 0x00004000
V4L2_AV1_SEQUENCE_FLAG_COLOR_RANGE = 0x00008000
V4L2_AV1_SEQUENCE_FLAG_SUBSAMPLING_X = 0x00010000
V4L2_AV1_SEQUENCE_FLAG_SUBSAMPLING_Y = 0x00020000
V4L2_AV1_SEQUENCE_FLAG_FILM_GRAIN_PARAMS_PRESENT = 0x00040000
V4L2_AV1_SEQUENCE_FLAG_SEPARATE_UV_DELTA_Q = 0x00080000

# enum v4l2_av1_warp_model
V4L2_AV1_WARP_MODEL_IDENTITY = 0
V4L2_AV1_WARP_MODEL_TRANSLATION = 1
V4L2_AV1_WARP_MODEL_ROTZOOM = 2
V4L2_AV1_WARP_MODEL_AFFINE = 3

V4L2_AV1_GLOBAL_MOTION_FLAG_IS_GLOBAL = 0x1
V4L2_AV1_GLOBAL_MOTION_FLAG_IS_ROT_ZOOM = 0x2
V4L2_AV1_GLOBAL_MOTION_FLAG_IS_TRANSLATION = 0x4

# enum v4l2_av1_frame_restoration_type (the spec's FrameRestorationType values)
V4L2_AV1_FRAME_RESTORE_NONE = 0
V4L2_AV1_FRAME_RESTORE_WIENER = 1
V4L2_AV1_FRAME_RESTORE_SGRPROJ = 2
V4L2_AV1_FRAME_RESTORE_SWITCHABLE = 3

V4L2_AV1_LOOP_RESTORATION_FLAG_USES_LR = 0x1
V4L2_AV1_LOOP_RESTORATION_FLAG_USES_CHROMA_LR = 0x2

V4L2_AV1_SEGMENTATION_FLAG_ENABLED = 0x1
V4L2_AV1_SEGMENTATION_FLAG_UPDATE_MAP = 0x2
V4L2_AV1_SEGMENTATION_FLAG_TEMPORAL_UPDATE = 0x4
V4L2_AV1_SEGMENTATION_FLAG_UPDATE_DATA = 0x8
V4L2_AV1_SEGMENTATION_FLAG_SEG_ID_PRE_SKIP = 0x10

V4L2_AV1_LOOP_FILTER_FLAG_DELTA_ENABLED = 0x1
V4L2_AV1_LOOP_FILTER_FLAG_DELTA_UPDATE = 0x2
V4L2_AV1_LOOP_FILTER_FLAG_DELTA_LF_PRESENT = 0x4
V4L2_AV1_LOOP_FILTER_FLAG_DELTA_LF_MULTI = 0x8

V4L2_AV1_QUANTIZATION_FLAG_DIFF_UV_DELTA = 0x1
V4L2_AV1_QUANTIZATION_FLAG_USING_QMATRIX = 0x2
V4L2_AV1_QUANTIZATION_FLAG_DELTA_Q_PRESENT = 0x4

V4L2_AV1_TILE_INFO_FLAG_UNIFORM_TILE_SPACING = 0x1

# enum v4l2_av1_frame_type
V4L2_AV1_KEY_FRAME = 0
V4L2_AV1_INTER_FRAME = 1
V4L2_AV1_INTRA_ONLY_FRAME = 2
V4L2_AV1_SWITCH_FRAME = 3

# enum v4l2_av1_interpolation_filter
V4L2_AV1_INTERPOLATION_FILTER_SWITCHABLE = 4

# enum v4l2_av1_tx_mode
V4L2_AV1_TX_MODE_ONLY_4X4 = 0
V4L2_AV1_TX_MODE_LARGEST = 1
V4L2_AV1_TX_MODE_SELECT = 2

V4L2_AV1_FRAME_FLAG_SHOW_FRAME = 0x00000001
V4L2_AV1_FRAME_FLAG_SHOWABLE_FRAME = 0x00000002
V4L2_AV1_FRAME_FLAG_ERROR_RESILIENT_MODE = 0x00000004
V4L2_AV1_FRAME_FLAG_DISABLE_CDF_UPDATE = 0x00000008
V4L2_AV1_FRAME_FLAG_ALLOW_SCREEN_CONTENT_TOOLS = 0x00000010
V4L2_AV1_FRAME_FLAG_FORCE_INTEGER_MV = 0x00000020
V4L2_AV1_FRAME_FLAG_ALLOW_INTRABC = 0x00000040
V4L2_AV1_FRAME_FLAG_USE_SUPERRES = 0x00000080
V4L2_AV1_FRAME_FLAG_ALLOW_HIGH_PRECISION_MV = 0x00000100
V4L2_AV1_FRAME_FLAG_IS_MOTION_MODE_SWITCHABLE = 0x00000200
V4L2_AV1_FRAME_FLAG_USE_REF_FRAME_MVS = 0x00000400
V4L2_AV1_FRAME_FLAG_DISABLE_FRAME_END_UPDATE_CDF = 0x00000800
V4L2_AV1_FRAME_FLAG_ALLOW_WARPED_MOTION = 0x00001000
V4L2_AV1_FRAME_FLAG_REFERENCE_SELECT = 0x00002000
V4L2_AV1_FRAME_FLAG_REDUCED_TX_SET = 0x00004000
V4L2_AV1_FRAME_FLAG_SKIP_MODE_ALLOWED = 0x00008000
V4L2_AV1_FRAME_FLAG_SKIP_MODE_PRESENT = 0x00010000
V4L2_AV1_FRAME_FLAG_FRAME_SIZE_OVERRIDE = 0x00020000
V4L2_AV1_FRAME_FLAG_BUFFER_REMOVAL_TIME_PRESENT = 0x00040000
V4L2_AV1_FRAME_FLAG_FRAME_REFS_SHORT_SIGNALING = 0x00080000

V4L2_AV1_FILM_GRAIN_FLAG_APPLY_GRAIN = 0x1
V4L2_AV1_FILM_GRAIN_FLAG_UPDATE_GRAIN = 0x2
V4L2_AV1_FILM_GRAIN_FLAG_CHROMA_SCALING_FROM_LUMA = 0x4
V4L2_AV1_FILM_GRAIN_FLAG_OVERLAP = 0x8
V4L2_AV1_FILM_GRAIN_FLAG_CLIP_TO_RESTRICTED_RANGE = 0x10

_u8 = ctypes.c_uint8
_s8 = ctypes.c_int8
_u16 = ctypes.c_uint16
_s16 = ctypes.c_int16
_u32 = ctypes.c_uint32
_s32 = ctypes.c_int32
_u64 = ctypes.c_uint64
_enum = ctypes.c_uint32  # C enums with small non-negative values are 4-byte ints


class Av1Sequence(ctypes.Structure):
    _fields_ = [
        ("flags", _u32),
        ("seq_profile", _u8),
        ("order_hint_bits", _u8),
        ("bit_depth", _u8),
        ("reserved", _u8),
        ("max_frame_width_minus_1", _u16),
        ("max_frame_height_minus_1", _u16),
    ]


class Av1TileGroupEntry(ctypes.Structure):
    _fields_ = [
        ("tile_offset", _u32),
        ("tile_size", _u32),
        ("tile_row", _u32),
        ("tile_col", _u32),
    ]


class Av1GlobalMotion(ctypes.Structure):
    _fields_ = [
        ("flags", _u8 * V4L2_AV1_TOTAL_REFS_PER_FRAME),
        ("type", _enum * V4L2_AV1_TOTAL_REFS_PER_FRAME),
        ("params", (_s32 * 6) * V4L2_AV1_TOTAL_REFS_PER_FRAME),
        ("invalid", _u8),
        ("reserved", _u8 * 3),
    ]


class Av1LoopRestoration(ctypes.Structure):
    _fields_ = [
        ("flags", _u8),
        ("lr_unit_shift", _u8),
        ("lr_uv_shift", _u8),
        ("reserved", _u8),
        ("frame_restoration_type", _enum * V4L2_AV1_NUM_PLANES_MAX),
        ("loop_restoration_size", _u32 * V4L2_AV1_MAX_NUM_PLANES),
    ]


class Av1Cdef(ctypes.Structure):
    _fields_ = [
        ("damping_minus_3", _u8),
        ("bits", _u8),
        ("y_pri_strength", _u8 * V4L2_AV1_CDEF_MAX),
        ("y_sec_strength", _u8 * V4L2_AV1_CDEF_MAX),
        ("uv_pri_strength", _u8 * V4L2_AV1_CDEF_MAX),
        ("uv_sec_strength", _u8 * V4L2_AV1_CDEF_MAX),
    ]


class Av1Segmentation(ctypes.Structure):
    _fields_ = [
        ("flags", _u8),
        ("last_active_seg_id", _u8),
        ("feature_enabled", _u8 * V4L2_AV1_MAX_SEGMENTS),
        ("feature_data", (_s16 * V4L2_AV1_SEG_LVL_MAX) * V4L2_AV1_MAX_SEGMENTS),
    ]


class Av1LoopFilter(ctypes.Structure):
    _fields_ = [
        ("flags", _u8),
        ("level", _u8 * 4),
        ("sharpness", _u8),
        ("ref_deltas", _s8 * V4L2_AV1_TOTAL_REFS_PER_FRAME),
        ("mode_deltas", _s8 * 2),
        ("delta_lf_res", _u8),
    ]


class Av1Quantization(ctypes.Structure):
    _fields_ = [
        ("flags", _u8),
        ("base_q_idx", _u8),
        ("delta_q_y_dc", _s8),
        ("delta_q_u_dc", _s8),
        ("delta_q_u_ac", _s8),
        ("delta_q_v_dc", _s8),
        ("delta_q_v_ac", _s8),
        ("qm_y", _u8),
        ("qm_u", _u8),
        ("qm_v", _u8),
        ("delta_q_res", _u8),
    ]


class Av1TileInfo(ctypes.Structure):
    _fields_ = [
        ("flags", _u8),
        ("context_update_tile_id", _u8),
        ("tile_cols", _u8),
        ("tile_rows", _u8),
        ("mi_col_starts", _u32 * (V4L2_AV1_MAX_TILE_COLS + 1)),
        ("mi_row_starts", _u32 * (V4L2_AV1_MAX_TILE_ROWS + 1)),
        ("width_in_sbs_minus_1", _u32 * V4L2_AV1_MAX_TILE_COLS),
        ("height_in_sbs_minus_1", _u32 * V4L2_AV1_MAX_TILE_ROWS),
        ("tile_size_bytes", _u8),
        ("reserved", _u8 * 3),
    ]


class Av1Frame(ctypes.Structure):
    _fields_ = [
        ("tile_info", Av1TileInfo),
        ("quantization", Av1Quantization),
        ("superres_denom", _u8),
        ("segmentation", Av1Segmentation),
        ("loop_filter", Av1LoopFilter),
        ("cdef", Av1Cdef),
        ("skip_mode_frame", _u8 * 2),
        ("primary_ref_frame", _u8),
        ("loop_restoration", Av1LoopRestoration),
        ("global_motion", Av1GlobalMotion),
        ("flags", _u32),
        ("frame_type", _enum),
        ("order_hint", _u32),
        ("upscaled_width", _u32),
        ("interpolation_filter", _enum),
        ("tx_mode", _enum),
        ("frame_width_minus_1", _u32),
        ("frame_height_minus_1", _u32),
        ("render_width_minus_1", _u16),
        ("render_height_minus_1", _u16),
        ("current_frame_id", _u32),
        ("buffer_removal_time", _u32 * V4L2_AV1_MAX_OPERATING_POINTS),
        ("reserved", _u8 * 4),
        ("order_hints", _u32 * V4L2_AV1_TOTAL_REFS_PER_FRAME),
        ("reference_frame_ts", _u64 * V4L2_AV1_TOTAL_REFS_PER_FRAME),
        ("ref_frame_idx", _s8 * V4L2_AV1_REFS_PER_FRAME),
        ("refresh_frame_flags", _u8),
    ]


class Av1FilmGrain(ctypes.Structure):
    _fields_ = [
        ("flags", _u8),
        ("cr_mult", _u8),
        ("grain_seed", _u16),
        ("film_grain_params_ref_idx", _u8),
        ("num_y_points", _u8),
        ("point_y_value", _u8 * V4L2_AV1_MAX_NUM_Y_POINTS),
        ("point_y_scaling", _u8 * V4L2_AV1_MAX_NUM_Y_POINTS),
        ("num_cb_points", _u8),
        ("point_cb_value", _u8 * V4L2_AV1_MAX_NUM_CB_POINTS),
        ("point_cb_scaling", _u8 * V4L2_AV1_MAX_NUM_CB_POINTS),
        ("num_cr_points", _u8),
        ("point_cr_value", _u8 * V4L2_AV1_MAX_NUM_CR_POINTS),
        ("point_cr_scaling", _u8 * V4L2_AV1_MAX_NUM_CR_POINTS),
        ("grain_scaling_minus_8", _u8),
        ("ar_coeff_lag", _u8),
        ("ar_coeffs_y_plus_128", _u8 * V4L2_AV1_AR_COEFFS_SIZE),
        ("ar_coeffs_cb_plus_128", _u8 * V4L2_AV1_AR_COEFFS_SIZE),
        ("ar_coeffs_cr_plus_128", _u8 * V4L2_AV1_AR_COEFFS_SIZE),
        ("ar_coeff_shift_minus_6", _u8),
        ("grain_scale_shift", _u8),
        ("cb_mult", _u8),
        ("cb_luma_mult", _u8),
        ("cr_luma_mult", _u8),
        ("cb_offset", _u16),
        ("cr_offset", _u16),
        ("reserved", _u8 * 4),
    ]


SIZES = {
    "v4l2_ctrl_av1_sequence": ctypes.sizeof(Av1Sequence),
    "v4l2_ctrl_av1_tile_group_entry": ctypes.sizeof(Av1TileGroupEntry),
    "v4l2_ctrl_av1_frame": ctypes.sizeof(Av1Frame),
    "v4l2_ctrl_av1_film_grain": ctypes.sizeof(Av1FilmGrain),
    "v4l2_av1_tile_info": ctypes.sizeof(Av1TileInfo),
    "v4l2_av1_segmentation": ctypes.sizeof(Av1Segmentation),
    "v4l2_av1_global_motion": ctypes.sizeof(Av1GlobalMotion),
    "v4l2_av1_loop_restoration": ctypes.sizeof(Av1LoopRestoration),
}

_S = TypeVar("_S", bound=ctypes.Structure)


def pack(ctrl: ctypes.Structure) -> bytes:
    """The control's payload bytes (host byte order; the uAPI is little-endian in practice)."""
    return bytes(memoryview(ctrl))


def unpack(cls: type[_S], data: bytes) -> _S:
    """One control of type *cls* from its payload; the size must match exactly."""
    if len(data) != ctypes.sizeof(cls):
        raise ValueError(f"{cls.__name__}: {len(data)} bytes, the uAPI struct has "
                         f"{ctypes.sizeof(cls)}")
    return cls.from_buffer_copy(data)


def pack_entries(entries: list[Av1TileGroupEntry]) -> bytes:
    """``V4L2_CID_STATELESS_AV1_TILE_GROUP_ENTRY``: a dynamic array, entries back to back."""
    return b"".join(bytes(memoryview(e)) for e in entries)


def unpack_entries(data: bytes) -> list[Av1TileGroupEntry]:
    size = ctypes.sizeof(Av1TileGroupEntry)
    if len(data) % size:
        raise ValueError(f"TILE_GROUP_ENTRY payload of {len(data)} bytes is not a multiple "
                         f"of {size}")
    return [Av1TileGroupEntry.from_buffer_copy(data, i) for i in range(0, len(data), size)]
