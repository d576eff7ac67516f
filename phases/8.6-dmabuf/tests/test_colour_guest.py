"""Phase 8.6 in the guest: the colorspace round trip (issue #12).

- TRY_FMT(OUTPUT) keeps the application's colorimetry (colorspace, transfer
  function, Y'CbCr encoding, quantization) when it is valid;
  V4L2_COLORSPACE_DEFAULT ("let the driver fill in the colorspace") and
  values out of range become the node's default (Rec. 709, the other three
  fields *_DEFAULT). S_FMT(OUTPUT) keeps them too and hands them to CAPTURE
  (dev-decoder.rst; v4l2-compliance's testM2MFormats asks the same).
- After SOURCE_CHANGE, G_FMT(CAPTURE) reports the stream's own colour
  description where the bitstream signals one (VP9's color_space and
  color_range, H.264's VUI, AV1's color_config) and V4L2 has a name for it,
  field by field; every other field keeps the application's value.

The expected CAPTURE values are derived here, independently of the kernel's
table: Debian's ffprobe names what each clip signals (``-show_streams``:
color_primaries, color_transfer, color_space, color_range), and the tables
below give the V4L2 value with the same definition, read from the V4L2
specification (Documentation/userspace-api/media/v4l/colorspaces-details.rst
and colorspaces-defs.rst: chromaticities, transfer functions, Y'CbCr
encodings, quantization). A name missing from a table is one V4L2 cannot
express (gamma 2.8, "unknown" ...): the application's value is expected.

The decodes are driven with raw ioctls (M2MNode, BufferQueue of
daedalus.m2m.v4l2): S_FMT(OUTPUT) with the application's colorimetry, the
clip's packets one per OUTPUT buffer, G_FMT(CAPTURE) at the SOURCE_CHANGE
event, then CAPTURE set up and the clip decoded to its LAST buffer.
"""

from __future__ import annotations

import fcntl
import time
from dataclasses import dataclass
from typing import Any

import pytest
from linuxpy.video import raw

from daedalus.m2m.v4l2 import (
    EVENT_EOS,
    EVENT_SOURCE_CHANGE,
    V4L2_DEC_CMD_STOP,
    BufferQueue,
    M2MNode,
)
from daedalus.parse import corpus
from daedalus.parse.readers import read_all
from daedalus.parse.reference import ffprobe
from daedalus.proto import codecs
from daedalus.skeleton.v4l2dev import CAPTURE, OUTPUT, find_node, fourcc
from daedalus.testbed.guestctl import daemon_state

pytestmark = pytest.mark.guest

TIMEOUT = 300.0  # one small decode under TCG, generously

CS = raw.Colorspace
XF = raw.XferFunc
YE = raw.YcbcrEncoding
QU = raw.Quantization


@dataclass(frozen=True)
class Colorimetry:
    """The four colorimetry fields of struct v4l2_pix_format_mplane."""

    colorspace: int
    xfer_func: int
    ycbcr_enc: int
    quantization: int


# V4L2's values by FFmpeg's (ffprobe's) names, from the V4L2 specification:
# the colorspace whose chromaticities are the primaries' (colorspaces-details.rst),
COLORSPACE_BY_PRIMARIES = {
    "bt709": CS.REC709,             # Rec. 709: 0.640/0.330, 0.300/0.600, 0.150/0.060
    "smpte170m": CS.SMPTE170M,      # SMPTE 170M: 0.630/0.340, 0.310/0.595, 0.155/0.070
    "smpte240m": CS.SMPTE240M,      # SMPTE 240M: the same chromaticities as 170M
    "bt470m": CS._470_SYSTEM_M,     # NTSC 1953: 0.67/0.33, 0.21/0.71, 0.14/0.08, white C
    "bt470bg": CS._470_SYSTEM_BG,   # EBU Tech. 3213: 0.64/0.33, 0.29/0.60, 0.15/0.06
    "bt2020": CS.BT2020,            # BT.2020: 0.708/0.292, 0.170/0.797, 0.131/0.046
    "smpte431": CS.DCI_P3,          # DCI-P3: 0.680/0.320, 0.265/0.690, 0.150/0.060, DCI white
}
# the transfer function with the same curve (Rec. 709's is SMPTE 170M's and BT.2020's),
XFER_BY_TRANSFER = {
    "bt709": XF._709, "smpte170m": XF._709, "bt2020-10": XF._709, "bt2020-12": XF._709,
    "smpte240m": XF.SMPTE240M,
    "linear": XF.NONE,
    "iec61966-2-1": XF.SRGB,
    "smpte2084": XF.SMPTE2084,
}
# the Y'CbCr encoding with the same matrix (BT.601 for 525 and 625 lines alike),
YCBCR_BY_MATRIX = {
    "bt709": YE._709,
    "bt470bg": YE._601, "smpte170m": YE._601,
    "smpte240m": YE.SMPTE240M,
    "bt2020nc": YE.BT2020,
    "bt2020c": YE.BT2020_CONST_LUM,
}
# and the quantization ("tv": Y' 16..235; "pc": 0..255).
QUANTIZATION_BY_RANGE = {"tv": QU.LIM_RANGE, "pc": QU.FULL_RANGE}

TAGGED = ["vp9-bt709-tv-128x96", "vp9-smpte170m-pc-128x96", "h264-bt709-tv-128x96",
          "h264-bt470bg-pc-128x96", "av1-bt2020-pq-128x96"]
# no colour description: H.264 without one in its VUI; VP9 codes only its range bit
UNTAGGED = ["h264-high-128x96", "vp9-128x96"]

# The application's colorimetry for the decodes: no clip signals any of these,
# so every field of G_FMT(CAPTURE) tells where it came from.
APP = Colorimetry(CS.DCI_P3, XF.DCI_P3, YE.XV709, QU.DEFAULT)
# What S_FMT(OUTPUT) sets after a decode: the stream's description is gone with it.
APP_AFTER = Colorimetry(CS.OPRGB, XF.OPRGB, YE.XV601, QU.FULL_RANGE)


def expected(name: str, app: Colorimetry) -> Colorimetry:
    """The CAPTURE colorimetry the spec gives for *name*'s stream: the stream's
    where it signals something V4L2 names, else *app*'s."""
    s = ffprobe(corpus.path(name), "-show_streams", "-select_streams", "v:0")["streams"][0]
    return Colorimetry(
        int(COLORSPACE_BY_PRIMARIES.get(s.get("color_primaries", ""), app.colorspace)),
        int(XFER_BY_TRANSFER.get(s.get("color_transfer", ""), app.xfer_func)),
        int(YCBCR_BY_MATRIX.get(s.get("color_space", ""), app.ycbcr_enc)),
        int(QUANTIZATION_BY_RANGE.get(s.get("color_range", ""), app.quantization)))


def colorimetry(fmt: Any) -> Colorimetry:
    p = fmt.fmt.pix_mp
    return Colorimetry(int(p.colorspace), int(p.xfer_func), int(p.ycbcr_enc),
                       int(p.quantization))


def fmt_ioctl(fd: int, request: int, buf_type: int, code: str | None = None,
              width: int = 0, height: int = 0, colour: Colorimetry | None = None) -> Any:
    """TRY_FMT / S_FMT (with a format) or G_FMT (without) on *buf_type*; the
    struct v4l2_format as the driver left it."""
    fmt = raw.v4l2_format()
    fmt.type = buf_type
    if code is not None:
        p = fmt.fmt.pix_mp
        p.pixelformat = fourcc(code)
        p.width = width
        p.height = height
        p.num_planes = 1
        if colour is not None:
            p.colorspace = colour.colorspace
            p.xfer_func = colour.xfer_func
            p.ycbcr_enc = colour.ycbcr_enc
            p.quantization = colour.quantization
    fcntl.ioctl(fd, request, fmt)
    return fmt


def g_fmt(fd: int, buf_type: int) -> Colorimetry:
    return colorimetry(fmt_ioctl(fd, raw.IOC.G_FMT, buf_type))


ROUND_TRIP = [
    Colorimetry(CS.REC709, XF._709, YE._709, QU.LIM_RANGE),
    Colorimetry(CS.SRGB, XF.SRGB, YE._601, QU.FULL_RANGE),
    Colorimetry(CS.BT2020, XF.SMPTE2084, YE.BT2020, QU.LIM_RANGE),
    Colorimetry(CS.SMPTE170M, XF.DEFAULT, YE.DEFAULT, QU.DEFAULT),
]


@pytest.mark.parametrize("colour", ROUND_TRIP, ids=lambda c: CS(c.colorspace).name)
def test_try_fmt_output_keeps_the_applications_colorimetry(colour: Colorimetry) -> None:
    """TRY_FMT(OUTPUT) gives valid values back unchanged, for every coded
    format, and changes neither queue's format."""
    with M2MNode(find_node()) as node:
        before = (g_fmt(node.fd, OUTPUT), g_fmt(node.fd, CAPTURE))
        for code in node.formats(OUTPUT):
            tried = fmt_ioctl(node.fd, raw.IOC.TRY_FMT, OUTPUT, code, 320, 240, colour)
            assert colorimetry(tried) == colour, code
        assert (g_fmt(node.fd, OUTPUT), g_fmt(node.fd, CAPTURE)) == before


@pytest.mark.parametrize(("given", "kept"), [
    # DEFAULT: the driver fills in its default colorspace. A DEFAULT or invalid
    # colorspace makes the V4L2 core itself reset the other three fields before
    # the driver sees them (v4l_sanitize_colorspace() in v4l2-ioctl.c, 6.1 and
    # 6.12: "if (!v4l2_is_colorspace_valid(*colorspace))", and DEFAULT is not
    # valid there), so they come back DEFAULT whatever the application passed.
    (Colorimetry(CS.DEFAULT, XF.DEFAULT, YE.DEFAULT, QU.DEFAULT),
     Colorimetry(CS.REC709, XF.DEFAULT, YE.DEFAULT, QU.DEFAULT)),
    (Colorimetry(CS.DEFAULT, XF.SRGB, YE._601, QU.FULL_RANGE),
     Colorimetry(CS.REC709, XF.DEFAULT, YE.DEFAULT, QU.DEFAULT)),
    # out of range: the default; BT878 is deprecated ("No driver will ever return this")
    (Colorimetry(0xFF, 0xFF, 0xFF, 0xFF), Colorimetry(CS.REC709, XF.DEFAULT, YE.DEFAULT,
                                                       QU.DEFAULT)),
    (Colorimetry(CS.BT878, XF.SMPTE2084 + 1, YE.SMPTE240M + 1, QU.LIM_RANGE + 1),
     Colorimetry(CS.REC709, XF.DEFAULT, YE.DEFAULT, QU.DEFAULT)),
    # an invalid colorspace: all four reset by the core, as above
    (Colorimetry(CS.DCI_P3 + 1, XF.SMPTE2084, 128, QU.LIM_RANGE),  # 128: an HSV encoding
     Colorimetry(CS.REC709, XF.DEFAULT, YE.DEFAULT, QU.DEFAULT)),
    # a valid colorspace keeps the valid fields; the invalid encoding alone resets
    (Colorimetry(CS.SRGB, XF.SMPTE2084, 128, QU.LIM_RANGE),
     Colorimetry(CS.SRGB, XF.SMPTE2084, YE.DEFAULT, QU.LIM_RANGE)),
], ids=["all-default", "default-colorspace", "all-0xff", "bt878-and-beyond", "hsv-enc",
         "hsv-enc-valid-colorspace"])
def test_try_and_s_fmt_output_replace_what_is_not_valid(given: Colorimetry,
                                                        kept: Colorimetry) -> None:
    with M2MNode(find_node()) as node:
        tried = fmt_ioctl(node.fd, raw.IOC.TRY_FMT, OUTPUT, "VP90", 320, 240, given)
        assert colorimetry(tried) == kept
        fmt_ioctl(node.fd, raw.IOC.S_FMT, OUTPUT, "VP90", 320, 240, given)
        assert g_fmt(node.fd, OUTPUT) == g_fmt(node.fd, CAPTURE) == kept


@pytest.mark.parametrize("colour", ROUND_TRIP, ids=lambda c: CS(c.colorspace).name)
def test_s_fmt_output_hands_the_colorimetry_to_capture(colour: Colorimetry) -> None:
    """S_FMT(OUTPUT) keeps it, G_FMT on both queues reports it, and TRY_FMT /
    S_FMT(CAPTURE) cannot change it (the decoder's, not the client's, choice)."""
    other = Colorimetry(CS.JPEG, XF.NONE, YE.XV601, QU.FULL_RANGE)
    with M2MNode(find_node()) as node:
        out = fmt_ioctl(node.fd, raw.IOC.S_FMT, OUTPUT, "H264", 176, 144, colour)
        assert colorimetry(out) == colour
        assert g_fmt(node.fd, OUTPUT) == g_fmt(node.fd, CAPTURE) == colour
        tried = fmt_ioctl(node.fd, raw.IOC.TRY_FMT, CAPTURE, "NV12", 176, 144, other)
        assert colorimetry(tried) == colour
        fmt_ioctl(node.fd, raw.IOC.S_FMT, CAPTURE, "NV12", 176, 144, other)
        assert g_fmt(node.fd, CAPTURE) == colour


@dataclass
class Decoded:
    at_change: Colorimetry   # G_FMT(CAPTURE) at the SOURCE_CHANGE event
    at_end: Colorimetry      # G_FMT(CAPTURE) after the LAST buffer
    frames: int
    changes: int


def decode(node: M2MNode, name: str, app: Colorimetry) -> Decoded:
    """*name* through the node with raw ioctls, OUTPUT set to *app*'s colorimetry."""
    entry = corpus.entry(name)
    code = codecs.BY_NAME[entry.codec].fourcc
    packets = [p.data for p in read_all(corpus.path(name))[1]]
    out = fmt_ioctl(node.fd, raw.IOC.S_FMT, OUTPUT, code, entry.width, entry.height, app)
    assert colorimetry(out) == app
    assert g_fmt(node.fd, CAPTURE) == app  # before the stream says anything
    output = BufferQueue(node.fd, OUTPUT)
    capture = BufferQueue(node.fd, CAPTURE)
    at_change: Colorimetry | None = None
    frames = changes = 0
    try:
        free = list(range(output.request(4)))
        node.subscribe(EVENT_SOURCE_CHANGE)
        node.subscribe(EVENT_EOS)
        output.streamon()
        todo = list(enumerate(packets))
        stop_sent = last = False
        deadline = time.monotonic() + TIMEOUT
        while not last:
            assert time.monotonic() < deadline, (
                f"{name}: {frames} frames, SOURCE_CHANGE {'seen' if at_change else 'not seen'}")
            moved = False
            while (buf := output.dequeue()) is not None:
                assert not buf.error, buf
                free.append(buf.index)
                moved = True
            while free and todo:
                timestamp, data = todo.pop(0)
                output.queue(free.pop(), data, timestamp)
                moved = True
            if not todo and not stop_sent:
                node.decoder_cmd(V4L2_DEC_CMD_STOP)
                stop_sent = moved = True
            while (event := node.dequeue_event()) is not None:
                moved = True
                if event[0] != EVENT_SOURCE_CHANGE:
                    continue
                changes += 1
                at_change = g_fmt(node.fd, CAPTURE)
                for index in range(capture.request(4)):
                    capture.queue(index)
                capture.streamon()
            while capture.streaming and not last and (buf := capture.dequeue()) is not None:
                moved = True
                assert not buf.error, buf
                frames += bool(buf.bytesused)
                last = buf.last
                if not last:
                    capture.queue(buf.index)
            if not moved:
                time.sleep(0.005)
        at_end = g_fmt(node.fd, CAPTURE)
    finally:
        capture.close()
        output.close()
    assert at_change is not None, f"{name}: no SOURCE_CHANGE"
    return Decoded(at_change, at_end, frames, changes)


@pytest.mark.parametrize("name", TAGGED + UNTAGGED)
def test_capture_reports_the_streams_colour_after_source_change(name: str) -> None:
    """G_FMT(CAPTURE) at SOURCE_CHANGE: the stream's description where it has
    one V4L2 can name, the application's elsewhere; unchanged to the end of
    the decode (every frame decoded, none in error). S_FMT(OUTPUT) afterwards
    starts over from the application's colorimetry."""
    want = expected(name, APP)
    if name in TAGGED:
        assert want != APP  # the clip does signal something V4L2 names
    with M2MNode(find_node()) as node:
        got = decode(node, name, APP)
        assert (got.at_change, got.at_end) == (want, want)
        assert (got.frames, got.changes) == (corpus.entry(name).frames, 1)
        code = codecs.BY_NAME[corpus.entry(name).codec].fourcc
        fmt_ioctl(node.fd, raw.IOC.S_FMT, OUTPUT, code, 128, 96, APP_AFTER)
        assert g_fmt(node.fd, CAPTURE) == APP_AFTER
    assert daemon_state() == "ready"


def test_an_untagged_stream_keeps_every_field_of_the_application() -> None:
    """H.264 without a colour description in its VUI (nor a range): all four
    fields are the application's, whatever they are."""
    for app in (APP, ROUND_TRIP[1]):
        assert expected("h264-high-128x96", app) == app
        with M2MNode(find_node()) as node:
            got = decode(node, "h264-high-128x96", app)
        assert (got.at_change, got.at_end) == (app, app)


def test_the_streams_fields_replace_the_applications_one_by_one() -> None:
    """VP9 signals only a matrix and a range: the colorspace and the transfer
    function stay the application's. The same clip with another application
    colorimetry: only those two follow it."""
    name = "vp9-bt709-tv-128x96"
    for app in (APP, ROUND_TRIP[1]):
        with M2MNode(find_node()) as node:
            got = decode(node, name, app)
        assert got.at_change == Colorimetry(app.colorspace, app.xfer_func, YE._709,
                                            QU.LIM_RANGE) == expected(name, app)
