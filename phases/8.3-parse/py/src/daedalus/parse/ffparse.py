"""Parse VP9 / AV1 / H.264 through FFmpeg (PyAV) and walk block-level information.

Reading order: :func:`parse` opens a file with our readers (readers.py) and
drives a :class:`FrameParser`, which for every packet

1. **splits** it into frames with FFmpeg's bitstream filters where one packet
   can hold several: ``vp9_superframe_split`` (a VP9 superframe = hidden
   alt-ref + shown frame) and ``av1_frame_split`` (an AV1 temporal unit =
   every frame of one time instant). H.264 access units are one frame already.
   PyAV exposes bitstream filters as ``av.BitStreamFilterContext``.
2. **reads the frame headers** with FFmpeg's coded-bitstream parser (CBS):
   the ``trace_headers`` bitstream filter logs every header syntax element at
   AV_LOG_INFO, and :func:`trace_headers` captures those lines through
   ``av.logging.Capture`` and turns them into ``{name: value}`` sections. The
   codec interpreters (:class:`Vp9Headers`, :class:`Av1Headers`,
   :class:`H264Headers`) keep the state headers depend on (reference slots,
   sequence header, SPS/PPS) and give keyframe, shown, size, profile, bit
   depth and the frame's qp (VP9/AV1 ``base_q_idx``; H.264 SliceQP of the first
   slice, as QP'Y = SliceQPY + QpBdOffsetY, FFmpeg's convention). This works
   for hidden frames too, which a decoder never outputs.
3. **decodes** it (``vp9``, ``libdav1d``, ``h264`` decoders) with
   ``export_side_data=venc_params`` and reads the ``AV_FRAME_DATA_VIDEO_ENC_PARAMS``
   side data of each output frame: :func:`enc_params_blocks`.

Block-level information, what FFmpeg exports (libavcodec of PyAV's bundled
FFmpeg; re-check when PyAV moves):

- **H.264**: always; one block per macroblock (16x16), qp = FFmpeg's qscale
  (0...51 + 6*(bit_depth-8)); the frame's ``qp`` in the side data is the PPS's
  pic_init_qp.
- **VP9**: the base q index always; blocks only when the frame has
  segmentation enabled (libvpx: ``-aq-mode``), one per coded block (8x8 to
  64x64); block qp = base_q_idx + the segment's delta (or the absolute segment
  value), clipped to 0...255 as the spec's get_qindex() does.
- **AV1**: nothing. libdav1d (the only AV1 software decoder FFmpeg has) does
  not export AVVideoEncParams, so AV1 frames have ``blocks = None``; their qp
  comes from the frame header (``base_q_idx``).

How the side data is read: PyAV (>= 14) wraps it as
``av.sidedata.encparams.VideoEncParams`` with ``nb_blocks``, ``qp`` and a
``block_params(i)`` object per block. One Python object per block is slow at
1080p (8160 macroblocks a frame), so we read the raw buffer instead (SideData
supports the buffer protocol) in one numpy call, per the layout of
``libavutil/video_enc_params.h`` (LP64):

    typedef struct AVVideoEncParams {      offset
        unsigned int nb_blocks;              0   u32 (+4 padding)
        size_t       blocks_offset;          8   u64
        size_t       block_size;            16   u64
        enum AVVideoEncParamsType type;     24   i32 (VP9 0, H264 1, MPEG2 2)
        int32_t      qp;                    28
        int32_t      delta_qp[4][2];        32...63
    } AVVideoEncParams;
    typedef struct AVVideoBlockParams {     at blocks_offset + i * block_size
        int src_x, src_y, w, h;              0, 4, 8, 12
        int32_t delta_qp;                   16
    } AVVideoBlockParams;

The tests cross-check this against PyAV's VideoEncParams attributes.
"""

from __future__ import annotations

import os
import re
import struct
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

import av
import av.logging
import numpy as np
import numpy.typing as npt
from av.sidedata.sidedata import Type as SideDataType

from daedalus.parse.readers import Packet, ReaderError, StreamInfo, open_stream
from daedalus.proto import codecs

if TYPE_CHECKING:  # PyAV's stubs make Packet generic; at run time it is not subscriptable
    AvPacket = av.Packet[Any]
BLOCK_DTYPE = np.dtype([("x", "<i4"), ("y", "<i4"), ("w", "<i4"), ("h", "<i4"), ("qp", "<i4")])
Blocks = npt.NDArray[np.void]

# AVVideoEncParams / AVVideoBlockParams, see the module docstring
ENC_PARAMS_HEADER = struct.Struct("<I4xQQii8i")
RAW_BLOCK_DTYPE = np.dtype({"names": ["x", "y", "w", "h", "delta_qp"],
                            "formats": ["<i4"] * 5, "offsets": [0, 4, 8, 12, 16]})
ENC_PARAMS_VP9, ENC_PARAMS_H264 = 0, 1

PICT_TYPES = {1: "I", 2: "P", 3: "B", 4: "S", 5: "SI", 6: "SP", 7: "BI"}


class ParseError(ValueError):
    """FFmpeg refused the stream; names the frame and the byte offset."""

    def __init__(self, message: str, offset: int | None = None, frame: int | None = None,
                 path: str | None = None) -> None:
        self.offset = offset
        self.frame = frame
        self.path = path
        where = [path] if path else []
        if frame is not None:
            where.append(f"frame {frame}")
        if offset is not None:
            where.append(f"byte offset {offset}")
        super().__init__(": ".join([*where, message]) if where else message)


# --- frame headers from FFmpeg's trace_headers ---------------------------

TRACE_FIELD = re.compile(r"^\d+\s+(\S+)\s+[01]*\s*=\s*(-?\d+)\s*$")

Section = dict[str, int]


def parse_trace(lines: list[str]) -> list[tuple[str, Section]]:
    """trace_headers lines -> [(title, {field: value})], in bitstream order.

    A line that is not ``<bit position> <name> <bits> = <value>`` is a title
    and starts a new section (``Packet: ...`` lines are dropped)."""
    sections: list[tuple[str, Section]] = []
    for line in lines:
        text = line.strip()
        if not text or text.startswith("Packet:"):
            continue
        m = TRACE_FIELD.match(text)
        if m is None:
            sections.append((text, {}))
        elif sections:
            sections[-1][1][m[1]] = int(m[2])
        else:
            sections.append(("", {m[1]: int(m[2])}))
    return sections


@dataclass(frozen=True)
class FrameHeader:
    """What one frame's headers say (including frames a decoder never outputs)."""

    keyframe: bool
    shown: bool            # show_frame, or a show_existing_frame
    show_existing: bool
    pict_type: str         # "I" / "P" / "B" ("SP"/"SI" for switch slices/frames)
    width: int             # 0 if the headers do not say
    height: int
    profile: str           # FFmpeg's profile name ("Profile 0", "High 10", "Main" ...)
    bit_depth: int
    qp: int | None


@dataclass
class _Slot:
    width: int = 0
    height: int = 0
    keyframe: bool = False
    pict_type: str = "P"
    qp: int | None = None


class HeaderReader:
    """Base of the per-codec header interpreters (state across frames)."""

    CODEC: ClassVar[str] = ""

    def frame(self, sections: list[tuple[str, Section]]) -> FrameHeader | None:
        raise NotImplementedError


def _field(sections: list[tuple[str, Section]], name: str) -> Section | None:
    for _title, fields in sections:
        if name in fields:
            return fields
    return None


class Vp9Headers(HeaderReader):
    """VP9 uncompressed header (VP9 spec 6.2) with the 8 reference slots."""

    CODEC = "vp9"

    def __init__(self) -> None:
        self.slots = [_Slot() for _ in range(8)]
        self.bit_depth = 8

    def frame(self, sections: list[tuple[str, Section]]) -> FrameHeader | None:
        h = _field(sections, "frame_marker")
        if h is None:
            return None
        profile = h.get("profile_low_bit", 0) + 2 * h.get("profile_high_bit", 0)
        if h.get("show_existing_frame"):
            s = self.slots[h.get("frame_to_show_map_idx", 0) & 7]
            return FrameHeader(s.keyframe, True, True, s.pict_type, s.width, s.height,
                               f"Profile {profile}", self.bit_depth, s.qp)
        key = h.get("frame_type", 0) == 0
        intra_only = not key and bool(h.get("intra_only", 0))
        if key or (intra_only and profile > 0):
            self.bit_depth = (12 if h.get("ten_or_twelve_bit") else 10) if profile >= 2 else 8
        elif intra_only:
            self.bit_depth = 8
        width = height = 0
        if "frame_width_minus_1" in h:
            width, height = h["frame_width_minus_1"] + 1, h.get("frame_height_minus_1", -1) + 1
        else:  # frame_size_with_refs(): the first found_ref
            for i in range(3):
                if h.get(f"found_ref[{i}]"):
                    ref = self.slots[h.get(f"ref_frame_idx[{i}]", 0) & 7]
                    width, height = ref.width, ref.height
                    break
        pict_type = "I" if key or intra_only else "P"
        qp = h.get("base_q_idx")
        refresh = 0xFF if key else h.get("refresh_frame_flags", 0)
        for i in range(8):
            if refresh >> i & 1:
                self.slots[i] = _Slot(width, height, key, pict_type, qp)
        return FrameHeader(key, bool(h.get("show_frame", 1)), False, pict_type, width, height,
                           f"Profile {profile}", self.bit_depth, qp)


AV1_PROFILES = {0: "Main", 1: "High", 2: "Professional"}
AV1_PICT_TYPES = {0: "I", 1: "P", 2: "I", 3: "SP"}  # KEY, INTER, INTRA_ONLY, SWITCH


class Av1Headers(HeaderReader):
    """AV1 sequence header and frame header (AV1 spec 5.5, 5.9), 8 reference slots."""

    CODEC = "av1"

    def __init__(self) -> None:
        self.slots = [_Slot() for _ in range(8)]
        self.profile = "Main"
        self.bit_depth = 8
        self.max_size = (0, 0)
        self.reduced_still = False

    def frame(self, sections: list[tuple[str, Section]]) -> FrameHeader | None:
        seq = _field(sections, "seq_profile")
        if seq is not None:
            p = seq["seq_profile"]
            self.profile = AV1_PROFILES.get(p, f"Profile {p}")
            self.bit_depth = 8
            if seq.get("high_bitdepth"):
                self.bit_depth = 12 if p == 2 and seq.get("twelve_bit") else 10
            self.max_size = (seq.get("max_frame_width_minus_1", -1) + 1,
                             seq.get("max_frame_height_minus_1", -1) + 1)
            self.reduced_still = bool(seq.get("reduced_still_picture_header"))
        h = _field(sections, "base_q_idx") or _field(sections, "show_existing_frame")
        if h is None:
            return None
        if h.get("show_existing_frame"):
            s = self.slots[h.get("frame_to_show_map_idx", 0) & 7]
            if s.keyframe:  # 7.21: showing a key frame refreshes every slot with it
                self.slots = [_Slot(s.width, s.height, True, s.pict_type, s.qp)
                              for _ in range(8)]
            return FrameHeader(s.keyframe, True, True, s.pict_type, s.width, s.height,
                               self.profile, self.bit_depth, s.qp)
        frame_type = 0 if self.reduced_still else h.get("frame_type", 0)
        show = True if self.reduced_still else bool(h.get("show_frame", 1))
        key = frame_type == 0
        width, height = self.max_size
        if "frame_width_minus_1" in h:
            width, height = h["frame_width_minus_1"] + 1, h.get("frame_height_minus_1", -1) + 1
        else:
            for i in range(7):
                if h.get(f"found_ref[{i}]"):
                    ref = self.slots[h.get(f"ref_frame_idx[{i}]", 0) & 7]
                    width, height = ref.width, ref.height
                    break
        pict_type = AV1_PICT_TYPES.get(frame_type, "P")
        qp = h.get("base_q_idx")
        if frame_type == 3 or (key and show):
            refresh = 0xFF
        else:
            refresh = h.get("refresh_frame_flags", 0)
        for i in range(8):
            if refresh >> i & 1:
                self.slots[i] = _Slot(width, height, key, pict_type, qp)
        return FrameHeader(key, show, False, pict_type, width, height, self.profile,
                           self.bit_depth, qp)


H264_PROFILES = {66: "Baseline", 77: "Main", 88: "Extended", 100: "High", 110: "High 10",
                 122: "High 4:2:2", 244: "High 4:4:4 Predictive", 44: "CAVLC 4:4:4"}
H264_SLICE_TYPES = {0: "P", 1: "B", 2: "I", 3: "SP", 4: "SI"}


@dataclass
class _Sps:
    profile: str
    bit_depth: int
    width: int
    height: int


class H264Headers(HeaderReader):
    """H.264 SPS / PPS / first slice header of an access unit (H.264 7.3)."""

    CODEC = "h264"

    def __init__(self) -> None:
        self.sps: dict[int, _Sps] = {}
        self.pps: dict[int, tuple[int, int]] = {}  # id -> (sps id, 26 + pic_init_qp_minus26)

    @staticmethod
    def _sps(f: Section) -> _Sps:
        idc = f.get("profile_idc", 0)
        name = H264_PROFILES.get(idc, f"profile_idc {idc}")
        if idc == 66 and f.get("constraint_set1_flag"):
            name = "Constrained Baseline"
        elif idc in (110, 122, 244) and f.get("constraint_set3_flag"):
            name += " Intra"
        chroma = f.get("chroma_format_idc", 1)
        frame_mbs_only = f.get("frame_mbs_only_flag", 1)
        crop_x = 2 if chroma in (1, 2) else 1
        crop_y = (2 if chroma == 1 else 1) * (2 - frame_mbs_only)
        width = (f.get("pic_width_in_mbs_minus1", -1) + 1) * 16
        height = (2 - frame_mbs_only) * (f.get("pic_height_in_map_units_minus1", -1) + 1) * 16
        if f.get("frame_cropping_flag"):
            width -= crop_x * (f.get("frame_crop_left_offset", 0)
                               + f.get("frame_crop_right_offset", 0))
            height -= crop_y * (f.get("frame_crop_top_offset", 0)
                                + f.get("frame_crop_bottom_offset", 0))
        return _Sps(name, f.get("bit_depth_luma_minus8", 0) + 8, width, height)

    def frame(self, sections: list[tuple[str, Section]]) -> FrameHeader | None:
        first_slice: Section | None = None
        for _title, f in sections:
            if "profile_idc" in f:
                self.sps[f.get("seq_parameter_set_id", 0)] = self._sps(f)
            elif "pic_init_qp_minus26" in f:
                self.pps[f.get("pic_parameter_set_id", 0)] = (
                    f.get("seq_parameter_set_id", 0), 26 + f["pic_init_qp_minus26"])
            elif "slice_type" in f and first_slice is None:
                first_slice = f
        if first_slice is None:
            return None
        pps = self.pps.get(first_slice.get("pic_parameter_set_id", 0))
        sps = self.sps.get(pps[0]) if pps else None
        if pps is None or sps is None:
            return None
        qp = pps[1] + first_slice.get("slice_qp_delta", 0) + 6 * (sps.bit_depth - 8)
        key = first_slice.get("nal_unit_type") == 5
        pict_type = H264_SLICE_TYPES.get(first_slice["slice_type"] % 5, "P")
        return FrameHeader(key, True, False, pict_type, sps.width, sps.height, sps.profile,
                           sps.bit_depth, qp)


HEADER_READERS: dict[str, type[HeaderReader]] = {
    "vp9": Vp9Headers, "av1": Av1Headers, "h264": H264Headers}


def trace_headers(bsf: av.BitStreamFilterContext, packet: AvPacket) -> list[str]:
    """Run FFmpeg's trace_headers filter on *packet*; its log lines."""
    level = av.logging.get_level()
    skip = av.logging.get_skip_repeated()
    av.logging.set_level(av.logging.INFO)
    av.logging.set_skip_repeated(False)
    try:
        with av.logging.Capture(local=True) as logs:
            bsf.filter(packet)
    finally:
        av.logging.set_level(level)
        av.logging.set_skip_repeated(skip)
    return [msg for _lvl, name, msg in logs if name == "trace_headers"]


# --- block-level information ---------------------------------------------


@dataclass(frozen=True)
class EncParams:
    """AVVideoEncParams as read from the raw side-data buffer."""

    type: int
    qp: int
    delta_qp: tuple[int, ...]   # [plane][ac/dc], flattened
    blocks: Blocks              # BLOCK_DTYPE; qp = the block's final qp


def enc_params_blocks(buf: bytes | memoryview, *, bit_depth: int = 8) -> EncParams:
    """Decode an AV_FRAME_DATA_VIDEO_ENC_PARAMS buffer (layout: module docstring)."""
    raw = memoryview(buf).cast("B")
    if raw.nbytes < ENC_PARAMS_HEADER.size:
        raise ParseError(f"VIDEO_ENC_PARAMS side data too short ({raw.nbytes} bytes)")
    nb, offset, size, kind, qp, *delta = ENC_PARAMS_HEADER.unpack_from(raw)
    blocks = np.zeros(nb, dtype=BLOCK_DTYPE)
    if nb:
        if size < RAW_BLOCK_DTYPE.itemsize or offset + nb * size > raw.nbytes:
            raise ParseError(f"VIDEO_ENC_PARAMS: {nb} blocks of {size} bytes at {offset} do "
                             f"not fit {raw.nbytes} bytes")
        dt = np.dtype({"names": list(RAW_BLOCK_DTYPE.names or ()),
                       "formats": ["<i4"] * 5, "offsets": [0, 4, 8, 12, 16], "itemsize": size})
        src = np.frombuffer(raw, dtype=dt, count=nb, offset=offset)
        for name in ("x", "y", "w", "h"):
            blocks[name] = src[name]
        final = qp + src["delta_qp"].astype(np.int64)
        if kind == ENC_PARAMS_VP9:  # get_qindex(): Clip3(0, 255, ...)
            final = np.clip(final, 0, 255)
        blocks["qp"] = final
    return EncParams(kind, qp, tuple(delta), blocks)


def find_enc_params(frame: av.VideoFrame) -> EncParams | None:
    # PyAV's stubs type side_data as a TypedDict of MOTION_VECTORS only; at run
    # time it is a Mapping keyed by av.sidedata.sidedata.Type
    side_data: Any = frame.side_data
    if SideDataType.VIDEO_ENC_PARAMS not in side_data:
        return None
    return enc_params_blocks(memoryview(side_data[SideDataType.VIDEO_ENC_PARAMS]))


# --- frames ---------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One coded frame, in decode order."""

    index: int             # 0-based frame number in decode order (after splitting)
    packet: int            # index of the reader packet it came from
    offset: int            # byte offset of that packet in the file
    size: int              # compressed bytes of this frame
    keyframe: bool
    shown: bool
    width: int
    height: int
    profile: str
    bit_depth: int
    pict_type: str         # from the headers
    qp: int | None         # frame qp from the headers (see module docstring)
    output: int | None = None          # position in the decoder's output order
    decoded: bool = False              # the decoder output this frame
    decoded_pict_type: str | None = None
    decoded_key: bool | None = None
    base_qp: int | None = None         # AVVideoEncParams.qp
    blocks: Blocks | None = field(default=None, compare=False)

    def block_summary(self) -> tuple[int, float, int] | None:
        """(min, mean, max) block qp, or None without blocks."""
        if self.blocks is None or len(self.blocks) == 0:
            return None
        q = self.blocks["qp"]
        return int(q.min()), float(q.mean()), int(q.max())

    def as_dict(self) -> dict[str, Any]:
        summary = self.block_summary()
        return {
            "index": self.index, "packet": self.packet, "offset": self.offset,
            "size": self.size, "keyframe": self.keyframe, "shown": self.shown,
            "width": self.width, "height": self.height, "profile": self.profile,
            "bit_depth": self.bit_depth, "pict_type": self.pict_type, "qp": self.qp,
            "output": self.output, "base_qp": self.base_qp,
            "blocks": None if self.blocks is None else len(self.blocks),
            "block_qp": None if summary is None else
            {"min": summary[0], "mean": round(summary[1], 3), "max": summary[2]},
        }


@dataclass
class _Pending:
    frame: Frame
    done: bool


class FrameParser:
    """Feed packets of one stream, get :class:`Frame` records in decode order.

    A shown frame's record waits until the decoder has output it (H.264
    reordering delays that by a few packets); :meth:`flush` drains the rest.
    """

    def __init__(self, codec: str, *, blocks: bool = True, path: str | None = None) -> None:
        desc = codecs.BY_NAME.get(codec)
        if desc is None:
            raise ValueError(f"unsupported codec {codec!r}")
        self.codec = codec
        self.path = path
        self.split = (av.BitStreamFilterContext(desc.split_filter, codec)
                      if desc.split_filter is not None else None)
        self.trace = av.BitStreamFilterContext("trace_headers", codec)
        self.headers = HEADER_READERS[codec]()
        self.ctx: Any = av.CodecContext.create(desc.decoder, "r")
        self.ctx.thread_count = 1
        if blocks:
            self.ctx.options = {"export_side_data": "venc_params"}
        self.pending: deque[_Pending] = deque()
        self.by_index: dict[int, _Pending] = {}
        self.next_index = 0
        self.outputs = 0
        self.last_header: FrameHeader | None = None

    def _fail(self, exc: Exception, packet: Packet) -> ParseError:
        return ParseError(f"FFmpeg: {exc}", packet.offset, self.next_index, self.path)

    def feed(self, packet: Packet) -> list[Frame]:
        """Parse and decode one reader packet; the records that are complete."""
        try:
            pieces = [av.Packet(packet.data)]
            if self.split is not None:
                pieces = self.split.filter(pieces[0])
        except av.FFmpegError as exc:
            raise self._fail(exc, packet) from exc
        for piece in pieces:
            self._frame(packet, piece)
        return self._ready()

    def _frame(self, packet: Packet, piece: AvPacket) -> None:
        index = self.next_index
        try:
            # a filter takes the packet's data: trace a copy, decode the original
            lines = trace_headers(self.trace, av.Packet(bytes(piece)))
        except av.FFmpegError as exc:
            raise self._fail(exc, packet) from exc
        header = self.headers.frame(parse_trace(lines))
        if header is None:
            raise ParseError("no frame header in this packet", packet.offset, index, self.path)
        self.last_header = header
        record = Frame(index=index, packet=packet.index, offset=packet.offset,
                       size=piece.size, keyframe=header.keyframe, shown=header.shown,
                       width=header.width, height=header.height, profile=header.profile,
                       bit_depth=header.bit_depth, pict_type=header.pict_type, qp=header.qp)
        pending = _Pending(record, done=not header.shown)
        self.pending.append(pending)
        self.by_index[index] = pending
        self.next_index += 1
        piece.pts = index
        try:
            decoded = self.ctx.decode(piece)
        except av.FFmpegError as exc:
            raise self._fail(exc, packet) from exc
        self._attach(decoded)

    def _attach(self, decoded: list[av.VideoFrame]) -> None:
        for out in decoded:
            output = self.outputs
            self.outputs += 1
            pending = self.by_index.get(out.pts) if out.pts is not None else None
            if pending is None or pending.done:
                raise ParseError(f"decoder output a frame (pts {out.pts}) that matches no "
                                 "shown frame", None, None, self.path)
            params = find_enc_params(out)
            depth = out.format.components[0].bits if out.format.components else 8
            pending.frame = replace(
                pending.frame, output=output, decoded=True, width=out.width,
                height=out.height, bit_depth=depth,
                decoded_pict_type=PICT_TYPES.get(int(out.pict_type)),
                decoded_key=bool(out.key_frame),
                base_qp=None if params is None else params.qp,
                blocks=None if params is None else params.blocks)
            pending.done = True

    def _ready(self) -> list[Frame]:
        out = []
        while self.pending and self.pending[0].done:
            p = self.pending.popleft()
            del self.by_index[p.frame.index]
            out.append(p.frame)
        return out

    def flush(self) -> list[Frame]:
        """Drain the decoder; every remaining record (undecoded ones as they are)."""
        try:
            self._attach(self.ctx.decode(None))
        except av.FFmpegError as exc:
            raise ParseError(f"FFmpeg: {exc}", None, self.next_index, self.path) from exc
        for p in self.pending:
            p.done = True
        return self._ready()


def parse(path: str | os.PathLike[str], *, blocks: bool = True,
          time_limit: float | None = None) -> tuple[StreamInfo, Iterator[Frame]]:
    """Open *path* with our readers and parse it frame by frame.

    Raises ReaderError (container) or ParseError (FFmpeg, or *time_limit*
    seconds exceeded, checked between packets) -- both are ValueErrors.
    """
    spath = os.fspath(path)
    info, packets = open_stream(spath)
    deadline = None if time_limit is None else time.monotonic() + time_limit

    def frames() -> Iterator[Frame]:
        parser = FrameParser(info.codec, blocks=blocks, path=spath)
        for packet in packets:
            if deadline is not None and time.monotonic() > deadline:
                raise ParseError(f"time limit of {time_limit} s exceeded", packet.offset,
                                 parser.next_index, spath)
            yield from parser.feed(packet)
        yield from parser.flush()

    return info, frames()


def parse_all(path: str | os.PathLike[str], *, blocks: bool = True,
              time_limit: float | None = None) -> tuple[StreamInfo, list[Frame]]:
    info, frames = parse(path, blocks=blocks, time_limit=time_limit)
    return info, list(frames)


__all__ = ["BLOCK_DTYPE", "EncParams", "Frame", "FrameHeader", "FrameParser", "ParseError",
           "ReaderError", "enc_params_blocks", "parse", "parse_all", "parse_trace"]
