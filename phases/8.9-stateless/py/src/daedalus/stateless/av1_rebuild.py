"""Rebuild an AV1 temporal unit from the stateless controls and the OUTPUT buffer alone.

What the daemon hands FFmpeg (libdav1d) for one ``V4L2_PIX_FMT_AV1_FRAME``
request: a temporal delimiter, a sequence header OBU written from
``V4L2_CID_STATELESS_AV1_SEQUENCE``, a frame header OBU written from
``V4L2_CID_STATELESS_AV1_FRAME`` (+ ``..._FILM_GRAIN``), and one tile group
OBU holding every tile, whose bytes are taken from the OUTPUT buffer at
``tile_offset``/``tile_size`` of ``..._TILE_GROUP_ENTRY``. Nothing else of
the buffer is read: clients differ on what precedes the tile data (GStreamer
copies OBU_FRAME payloads, frame header bits included, but not
OBU_FRAME_HEADER payloads; the VPU981 driver reads from ``tile_offset``), so
the entries are the only reliable locator.

The headers are written to *mean* what the controls say, not to repeat the
client's bits. Syntax whose coding depends on earlier frames is written so
the value the decoder ends with is the control's:

- the sequence header signals no timing/decoder model, one operating point,
  no frame ids (they do not change decoding), ``seq_choose_screen_content_tools``
  and ``seq_choose_integer_mv`` (so the per-frame flags are coded), and no
  colour description (not part of the control; it does not change samples);
- segmentation data and loop-filter deltas are always coded in full
  (``segmentation_update_data`` = 1, every ``update_ref_delta`` = 1) with the
  control's values, which are the loaded values when the client's frame
  inherited them;
- frame refs are coded explicitly (no ``frame_refs_short_signaling``), sizes
  explicitly (``found_ref`` = 0), film grain with ``update_grain`` = 1;
- global-motion parameters are coded against the parameters this rebuilder
  wrote for the primary reference frame's slot (``PrevGmParams``), and
  ``ref_order_hint[]`` (error-resilient frames) from the order hints it
  tracked per slot, so the rebuilder keeps a little per-slot state and must
  see every request of a stream in decode order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from daedalus.stateless import av1_ctrls as C
from daedalus.stateless.av1_bits import (
    OBU_FRAME_HEADER,
    OBU_SEQUENCE_HEADER,
    OBU_TEMPORAL_DELIMITER,
    OBU_TILE_GROUP,
    BitWriter,
    obu,
)
from daedalus.stateless.av1_fill import (
    INTER_FRAME,
    INTRA_ONLY_FRAME,
    KEY_FRAME,
    NUM_REF_FRAMES,
    PRIMARY_REF_NONE,
    REFS_PER_FRAME,
    SEG_FEATURE_BITS,
    SEG_FEATURE_SIGNED,
    SWITCH_FRAME,
    WARPEDMODEL_PREC_BITS,
    default_gm_params,
    global_param_bits,
    qindex_of,
    skip_mode_frames,
    tile_log2,
)

LR_TYPE_CODE = {C.V4L2_AV1_FRAME_RESTORE_NONE: 0, C.V4L2_AV1_FRAME_RESTORE_SWITCHABLE: 1,
                C.V4L2_AV1_FRAME_RESTORE_WIENER: 2, C.V4L2_AV1_FRAME_RESTORE_SGRPROJ: 3}
TILE_SIZE_BYTES = 4


class ControlError(ValueError):
    """The controls cannot describe a decodable frame (or contradict the buffer)."""


def _has(flags: int, bit: int) -> int:
    return 1 if flags & bit else 0


def sequence_header_obu(seq: C.Av1Sequence) -> bytes:
    """5.5 sequence_header_obu from ``struct v4l2_ctrl_av1_sequence``."""
    fl = seq.flags
    w = BitWriter()
    w.f(3, seq.seq_profile)
    w.flag(fl & C.V4L2_AV1_SEQUENCE_FLAG_STILL_PICTURE)
    w.f(1, 0)  # reduced_still_picture_header
    w.f(1, 0)  # timing_info_present_flag
    w.f(1, 0)  # initial_display_delay_present_flag
    w.f(5, 0)  # operating_points_cnt_minus_1
    w.f(12, 0)  # operating_point_idc[0]
    w.f(5, 31)  # seq_level_idx[0]: 31, no level constraint
    w.f(1, 0)  # seq_tier[0]
    wbits = max(seq.max_frame_width_minus_1.bit_length(), 1)
    hbits = max(seq.max_frame_height_minus_1.bit_length(), 1)
    w.f(4, wbits - 1)
    w.f(4, hbits - 1)
    w.f(wbits, seq.max_frame_width_minus_1)
    w.f(hbits, seq.max_frame_height_minus_1)
    w.f(1, 0)  # frame_id_numbers_present_flag
    for bit in (C.V4L2_AV1_SEQUENCE_FLAG_USE_128X128_SUPERBLOCK,
                C.V4L2_AV1_SEQUENCE_FLAG_ENABLE_FILTER_INTRA,
                C.V4L2_AV1_SEQUENCE_FLAG_ENABLE_INTRA_EDGE_FILTER,
                C.V4L2_AV1_SEQUENCE_FLAG_ENABLE_INTERINTRA_COMPOUND,
                C.V4L2_AV1_SEQUENCE_FLAG_ENABLE_MASKED_COMPOUND,
                C.V4L2_AV1_SEQUENCE_FLAG_ENABLE_WARPED_MOTION,
                C.V4L2_AV1_SEQUENCE_FLAG_ENABLE_DUAL_FILTER,
                C.V4L2_AV1_SEQUENCE_FLAG_ENABLE_ORDER_HINT):
        w.flag(fl & bit)
    order_hint = fl & C.V4L2_AV1_SEQUENCE_FLAG_ENABLE_ORDER_HINT
    if order_hint:
        w.flag(fl & C.V4L2_AV1_SEQUENCE_FLAG_ENABLE_JNT_COMP)
        w.flag(fl & C.V4L2_AV1_SEQUENCE_FLAG_ENABLE_REF_FRAME_MVS)
    w.f(1, 1)  # seq_choose_screen_content_tools -> SELECT
    w.f(1, 1)  # seq_choose_integer_mv -> SELECT
    if order_hint:
        if not 1 <= seq.order_hint_bits <= 8:
            raise ControlError(f"order_hint_bits {seq.order_hint_bits} outside 1..8")
        w.f(3, seq.order_hint_bits - 1)
    for bit in (C.V4L2_AV1_SEQUENCE_FLAG_ENABLE_SUPERRES, C.V4L2_AV1_SEQUENCE_FLAG_ENABLE_CDEF,
                C.V4L2_AV1_SEQUENCE_FLAG_ENABLE_RESTORATION):
        w.flag(fl & bit)
    # 5.5.2 color_config
    depth = seq.bit_depth
    if depth not in (8, 10, 12) or (depth == 12 and seq.seq_profile != 2):
        raise ControlError(f"bit_depth {depth} with seq_profile {seq.seq_profile}")
    w.flag(depth > 8)
    if seq.seq_profile == 2 and depth > 8:
        w.flag(depth == 12)
    mono = _has(fl, C.V4L2_AV1_SEQUENCE_FLAG_MONO_CHROME)
    if seq.seq_profile != 1:
        w.f(1, mono)
    elif mono:
        raise ControlError("seq_profile 1 cannot be monochrome")
    w.f(1, 0)  # color_description_present_flag
    w.flag(fl & C.V4L2_AV1_SEQUENCE_FLAG_COLOR_RANGE)
    ssx = _has(fl, C.V4L2_AV1_SEQUENCE_FLAG_SUBSAMPLING_X)
    ssy = _has(fl, C.V4L2_AV1_SEQUENCE_FLAG_SUBSAMPLING_Y)
    if not mono:
        expected = {0: (1, 1), 1: (0, 0)}.get(seq.seq_profile)
        if seq.seq_profile == 2 and depth == 12:
            w.f(1, ssx)
            if ssx:
                w.f(1, ssy)
        elif seq.seq_profile == 2:
            expected = (1, 0)
        if expected is not None and (ssx, ssy) != expected:
            raise ControlError(f"subsampling {ssx},{ssy} impossible in profile "
                               f"{seq.seq_profile}")
        if ssx and ssy:
            w.f(2, 0)  # chroma_sample_position: CSP_UNKNOWN
        w.flag(fl & C.V4L2_AV1_SEQUENCE_FLAG_SEPARATE_UV_DELTA_Q)
    w.flag(fl & C.V4L2_AV1_SEQUENCE_FLAG_FILM_GRAIN_PARAMS_PRESENT)
    w.trailing_bits()
    return obu(OBU_SEQUENCE_HEADER, w.tobytes())


@dataclass
class _SlotState:
    gm_params: list[list[int]] = field(default_factory=default_gm_params)
    order_hint: int = 0
    timestamp: int | None = None


class Av1Rebuilder:
    """Per-stream state of the daemon's AV1 rebuild (decode order)."""

    def __init__(self) -> None:
        self.slots = [_SlotState() for _ in range(NUM_REF_FRAMES)]

    # -- checks ------------------------------------------------------------
    def reference_problems(self, frame: C.Av1Frame) -> list[str]:
        """Slots the frame references whose ``reference_frame_ts`` is not what we decoded there."""
        if frame.frame_type in (KEY_FRAME, INTRA_ONLY_FRAME):
            return []
        problems = []
        for i in range(REFS_PER_FRAME):
            slot = frame.ref_frame_idx[i]
            if not 0 <= slot < NUM_REF_FRAMES:
                problems.append(f"ref_frame_idx[{i}] = {slot}")
                continue
            have = self.slots[slot].timestamp
            want = int(frame.reference_frame_ts[slot])
            if have is None or have != want:
                problems.append(f"slot {slot} (ref {i + 1}) holds timestamp {have}, "
                                f"reference_frame_ts says {want}")
        return sorted(set(problems))

    # -- the temporal unit ---------------------------------------------------
    def temporal_unit(self, seq: C.Av1Sequence, frame: C.Av1Frame,
                      film_grain: C.Av1FilmGrain | None,
                      entries: list[C.Av1TileGroupEntry], buffer: bytes,
                      timestamp: int) -> bytes:
        header = self.frame_header(seq, frame, film_grain)
        tiles = self.tile_group(frame, entries, buffer)
        tu = (obu(OBU_TEMPORAL_DELIMITER, b"") + sequence_header_obu(seq)
              + obu(OBU_FRAME_HEADER, header) + obu(OBU_TILE_GROUP, tiles))
        self._update(frame, timestamp)
        return tu

    def show_existing(self, slot: int) -> bytes:
        """A temporal unit showing slot *slot* (a non-key frame: no reference update)."""
        w = BitWriter()
        w.f(1, 1)
        w.f(3, slot)
        w.trailing_bits()
        return obu(OBU_TEMPORAL_DELIMITER, b"") + obu(OBU_FRAME_HEADER, w.tobytes())

    def show_existing_key(self, slot: int) -> None:
        """The client showed a key frame again: 7.21 refreshes every slot with it."""
        src = self.slots[slot]
        self.slots = [_SlotState([list(p) for p in src.gm_params], src.order_hint,
                                 src.timestamp) for _ in range(NUM_REF_FRAMES)]

    def _update(self, frame: C.Av1Frame, timestamp: int) -> None:
        intra = frame.frame_type in (KEY_FRAME, INTRA_ONLY_FRAME)
        params = default_gm_params() if intra else \
            [[int(v) for v in frame.global_motion.params[ref]] for ref in range(8)]
        for i in range(NUM_REF_FRAMES):
            if frame.refresh_frame_flags >> i & 1:
                self.slots[i] = _SlotState([list(p) for p in params], int(frame.order_hint),
                                           timestamp)

    def tile_group(self, frame: C.Av1Frame, entries: list[C.Av1TileGroupEntry],
                   buffer: bytes) -> bytes:
        """5.11.1 tile_group_obu with every tile, tile data from the buffer."""
        ti = frame.tile_info
        cols, rows = int(ti.tile_cols), int(ti.tile_rows)
        num_tiles = cols * rows
        if not 1 <= cols <= 64 or not 1 <= rows <= 64:
            raise ControlError(f"tile_info {cols}x{rows} tiles")
        by_num: dict[int, C.Av1TileGroupEntry] = {}
        for e in entries:
            if e.tile_col >= cols or e.tile_row >= rows:
                raise ControlError(f"tile entry row {e.tile_row} col {e.tile_col} outside "
                                   f"{cols}x{rows} tiles")
            num = e.tile_row * cols + e.tile_col
            if num in by_num:
                raise ControlError(f"tile {num} given twice")
            if e.tile_size == 0 or e.tile_offset + e.tile_size > len(buffer):
                raise ControlError(f"tile {num}: offset {e.tile_offset} size {e.tile_size} "
                                   f"outside the {len(buffer)}-byte buffer")
            by_num[num] = e
        if len(by_num) != num_tiles:
            raise ControlError(f"{len(by_num)} tile entries for {num_tiles} tiles")
        w = BitWriter()
        if num_tiles > 1:
            w.f(1, 0)  # tile_start_and_end_present_flag
        w.byte_alignment()
        out = bytearray(w.tobytes())
        for num in range(num_tiles):
            e = by_num[num]
            if num != num_tiles - 1:
                out += (e.tile_size - 1).to_bytes(TILE_SIZE_BYTES, "little")
            out += buffer[e.tile_offset:e.tile_offset + e.tile_size]
        return bytes(out)

    # -- the frame header ------------------------------------------------------
    def frame_header(self, seq: C.Av1Sequence, f: C.Av1Frame,
                     fg: C.Av1FilmGrain | None) -> bytes:
        """5.9.2 uncompressed_header (+ trailing bits) meaning what the controls say."""
        sf = seq.flags
        ff = f.flags
        w = BitWriter()
        ftype = int(f.frame_type)
        if ftype not in (KEY_FRAME, INTER_FRAME, INTRA_ONLY_FRAME, SWITCH_FRAME):
            raise ControlError(f"frame_type {ftype}")
        intra = ftype in (KEY_FRAME, INTRA_ONLY_FRAME)
        show = _has(ff, C.V4L2_AV1_FRAME_FLAG_SHOW_FRAME)
        error_res = _has(ff, C.V4L2_AV1_FRAME_FLAG_ERROR_RESILIENT_MODE)
        enable_order_hint = _has(sf, C.V4L2_AV1_SEQUENCE_FLAG_ENABLE_ORDER_HINT)
        hint_bits = int(seq.order_hint_bits) if enable_order_hint else 0
        w.f(1, 0)  # show_existing_frame
        w.f(2, ftype)
        w.f(1, show)
        if not show:
            w.flag(ff & C.V4L2_AV1_FRAME_FLAG_SHOWABLE_FRAME)
        if ftype == SWITCH_FRAME or (ftype == KEY_FRAME and show):
            error_res = 1
        else:
            w.f(1, error_res)
        if ftype == KEY_FRAME and show:
            for s in self.slots:
                s.order_hint = 0
        disable_cdf_update = _has(ff, C.V4L2_AV1_FRAME_FLAG_DISABLE_CDF_UPDATE)
        w.f(1, disable_cdf_update)
        allow_sct = _has(ff, C.V4L2_AV1_FRAME_FLAG_ALLOW_SCREEN_CONTENT_TOOLS)
        w.f(1, allow_sct)
        force_integer_mv = 1 if intra else 0
        if allow_sct:
            force_integer_mv = _has(ff, C.V4L2_AV1_FRAME_FLAG_FORCE_INTEGER_MV)
            w.f(1, force_integer_mv)
            if intra:
                force_integer_mv = 1
        upscaled = int(f.upscaled_width)
        frame_width = f.frame_width_minus_1 + 1
        frame_height = f.frame_height_minus_1 + 1
        max_w, max_h = seq.max_frame_width_minus_1 + 1, seq.max_frame_height_minus_1 + 1
        if upscaled > max_w or frame_height > max_h:
            raise ControlError(f"frame {upscaled}x{frame_height} larger than the sequence "
                               f"maximum {max_w}x{max_h}")
        override = 1 if ftype == SWITCH_FRAME else \
            _has(ff, C.V4L2_AV1_FRAME_FLAG_FRAME_SIZE_OVERRIDE)
        if (upscaled, frame_height) != (max_w, max_h):
            override = 1
        if ftype != SWITCH_FRAME:
            w.f(1, override)
        if enable_order_hint:
            w.f(hint_bits, int(f.order_hint))
        primary = PRIMARY_REF_NONE if intra or error_res else int(f.primary_ref_frame)
        if not (intra or error_res):
            if primary > PRIMARY_REF_NONE:
                raise ControlError(f"primary_ref_frame {primary}")
            w.f(3, primary)
        refresh = int(f.refresh_frame_flags)
        if ftype == SWITCH_FRAME or (ftype == KEY_FRAME and show):
            if refresh != 0xFF:
                raise ControlError(f"refresh_frame_flags {refresh:#x} on a frame that "
                                   "refreshes every slot")
        else:
            w.f(8, refresh)
        if (not intra or refresh != 0xFF) and error_res and enable_order_hint:
            hints = [s.order_hint for s in self.slots]
            if not intra:
                for i in range(REFS_PER_FRAME):
                    hints[f.ref_frame_idx[i]] = int(f.order_hints[i + 1])
            for i in range(NUM_REF_FRAMES):
                w.f(hint_bits, hints[i])
                self.slots[i].order_hint = hints[i]
        wbits = max(seq.max_frame_width_minus_1.bit_length(), 1)
        hbits = max(seq.max_frame_height_minus_1.bit_length(), 1)
        use_superres = _has(ff, C.V4L2_AV1_FRAME_FLAG_USE_SUPERRES)
        denom = int(f.superres_denom) if use_superres else 8
        if use_superres and not (sf & C.V4L2_AV1_SEQUENCE_FLAG_ENABLE_SUPERRES
                                 and 9 <= denom <= 16):
            raise ControlError(f"superres denominator {denom}")
        if (upscaled * 8 + denom // 2) // denom != frame_width:
            raise ControlError(f"frame width {frame_width} is not upscaled_width {upscaled} "
                               f"scaled by 8/{denom}")

        def frame_and_render_size() -> None:
            if override:
                w.f(wbits, upscaled - 1)
                w.f(hbits, frame_height - 1)
            if sf & C.V4L2_AV1_SEQUENCE_FLAG_ENABLE_SUPERRES:
                w.f(1, use_superres)
                if use_superres:
                    w.f(3, denom - 9)
            render = (f.render_width_minus_1 + 1, f.render_height_minus_1 + 1)
            if render != (upscaled, frame_height):
                w.f(1, 1)
                w.f(16, render[0] - 1)
                w.f(16, render[1] - 1)
            else:
                w.f(1, 0)

        allow_intrabc = _has(ff, C.V4L2_AV1_FRAME_FLAG_ALLOW_INTRABC)
        allow_hp_mv = 0
        if intra:
            frame_and_render_size()
            if allow_sct and upscaled == frame_width:
                w.f(1, allow_intrabc)
            else:
                allow_intrabc = 0
        else:
            allow_intrabc = 0
            if enable_order_hint:
                w.f(1, 0)  # frame_refs_short_signaling
            for i in range(REFS_PER_FRAME):
                idx = int(f.ref_frame_idx[i])
                if not 0 <= idx < NUM_REF_FRAMES:
                    raise ControlError(f"ref_frame_idx[{i}] = {idx}")
                w.f(3, idx)
            if override and not error_res:
                for _ in range(REFS_PER_FRAME):
                    w.f(1, 0)  # found_ref
            frame_and_render_size()
            if not force_integer_mv:
                allow_hp_mv = _has(ff, C.V4L2_AV1_FRAME_FLAG_ALLOW_HIGH_PRECISION_MV)
                w.f(1, allow_hp_mv)
            interp = int(f.interpolation_filter)
            if interp == C.V4L2_AV1_INTERPOLATION_FILTER_SWITCHABLE:
                w.f(1, 1)
            elif 0 <= interp <= 3:
                w.f(1, 0)
                w.f(2, interp)
            else:
                raise ControlError(f"interpolation_filter {interp}")
            w.flag(ff & C.V4L2_AV1_FRAME_FLAG_IS_MOTION_MODE_SWITCHABLE)
            if not error_res and sf & C.V4L2_AV1_SEQUENCE_FLAG_ENABLE_REF_FRAME_MVS:
                w.flag(ff & C.V4L2_AV1_FRAME_FLAG_USE_REF_FRAME_MVS)
        if not disable_cdf_update:
            w.flag(ff & C.V4L2_AV1_FRAME_FLAG_DISABLE_FRAME_END_UPDATE_CDF)
        mi_cols = 2 * ((frame_width + 7) >> 3)
        mi_rows = 2 * ((frame_height + 7) >> 3)
        cols_log2, rows_log2 = self._tile_info(w, seq, f, mi_cols, mi_rows)
        mono = sf & C.V4L2_AV1_SEQUENCE_FLAG_MONO_CHROME
        num_planes = 1 if mono else 3
        separate_uv = sf & C.V4L2_AV1_SEQUENCE_FLAG_SEPARATE_UV_DELTA_Q
        # quantization_params
        q = f.quantization
        w.f(8, q.base_q_idx)

        def delta_q(v: int) -> None:
            if v:
                w.f(1, 1)
                w.su(7, v)
            else:
                w.f(1, 0)

        delta_q(q.delta_q_y_dc)
        if num_planes > 1:
            diff_uv = (q.delta_q_u_dc, q.delta_q_u_ac) != (q.delta_q_v_dc, q.delta_q_v_ac)
            if diff_uv and not separate_uv:
                raise ControlError("U and V quantizer deltas differ without "
                                   "SEPARATE_UV_DELTA_Q")
            if separate_uv:
                w.f(1, 1 if diff_uv else 0)
            delta_q(q.delta_q_u_dc)
            delta_q(q.delta_q_u_ac)
            if diff_uv:
                delta_q(q.delta_q_v_dc)
                delta_q(q.delta_q_v_ac)
        qm = q.flags & C.V4L2_AV1_QUANTIZATION_FLAG_USING_QMATRIX
        w.flag(qm)
        if qm:
            w.f(4, q.qm_y)
            w.f(4, q.qm_u)
            if separate_uv:
                w.f(4, q.qm_v)
        # segmentation_params
        seg = f.segmentation
        seg_on = seg.flags & C.V4L2_AV1_SEGMENTATION_FLAG_ENABLED
        w.flag(seg_on)
        if seg_on:
            if primary != PRIMARY_REF_NONE:
                update_map = seg.flags & C.V4L2_AV1_SEGMENTATION_FLAG_UPDATE_MAP
                w.flag(update_map)
                if update_map:
                    w.flag(seg.flags & C.V4L2_AV1_SEGMENTATION_FLAG_TEMPORAL_UPDATE)
                w.f(1, 1)  # segmentation_update_data: always, with the full values
            for i in range(8):
                for j in range(8):
                    on = seg.feature_enabled[i] >> j & 1
                    w.f(1, on)
                    if on:
                        if SEG_FEATURE_SIGNED[j]:
                            w.su(1 + SEG_FEATURE_BITS[j], seg.feature_data[i][j])
                        else:
                            w.f(SEG_FEATURE_BITS[j], seg.feature_data[i][j])
        # delta_q_params / delta_lf_params
        lf = f.loop_filter
        delta_q_present = 0
        if q.base_q_idx > 0:
            delta_q_present = _has(q.flags, C.V4L2_AV1_QUANTIZATION_FLAG_DELTA_Q_PRESENT)
            w.f(1, delta_q_present)
        if delta_q_present:
            w.f(2, q.delta_q_res)
            if not allow_intrabc:
                lf_present = _has(lf.flags, C.V4L2_AV1_LOOP_FILTER_FLAG_DELTA_LF_PRESENT)
                w.f(1, lf_present)
                if lf_present:
                    w.f(2, lf.delta_lf_res)
                    w.flag(lf.flags & C.V4L2_AV1_LOOP_FILTER_FLAG_DELTA_LF_MULTI)
        coded_lossless = all(qindex_of(f, i) == 0 for i in range(8)) and not any(
            (q.delta_q_y_dc, q.delta_q_u_dc, q.delta_q_u_ac, q.delta_q_v_dc, q.delta_q_v_ac))
        all_lossless = coded_lossless and frame_width == upscaled
        # loop_filter_params
        if not (coded_lossless or allow_intrabc):
            w.f(6, lf.level[0])
            w.f(6, lf.level[1])
            if num_planes > 1 and (lf.level[0] or lf.level[1]):
                w.f(6, lf.level[2])
                w.f(6, lf.level[3])
            w.f(3, lf.sharpness)
            delta_enabled = lf.flags & C.V4L2_AV1_LOOP_FILTER_FLAG_DELTA_ENABLED
            w.flag(delta_enabled)
            if delta_enabled:
                w.f(1, 1)  # loop_filter_delta_update: always, every delta
                for i in range(8):
                    w.f(1, 1)
                    w.su(7, lf.ref_deltas[i])
                for i in range(2):
                    w.f(1, 1)
                    w.su(7, lf.mode_deltas[i])
        # cdef_params
        cd = f.cdef
        if not (coded_lossless or allow_intrabc
                or not sf & C.V4L2_AV1_SEQUENCE_FLAG_ENABLE_CDEF):
            w.f(2, cd.damping_minus_3)
            w.f(2, cd.bits)
            for i in range(1 << cd.bits):
                w.f(4, cd.y_pri_strength[i])
                w.f(2, _sec_code(cd.y_sec_strength[i]))
                if num_planes > 1:
                    w.f(4, cd.uv_pri_strength[i])
                    w.f(2, _sec_code(cd.uv_sec_strength[i]))
        # lr_params
        lr = f.loop_restoration
        if not (all_lossless or allow_intrabc
                or not sf & C.V4L2_AV1_SEQUENCE_FLAG_ENABLE_RESTORATION):
            types = [int(lr.frame_restoration_type[i]) for i in range(num_planes)]
            for t in types:
                if t not in LR_TYPE_CODE:
                    raise ControlError(f"frame_restoration_type {t}")
                w.f(2, LR_TYPE_CODE[t])
            uses_lr = any(types)
            uses_chroma = any(types[1:])
            if uses_lr:
                shift = int(lr.lr_unit_shift)
                if sf & C.V4L2_AV1_SEQUENCE_FLAG_USE_128X128_SUPERBLOCK:
                    if shift not in (1, 2):
                        raise ControlError(f"lr_unit_shift {shift} with 128x128 superblocks")
                    w.f(1, shift - 1)
                else:
                    if shift not in (0, 1, 2):
                        raise ControlError(f"lr_unit_shift {shift}")
                    w.f(1, 1 if shift else 0)
                    if shift:
                        w.f(1, shift - 1)
                if sf & C.V4L2_AV1_SEQUENCE_FLAG_SUBSAMPLING_X and \
                        sf & C.V4L2_AV1_SEQUENCE_FLAG_SUBSAMPLING_Y and uses_chroma:
                    w.f(1, lr.lr_uv_shift)
        # read_tx_mode, frame_reference_mode, skip_mode_params
        if not coded_lossless:
            w.f(1, 1 if f.tx_mode == C.V4L2_AV1_TX_MODE_SELECT else 0)
        reference_select = 0
        if not intra:
            reference_select = _has(ff, C.V4L2_AV1_FRAME_FLAG_REFERENCE_SELECT)
            w.f(1, reference_select)
        hints = [int(f.order_hints[i + 1]) for i in range(REFS_PER_FRAME)]
        skip = skip_mode_frames(seq, intra, reference_select, int(f.order_hint), hints)
        if skip is not None:
            w.flag(ff & C.V4L2_AV1_FRAME_FLAG_SKIP_MODE_PRESENT)
        if not (intra or error_res or not sf & C.V4L2_AV1_SEQUENCE_FLAG_ENABLE_WARPED_MOTION):
            w.flag(ff & C.V4L2_AV1_FRAME_FLAG_ALLOW_WARPED_MOTION)
        w.flag(ff & C.V4L2_AV1_FRAME_FLAG_REDUCED_TX_SET)
        # global_motion_params
        if not intra:
            prev = default_gm_params() if primary == PRIMARY_REF_NONE else \
                self.slots[f.ref_frame_idx[primary]].gm_params
            gm = f.global_motion
            for ref in range(1, 8):
                typ = int(gm.type[ref])
                w.f(1, 1 if typ else 0)
                if typ:
                    w.f(1, 1 if typ == C.V4L2_AV1_WARP_MODEL_ROTZOOM else 0)
                    if typ != C.V4L2_AV1_WARP_MODEL_ROTZOOM:
                        w.f(1, 1 if typ == C.V4L2_AV1_WARP_MODEL_TRANSLATION else 0)
                idxs: list[int] = []
                if typ >= C.V4L2_AV1_WARP_MODEL_ROTZOOM:
                    idxs += [2, 3] + ([4, 5] if typ == C.V4L2_AV1_WARP_MODEL_AFFINE else [])
                if typ >= C.V4L2_AV1_WARP_MODEL_TRANSLATION:
                    idxs += [0, 1]
                for idx in idxs:
                    _write_global_param(w, typ, idx, allow_hp_mv, prev[ref][idx],
                                        int(gm.params[ref][idx]))
        # film_grain_params
        if sf & C.V4L2_AV1_SEQUENCE_FLAG_FILM_GRAIN_PARAMS_PRESENT and (
                show or ff & C.V4L2_AV1_FRAME_FLAG_SHOWABLE_FRAME):
            _write_film_grain(w, fg, ftype, mono, sf)
        del cols_log2, rows_log2
        w.trailing_bits()
        return w.tobytes()

    def _tile_info(self, w: BitWriter, seq: C.Av1Sequence, f: C.Av1Frame, mi_cols: int,
                   mi_rows: int) -> tuple[int, int]:
        ti = f.tile_info
        sb128 = seq.flags & C.V4L2_AV1_SEQUENCE_FLAG_USE_128X128_SUPERBLOCK
        sb_shift = 5 if sb128 else 4
        sb_cols = (mi_cols + (1 << sb_shift) - 1) >> sb_shift
        sb_rows = (mi_rows + (1 << sb_shift) - 1) >> sb_shift
        sb_size = sb_shift + 2
        max_tile_width_sb = 4096 >> sb_size
        max_tile_area_sb = (4096 * 2304) >> (2 * sb_size)
        min_log2_tile_cols = tile_log2(max_tile_width_sb, sb_cols)
        max_log2_tile_cols = tile_log2(1, min(sb_cols, 64))
        max_log2_tile_rows = tile_log2(1, min(sb_rows, 64))
        min_log2_tiles = max(min_log2_tile_cols, tile_log2(max_tile_area_sb, sb_rows * sb_cols))
        cols, rows = int(ti.tile_cols), int(ti.tile_rows)
        uniform = ti.flags & C.V4L2_AV1_TILE_INFO_FLAG_UNIFORM_TILE_SPACING
        w.flag(uniform)
        if uniform:
            cols_log2 = tile_log2(1, cols)
            if not min_log2_tile_cols <= cols_log2 <= max_log2_tile_cols:
                raise ControlError(f"{cols} uniform tile columns for {sb_cols} superblocks")
            w.bits.extend([1] * (cols_log2 - min_log2_tile_cols))
            if cols_log2 < max_log2_tile_cols:
                w.f(1, 0)
            tw = (sb_cols + (1 << cols_log2) - 1) >> cols_log2
            starts = [sb << sb_shift for sb in range(0, sb_cols, tw)]
            rows_log2 = tile_log2(1, rows)
            min_log2_tile_rows = max(min_log2_tiles - cols_log2, 0)
            if not min_log2_tile_rows <= rows_log2 <= max_log2_tile_rows:
                raise ControlError(f"{rows} uniform tile rows for {sb_rows} superblocks")
            w.bits.extend([1] * (rows_log2 - min_log2_tile_rows))
            if rows_log2 < max_log2_tile_rows:
                w.f(1, 0)
            th = (sb_rows + (1 << rows_log2) - 1) >> rows_log2
            rstarts = [sb << sb_shift for sb in range(0, sb_rows, th)]
            if len(starts) != cols or len(rstarts) != rows:
                raise ControlError(f"{cols}x{rows} tiles are not a uniform layout of "
                                   f"{sb_cols}x{sb_rows} superblocks")
        else:
            widest, start = 0, 0
            for i in range(cols):
                size = int(ti.width_in_sbs_minus_1[i]) + 1
                if start >= sb_cols:
                    raise ControlError("tile widths exceed the frame")
                w.ns(min(sb_cols - start, max_tile_width_sb), size - 1)
                widest = max(widest, size)
                start += size
            if start != sb_cols:
                raise ControlError(f"tile widths sum to {start} superblocks, frame has "
                                   f"{sb_cols}")
            cols_log2 = tile_log2(1, cols)
            area = (sb_rows * sb_cols) >> (min_log2_tiles + 1) if min_log2_tiles > 0 \
                else sb_rows * sb_cols
            max_h = max(area // widest, 1)
            start = 0
            for i in range(rows):
                size = int(ti.height_in_sbs_minus_1[i]) + 1
                if start >= sb_rows:
                    raise ControlError("tile heights exceed the frame")
                w.ns(min(sb_rows - start, max_h), size - 1)
                start += size
            if start != sb_rows:
                raise ControlError(f"tile heights sum to {start} superblocks, frame has "
                                   f"{sb_rows}")
            rows_log2 = tile_log2(1, rows)
        if cols_log2 or rows_log2:
            w.f(cols_log2 + rows_log2, ti.context_update_tile_id)
            w.f(2, TILE_SIZE_BYTES - 1)
        return cols_log2, rows_log2


def _sec_code(strength: int) -> int:
    if strength not in (0, 1, 2, 4):
        raise ControlError(f"cdef secondary strength {strength}")
    return 3 if strength == 4 else strength


def _write_global_param(w: BitWriter, typ: int, idx: int, allow_hp_mv: int, prev: int,
                        value: int) -> None:
    abs_bits, prec_bits = global_param_bits(typ, idx, allow_hp_mv)
    prec_diff = WARPEDMODEL_PREC_BITS - prec_bits
    rnd = (1 << WARPEDMODEL_PREC_BITS) if idx % 3 == 2 else 0
    sub = (1 << prec_bits) if idx % 3 == 2 else 0
    mx = 1 << abs_bits
    ref = (prev >> prec_diff) - sub
    coded = value - rnd
    if coded & ((1 << prec_diff) - 1):
        raise ControlError(f"global motion parameter {idx} = {value} is not a multiple of "
                           f"the coded precision")
    w.signed_subexp_with_ref(-mx, mx + 1, ref, coded >> prec_diff)


def _write_film_grain(w: BitWriter, g: C.Av1FilmGrain | None, ftype: int, mono: int,
                      sf: int) -> None:
    if g is None or not g.flags & C.V4L2_AV1_FILM_GRAIN_FLAG_APPLY_GRAIN:
        w.f(1, 0)
        return
    w.f(1, 1)
    w.f(16, g.grain_seed)
    if ftype == INTER_FRAME:
        w.f(1, 1)  # update_grain: always, with the full (possibly loaded) parameters
    w.f(4, g.num_y_points)
    for i in range(g.num_y_points):
        w.f(8, g.point_y_value[i])
        w.f(8, g.point_y_scaling[i])
    csfl = 0 if mono else _has(g.flags, C.V4L2_AV1_FILM_GRAIN_FLAG_CHROMA_SCALING_FROM_LUMA)
    if not mono:
        w.f(1, csfl)
    ss420 = sf & C.V4L2_AV1_SEQUENCE_FLAG_SUBSAMPLING_X and \
        sf & C.V4L2_AV1_SEQUENCE_FLAG_SUBSAMPLING_Y
    if not (mono or csfl or (ss420 and g.num_y_points == 0)):
        w.f(4, g.num_cb_points)
        for i in range(g.num_cb_points):
            w.f(8, g.point_cb_value[i])
            w.f(8, g.point_cb_scaling[i])
        w.f(4, g.num_cr_points)
        for i in range(g.num_cr_points):
            w.f(8, g.point_cr_value[i])
            w.f(8, g.point_cr_scaling[i])
    w.f(2, g.grain_scaling_minus_8)
    w.f(2, g.ar_coeff_lag)
    num_pos_luma = 2 * g.ar_coeff_lag * (g.ar_coeff_lag + 1)
    num_pos_chroma = num_pos_luma
    if g.num_y_points:
        num_pos_chroma += 1
        for i in range(num_pos_luma):
            w.f(8, g.ar_coeffs_y_plus_128[i])
    if csfl or g.num_cb_points:
        for i in range(num_pos_chroma):
            w.f(8, g.ar_coeffs_cb_plus_128[i])
    if csfl or g.num_cr_points:
        for i in range(num_pos_chroma):
            w.f(8, g.ar_coeffs_cr_plus_128[i])
    w.f(2, g.ar_coeff_shift_minus_6)
    w.f(2, g.grain_scale_shift)
    if g.num_cb_points:
        w.f(8, g.cb_mult)
        w.f(8, g.cb_luma_mult)
        w.f(9, g.cb_offset)
    if g.num_cr_points:
        w.f(8, g.cr_mult)
        w.f(8, g.cr_luma_mult)
        w.f(9, g.cr_offset)
    w.flag(g.flags & C.V4L2_AV1_FILM_GRAIN_FLAG_OVERLAP)
    w.flag(g.flags & C.V4L2_AV1_FILM_GRAIN_FLAG_CLIP_TO_RESTRICTED_RANGE)
