"""The shared decoder session: the codec table drives the decoders; packet
numbers map frames back to their request's timestamp."""

from __future__ import annotations

import errno
import logging
import threading
from dataclasses import dataclass

import av
import pytest

from daedalus.codec.session import (
    TIMESTAMP_WINDOW,
    DecodeFailure,
    DecoderSession,
    create_decoder,
    ffmpeg_text,
    open_stream,
)
from daedalus.proto import Codec, DecodeReq, pack_decode_req, parse_decode_req
from daedalus.proto.codecs import CODECS, CodecDesc, by_codec


@pytest.mark.parametrize("desc", CODECS, ids=lambda d: d.name)
def test_create_decoder_follows_the_codec_table(desc: CodecDesc) -> None:
    assert by_codec(desc.codec) is desc
    ctx = create_decoder(desc.codec)
    assert ctx.name == desc.decoder and ctx.is_open
    # (low_delay_options are consumed by open(): phase 8.4's tests see one frame
    # per AV1 request)


@pytest.mark.parametrize("threads", [1, 2])
def test_create_decoder_takes_a_thread_count(threads: int) -> None:
    ctx = create_decoder(Codec.VP9, threads=threads)
    assert ctx.is_open and ctx.thread_count == threads and ctx.thread_type.name == "SLICE"


@dataclass
class Pts:
    pts: int | None


def test_packet_numbers_and_timestamps() -> None:
    session = DecoderSession(stream_id=1, codec=Codec.VP9)
    numbers = [session._number(1000 + n) for n in range(TIMESTAMP_WINDOW + 2)]
    assert numbers == list(range(TIMESTAMP_WINDOW + 2))
    assert len(session.timestamps) == TIMESTAMP_WINDOW
    assert session._timestamp(Pts(TIMESTAMP_WINDOW + 1), -1) == 1000 + TIMESTAMP_WINDOW + 1
    assert session._timestamp(Pts(0), -1) == -1  # forgotten: the fallback
    assert session._timestamp(Pts(None), -2) == -2
    packet = session._packet(b"abc", 7)
    assert (bytes(packet), packet.pts) == (b"abc", 7)


def test_decoder_made_once_and_counted() -> None:
    made: list[Codec] = []

    def factory(codec: Codec) -> av.VideoCodecContext:
        made.append(codec)
        return create_decoder(codec)

    session = DecoderSession(stream_id=2, codec=Codec.H264)
    first = session._current_decoder(factory)
    assert session._current_decoder(factory) is first
    assert made == [Codec.H264] and session.decoders_created == 1
    failure = session._failed(errno.EILSEQ, "bad")
    assert isinstance(failure, DecodeFailure) and session.errors == 1


def test_restart_at_keyframe_refuses_what_a_fresh_decoder_cannot_decode() -> None:
    session = DecoderSession(stream_id=3, codec=Codec.VP9)
    assert session._restart_at_keyframe(b"\xff" * 16, 0, create_decoder) is None
    assert session.restarts == 0 and session.decoder is None


def test_ffmpeg_text() -> None:
    assert ffmpeg_text(ValueError("plain")) == "plain"
    assert ffmpeg_text(RuntimeError()) == "RuntimeError"
    exc = av.error.InvalidDataError(-1094995529, "Invalid data found when processing input")
    assert ffmpeg_text(exc) == "Invalid data found when processing input"


def test_open_stream_limits_and_fixes_the_codec() -> None:
    streams: dict[int, DecoderSession] = {}
    lock = threading.Lock()
    log = logging.getLogger("test")

    def req(stream_id: int, codec: Codec) -> DecodeReq:
        return parse_decode_req(pack_decode_req(codec, b"x", stream_id=stream_id))[0]

    def make(stream_id: int, codec: Codec) -> DecoderSession:
        return DecoderSession(stream_id=stream_id, codec=codec)

    one = open_stream(streams, lock, req(1, Codec.VP9), "TEST", make,
                      max_streams=1, logger=log)
    assert open_stream(streams, lock, req(1, Codec.VP9), "TEST", make,
                       max_streams=1, logger=log) is one
    with pytest.raises(DecodeFailure) as refused:
        open_stream(streams, lock, req(2, Codec.VP9), "TEST", make,
                    max_streams=1, logger=log)
    assert refused.value.error == errno.EMFILE
    with pytest.raises(ValueError, match="the codec is fixed per stream"):
        open_stream(streams, lock, req(1, Codec.AV1), "TEST", make,
                    max_streams=1, logger=log)
