"""The DECODE handler: one PyAV decoder per kernel stream.

Registered in the ``daedalus.handlers`` entry-point group as ``decode``; it
answers REQ_DECODE with RESP_FRAME, and drops a stream's decoder on
CLOSE_STREAM (``close_stream``: daedalusd answers CLOSE_STREAM itself after
telling every handler that keeps per-stream state).

Per stream (``stream_id`` of the requests) it keeps one FFmpeg decoder
(``av.CodecContext``, made by daedalus.codec.session's ``create_decoder``
from the codec table daedalus.proto.codecs) with its reference frames from
one request to the next (the shared part: ``DecoderSession``):

- created on the first request with a bitstream; the stream's codec is fixed
  from its first request on;
- ``DAEDALUS_DECODE_FLUSH`` drains it (the frames it still holds come back)
  and drops it: the next request starts a fresh decoder, i.e. a new
  sequence that begins with a keyframe;
- dropped by CLOSE_STREAM (an unknown stream is not an error: the kernel
  closes streams that never decoded anything);
- kept after a bitstream error, so decoding picks up again at the next
  keyframe with the references it has; replaced when it fails on a packet
  that a fresh decoder decodes as a clean keyframe (it is wedged: seen with
  libdav1d after garbage input), and dropped after an FFmpeg error that is
  not invalid data (recreated by the next request).

Nothing in a request is trusted: a request that does not add up
(``validate_decode_req``, a codec change, too many streams) gets
DECODE_ERROR / EINVAL (EMFILE for too many streams) and a message; corrupt
bitstream gets DECODE_ERROR / EILSEQ, so does a frame the decoder flags as
decoded with errors (concealed). An error response carries no frames (the
kernel accepts none with DECODE_ERROR): frames decoded in the same request are
dropped, and the message says how many. Every output frame is packed tightly
as NV12 / P010 and digested (frames.py); a frame those cannot carry exactly
(4:2:2 / 4:4:4 chroma, more than 10 bits) is not converted: the request gets
DECODE_ERROR / EOPNOTSUPP naming the layout (logged once per stream).

Timestamps: the decoder sees a private, increasing packet number as pts; a
frame's pts maps back to the timestamp of the request that carried it (so
H.264 reordering reports each frame with its own request's timestamp, and
any 64-bit timestamp survives). A frame without a known pts gets the current
request's timestamp.

The daemon calls ``handle`` from its executor threads: the table of streams
has a lock and each stream has its own, so streams decode in parallel and one
stream's requests one at a time. In the order the kernel sent them:
``order_key`` names the request's stream, and daedalusd starts a stream's
request only after the one read before it returned (after a lost answer the
kernel's next request may be read while the earlier one still waits for a
worker).
"""

from __future__ import annotations

import errno
import logging
import threading
from dataclasses import dataclass
from typing import ClassVar

import av

from daedalus.codec.session import (
    MAX_STREAMS,
    DecoderFactory,
    DecoderSession,
    answer_decode_req,
    create_decoder,
    decode_req_stream,
    ffmpeg_text,
    open_stream,
)
from daedalus.proto import (
    MAX_FRAMES,
    MAX_HEIGHT,
    MAX_WIDTH,
    DecodeReq,
    FrameInfo,
    Header,
    MsgType,
)
from daedalus.roundtrip.frames import UnsupportedLayout, pack

log = logging.getLogger("daedalus.roundtrip")


@dataclass
class StreamState(DecoderSession):
    """One kernel stream of REQ_DECODE: its codec, decoder and bookkeeping."""

    LOG: ClassVar[logging.Logger] = log

    requests: int = 0
    frames: int = 0

    def drop_decoder(self) -> None:
        self.decoder = None
        self.timestamps.clear()

    def run(self, req: DecodeReq, bitstream: memoryview,
            factory: DecoderFactory) -> list[FrameInfo]:
        """Decode one request's bitstream (and drain on FLUSH); the frames it
        released, or DecodeFailure."""
        self.requests += 1
        try:
            decoded = self._decode(bytes(bitstream), req.timestamp, factory) if len(
                bitstream) else []
            if req.flush and self.decoder is not None:
                decoded += self.decoder.decode(None)
            return self._report(req, decoded)
        except av.error.InvalidDataError as exc:
            # Corrupt bitstream: keep the decoder and its references; the next
            # keyframe brings it back.
            raise self._failed(errno.EILSEQ, f"invalid bitstream: {ffmpeg_text(exc)}") from exc
        except av.error.MemoryError as exc:
            self.drop_decoder()
            raise self._failed(errno.ENOMEM,
                               f"decoder out of memory: {ffmpeg_text(exc)}") from exc
        except av.FFmpegError as exc:
            self.drop_decoder()  # not plain bad data: start over with a fresh decoder
            raise self._failed(errno.EILSEQ, f"decoder failed ({type(exc).__name__}): "
                                             f"{ffmpeg_text(exc)}; decoder reset") from exc
        finally:
            if req.flush:
                self.drop_decoder()

    def _decode(self, data: bytes, timestamp: int,
                factory: DecoderFactory) -> list[av.VideoFrame]:
        decoder = self._current_decoder(factory)
        number = self._number(timestamp)
        try:
            return list(decoder.decode(self._packet(data, number)))
        except av.error.InvalidDataError:
            frames = self._restart_at_keyframe(data, number, factory)
            if frames is None:
                raise
            return frames

    def _report(self, req: DecodeReq, decoded: list[av.VideoFrame]) -> list[FrameInfo]:
        if len(decoded) > MAX_FRAMES:
            raise self._failed(errno.EOVERFLOW, f"the decoder released {len(decoded)} frames "
                               f"for one request, a RESP_FRAME holds at most {MAX_FRAMES}; "
                               "frames dropped")
        infos: list[FrameInfo] = []
        for n, frame in enumerate(decoded):
            if frame.is_corrupt:
                raise self._failed(errno.EILSEQ, f"frame {n + 1} of {len(decoded)} decoded "
                                   "with errors (concealed); "
                                   f"{len(decoded)} frame(s) of this request dropped")
            try:
                packed = pack(frame)
            except UnsupportedLayout as exc:  # 4:2:2 / 4:4:4: refused, not converted
                raise self._refuse(str(exc)) from None
            if not (0 < packed.width <= MAX_WIDTH and 0 < packed.height <= MAX_HEIGHT):
                raise self._failed(errno.EFBIG, f"frame of {packed.width}x{packed.height} "
                                   f"exceeds {MAX_WIDTH}x{MAX_HEIGHT}")
            infos.append(packed.info(self._timestamp(packed, req.timestamp)))
        self.frames += len(infos)
        return infos


class DecodeHandler:
    """REQ_DECODE -> RESP_FRAME, one decoder per stream; a StreamOwner."""

    OPCODES: ClassVar[tuple[int, ...]] = (MsgType.DECODE,)
    PHASE: ClassVar[tuple[int, int]] = (8, 4)
    NAME: ClassVar[str] = "decode"

    def __init__(self, decoder_factory: DecoderFactory = create_decoder,
                 max_streams: int = MAX_STREAMS) -> None:
        self._factory = decoder_factory
        self._max_streams = max_streams
        self._lock = threading.Lock()  # protects _streams
        self._streams: dict[int, StreamState] = {}

    # -- the daemon's entry point ---------------------------------------------

    def handle(self, header: Header, payload: bytes) -> tuple[int, bytes]:
        if header.opcode == MsgType.DECODE:
            return 0, self.decode(payload)
        return errno.EOPNOTSUPP, f"the decode handler does not serve type {header.type}".encode()

    def order_key(self, header: Header, payload: bytes) -> int | None:
        """The stream a REQ_DECODE names (None if the payload is too short:
        ``handle`` refuses it): daedalusd runs one stream's requests in the
        order it read them (daedalus.dispatch.registry's ``Ordered``)."""
        return decode_req_stream(payload) if header.opcode == MsgType.DECODE else None

    # -- REQ_DECODE -----------------------------------------------------------

    def decode(self, payload: bytes | bytearray | memoryview) -> bytes:
        """A REQ_DECODE payload in, its RESP_FRAME payload out (never raises for
        anything the request or the bitstream holds)."""
        return answer_decode_req(
            payload, "REQ_DECODE", self._stream_for,
            lambda state, req, bitstream: state.run(req, bitstream, self._factory),
            StreamState.drop_decoder, log)

    def _stream_for(self, req: DecodeReq) -> StreamState:
        return open_stream(self._streams, self._lock, req, "REQ_DECODE",
                           lambda stream_id, codec: StreamState(stream_id=stream_id,
                                                                codec=codec),
                           max_streams=self._max_streams, logger=log)

    # -- CLOSE_STREAM (daedalusd calls every handler's close_stream) -----------

    def close_stream(self, stream_id: int) -> None:
        """Drop the stream's decoder (an unknown stream is not an error: the
        kernel closes streams that never decoded anything)."""
        with self._lock:
            state = self._streams.pop(stream_id, None)
        if state is None:
            log.debug("CLOSE_STREAM of stream %d, which has no DECODE decoder", stream_id)
            return
        with state.lock:  # waits for a request still decoding on it
            state.drop_decoder()
        log.info("stream %d closed: %d requests, %d frames, %d errors", stream_id,
                 state.requests, state.frames, state.errors)

    # -- introspection (tests, logs) ------------------------------------------

    def stream_ids(self) -> list[int]:
        with self._lock:
            return sorted(self._streams)

    def stream(self, stream_id: int) -> StreamState | None:
        with self._lock:
            return self._streams.get(stream_id)
