"""Does a VP9 request's control agree with the frame it carries, and with the references held?

The OUTPUT buffer of a ``V4L2_PIX_FMT_VP9_FRAME`` request holds the whole
frame, so the daemon decodes from the bitstream and the control is redundant:
:func:`check` lists where the two disagree (a request to complete with
``V4L2_BUF_FLAG_ERROR`` and one daemon log line naming them), each
contradiction named with both values. Fields are compared where they are
meaningful: loop-filter deltas when deltas are enabled, segmentation tree
probabilities when the map is updated, feature data of enabled features...
so a client that sends the stale values of an unused field (GStreamer sends
the last parsed ones) is not refused for it.

References: a client names the LAST / GOLDEN / ALTREF frames by the timestamps
of the requests that decoded them; the frame names them by the reference
slots ``ref_frame_idx[]``. :class:`Vp9RefSlots` models the 8 slots, each
holding the timestamp of the request whose frame ``refresh_frame_flags`` put
there; a named timestamp that is not the one in the slot is a contradiction
(the client and the decoder disagree on what is referenced).

What the control cannot confirm, because ``struct v4l2_ctrl_vp9_frame`` has no
field for it: ``refresh_frame_flags`` (the slots are updated from the
bitstream alone), ``ref_frame_idx[]`` themselves (only the timestamps behind
them), ``color_space``, ``tx_mode`` and the compressed header's probability
updates (those are in ``V4L2_CID_STATELESS_VP9_COMPRESSED_HDR``, not checked).
"""

from __future__ import annotations

from collections.abc import Iterator

from daedalus.stateless import vp9_ctrls as c
from daedalus.stateless.vp9_header import (
    NUM_REF_FRAMES,
    RESET_FRAME_CONTEXT_UAPI,
    Vp9FrameHeader,
    Vp9HeaderError,
    Vp9Parser,
    fill,
    frame_flags,
)

REF_NAMES = ("LAST", "GOLDEN", "ALTREF")


class Vp9RefSlots:
    """The 8 VP9 reference slots, by the timestamp of the request whose frame each holds."""

    def __init__(self) -> None:
        self.ts: list[int | None] = [None] * NUM_REF_FRAMES

    def update(self, refresh_frame_flags: int, timestamp: int) -> None:
        """The frame of the request with *timestamp* was decoded: it is now in
        every slot *refresh_frame_flags* names."""
        for i in range(NUM_REF_FRAMES):
            if refresh_frame_flags & (1 << i):
                self.ts[i] = timestamp

    def reset(self) -> None:
        self.ts = [None] * NUM_REF_FRAMES

    def __contains__(self, timestamp: object) -> bool:
        return timestamp in self.ts

    def __repr__(self) -> str:
        return f"Vp9RefSlots({self.ts})"


def _differ(name: str, control: object, frame: object) -> Iterator[str]:
    if control != frame:
        yield f"{name}: control {control}, frame {frame}"


def _flag_names(flags: int) -> str:
    return "|".join(n for bit, n in c.FRAME_FLAG_NAMES.items() if flags & bit) or "0"


def _control_fields(ctrl: c.Vp9Frame, h: Vp9FrameHeader) -> Iterator[str]:
    want = fill(h)
    yield from _differ("width", ctrl.frame_width_minus_1 + 1, h.width)
    yield from _differ("height", ctrl.frame_height_minus_1 + 1, h.height)
    yield from _differ("render width", ctrl.render_width_minus_1 + 1, h.render_width)
    yield from _differ("render height", ctrl.render_height_minus_1 + 1, h.render_height)
    flags = frame_flags(h)
    for bit, name in c.FRAME_FLAG_NAMES.items():
        if (ctrl.flags ^ flags) & bit:
            yield (f"flag {name}: control {'set' if ctrl.flags & bit else 'clear'}, frame "
                   f"{'set' if flags & bit else 'clear'} (control flags {_flag_names(ctrl.flags)},"
                   f" frame {_flag_names(flags)})")
    yield from _differ("uncompressed_header_size", ctrl.uncompressed_header_size,
                       h.uncompressed_header_size)
    yield from _differ("compressed_header_size", ctrl.compressed_header_size,
                       h.compressed_header_size)
    yield from _differ("profile", ctrl.profile, h.profile)
    yield from _differ("bit_depth", ctrl.bit_depth, h.color.bit_depth)
    # the uAPI's NONE/SPEC/ALL, or the bitstream's 2-bit value as GStreamer 1.22 sends it
    if ctrl.reset_frame_context not in (RESET_FRAME_CONTEXT_UAPI[h.reset_frame_context],
                                        h.reset_frame_context):
        yield (f"reset_frame_context: control {ctrl.reset_frame_context}, frame "
               f"{h.reset_frame_context} (uAPI {RESET_FRAME_CONTEXT_UAPI[h.reset_frame_context]})")
    yield from _differ("frame_context_idx", ctrl.frame_context_idx, h.frame_context_idx)
    yield from _differ("interpolation_filter", ctrl.interpolation_filter, h.interpolation_filter)
    yield from _differ("tile_cols_log2", ctrl.tile_cols_log2, h.tile_cols_log2)
    yield from _differ("tile_rows_log2", ctrl.tile_rows_log2, h.tile_rows_log2)
    yield from _differ("reference_mode", ctrl.reference_mode, h.reference_mode)
    yield from _differ("ref_frame_sign_bias", ctrl.ref_frame_sign_bias, want.ref_frame_sign_bias)
    # loop filter
    yield from _differ("lf.level", ctrl.lf.level, h.lf_level)
    yield from _differ("lf.sharpness", ctrl.lf.sharpness, h.lf_sharpness)
    enabled = c.V4L2_VP9_LOOP_FILTER_FLAG_DELTA_ENABLED
    yield from _differ("lf DELTA_ENABLED", bool(ctrl.lf.flags & enabled), bool(h.lf_delta_enabled))
    if h.lf_delta_enabled:
        update = c.V4L2_VP9_LOOP_FILTER_FLAG_DELTA_UPDATE
        yield from _differ("lf DELTA_UPDATE", bool(ctrl.lf.flags & update),
                           bool(h.lf_delta_update))
        yield from _differ("lf.ref_deltas", list(ctrl.lf.ref_deltas), list(h.lf_ref_deltas))
        yield from _differ("lf.mode_deltas", list(ctrl.lf.mode_deltas), list(h.lf_mode_deltas))
    # quantization
    yield from _differ("quant.base_q_idx", ctrl.quant.base_q_idx, h.base_q_idx)
    yield from _differ("quant.delta_q_y_dc", ctrl.quant.delta_q_y_dc, h.delta_q_y_dc)
    yield from _differ("quant.delta_q_uv_dc", ctrl.quant.delta_q_uv_dc, h.delta_q_uv_dc)
    yield from _differ("quant.delta_q_uv_ac", ctrl.quant.delta_q_uv_ac, h.delta_q_uv_ac)
    # segmentation
    seg_flags = (("ENABLED", c.V4L2_VP9_SEGMENTATION_FLAG_ENABLED, True),
                 ("UPDATE_MAP", c.V4L2_VP9_SEGMENTATION_FLAG_UPDATE_MAP, h.seg_enabled),
                 ("TEMPORAL_UPDATE", c.V4L2_VP9_SEGMENTATION_FLAG_TEMPORAL_UPDATE, h.seg_enabled),
                 ("UPDATE_DATA", c.V4L2_VP9_SEGMENTATION_FLAG_UPDATE_DATA, h.seg_enabled),
                 ("ABS_OR_DELTA_UPDATE", c.V4L2_VP9_SEGMENTATION_FLAG_ABS_OR_DELTA_UPDATE,
                  h.seg_enabled))
    for name, bit, meaningful in seg_flags:
        if meaningful:
            yield from _differ(f"seg {name}", bool(ctrl.seg.flags & bit),
                               bool(want.seg.flags & bit))
    if h.seg_enabled:
        if h.seg_update_map:
            yield from _differ("seg.tree_probs", list(ctrl.seg.tree_probs),
                               list(h.seg_tree_probs))
        if h.seg_temporal_update:
            yield from _differ("seg.pred_probs", list(ctrl.seg.pred_probs),
                               list(h.seg_pred_probs))
        for i in range(8):
            got = ctrl.seg.feature_enabled[i] & c.V4L2_VP9_SEGMENT_FEATURE_ENABLED_MASK
            yield from _differ(f"seg.feature_enabled[{i}]", got, want.seg.feature_enabled[i])
            for j in range(4):
                if want.seg.feature_enabled[i] & (1 << j):
                    yield from _differ(f"seg.feature_data[{i}][{j}]",
                                       ctrl.seg.feature_data[i][j], h.seg_feature_data[i][j])


def _references(ctrl: c.Vp9Frame, h: Vp9FrameHeader, refs: Vp9RefSlots) -> Iterator[str]:
    for name, slot, ts in zip(REF_NAMES, h.ref_frame_idx, ctrl.ref_ts, strict=True):
        held = refs.ts[slot]
        if held is None:
            yield (f"{name} reference: control names timestamp {ts}, slot {slot} holds no "
                   "frame")
        elif held != ts:
            yield (f"{name} reference: control names timestamp {ts}, slot {slot} holds the "
                   f"frame of timestamp {held}")


def check(ctrl: c.Vp9Frame, frame: bytes | Vp9FrameHeader, refs: Vp9RefSlots,
          parser: Vp9Parser | None = None) -> list[str]:
    """The contradictions between *ctrl* and *frame* (one frame, superframes
    split; bytes are parsed with *parser*, the stream's state, without
    advancing it: a fresh parser when None, enough for a key frame), and
    between the references *ctrl* names and those *refs* holds. Empty when
    they agree.

    A show_existing_frame frame is not decoded (it shows a slot again) and its
    control says nothing about it: only its slot is checked."""
    if isinstance(frame, Vp9FrameHeader):
        h = frame
    else:
        try:
            h = (parser or Vp9Parser()).parse(frame)
        except Vp9HeaderError as exc:
            return [f"frame header: {exc}"]
    if h.show_existing_frame:
        if refs.ts[h.frame_to_show_map_idx] is None:
            return [f"show_existing_frame of slot {h.frame_to_show_map_idx}, which holds no "
                    "frame"]
        return []
    problems = list(_control_fields(ctrl, h))
    if not h.frame_is_intra:
        problems += _references(ctrl, h, refs)
    return problems
