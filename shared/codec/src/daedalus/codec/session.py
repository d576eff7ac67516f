"""One kernel stream's PyAV decoder: what phase 8.4's DECODE and 8.5's FEED share.

Reading order: ``DecoderSession`` (the per-stream state and the decoder's
life: creation, packet numbering, the wedged-decoder restart), then
``open_stream`` and ``answer_decode_req`` (a struct daedalus_decode_req in,
its RESP_FRAME out, for any handler whose streams are DecoderSessions), and
``decode_req_stream`` (the stream a request names, for the handlers'
``order_key``).

The codec facts (FFmpeg decoder, its options) come from the codec table,
``daedalus.proto.codecs``; nothing here names a codec.

A session keeps one FFmpeg decoder (``av.CodecContext``) with its reference
frames from one request to the next:

- the decoder sees a private, increasing packet number as pts; a frame's
  pts maps back to the timestamp of the request that carried its packet
  (``_timestamp``; the last ``TIMESTAMP_WINDOW`` packets are remembered);
- a decoder that fails a packet which a fresh decoder decodes as a clean
  keyframe is wedged (seen with libdav1d after garbage input): it is
  replaced (``_restart_at_keyframe``). Only error paths pay for that.

Why a distribution of its own (daedalus-codec) and not daedalus.dispatch:
it needs PyAV, which the daemon core and phase 8.2 do not; phases 8.4 and
8.5 depend on it.

Threads: a session's ``lock`` serialises its requests; the table of sessions
that ``open_stream`` fills has its own lock.
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
    Codec,
    DecodeReq,
    DecodeStatus,
    FrameInfo,
    ProtocolError,
    encode_message,
    pack_frame_resp,
    parse_decode_req,
    validate_decode_req,
)
from daedalus.proto.codecs import by_codec

log = logging.getLogger("daedalus.codec")


MAX_STREAMS = 64          # decoders alive at once (the kernel closes what it opens)
TIMESTAMP_WINDOW = 1024   # packets whose timestamps are remembered for late frames

DecoderFactory = Callable[[Codec], VideoCodecContext]


class DecodeFailure(Exception):
    """A request that ends in DECODE_ERROR with *error* (a positive errno);
    *logged*: its stream has logged it already (answer_decode_req then logs
    it at debug level only)."""

    def __init__(self, error: int, message: str, *, logged: bool = False) -> None:
        super().__init__(message)
        self.error = error
        self.message = message
        self.logged = logged


def error_response(error: int, message: str) -> bytes:
    return pack_frame_resp(DecodeStatus.ERROR, error, (), encode_message(message))


def ffmpeg_text(exc: Exception) -> str:
    """FFmpeg's message without PyAV's "[Errno -1094995529] " prefix."""
    if isinstance(exc, av.FFmpegError) and exc.strerror:
        return str(exc.strerror)
    return str(exc) or type(exc).__name__


def create_decoder(codec: Codec, *, threads: int | None = None) -> VideoCodecContext:
    """A fresh, opened decoder of the codec table's ``decoder`` for *codec*,
    with its ``low_delay_options``: one packet in, its frame out. *threads*:
    its thread count (None: FFmpeg's automatic count, what daedalusd uses;
    the count cannot change once the decoder is open)."""
    desc = by_codec(codec)
    ctx = av.CodecContext.create(desc.decoder, "r")
    if not isinstance(ctx, VideoCodecContext):  # pragma: no cover - PyAV's business
        raise TypeError(f"{desc.decoder} is not a video decoder")
    # Slice threads never delay output; frame threads would hold frames back.
    ctx.thread_type = "SLICE"
    if threads is not None:
        ctx.thread_count = threads
    if desc.low_delay_options:
        ctx.options = dict(desc.low_delay_options)
    ctx.open()
    return ctx


class HasPts(Protocol):
    @property
    def pts(self) -> int | None: ...


@dataclass
class DecoderSession:
    """One kernel stream's decoder and the bookkeeping every phase keeps.

    Subclasses add their requests (phase 8.4's StreamState, phase 8.5's
    FeedStream) and set ``LOG`` to their phase's logger."""

    LOG: ClassVar[logging.Logger] = log

    stream_id: int
    codec: Codec
    lock: threading.Lock = field(default_factory=threading.Lock)
    decoder: VideoCodecContext | None = None
    packets: int = 0             # packet numbers handed to the decoder as pts
    timestamps: dict[int, int] = field(default_factory=dict)  # packet number -> timestamp
    errors: int = 0
    decoders_created: int = 0
    restarts: int = 0            # decoders replaced because they failed a keyframe
    refused: str | None = None   # why the stream cannot be served, once it was refused

    def _new_decoder(self, factory: DecoderFactory) -> VideoCodecContext:
        self.decoder = factory(self.codec)
        self.decoders_created += 1
        return self.decoder

    def _current_decoder(self, factory: DecoderFactory) -> VideoCodecContext:
        """The stream's decoder, made on first use (and after one was dropped)."""
        return self.decoder if self.decoder is not None else self._new_decoder(factory)

    def _number(self, timestamp: int) -> int:
        """The next packet number, remembered as carrying *timestamp*."""
        number = self.packets
        self.packets += 1
        self.timestamps[number] = timestamp
        self.timestamps.pop(number - TIMESTAMP_WINDOW, None)
        return number

    def _packet(self, data: bytes, number: int) -> av.Packet[Any]:
        packet = av.Packet(data)
        packet.pts = number
        return packet

    def _timestamp(self, frame: HasPts, fallback: int) -> int:
        """The timestamp of the packet *frame* came from (its pts), else *fallback*."""
        if frame.pts is None:
            return fallback
        return self.timestamps.get(frame.pts, fallback)

    def _restart_at_keyframe(self, data: bytes, number: int,
                             factory: DecoderFactory) -> list[av.VideoFrame] | None:
        """The stream's decoder failed on *data*. If a fresh decoder makes a
        clean keyframe of it, the old one is wedged (decoding should resume at
        a keyframe): replace it and return what the new one decodes; else None.

        Only error paths pay for this: the packet is decoded (and drained) once
        more by a throw-away decoder, a missing-reference error is quick. An
        FFmpeg error of the new decoder itself propagates."""
        try:
            probe = factory(self.codec)
            frames = [*probe.decode(self._packet(data, number)), *probe.decode(None)]
        except av.FFmpegError:
            return None
        if not any(f.key_frame and not f.is_corrupt for f in frames):
            return None
        decoder = self._new_decoder(factory)
        self.restarts += 1
        self.LOG.warning("stream %d: the decoder failed a keyframe that a fresh one decodes; "
                         "replaced it", self.stream_id)
        return list(decoder.decode(self._packet(data, number)))

    def _failed(self, error: int, message: str) -> DecodeFailure:
        self.errors += 1
        return DecodeFailure(error, message)

    def _refuse(self, message: str) -> DecodeFailure:
        """The stream asks for something the daemon does not deliver (a pixel
        layout NV12 / P010 cannot carry exactly): DECODE_ERROR / EOPNOTSUPP
        with *message*, a warning in the log once per stream, not per request."""
        if self.refused is None:
            self.LOG.warning("stream %d refused: %s", self.stream_id, message)
        self.refused = message
        self.errors += 1
        return DecodeFailure(errno.EOPNOTSUPP, message, logged=True)


SessionT = TypeVar("SessionT", bound=DecoderSession)


def open_stream(streams: dict[int, SessionT], lock: threading.Lock, req: DecodeReq,
                kind: str, make: Callable[[int, Codec], SessionT], *, max_streams: int,
                logger: logging.Logger) -> SessionT:
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
                        codec.name, by_codec(codec).decoder)
        elif stream.codec != codec:
            raise ProtocolError(f"stream {req.stream_id} is {stream.codec.name}, the "
                                f"{kind} says {codec.name}: the codec is fixed per stream")
        return stream


def decode_req_stream(payload: bytes | bytearray | memoryview) -> int | None:
    """The stream_id of a struct daedalus_decode_req payload (REQ_DECODE, or
    phase 8.5's FEED); None if it is too short to hold the struct. Nothing
    else is checked (``answer_decode_req`` does): the handlers' ``order_key``,
    which daedalusd calls on its event loop for every request."""
    try:
        return parse_decode_req(payload)[0].stream_id
    except ProtocolError:
        return None


def answer_decode_req(payload: bytes | bytearray | memoryview, kind: str,
                      stream_for: Callable[[DecodeReq], SessionT],
                      run: Callable[[SessionT, DecodeReq, memoryview], list[FrameInfo]],
                      recover: Callable[[SessionT], None], logger: logging.Logger, *,
                      allowed_flags: int = DECODE_FLAGS,
                      detail: Callable[[SessionT], str] = lambda stream: "") -> bytes:
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
            logger.log(logging.DEBUG if exc.logged else logging.WARNING,
                       "stream %d, timestamp %d: %s", req.stream_id, req.timestamp,
                       exc.message)
            return error_response(exc.error, exc.message)
        except Exception as exc:  # a bug here or in PyAV: report it, keep serving
            recover(stream)
            stream.errors += 1
            logger.exception("stream %d, timestamp %d: internal error", req.stream_id,
                             req.timestamp)
            return error_response(errno.EIO, f"internal error: {exc!r}")
        extra = detail(stream)
    logger.debug("stream %d, timestamp %d: %d bytes%s%s%s -> %d frames%s", req.stream_id,
                 req.timestamp, len(bitstream), " + reset" if req.reset else "",
                 " + flush" if req.flush else "", " + resync" if req.resync else "",
                 len(frames), extra)
    return pack_frame_resp(DecodeStatus.OK, 0, frames)
