"""One kernel stream of AV1 DECODE_REQUESTs (``V4L2_PIX_FMT_AV1_FRAME``): the daemon's state.

Shaped like the handler's ``H264Stream``. A request carries (checked by
``handler.check_ctrls`` for ids, sizes and element counts) the node's AV1
controls: ``V4L2_CID_STATELESS_AV1_SEQUENCE`` (with its current value every
time), ``..._FRAME`` and ``..._TILE_GROUP_ENTRY`` (a dynamic array, one
16-byte entry per tile; ``check_ctrls`` insists both are flagged
DAEDALUS_CTRL_IN_REQUEST: the request set them), and ``..._FILM_GRAIN``,
read only when the sequence flags FILM_GRAIN_PARAMS_PRESENT (V4L2
semantics: the control keeps its value when a request does not set it).
The OUTPUT buffer holds one frame; only the tile bytes the entries name are
read (``tile_offset`` counts from the start of the bitstream,
``bitstream_offset`` of the buffer).

Per request (``Av1Stream.decode``):

1. a frame other than a KEY_FRAME while the stream waits for one (since its
   start or RESET, or after an error) is EILSEQ, not decoded; a key frame
   after an error starts a fresh decoder and rebuilder;
2. the references: for an inter / switch frame, each of the 7 slots
   ``ref_frame_idx[]`` names must hold the picture of the timestamp
   ``reference_frame_ts[]`` gives it (``Av1Rebuilder.reference_problems``,
   against the slots this stream decoded); the tile entries must cover every
   tile of ``tile_info`` once, inside the bitstream. A mismatch is EINVAL
   (references: with one warning line naming the stream, the request's
   timestamp and every problem), the frame is not decoded and the stream
   waits for a key frame;
3. ``Av1Rebuilder.temporal_unit`` writes the temporal unit (sequence header,
   frame header and tile group rebuilt from the controls; controls that
   describe no decodable frame: EINVAL, as 2) and the decoder
   (``create_decoder(Codec.AV1)``, libdav1d: one temporal unit in, its
   picture out) decodes it. A shown frame gives its picture; a hidden frame
   (show_frame 0) is decoded, then a synthesised show_existing_frame of the
   first slot it refreshed makes the decoder output its picture without
   changing its state (a non-key frame shown again refreshes nothing, AV1
   7.21). A hidden frame that refreshes no slot, and a hidden KEY_FRAME
   (showing one refreshes every slot, which the client's stream has not
   done yet), are decoded and answered ENODATA: no picture to give. PyAV
   errors or not one picture where one was due: EILSEQ, the stream waits for
   a key frame; a picture flagged corrupt: EILSEQ.

The client's own show_existing_frame makes no request (GStreamer re-shows
the slot's picture). Showing a key frame again refreshes every slot (7.21);
the daemon does not see it, so the next inter frame's references name
timestamps its slots do not hold: EINVAL, then the next key frame.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import threading
from dataclasses import dataclass, field
from typing import ClassVar

import av
from av.video.codeccontext import VideoCodecContext

from daedalus.codec.session import DecoderFactory, ffmpeg_text
from daedalus.proto import Codec, RequestDecode
from daedalus.stateless import av1_ctrls as C
from daedalus.stateless.av1_fill import KEY_FRAME, NUM_REF_FRAMES
from daedalus.stateless.av1_rebuild import Av1Rebuilder, ControlError
from daedalus.stateless.failure import RequestFailure

log = logging.getLogger("daedalus.stateless")

SEQUENCE_SIZE = ctypes.sizeof(C.Av1Sequence)
FRAME_SIZE = ctypes.sizeof(C.Av1Frame)
FILM_GRAIN_SIZE = ctypes.sizeof(C.Av1FilmGrain)
TILE_GROUP_ENTRY_SIZE = ctypes.sizeof(C.Av1TileGroupEntry)


@dataclass
class Av1Controls:
    """A request's AV1 controls, unpacked."""

    sequence: C.Av1Sequence
    frame: C.Av1Frame
    film_grain: C.Av1FilmGrain | None    # when the sequence has film grain
    entries: list[C.Av1TileGroupEntry]


def av1_controls(req: RequestDecode) -> Av1Controls:
    """The request's controls (``check_ctrls`` vouched for ids, sizes, element
    counts, and FRAME / TILE_GROUP_ENTRY set by the request itself)."""
    def value(cid: int, name: str) -> bytes:
        ctrl = req.ctrl(cid)
        if ctrl is None:
            raise RequestFailure(errno.EINVAL, f"control AV1_{name} missing")
        return bytes(ctrl.value)
    try:
        seq = C.unpack(C.Av1Sequence, value(C.V4L2_CID_STATELESS_AV1_SEQUENCE, "SEQUENCE"))
        frame = C.unpack(C.Av1Frame, value(C.V4L2_CID_STATELESS_AV1_FRAME, "FRAME"))
        entries = C.unpack_entries(value(C.V4L2_CID_STATELESS_AV1_TILE_GROUP_ENTRY,
                                         "TILE_GROUP_ENTRY"))
        grain = None
        if seq.flags & C.V4L2_AV1_SEQUENCE_FLAG_FILM_GRAIN_PARAMS_PRESENT:
            grain = C.unpack(C.Av1FilmGrain, value(C.V4L2_CID_STATELESS_AV1_FILM_GRAIN,
                                                   "FILM_GRAIN"))
    except ValueError as exc:   # sizes: check_ctrls should have caught them
        raise RequestFailure(errno.EINVAL, str(exc)) from None
    if not entries:
        raise RequestFailure(errno.EINVAL, "control AV1_TILE_GROUP_ENTRY has no entry")
    return Av1Controls(seq, frame, grain, entries)


@dataclass
class Av1Stream:
    """One kernel stream of AV1 DECODE_REQUESTs (see the module doc)."""

    stream_id: int
    factory: DecoderFactory
    lock: threading.Lock = field(default_factory=threading.Lock)
    decoder: VideoCodecContext | None = None
    rebuilder: Av1Rebuilder = field(default_factory=Av1Rebuilder)
    broken: int | None = None     # timestamp of the request whose frame was not decoded
    need_key: bool = True         # nothing decoded since the start / RESET
    requests: int = 0
    pictures: int = 0
    errors: int = 0
    resets: int = 0

    codec: ClassVar[Codec] = Codec.AV1

    def reset(self) -> None:
        """A fresh decoder (made at first use) and rebuilder; the next frame
        must be a key frame."""
        self.decoder = None
        self.rebuilder = Av1Rebuilder()
        self.broken = None
        self.need_key = True

    def _break(self, req: RequestDecode) -> None:
        if self.broken is None:
            self.broken = req.timestamp

    def _decode(self, data: bytes) -> list[av.VideoFrame]:
        if self.decoder is None:
            self.decoder = self.factory(Codec.AV1)
        return list(self.decoder.decode(av.Packet(data)))

    def decode(self, req: RequestDecode, bitstream: bytes) -> av.VideoFrame:
        """The picture of the request's frame (RequestFailure if none)."""
        c = av1_controls(req)
        f = c.frame
        key = f.frame_type == KEY_FRAME
        if not key and (self.broken is not None or self.need_key):
            why = (f"the frame of timestamp {self.broken} was not decoded"
                   if self.broken is not None else "no key frame since the stream started")
            raise RequestFailure(errno.EILSEQ, f"{why}: waiting for a key frame")
        if key and self.broken is not None:
            log.info("stream %d: key frame at timestamp %d, decoding again after the error "
                     "at timestamp %d", self.stream_id, req.timestamp, self.broken)
            self.reset()
        problems = self.rebuilder.reference_problems(f)
        if problems:
            self._break(req)
            text = "; ".join(problems)
            log.warning("stream %d, request timestamp %d: the AV1 controls contradict the "
                        "stream's references: %s", self.stream_id, req.timestamp, text)
            raise RequestFailure(errno.EINVAL, f"the AV1 controls contradict the stream's "
                                 f"references: {text}")
        try:
            self.rebuilder.tile_group(f, c.entries, bitstream)   # the entries, before any state
            tu = self.rebuilder.temporal_unit(c.sequence, f, c.film_grain, c.entries,
                                              bitstream, req.timestamp)
        except ControlError as exc:
            self._break(req)
            raise RequestFailure(errno.EINVAL, f"AV1 controls: {exc}") from None
        shown = bool(f.flags & C.V4L2_AV1_FRAME_FLAG_SHOW_FRAME)
        try:
            pictures = self._decode(tu)
            if not shown and pictures:
                raise RequestFailure(errno.EILSEQ, "the decoder gave a picture for a hidden "
                                     "frame")
            if not shown:
                slot = next((i for i in range(NUM_REF_FRAMES)
                             if f.refresh_frame_flags >> i & 1), None)
                if slot is None or key:
                    self.need_key = False
                    raise RequestFailure(errno.ENODATA, (
                        "a hidden frame that refreshes no reference slot: it has no picture"
                        if slot is None else "a hidden key frame: showing it refreshes "
                        "every slot, its picture is not given before the stream shows it"))
                pictures = self._decode(self.rebuilder.show_existing(slot))
        except av.FFmpegError as exc:
            self._break(req)
            self.decoder = None
            raise RequestFailure(errno.EILSEQ, f"decoding failed: {ffmpeg_text(exc)}") from None
        except RequestFailure as exc:
            if exc.error != errno.ENODATA:
                self._break(req)
                self.decoder = None
            raise
        if len(pictures) != 1:
            self._break(req)
            self.decoder = None
            raise RequestFailure(errno.EILSEQ, f"the decoder gave {len(pictures)} pictures "
                                 "for one frame")
        self.need_key = False
        picture = pictures[0]
        if picture.is_corrupt:
            raise RequestFailure(errno.EILSEQ, "the picture was decoded with errors (concealed)")
        return picture
