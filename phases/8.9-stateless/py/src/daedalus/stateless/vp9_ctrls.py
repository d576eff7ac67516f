"""``struct v4l2_ctrl_vp9_frame`` (``V4L2_CID_STATELESS_VP9_FRAME``) as typed dataclasses.

Mirrors include/uapi/linux/v4l2-controls.h (Linux 5.17+): ``struct
v4l2_vp9_loop_filter``, ``struct v4l2_vp9_quantization``, ``struct
v4l2_vp9_segmentation`` nested in ``struct v4l2_ctrl_vp9_frame``, with the
``V4L2_VP9_*`` flag and enum values. :meth:`Vp9Frame.pack` /
:meth:`Vp9Frame.unpack` convert to and from the control's bytes as a client
hands them to ``VIDIOC_S_EXT_CTRLS`` (little-endian, the uAPI layout with its
padding: 168 bytes).

The compressed-header control (``V4L2_CID_STATELESS_VP9_COMPRESSED_HDR``,
probability deltas) is not mirrored: the daemon decodes the frame's own
compressed header, which the OUTPUT buffer carries whole.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

V4L2_CID_CODEC_STATELESS_BASE = 0x00A40000 | 0x900  # V4L2_CTRL_CLASS_CODEC_STATELESS | 0x900
V4L2_CID_STATELESS_VP9_FRAME = V4L2_CID_CODEC_STATELESS_BASE + 300

# struct v4l2_vp9_loop_filter flags
V4L2_VP9_LOOP_FILTER_FLAG_DELTA_ENABLED = 0x1
V4L2_VP9_LOOP_FILTER_FLAG_DELTA_UPDATE = 0x2

# struct v4l2_vp9_segmentation flags
V4L2_VP9_SEGMENTATION_FLAG_ENABLED = 0x01
V4L2_VP9_SEGMENTATION_FLAG_UPDATE_MAP = 0x02
V4L2_VP9_SEGMENTATION_FLAG_TEMPORAL_UPDATE = 0x04
V4L2_VP9_SEGMENTATION_FLAG_UPDATE_DATA = 0x08
V4L2_VP9_SEGMENTATION_FLAG_ABS_OR_DELTA_UPDATE = 0x10

V4L2_VP9_SEG_LVL_ALT_Q = 0
V4L2_VP9_SEG_LVL_ALT_L = 1
V4L2_VP9_SEG_LVL_REF_FRAME = 2
V4L2_VP9_SEG_LVL_SKIP = 3
V4L2_VP9_SEG_LVL_MAX = 4
V4L2_VP9_SEGMENT_FEATURE_ENABLED_MASK = 0xF


def V4L2_VP9_SEGMENT_FEATURE_ENABLED(feature: int) -> int:
    return 1 << feature


# struct v4l2_ctrl_vp9_frame flags
V4L2_VP9_FRAME_FLAG_KEY_FRAME = 0x001
V4L2_VP9_FRAME_FLAG_SHOW_FRAME = 0x002
V4L2_VP9_FRAME_FLAG_ERROR_RESILIENT = 0x004
V4L2_VP9_FRAME_FLAG_INTRA_ONLY = 0x008
V4L2_VP9_FRAME_FLAG_ALLOW_HIGH_PREC_MV = 0x010
V4L2_VP9_FRAME_FLAG_REFRESH_FRAME_CTX = 0x020
V4L2_VP9_FRAME_FLAG_PARALLEL_DEC_MODE = 0x040
V4L2_VP9_FRAME_FLAG_X_SUBSAMPLING = 0x080
V4L2_VP9_FRAME_FLAG_Y_SUBSAMPLING = 0x100
V4L2_VP9_FRAME_FLAG_COLOR_RANGE_FULL_SWING = 0x200

FRAME_FLAG_NAMES = {
    V4L2_VP9_FRAME_FLAG_KEY_FRAME: "KEY_FRAME",
    V4L2_VP9_FRAME_FLAG_SHOW_FRAME: "SHOW_FRAME",
    V4L2_VP9_FRAME_FLAG_ERROR_RESILIENT: "ERROR_RESILIENT",
    V4L2_VP9_FRAME_FLAG_INTRA_ONLY: "INTRA_ONLY",
    V4L2_VP9_FRAME_FLAG_ALLOW_HIGH_PREC_MV: "ALLOW_HIGH_PREC_MV",
    V4L2_VP9_FRAME_FLAG_REFRESH_FRAME_CTX: "REFRESH_FRAME_CTX",
    V4L2_VP9_FRAME_FLAG_PARALLEL_DEC_MODE: "PARALLEL_DEC_MODE",
    V4L2_VP9_FRAME_FLAG_X_SUBSAMPLING: "X_SUBSAMPLING",
    V4L2_VP9_FRAME_FLAG_Y_SUBSAMPLING: "Y_SUBSAMPLING",
    V4L2_VP9_FRAME_FLAG_COLOR_RANGE_FULL_SWING: "COLOR_RANGE_FULL_SWING",
}

V4L2_VP9_SIGN_BIAS_LAST = 0x1
V4L2_VP9_SIGN_BIAS_GOLDEN = 0x2
V4L2_VP9_SIGN_BIAS_ALT = 0x4

V4L2_VP9_RESET_FRAME_CTX_NONE = 0
V4L2_VP9_RESET_FRAME_CTX_SPEC = 1
V4L2_VP9_RESET_FRAME_CTX_ALL = 2

V4L2_VP9_INTERP_FILTER_EIGHTTAP = 0
V4L2_VP9_INTERP_FILTER_EIGHTTAP_SMOOTH = 1
V4L2_VP9_INTERP_FILTER_EIGHTTAP_SHARP = 2
V4L2_VP9_INTERP_FILTER_BILINEAR = 3
V4L2_VP9_INTERP_FILTER_SWITCHABLE = 4

V4L2_VP9_REFERENCE_MODE_SINGLE_REFERENCE = 0
V4L2_VP9_REFERENCE_MODE_COMPOUND_REFERENCE = 1
V4L2_VP9_REFERENCE_MODE_SELECT = 2

V4L2_VP9_PROFILE_MAX = 3
V4L2_VP9_NUM_FRAME_CTX = 4

# The uAPI layouts, little-endian with the compiler's padding made explicit.
_LF = struct.Struct("<4b2bBBB7x")                      # 16 bytes
_QUANT = struct.Struct("<Bbbb4x")                      # 8 bytes
_SEG = struct.Struct("<32h8B7B3BB5x")                  # 88 bytes
_FRAME_TAIL = struct.Struct("<IHHHHHH QQQ BBBBBBBBB7x")  # 56 bytes (u64s at offset 128)
FRAME_SIZE = _LF.size + _QUANT.size + _SEG.size + _FRAME_TAIL.size  # 168


def _zeros(n: int) -> list[int]:
    return [0] * n


@dataclass
class Vp9LoopFilter:
    """struct v4l2_vp9_loop_filter."""

    ref_deltas: list[int] = field(default_factory=lambda: _zeros(4))    # __s8[4]
    mode_deltas: list[int] = field(default_factory=lambda: _zeros(2))   # __s8[2]
    level: int = 0
    sharpness: int = 0
    flags: int = 0


@dataclass
class Vp9Quantization:
    """struct v4l2_vp9_quantization."""

    base_q_idx: int = 0
    delta_q_y_dc: int = 0
    delta_q_uv_dc: int = 0
    delta_q_uv_ac: int = 0


@dataclass
class Vp9Segmentation:
    """struct v4l2_vp9_segmentation."""

    feature_data: list[list[int]] = field(
        default_factory=lambda: [_zeros(4) for _ in range(8)])      # __s16[8][4]
    feature_enabled: list[int] = field(default_factory=lambda: _zeros(8))  # __u8[8]
    tree_probs: list[int] = field(default_factory=lambda: _zeros(7))
    pred_probs: list[int] = field(default_factory=lambda: _zeros(3))
    flags: int = 0


@dataclass
class Vp9Frame:
    """struct v4l2_ctrl_vp9_frame."""

    lf: Vp9LoopFilter = field(default_factory=Vp9LoopFilter)
    quant: Vp9Quantization = field(default_factory=Vp9Quantization)
    seg: Vp9Segmentation = field(default_factory=Vp9Segmentation)
    flags: int = 0
    compressed_header_size: int = 0
    uncompressed_header_size: int = 0
    frame_width_minus_1: int = 0
    frame_height_minus_1: int = 0
    render_width_minus_1: int = 0
    render_height_minus_1: int = 0
    last_frame_ts: int = 0
    golden_frame_ts: int = 0
    alt_frame_ts: int = 0
    ref_frame_sign_bias: int = 0
    reset_frame_context: int = 0
    frame_context_idx: int = 0
    profile: int = 0
    bit_depth: int = 0
    interpolation_filter: int = 0
    tile_cols_log2: int = 0
    tile_rows_log2: int = 0
    reference_mode: int = 0

    @property
    def ref_ts(self) -> tuple[int, int, int]:
        """The LAST, GOLDEN, ALTREF timestamps, in ref_frame_idx[] order."""
        return (self.last_frame_ts, self.golden_frame_ts, self.alt_frame_ts)

    def pack(self) -> bytes:
        lf, q, s = self.lf, self.quant, self.seg
        return b"".join((
            _LF.pack(*lf.ref_deltas, *lf.mode_deltas, lf.level, lf.sharpness, lf.flags),
            _QUANT.pack(q.base_q_idx, q.delta_q_y_dc, q.delta_q_uv_dc, q.delta_q_uv_ac),
            _SEG.pack(*(v for row in s.feature_data for v in row), *s.feature_enabled,
                      *s.tree_probs, *s.pred_probs, s.flags),
            _FRAME_TAIL.pack(
                self.flags, self.compressed_header_size, self.uncompressed_header_size,
                self.frame_width_minus_1, self.frame_height_minus_1,
                self.render_width_minus_1, self.render_height_minus_1,
                self.last_frame_ts, self.golden_frame_ts, self.alt_frame_ts,
                self.ref_frame_sign_bias, self.reset_frame_context, self.frame_context_idx,
                self.profile, self.bit_depth, self.interpolation_filter,
                self.tile_cols_log2, self.tile_rows_log2, self.reference_mode),
        ))

    @classmethod
    def unpack(cls, data: bytes) -> Vp9Frame:
        """The control from its *data* (the reserved bytes are not checked)."""
        if len(data) != FRAME_SIZE:
            raise ValueError(f"struct v4l2_ctrl_vp9_frame is {FRAME_SIZE} bytes, got {len(data)}")
        o = 0
        v = _LF.unpack_from(data, o)
        o += _LF.size
        lf = Vp9LoopFilter(list(v[0:4]), list(v[4:6]), v[6], v[7], v[8])
        v = _QUANT.unpack_from(data, o)
        o += _QUANT.size
        quant = Vp9Quantization(*v)
        v = _SEG.unpack_from(data, o)
        o += _SEG.size
        seg = Vp9Segmentation([list(v[i:i + 4]) for i in range(0, 32, 4)], list(v[32:40]),
                              list(v[40:47]), list(v[47:50]), v[50])
        t = _FRAME_TAIL.unpack_from(data, o)
        return cls(lf, quant, seg, *t)
