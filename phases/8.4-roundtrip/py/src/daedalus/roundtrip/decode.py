"""The DECODE handler: one PyAV decoder per kernel stream.

Registered in the ``daedalus.handlers`` entry-point group as ``decode``; it
answers REQ_DECODE with RESP_FRAME, and drops a stream's decoder on
CLOSE_STREAM (``close_stream``: daedalusd answers CLOSE_STREAM itself after
telling every handler that keeps per-stream state).

Per stream (``stream_id`` of the requests) it keeps one FFmpeg decoder
(``av.CodecContext``: the native ``vp9`` and ``h264`` decoders, ``libdav1d``
for AV1) with its reference frames from one request to the next:

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
dropped, and the message says how many. Every output frame is converted to
NV12 / P010, packed tightly and digested (frames.py).

Timestamps: the decoder sees a private, increasing packet number as pts; a
frame's pts maps back to the timestamp of the request that carried it (so
H.264 reordering reports each frame with its own request's timestamp, and
any 64-bit timestamp survives). A frame without a known pts gets the current
request's timestamp.

The daemon calls ``handle`` from its executor threads: the table of streams
has a lock and each stream has its own, so streams decode in parallel and one
stream's requests one at a time (in the order the kernel sends them, one at a
time per stream).
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar

import av
from av.video.codeccontext import VideoCodecContext

from daedalus.proto import (
    DECODE_FLAGS,
    MAX_FRAMES,
    Codec,
    DecodeReq,
    DecodeStatus,
    FrameInfo,
    Header,
    MsgType,
    ProtocolError,
    encode_message,
    pack_frame_resp,
    parse_decode_req,
    validate_decode_req,
)
from daedalus.roundtrip.frames import PackedFrame, pack

log = logging.getLogger("daedalus.roundtrip")

# FFmpeg decoder (PyAV codec name) per protocol codec. FFmpeg's native "av1"
# decoder only drives hardware accelerators; libdav1d decodes in software.
DECODERS: dict[Codec, str] = {Codec.VP9: "vp9", Codec.H264: "h264", Codec.AV1: "libdav1d"}
# libdav1d holds frames back for frame threading by default; one request in,
# its frame out is what a memory-to-memory decoder wants.
DECODER_OPTIONS: dict[Codec, dict[str, str]] = {Codec.AV1: {"max_frame_delay": "1"}}

# The kernel refuses frames beyond its CAPTURE limits (DAEDALUS_MAX_WIDTH /
# DAEDALUS_MAX_HEIGHT in phases/8.1-skeleton/kernel/daedalus.h; not part of
# the protocol header): a RESP_FRAME with such a frame would be rejected and
# its request would time out, so they are reported as errors instead.
MAX_WIDTH = 8192
MAX_HEIGHT = 4352

MAX_STREAMS = 64          # decoders alive at once (the kernel closes what it opens)
TIMESTAMP_WINDOW = 1024   # packets whose timestamps are remembered for late frames


class DecodeFailure(Exception):
    """A request that ends in DECODE_ERROR with *error* (a positive errno)."""

    def __init__(self, error: int, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message


def error_response(error: int, message: str) -> bytes:
    return pack_frame_resp(DecodeStatus.ERROR, error, (), encode_message(message))


class DecodingStream(Protocol):
    """What answer_decode_req and open_stream need of a handler's per-stream state."""

    codec: Codec
    lock: threading.Lock
    errors: int


StreamT = TypeVar("StreamT", bound=DecodingStream)


def open_stream(streams: dict[int, StreamT], lock: threading.Lock, req: DecodeReq,
                kind: str, make: Callable[[int, Codec], StreamT], *, max_streams: int,
                logger: logging.Logger) -> StreamT:
    """The stream *req* names, from *streams* (guarded by *lock*), made with
    *make* on its first request. At most *max_streams* are open (DecodeFailure
    EMFILE beyond); a stream's codec never changes (ProtocolError)."""
    codec = Codec(req.codec)
    with lock:
        stream = streams.get(req.stream_id)
        if stream is None:
            if len(streams) >= max_streams:
                raise DecodeFailure(errno.EMFILE, f"too many streams: {len(streams)} "
                                    "open (CLOSE_STREAM frees them)")
            stream = make(req.stream_id, codec)
            streams[req.stream_id] = stream
            logger.info("stream %d opened for %s (%s, decoder %s)", req.stream_id, kind,
                        codec.name, DECODERS[codec])
        elif stream.codec != codec:
            raise ProtocolError(f"stream {req.stream_id} is {stream.codec.name}, the "
                                f"{kind} says {codec.name}: the codec is fixed per stream")
        return stream


def answer_decode_req(payload: bytes | bytearray | memoryview, kind: str,
                      stream_for: Callable[[DecodeReq], StreamT],
                      run: Callable[[StreamT, DecodeReq, memoryview], list[FrameInfo]],
                      recover: Callable[[StreamT], None], logger: logging.Logger, *,
                      allowed_flags: int = DECODE_FLAGS,
                      detail: Callable[[StreamT], str] = lambda stream: "") -> bytes:
    """A struct daedalus_decode_req payload (REQ_DECODE, or phase 8.5's FEED)
    in, its RESP_FRAME payload out; never raises for anything the request or
    the bitstream holds. *stream_for* finds or makes the request's stream
    (DecodeFailure refuses it), *run* decodes under the stream's lock, and
    *recover* resets a stream after an internal error (a bug here or in PyAV:
    reported as EIO, the daemon keeps serving). *detail* adds to the debug line."""
    try:
        req, bitstream = parse_decode_req(payload)
        validate_decode_req(req, len(bitstream), allowed_flags=allowed_flags)
        stream = stream_for(req)
    except ProtocolError as exc:
        logger.warning("malformed %s: %s", kind, exc)
        return error_response(errno.EINVAL, str(exc))
    except DecodeFailure as exc:
        logger.warning("%s refused: %s", kind, exc.message)
        return error_response(exc.error, exc.message)
    with stream.lock:
        try:
            frames = run(stream, req, bitstream)
        except DecodeFailure as exc:
            logger.warning("stream %d, timestamp %d: %s", req.stream_id, req.timestamp,
                           exc.message)
            return error_response(exc.error, exc.message)
        except Exception as exc:  # a bug here or in PyAV: report it, keep serving
            recover(stream)
            stream.errors += 1
            logger.exception("stream %d, timestamp %d: internal error", req.stream_id,
                             req.timestamp)
            return error_response(errno.EIO, f"internal error: {exc!r}")
        extra = detail(stream)
    logger.debug("stream %d, timestamp %d: %d bytes%s%s -> %d frames%s", req.stream_id,
                 req.timestamp, len(bitstream), " + reset" if req.reset else "",
                 " + flush" if req.flush else "", len(frames), extra)
    return pack_frame_resp(DecodeStatus.OK, 0, frames)


def _ffmpeg_text(exc: Exception) -> str:
    """FFmpeg's message without PyAV's "[Errno -1094995529] " prefix."""
    if isinstance(exc, av.FFmpegError) and exc.strerror:
        return str(exc.strerror)
    return str(exc) or type(exc).__name__


def create_decoder(codec: Codec) -> VideoCodecContext:
    ctx = av.CodecContext.create(DECODERS[codec], "r")
    if not isinstance(ctx, VideoCodecContext):  # pragma: no cover - PyAV's business
        raise TypeError(f"{DECODERS[codec]} is not a video decoder")
    # Slice threads never delay output; frame threads would hold frames back.
    ctx.thread_type = "SLICE"
    options = DECODER_OPTIONS.get(codec)
    if options:
        ctx.options = dict(options)
    ctx.open()
    return ctx


@dataclass
class StreamState:
    """One kernel stream: its codec, decoder and bookkeeping."""

    stream_id: int
    codec: Codec
    lock: threading.Lock = field(default_factory=threading.Lock)
    decoder: VideoCodecContext | None = None
    packets: int = 0             # packet numbers handed to the decoder as pts
    timestamps: dict[int, int] = field(default_factory=dict)  # packet number -> timestamp
    requests: int = 0
    frames: int = 0
    errors: int = 0
    decoders_created: int = 0
    restarts: int = 0            # decoders replaced because they failed a keyframe

    def drop_decoder(self) -> None:
        self.decoder = None
        self.timestamps.clear()

    def _new_decoder(self, factory: Callable[[Codec], VideoCodecContext]) -> VideoCodecContext:
        self.decoder = factory(self.codec)
        self.decoders_created += 1
        return self.decoder

    def _packet(self, data: bytes, number: int) -> av.Packet[Any]:
        packet = av.Packet(data)
        packet.pts = number
        return packet

    def _timestamp(self, frame: PackedFrame, fallback: int) -> int:
        if frame.pts is None:
            return fallback
        return self.timestamps.get(frame.pts, fallback)

    def run(self, req: DecodeReq, bitstream: memoryview,
            factory: Callable[[Codec], VideoCodecContext]) -> list[FrameInfo]:
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
            raise self._failed(errno.EILSEQ, f"invalid bitstream: {_ffmpeg_text(exc)}") from exc
        except av.error.MemoryError as exc:
            self.drop_decoder()
            raise self._failed(errno.ENOMEM,
                               f"decoder out of memory: {_ffmpeg_text(exc)}") from exc
        except av.FFmpegError as exc:
            self.drop_decoder()  # not plain bad data: start over with a fresh decoder
            raise self._failed(errno.EILSEQ, f"decoder failed ({type(exc).__name__}): "
                                             f"{_ffmpeg_text(exc)}; decoder reset") from exc
        finally:
            if req.flush:
                self.drop_decoder()

    def _decode(self, data: bytes, timestamp: int,
                factory: Callable[[Codec], VideoCodecContext]) -> list[av.VideoFrame]:
        decoder = self.decoder if self.decoder is not None else self._new_decoder(factory)
        number = self.packets
        self.packets += 1
        self.timestamps[number] = timestamp
        self.timestamps.pop(number - TIMESTAMP_WINDOW, None)
        try:
            return list(decoder.decode(self._packet(data, number)))
        except av.error.InvalidDataError:
            frames = self._restart_at_keyframe(data, number, factory)
            if frames is None:
                raise
            return frames

    def _restart_at_keyframe(self, data: bytes, number: int,
                             factory: Callable[[Codec], VideoCodecContext]
                             ) -> list[av.VideoFrame] | None:
        """The stream's decoder failed on *data*. If a fresh decoder makes a
        clean keyframe of it, the old one is wedged (decoding should resume at
        a keyframe): replace it and return what the new one decodes; else None.

        Only error paths pay for this: the packet is decoded (and drained) once
        more by a throw-away decoder, a missing-reference error is quick."""
        try:
            probe = factory(self.codec)
            frames = [*probe.decode(self._packet(data, number)), *probe.decode(None)]
        except av.FFmpegError:
            return None
        if not any(f.key_frame and not f.is_corrupt for f in frames):
            return None
        decoder = self._new_decoder(factory)
        self.restarts += 1
        log.warning("stream %d: the decoder failed a keyframe that a fresh one decodes; "
                    "replaced it", self.stream_id)
        return list(decoder.decode(self._packet(data, number)))

    def _failed(self, error: int, message: str) -> DecodeFailure:
        self.errors += 1
        return DecodeFailure(error, message)

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
            packed = pack(frame)
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

    def __init__(self, decoder_factory: Callable[[Codec], VideoCodecContext] = create_decoder,
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
