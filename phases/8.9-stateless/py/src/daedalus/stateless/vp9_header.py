"""The VP9 frame headers a stateless request carries, parsed from the frame itself.

- :func:`split_superframe`: VP9 spec Annex B. A container packet may be a
  superframe (typically a hidden alt-ref frame and the shown frame behind it)
  with an index in its last bytes; a stateless client (GStreamer's vp9parse
  in front of v4l2slvp9dec, ``alignment=frame``) queues each frame of it in
  its own request.
- :class:`Vp9Parser`: the uncompressed header (spec 6.2: frame marker,
  profile, show_existing_frame, frame type, sync code, color config, frame
  and render size, refs and sign bias, refresh_frame_flags, interpolation
  filter, loop filter with deltas, quantization, segmentation, tile info,
  header_size_in_bytes) and the first symbols of the compressed header
  (spec 6.3, through the boolean decoder of 9.2: tx_mode, the probability
  updates up to frame_reference_mode) for ``reference_mode``. VP9 headers
  are not self-contained: a frame may take its size from a reference slot,
  and loop-filter deltas and segmentation features persist from frame to
  frame. The parser keeps that state (:class:`Vp9State`); :meth:`Vp9Parser.parse`
  does not change it, :meth:`Vp9Parser.advance` commits a parsed frame (so a
  request refused before decoding leaves the state as the decoder has it).
- :func:`fill`: ``struct v4l2_ctrl_vp9_frame`` from a parsed header, as
  GStreamer 1.22's v4l2slvp9dec fills it (gstv4l2codecvp9dec.c
  ``gst_v4l2_codec_vp9_dec_fill_dec_params`` / ``_fill_refs`` /
  ``_fill_lf_params`` / ``_fill_seg_params``), reference timestamps from the
  slots' timestamps. One deliberate difference: ``reset_frame_context`` is
  mapped to the uAPI's NONE / SPEC / ALL (bitstream 0 and 1, 2, 3), where
  GStreamer copies the bitstream's 2-bit value (3 would fail the kernel's
  control validation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from daedalus.stateless import vp9_ctrls as c

FRAME_MARKER = 2
SYNC_CODE = 0x498342
KEY_FRAME = 0
NON_KEY_FRAME = 1
REFS_PER_FRAME = 3
NUM_REF_FRAMES = 8
MAX_PROB = 255
CS_BT_601 = 1
CS_RGB = 7

# 6.2.7: the 2-bit literal -> interpolation filter (V4L2 numbering equals the spec's)
LITERAL_TO_INTERP = (c.V4L2_VP9_INTERP_FILTER_EIGHTTAP_SMOOTH, c.V4L2_VP9_INTERP_FILTER_EIGHTTAP,
                     c.V4L2_VP9_INTERP_FILTER_EIGHTTAP_SHARP, c.V4L2_VP9_INTERP_FILTER_BILINEAR)
SEG_FEATURE_BITS = (8, 6, 2, 0)
SEG_FEATURE_SIGNED = (True, True, False, False)

# compressed header (6.3)
ONLY_4X4, ALLOW_32X32, TX_MODE_SELECT = 0, 3, 4
TX_MODE_TO_BIGGEST_TX_SIZE = (0, 1, 2, 3, 3)


class Vp9HeaderError(ValueError):
    """The frame is not a VP9 frame this parser can read (with why)."""


# --- Annex B: superframes ---------------------------------------------------


def superframe_index(data: bytes) -> list[int] | None:
    """The frame sizes of the superframe index at the end of *data*, or None
    when *data* has no (valid) index (then it is one frame)."""
    if not data:
        return None
    marker = data[-1]
    if marker & 0xE0 != 0xC0:
        return None
    frames = (marker & 0x7) + 1
    size_bytes = ((marker >> 3) & 0x3) + 1
    index_size = 2 + size_bytes * frames
    if len(data) < index_size or data[-index_size] != marker:
        return None
    pos = len(data) - index_size + 1
    return [int.from_bytes(data[pos + i * size_bytes:pos + (i + 1) * size_bytes], "little")
            for i in range(frames)]


def split_superframe(data: bytes) -> list[bytes]:
    """The frames of *data*: those its superframe index lists, else *data*
    itself. Vp9HeaderError when the index claims more bytes than precede it."""
    sizes = superframe_index(data)
    if sizes is None:
        return [data]
    available = len(data) - (2 + (((data[-1] >> 3) & 0x3) + 1) * len(sizes))
    if sum(sizes) > available:
        raise Vp9HeaderError(f"superframe index lists {sum(sizes)} bytes of frames, only "
                             f"{available} precede it")
    out, pos = [], 0
    for size in sizes:
        if size == 0:
            raise Vp9HeaderError("superframe index lists a frame of 0 bytes")
        out.append(data[pos:pos + size])
        pos += size
    return out


def show_existing_frame(profile: int, slot: int) -> bytes:
    """A frame of one uncompressed-header byte (two in profile 3) that shows
    reference *slot* again: frame_marker, profile, [reserved_zero],
    show_existing_frame = 1, frame_to_show_map_idx, zero padding. Fed to
    FFmpeg after a hidden frame that refreshed *slot*, it makes the decoder
    output that frame's picture without changing its state."""
    if not 0 <= profile <= 3 or not 0 <= slot < NUM_REF_FRAMES:
        raise ValueError(f"profile {profile}, slot {slot}")
    bits = [1, 0, profile & 1, profile >> 1] + ([0] if profile == 3 else []) + [1]
    bits += [(slot >> 2) & 1, (slot >> 1) & 1, slot & 1]
    bits += [0] * (-len(bits) % 8)
    return bytes(int("".join(map(str, bits[i:i + 8])), 2) for i in range(0, len(bits), 8))


# --- bit readers --------------------------------------------------------------


class BitReader:
    """MSB-first reader of the spec's f(n)."""

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos * 8  # in bits

    def f(self, n: int) -> int:
        value = 0
        for _ in range(n):
            byte = self.pos >> 3
            if byte >= len(self.data):
                raise Vp9HeaderError(f"header runs past the end of the {len(self.data)}-byte "
                                     "frame")
            value = (value << 1) | ((self.data[byte] >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return value

    def su(self, n: int) -> int:
        value = self.f(n)
        return -value if self.f(1) else value

    def read_prob(self) -> int:
        return self.f(8) if self.f(1) else MAX_PROB


class BoolDecoder:
    """The boolean decoder of spec 9.2 over *size* bytes at *offset*."""

    def __init__(self, data: bytes, offset: int, size: int) -> None:
        if size < 1 or offset + size > len(data):
            raise Vp9HeaderError(f"compressed header of {size} bytes at byte {offset} does not "
                                 f"fit the {len(data)}-byte frame")
        self.br = BitReader(data, offset)
        self.value = self.br.f(8)
        self.range = 255
        self.max_bits = 8 * size - 8
        if self.read_bool(128):
            raise Vp9HeaderError("compressed header: marker bit is not 0")

    def read_bool(self, p: int) -> int:
        split = 1 + (((self.range - 1) * p) >> 8)
        if self.value < split:
            self.range = split
            bit = 0
        else:
            self.range -= split
            self.value -= split
            bit = 1
        while self.range < 128:
            if self.max_bits > 0:
                new = self.br.f(1)
                self.max_bits -= 1
            else:
                new = 0
            self.range *= 2
            self.value = (self.value << 1) + new
        return bit

    def literal(self, n: int) -> int:
        x = 0
        for _ in range(n):
            x = 2 * x + self.read_bool(128)
        return x

    def diff_update_prob(self) -> None:
        """6.3.5 diff_update_prob: only the bits are consumed, the delta is not kept."""
        if self.read_bool(252):
            self._decode_term_subexp()

    def _decode_term_subexp(self) -> int:
        if not self.literal(1):
            return self.literal(4)
        if not self.literal(1):
            return self.literal(4) + 16
        if not self.literal(1):
            return self.literal(5) + 32
        v = self.literal(7)
        if v < 65:
            return v + 64
        return (v << 1) - 1 + self.literal(1)


# --- state and header -----------------------------------------------------------


@dataclass(frozen=True)
class ColorConfig:
    bit_depth: int = 8
    color_space: int = 0
    color_range: int = 0
    subsampling_x: int = 1
    subsampling_y: int = 1


def _seg_grid(value: int) -> tuple[tuple[int, ...], ...]:
    return tuple((value,) * 4 for _ in range(8))


@dataclass(frozen=True)
class Vp9State:
    """What a VP9 header depends on besides its own bits."""

    ref_sizes: tuple[tuple[int, int], ...] = ((0, 0),) * NUM_REF_FRAMES
    color: ColorConfig | None = None      # None until the first key frame
    lf_ref_deltas: tuple[int, ...] = (1, 0, -1, -1)
    lf_mode_deltas: tuple[int, ...] = (0, 0)
    seg_tree_probs: tuple[int, ...] = (MAX_PROB,) * 7
    seg_pred_probs: tuple[int, ...] = (MAX_PROB,) * 3
    seg_abs_or_delta_update: int = 0
    seg_feature_enabled: tuple[tuple[int, ...], ...] = field(default_factory=lambda: _seg_grid(0))
    seg_feature_data: tuple[tuple[int, ...], ...] = field(default_factory=lambda: _seg_grid(0))


@dataclass
class Vp9FrameHeader:
    """One frame's uncompressed header (plus tx_mode / reference_mode of its
    compressed header), with the persistent values as they apply to it."""

    size: int = 0                       # bytes of the frame
    profile: int = 0
    show_existing_frame: int = 0
    frame_to_show_map_idx: int = 0
    frame_type: int = KEY_FRAME
    show_frame: int = 0
    error_resilient_mode: int = 0
    intra_only: int = 0
    reset_frame_context: int = 0        # the bitstream's 2-bit value
    color: ColorConfig = field(default_factory=ColorConfig)
    refresh_frame_flags: int = 0
    ref_frame_idx: tuple[int, int, int] = (0, 0, 0)
    ref_frame_sign_bias: tuple[int, int, int] = (0, 0, 0)  # LAST, GOLDEN, ALTREF
    size_from_ref: int = -1             # i of found_ref, -1 when the size is coded
    width: int = 0
    height: int = 0
    render_width: int = 0
    render_height: int = 0
    allow_high_precision_mv: int = 0
    interpolation_filter: int = 0       # V4L2_VP9_INTERP_FILTER_*
    refresh_frame_context: int = 0
    frame_parallel_decoding_mode: int = 0
    frame_context_idx: int = 0
    lf_level: int = 0
    lf_sharpness: int = 0
    lf_delta_enabled: int = 0
    lf_delta_update: int = 0
    lf_ref_deltas: tuple[int, ...] = (1, 0, -1, -1)
    lf_mode_deltas: tuple[int, ...] = (0, 0)
    base_q_idx: int = 0
    delta_q_y_dc: int = 0
    delta_q_uv_dc: int = 0
    delta_q_uv_ac: int = 0
    seg_enabled: int = 0
    seg_update_map: int = 0
    seg_temporal_update: int = 0
    seg_update_data: int = 0
    seg_abs_or_delta_update: int = 0
    seg_tree_probs: tuple[int, ...] = (MAX_PROB,) * 7
    seg_pred_probs: tuple[int, ...] = (MAX_PROB,) * 3
    seg_feature_enabled: tuple[tuple[int, ...], ...] = field(default_factory=lambda: _seg_grid(0))
    seg_feature_data: tuple[tuple[int, ...], ...] = field(default_factory=lambda: _seg_grid(0))
    tile_cols_log2: int = 0
    tile_rows_log2: int = 0
    uncompressed_header_size: int = 0   # bytes, trailing bits included
    compressed_header_size: int = 0     # header_size_in_bytes
    tx_mode: int = 0
    reference_mode: int = c.V4L2_VP9_REFERENCE_MODE_SINGLE_REFERENCE
    state_after: Vp9State = field(default_factory=Vp9State)

    @property
    def key_frame(self) -> bool:
        return self.frame_type == KEY_FRAME and not self.show_existing_frame

    @property
    def frame_is_intra(self) -> bool:
        return self.key_frame or bool(self.intra_only)

    @property
    def lossless(self) -> bool:
        return (self.base_q_idx == 0 and self.delta_q_y_dc == 0 and self.delta_q_uv_dc == 0
                and self.delta_q_uv_ac == 0)


def _min_log2_tile_cols(sb64_cols: int) -> int:
    n = 0
    while (64 << n) < sb64_cols:
        n += 1
    return n


def _max_log2_tile_cols(sb64_cols: int) -> int:
    n = 1
    while (sb64_cols >> n) >= 4:
        n += 1
    return n - 1


class Vp9Parser:
    """Parses the frames of one VP9 stream in decode order."""

    def __init__(self, state: Vp9State | None = None) -> None:
        self.state = state or Vp9State()

    def advance(self, header: Vp9FrameHeader) -> None:
        """Commit *header*'s frame: the decoder has decoded it."""
        self.state = header.state_after

    def parse_and_advance(self, data: bytes) -> Vp9FrameHeader:
        header = self.parse(data)
        self.advance(header)
        return header

    def parse(self, data: bytes) -> Vp9FrameHeader:
        """The headers of one frame (not a superframe: split it first)."""
        st = self.state
        h = Vp9FrameHeader(size=len(data), state_after=st)
        br = BitReader(data)
        if br.f(2) != FRAME_MARKER:
            raise Vp9HeaderError("frame_marker is not 2 (not a VP9 frame)")
        low = br.f(1)
        high = br.f(1)
        h.profile = (high << 1) | low
        if h.profile == 3 and br.f(1):
            raise Vp9HeaderError("reserved_zero bit after profile 3 is set")
        h.show_existing_frame = br.f(1)
        if h.show_existing_frame:
            h.frame_to_show_map_idx = br.f(3)
            h.show_frame = 1
            h.uncompressed_header_size = (br.pos + 7) // 8
            h.width, h.height = st.ref_sizes[h.frame_to_show_map_idx]
            h.render_width, h.render_height = h.width, h.height
            if st.color is not None:
                h.color = st.color
            return h
        h.frame_type = br.f(1)
        h.show_frame = br.f(1)
        h.error_resilient_mode = br.f(1)
        ref_sizes = list(st.ref_sizes)
        color = st.color
        if h.frame_type == KEY_FRAME:
            self._sync_code(br)
            color = self._color_config(br, h.profile)
            h.width, h.height = br.f(16) + 1, br.f(16) + 1
            self._render_size(br, h)
            h.refresh_frame_flags = 0xFF
        else:
            if color is None:
                raise Vp9HeaderError("inter frame before any key frame")
            h.intra_only = br.f(1) if h.show_frame == 0 else 0
            h.reset_frame_context = br.f(2) if h.error_resilient_mode == 0 else 0
            if h.intra_only:
                self._sync_code(br)
                color = (self._color_config(br, h.profile) if h.profile > 0
                         else ColorConfig(color_space=CS_BT_601))
                h.refresh_frame_flags = br.f(8)
                h.width, h.height = br.f(16) + 1, br.f(16) + 1
                self._render_size(br, h)
            else:
                h.refresh_frame_flags = br.f(8)
                idx, bias = [], []
                for _ in range(REFS_PER_FRAME):
                    idx.append(br.f(3))
                    bias.append(br.f(1))
                h.ref_frame_idx = (idx[0], idx[1], idx[2])
                h.ref_frame_sign_bias = (bias[0], bias[1], bias[2])
                for i in range(REFS_PER_FRAME):
                    if br.f(1):
                        h.size_from_ref = i
                        h.width, h.height = ref_sizes[idx[i]]
                        if h.width == 0:
                            raise Vp9HeaderError(f"frame size taken from reference slot "
                                                 f"{idx[i]}, which holds no frame")
                        break
                else:
                    h.width, h.height = br.f(16) + 1, br.f(16) + 1
                self._render_size(br, h)
                h.allow_high_precision_mv = br.f(1)
                h.interpolation_filter = (c.V4L2_VP9_INTERP_FILTER_SWITCHABLE if br.f(1)
                                          else LITERAL_TO_INTERP[br.f(2)])
        assert color is not None
        h.color = color
        if not h.error_resilient_mode:
            h.refresh_frame_context = br.f(1)
            h.frame_parallel_decoding_mode = br.f(1)
        else:
            h.frame_parallel_decoding_mode = 1
        h.frame_context_idx = br.f(2)

        # persistent values, reset by setup_past_independence (7.2)
        lf_ref = list(st.lf_ref_deltas)
        lf_mode = list(st.lf_mode_deltas)
        seg_enabled_f = [list(r) for r in st.seg_feature_enabled]
        seg_data = [list(r) for r in st.seg_feature_data]
        abs_delta = st.seg_abs_or_delta_update
        if h.frame_is_intra or h.error_resilient_mode:
            lf_ref, lf_mode = [1, 0, -1, -1], [0, 0]
            seg_enabled_f = [[0] * 4 for _ in range(8)]
            seg_data = [[0] * 4 for _ in range(8)]
            abs_delta = 0

        # 6.2.8 loop filter
        h.lf_level = br.f(6)
        h.lf_sharpness = br.f(3)
        h.lf_delta_enabled = br.f(1)
        if h.lf_delta_enabled:
            h.lf_delta_update = br.f(1)
            if h.lf_delta_update:
                for i in range(4):
                    if br.f(1):
                        lf_ref[i] = br.su(6)
                for i in range(2):
                    if br.f(1):
                        lf_mode[i] = br.su(6)
        h.lf_ref_deltas, h.lf_mode_deltas = tuple(lf_ref), tuple(lf_mode)

        # 6.2.9 quantization
        h.base_q_idx = br.f(8)
        h.delta_q_y_dc = br.su(4) if br.f(1) else 0
        h.delta_q_uv_dc = br.su(4) if br.f(1) else 0
        h.delta_q_uv_ac = br.su(4) if br.f(1) else 0

        # 6.2.11 segmentation
        tree, pred = list(st.seg_tree_probs), list(st.seg_pred_probs)
        h.seg_enabled = br.f(1)
        if h.seg_enabled:
            h.seg_update_map = br.f(1)
            if h.seg_update_map:
                tree = [br.read_prob() for _ in range(7)]
                h.seg_temporal_update = br.f(1)
                pred = ([br.read_prob() for _ in range(3)] if h.seg_temporal_update
                        else [MAX_PROB] * 3)
            h.seg_update_data = br.f(1)
            if h.seg_update_data:
                abs_delta = br.f(1)
                for i in range(8):
                    for j in range(4):
                        value = 0
                        seg_enabled_f[i][j] = br.f(1)
                        if seg_enabled_f[i][j]:
                            value = br.f(SEG_FEATURE_BITS[j])
                            if SEG_FEATURE_SIGNED[j] and br.f(1):
                                value = -value
                        seg_data[i][j] = value
        h.seg_tree_probs, h.seg_pred_probs = tuple(tree), tuple(pred)
        h.seg_abs_or_delta_update = abs_delta
        h.seg_feature_enabled = tuple(tuple(r) for r in seg_enabled_f)
        h.seg_feature_data = tuple(tuple(r) for r in seg_data)

        # 6.2.13 tile info
        sb64_cols = (((h.width + 7) >> 3) + 7) >> 3
        h.tile_cols_log2 = _min_log2_tile_cols(sb64_cols)
        max_log2 = _max_log2_tile_cols(sb64_cols)
        while h.tile_cols_log2 < max_log2 and br.f(1):
            h.tile_cols_log2 += 1
        h.tile_rows_log2 = br.f(1)
        if h.tile_rows_log2:
            h.tile_rows_log2 += br.f(1)

        h.compressed_header_size = br.f(16)
        if h.compressed_header_size == 0:
            raise Vp9HeaderError("header_size_in_bytes is 0")
        h.uncompressed_header_size = (br.pos + 7) // 8
        if h.uncompressed_header_size + h.compressed_header_size > len(data):
            raise Vp9HeaderError(f"headers of {h.uncompressed_header_size} + "
                                 f"{h.compressed_header_size} bytes exceed the "
                                 f"{len(data)}-byte frame")
        self._compressed_header(data, h)

        for i in range(NUM_REF_FRAMES):
            if h.refresh_frame_flags & (1 << i):
                ref_sizes[i] = (h.width, h.height)
        h.state_after = replace(
            st, ref_sizes=tuple(ref_sizes), color=color, lf_ref_deltas=h.lf_ref_deltas,
            lf_mode_deltas=h.lf_mode_deltas, seg_tree_probs=h.seg_tree_probs,
            seg_pred_probs=h.seg_pred_probs, seg_abs_or_delta_update=abs_delta,
            seg_feature_enabled=h.seg_feature_enabled, seg_feature_data=h.seg_feature_data)
        return h

    @staticmethod
    def _sync_code(br: BitReader) -> None:
        code = br.f(24)
        if code != SYNC_CODE:
            raise Vp9HeaderError(f"frame_sync_code is {code:#08x}, not {SYNC_CODE:#08x}")

    @staticmethod
    def _color_config(br: BitReader, profile: int) -> ColorConfig:
        bit_depth = (12 if br.f(1) else 10) if profile >= 2 else 8
        color_space = br.f(3)
        if color_space != CS_RGB:
            color_range = br.f(1)
            if profile in (1, 3):
                ssx, ssy = br.f(1), br.f(1)
                if br.f(1):
                    raise Vp9HeaderError("reserved_zero bit in color_config is set")
            else:
                ssx = ssy = 1
        else:
            color_range = 1
            if profile not in (1, 3):
                raise Vp9HeaderError(f"RGB (4:4:4) in profile {profile}")
            ssx = ssy = 0
            if br.f(1):
                raise Vp9HeaderError("reserved_zero bit in color_config is set")
        return ColorConfig(bit_depth, color_space, color_range, ssx, ssy)

    @staticmethod
    def _render_size(br: BitReader, h: Vp9FrameHeader) -> None:
        if br.f(1):
            h.render_width, h.render_height = br.f(16) + 1, br.f(16) + 1
        else:
            h.render_width, h.render_height = h.width, h.height

    @staticmethod
    def _compressed_header(data: bytes, h: Vp9FrameHeader) -> None:
        """tx_mode and reference_mode (6.3): the symbols before frame_reference_mode
        are decoded to reach it, their values dropped."""
        bd = BoolDecoder(data, h.uncompressed_header_size, h.compressed_header_size)
        if h.lossless:
            h.tx_mode = ONLY_4X4
        else:
            h.tx_mode = bd.literal(2)
            if h.tx_mode == ALLOW_32X32:
                h.tx_mode += bd.literal(1)
        if h.tx_mode == TX_MODE_SELECT:
            for n in (1, 2, 3):        # tx_probs_8x8, 16x16, 32x32
                for _ in range(2 * n):
                    bd.diff_update_prob()
        for _tx in range(TX_MODE_TO_BIGGEST_TX_SIZE[h.tx_mode] + 1):
            if bd.literal(1):
                for _ in range(2 * 2):
                    for k in range(6):
                        for _ in range((3 if k == 0 else 6) * 3):
                            bd.diff_update_prob()
        for _ in range(3):             # skip probs
            bd.diff_update_prob()
        if h.frame_is_intra:
            h.reference_mode = c.V4L2_VP9_REFERENCE_MODE_SINGLE_REFERENCE
            return
        for _ in range(7 * 3):         # inter mode probs
            bd.diff_update_prob()
        if h.interpolation_filter == c.V4L2_VP9_INTERP_FILTER_SWITCHABLE:
            for _ in range(4 * 2):
                bd.diff_update_prob()
        for _ in range(4):             # is_inter probs
            bd.diff_update_prob()
        bias = h.ref_frame_sign_bias
        if bias[1] != bias[0] or bias[2] != bias[0]:
            if bd.literal(1):
                h.reference_mode = (c.V4L2_VP9_REFERENCE_MODE_SELECT if bd.literal(1)
                                    else c.V4L2_VP9_REFERENCE_MODE_COMPOUND_REFERENCE)
            else:
                h.reference_mode = c.V4L2_VP9_REFERENCE_MODE_SINGLE_REFERENCE
        else:
            h.reference_mode = c.V4L2_VP9_REFERENCE_MODE_SINGLE_REFERENCE


# --- the control --------------------------------------------------------------

RESET_FRAME_CONTEXT_UAPI = (c.V4L2_VP9_RESET_FRAME_CTX_NONE, c.V4L2_VP9_RESET_FRAME_CTX_NONE,
                            c.V4L2_VP9_RESET_FRAME_CTX_SPEC, c.V4L2_VP9_RESET_FRAME_CTX_ALL)


def frame_flags(h: Vp9FrameHeader) -> int:
    bits = (
        (h.frame_type == KEY_FRAME, c.V4L2_VP9_FRAME_FLAG_KEY_FRAME),
        (h.show_frame, c.V4L2_VP9_FRAME_FLAG_SHOW_FRAME),
        (h.error_resilient_mode, c.V4L2_VP9_FRAME_FLAG_ERROR_RESILIENT),
        (h.intra_only, c.V4L2_VP9_FRAME_FLAG_INTRA_ONLY),
        (h.allow_high_precision_mv, c.V4L2_VP9_FRAME_FLAG_ALLOW_HIGH_PREC_MV),
        (h.refresh_frame_context, c.V4L2_VP9_FRAME_FLAG_REFRESH_FRAME_CTX),
        (h.frame_parallel_decoding_mode, c.V4L2_VP9_FRAME_FLAG_PARALLEL_DEC_MODE),
        (h.color.subsampling_x, c.V4L2_VP9_FRAME_FLAG_X_SUBSAMPLING),
        (h.color.subsampling_y, c.V4L2_VP9_FRAME_FLAG_Y_SUBSAMPLING),
        (h.color.color_range, c.V4L2_VP9_FRAME_FLAG_COLOR_RANGE_FULL_SWING),
    )
    return sum(flag for on, flag in bits if on)


def fill(h: Vp9FrameHeader, slot_ts: Sequence[int | None] | None = None) -> c.Vp9Frame:
    """The control a client sends for frame *h*; *slot_ts*: the timestamps of
    the frames in the 8 reference slots (None: empty; GStreamer leaves the
    reference timestamp 0 then)."""
    if h.show_existing_frame:
        raise ValueError("a show_existing_frame frame has no v4l2_ctrl_vp9_frame "
                         "(GStreamer shows the slot's picture again without a request)")
    ctrl = c.Vp9Frame(
        flags=frame_flags(h),
        compressed_header_size=h.compressed_header_size,
        uncompressed_header_size=h.uncompressed_header_size,
        frame_width_minus_1=h.width - 1,
        frame_height_minus_1=h.height - 1,
        render_width_minus_1=h.render_width - 1,
        render_height_minus_1=h.render_height - 1,
        ref_frame_sign_bias=sum(bit << i for i, bit in enumerate(h.ref_frame_sign_bias)),
        reset_frame_context=RESET_FRAME_CONTEXT_UAPI[h.reset_frame_context],
        frame_context_idx=h.frame_context_idx,
        profile=h.profile,
        bit_depth=h.color.bit_depth,
        interpolation_filter=h.interpolation_filter,
        tile_cols_log2=h.tile_cols_log2,
        tile_rows_log2=h.tile_rows_log2,
        reference_mode=h.reference_mode,
    )
    ctrl.lf = c.Vp9LoopFilter(
        ref_deltas=list(h.lf_ref_deltas), mode_deltas=list(h.lf_mode_deltas),
        level=h.lf_level, sharpness=h.lf_sharpness,
        flags=((c.V4L2_VP9_LOOP_FILTER_FLAG_DELTA_ENABLED if h.lf_delta_enabled else 0)
               | (c.V4L2_VP9_LOOP_FILTER_FLAG_DELTA_UPDATE if h.lf_delta_update else 0)))
    ctrl.quant = c.Vp9Quantization(h.base_q_idx, h.delta_q_y_dc, h.delta_q_uv_dc,
                                   h.delta_q_uv_ac)
    seg_flags = (
        (h.seg_enabled, c.V4L2_VP9_SEGMENTATION_FLAG_ENABLED),
        (h.seg_update_map, c.V4L2_VP9_SEGMENTATION_FLAG_UPDATE_MAP),
        (h.seg_temporal_update, c.V4L2_VP9_SEGMENTATION_FLAG_TEMPORAL_UPDATE),
        (h.seg_update_data, c.V4L2_VP9_SEGMENTATION_FLAG_UPDATE_DATA),
        (h.seg_abs_or_delta_update, c.V4L2_VP9_SEGMENTATION_FLAG_ABS_OR_DELTA_UPDATE),
    )
    ctrl.seg = c.Vp9Segmentation(
        feature_data=[list(r) for r in h.seg_feature_data],
        feature_enabled=[sum(c.V4L2_VP9_SEGMENT_FEATURE_ENABLED(j) for j in range(4) if r[j])
                         for r in h.seg_feature_enabled],
        tree_probs=list(h.seg_tree_probs), pred_probs=list(h.seg_pred_probs),
        flags=sum(flag for on, flag in seg_flags if on))
    if slot_ts is not None:
        ts = [slot_ts[i] for i in h.ref_frame_idx]
        ctrl.last_frame_ts = ts[0] or 0
        ctrl.golden_frame_ts = ts[1] or 0
        ctrl.alt_frame_ts = ts[2] or 0
    return ctrl
