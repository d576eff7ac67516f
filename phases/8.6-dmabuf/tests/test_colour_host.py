"""Phase 8.6 on the host: the colour description daedalusd reports with every frame.

Protocol v9's struct daedalus_frame_info carries what the bitstream signals
about a frame's colour: ITU-T H.273 code points for the primaries, transfer
characteristics and matrix coefficients, and FFmpeg's AVColorRange. The
handlers (phase 8.5's FEED / FETCH, phase 8.4's DECODE) fill them from the
decoded frame (phase 8.4's frames.py, ``Colour.of``).

The expected values come from Debian's ffprobe (FFmpeg 5.1's CLI, not the
PyAV build the daemon decodes with): its names of each frame's
``color_primaries``, ``color_transfer``, ``color_space`` and
``color_range``, turned into code points by the tables below, written from
H.273 (the names are FFmpeg's for those code points). The clips are phase
8.3's colour-tagged vectors, and two that signal no colour description
(H.264 without VUI colour; VP9, whose range bit is always coded).

The kernel's side (which code points V4L2 can name, and the CAPTURE format
after SOURCE_CHANGE) is test_colour_guest.py's.
"""

from __future__ import annotations

import itertools
from typing import Any

import av
import pytest

from daedalus.m2m.stateful import StatefulHandler
from daedalus.parse import corpus
from daedalus.parse.readers import read_all
from daedalus.parse.reference import ffprobe, have_ffprobe
from daedalus.proto import (
    COLOUR_UNSPECIFIED,
    DECODE_FLUSH,
    MAGIC,
    RANGE_UNSPECIFIED,
    VERSION,
    DecodeStatus,
    FrameInfo,
    Header,
    MsgType,
    codecs,
    pack_decode_req,
    pack_fetch_req,
    parse_fetch_resp,
    parse_frame_resp,
    validate_fetch_resp,
    validate_frame_resp,
)
from daedalus.roundtrip.decode import DecodeHandler
from daedalus.roundtrip.frames import Colour

pytestmark = pytest.mark.skipif(not have_ffprobe(), reason="needs Debian's ffprobe "
                                "(apt-get install ffmpeg)")

TAGGED = ["vp9-bt709-tv-128x96", "vp9-smpte170m-pc-128x96", "h264-bt709-tv-128x96",
          "h264-bt470bg-pc-128x96", "av1-bt2020-pq-128x96"]
UNTAGGED = ["h264-high-128x96", "vp9-128x96"]

# H.273 code points by FFmpeg's names (av_color_*_name), "unknown" = unspecified.
PRIMARIES = {"bt709": 1, "unknown": 2, "bt470m": 4, "bt470bg": 5, "smpte170m": 6,
             "smpte240m": 7, "film": 8, "bt2020": 9, "smpte428": 10, "smpte431": 11,
             "smpte432": 12, "ebu3213": 22}
TRANSFER = {"bt709": 1, "unknown": 2, "bt470m": 4, "bt470bg": 5, "smpte170m": 6,
            "smpte240m": 7, "linear": 8, "log100": 9, "log316": 10, "iec61966-2-4": 11,
            "bt1361e": 12, "iec61966-2-1": 13, "bt2020-10": 14, "bt2020-12": 15,
            "smpte2084": 16, "smpte428": 17, "arib-std-b67": 18}
MATRIX = {"gbr": 0, "bt709": 1, "unknown": 2, "fcc": 4, "bt470bg": 5, "smpte170m": 6,
          "smpte240m": 7, "ycgco": 8, "bt2020nc": 9, "bt2020c": 10, "smpte2085": 11,
          "chroma-derived-nc": 12, "chroma-derived-c": 13, "ictcp": 14}
RANGE = {"unknown": 0, "tv": 1, "pc": 2}  # AVColorRange: MPEG (limited), JPEG (full)

_cookies = itertools.count(1)


def probed_colours(name: str) -> list[Colour]:
    """ffprobe's colour description of every frame of *name*, in output order."""
    frames = ffprobe(corpus.path(name), "-show_frames", "-show_entries",
                     "frame=color_primaries,color_transfer,color_space,color_range")["frames"]
    return [Colour(primaries=PRIMARIES[f.get("color_primaries", "unknown")],
                   transfer=TRANSFER[f.get("color_transfer", "unknown")],
                   matrix=MATRIX[f.get("color_space", "unknown")],
                   range=RANGE[f.get("color_range", "unknown")]) for f in frames]


def colour_of(frame: FrameInfo) -> Colour:
    return Colour(frame.primaries, frame.transfer, frame.matrix, frame.range)


def request(opcode: int, payload: bytes) -> tuple[Header, bytes]:
    return Header(magic=MAGIC, version=VERSION, type=opcode, cookie=next(_cookies),
                  payload_len=len(payload), flags=0, status=0), payload


def codec_of(name: str) -> Any:
    return codecs.BY_NAME[corpus.entry(name).codec].codec


def feed_and_fetch(name: str, stream_id: int) -> list[FrameInfo]:
    """FEED every packet (one per buffer, as the node sends them) and the drain,
    FETCH every frame listed; each FETCH answer must name the listed frame,
    colour included (the kernel compares them field by field)."""
    handler = StatefulHandler()
    codec = codec_of(name)
    listed: list[FrameInfo] = []
    chunks = [p.data for p in read_all(corpus.path(name))[1]]
    for timestamp, data in [*enumerate(chunks), (2**64 - 1, b"")]:
        flags = 0 if data else DECODE_FLUSH
        status, answer = handler.handle(*request(MsgType.FEED, pack_decode_req(
            codec, data, stream_id=stream_id, flags=flags, timestamp=timestamp)))
        assert status == 0
        resp = parse_frame_resp(answer)
        validate_frame_resp(resp)
        assert resp.status == DecodeStatus.OK, resp.text
        listed += resp.frames
    for frame in listed:
        bytesperline = (frame.width + 63) // 64 * 64
        status, answer = handler.handle(*request(MsgType.FETCH, pack_fetch_req(
            stream_id, bytesperline=bytesperline, height=frame.height,
            max_bytes=bytesperline * frame.height * 3 // 2, timestamp=frame.timestamp,
            digest=frame.digest)))
        assert status == 0, answer
        fetched, _ = parse_fetch_resp(answer)
        validate_fetch_resp(fetched)
        assert fetched.frame == frame
    return listed


def test_the_clips_signal_what_their_names_say() -> None:
    """The tagged clips' descriptions, as ffprobe reads them (so the other
    tests' expectations are not vacuous), and nothing in the untagged ones
    but VP9's range bit."""
    first = {name: probed_colours(name)[0] for name in TAGGED + UNTAGGED}
    assert first == {
        "vp9-bt709-tv-128x96": Colour(2, 2, 1, 1),        # VP9: no primaries, no transfer
        "vp9-smpte170m-pc-128x96": Colour(2, 2, 6, 2),
        "h264-bt709-tv-128x96": Colour(1, 1, 1, 1),
        "h264-bt470bg-pc-128x96": Colour(5, 5, 5, 2),     # transfer 5: gamma 2.8
        "av1-bt2020-pq-128x96": Colour(9, 16, 9, 1),
        "h264-high-128x96": Colour(2, 2, 2, 0),
        "vp9-128x96": Colour(2, 2, 2, 1),                 # VP9 always codes its range bit
    }


@pytest.mark.parametrize("name", TAGGED + UNTAGGED)
def test_feed_lists_each_frames_colour_as_ffprobe_reads_it(name: str) -> None:
    """Phase 8.5's FEED answers (and FETCH's, which repeat the frame)."""
    frames = feed_and_fetch(name, 11)
    assert [colour_of(f) for f in frames] == probed_colours(name)
    assert len(frames) == corpus.entry(name).frames


@pytest.mark.parametrize("name", ["h264-bt709-tv-128x96", "av1-bt2020-pq-128x96",
                                  "vp9-smpte170m-pc-128x96"])
def test_decode_lists_each_frames_colour_too(name: str) -> None:
    """Phase 8.4's DECODE (the debugfs round trip) answers with the same frame entries."""
    handler = DecodeHandler()
    chunks = [p.data for p in read_all(corpus.path(name))[1]]
    frames: list[FrameInfo] = []
    for timestamp, data in enumerate(chunks):
        flags = DECODE_FLUSH if timestamp == len(chunks) - 1 else 0
        status, answer = handler.handle(*request(MsgType.DECODE, pack_decode_req(
            codec_of(name), data, stream_id=5, flags=flags, timestamp=timestamp)))
        assert status == 0
        resp = parse_frame_resp(answer)
        validate_frame_resp(resp)
        assert resp.ok, resp.text
        frames += resp.frames
    assert [colour_of(f) for f in frames] == probed_colours(name)


def test_code_points_beyond_a_byte_are_reported_unspecified() -> None:
    """FFmpeg's private code points (from 256 on: AVCOL_PRI_EXT_BASE ...) do not
    fit the wire's byte: unspecified, not truncated."""
    frame = av.VideoFrame(16, 16, "yuv420p")
    frame.color_primaries = 256
    frame.color_trc = 300
    frame.colorspace = 9
    frame.color_range = 2
    assert Colour.of(frame) == Colour(COLOUR_UNSPECIFIED, COLOUR_UNSPECIFIED, 9, 2)
    assert Colour.of(av.VideoFrame(16, 16, "yuv420p")) == Colour(
        COLOUR_UNSPECIFIED, COLOUR_UNSPECIFIED, COLOUR_UNSPECIFIED, RANGE_UNSPECIFIED)
