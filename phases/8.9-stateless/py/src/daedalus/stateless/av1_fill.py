"""The client side of AV1 through the stateless node: parse an AV1 stream and fill the controls.

Our own parse of the sequence header OBU (AV1 spec 5.5), the uncompressed
frame header (5.9) and the tile group (5.11.1), keeping the reference state
the header syntax depends on (7.20 reference frame update, 7.21 loading),
and for every frame the request a client submits, filled the way GStreamer's
``v4l2codecav1dec`` (gst-plugins-bad sys/v4l2codecs/gstv4l2codecav1dec.c)
fills it:

- ``V4L2_CID_STATELESS_AV1_SEQUENCE`` from the sequence header
  (``fill_sequence_params``);
- ``V4L2_CID_STATELESS_AV1_FRAME`` from the frame header, with the values
  the header *means* after loading from the primary reference frame
  (segmentation features, loop-filter deltas), ``reference_frame_ts`` the
  timestamps of the pictures in the 8 slots (``fill_frame_hdr``/``fill_refs``);
- ``V4L2_CID_STATELESS_AV1_FILM_GRAIN`` when the sequence has film grain;
- ``V4L2_CID_STATELESS_AV1_TILE_GROUP_ENTRY``: one entry per tile of the
  frame, ``tile_offset`` counted from the start of the OUTPUT buffer
  (``decode_tile``: ``tile_offset + obu_offset``);
- the OUTPUT buffer (``V4L2_PIX_FMT_AV1_FRAME``): the payloads — without OBU
  header and size field — of the frame's OBU_FRAME / OBU_TILE_GROUP OBUs,
  back to back (``_copy_into_bitstream_buffer(tile->obu.data,
  tile->obu.obu_size)``). With OBU_FRAME the payload starts with the frame
  header bits; with OBU_FRAME_HEADER + OBU_TILE_GROUP it does not. A
  consumer must therefore locate tile data only through the entries, as
  the Hantro/VPU981 driver does (``src_dma + tile_offset``).

A ``show_existing_frame`` header makes no request (GStreamer duplicates the
picture of the slot); :class:`ShowExisting` reports it.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from daedalus.stateless import av1_ctrls as C
from daedalus.stateless.av1_bits import (
    OBU_FRAME,
    OBU_FRAME_HEADER,
    OBU_REDUNDANT_FRAME_HEADER,
    OBU_SEQUENCE_HEADER,
    OBU_TILE_GROUP,
    BitReader,
    BitstreamError,
    split_obus,
)

NUM_REF_FRAMES = 8
REFS_PER_FRAME = 7
PRIMARY_REF_NONE = 7
KEY_FRAME, INTER_FRAME, INTRA_ONLY_FRAME, SWITCH_FRAME = 0, 1, 2, 3
SELECT_SCREEN_CONTENT_TOOLS = 2
SELECT_INTEGER_MV = 2
WARPEDMODEL_PREC_BITS = 16
SEG_FEATURE_BITS = (8, 6, 6, 6, 6, 3, 0, 0)
SEG_FEATURE_SIGNED = (1, 1, 1, 1, 1, 0, 0, 0)
SEG_FEATURE_MAX = (255, 63, 63, 63, 63, 7, 0, 0)
REMAP_LR_TYPE = (C.V4L2_AV1_FRAME_RESTORE_NONE, C.V4L2_AV1_FRAME_RESTORE_SWITCHABLE,
                 C.V4L2_AV1_FRAME_RESTORE_WIENER, C.V4L2_AV1_FRAME_RESTORE_SGRPROJ)
DEFAULT_LF_REF_DELTAS = (1, 0, 0, 0, -1, 0, -1, -1)


def default_gm_params() -> list[list[int]]:
    return [[(1 << WARPEDMODEL_PREC_BITS) if i % 3 == 2 else 0 for i in range(6)]
            for _ in range(NUM_REF_FRAMES)]


def tile_log2(blk_size: int, target: int) -> int:
    k = 0
    while (blk_size << k) < target:
        k += 1
    return k


@dataclass
class SequenceHeader:
    seq_profile: int = 0
    still_picture: int = 0
    reduced_still_picture_header: int = 0
    timing_info_present_flag: int = 0
    decoder_model_info_present_flag: int = 0
    equal_picture_interval: int = 0
    buffer_removal_time_length_minus_1: int = 0
    frame_presentation_time_length_minus_1: int = 0
    operating_point_idc: list[int] = field(default_factory=lambda: [0])
    decoder_model_present_for_this_op: list[int] = field(default_factory=lambda: [0])
    frame_width_bits_minus_1: int = 0
    frame_height_bits_minus_1: int = 0
    max_frame_width_minus_1: int = 0
    max_frame_height_minus_1: int = 0
    frame_id_numbers_present_flag: int = 0
    delta_frame_id_length_minus_2: int = 0
    additional_frame_id_length_minus_1: int = 0
    use_128x128_superblock: int = 0
    enable_filter_intra: int = 0
    enable_intra_edge_filter: int = 0
    enable_interintra_compound: int = 0
    enable_masked_compound: int = 0
    enable_warped_motion: int = 0
    enable_dual_filter: int = 0
    enable_order_hint: int = 0
    enable_jnt_comp: int = 0
    enable_ref_frame_mvs: int = 0
    seq_force_screen_content_tools: int = SELECT_SCREEN_CONTENT_TOOLS
    seq_force_integer_mv: int = SELECT_INTEGER_MV
    order_hint_bits: int = 0
    enable_superres: int = 0
    enable_cdef: int = 0
    enable_restoration: int = 0
    bit_depth: int = 8
    mono_chrome: int = 0
    color_range: int = 0
    subsampling_x: int = 1
    subsampling_y: int = 1
    separate_uv_delta_q: int = 0
    film_grain_params_present: int = 0

    @property
    def num_planes(self) -> int:
        return 1 if self.mono_chrome else 3


def parse_sequence_header(payload: bytes) -> SequenceHeader:
    """5.5 sequence_header_obu."""
    r = BitReader(payload)
    s = SequenceHeader()
    s.seq_profile = r.f(3)
    s.still_picture = r.f(1)
    s.reduced_still_picture_header = r.f(1)
    buffer_delay_bits = 0
    if s.reduced_still_picture_header:
        r.f(5)  # seq_level_idx[0]
    else:
        s.timing_info_present_flag = r.f(1)
        if s.timing_info_present_flag:
            r.f(32)
            r.f(32)
            s.equal_picture_interval = r.f(1)
            if s.equal_picture_interval:
                lz = 0  # uvlc num_ticks_per_picture_minus_1
                while not r.f(1):
                    lz += 1
                if lz < 32:
                    r.f(lz)
            s.decoder_model_info_present_flag = r.f(1)
            if s.decoder_model_info_present_flag:
                buffer_delay_bits = r.f(5) + 1
                r.f(32)  # num_units_in_decoding_tick
                s.buffer_removal_time_length_minus_1 = r.f(5)
                s.frame_presentation_time_length_minus_1 = r.f(5)
        initial_display_delay_present = r.f(1)
        count = r.f(5) + 1
        s.operating_point_idc, s.decoder_model_present_for_this_op = [], []
        for _ in range(count):
            s.operating_point_idc.append(r.f(12))
            level = r.f(5)
            if level > 7:
                r.f(1)  # seq_tier
            present = 0
            if s.decoder_model_info_present_flag:
                present = r.f(1)
                if present:  # operating_parameters_info
                    r.f(buffer_delay_bits)
                    r.f(buffer_delay_bits)
                    r.f(1)
            s.decoder_model_present_for_this_op.append(present)
            if initial_display_delay_present and r.f(1):
                r.f(4)
    s.frame_width_bits_minus_1 = r.f(4)
    s.frame_height_bits_minus_1 = r.f(4)
    s.max_frame_width_minus_1 = r.f(s.frame_width_bits_minus_1 + 1)
    s.max_frame_height_minus_1 = r.f(s.frame_height_bits_minus_1 + 1)
    if not s.reduced_still_picture_header:
        s.frame_id_numbers_present_flag = r.f(1)
    if s.frame_id_numbers_present_flag:
        s.delta_frame_id_length_minus_2 = r.f(4)
        s.additional_frame_id_length_minus_1 = r.f(3)
    s.use_128x128_superblock = r.f(1)
    s.enable_filter_intra = r.f(1)
    s.enable_intra_edge_filter = r.f(1)
    if not s.reduced_still_picture_header:
        s.enable_interintra_compound = r.f(1)
        s.enable_masked_compound = r.f(1)
        s.enable_warped_motion = r.f(1)
        s.enable_dual_filter = r.f(1)
        s.enable_order_hint = r.f(1)
        if s.enable_order_hint:
            s.enable_jnt_comp = r.f(1)
            s.enable_ref_frame_mvs = r.f(1)
        if r.f(1):  # seq_choose_screen_content_tools
            s.seq_force_screen_content_tools = SELECT_SCREEN_CONTENT_TOOLS
        else:
            s.seq_force_screen_content_tools = r.f(1)
        if s.seq_force_screen_content_tools > 0:
            s.seq_force_integer_mv = SELECT_INTEGER_MV if r.f(1) else r.f(1)
        else:
            s.seq_force_integer_mv = SELECT_INTEGER_MV
        if s.enable_order_hint:
            s.order_hint_bits = r.f(3) + 1
    s.enable_superres = r.f(1)
    s.enable_cdef = r.f(1)
    s.enable_restoration = r.f(1)
    # 5.5.2 color_config
    high_bitdepth = r.f(1)
    s.bit_depth = 8
    if s.seq_profile == 2 and high_bitdepth:
        s.bit_depth = 12 if r.f(1) else 10
    elif high_bitdepth:
        s.bit_depth = 10
    s.mono_chrome = r.f(1) if s.seq_profile != 1 else 0
    mc = 2  # MC_UNSPECIFIED
    cp = tc = 2
    if r.f(1):  # color_description_present_flag
        cp, tc, mc = r.f(8), r.f(8), r.f(8)
    if s.mono_chrome:
        s.color_range = r.f(1)
        s.subsampling_x = s.subsampling_y = 1
        s.separate_uv_delta_q = 0
    else:
        if cp == 1 and tc == 13 and mc == 0:  # sRGB
            s.color_range = 1
            s.subsampling_x = s.subsampling_y = 0
        else:
            s.color_range = r.f(1)
            if s.seq_profile == 0:
                s.subsampling_x = s.subsampling_y = 1
            elif s.seq_profile == 1:
                s.subsampling_x = s.subsampling_y = 0
            elif s.bit_depth == 12:
                s.subsampling_x = r.f(1)
                s.subsampling_y = r.f(1) if s.subsampling_x else 0
            else:
                s.subsampling_x, s.subsampling_y = 1, 0
            if s.subsampling_x and s.subsampling_y:
                r.f(2)  # chroma_sample_position
        s.separate_uv_delta_q = r.f(1)
    s.film_grain_params_present = r.f(1)
    return s


def sequence_ctrl(s: SequenceHeader) -> C.Av1Sequence:
    """``fill_sequence_params``."""
    bits = [
        (s.still_picture, C.V4L2_AV1_SEQUENCE_FLAG_STILL_PICTURE),
        (s.use_128x128_superblock, C.V4L2_AV1_SEQUENCE_FLAG_USE_128X128_SUPERBLOCK),
        (s.enable_filter_intra, C.V4L2_AV1_SEQUENCE_FLAG_ENABLE_FILTER_INTRA),
        (s.enable_intra_edge_filter, C.V4L2_AV1_SEQUENCE_FLAG_ENABLE_INTRA_EDGE_FILTER),
        (s.enable_interintra_compound, C.V4L2_AV1_SEQUENCE_FLAG_ENABLE_INTERINTRA_COMPOUND),
        (s.enable_masked_compound, C.V4L2_AV1_SEQUENCE_FLAG_ENABLE_MASKED_COMPOUND),
        (s.enable_warped_motion, C.V4L2_AV1_SEQUENCE_FLAG_ENABLE_WARPED_MOTION),
        (s.enable_dual_filter, C.V4L2_AV1_SEQUENCE_FLAG_ENABLE_DUAL_FILTER),
        (s.enable_order_hint, C.V4L2_AV1_SEQUENCE_FLAG_ENABLE_ORDER_HINT),
        (s.enable_jnt_comp, C.V4L2_AV1_SEQUENCE_FLAG_ENABLE_JNT_COMP),
        (s.enable_ref_frame_mvs, C.V4L2_AV1_SEQUENCE_FLAG_ENABLE_REF_FRAME_MVS),
        (s.enable_superres, C.V4L2_AV1_SEQUENCE_FLAG_ENABLE_SUPERRES),
        (s.enable_cdef, C.V4L2_AV1_SEQUENCE_FLAG_ENABLE_CDEF),
        (s.enable_restoration, C.V4L2_AV1_SEQUENCE_FLAG_ENABLE_RESTORATION),
        (s.mono_chrome, C.V4L2_AV1_SEQUENCE_FLAG_MONO_CHROME),
        (s.color_range, C.V4L2_AV1_SEQUENCE_FLAG_COLOR_RANGE),
        (s.subsampling_x, C.V4L2_AV1_SEQUENCE_FLAG_SUBSAMPLING_X),
        (s.subsampling_y, C.V4L2_AV1_SEQUENCE_FLAG_SUBSAMPLING_Y),
        (s.film_grain_params_present, C.V4L2_AV1_SEQUENCE_FLAG_FILM_GRAIN_PARAMS_PRESENT),
        (s.separate_uv_delta_q, C.V4L2_AV1_SEQUENCE_FLAG_SEPARATE_UV_DELTA_Q),
    ]
    c = C.Av1Sequence()
    c.flags = sum(flag for on, flag in bits if on)
    c.seq_profile = s.seq_profile
    c.order_hint_bits = s.order_hint_bits
    c.bit_depth = s.bit_depth
    c.max_frame_width_minus_1 = s.max_frame_width_minus_1
    c.max_frame_height_minus_1 = s.max_frame_height_minus_1
    return c


@dataclass
class _Slot:
    """What 7.20 saves for a reference slot (the part the header syntax needs)."""
    valid: bool = False
    frame_id: int = 0
    frame_type: int = KEY_FRAME
    order_hint: int = 0
    upscaled_width: int = 0
    frame_width: int = 0
    frame_height: int = 0
    render_width: int = 0
    render_height: int = 0
    gm_params: list[list[int]] = field(default_factory=default_gm_params)
    lf_ref_deltas: list[int] = field(default_factory=lambda: list(DEFAULT_LF_REF_DELTAS))
    lf_mode_deltas: list[int] = field(default_factory=lambda: [0, 0])
    feature_enabled: list[int] = field(default_factory=lambda: [0] * 8)
    feature_data: list[list[int]] = field(default_factory=lambda: [[0] * 8 for _ in range(8)])
    film_grain: bytes = bytes(ctypes.sizeof(C.Av1FilmGrain))
    timestamp: int = 0


@dataclass
class FrameHeader:
    """One parsed frame header: the control it fills plus what the tile group needs."""
    show_existing_frame: int = 0
    frame_to_show_map_idx: int = 0
    frame: C.Av1Frame = field(default_factory=C.Av1Frame)
    film_grain: C.Av1FilmGrain = field(default_factory=C.Av1FilmGrain)
    tile_cols_log2: int = 0
    tile_rows_log2: int = 0
    header_bits: int = 0


@dataclass
class Request:
    """What a client sets for one frame: controls, OUTPUT buffer, timestamp."""
    timestamp: int
    sequence: C.Av1Sequence
    frame: C.Av1Frame
    film_grain: C.Av1FilmGrain | None
    entries: list[C.Av1TileGroupEntry]
    buffer: bytes


@dataclass
class ShowExisting:
    """A show_existing_frame header: no request; the client re-shows a slot's picture."""
    slot: int
    timestamp: int
    key_frame: bool


class Av1Parser:
    """Sequence/frame header parser keeping the reference state (spec 7.20/7.21)."""

    def __init__(self) -> None:
        self.seq: SequenceHeader | None = None
        self.slots = [_Slot() for _ in range(NUM_REF_FRAMES)]
        self.tile_size_bytes = 0

    # -- frame header ------------------------------------------------------
    def frame_header(self, payload: bytes, temporal_id: int = 0,
                     spatial_id: int = 0) -> FrameHeader:
        s = self.seq
        if s is None:
            raise BitstreamError("frame header before any sequence header")
        r = BitReader(payload)
        h = FrameHeader()
        f = h.frame
        id_len = 0
        if s.frame_id_numbers_present_flag:
            id_len = s.additional_frame_id_length_minus_1 + s.delta_frame_id_length_minus_2 + 3
        all_frames = 0xFF
        flags = 0
        if s.reduced_still_picture_header:
            frame_type, show_frame, showable, error_res = KEY_FRAME, 1, 0, 1
        else:
            h.show_existing_frame = r.f(1)
            if h.show_existing_frame:
                h.frame_to_show_map_idx = r.f(3)
                if s.decoder_model_info_present_flag and not s.equal_picture_interval:
                    r.f(s.frame_presentation_time_length_minus_1 + 1)
                if s.frame_id_numbers_present_flag:
                    r.f(id_len)
                f.frame_type = self.slots[h.frame_to_show_map_idx].frame_type
                h.header_bits = r.pos
                return h
            frame_type = r.f(2)
            show_frame = r.f(1)
            if show_frame and s.decoder_model_info_present_flag and not s.equal_picture_interval:
                r.f(s.frame_presentation_time_length_minus_1 + 1)
            showable = int(frame_type != KEY_FRAME) if show_frame else r.f(1)
            if frame_type == SWITCH_FRAME or (frame_type == KEY_FRAME and show_frame):
                error_res = 1
            else:
                error_res = r.f(1)
        intra = frame_type in (KEY_FRAME, INTRA_ONLY_FRAME)
        f.frame_type = frame_type
        if frame_type == KEY_FRAME and show_frame:
            for slot in self.slots:
                slot.valid = False
                slot.order_hint = 0
        disable_cdf_update = r.f(1)
        if s.seq_force_screen_content_tools == SELECT_SCREEN_CONTENT_TOOLS:
            allow_sct = r.f(1)
        else:
            allow_sct = s.seq_force_screen_content_tools
        force_integer_mv = 0
        if allow_sct:
            if s.seq_force_integer_mv == SELECT_INTEGER_MV:
                force_integer_mv = r.f(1)
            else:
                force_integer_mv = s.seq_force_integer_mv
        if intra:
            force_integer_mv = 1
        if s.frame_id_numbers_present_flag:
            f.current_frame_id = r.f(id_len)
        if frame_type == SWITCH_FRAME:
            size_override = 1
        elif s.reduced_still_picture_header:
            size_override = 0
        else:
            size_override = r.f(1)
        f.order_hint = r.f(s.order_hint_bits)
        primary_ref_frame = PRIMARY_REF_NONE if intra or error_res else r.f(3)
        f.primary_ref_frame = primary_ref_frame
        brt_present = 0
        if s.decoder_model_info_present_flag:
            brt_present = r.f(1)
            if brt_present:
                for op, idc in enumerate(s.operating_point_idc):
                    if s.decoder_model_present_for_this_op[op]:
                        in_t = (idc >> temporal_id) & 1
                        in_s = (idc >> (spatial_id + 8)) & 1
                        if idc == 0 or (in_t and in_s):
                            f.buffer_removal_time[op] = r.f(
                                s.buffer_removal_time_length_minus_1 + 1)
        allow_hp_mv = use_ref_frame_mvs = allow_intrabc = 0
        if frame_type == SWITCH_FRAME or (frame_type == KEY_FRAME and show_frame):
            refresh = all_frames
        else:
            refresh = r.f(8)
        f.refresh_frame_flags = refresh
        if (not intra or refresh != all_frames) and error_res and s.enable_order_hint:
            for i in range(NUM_REF_FRAMES):
                hint = r.f(s.order_hint_bits)
                if hint != self.slots[i].order_hint or not self.slots[i].valid:
                    self.slots[i] = _Slot(order_hint=hint)  # 7.20: an invalid frame
        use_superres = 0
        short_signaling = 0
        ref_frame_idx = [0] * REFS_PER_FRAME

        def superres() -> tuple[int, int]:
            nonlocal use_superres
            use_superres = r.f(1) if s.enable_superres else 0
            denom = r.f(3) + 9 if use_superres else 8
            return denom, (upscaled * 8 + denom // 2) // denom

        def frame_size() -> tuple[int, int, int]:
            if size_override:
                w = r.f(s.frame_width_bits_minus_1 + 1) + 1
                hh = r.f(s.frame_height_bits_minus_1 + 1) + 1
            else:
                w, hh = s.max_frame_width_minus_1 + 1, s.max_frame_height_minus_1 + 1
            return w, hh, 0

        def render_size(up: int, fh: int) -> tuple[int, int]:
            if r.f(1):
                return r.f(16) + 1, r.f(16) + 1
            return up, fh

        if intra:
            upscaled, frame_height, _ = frame_size()
            denom, frame_width = superres()
            render_w, render_h = render_size(upscaled, frame_height)
            if allow_sct and upscaled == frame_width:
                allow_intrabc = r.f(1)
        else:
            if s.enable_order_hint:
                short_signaling = r.f(1)
                if short_signaling:
                    raise BitstreamError("frame_refs_short_signaling is not supported yet")
            for i in range(REFS_PER_FRAME):
                ref_frame_idx[i] = r.f(3)
                if s.frame_id_numbers_present_flag:
                    r.f(s.delta_frame_id_length_minus_2 + 2)
            found = False
            if size_override and not error_res:
                for i in range(REFS_PER_FRAME):
                    if r.f(1):
                        rs = self.slots[ref_frame_idx[i]]
                        upscaled, frame_height = rs.upscaled_width, rs.frame_height
                        render_w, render_h = rs.render_width, rs.render_height
                        found = True
                        break
            if not found:
                upscaled, frame_height, _ = frame_size()
                denom, frame_width = superres()
                render_w, render_h = render_size(upscaled, frame_height)
            else:
                denom, frame_width = superres()
            allow_hp_mv = 0 if force_integer_mv else r.f(1)
            f.interpolation_filter = (C.V4L2_AV1_INTERPOLATION_FILTER_SWITCHABLE if r.f(1)
                                      else r.f(2))
            is_mm_switchable = r.f(1)
            if is_mm_switchable:
                flags |= C.V4L2_AV1_FRAME_FLAG_IS_MOTION_MODE_SWITCHABLE
            if not (error_res or not s.enable_ref_frame_mvs):
                use_ref_frame_mvs = r.f(1)
            for i in range(REFS_PER_FRAME):
                f.ref_frame_idx[i] = ref_frame_idx[i]
                f.order_hints[i + 1] = self.slots[ref_frame_idx[i]].order_hint
        f.superres_denom = denom
        f.upscaled_width = upscaled
        f.frame_width_minus_1 = frame_width - 1
        f.frame_height_minus_1 = frame_height - 1
        f.render_width_minus_1 = render_w - 1
        f.render_height_minus_1 = render_h - 1
        if s.reduced_still_picture_header or disable_cdf_update:
            disable_end_update = 1
        else:
            disable_end_update = r.f(1)
        # load_previous() / setup_past_independence()
        if primary_ref_frame == PRIMARY_REF_NONE:
            prev = _Slot()
        else:
            prev = self.slots[ref_frame_idx[primary_ref_frame]]
        mi_cols = 2 * ((frame_width + 7) >> 3)
        mi_rows = 2 * ((frame_height + 7) >> 3)
        self._tile_info(r, h, mi_cols, mi_rows)
        num_planes = s.num_planes
        # 5.9.12 quantization_params
        q = f.quantization
        q.base_q_idx = r.f(8)

        def delta_q() -> int:
            return r.su(7) if r.f(1) else 0

        q.delta_q_y_dc = delta_q()
        if num_planes > 1:
            diff_uv = r.f(1) if s.separate_uv_delta_q else 0
            q.delta_q_u_dc = delta_q()
            q.delta_q_u_ac = delta_q()
            if diff_uv:
                q.flags |= C.V4L2_AV1_QUANTIZATION_FLAG_DIFF_UV_DELTA
                q.delta_q_v_dc = delta_q()
                q.delta_q_v_ac = delta_q()
            else:
                q.delta_q_v_dc, q.delta_q_v_ac = q.delta_q_u_dc, q.delta_q_u_ac
        if r.f(1):
            q.flags |= C.V4L2_AV1_QUANTIZATION_FLAG_USING_QMATRIX
            q.qm_y = r.f(4)
            q.qm_u = r.f(4)
            q.qm_v = r.f(4) if s.separate_uv_delta_q else q.qm_u
        # 5.9.14 segmentation_params
        seg = f.segmentation
        enabled = [0] * 8
        data = [[0] * 8 for _ in range(8)]
        if r.f(1):
            seg.flags |= C.V4L2_AV1_SEGMENTATION_FLAG_ENABLED
            if primary_ref_frame == PRIMARY_REF_NONE:
                update_map, temporal, update_data = 1, 0, 1
            else:
                update_map = r.f(1)
                temporal = r.f(1) if update_map else 0
                update_data = r.f(1)
            seg.flags |= ((C.V4L2_AV1_SEGMENTATION_FLAG_UPDATE_MAP if update_map else 0)
                          | (C.V4L2_AV1_SEGMENTATION_FLAG_TEMPORAL_UPDATE if temporal else 0)
                          | (C.V4L2_AV1_SEGMENTATION_FLAG_UPDATE_DATA if update_data else 0))
            if update_data:
                for i in range(8):
                    for j in range(8):
                        value = 0
                        if r.f(1):
                            enabled[i] |= 1 << j
                            bits, mx = SEG_FEATURE_BITS[j], SEG_FEATURE_MAX[j]
                            if SEG_FEATURE_SIGNED[j]:
                                value = max(-mx, min(mx, r.su(1 + bits)))
                            else:
                                value = max(0, min(mx, r.f(bits)))
                        data[i][j] = value
            else:
                enabled = list(prev.feature_enabled)
                data = [list(row) for row in prev.feature_data]
        for i in range(8):
            seg.feature_enabled[i] = enabled[i]
            for j in range(8):
                seg.feature_data[i][j] = data[i][j]
                if enabled[i] >> j & 1:
                    seg.last_active_seg_id = i
                    if j >= 5:
                        seg.flags |= C.V4L2_AV1_SEGMENTATION_FLAG_SEG_ID_PRE_SKIP
        # 5.9.17 / 5.9.18 delta_q_params, delta_lf_params
        lf = f.loop_filter
        if q.base_q_idx > 0 and r.f(1):
            q.flags |= C.V4L2_AV1_QUANTIZATION_FLAG_DELTA_Q_PRESENT
            q.delta_q_res = r.f(2)
            if not allow_intrabc and r.f(1):
                lf.flags |= C.V4L2_AV1_LOOP_FILTER_FLAG_DELTA_LF_PRESENT
                lf.delta_lf_res = r.f(2)
                if r.f(1):
                    lf.flags |= C.V4L2_AV1_LOOP_FILTER_FLAG_DELTA_LF_MULTI
        coded_lossless = all(
            qindex_of(f, i) == 0 for i in range(8)) and not any(
            (q.delta_q_y_dc, q.delta_q_u_dc, q.delta_q_u_ac, q.delta_q_v_dc, q.delta_q_v_ac))
        all_lossless = coded_lossless and frame_width == upscaled
        # 5.9.11 loop_filter_params
        ref_deltas = list(prev.lf_ref_deltas)
        mode_deltas = list(prev.lf_mode_deltas)
        if coded_lossless or allow_intrabc:
            ref_deltas, mode_deltas = list(DEFAULT_LF_REF_DELTAS), [0, 0]
        else:
            lf.level[0] = r.f(6)
            lf.level[1] = r.f(6)
            if num_planes > 1 and (lf.level[0] or lf.level[1]):
                lf.level[2] = r.f(6)
                lf.level[3] = r.f(6)
            lf.sharpness = r.f(3)
            if r.f(1):
                lf.flags |= C.V4L2_AV1_LOOP_FILTER_FLAG_DELTA_ENABLED
                if r.f(1):
                    lf.flags |= C.V4L2_AV1_LOOP_FILTER_FLAG_DELTA_UPDATE
                    for i in range(8):
                        if r.f(1):
                            ref_deltas[i] = r.su(7)
                    for i in range(2):
                        if r.f(1):
                            mode_deltas[i] = r.su(7)
        for i in range(8):
            lf.ref_deltas[i] = ref_deltas[i]
        lf.mode_deltas[0], lf.mode_deltas[1] = mode_deltas
        # 5.9.19 cdef_params
        cd = f.cdef
        if not (coded_lossless or allow_intrabc or not s.enable_cdef):
            cd.damping_minus_3 = r.f(2)
            cd.bits = r.f(2)
            for i in range(1 << cd.bits):
                cd.y_pri_strength[i] = r.f(4)
                sec = r.f(2)
                cd.y_sec_strength[i] = 4 if sec == 3 else sec
                if num_planes > 1:
                    cd.uv_pri_strength[i] = r.f(4)
                    sec = r.f(2)
                    cd.uv_sec_strength[i] = 4 if sec == 3 else sec
        # 5.9.20 lr_params
        lr = f.loop_restoration
        if not (all_lossless or allow_intrabc or not s.enable_restoration):
            uses_lr = uses_chroma = False
            for i in range(num_planes):
                t = REMAP_LR_TYPE[r.f(2)]
                lr.frame_restoration_type[i] = t
                if t != C.V4L2_AV1_FRAME_RESTORE_NONE:
                    uses_lr = True
                    uses_chroma = uses_chroma or i > 0
            if uses_lr:
                lr.flags |= C.V4L2_AV1_LOOP_RESTORATION_FLAG_USES_LR
                if uses_chroma:
                    lr.flags |= C.V4L2_AV1_LOOP_RESTORATION_FLAG_USES_CHROMA_LR
                if s.use_128x128_superblock:
                    lr.lr_unit_shift = r.f(1) + 1
                else:
                    lr.lr_unit_shift = r.f(1)
                    if lr.lr_unit_shift:
                        lr.lr_unit_shift += r.f(1)
                size = 256 >> (2 - lr.lr_unit_shift)
                if s.subsampling_x and s.subsampling_y and uses_chroma:
                    lr.lr_uv_shift = r.f(1)
                lr.loop_restoration_size[0] = size
                lr.loop_restoration_size[1] = size >> lr.lr_uv_shift
                lr.loop_restoration_size[2] = size >> lr.lr_uv_shift
        # 5.9.21 read_tx_mode
        if coded_lossless:
            f.tx_mode = C.V4L2_AV1_TX_MODE_ONLY_4X4
        else:
            f.tx_mode = C.V4L2_AV1_TX_MODE_SELECT if r.f(1) else C.V4L2_AV1_TX_MODE_LARGEST
        reference_select = 0 if intra else r.f(1)
        # 5.9.22 skip_mode_params
        skip = skip_mode_frames(s, intra, reference_select, f.order_hint,
                                [int(f.order_hints[i + 1]) for i in range(REFS_PER_FRAME)])
        skip_present = 0
        if skip is not None:
            f.skip_mode_frame[0], f.skip_mode_frame[1] = skip
            skip_present = r.f(1)
        allow_warped = 0
        if not (intra or error_res or not s.enable_warped_motion):
            allow_warped = r.f(1)
        reduced_tx_set = r.f(1)
        # 5.9.24 global_motion_params
        gm = f.global_motion
        params = default_gm_params()
        for ref in range(1, 8):
            gm.type[ref] = C.V4L2_AV1_WARP_MODEL_IDENTITY
        if not intra:
            for ref in range(1, 8):
                typ = C.V4L2_AV1_WARP_MODEL_IDENTITY
                gflags = 0
                if r.f(1):
                    gflags |= C.V4L2_AV1_GLOBAL_MOTION_FLAG_IS_GLOBAL
                    if r.f(1):
                        gflags |= C.V4L2_AV1_GLOBAL_MOTION_FLAG_IS_ROT_ZOOM
                        typ = C.V4L2_AV1_WARP_MODEL_ROTZOOM
                    elif r.f(1):
                        gflags |= C.V4L2_AV1_GLOBAL_MOTION_FLAG_IS_TRANSLATION
                        typ = C.V4L2_AV1_WARP_MODEL_TRANSLATION
                    else:
                        typ = C.V4L2_AV1_WARP_MODEL_AFFINE
                gm.flags[ref] = gflags
                gm.type[ref] = typ
                if typ >= C.V4L2_AV1_WARP_MODEL_ROTZOOM:
                    for idx in (2, 3):
                        params[ref][idx] = read_global_param(r, typ, idx, allow_hp_mv,
                                                             prev.gm_params[ref][idx])
                    if typ == C.V4L2_AV1_WARP_MODEL_AFFINE:
                        for idx in (4, 5):
                            params[ref][idx] = read_global_param(r, typ, idx, allow_hp_mv,
                                                                 prev.gm_params[ref][idx])
                    else:
                        params[ref][4] = -params[ref][3]
                        params[ref][5] = params[ref][2]
                if typ >= C.V4L2_AV1_WARP_MODEL_TRANSLATION:
                    for idx in (0, 1):
                        params[ref][idx] = read_global_param(r, typ, idx, allow_hp_mv,
                                                             prev.gm_params[ref][idx])
        for ref in range(8):
            for i in range(6):
                gm.params[ref][i] = params[ref][i]
        # 5.9.30 film_grain_params
        self._film_grain(r, h, show_frame, showable, frame_type)
        flag_bits = [
            (show_frame, C.V4L2_AV1_FRAME_FLAG_SHOW_FRAME),
            (showable, C.V4L2_AV1_FRAME_FLAG_SHOWABLE_FRAME),
            (error_res, C.V4L2_AV1_FRAME_FLAG_ERROR_RESILIENT_MODE),
            (disable_cdf_update, C.V4L2_AV1_FRAME_FLAG_DISABLE_CDF_UPDATE),
            (allow_sct, C.V4L2_AV1_FRAME_FLAG_ALLOW_SCREEN_CONTENT_TOOLS),
            (force_integer_mv, C.V4L2_AV1_FRAME_FLAG_FORCE_INTEGER_MV),
            (allow_intrabc, C.V4L2_AV1_FRAME_FLAG_ALLOW_INTRABC),
            (use_superres, C.V4L2_AV1_FRAME_FLAG_USE_SUPERRES),
            (allow_hp_mv, C.V4L2_AV1_FRAME_FLAG_ALLOW_HIGH_PRECISION_MV),
            (use_ref_frame_mvs, C.V4L2_AV1_FRAME_FLAG_USE_REF_FRAME_MVS),
            (disable_end_update, C.V4L2_AV1_FRAME_FLAG_DISABLE_FRAME_END_UPDATE_CDF),
            (allow_warped, C.V4L2_AV1_FRAME_FLAG_ALLOW_WARPED_MOTION),
            (reference_select, C.V4L2_AV1_FRAME_FLAG_REFERENCE_SELECT),
            (reduced_tx_set, C.V4L2_AV1_FRAME_FLAG_REDUCED_TX_SET),
            (skip is not None, C.V4L2_AV1_FRAME_FLAG_SKIP_MODE_ALLOWED),
            (skip_present, C.V4L2_AV1_FRAME_FLAG_SKIP_MODE_PRESENT),
            (size_override, C.V4L2_AV1_FRAME_FLAG_FRAME_SIZE_OVERRIDE),
            (brt_present, C.V4L2_AV1_FRAME_FLAG_BUFFER_REMOVAL_TIME_PRESENT),
            (short_signaling, C.V4L2_AV1_FRAME_FLAG_FRAME_REFS_SHORT_SIGNALING),
        ]
        f.flags = flags | sum(bit for on, bit in flag_bits if on)
        h.header_bits = r.pos
        return h

    def _tile_info(self, r: BitReader, h: FrameHeader, mi_cols: int, mi_rows: int) -> None:
        """5.9.15 tile_info."""
        assert self.seq is not None
        ti = h.frame.tile_info
        sb128 = self.seq.use_128x128_superblock
        sb_cols = (mi_cols + 31) >> 5 if sb128 else (mi_cols + 15) >> 4
        sb_rows = (mi_rows + 31) >> 5 if sb128 else (mi_rows + 15) >> 4
        sb_shift = 5 if sb128 else 4
        sb_size = sb_shift + 2
        max_tile_width_sb = 4096 >> sb_size
        max_tile_area_sb = (4096 * 2304) >> (2 * sb_size)
        min_log2_tile_cols = tile_log2(max_tile_width_sb, sb_cols)
        max_log2_tile_cols = tile_log2(1, min(sb_cols, 64))
        max_log2_tile_rows = tile_log2(1, min(sb_rows, 64))
        min_log2_tiles = max(min_log2_tile_cols, tile_log2(max_tile_area_sb, sb_rows * sb_cols))
        col_starts: list[int] = []
        row_starts: list[int] = []
        if r.f(1):
            ti.flags |= C.V4L2_AV1_TILE_INFO_FLAG_UNIFORM_TILE_SPACING
            cols_log2 = min_log2_tile_cols
            while cols_log2 < max_log2_tile_cols and r.f(1):
                cols_log2 += 1
            w = (sb_cols + (1 << cols_log2) - 1) >> cols_log2
            col_starts = [sb << sb_shift for sb in range(0, sb_cols, w)]
            rows_log2 = max(min_log2_tiles - cols_log2, 0)
            while rows_log2 < max_log2_tile_rows and r.f(1):
                rows_log2 += 1
            hh = (sb_rows + (1 << rows_log2) - 1) >> rows_log2
            row_starts = [sb << sb_shift for sb in range(0, sb_rows, hh)]
        else:
            widest = 0
            start = 0
            while start < sb_cols:
                col_starts.append(start << sb_shift)
                size = r.ns(min(sb_cols - start, max_tile_width_sb)) + 1
                widest = max(widest, size)
                start += size
            cols_log2 = tile_log2(1, len(col_starts))
            if min_log2_tiles > 0:
                area = (sb_rows * sb_cols) >> (min_log2_tiles + 1)
            else:
                area = sb_rows * sb_cols
            max_h = max(area // widest, 1)
            start = 0
            while start < sb_rows:
                row_starts.append(start << sb_shift)
                start += r.ns(min(sb_rows - start, max_h)) + 1
            rows_log2 = tile_log2(1, len(row_starts))
        col_starts.append(mi_cols)
        row_starts.append(mi_rows)
        ti.tile_cols = len(col_starts) - 1
        ti.tile_rows = len(row_starts) - 1
        for i, v in enumerate(col_starts):
            ti.mi_col_starts[i] = v
        for i, v in enumerate(row_starts):
            ti.mi_row_starts[i] = v
        unit = (1 << sb_shift) - 1
        for i in range(ti.tile_cols):
            ti.width_in_sbs_minus_1[i] = ((col_starts[i + 1] - col_starts[i] + unit)
                                          >> sb_shift) - 1
        for i in range(ti.tile_rows):
            ti.height_in_sbs_minus_1[i] = ((row_starts[i + 1] - row_starts[i] + unit)
                                           >> sb_shift) - 1
        if cols_log2 > 0 or rows_log2 > 0:
            ti.context_update_tile_id = r.f(cols_log2 + rows_log2)
            self.tile_size_bytes = r.f(2) + 1
        ti.tile_size_bytes = self.tile_size_bytes
        h.tile_cols_log2, h.tile_rows_log2 = cols_log2, rows_log2

    def _film_grain(self, r: BitReader, h: FrameHeader, show_frame: int, showable: int,
                    frame_type: int) -> None:
        """5.9.30 film_grain_params."""
        assert self.seq is not None
        s = self.seq
        g = h.film_grain
        if not s.film_grain_params_present or (not show_frame and not showable):
            return
        if not r.f(1):
            return
        seed = r.f(16)
        update = r.f(1) if frame_type == INTER_FRAME else 1
        if not update:
            ref_idx = r.f(3)
            loaded = C.Av1FilmGrain.from_buffer_copy(self.slots[ref_idx].film_grain)
            ctypes.memmove(ctypes.addressof(g), ctypes.addressof(loaded), ctypes.sizeof(g))
            g.grain_seed = seed
            g.film_grain_params_ref_idx = ref_idx
            g.flags = (g.flags & ~C.V4L2_AV1_FILM_GRAIN_FLAG_UPDATE_GRAIN) | \
                C.V4L2_AV1_FILM_GRAIN_FLAG_APPLY_GRAIN
            return
        g.flags = C.V4L2_AV1_FILM_GRAIN_FLAG_APPLY_GRAIN | C.V4L2_AV1_FILM_GRAIN_FLAG_UPDATE_GRAIN
        g.grain_seed = seed
        g.num_y_points = r.f(4)
        for i in range(g.num_y_points):
            g.point_y_value[i] = r.f(8)
            g.point_y_scaling[i] = r.f(8)
        csfl = 0 if s.mono_chrome else r.f(1)
        if csfl:
            g.flags |= C.V4L2_AV1_FILM_GRAIN_FLAG_CHROMA_SCALING_FROM_LUMA
        if not (s.mono_chrome or csfl or (s.subsampling_x == 1 and s.subsampling_y == 1
                                          and g.num_y_points == 0)):
            g.num_cb_points = r.f(4)
            for i in range(g.num_cb_points):
                g.point_cb_value[i] = r.f(8)
                g.point_cb_scaling[i] = r.f(8)
            g.num_cr_points = r.f(4)
            for i in range(g.num_cr_points):
                g.point_cr_value[i] = r.f(8)
                g.point_cr_scaling[i] = r.f(8)
        g.grain_scaling_minus_8 = r.f(2)
        g.ar_coeff_lag = r.f(2)
        num_pos_luma = 2 * g.ar_coeff_lag * (g.ar_coeff_lag + 1)
        num_pos_chroma = num_pos_luma
        if g.num_y_points:
            num_pos_chroma = num_pos_luma + 1
            for i in range(num_pos_luma):
                g.ar_coeffs_y_plus_128[i] = r.f(8)
        if csfl or g.num_cb_points:
            for i in range(num_pos_chroma):
                g.ar_coeffs_cb_plus_128[i] = r.f(8)
        if csfl or g.num_cr_points:
            for i in range(num_pos_chroma):
                g.ar_coeffs_cr_plus_128[i] = r.f(8)
        g.ar_coeff_shift_minus_6 = r.f(2)
        g.grain_scale_shift = r.f(2)
        if g.num_cb_points:
            g.cb_mult, g.cb_luma_mult, g.cb_offset = r.f(8), r.f(8), r.f(9)
        if g.num_cr_points:
            g.cr_mult, g.cr_luma_mult, g.cr_offset = r.f(8), r.f(8), r.f(9)
        if r.f(1):
            g.flags |= C.V4L2_AV1_FILM_GRAIN_FLAG_OVERLAP
        if r.f(1):
            g.flags |= C.V4L2_AV1_FILM_GRAIN_FLAG_CLIP_TO_RESTRICTED_RANGE

    # -- tile group --------------------------------------------------------
    def tile_group(self, h: FrameHeader, payload: bytes, start_bits: int,
                   buffer_offset: int) -> list[C.Av1TileGroupEntry]:
        """5.11.1 tile_group_obu: one entry per tile, offsets counted in the OUTPUT buffer."""
        ti = h.frame.tile_info
        num_tiles = ti.tile_cols * ti.tile_rows
        r = BitReader(payload, start_bits)
        start_pos = r.pos
        tg_start, tg_end = 0, num_tiles - 1
        if num_tiles > 1 and r.f(1):
            bits = h.tile_cols_log2 + h.tile_rows_log2
            tg_start, tg_end = r.f(bits), r.f(bits)
        r.byte_alignment()
        size_left = len(payload) - start_pos // 8 - (r.pos - start_pos) // 8
        entries = []
        for tile_num in range(tg_start, tg_end + 1):
            if tile_num == tg_end:
                tile_size = size_left
            else:
                tile_size = r.le(ti.tile_size_bytes) + 1
                size_left -= tile_size + ti.tile_size_bytes
            e = C.Av1TileGroupEntry()
            e.tile_offset = buffer_offset + r.pos // 8
            e.tile_size = tile_size
            e.tile_row = tile_num // ti.tile_cols
            e.tile_col = tile_num % ti.tile_cols
            entries.append(e)
            r.pos += tile_size * 8
        if r.pos > len(payload) * 8:
            raise BitstreamError("tile sizes run past the tile group OBU")
        return entries

    # -- reference update ----------------------------------------------------
    def update_refs(self, h: FrameHeader, timestamp: int) -> None:
        """7.20 reference frame update (and 7.21 for a shown key frame)."""
        f = h.frame
        if h.show_existing_frame:
            src = self.slots[h.frame_to_show_map_idx]
            if src.frame_type == KEY_FRAME:
                for i in range(NUM_REF_FRAMES):
                    self.slots[i] = _copy_slot(src)
            return
        saved = _Slot(
            valid=True, frame_id=f.current_frame_id, frame_type=f.frame_type,
            order_hint=f.order_hint, upscaled_width=f.upscaled_width,
            frame_width=f.frame_width_minus_1 + 1, frame_height=f.frame_height_minus_1 + 1,
            render_width=f.render_width_minus_1 + 1, render_height=f.render_height_minus_1 + 1,
            gm_params=[[int(v) for v in f.global_motion.params[ref]] for ref in range(8)],
            lf_ref_deltas=[int(v) for v in f.loop_filter.ref_deltas],
            lf_mode_deltas=[int(v) for v in f.loop_filter.mode_deltas],
            feature_enabled=[int(v) for v in f.segmentation.feature_enabled],
            feature_data=[[int(v) for v in row] for row in f.segmentation.feature_data],
            film_grain=C.pack(h.film_grain),
            timestamp=timestamp)
        for i in range(NUM_REF_FRAMES):
            if f.refresh_frame_flags >> i & 1:
                self.slots[i] = _copy_slot(saved)


def _copy_slot(s: _Slot) -> _Slot:
    return _Slot(s.valid, s.frame_id, s.frame_type, s.order_hint, s.upscaled_width,
                 s.frame_width, s.frame_height, s.render_width, s.render_height,
                 [list(p) for p in s.gm_params], list(s.lf_ref_deltas),
                 list(s.lf_mode_deltas), list(s.feature_enabled),
                 [list(d) for d in s.feature_data], s.film_grain, s.timestamp)


def qindex_of(f: C.Av1Frame, segment_id: int) -> int:
    """7.12.2 get_qindex(1, segmentId)."""
    q = f.quantization.base_q_idx
    seg = f.segmentation
    if seg.flags & C.V4L2_AV1_SEGMENTATION_FLAG_ENABLED and seg.feature_enabled[segment_id] & 1:
        return max(0, min(255, int(q) + int(seg.feature_data[segment_id][0])))
    return int(q)


def relative_dist(s_enable_order_hint: int, bits: int, a: int, b: int) -> int:
    if not s_enable_order_hint:
        return 0
    diff = a - b
    m = 1 << (bits - 1)
    return (diff & (m - 1)) - (diff & m)


def skip_mode_frames(s: SequenceHeader | C.Av1Sequence, intra: bool | int,
                     reference_select: int, order_hint: int,
                     ref_hints: list[int]) -> tuple[int, int] | None:
    """5.9.22 skipModeAllowed / SkipModeFrame from the 7 references' order hints."""
    if isinstance(s, SequenceHeader):
        enable, bits = s.enable_order_hint, s.order_hint_bits
    else:
        enable = s.flags & C.V4L2_AV1_SEQUENCE_FLAG_ENABLE_ORDER_HINT
        bits = s.order_hint_bits
    if intra or not reference_select or not enable:
        return None

    def dist(a: int, b: int) -> int:
        return relative_dist(1, bits, a, b)

    fwd = bwd = -1
    fwd_hint = bwd_hint = 0
    for i, hint in enumerate(ref_hints):
        if dist(hint, order_hint) < 0:
            if fwd < 0 or dist(hint, fwd_hint) > 0:
                fwd, fwd_hint = i, hint
        elif dist(hint, order_hint) > 0:
            if bwd < 0 or dist(hint, bwd_hint) < 0:
                bwd, bwd_hint = i, hint
    if fwd < 0:
        return None
    if bwd >= 0:
        return 1 + min(fwd, bwd), 1 + max(fwd, bwd)
    fwd2, fwd2_hint = -1, 0
    for i, hint in enumerate(ref_hints):
        if dist(hint, fwd_hint) < 0 and (fwd2 < 0 or dist(hint, fwd2_hint) > 0):
            fwd2, fwd2_hint = i, hint
    if fwd2 < 0:
        return None
    return 1 + min(fwd, fwd2), 1 + max(fwd, fwd2)


def global_param_bits(typ: int, idx: int, allow_hp_mv: int) -> tuple[int, int]:
    """(absBits, precBits) of read_global_param."""
    if idx < 2:
        if typ == C.V4L2_AV1_WARP_MODEL_TRANSLATION:
            return 9 - (not allow_hp_mv), 3 - (not allow_hp_mv)
        return 12, 6
    return 12, 15


def read_global_param(r: BitReader, typ: int, idx: int, allow_hp_mv: int, prev: int) -> int:
    abs_bits, prec_bits = global_param_bits(typ, idx, allow_hp_mv)
    prec_diff = WARPEDMODEL_PREC_BITS - prec_bits
    rnd = (1 << WARPEDMODEL_PREC_BITS) if idx % 3 == 2 else 0
    sub = (1 << prec_bits) if idx % 3 == 2 else 0
    mx = 1 << abs_bits
    ref = (prev >> prec_diff) - sub
    value: int = r.signed_subexp_with_ref(-mx, mx + 1, ref)
    return (value << prec_diff) + rnd


# -- the client loop ---------------------------------------------------------

def fill_stream(temporal_units: Iterable[bytes], first_timestamp: int = 1000,
                step: int = 1000) -> Iterator[Request | ShowExisting]:
    """Requests (one per frame, decode order) and ShowExisting events of a stream.

    Each request's timestamp is ``first_timestamp + n * step`` (n counts
    requests); ``reference_frame_ts`` names, per slot, the timestamp of the
    request whose frame the slot holds (0 for a slot never filled), as
    GStreamer's ``fill_refs`` does from its DPB.
    """
    p = Av1Parser()
    seq_ctrl: C.Av1Sequence | None = None
    n = 0
    for tu in temporal_units:
        header: FrameHeader | None = None
        buf = bytearray()
        entries: list[C.Av1TileGroupEntry] = []
        tiles_seen = 0
        for obu_type, tid, sid, payload in split_obus(tu):
            if obu_type == OBU_SEQUENCE_HEADER:
                p.seq = parse_sequence_header(payload)
                seq_ctrl = sequence_ctrl(p.seq)
            elif obu_type in (OBU_FRAME_HEADER, OBU_FRAME):
                if header is not None and obu_type == OBU_FRAME_HEADER:
                    continue  # a copy of the current frame header
                header = p.frame_header(payload, tid, sid)
                if header.show_existing_frame:
                    slot = p.slots[header.frame_to_show_map_idx]
                    yield ShowExisting(header.frame_to_show_map_idx, slot.timestamp,
                                       slot.frame_type == KEY_FRAME)
                    p.update_refs(header, slot.timestamp)
                    header = None
                    continue
                if obu_type == OBU_FRAME:
                    start = (header.header_bits + 7) & ~7
                    entries += p.tile_group(header, payload, start, len(buf))
                    buf += payload
            elif obu_type == OBU_REDUNDANT_FRAME_HEADER:
                continue
            elif obu_type == OBU_TILE_GROUP:
                if header is None:
                    raise BitstreamError("tile group without a frame header")
                entries += p.tile_group(header, payload, 0, len(buf))
                buf += payload
            else:
                continue
            ti = header.frame.tile_info if header is not None else None
            tiles_seen = len(entries)
            if header is not None and ti is not None and tiles_seen == ti.tile_cols * ti.tile_rows:
                assert seq_ctrl is not None
                timestamp = first_timestamp + n * step
                n += 1
                for i in range(NUM_REF_FRAMES):
                    header.frame.reference_frame_ts[i] = p.slots[i].timestamp
                fg = header.film_grain if p.seq is not None and \
                    p.seq.film_grain_params_present else None
                yield Request(timestamp, seq_ctrl, header.frame, fg, entries, bytes(buf))
                p.update_refs(header, timestamp)
                header, buf, entries = None, bytearray(), []
