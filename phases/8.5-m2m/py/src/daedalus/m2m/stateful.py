"""The FEED / FETCH handler: the daemon's half of the stateful m2m decoder.

Registered in the ``daedalus.handlers`` entry-point group as ``stateful``. The
kernel (phases/8.5-m2m/kernel/daedalus-m2m.c) sends every OUTPUT buffer the
application queues as one FEED and fetches each decoded frame into a CAPTURE
buffer with FETCH. Per kernel stream (``stream_id``, chosen by the kernel;
the codec is fixed by its first FEED) this handler keeps:

- an FFmpeg decoder (daedalus.codec.session's ``create_decoder``, the
  decoder the codec table daedalus.proto.codecs names), its reference frames
  kept from one FEED to the next (the shared part: ``DecoderSession``);
- for a codec with a ``parser`` in the codec table (H.264), that FFmpeg
  parser: an OUTPUT buffer may hold any slice of a continuous byte stream
  (V4L2_FMT_FLAG_CONTINUOUS_BYTESTREAM), which the parser splits into access
  units, one packet each. A buffer of a codec without one (a VP9 frame or
  superframe, an AV1 temporal unit) is decoded as one packet;
- the decoded frames not fetched yet, oldest first, at most ``max_kept``
  (64): FFmpeg's pictures themselves (PyAV frames, referenced, not copied),
  each laid out into its CAPTURE buffer once, by FETCH.

FEED (struct daedalus_decode_req, then the buffer's bytes):

- ``DAEDALUS_DECODE_RESET`` first drops the decoder, the parser and the kept
  frames (the application stopped OUTPUT: a seek);
- ``DAEDALUS_DECODE_DMABUF`` (protocol v8, phase 8.6): no bytes follow the
  struct; they are ``bitstream_len`` bytes at ``bitstream_offset`` of the
  OUTPUT buffer, which the handler gets from the device it was attached
  (``attach_device``, daedalus.dispatch.device: DAEDALUS_IOC_GET_DMABUF for
  the FEED's cookie), maps read-only and copies between DMA_BUF_SYNC_START
  and _END, after RESET and the room check (ENOSPC) below; the fd and the
  mapping are closed before the answer, and the bytes are decoded exactly
  as an inline FEED's. A buffer that cannot be had (ENOENT ...) or that the
  bytes do not fit (EINVAL) is a problem of that FEED like a bitstream
  error: DECODE_ERROR with that errno and a message unless a drain (FLUSH)
  still completed frames. A handler without a device (never attached: an
  embedding, a test) answers DECODE_ERROR / EOPNOTSUPP, which the kernel
  takes as refusing the stream;
- ``DAEDALUS_DECODE_FLUSH`` (the drain of DECODER_CMD STOP, usually without
  bytes) after the bytes flushes the parser and drains the decoder; both are
  created afresh by the next FEED, whose stream must start at a keyframe;
- the answer is a RESP_FRAME listing the frames the FEED completed, exactly
  as FETCH will return them. The entry's ``digest`` is the frame's number
  in its stream (1, 2, ... in the order the decoder output them, never
  reused while the stream lives): the kernel only echoes it in FETCH to name
  the frame, and a content digest would cost a serial pass over every byte
  (FNV-1a 64 took three times the NV12 layout at 1080p; phase 8.8's bench).
  More than DAEDALUS_MAX_FRAMES frames: DECODE_ERROR / EOVERFLOW, and they
  are not kept. A FEED that finds ``max_kept - DAEDALUS_MAX_FRAMES`` frames
  still kept gets DECODE_ERROR / ENOSPC without being decoded (the kernel
  stops feeding at 16 pending frames, so it never gets there);
- ``DAEDALUS_DECODE_RESYNC``: the kernel lost the answer to an earlier FEED
  (its watchdog fired while the daemon was slow, or the answer was
  malformed), so the frames kept for that FEED were never named to it; it
  holds no pending frame of the stream. The answer lists every kept frame,
  oldest first (the earlier FEEDs' frames, then this FEED's own), cut to
  DAEDALUS_MAX_FRAMES; the rest stay kept and the next RESYNC FEED lists
  them (the kernel sends one while a RESYNC answer lists
  DAEDALUS_MAX_FRAMES frames, after fetching them). EOVERFLOW still counts
  this FEED's own frames only. With RESET the kept frames go first, so only
  new frames are listed; with FLUSH (a drain whose answer was lost) the
  drained frames come after the kept ones. A RESYNC FEED whose own bytes
  fail (DECODE_ERROR: EILSEQ, EOVERFLOW, ...) keeps the kept frames and
  lists nothing (an error answer carries no frames); the kernel stays in
  resync and the next RESYNC FEED lists them, so the buffer's error is
  reported and no frame is lost. Room (ENOSPC) for a RESYNC FEED counts only
  the kept frames beyond the DAEDALUS_MAX_FRAMES its answer lists: it is
  refused only when more than ``max_kept`` are kept (after many lost
  answers in a row), which a seek (RESET) or CLOSE_STREAM clears;
- timestamps: a frame carries the timestamp of the FEED whose bytes held the
  first byte of its packet. The parser returns packets in stream order whose
  sizes add up to the bytes fed, so a byte count (``ByteTimeline``) finds
  that FEED; the decoder sees a private increasing packet number as pts, which
  maps its (reordered) output back (as phase 8.4 does);
- bitstream errors do not end the stream: a FEED that completed frames
  despite one is answered DECODE_OK with them (the error is logged); one that
  completed none is DECODE_ERROR / EILSEQ with a message. The decoder keeps
  its references, so decoding resumes at the next keyframe; a decoder that
  fails a packet which a fresh decoder decodes as a clean keyframe is wedged
  and replaced (phase 8.4's rule), and one that fails with anything but
  invalid data is recreated. A frame FFmpeg flags as decoded with errors
  (concealed, ``is_corrupt``) is kept and listed with DAEDALUS_FRAME_CORRUPT:
  the kernel hands its buffer out flagged ERROR and fetches it with DISCARD,
  so the client sees the loss where the frame was.
- a frame no layout the daemon delivers carries exactly (layout.py's
  ``layout_for``: NV12 / P010, and from phase 8.8 NV16 / NV24; so 4:2:2 /
  4:4:4 chroma before phase 8.8, and more than 8-bit 4:2:2 / 4:4:4) refuses
  the stream: DECODE_ERROR / EOPNOTSUPP naming the layout, no frame of that
  FEED kept, one warning per stream in the log.

FETCH (struct daedalus_fetch_req): the kept frame it names (timestamp and
digest, as the FEED answer listed it), laid out in the requested geometry
(layout.py; written by the per-frame kernel ``place`` of kernels.py, in one
pass from FFmpeg's planes with phase 8.8's implementation): luma rows at
stride ``bytesperline``, the chroma plane at ``bytesperline * height``,
rows zero-padded, rows past the picture zero, ``buffer_size(bytesperline,
height, pixfmt)`` bytes (NV12: ``bytesperline * height * 3 / 2``) after
struct daedalus_fetch_resp (whose frame is the FEED answer's entry,
unchanged); with
DAEDALUS_FETCH_DISCARD no pixels. With DAEDALUS_FETCH_DMABUF (phase 8.6)
the same layout goes into the CAPTURE buffer itself, mapped read-write
through the attached device (DAEDALUS_IOC_GET_DMABUF for the FETCH's
cookie) and written in one pass between DMA_BUF_SYNC_START and _END
(padding and the rows past the picture zeroed, the buffer's bytes beyond
the layout untouched); the answer carries no pixels, its ``bytes`` says how
many were written, and the fd and the mapping are closed before it.
DISCARD with DMABUF: DISCARD wins, nothing is mapped. Header status instead
of an answer: ENOENT when no kept frame matches (nothing is dropped then);
EINVAL for a malformed request, or a geometry that cannot hold the frame
(rows too short, too few rows, more than ``max_bytes``, or with DMABUF more
than the CAPTURE buffer's size); EMSGSIZE when the pixels exceed what one
message carries (inline only: a dma-buf takes any size); with DMABUF,
EOPNOTSUPP without a device, and the errno of a CAPTURE buffer that cannot
be had, mapped or synced (ENOENT: the kernel no longer waits for the
request ...). The kernel forgets its oldest pending frame whatever a
FETCH's answer, so a FETCH with a bad geometry, or whose CAPTURE buffer
failed, consumes the frame too: both sides stay in step.
Frames kept before the named one are dropped with it ("orphans"): the
kernel forgot them (e.g. its pending ring was reset) and will never ask for
them. A kernel that loses a FEED's answer does not make orphans: its next
FEED carries RESYNC and the answer names those frames again.

CLOSE_STREAM: daedalusd answers it after calling every handler's
``close_stream`` (this handler's drops the stream's state).

Threads: the daemon calls ``handle`` from its executor. The table of streams
has a lock and each stream two: ``lock`` (its decoder: a FEED holds it while
it decodes) and ``kept_lock`` (its kept frames, held only to change or read
them). So streams decode in parallel, and a stream's FETCH, which takes only
``kept_lock`` and lays its frame out without any lock, runs while the next
FEED of the same stream decodes: the kernel of phase 8.8 sends both at once
(``daedalus_m2m.pipelined``); earlier kernels send one request at a time.
And in the order the kernel sent them: ``order_key`` names the stream and
the kind (FEED or FETCH), and daedalusd starts a stream's FEED only after the
FEED read before it returned, and a FETCH after the FETCH before it. Lock
order alone is not read order: when a FEED's answer is lost (the daemon was
stopped past the kernel's watchdog), the RESYNC FEED that follows may be
read while the lost one still waits for a worker; decoded first, its bytes
would precede the earlier FEED's and the earlier FEED's frames, kept after
the RESYNC answer, would never be named to the kernel (orphans). FETCHes
in order: a FETCH the kernel gave up on (watchdog) may still be writing
into its CAPTURE buffer, which the application may queue again at once; the
next FETCH into it starts only once that write is over. A FETCH never waits
for a FEED: it names a frame that a FEED answer already listed.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from typing import Any, ClassVar

import av
import numpy as np
import numpy.typing as npt

from daedalus.codec.session import (
    MAX_STREAMS,
    DecodeFailure,
    DecoderFactory,
    DecoderSession,
    answer_decode_req,
    create_decoder,
    decode_req_stream,
    ffmpeg_text,
    open_stream,
)
from daedalus.dispatch.device import Device, DmaBufError
from daedalus.m2m import kernels
from daedalus.m2m.layout import Geometry, buffer_size, delivered, fits, layout_for
from daedalus.proto import (
    FEED_FLAGS,
    FETCH_RESP_SIZE,
    FRAME_CORRUPT,
    FRAME_KEY,
    MAX_FRAMES,
    MAX_HEIGHT,
    MAX_PAYLOAD,
    MAX_WIDTH,
    DecodeReq,
    FetchReq,
    FrameInfo,
    Header,
    MsgType,
    PixFmt,
    ProtocolError,
    encode_message,
    pack_fetch_resp,
    parse_fetch_req,
    validate_fetch_req,
)
from daedalus.proto.codecs import by_codec
from daedalus.roundtrip.frames import Colour, UnsupportedLayout

log = logging.getLogger("daedalus.m2m")

MAX_KEPT = 64  # decoded frames kept per stream, waiting for FETCH


class CaptureFailure(Exception):
    """A FETCH's pixels could not be written into its CAPTURE buffer (*error*:
    a positive errno, *message* in words)."""

    def __init__(self, error: int, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message


# With DECODE_DMABUF: reads a FEED's bytes from its OUTPUT buffer (DecodeFailure if not).
BitstreamReader = Callable[[DecodeReq], bytes]
# With FETCH_DMABUF: lays a frame out into the FETCH's CAPTURE buffer, *size*
# bytes (CaptureFailure if not).
CaptureWriter = Callable[["KeptFrame", FetchReq, int], None]


class ByteTimeline:
    """Which FEED's timestamp each byte of a continuous byte stream carries.

    ``feed`` records every chunk handed to the parser; ``take`` is called
    once per packet the parser returns, in order, with its size, and answers
    the timestamp of the chunk that held the packet's first byte (None if
    the packets have run past the bytes fed, which a parser never does)."""

    def __init__(self) -> None:
        self.fed = 0       # bytes fed
        self.taken = 0     # bytes returned as packets
        self._chunks: deque[tuple[int, int]] = deque()  # (first byte offset, timestamp)

    def feed(self, size: int, timestamp: int) -> None:
        if size > 0:
            self._chunks.append((self.fed, timestamp))
            self.fed += size

    def take(self, size: int) -> int | None:
        start = self.taken
        self.taken += size
        while len(self._chunks) > 1 and self._chunks[1][0] <= start:
            self._chunks.popleft()
        if not self._chunks or start >= self.fed:
            return None
        return self._chunks[0][1]

    @property
    def pending(self) -> int:
        """Bytes fed that no packet has returned yet (held by the parser)."""
        return self.fed - self.taken


@dataclass(frozen=True)
class KeptFrame:
    """A decoded frame waiting for FETCH: its FEED answer entry and FFmpeg's
    picture (referenced: its pixels are copied once, into the CAPTURE buffer)."""

    info: FrameInfo
    picture: av.VideoFrame

    def place(self, bytesperline: int, height: int, out: npt.NDArray[np.uint8],
              zeroed: bool) -> None:
        """Lay the picture out into *out* (the CAPTURE layout; ``fits`` checked)."""
        kernels.table().place(self.picture, PixFmt(self.info.pixfmt), bytesperline, height,
                              out, zeroed)


def frame_entry(frame: av.VideoFrame, timestamp: int, number: int) -> FrameInfo:
    """The FEED answer's entry for FFmpeg's *frame*: its size, its layout
    (UnsupportedLayout for one the daemon does not deliver), key and corrupt flags,
    colour, *timestamp*, and as digest its *number* in the stream."""
    pixfmt = layout_for(frame)
    colour = Colour.of(frame)
    flags = (FRAME_KEY if frame.key_frame else 0) | (FRAME_CORRUPT if frame.is_corrupt else 0)
    return FrameInfo(width=frame.width, height=frame.height, pixfmt=pixfmt, flags=flags,
                     digest=number, timestamp=timestamp, primaries=colour.primaries,
                     transfer=colour.transfer, matrix=colour.matrix, range=colour.range)


@dataclass(frozen=True)
class Problem:
    """Something that went wrong within one FEED (errno, text)."""

    error: int
    message: str


@dataclass
class FeedStream(DecoderSession):
    """One kernel stream of FEED / FETCH requests."""

    LOG: ClassVar[logging.Logger] = log

    max_kept: int = MAX_KEPT
    parser: Any = None           # av.CodecContext used only for parse(), H.264
    timeline: ByteTimeline = field(default_factory=ByteTimeline)
    kept: deque[KeptFrame] = field(default_factory=deque)
    feeds: int = 0
    fetches: int = 0
    orphans: int = 0             # kept frames dropped because the kernel forgot them
    frames: int = 0
    resets: int = 0
    resyncs: int = 0             # RESYNC FEEDs (the kernel lost an answer)
    fetch_errors: int = 0        # FETCHes that consumed their frame without pixels
    # kept, fetches, orphans and fetch_errors (FETCH takes only this; a FEED
    # takes it inside ``lock`` to change or read kept)
    kept_lock: threading.Lock = field(default_factory=threading.Lock)

    # -- state ----------------------------------------------------------------

    def end_sequence(self) -> None:
        """Drop the decoder and the parser (after a drain): the next FEED starts over."""
        self.decoder = None
        self.parser = None
        self.timeline = ByteTimeline()
        self.timestamps.clear()

    def reset(self) -> None:
        """A seek: the decoder, the parser and every kept frame go."""
        self.end_sequence()
        with self.kept_lock:
            self.kept.clear()
        self.resets += 1

    # -- FEED -------------------------------------------------------------------

    def feed(self, req: DecodeReq, bitstream: memoryview, factory: DecoderFactory,
             read: BitstreamReader | None = None) -> list[FrameInfo]:
        """Decode one FEED's bytes (then drain on FLUSH) and keep the frames it
        completed; their FEED answer entries (with RESYNC: every kept frame,
        at most MAX_FRAMES), or DecodeFailure. With DECODE_DMABUF the bytes
        come from *read* (the OUTPUT buffer), once the FEED is accepted; a
        buffer it cannot read is a problem of this FEED, like a bitstream
        error."""
        self.feeds += 1
        if req.reset:
            self.reset()
        if req.resync:
            self.resyncs += 1
        # RESYNC: the answer lists MAX_FRAMES of the kept frames, which the
        # kernel then fetches, so only the ones beyond count
        with self.kept_lock:
            kept = len(self.kept)
        unlisted = max(kept - MAX_FRAMES, 0) if req.resync else kept
        if unlisted + MAX_FRAMES > self.max_kept:
            raise self._failed(errno.ENOSPC, f"{kept} decoded frames are waiting for "
                               f"FETCH (at most {self.max_kept} are kept); buffer not decoded")
        problems: list[Problem] = []
        decoded: list[av.VideoFrame] = []
        try:
            data = self._bitstream(req, bitstream, read, problems)
            for packet, timestamp in self._packets(data, req, problems):
                decoded += self._decode(packet, timestamp, factory, problems)
            if req.flush:
                decoded += self._drain(problems)
            own = self._keep(req, decoded, problems)  # before the pts map goes
        except DecodeFailure:
            if req.resync and self.kept:
                log.info("stream %d, timestamp %d: RESYNC FEED failed; the %d kept frame(s) "
                         "wait for the next RESYNC FEED", self.stream_id, req.timestamp,
                         len(self.kept))
            raise
        finally:
            if req.flush:
                self.end_sequence()
        return self._resync(req, len(own)) if req.resync else own

    @staticmethod
    def _bitstream(req: DecodeReq, bitstream: memoryview, read: BitstreamReader | None,
                   problems: list[Problem]) -> bytes:
        """The FEED's bytes: inline, or read from the OUTPUT buffer (DMABUF)."""
        if not req.dmabuf:
            return bytes(bitstream)
        if read is None:  # (the handler refuses a DMABUF FEED it cannot read first)
            raise DecodeFailure(errno.EOPNOTSUPP, "FEED with DAEDALUS_DECODE_DMABUF: no "
                                                  "device to read the OUTPUT buffer through")
        try:
            return read(req)
        except DecodeFailure as exc:
            problems.append(Problem(exc.error, exc.message))
            return b""

    def _resync(self, req: DecodeReq, own: int) -> list[FrameInfo]:
        """The answer to a RESYNC FEED whose *own* frames were just kept: the
        kernel holds none of the stream's frames, so it lists the kept ones
        from the oldest, at most MAX_FRAMES; the rest wait for the next RESYNC."""
        with self.kept_lock:
            listed = [k.info for k in islice(self.kept, MAX_FRAMES)]
            kept = len(self.kept)
        earlier = kept - own
        log.info("stream %d, timestamp %d: RESYNC re-announces %d kept frame(s) whose FEED "
                 "answers the kernel lost, then %d of this FEED's %d; %d wait for the next "
                 "RESYNC FEED", self.stream_id, req.timestamp, min(earlier, MAX_FRAMES),
                 max(len(listed) - earlier, 0), own, kept - len(listed))
        return listed

    def _packets(self, data: bytes, req: DecodeReq,
                 problems: list[Problem]) -> Iterator[tuple[bytes, int]]:
        """The packets of this FEED's bytes, each with its timestamp."""
        name = by_codec(self.codec).parser
        if name is None:  # one frame / temporal unit per buffer
            if data:
                yield data, req.timestamp
            return
        if not data and self.parser is None:
            return
        if self.parser is None:
            self.parser = av.CodecContext.create(name, "r")
        self.timeline.feed(len(data), req.timestamp)
        try:
            packets = list(self.parser.parse(data)) if data else []
            if req.flush:
                packets += self.parser.parse(None)
        except av.FFmpegError as exc:
            problems.append(Problem(errno.EILSEQ, f"parser failed: {ffmpeg_text(exc)}; "
                                    f"{self.timeline.pending} bytes dropped"))
            self.parser = None
            self.timeline = ByteTimeline()
            return
        for packet in packets:
            timestamp = self.timeline.take(packet.size)
            yield bytes(packet), req.timestamp if timestamp is None else timestamp

    def _decode(self, data: bytes, timestamp: int, factory: DecoderFactory,
                problems: list[Problem]) -> list[av.VideoFrame]:
        decoder = self._current_decoder(factory)
        number = self._number(timestamp)
        try:
            return list(decoder.decode(self._packet(data, number)))
        except av.error.InvalidDataError as exc:
            try:  # (the shared rule; here a failing new decoder is bad data too)
                frames = self._restart_at_keyframe(data, number, factory)
            except av.FFmpegError:
                frames = None
            if frames is None:
                problems.append(Problem(errno.EILSEQ,
                                        f"invalid bitstream: {ffmpeg_text(exc)}"))
                return []
            return frames
        except av.error.MemoryError as exc:
            self.decoder = None
            problems.append(Problem(errno.ENOMEM, f"decoder out of memory: "
                                                  f"{ffmpeg_text(exc)}; decoder reset"))
        except av.FFmpegError as exc:
            self.decoder = None  # not plain bad data: a fresh decoder for the next packet
            problems.append(Problem(errno.EILSEQ, f"decoder failed ({type(exc).__name__}): "
                                                  f"{ffmpeg_text(exc)}; decoder reset"))
        return []

    def _drain(self, problems: list[Problem]) -> list[av.VideoFrame]:
        if self.decoder is None:
            return []
        try:
            return list(self.decoder.decode(None))
        except av.FFmpegError as exc:
            problems.append(Problem(errno.EILSEQ, f"drain failed: {ffmpeg_text(exc)}"))
            return []

    def _keep(self, req: DecodeReq, decoded: list[av.VideoFrame],
              problems: list[Problem]) -> list[FrameInfo]:
        good: list[KeptFrame] = []
        corrupt = 0
        for frame in decoded:
            try:
                info = frame_entry(frame, self._timestamp(frame, req.timestamp),
                                   self.frames + len(good) + 1)
            except UnsupportedLayout as exc:  # 4:2:2 / 4:4:4: refused, not converted
                raise self._refuse(str(exc)) from None
            if not (0 < info.width <= MAX_WIDTH and 0 < info.height <= MAX_HEIGHT):
                problems.append(Problem(errno.EFBIG, f"a frame of {info.width}x"
                                        f"{info.height} exceeds {MAX_WIDTH}x{MAX_HEIGHT}"))
                continue
            corrupt += bool(info.flags & FRAME_CORRUPT)
            good.append(KeptFrame(info, frame))
        if corrupt:
            problems.append(Problem(errno.EILSEQ, f"{corrupt} frame(s) decoded with errors "
                                                  "(concealed), listed as corrupt"))
        if problems:
            self.errors += 1
        if len(good) > MAX_FRAMES:
            raise self._failed(errno.EOVERFLOW, f"this buffer completed {len(good)} frames, "
                               f"an answer lists at most {MAX_FRAMES}; frames dropped (queue "
                               "smaller OUTPUT buffers)")
        if problems:
            text = "; ".join(dict.fromkeys(p.message for p in problems))
            if not good:
                raise DecodeFailure(problems[0].error, text)
            log.warning("stream %d, timestamp %d: %s (%d frame(s) listed)",
                        self.stream_id, req.timestamp, text, len(good))
        with self.kept_lock:
            self.kept.extend(good)
        self.frames += len(good)
        return [k.info for k in good]

    # -- FETCH ------------------------------------------------------------------

    def fetch(self, req: FetchReq, write: CaptureWriter | None = None) -> tuple[int, bytes]:
        """The answer (header status, payload) to a FETCH of this stream. With
        FETCH_DMABUF *write* lays the frame out into the CAPTURE buffer
        (None: no device, EOPNOTSUPP)."""
        with self.kept_lock:
            wanted = next((i for i, k in enumerate(self.kept)
                           if (k.info.timestamp, k.info.digest) == (req.timestamp, req.digest)),
                          None)
            if wanted is None:
                return errno.ENOENT, encode_message(
                    f"stream {self.stream_id}: no kept frame has timestamp {req.timestamp} "
                    f"and digest {req.digest:#018x} ({len(self.kept)} kept)")
            if wanted:
                # frames the kernel forgot (or never took without RESYNC): never fetched
                self.orphans += wanted
                log.warning("stream %d: dropping %d kept frame(s) the kernel does not know "
                            "(it forgot them)", self.stream_id, wanted)
                for _ in range(wanted):
                    self.kept.popleft()
            frame = self.kept.popleft()
            self.fetches += 1
            if req.discard:
                return 0, pack_fetch_resp(frame.info)
            info = frame.info
            geometry = Geometry(info.width, info.height, PixFmt(info.pixfmt))
            size = buffer_size(req.bytesperline, req.height, geometry.pixfmt)
            status, reason = errno.EINVAL, fits(geometry, req.bytesperline, req.height)
            if reason is None and size > req.max_bytes:
                reason = (f"{req.bytesperline} x {req.height} takes {size} bytes, more than "
                          f"max_bytes {req.max_bytes}")
            if reason is None and req.dmabuf and write is None:
                status, reason = errno.EOPNOTSUPP, (
                    "DAEDALUS_FETCH_DMABUF, but no device to map the CAPTURE buffer through")
            if reason is None and not req.dmabuf and FETCH_RESP_SIZE + size > MAX_PAYLOAD:
                status, reason = errno.EMSGSIZE, (
                    f"{size} pixel bytes do not fit one message (at most "
                    f"{MAX_PAYLOAD - FETCH_RESP_SIZE})")
            if reason is not None:
                return status, self._fetch_failed(info, reason)
        if req.dmabuf:
            assert write is not None
            try:
                write(frame, req, size)
            except CaptureFailure as exc:
                with self.kept_lock:
                    return exc.error, self._fetch_failed(info, f"CAPTURE buffer: {exc.message}")
            return 0, pack_fetch_resp(info, nr_bytes=size)
        answer = bytearray(FETCH_RESP_SIZE + size)
        answer[:FETCH_RESP_SIZE] = pack_fetch_resp(info, nr_bytes=size)
        frame.place(req.bytesperline, req.height,
                    np.frombuffer(answer, np.uint8, offset=FETCH_RESP_SIZE), zeroed=True)
        return 0, bytes(answer)

    def _fetch_failed(self, info: FrameInfo, reason: str) -> bytes:
        """Count and log a FETCH that consumed its frame without pixels; its
        message. Under the stream's kept_lock."""
        self.fetch_errors += 1
        message = (f"stream {self.stream_id}: FETCH of a {info.width}x{info.height} "
                   f"{info.pixfmt_name} frame: {reason}; frame dropped")
        log.warning("%s", message)
        return encode_message(message)


class StatefulHandler:
    """FEED -> RESP_FRAME and FETCH -> fetch_resp + pixels, state per stream.

    A DeviceUser (daedalus.dispatch.registry): daedalusd attaches the device
    it serves, through which FEEDs and FETCHes with DMABUF reach their buffers."""

    OPCODES: ClassVar[tuple[int, ...]] = (MsgType.FEED, MsgType.FETCH)
    PHASE: ClassVar[tuple[int, int]] = (8, 5)
    NAME: ClassVar[str] = "stateful"

    def __init__(self, decoder_factory: DecoderFactory = create_decoder,
                 max_streams: int = MAX_STREAMS, max_kept: int = MAX_KEPT) -> None:
        self._factory = decoder_factory
        self._max_streams = max_streams
        self._max_kept = max_kept
        self._lock = threading.Lock()  # protects _streams
        self._streams: dict[int, FeedStream] = {}
        self._device: Device | None = None
        # the per-frame kernels, chosen now: the choice is logged at start-up,
        # and a DAEDALUS_DISPATCH naming nothing stops daedalusd with its message
        kernels.table()
        # the CAPTURE layouts too: they come from entry points, which must be
        # read before daedalusd drops its privileges (--user)
        delivered()

    # -- the daemon's entry points ---------------------------------------------

    def attach_device(self, device: Device) -> None:
        """The device daedalusd serves (registry.py's DeviceUser): the dma-bufs
        of DMABUF FEEDs and FETCHes come through it."""
        self._device = device

    def handle(self, header: Header, payload: bytes) -> tuple[int, bytes]:
        if header.opcode == MsgType.FEED:
            return 0, self.feed(payload, cookie=header.cookie)
        if header.opcode == MsgType.FETCH:
            return self.fetch(payload, cookie=header.cookie)
        return (errno.EOPNOTSUPP,
                f"the stateful handler does not serve type {header.type}".encode())

    def order_key(self, header: Header, payload: bytes) -> tuple[int, int] | None:
        """The stream a FEED or FETCH names, and the kind (None for a payload
        that does not hold its struct: ``handle`` refuses it). daedalusd runs
        the requests of one key in the order it read them
        (daedalus.dispatch.registry's ``Ordered``): a stream's FEEDs in
        bitstream order, a RESYNC FEED after the FEED whose answer was lost;
        its FETCHes in their order, beside its FEEDs (module docstring)."""
        if header.opcode == MsgType.FEED:
            stream_id = decode_req_stream(payload)
            return None if stream_id is None else (stream_id, MsgType.FEED)
        if header.opcode == MsgType.FETCH:
            try:
                return parse_fetch_req(payload).stream_id, MsgType.FETCH
            except ProtocolError:
                return None
        return None

    # -- FEED -------------------------------------------------------------------

    def feed(self, payload: bytes | bytearray | memoryview, cookie: int | None = None) -> bytes:
        """A FEED payload in, its RESP_FRAME payload out (never raises for
        anything the request or the bitstream holds). *cookie* is the FEED's
        (``handle`` passes it): a DMABUF FEED names its OUTPUT buffer by it."""

        def run(stream: FeedStream, req: DecodeReq, bitstream: memoryview) -> list[FrameInfo]:
            read = None
            if req.dmabuf:
                device = self._device
                if device is None or cookie is None:
                    raise DecodeFailure(errno.EOPNOTSUPP, (
                        "FEED with DAEDALUS_DECODE_DMABUF, but this daemon has no device to "
                        "map the OUTPUT buffer through (not attached by daedalusd)"))
                read = partial(read_output, device, cookie)
            return stream.feed(req, bitstream, self._factory, read)

        return answer_decode_req(
            payload, "FEED", self._stream_for, run, FeedStream.end_sequence, log,
            allowed_flags=FEED_FLAGS, detail=lambda stream: f" ({len(stream.kept)} kept)")

    def _stream_for(self, req: DecodeReq) -> FeedStream:
        return open_stream(self._streams, self._lock, req, "FEED",
                           lambda stream_id, codec: FeedStream(stream_id=stream_id, codec=codec,
                                                               max_kept=self._max_kept),
                           max_streams=self._max_streams, logger=log)

    # -- FETCH ------------------------------------------------------------------

    def fetch(self, payload: bytes | bytearray | memoryview,
              cookie: int | None = None) -> tuple[int, bytes]:
        """A FETCH payload in, the answer (header status, payload) out. *cookie*
        is the FETCH's (``handle`` passes it): a DMABUF FETCH names its
        CAPTURE buffer by it."""
        try:
            req = parse_fetch_req(payload)
            validate_fetch_req(req)
        except ProtocolError as exc:
            log.warning("malformed FETCH: %s", exc)
            return errno.EINVAL, encode_message(str(exc))
        stream = self.stream(req.stream_id)
        if stream is None:
            return errno.ENOENT, encode_message(f"no stream {req.stream_id}")
        device = self._device
        write = None if device is None or cookie is None else partial(write_capture, device,
                                                                      cookie)
        return stream.fetch(req, write)

    # -- CLOSE_STREAM (daedalusd calls every handler's close_stream) -----------

    def close_stream(self, stream_id: int) -> None:
        with self._lock:
            stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        with stream.lock:  # waits for a FEED still running on it
            with stream.kept_lock:
                unfetched = len(stream.kept)
            stream.reset()
        log.info("stream %d closed: %d FEEDs (%d RESYNC), %d frames, %d FETCHes, %d errors, "
                 "%d frames never fetched, %d dropped unknown to the kernel", stream_id,
                 stream.feeds, stream.resyncs, stream.frames, stream.fetches,
                 stream.errors + stream.fetch_errors,
                 unfetched, stream.orphans)

    def close(self) -> None:
        """Drop every stream."""
        with self._lock:
            ids = list(self._streams)
        for stream_id in ids:
            self.close_stream(stream_id)

    # -- introspection (tests, logs) ------------------------------------------

    def stream_ids(self) -> list[int]:
        with self._lock:
            return sorted(self._streams)

    def stream(self, stream_id: int) -> FeedStream | None:
        with self._lock:
            return self._streams.get(stream_id)


# -- the dma-bufs (phase 8.6) -------------------------------------------------------


def read_output(device: Device, cookie: int, req: DecodeReq) -> bytes:
    """The bytes of a FEED with DECODE_DMABUF: ``bitstream_len`` bytes at
    ``bitstream_offset`` of the OUTPUT buffer of request *cookie*, copied
    under DMA_BUF_SYNC_START / _END | READ; the buffer is unmapped and its fd
    closed on return. DecodeFailure with the errno if the buffer cannot be
    had, mapped or synced, EINVAL if the bytes do not fit it, ETIMEDOUT if
    the request was no longer in flight once they were copied
    (DAEDALUS_IOC_IN_FLIGHT: the copy may mix two packets)."""
    try:
        with device.get_dmabuf(cookie) as buf:
            end = req.bitstream_offset + req.bitstream_len
            if end > buf.size:
                raise DecodeFailure(errno.EINVAL, (
                    f"OUTPUT buffer: {req.bitstream_len} bytes at offset {req.bitstream_offset} "
                    f"run past its {buf.size} bytes"))
            if not req.bitstream_len:
                return b""
            with buf.access() as data:
                bitstream = bytes(data[req.bitstream_offset:end])
        # the copy is the packet only if the kernel still waited when it was
        # done: after a timeout the application may refill the buffer
        if not device.in_flight(cookie):
            raise DecodeFailure(errno.ETIMEDOUT, (
                "OUTPUT buffer: the kernel gave up on this FEED while its bytes were read "
                "(the buffer may hold the application's next packet by now); not decoded"))
        return bitstream
    except DmaBufError as exc:
        raise DecodeFailure(exc.errno or errno.EIO, f"OUTPUT buffer: {exc.message}") from None


def write_capture(device: Device, cookie: int, frame: KeptFrame, req: FetchReq,
                  size: int) -> None:
    """Lay *frame* out (``size`` bytes, the FETCH's geometry) into the CAPTURE
    buffer of request *cookie*: mapped read-write, written in one pass under
    DMA_BUF_SYNC_START / _END | WRITE, unmapped and its fd closed on return.
    CaptureFailure with the errno if the buffer cannot be had, mapped or
    synced, EINVAL if the layout does not fit it."""
    try:
        with device.get_dmabuf(cookie) as buf:
            if size > buf.size:
                raise CaptureFailure(errno.EINVAL, (
                    f"{req.bytesperline} x {req.height} takes {size} bytes, the buffer has "
                    f"{buf.size}"))
            with buf.access(write=True) as data:
                frame.place(req.bytesperline, req.height,
                            np.frombuffer(data, np.uint8, count=size), zeroed=False)
    except DmaBufError as exc:
        raise CaptureFailure(exc.errno or errno.EIO, exc.message) from None
