"""The DECODE_REQUEST handler: the daemon's half of the stateless decoder node.

Registered in the ``daedalus.handlers`` entry-point group as ``stateless``. The
kernel (phases/8.9-stateless/kernel/daedalus-stateless.c) sends one
DECODE_REQUEST per media request: struct daedalus_request_decode, then every
compound control of the codec with the value it has for the job. The job's
two buffers cross as dma-bufs (DAEDALUS_IOC_GET_DMABUF, index 0: OUTPUT,
read-only; index 1: CAPTURE, read-write), through the device daedalusd
attaches (``attach_device``).

Per kernel stream (``stream_id``; the codec is fixed by its first request) the
handler keeps, for VP9, an FFmpeg decoder (``daedalus.codec.session.
create_decoder``, slice threads as phase 8.5's: one packet in, its picture
out), the frame header parser (``Vp9Parser``: VP9 headers depend on earlier
frames) and the 8 reference slots by request timestamp (``Vp9RefSlots``); for
H.264 (``H264Stream``) a ``DecodeOrderH264`` (a bank of FFmpeg h264 decoders
by reorder depth that gives each packet's own picture at once, in decode
order), the parameter sets it was given since the last IDR, and the
timestamps of the reference pictures decoded since the last IDR; for AV1
(``av1_stream.Av1Stream``) an FFmpeg decoder (libdav1d, one temporal unit
in, its picture out) and an ``Av1Rebuilder`` (the 8 reference slots by
request timestamp, and what the headers it writes depend on).

A request, in order (every failure is an answer with ``error`` set and
``bytes`` 0, never a header status, and changes nothing unless said):

1. the payload: lengths, reserved words, flags, codec, layout
   (``parse_request_decode`` / ``validate_request_decode``), then the
   controls against the codec's: every id known, each of its uAPI size with
   one element (a dynamic array, AV1_TILE_GROUP_ENTRY: 1 to 512 elements,
   ``size`` that many 16-byte entries), none twice, the mandatory ones
   present (AV1_FRAME and AV1_TILE_GROUP_ENTRY also flagged
   DAEDALUS_CTRL_IN_REQUEST), no more than the codec has. Anything else:
   EINVAL, before any buffer is touched; the kernel's bytes are not trusted
   more than the daemon's are;
2. the codec: a stream's codec never changes (EINVAL);
3. ``DAEDALUS_REQUEST_RESET`` (the first job since OUTPUT started streaming:
   the start, a seek): the stream's decoder, parser and slots start afresh;
4. the OUTPUT buffer: ``bitstream_len`` bytes at ``bitstream_offset`` copied
   between DMA_BUF_SYNC_START and _END (EINVAL if they run past the buffer),
   then DAEDALUS_IOC_IN_FLIGHT: a copy finished after the kernel gave up
   may mix two packets and is not decoded (ETIMEDOUT). No device attached:
   EOPNOTSUPP;
5. VP9 (for H.264 and AV1 see below): the buffer holds one frame (a
   superframe index listing more than one is EINVAL: V4L2_PIX_FMT_VP9_FRAME
   is one frame per buffer); its header
   is parsed (EILSEQ if it cannot be) and ``vp9_check.check`` compares it
   with V4L2_CID_STATELESS_VP9_FRAME and the references it names with the
   slots. A contradiction is **EINVAL** ("controls that make no sense", the
   kernel-doc of struct daedalus_request_decode_resp), with one warning line
   naming the stream, the request's timestamp and every contradiction; the
   frame is not decoded;
6. decoding: a shown frame gives its picture; a hidden frame (show_frame 0,
   an alt-ref) is decoded, then a synthesised show_existing_frame of one
   slot it refreshed (``vp9_header.show_existing_frame``) makes FFmpeg
   output its picture without changing its state (tests/
   test_vp9_header_host.py proves both against Debian's ffmpeg); a
   show_existing_frame request gives that slot's picture. PyAV errors, or
   no picture where one was due: EILSEQ; a picture FFmpeg flags corrupt
   (concealed): EILSEQ too. A hidden frame that refreshes no slot is decoded
   and answered ENODATA (it has no picture to give);
7. the picture into the CAPTURE buffer in the request's layout (its
   ``pixfmt``, ``bytesperline``, ``height``: ``daedalus.m2m.layout``, written
   by phase 8.5's per-frame kernel ``place`` in one pass between
   DMA_BUF_SYNC_START and _END, padding and rows past the picture zeroed):
   a picture of another layout (10-bit into NV12 ...) is EOPNOTSUPP, one
   larger than the request's ``width`` x ``height`` or a ``sizeimage`` that
   is not the layout's bytes is EINVAL, a CAPTURE buffer smaller than
   ``sizeimage`` EINVAL. The answer's ``bytes`` is ``sizeimage``. With
   DAEDALUS_REQUEST_HOLD the picture is written all the same (a VP9 buffer
   is a whole frame).

H.264 (V4L2_PIX_FMT_H264_SLICE, frame-based decode mode, Annex-B start codes),
steps 5 and 6:

5. DAEDALUS_REQUEST_HOLD (the slices of one frame in several requests) is
   EOPNOTSUPP: one request carries a whole frame. The controls are unpacked
   (``H264Controls``): SPS, PPS, SCALING_MATRIX when the PPS flags
   SCALING_MATRIX_PRESENT (EINVAL when the request has no such control),
   DECODE_PARAMS, and SLICE_PARAMS only when the request set it
   (DAEDALUS_CTRL_IN_REQUEST: the kernel sends every control, with its last
   value); PRED_WEIGHTS is not read (the slices carry their tables). The
   buffer is split at its start codes (none: EINVAL): slice NAL units (types
   1 and 5, not mixed) are kept, SEI / AUD / filler dropped, any other NAL
   unit (an SPS or PPS among them: they are controls) is EINVAL, no slice is
   EINVAL. A non-IDR frame while the stream waits for an IDR (since its start
   or RESET, or after an error) is EILSEQ, not decoded. Each slice header is
   parsed against the SPS / PPS controls (``h264_slice``; a header that does
   not parse, or names another pic_parameter_set_id, is a contradiction),
   then ``h264_problems`` compares: PPS.seq_parameter_set_id with the SPS's;
   per slice, DECODE_PARAMS' IDR_PIC flag with nal_unit_type 5, frame_num,
   nal_ref_idc (zero or not), idr_pic_id (IDR), pic_order_cnt_lsb,
   delta_pic_order_cnt_bottom / 0 / 1, pic_order_cnt_bit_size,
   dec_ref_pic_marking_bit_size, FIELD_PIC / BOTTOM_FIELD with
   field_pic_flag / bottom_field_flag; for POC type 0,
   top_field_order_cnt = PicOrderCntMsb + pic_order_cnt_lsb (exactly the lsb
   at an IDR) and bottom_field_order_cnt = top + delta_pic_order_cnt_bottom;
   SLICE_PARAMS, when set, with the first slice (header_bit_size,
   first_mb_in_slice, slice_type, slice_qp_delta, and the optional elements
   the slice carries). For a non-IDR frame, every dpb[] entry flagged VALID |
   ACTIVE must name by reference_ts a reference picture (nal_ref_idc != 0)
   this stream decoded since the last IDR, and a short-term one its
   frame_num (the handler does not re-run the marking process: FFmpeg does,
   from the bitstream). Any contradiction is EINVAL with one warning line
   naming the stream, the request's timestamp and every contradiction; the
   frame is not decoded and the stream waits for an IDR. A field picture
   (field_pic_flag 1) that contradicts nothing is EOPNOTSUPP;
6. the SPS / PPS NAL units rebuilt from the controls (``h264_rebuild``: the
   SPS without VUI, cropping or matrix, the PPS with the control's matrix
   written explicitly, exact for every list a picture of that PPS uses) go
   in front of the slices whenever they were not given to the decoder since
   the last IDR, or changed (an SPS sent again sends its PPSs again; an IDR
   sends both). The packet goes to ``DecodeOrderH264`` with the picture's
   POC (min of DECODE_PARAMS' top / bottom_field_order_cnt) and the IDR flag
   of its slices: its own picture comes back at once (whole macroblocks, no
   cropping). A PyAV error or the bank not giving that picture (a POC that
   is not the stream's, say): EILSEQ, the bank dropped, the stream waits for
   an IDR; a picture flagged corrupt: EILSEQ. An IDR resets the held
   references and parameter sets (and, after an error, the bank).

AV1 (V4L2_PIX_FMT_AV1_FRAME, one frame per buffer; ``av1_stream`` has the
details), steps 5 and 6:

5. the controls are unpacked: SEQUENCE (the node's current value), FRAME and
   TILE_GROUP_ENTRY (the request's own, step 1), and FILM_GRAIN when
   SEQUENCE flags FILM_GRAIN_PARAMS_PRESENT. A frame other
   than a KEY_FRAME while the stream waits for a key frame (since its start
   or RESET, or after an error) is EILSEQ, not decoded. For an inter /
   switch frame, each slot ``ref_frame_idx[]`` names must hold the picture
   of the timestamp ``reference_frame_ts[]`` gives it (the slots this stream
   decoded); a mismatch is EINVAL with one warning line naming the stream,
   the request's timestamp and every problem. The entries must cover every
   tile of ``tile_info`` once, each inside the bitstream (``tile_offset``
   counts from ``bitstream_offset``), and the controls must describe a frame
   the rebuild can write (``av1_rebuild.ControlError``): EINVAL. A refused
   frame is not decoded and the stream waits for a key frame. With
   DAEDALUS_REQUEST_HOLD the picture is written all the same (a buffer is a
   whole frame);
6. ``Av1Rebuilder.temporal_unit`` writes a temporal unit (sequence header,
   frame header and one tile group rebuilt from the controls and the tile
   bytes the entries name; nothing else of the buffer is read) and the
   decoder decodes it. A shown frame gives its picture; a hidden frame is
   decoded, then a synthesised show_existing_frame of the first slot it
   refreshed gives its picture (VP9's way). A hidden frame that refreshes
   no slot, or a hidden KEY_FRAME (showing it would refresh every slot), is
   decoded and answered ENODATA. PyAV errors or not one picture: EILSEQ, the
   stream waits for a key frame; a picture flagged corrupt: EILSEQ. The
   client's own show_existing_frame makes no request; one of a key frame
   refreshes every slot, which the daemon does not see: the next inter
   frame's references are then EINVAL (until the next key frame).

Recovery: a frame not decoded (refused at 5, or failed at 6) leaves FFmpeg's
state behind the bitstream's, so every later frame of the stream is answered
EILSEQ without being decoded until a key frame, which starts a fresh decoder,
parser and slots (H.264: until an IDR; AV1: a key frame, a fresh decoder
and rebuilder); errors at 7 do not (the frame was
decoded). The kernel log
sees none of this: the job's buffers go back flagged ERROR.

Threads: ``order_key`` is the stream id, so daedalusd hands a stream's requests
to ``handle`` one at a time in the order it read them; streams decode in
parallel. CLOSE_STREAM drops the stream (``close_stream``).
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import av
import numpy as np
from av.video.codeccontext import VideoCodecContext

from daedalus.codec.session import MAX_STREAMS, DecoderFactory, create_decoder, ffmpeg_text
from daedalus.dispatch.device import Device, DmaBufError
from daedalus.m2m import kernels
from daedalus.m2m.layout import Geometry, buffer_size, delivered, fits, layout_for
from daedalus.proto import (
    REQUEST_HOLD,
    Codec,
    Header,
    MsgType,
    PixFmt,
    ProtocolError,
    RequestDecode,
    encode_message,
    pack_request_decode_resp,
    parse_request_decode,
    request_stream,
    validate_request_decode,
)
from daedalus.roundtrip.frames import UnsupportedLayout
from daedalus.stateless import av1_ctrls, vp9_ctrls
from daedalus.stateless.av1_stream import (
    FILM_GRAIN_SIZE,
    FRAME_SIZE,
    SEQUENCE_SIZE,
    TILE_GROUP_ENTRY_SIZE,
    Av1Stream,
)
from daedalus.stateless.failure import RequestFailure
from daedalus.stateless.h264_ctrls import (
    DECODE_PARAMS_SIZE,
    PPS_SIZE,
    SCALING_MATRIX_SIZE,
    SLICE_PARAMS_SIZE,
    SPS_SIZE,
    V4L2_H264_DECODE_PARAM_FLAG_BOTTOM_FIELD,
    V4L2_H264_DECODE_PARAM_FLAG_FIELD_PIC,
    V4L2_H264_DECODE_PARAM_FLAG_IDR_PIC,
    V4L2_H264_DPB_ENTRY_FLAG_ACTIVE,
    V4L2_H264_DPB_ENTRY_FLAG_LONG_TERM,
    V4L2_H264_DPB_ENTRY_FLAG_VALID,
    V4L2_H264_PPS_FLAG_SCALING_MATRIX_PRESENT,
    DecodeParams,
    Pps,
    ScalingMatrix,
    SliceParams,
    Sps,
    pack_pps,
    pack_scaling_matrix,
    pack_sps,
    unpack_pps,
    unpack_scaling_matrix,
    unpack_sps,
)
from daedalus.stateless.h264_order import DecodeOrderH264, OrderError
from daedalus.stateless.h264_rebuild import pps_nal, sps_nal
from daedalus.stateless.h264_slice import SliceHeader, parse_slice_header, slice_params_problems
from daedalus.stateless.h264_syntax import (
    NAL_IDR,
    NAL_SEI,
    NAL_SLICE,
    H264SyntaxError,
    Unit,
    split_annexb,
)
from daedalus.stateless.vp9_check import Vp9RefSlots, check
from daedalus.stateless.vp9_header import (
    NUM_REF_FRAMES,
    Vp9FrameHeader,
    Vp9HeaderError,
    Vp9Parser,
    show_existing_frame,
    split_superframe,
)

log = logging.getLogger("daedalus.stateless")

_STATELESS_BASE = vp9_ctrls.V4L2_CID_CODEC_STATELESS_BASE
V4L2_CID_STATELESS_VP9_FRAME = vp9_ctrls.V4L2_CID_STATELESS_VP9_FRAME
V4L2_CID_STATELESS_VP9_COMPRESSED_HDR = _STATELESS_BASE + 301
V4L2_CID_STATELESS_H264_SPS = _STATELESS_BASE + 2
V4L2_CID_STATELESS_H264_PPS = _STATELESS_BASE + 3
V4L2_CID_STATELESS_H264_SCALING_MATRIX = _STATELESS_BASE + 4
V4L2_CID_STATELESS_H264_PRED_WEIGHTS = _STATELESS_BASE + 5
V4L2_CID_STATELESS_H264_SLICE_PARAMS = _STATELESS_BASE + 6
V4L2_CID_STATELESS_H264_DECODE_PARAMS = _STATELESS_BASE + 7


@dataclass(frozen=True)
class CtrlSpec:
    """A compound control the node has: its uAPI struct's size (of one
    element), whether every request must carry it (the kernel's req_validate
    insists), and for a dynamic array the most elements it takes (its entry's
    ``elems`` is the count the request set, ``size`` that many elements),
    and whether the request itself must have set it (DAEDALUS_CTRL_IN_REQUEST:
    an earlier request's value describes another frame)."""

    name: str
    size: int
    required: bool = False
    max_elems: int = 1
    in_request: bool = False


# The codecs' compound controls, sizes as <linux/v4l2-controls.h> lays the
# structs out (the kernel-doc of struct daedalus_request_decode lists them).
CODEC_CTRLS: dict[Codec, dict[int, CtrlSpec]] = {
    Codec.VP9: {
        V4L2_CID_STATELESS_VP9_FRAME: CtrlSpec("VP9_FRAME", vp9_ctrls.FRAME_SIZE, True),
        V4L2_CID_STATELESS_VP9_COMPRESSED_HDR: CtrlSpec("VP9_COMPRESSED_HDR", 2040),
    },
    Codec.H264: {
        V4L2_CID_STATELESS_H264_SPS: CtrlSpec("H264_SPS", SPS_SIZE, True),
        V4L2_CID_STATELESS_H264_PPS: CtrlSpec("H264_PPS", PPS_SIZE, True),
        V4L2_CID_STATELESS_H264_SCALING_MATRIX: CtrlSpec("H264_SCALING_MATRIX",
                                                         SCALING_MATRIX_SIZE),
        V4L2_CID_STATELESS_H264_PRED_WEIGHTS: CtrlSpec("H264_PRED_WEIGHTS", 772),
        V4L2_CID_STATELESS_H264_SLICE_PARAMS: CtrlSpec("H264_SLICE_PARAMS", SLICE_PARAMS_SIZE),
        V4L2_CID_STATELESS_H264_DECODE_PARAMS: CtrlSpec("H264_DECODE_PARAMS",
                                                        DECODE_PARAMS_SIZE, True),
    },
    Codec.AV1: {
        av1_ctrls.V4L2_CID_STATELESS_AV1_SEQUENCE: CtrlSpec("AV1_SEQUENCE", SEQUENCE_SIZE, True),
        av1_ctrls.V4L2_CID_STATELESS_AV1_TILE_GROUP_ENTRY: CtrlSpec(
            "AV1_TILE_GROUP_ENTRY", TILE_GROUP_ENTRY_SIZE, True,
            max_elems=av1_ctrls.V4L2_AV1_MAX_TILE_COUNT, in_request=True),
        av1_ctrls.V4L2_CID_STATELESS_AV1_FRAME: CtrlSpec("AV1_FRAME", FRAME_SIZE, True,
                                                         in_request=True),
        av1_ctrls.V4L2_CID_STATELESS_AV1_FILM_GRAIN: CtrlSpec("AV1_FILM_GRAIN", FILM_GRAIN_SIZE),
    },
}


def check_ctrls(req: RequestDecode) -> None:
    """The request's controls are the codec's: RequestFailure (EINVAL) naming
    the first that is not (unknown id, wrong size or element count, too many,
    a mandatory one missing, one the request must set not flagged so).
    Duplicates were refused by validate_request_decode."""
    specs = CODEC_CTRLS.get(Codec(req.codec), {})
    if len(req.ctrls) > len(specs):
        raise RequestFailure(errno.EINVAL, f"{len(req.ctrls)} controls, codec "
                             f"{Codec(req.codec).name} has {len(specs)}")
    for ctrl in req.ctrls:
        spec = specs.get(ctrl.id)
        if spec is None:
            raise RequestFailure(errno.EINVAL, f"control {ctrl.id:#x} is not one of codec "
                                 f"{Codec(req.codec).name}'s")
        if spec.max_elems > 1:
            if not 1 <= ctrl.elems <= spec.max_elems or ctrl.size != ctrl.elems * spec.size:
                raise RequestFailure(errno.EINVAL, (
                    f"control {spec.name}: {ctrl.elems} element(s) in {ctrl.size} bytes, "
                    f"expected 1..{spec.max_elems} of {spec.size} bytes each"))
        elif ctrl.elems != 1 or ctrl.size != spec.size:
            raise RequestFailure(errno.EINVAL, f"control {spec.name}: {ctrl.elems} element(s) "
                                 f"of {ctrl.size} bytes, expected 1 of {spec.size}")
        if spec.in_request and not ctrl.in_request:
            raise RequestFailure(errno.EINVAL, f"control {spec.name} not set by the request "
                                 "(every request of the codec sets it)")
    for ctrl_id, spec in specs.items():
        if spec.required and req.ctrl(ctrl_id) is None:
            raise RequestFailure(errno.EINVAL, f"control {spec.name} missing")


@dataclass
class Vp9Stream:
    """One kernel stream of VP9 DECODE_REQUESTs."""

    stream_id: int
    factory: DecoderFactory
    lock: threading.Lock = field(default_factory=threading.Lock)
    decoder: VideoCodecContext | None = None
    parser: Vp9Parser = field(default_factory=Vp9Parser)
    slots: Vp9RefSlots = field(default_factory=Vp9RefSlots)
    broken: int | None = None     # timestamp of the request whose frame was not decoded
    requests: int = 0
    pictures: int = 0
    errors: int = 0
    resets: int = 0

    codec: ClassVar[Codec] = Codec.VP9

    def reset(self) -> None:
        """A fresh decoder (made at first use), parser and slots."""
        self.decoder = None
        self.parser = Vp9Parser()
        self.slots = Vp9RefSlots()
        self.broken = None

    def _decode(self, data: bytes) -> list[av.VideoFrame]:
        if self.decoder is None:
            self.decoder = self.factory(Codec.VP9)
        return list(self.decoder.decode(av.Packet(data)))

    def _break(self, req: RequestDecode) -> None:
        if self.broken is None:
            self.broken = req.timestamp

    def decode(self, req: RequestDecode, bitstream: bytes) -> av.VideoFrame:
        """The picture of the request's frame (RequestFailure if none)."""
        try:
            frames = split_superframe(bitstream)
        except Vp9HeaderError as exc:
            raise RequestFailure(errno.EILSEQ, f"superframe index: {exc}") from None
        if len(frames) != 1:
            raise RequestFailure(errno.EINVAL, f"a VP9_FRAME buffer holds one frame, this one "
                                 f"a superframe of {len(frames)}")
        frame = frames[0]
        if self.broken is not None:
            try:
                key: Vp9FrameHeader | None = Vp9Parser().parse(frame)
            except Vp9HeaderError:
                key = None
            if key is None or not key.key_frame:
                raise RequestFailure(errno.EILSEQ, f"the frame of timestamp {self.broken} was "
                                     "not decoded: waiting for a key frame")
            log.info("stream %d: key frame at timestamp %d, decoding again after the error "
                     "at timestamp %d", self.stream_id, req.timestamp, self.broken)
            self.reset()
            header = key
        else:
            try:
                header = self.parser.parse(frame)
            except Vp9HeaderError as exc:
                self._break(req)
                raise RequestFailure(errno.EILSEQ, f"frame header: {exc}") from None
        ctrl_value = req.ctrl(V4L2_CID_STATELESS_VP9_FRAME)
        assert ctrl_value is not None  # check_ctrls
        problems = check(vp9_ctrls.Vp9Frame.unpack(ctrl_value.value), header, self.slots)
        if problems:
            self._break(req)
            text = "; ".join(problems)
            log.warning("stream %d, request timestamp %d: V4L2_CID_STATELESS_VP9_FRAME "
                        "contradicts the frame: %s", self.stream_id, req.timestamp, text)
            raise RequestFailure(errno.EINVAL, f"VP9_FRAME contradicts the frame: {text}")
        return self._picture(req, header, frame)

    def _picture(self, req: RequestDecode, h: Vp9FrameHeader, frame: bytes) -> av.VideoFrame:
        try:
            pictures = self._decode(frame)
            if not h.show_existing_frame and not h.show_frame:
                slot = next((i for i in range(NUM_REF_FRAMES)
                             if h.refresh_frame_flags >> i & 1), None)
                self.parser.advance(h)
                self.slots.update(h.refresh_frame_flags, req.timestamp)
                if slot is None:
                    raise RequestFailure(errno.ENODATA, "a hidden frame that refreshes no "
                                         "reference slot: it has no picture")
                pictures += self._decode(show_existing_frame(h.profile, slot))
            else:
                self.parser.advance(h)
                self.slots.update(h.refresh_frame_flags, req.timestamp)
        except av.FFmpegError as exc:
            self._break(req)
            self.decoder = None
            raise RequestFailure(errno.EILSEQ, f"decoding failed: {ffmpeg_text(exc)}") from None
        if len(pictures) != 1:
            self._break(req)
            self.decoder = None
            raise RequestFailure(errno.EILSEQ, f"the decoder gave {len(pictures)} pictures "
                                 "for one frame")
        picture = pictures[0]
        if picture.is_corrupt:
            raise RequestFailure(errno.EILSEQ, "the picture was decoded with errors (concealed)")
        return picture


NAL_AUD = 9
NAL_FILLER = 12
DROPPED_NALS = (NAL_SEI, NAL_AUD, NAL_FILLER)  # carry nothing the decoding process reads
MAX_HELD = 4096  # reference timestamps kept per stream (since the last IDR)


@dataclass(frozen=True)
class H264Controls:
    """A request's H.264 controls, unpacked."""

    sps: Sps
    pps: Pps
    scaling: ScalingMatrix | None      # when the PPS flags a matrix
    decode_params: DecodeParams
    slice_params: SliceParams | None   # when the request set it


def h264_controls(req: RequestDecode) -> H264Controls:
    """The request's controls (check_ctrls vouched for ids and sizes);
    RequestFailure (EINVAL) for a flagged matrix without its control."""
    def value(cid: int) -> bytes:
        ctrl = req.ctrl(cid)
        assert ctrl is not None  # check_ctrls: mandatory
        return bytes(ctrl.value)
    pps = unpack_pps(value(V4L2_CID_STATELESS_H264_PPS))
    scaling = None
    if pps.flags & V4L2_H264_PPS_FLAG_SCALING_MATRIX_PRESENT:
        ctrl = req.ctrl(V4L2_CID_STATELESS_H264_SCALING_MATRIX)
        if ctrl is None:
            raise RequestFailure(errno.EINVAL, "the PPS flags SCALING_MATRIX_PRESENT, the "
                                 "request has no H264_SCALING_MATRIX control")
        scaling = unpack_scaling_matrix(bytes(ctrl.value))
    sp = req.ctrl(V4L2_CID_STATELESS_H264_SLICE_PARAMS)
    return H264Controls(unpack_sps(value(V4L2_CID_STATELESS_H264_SPS)), pps, scaling,
                        DecodeParams.unpack(value(V4L2_CID_STATELESS_H264_DECODE_PARAMS)),
                        SliceParams.unpack(bytes(sp.value)) if sp is not None and sp.in_request
                        else None)


def h264_problems(c: H264Controls, slices: list[SliceHeader]) -> list[str]:
    """Where the controls contradict the picture's slice headers (each parsed
    against the controls' SPS / PPS): only what the bitstream fixes exactly."""
    dp, out = c.decode_params, []
    if c.pps.seq_parameter_set_id != c.sps.seq_parameter_set_id:
        out.append(f"PPS.seq_parameter_set_id {c.pps.seq_parameter_set_id}, SPS."
                   f"seq_parameter_set_id {c.sps.seq_parameter_set_id}")
    idr_flag = bool(dp.flags & V4L2_H264_DECODE_PARAM_FLAG_IDR_PIC)
    for k, h in enumerate(slices):
        at = f"slice {k}: " if len(slices) > 1 else ""
        if h.idr != idr_flag:
            out.append(f"{at}DECODE_PARAMS IDR_PIC {int(idr_flag)}, nal_unit_type "
                       f"{h.nal_unit_type}")
        if h.frame_num != dp.frame_num:
            out.append(f"{at}DECODE_PARAMS.frame_num {dp.frame_num}, the slice's {h.frame_num}")
        if bool(h.nal_ref_idc) != bool(dp.nal_ref_idc):
            out.append(f"{at}DECODE_PARAMS.nal_ref_idc {dp.nal_ref_idc}, the slice's "
                       f"{h.nal_ref_idc}")
        if h.idr and h.idr_pic_id != dp.idr_pic_id:
            out.append(f"{at}DECODE_PARAMS.idr_pic_id {dp.idr_pic_id}, the slice's "
                       f"{h.idr_pic_id}")
        for name in ("pic_order_cnt_lsb", "delta_pic_order_cnt_bottom", "delta_pic_order_cnt0",
                     "delta_pic_order_cnt1", "pic_order_cnt_bit_size",
                     "dec_ref_pic_marking_bit_size"):
            if getattr(h, name) != getattr(dp, name):
                out.append(f"{at}DECODE_PARAMS.{name} {getattr(dp, name)}, the slice's "
                           f"{getattr(h, name)}")
        if h.field_pic_flag != bool(dp.flags & V4L2_H264_DECODE_PARAM_FLAG_FIELD_PIC) or (
                h.bottom_field_flag != bool(dp.flags & V4L2_H264_DECODE_PARAM_FLAG_BOTTOM_FIELD)):
            out.append(f"{at}DECODE_PARAMS FIELD_PIC / BOTTOM_FIELD flags, the slice's "
                       f"field_pic_flag {int(h.field_pic_flag)} / bottom_field_flag "
                       f"{int(h.bottom_field_flag)}")
    if c.sps.pic_order_cnt_type == 0 and slices:
        max_lsb = 1 << (c.sps.log2_max_pic_order_cnt_lsb_minus4 + 4)
        lsb = slices[0].pic_order_cnt_lsb
        if dp.top_field_order_cnt % max_lsb != lsb or (
                slices[0].idr and dp.top_field_order_cnt != lsb):
            out.append(f"DECODE_PARAMS.top_field_order_cnt {dp.top_field_order_cnt} is not "
                       f"PicOrderCntMsb + pic_order_cnt_lsb {lsb} (MaxPicOrderCntLsb {max_lsb})")
        elif dp.bottom_field_order_cnt != dp.top_field_order_cnt + \
                slices[0].delta_pic_order_cnt_bottom:
            out.append(f"DECODE_PARAMS.bottom_field_order_cnt {dp.bottom_field_order_cnt}, "
                       f"top_field_order_cnt + delta_pic_order_cnt_bottom is "
                       f"{dp.top_field_order_cnt + slices[0].delta_pic_order_cnt_bottom}")
    if c.slice_params is not None and slices:
        out += slice_params_problems(c.slice_params, slices[0])
    return out


@dataclass
class H264Stream:
    """One kernel stream of H.264 DECODE_REQUESTs (frame-based, Annex B)."""

    stream_id: int
    order_factory: Callable[[], DecodeOrderH264]
    lock: threading.Lock = field(default_factory=threading.Lock)
    bank: DecodeOrderH264 | None = None
    sent_sps: dict[int, bytes] = field(default_factory=dict)  # id -> SPS control bytes
    sent_pps: dict[int, bytes] = field(default_factory=dict)  # id -> PPS (+ matrix) bytes
    held: dict[int, int] = field(default_factory=dict)        # reference ts -> frame_num
    broken: int | None = None     # timestamp of the request whose frame was not decoded
    need_idr: bool = True         # nothing decoded since the start / RESET
    requests: int = 0
    pictures: int = 0
    errors: int = 0
    resets: int = 0

    codec: ClassVar[Codec] = Codec.H264

    def reset(self) -> None:
        """A fresh decoder bank, parameter sets and references; the next frame
        must be an IDR."""
        self.bank = None
        self.sent_sps = {}
        self.sent_pps = {}
        self.held = {}
        self.broken = None
        self.need_idr = True

    def _break(self, req: RequestDecode) -> None:
        if self.broken is None:
            self.broken = req.timestamp

    def decode(self, req: RequestDecode, bitstream: bytes) -> av.VideoFrame:
        """The picture of the request's frame (RequestFailure if none)."""
        if req.flags & REQUEST_HOLD:
            raise RequestFailure(errno.EOPNOTSUPP, "H.264 slices of one frame in several "
                                 "requests (V4L2_BUF_FLAG_M2M_HOLD_CAPTURE_BUF) are not "
                                 "supported: one request per frame (frame-based decode mode)")
        c = h264_controls(req)
        units = self._slice_units(bitstream)
        idr = units[0].nal_type == NAL_IDR
        if not idr and (self.broken is not None or self.need_idr):
            why = (f"the frame of timestamp {self.broken} was not decoded"
                   if self.broken is not None else "no IDR frame since the stream started")
            raise RequestFailure(errno.EILSEQ, f"{why}: waiting for an IDR frame")
        problems: list[str] = []
        slices: list[SliceHeader] = []
        for k, unit in enumerate(units):
            try:
                slices.append(parse_slice_header(unit.nal, c.sps, c.pps))
            except H264SyntaxError as exc:
                problems.append(f"slice {k}: its header does not parse against the SPS / PPS "
                                f"controls ({exc})")
        if not problems:
            problems = h264_problems(c, slices)
        if not problems and not idr:
            problems = self._reference_problems(c.decode_params)
        if not problems and slices[0].field_pic_flag:
            raise RequestFailure(errno.EOPNOTSUPP, "field pictures (two requests per frame) "
                                 "are not supported: frames only")
        if problems:
            self._break(req)
            text = "; ".join(problems)
            log.warning("stream %d, request timestamp %d: the H.264 controls contradict the "
                        "frame: %s", self.stream_id, req.timestamp, text)
            raise RequestFailure(errno.EINVAL, f"the H.264 controls contradict the frame: "
                                 f"{text}")
        if idr:
            if self.broken is not None:
                log.info("stream %d: IDR frame at timestamp %d, decoding again after the "
                         "error at timestamp %d", self.stream_id, req.timestamp, self.broken)
                self.reset()
            self.sent_sps, self.sent_pps, self.held = {}, {}, {}
        try:
            head = self._parameter_sets(c)
        except ValueError as exc:
            self._break(req)
            raise RequestFailure(errno.EINVAL, f"the SPS / PPS controls cannot be decoded: "
                                 f"{exc}") from None
        packet = head + b"".join(u.prefix + u.nal for u in units)
        dp = c.decode_params
        try:
            if self.bank is None:
                self.bank = self.order_factory()
            picture = self.bank.decode(packet, min(dp.top_field_order_cnt,
                                                   dp.bottom_field_order_cnt), idr=idr)
        except (av.FFmpegError, OrderError) as exc:
            self._break(req)
            self.bank = None
            text = ffmpeg_text(exc) if isinstance(exc, av.FFmpegError) else str(exc)
            raise RequestFailure(errno.EILSEQ, f"decoding failed: {text}") from None
        self.need_idr = False
        if slices[0].nal_ref_idc:
            self.held[req.timestamp] = dp.frame_num
            if len(self.held) > MAX_HELD:
                del self.held[next(iter(self.held))]
        if picture.is_corrupt:
            raise RequestFailure(errno.EILSEQ, "the picture was decoded with errors (concealed)")
        return picture

    @staticmethod
    def _slice_units(bitstream: bytes) -> list[Unit]:
        """The OUTPUT buffer's slice NAL units (SEI, AUD and filler dropped)."""
        try:
            units = split_annexb(bitstream)
        except H264SyntaxError as exc:
            raise RequestFailure(errno.EINVAL, f"OUTPUT buffer: {exc} (the node's "
                                 "H264_SLICE format takes Annex-B start codes)") from None
        slices = []
        for unit in units:
            kind = unit.nal_type if unit.nal else -1
            if kind in (NAL_SLICE, NAL_IDR):
                slices.append(unit)
            elif kind not in DROPPED_NALS:
                raise RequestFailure(errno.EINVAL, (
                    f"OUTPUT buffer: NAL unit type {kind}; a V4L2_PIX_FMT_H264_SLICE buffer "
                    "holds the slices of one frame (parameter sets are controls)"))
        if not slices:
            raise RequestFailure(errno.EINVAL, "OUTPUT buffer: no slice NAL unit")
        if len({u.nal_type for u in slices}) != 1:
            raise RequestFailure(errno.EINVAL, "OUTPUT buffer: IDR and non-IDR slices in "
                                 "one frame")
        return slices

    def _reference_problems(self, dp: DecodeParams) -> list[str]:
        """dpb[] entries in use (VALID | ACTIVE) must name reference pictures this
        stream decoded since the last IDR; a short-term one with its frame_num."""
        out = []
        used = V4L2_H264_DPB_ENTRY_FLAG_VALID | V4L2_H264_DPB_ENTRY_FLAG_ACTIVE
        for i, e in enumerate(dp.dpb):
            if e.flags & used != used:
                continue
            frame_num = self.held.get(e.reference_ts)
            if frame_num is None:
                out.append(f"dpb[{i}].reference_ts {e.reference_ts}: no reference picture of "
                           "that timestamp was decoded since the last IDR")
            elif not e.flags & V4L2_H264_DPB_ENTRY_FLAG_LONG_TERM and e.frame_num != frame_num:
                out.append(f"dpb[{i}].frame_num {e.frame_num}, the picture of timestamp "
                           f"{e.reference_ts} has frame_num {frame_num}")
        return out

    def _parameter_sets(self, c: H264Controls) -> bytes:
        """SPS / PPS NAL units rebuilt from the controls, for those not sent to the
        decoder since the last IDR (or changed since): the SPS without a matrix, the
        PPS with the control's matrix written explicitly (h264_rebuild.pps_nal)."""
        head = b""
        sps_bytes = pack_sps(c.sps)
        if self.sent_sps.get(c.sps.seq_parameter_set_id) != sps_bytes:
            head += sps_nal(c.sps)
            self.sent_sps[c.sps.seq_parameter_set_id] = sps_bytes
            self.sent_pps = {}  # a PPS is parsed against its SPS: send them again
        pps_bytes = pack_pps(c.pps) + (pack_scaling_matrix(c.scaling)
                                       if c.scaling is not None else b"")
        if self.sent_pps.get(c.pps.pic_parameter_set_id) != pps_bytes:
            head += pps_nal(c.pps, c.sps, c.scaling)
            self.sent_pps[c.pps.pic_parameter_set_id] = pps_bytes
        return head


Stream = Vp9Stream | H264Stream | Av1Stream


class StatelessHandler:
    """DECODE_REQUEST -> struct daedalus_request_decode_resp, state per stream.

    A DeviceUser (daedalus.dispatch.registry): the job's buffers come through
    the device daedalusd attaches."""

    OPCODES: ClassVar[tuple[int, ...]] = (MsgType.DECODE_REQUEST,)
    PHASE: ClassVar[tuple[int, int]] = (8, 9)
    NAME: ClassVar[str] = "stateless"

    def __init__(self, decoder_factory: DecoderFactory = create_decoder,
                 max_streams: int = MAX_STREAMS,
                 h264_order: Callable[[], DecodeOrderH264] = DecodeOrderH264) -> None:
        self._factory = decoder_factory
        self._h264_order = h264_order
        self._max_streams = max_streams
        self._lock = threading.Lock()  # protects _streams
        self._streams: dict[int, Stream] = {}
        self._device: Device | None = None
        kernels.table()   # chosen (and logged) at start-up, as phase 8.5's handler does
        delivered()       # the CAPTURE layouts' entry points, read before privileges drop

    # -- the daemon's entry points ---------------------------------------------

    def attach_device(self, device: Device) -> None:
        self._device = device

    def order_key(self, header: Header, payload: bytes) -> int | None:
        """The stream a DECODE_REQUEST names (None: too short, ``handle`` refuses it)."""
        return request_stream(header, payload) if header.opcode == MsgType.DECODE_REQUEST else None

    def handle(self, header: Header, payload: bytes) -> tuple[int, bytes]:
        if header.opcode != MsgType.DECODE_REQUEST:
            return (errno.EOPNOTSUPP,
                    f"the stateless handler does not serve type {header.type}".encode())
        return 0, self.decode_request(payload, header.cookie)

    def decode_request(self, payload: bytes | bytearray | memoryview, cookie: int) -> bytes:
        """A DECODE_REQUEST payload in, its answer's payload out (never raises
        for anything the request, its buffers or the bitstream hold)."""
        try:
            req = parse_request_decode(payload)
            validate_request_decode(req)
            check_ctrls(req)
        except (ProtocolError, RequestFailure) as exc:
            log.warning("malformed DECODE_REQUEST (cookie %d): %s", cookie, exc)
            return pack_request_decode_resp(errno.EINVAL, 0, encode_message(str(exc)))
        try:
            stream = self._stream_for(req)
            with stream.lock:
                stream.requests += 1
                try:
                    if req.reset:
                        stream.reset()
                        stream.resets += 1
                    bitstream = self._read_output(req, cookie)
                    picture = stream.decode(req, bitstream)
                    self._write_capture(picture, req, cookie)
                except RequestFailure:
                    stream.errors += 1
                    raise
                stream.pictures += 1
        except RequestFailure as exc:
            if exc.error != errno.EINVAL or "contradict" not in exc.message:
                log.warning("stream %d, request timestamp %d: %s", req.stream_id,
                            req.timestamp, exc.message)
            return pack_request_decode_resp(exc.error, 0, encode_message(exc.message))
        return pack_request_decode_resp(0, req.sizeimage)

    def _stream_for(self, req: RequestDecode) -> Stream:
        codec = Codec(req.codec)
        with self._lock:
            stream = self._streams.get(req.stream_id)
            if stream is None:
                if len(self._streams) >= self._max_streams:
                    raise RequestFailure(errno.EMFILE, f"{len(self._streams)} streams open, "
                                         f"at most {self._max_streams}")
                stream = self._new_stream(req.stream_id, codec)
                self._streams[req.stream_id] = stream
            elif stream.codec != codec:
                raise RequestFailure(errno.EINVAL, f"stream {req.stream_id} is "
                                     f"{stream.codec.name}, this request {codec.name}")
            return stream

    def _new_stream(self, stream_id: int, codec: Codec) -> Stream:
        if codec == Codec.VP9:
            return Vp9Stream(stream_id, self._factory)
        if codec == Codec.AV1:
            return Av1Stream(stream_id, self._factory)
        return H264Stream(stream_id, self._h264_order)

    # -- the buffers -------------------------------------------------------------

    def _device_or_fail(self) -> Device:
        if self._device is None:
            raise RequestFailure(errno.EOPNOTSUPP, "no device to map the job's buffers "
                                 "through (not attached by daedalusd)")
        return self._device

    def _read_output(self, req: RequestDecode, cookie: int) -> bytes:
        """The bitstream: copied out of the OUTPUT buffer (index 0), then the
        IN_FLIGHT check."""
        device = self._device_or_fail()
        try:
            with device.get_dmabuf(cookie, 0) as buf:
                end = req.bitstream_offset + req.bitstream_len
                if end > buf.size:
                    raise RequestFailure(errno.EINVAL, (
                        f"OUTPUT buffer: {req.bitstream_len} bytes at offset "
                        f"{req.bitstream_offset} run past its {buf.size} bytes"))
                if not req.bitstream_len:
                    raise RequestFailure(errno.EINVAL, "OUTPUT buffer: no bitstream")
                with buf.access() as data:
                    bitstream = bytes(data[req.bitstream_offset:end])
            if not device.in_flight(cookie):
                raise RequestFailure(errno.ETIMEDOUT, (
                    "OUTPUT buffer: the kernel gave up on this request while its bytes were "
                    "read (the buffer may hold the next packet by now); not decoded"))
        except DmaBufError as exc:
            raise RequestFailure(exc.errno or errno.EIO, f"OUTPUT buffer: {exc.message}") from None
        return bitstream

    def _write_capture(self, picture: av.VideoFrame, req: RequestDecode, cookie: int) -> None:
        """The picture, laid out as the request says, into the CAPTURE buffer (index 1)."""
        try:
            pixfmt = layout_for(picture)
        except UnsupportedLayout as exc:
            raise RequestFailure(errno.EOPNOTSUPP, str(exc)) from None
        if pixfmt != req.pixfmt:
            raise RequestFailure(errno.EOPNOTSUPP, (
                f"a {pixfmt.name} picture, the CAPTURE format is {PixFmt(req.pixfmt).name}"))
        if picture.width > req.width or picture.height > req.height:
            raise RequestFailure(errno.EINVAL, (
                f"a {picture.width}x{picture.height} picture, the CAPTURE format is "
                f"{req.width}x{req.height}"))
        reason = fits(Geometry(picture.width, picture.height, pixfmt), req.bytesperline,
                      req.height)
        size = buffer_size(req.bytesperline, req.height, pixfmt)
        if reason is None and size != req.sizeimage:
            reason = (f"sizeimage {req.sizeimage}, but {req.bytesperline} x {req.height} "
                      f"{pixfmt.name} takes {size} bytes")
        if reason is not None:
            raise RequestFailure(errno.EINVAL, f"CAPTURE layout: {reason}")
        device = self._device_or_fail()
        try:
            with device.get_dmabuf(cookie, 1) as buf:
                if size > buf.size:
                    raise RequestFailure(errno.EINVAL, (
                        f"CAPTURE buffer of {buf.size} bytes, sizeimage is {size}"))
                with buf.access(write=True) as data:
                    kernels.table().place(picture, pixfmt, req.bytesperline, req.height,
                                          np.frombuffer(data, np.uint8, count=size),
                                          zeroed=False)
        except DmaBufError as exc:
            raise RequestFailure(exc.errno or errno.EIO,
                                 f"CAPTURE buffer: {exc.message}") from None

    # -- CLOSE_STREAM ------------------------------------------------------------

    def close_stream(self, stream_id: int) -> None:
        with self._lock:
            stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        with stream.lock:  # waits for a request still running on it
            stream.reset()
        log.info("stream %d closed: %d requests, %d pictures, %d errors, %d resets",
                 stream_id, stream.requests, stream.pictures, stream.errors, stream.resets)

    def close(self) -> None:
        with self._lock:
            ids = list(self._streams)
        for stream_id in ids:
            self.close_stream(stream_id)

    # -- introspection (tests, logs) ---------------------------------------------

    def stream_ids(self) -> list[int]:
        with self._lock:
            return sorted(self._streams)

    def stream(self, stream_id: int) -> Stream | None:
        with self._lock:
            return self._streams.get(stream_id)

