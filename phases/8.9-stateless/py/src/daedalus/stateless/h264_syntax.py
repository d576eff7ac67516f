"""H.264 bitstream syntax for the stateless decoder: Exp-Golomb bits, RBSP <-> NAL,
Annex-B splitting, and SPS / PPS parsing into the V4L2 controls.

The parser follows ITU-T H.264 7.3.2.1.1 (seq_parameter_set_data), 7.3.2.1.1.1
(scaling_list), 7.3.2.2 (pic_parameter_set_rbsp) and fills the controls of
``daedalus.stateless.h264_ctrls`` the way GStreamer's v4l2slh264dec does
(gstv4l2codech264dec.c: gst_v4l2_codec_h264_dec_fill_sequence, _fill_pps,
_fill_scaling_matrix, and start_picture for the SCALING_MATRIX_PRESENT flag):

* scaling lists are resolved with the fall-back rules of Table 7-2 (rule A in
  the SPS and in a PPS whose SPS has no matrix, rule B in a PPS whose SPS has
  one; a PPS without a matrix takes the SPS's lists, Flat_16 when neither has
  one) and handed out in raster order: the bitstream sends each list in
  zig-zag order (the order of the coefficients it scales), the V4L2 control
  wants it "after applying the inverse scanning process" (8.5.6 with the
  frame zig-zag scan; for scaling lists the zig-zag scan is used whether the
  macroblock is a field or frame one), i.e. raster order -- GStreamer calls
  gst_h264_quant_matrix_{4x4,8x8}_get_raster_from_zigzag;
* all six 4x4 lists are filled; of the 8x8 lists, Intra Y and Inter Y (and the
  four chroma ones for chroma_format_idc 3 only), the others are left zero;
* V4L2_H264_PPS_FLAG_SCALING_MATRIX_PRESENT = seq_scaling_matrix_present_flag
  of the PPS's SPS OR pic_scaling_matrix_present_flag.

What the controls cannot carry is kept beside them (``SpsInfo``): the
frame-cropping rectangle, the presence of the VUI (skipped, not parsed), and
which of SPS / PPS sent the matrix.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

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
    sps_has_chroma_format,
)

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8


class H264SyntaxError(ValueError):
    """A bitstream that does not follow the H.264 syntax (or runs out of bits)."""


# --- Exp-Golomb bits -----------------------------------------------------------


class BitReader:
    """MSB-first reader of an RBSP: u(n), ue(v), se(v), more_rbsp_data()."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._value = int.from_bytes(data, "big")
        self._bits = len(data) * 8
        self.pos = 0

    def bits_left(self) -> int:
        return self._bits - self.pos

    def u(self, n: int) -> int:
        if n == 0:
            return 0
        if self.pos + n > self._bits:
            raise H264SyntaxError(f"read of {n} bits at bit {self.pos} past the end ({self._bits})")
        self.pos += n
        return (self._value >> (self._bits - self.pos)) & ((1 << n) - 1)

    def flag(self) -> bool:
        return self.u(1) == 1

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 32:
                raise H264SyntaxError(f"Exp-Golomb code longer than 32 leading zeros at {self.pos}")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)

    def more_rbsp_data(self) -> bool:
        """7.2: is there syntax before the rbsp_stop_one_bit (the last 1 bit)?"""
        if self._value == 0:
            return False
        trailing = (self._value & -self._value).bit_length() - 1  # bits after the stop bit
        stop = self._bits - 1 - trailing
        return self.pos < stop


class BitWriter:
    """MSB-first writer: u(n), ue(v), se(v), then rbsp() with rbsp_trailing_bits."""

    def __init__(self) -> None:
        self._value = 0
        self._bits = 0

    def u(self, n: int, value: int) -> None:
        if value < 0 or value >> n:
            raise ValueError(f"{value} does not fit u({n})")
        self._value = (self._value << n) | value
        self._bits += n

    def flag(self, value: bool | int) -> None:
        self.u(1, 1 if value else 0)

    def ue(self, value: int) -> None:
        if value < 0 or value > 0xFFFF_FFFE:
            raise ValueError(f"{value} out of the ue(v) range 0..2^32-2")
        code = value + 1
        self.u(2 * code.bit_length() - 1, code)

    def se(self, value: int) -> None:
        self.ue(2 * value - 1 if value > 0 else -2 * value)

    @property
    def bits(self) -> int:
        return self._bits

    def aligned_bytes(self) -> bytes:
        """The bits written so far, which must end on a byte boundary."""
        if self._bits % 8:
            raise ValueError(f"{self._bits} bits is not a whole number of bytes")
        return self._value.to_bytes(self._bits // 8, "big")

    def rbsp(self) -> bytes:
        """The bits plus rbsp_trailing_bits (stop bit 1, zero bits to the byte boundary)."""
        value = (self._value << 1) | 1
        bits = self._bits + 1
        pad = -bits % 8
        return (value << pad).to_bytes((bits + pad) // 8, "big")


# --- RBSP <-> NAL unit, Annex B -----------------------------------------------------


def rbsp_to_nal(rbsp: bytes) -> bytes:
    """7.4.1: insert emulation_prevention_three_byte so that no 0x000000..0x000003
    appears; a final 0x03 follows an RBSP ending in 0x00 (cabac_zero_word)."""
    out = bytearray()
    zeros = 0
    for b in rbsp:
        if zeros >= 2 and b <= 3:
            out.append(3)
            zeros = 0
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    if out and out[-1] == 0:
        out.append(3)
    return bytes(out)


def nal_to_rbsp(nal: bytes) -> bytes:
    """Remove every emulation_prevention_three_byte (the 0x03 of a 0x000003)."""
    if b"\x00\x00\x03" not in nal:
        return nal
    out = bytearray()
    zeros = 0
    for b in nal:
        if zeros >= 2 and b == 3:
            zeros = 0
            continue
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


@dataclass(frozen=True)
class Unit:
    """One NAL unit of an Annex-B stream: *prefix* (any zero bytes and the start
    code before it) and *nal* (header byte and payload, trailing zeros excluded)."""

    prefix: bytes
    nal: bytes

    @property
    def nal_type(self) -> int:
        return self.nal[0] & 0x1F


def split_annexb(data: bytes) -> list[Unit]:
    """The NAL units of an Annex-B byte stream; b''.join(prefix + nal) == data
    except for trailing zero bytes at the very end."""
    units: list[Unit] = []
    first = data.find(b"\x00\x00\x01")
    if first < 0 or data[:first].strip(b"\x00"):
        raise H264SyntaxError("no Annex-B start code at the start of the stream")
    start = 0
    payload = first + 3
    while True:
        nxt = data.find(b"\x00\x00\x01", payload)
        end = len(data) if nxt < 0 else nxt
        stop = end
        while stop > payload and data[stop - 1] == 0:
            stop -= 1
        units.append(Unit(data[start:payload], data[payload:stop]))
        if nxt < 0:
            return units
        start = stop
        payload = nxt + 3


def nal_rbsp(nal: bytes) -> bytes:
    """The RBSP of a NAL unit with a one-byte header (the header dropped)."""
    if not nal or nal[0] & 0x80:
        raise H264SyntaxError("empty NAL unit or forbidden_zero_bit set")
    return nal_to_rbsp(nal[1:])


def annexb(nal_ref_idc: int, nal_unit_type: int, rbsp: bytes) -> bytes:
    """A NAL unit with a four-byte start code."""
    return b"\x00\x00\x00\x01" + bytes([(nal_ref_idc << 5) | nal_unit_type]) + rbsp_to_nal(rbsp)


# --- scans and default scaling lists -----------------------------------------------

# ZIGZAG_4x4[k]: raster index (row * 4 + column) of zig-zag position k (Table 8-13, frame)
ZIGZAG_4X4 = (0, 1, 4, 8, 5, 2, 3, 6, 9, 12, 13, 10, 7, 11, 14, 15)
# ZIGZAG_8X8[k]: raster index (row * 8 + column) of zig-zag position k (Table 8-14, frame)
ZIGZAG_8X8 = (0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5,
              12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21, 28,
              35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
              58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63)

# Table 7-3 / 7-4, in zig-zag order (idx = position in the bitstream list)
DEFAULT_4X4_INTRA = (6, 13, 13, 20, 20, 20, 28, 28, 28, 28, 32, 32, 32, 37, 37, 42)
DEFAULT_4X4_INTER = (10, 14, 14, 20, 20, 20, 24, 24, 24, 24, 27, 27, 27, 30, 30, 34)
DEFAULT_8X8_INTRA = (6, 10, 10, 13, 11, 13, 16, 16, 16, 16, 18, 18, 18, 18, 18, 23,
                     23, 23, 23, 23, 23, 25, 25, 25, 25, 25, 25, 25, 27, 27, 27, 27,
                     27, 27, 27, 27, 29, 29, 29, 29, 29, 29, 29, 31, 31, 31, 31, 31,
                     31, 33, 33, 33, 33, 33, 36, 36, 36, 36, 38, 38, 38, 40, 40, 42)
DEFAULT_8X8_INTER = (9, 13, 13, 15, 13, 15, 17, 17, 17, 17, 19, 19, 19, 19, 19, 21,
                     21, 21, 21, 21, 21, 22, 22, 22, 22, 22, 22, 22, 24, 24, 24, 24,
                     24, 24, 24, 24, 25, 25, 25, 25, 25, 25, 25, 27, 27, 27, 27, 27,
                     27, 28, 28, 28, 28, 28, 30, 30, 30, 30, 32, 32, 32, 33, 33, 35)
# the Default list of each of the 12 list indices of Table 7-2
DEFAULT_LISTS = (DEFAULT_4X4_INTRA,) * 3 + (DEFAULT_4X4_INTER,) * 3 + (
    DEFAULT_8X8_INTRA, DEFAULT_8X8_INTER) * 3
FLAT_LISTS = ((16,) * 16,) * 6 + ((16,) * 64,) * 6


def zigzag_to_raster(values: Sequence[int]) -> list[int]:
    scan = ZIGZAG_4X4 if len(values) == 16 else ZIGZAG_8X8
    out = [0] * len(values)
    for k, v in enumerate(values):
        out[scan[k]] = v
    return out


def raster_to_zigzag(values: Sequence[int]) -> list[int]:
    scan = ZIGZAG_4X4 if len(values) == 16 else ZIGZAG_8X8
    return [values[scan[k]] for k in range(len(values))]


Lists = tuple[tuple[int, ...], ...]  # the 12 lists of Table 7-2, zig-zag order


def _scaling_list(r: BitReader, size: int) -> tuple[int, ...] | None:
    """7.3.2.1.1.1; None when useDefaultScalingMatrixFlag."""
    last = nxt = 8
    out = []
    for j in range(size):
        if nxt != 0:
            nxt = (last + r.se() + 256) % 256
            if j == 0 and nxt == 0:
                return None
        out.append(last if nxt == 0 else nxt)
        last = out[-1]
    return tuple(out)


def read_scaling_lists(r: BitReader, n_lists: int, fallback: Lists) -> Lists:
    """The scaling_list_present flags and lists of an SPS / PPS with *n_lists* of
    them in the bitstream, resolved with the fall-back rule of Table 7-2:
    *fallback* gives lists 0, 3, 6, 7 (Default for rule A, the SPS's for rule B),
    the others fall back to the previous list of the same kind. Lists beyond
    *n_lists* are resolved the same way (as GStreamer does; they are unused)."""
    out: list[tuple[int, ...]] = []
    for i in range(12):
        got: tuple[int, ...] | None
        if i < n_lists and r.flag():
            got = _scaling_list(r, 16 if i < 6 else 64)
            if got is None:
                got = DEFAULT_LISTS[i]
        elif i in (0, 3, 6, 7):
            got = fallback[i]
        else:
            got = out[i - 1] if i < 6 else out[i - 2]
        out.append(got)
    return tuple(out)


def write_scaling_list(w: BitWriter, values: Sequence[int]) -> None:
    """One list written explicitly (no useDefault, no run-out): delta_scale =
    next - last, wrapped into -128..127, so nextScale = (last + delta + 256) % 256."""
    last = 8
    for v in values:
        if not 1 <= v <= 255:
            raise ValueError(f"scaling list value {v} cannot be coded (1..255)")
        w.se((v - last + 128) % 256 - 128)
        last = v


# --- parsed parameter sets ---------------------------------------------------------


@dataclass(frozen=True)
class Crop:
    """frame_crop_{left,right,top,bottom}_offset, in crop units (7.4.2.1.1)."""

    left: int
    right: int
    top: int
    bottom: int


def crop_units(chroma_format_idc: int, separate_colour_plane: bool,
               frame_mbs_only: bool) -> tuple[int, int]:
    """(CropUnitX, CropUnitY) of (7-19) / (7-20)."""
    chroma_array_type = 0 if separate_colour_plane else chroma_format_idc
    fields = 1 if frame_mbs_only else 2
    if chroma_array_type == 0:
        return 1, fields
    sub_w = 1 if chroma_array_type == 3 else 2
    sub_h = 2 if chroma_array_type == 1 else 1
    return sub_w, sub_h * fields


@dataclass
class SpsInfo:
    """An SPS: its control, and what the control does not carry."""

    sps: Sps
    seq_scaling_matrix_present_flag: bool
    lists: Lists  # the SPS's resolved lists (Flat_16 without a matrix)
    crop: Crop | None
    vui_parameters_present_flag: bool
    reserved_zero_2bits: int = 0

    @property
    def frame_mbs_only(self) -> bool:
        return bool(self.sps.flags & V4L2_H264_SPS_FLAG_FRAME_MBS_ONLY)

    def coded_size(self) -> tuple[int, int]:
        """Width, height of the decoded frames in luma samples (whole macroblocks)."""
        s = self.sps
        return ((s.pic_width_in_mbs_minus1 + 1) * 16,
                (s.pic_height_in_map_units_minus1 + 1) * 16 * (1 if self.frame_mbs_only else 2))

    def visible_rect(self) -> tuple[int, int, int, int]:
        """x, y, width, height of the cropped output (the coded size when no cropping)."""
        w, h = self.coded_size()
        if self.crop is None:
            return 0, 0, w, h
        ux, uy = crop_units(self.sps.chroma_format_idc,
                            bool(self.sps.flags & V4L2_H264_SPS_FLAG_SEPARATE_COLOUR_PLANE),
                            self.frame_mbs_only)
        c = self.crop
        return (ux * c.left, uy * c.top, w - ux * (c.left + c.right),
                h - uy * (c.top + c.bottom))


@dataclass
class PpsInfo:
    """A PPS parsed against its SPS: the controls as GStreamer fills them."""

    pps: Pps
    matrix: ScalingMatrix
    pic_scaling_matrix_present_flag: bool
    lists: Lists  # the PPS's resolved lists, zig-zag order
    slice_group_map: tuple[int, ...] = field(default=())  # FMO syntax, not in the controls


def parse_sps(nal: bytes) -> SpsInfo:
    """seq_parameter_set_rbsp of an SPS NAL unit (header byte included)."""
    if nal[0] & 0x1F != NAL_SPS:
        raise H264SyntaxError(f"NAL unit type {nal[0] & 0x1F} is not an SPS")
    r = BitReader(nal_rbsp(nal))
    s = Sps()
    s.profile_idc = r.u(8)
    cs = r.u(8)
    s.constraint_set_flags = sum(1 << i for i in range(6) if cs & (0x80 >> i))
    reserved = cs & 0x3
    s.level_idc = r.u(8)
    s.seq_parameter_set_id = r.ue()
    s.chroma_format_idc = 1
    flags = 0
    seq_matrix = False
    lists: Lists = FLAT_LISTS
    if sps_has_chroma_format(s.profile_idc):
        s.chroma_format_idc = r.ue()
        if s.chroma_format_idc == 3 and r.flag():
            flags |= V4L2_H264_SPS_FLAG_SEPARATE_COLOUR_PLANE
        s.bit_depth_luma_minus8 = r.ue()
        s.bit_depth_chroma_minus8 = r.ue()
        if r.flag():
            flags |= V4L2_H264_SPS_FLAG_QPPRIME_Y_ZERO_TRANSFORM_BYPASS
        seq_matrix = r.flag()
        if seq_matrix:
            lists = read_scaling_lists(r, 8 if s.chroma_format_idc != 3 else 12, DEFAULT_LISTS)
    s.log2_max_frame_num_minus4 = r.ue()
    s.pic_order_cnt_type = r.ue()
    if s.pic_order_cnt_type == 0:
        s.log2_max_pic_order_cnt_lsb_minus4 = r.ue()
    elif s.pic_order_cnt_type == 1:
        if r.flag():
            flags |= V4L2_H264_SPS_FLAG_DELTA_PIC_ORDER_ALWAYS_ZERO
        s.offset_for_non_ref_pic = r.se()
        s.offset_for_top_to_bottom_field = r.se()
        s.num_ref_frames_in_pic_order_cnt_cycle = r.ue()
        if s.num_ref_frames_in_pic_order_cnt_cycle > 255:
            raise H264SyntaxError("num_ref_frames_in_pic_order_cnt_cycle > 255")
        for i in range(s.num_ref_frames_in_pic_order_cnt_cycle):
            s.offset_for_ref_frame[i] = r.se()
    s.max_num_ref_frames = r.ue()
    if r.flag():
        flags |= V4L2_H264_SPS_FLAG_GAPS_IN_FRAME_NUM_VALUE_ALLOWED
    s.pic_width_in_mbs_minus1 = r.ue()
    s.pic_height_in_map_units_minus1 = r.ue()
    if r.flag():
        flags |= V4L2_H264_SPS_FLAG_FRAME_MBS_ONLY
    elif r.flag():
        flags |= V4L2_H264_SPS_FLAG_MB_ADAPTIVE_FRAME_FIELD
    if r.flag():
        flags |= V4L2_H264_SPS_FLAG_DIRECT_8X8_INFERENCE
    crop = Crop(r.ue(), r.ue(), r.ue(), r.ue()) if r.flag() else None
    vui = r.flag()  # vui_parameters() follow; nothing in them changes decoded samples
    s.flags = flags
    return SpsInfo(s, seq_matrix, lists, crop, vui, reserved)


def parse_pps(nal: bytes, sps_by_id: Mapping[int, SpsInfo]) -> PpsInfo:
    """pic_parameter_set_rbsp of a PPS NAL unit, against the SPS it names."""
    if nal[0] & 0x1F != NAL_PPS:
        raise H264SyntaxError(f"NAL unit type {nal[0] & 0x1F} is not a PPS")
    r = BitReader(nal_rbsp(nal))
    p = Pps()
    p.pic_parameter_set_id = r.ue()
    p.seq_parameter_set_id = r.ue()
    info = sps_by_id.get(p.seq_parameter_set_id)
    if info is None:
        raise H264SyntaxError(f"PPS {p.pic_parameter_set_id} names SPS {p.seq_parameter_set_id}, "
                           "not seen before it")
    flags = 0
    if r.flag():
        flags |= V4L2_H264_PPS_FLAG_ENTROPY_CODING_MODE
    if r.flag():
        flags |= V4L2_H264_PPS_FLAG_BOTTOM_FIELD_PIC_ORDER_IN_FRAME_PRESENT
    p.num_slice_groups_minus1 = r.ue()
    fmo: list[int] = []
    if p.num_slice_groups_minus1 > 0:
        fmo = _slice_group_map(r, p.num_slice_groups_minus1)
    p.num_ref_idx_l0_default_active_minus1 = r.ue()
    p.num_ref_idx_l1_default_active_minus1 = r.ue()
    if r.flag():
        flags |= V4L2_H264_PPS_FLAG_WEIGHTED_PRED
    p.weighted_bipred_idc = r.u(2)
    p.pic_init_qp_minus26 = r.se()
    p.pic_init_qs_minus26 = r.se()
    p.chroma_qp_index_offset = r.se()
    if r.flag():
        flags |= V4L2_H264_PPS_FLAG_DEBLOCKING_FILTER_CONTROL_PRESENT
    if r.flag():
        flags |= V4L2_H264_PPS_FLAG_CONSTRAINED_INTRA_PRED
    if r.flag():
        flags |= V4L2_H264_PPS_FLAG_REDUNDANT_PIC_CNT_PRESENT
    pic_matrix = False
    lists = info.lists
    p.second_chroma_qp_index_offset = p.chroma_qp_index_offset
    if r.more_rbsp_data():
        transform_8x8 = r.flag()
        if transform_8x8:
            flags |= V4L2_H264_PPS_FLAG_TRANSFORM_8X8_MODE
        pic_matrix = r.flag()
        if pic_matrix:
            n = 6 + (2 if info.sps.chroma_format_idc != 3 else 6) * transform_8x8
            # rule A without an SPS matrix, rule B (the SPS's lists) with one
            lists = read_scaling_lists(
                r, n, info.lists if info.seq_scaling_matrix_present_flag else DEFAULT_LISTS)
        p.second_chroma_qp_index_offset = r.se()
    if info.seq_scaling_matrix_present_flag or pic_matrix:
        flags |= V4L2_H264_PPS_FLAG_SCALING_MATRIX_PRESENT
    p.flags = flags
    return PpsInfo(p, matrix_of(lists, info.sps.chroma_format_idc), pic_matrix, lists,
                   tuple(fmo))


def _slice_group_map(r: BitReader, groups_minus1: int) -> list[int]:
    """The FMO syntax of 7.3.2.2 (read to get past it; V4L2 cannot carry it)."""
    out = [r.ue()]
    kind = out[0]
    if kind == 0:
        out += [r.ue() for _ in range(groups_minus1 + 1)]
    elif kind == 2:
        out += [r.ue() for _ in range(2 * groups_minus1)]
    elif kind in (3, 4, 5):
        out += [r.u(1), r.ue()]
    elif kind == 6:
        size = r.ue()
        bits = groups_minus1.bit_length()
        out += [size] + [r.u(bits) for _ in range(size + 1)]
    return out


def matrix_of(lists: Lists, chroma_format_idc: int) -> ScalingMatrix:
    """The V4L2 control of resolved *lists*, as GStreamer's fill_scaling_matrix:
    raster order, six 4x4 lists, two 8x8 lists (six for 4:4:4), the rest zero."""
    m = ScalingMatrix()
    m.scaling_list_4x4 = [zigzag_to_raster(lists[i]) for i in range(6)]
    n8 = 6 if chroma_format_idc == 3 else 2
    m.scaling_list_8x8 = [zigzag_to_raster(lists[6 + i]) if i < n8 else [0] * 64
                          for i in range(6)]
    return m


def matrix_lists(matrix: ScalingMatrix, chroma_format_idc: int) -> Lists:
    """The 12 zig-zag lists of a V4L2 matrix (for 4:2:0 / 4:2:2 the chroma 8x8 lists,
    absent from the control, are copies of the luma ones as the fall-back rule gives)."""
    out = [tuple(raster_to_zigzag(matrix.scaling_list_4x4[i])) for i in range(6)]
    for i in range(6):
        src = i if chroma_format_idc == 3 else i % 2
        out.append(tuple(raster_to_zigzag(matrix.scaling_list_8x8[src])))
    return tuple(out)


# --- walking a stream -----------------------------------------------------------


@dataclass
class ParamSet:
    """An SPS or PPS unit of a stream and what it parsed to."""

    index: int  # position among the stream's units
    unit: Unit
    sps: SpsInfo | None = None
    pps: PpsInfo | None = None
    pps_sps: SpsInfo | None = None  # the SPS the PPS was parsed against


def parameter_sets(units: Sequence[Unit]) -> Iterator[ParamSet]:
    """Every SPS and PPS of *units* in stream order, each PPS parsed against the
    latest SPS of its seq_parameter_set_id."""
    sps_by_id: dict[int, SpsInfo] = {}
    for i, unit in enumerate(units):
        if unit.nal_type == NAL_SPS:
            info = parse_sps(unit.nal)
            sps_by_id[info.sps.seq_parameter_set_id] = info
            yield ParamSet(i, unit, sps=info)
        elif unit.nal_type == NAL_PPS:
            pinfo = parse_pps(unit.nal, sps_by_id)
            yield ParamSet(i, unit, pps=pinfo, pps_sps=sps_by_id[pinfo.pps.seq_parameter_set_id])
