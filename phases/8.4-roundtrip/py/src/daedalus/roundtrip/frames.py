"""Decoded frames as the protocol reports them: tightly packed NV12 / P010 and their digest.

A frame is reported in the layout the kernel's CAPTURE queue offers:

- 8-bit video as **NV12**: the luma plane, ``height`` rows of ``width``
  bytes, then the interleaved CbCr plane, ``ceil(height / 2)`` rows of
  ``2 * ceil(width / 2)`` bytes (Cb, Cr, Cb, Cr ...);
- 10-bit video as **P010**: the same two planes in 16-bit little-endian
  words holding the sample in their upper 10 bits, so every row is twice as
  long (``2 * width`` bytes of luma).

Rows are packed without any padding, whatever the decoder's stride (its
``line_size``). For even sizes this is exactly what
``ffmpeg -i FILE -pix_fmt nv12 -f rawvideo -`` (or ``p010le``) writes per
frame, ``width * height * 3 / 2`` bytes (twice that for P010), and the
digest is FNV-1a 64 (``daedalus.proto.fnv1a64``) over those bytes in that
order: luma rows top to bottom, then chroma rows top to bottom.

Only the decoder's own samples are handed out. A 4:2:0 frame of at most 10
bits is re-arranged, never filtered: the planar layouts FFmpeg's decoders
output (yuv420p, yuvj420p, yuv420p10le) are interleaved here, sample for
sample (no range conversion: swscale would squeeze yuvj420p's full range);
other 4:2:0 layouts (nv12 and p010le as they are, nv21, big-endian ...) go
through swscale (``VideoFrame.reformat``), which only moves samples for
those. Any other layout -- 4:2:2 or 4:4:4 chroma, 4:0:0 (no chroma), RGB,
more than 10 bits -- would need a filter (a chroma downscale, or dropping
bits), so ``pack`` raises ``UnsupportedLayout`` and the stream is refused
(the handlers answer DECODE_ERROR / EOPNOTSUPP with its one-line message)
rather than converted.

Each frame also carries its colour description (protocol v9), as FFmpeg's
decoder read it from the bitstream (``Colour.of``): ITU-T H.273 code points
for the primaries, transfer characteristics and matrix coefficients, and
FFmpeg's AVColorRange. The daemon passes the code points on without judging
them; which of them V4L2 can name is the kernel's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from daedalus.proto import (
    COLOUR_UNSPECIFIED,
    FRAME_KEY,
    RANGE_UNSPECIFIED,
    FrameInfo,
    PixFmt,
    fnv1a64,
)

if TYPE_CHECKING:
    import av

# The swscale format name of each protocol layout.
AV_FORMATS = {PixFmt.NV12: "nv12", PixFmt.P010: "p010le"}
# Planar 4:2:0 layouts whose planes pack() interleaves itself (little-endian samples).
PLANAR_420 = frozenset({"yuv420p", "yuvj420p", "yuv420p10le"})
MAX_BITS = 10  # P010's sample
CODE_POINT_MAX = 0xFF  # each colour field of struct daedalus_frame_info is a __u8


class UnsupportedLayout(ValueError):
    """A decoded frame whose layout NV12 / P010 cannot carry without filtering
    (4:2:2 / 4:4:4 chroma, no chroma, RGB, more than 10 bits). ``str()`` is a
    one-line message for the kernel and the log; ``pix_fmt`` FFmpeg's name of
    the layout and ``what`` the property that rules it out."""

    def __init__(self, pix_fmt: str, what: str, delivers: str) -> None:
        super().__init__(f"the stream decodes to {pix_fmt} ({what}); daedalus-v4l2 delivers "
                         f"{delivers}, so it is refused rather than converted")
        self.pix_fmt = pix_fmt
        self.what = what


def chroma_subsampling(fmt: av.VideoFormat) -> str:
    """The J:a:b name of *fmt*'s chroma subsampling ("4:2:0", "4:4:4" ...),
    "4:0:0" without chroma, "RGB" for RGB layouts; from FFmpeg's pixel format
    descriptor (the chroma planes' size relative to a 64 x 64 luma plane)."""
    if fmt.is_rgb:
        return "RGB"
    if len([c for c in fmt.components if not c.is_alpha]) < 3:
        return "4:0:0"
    w, h = fmt.chroma_width(64), fmt.chroma_height(64)
    names = {(64, 64): "4:4:4", (32, 64): "4:2:2", (32, 32): "4:2:0", (16, 64): "4:1:1",
             (64, 32): "4:4:0", (16, 16): "4:1:0"}
    return names.get((w, h), f"{64 // w}x{64 // h} subsampled")


def unsupported_what(fmt: av.VideoFormat, chroma: str) -> str:
    """What of *fmt* (whose chroma subsampling is *chroma*) no layout carries,
    in words: a palette, Bayer, no chroma, or the subsampling."""
    if fmt.has_palette:
        return "a palette"
    if fmt.is_bayer:
        return "Bayer"
    if chroma == "4:0:0":
        return "4:0:0, no chroma"
    return f"{chroma} chroma" if chroma[0].isdigit() else chroma


def layout_for(frame: av.VideoFrame) -> PixFmt:
    """NV12 for 8-bit 4:2:0 video, P010 for 9- and 10-bit 4:2:0; UnsupportedLayout
    for anything else."""
    fmt = frame.format
    chroma = chroma_subsampling(fmt)
    if chroma != "4:2:0" or fmt.has_palette or fmt.is_bayer:
        raise UnsupportedLayout(fmt.name, unsupported_what(fmt, chroma),
                                "4:2:0 only (NV12 / P010)")
    bits = max((c.bits for c in fmt.components), default=8)
    if bits > MAX_BITS:
        raise UnsupportedLayout(fmt.name, f"{bits}-bit samples",
                                f"8-bit NV12 and {MAX_BITS}-bit P010 only")
    return PixFmt.NV12 if bits <= 8 else PixFmt.P010


def _rows(plane: av.video.plane.VideoPlane, rows: int, row_bytes: int) -> npt.NDArray[np.uint8]:
    """*rows* rows of *row_bytes* bytes of *plane*, contiguous: a view when the
    decoder's stride equals the row length, else one copy without the padding."""
    stride = plane.line_size
    if stride < row_bytes:
        raise ValueError(f"plane stride {stride} is shorter than a row of {row_bytes} bytes")
    data = np.frombuffer(memoryview(plane), dtype=np.uint8)
    if data.size < (rows - 1) * stride + row_bytes:
        raise ValueError(f"plane of {data.size} bytes cannot hold {rows} rows of {row_bytes} "
                         f"bytes with stride {stride}")
    if stride == row_bytes:
        return data[:rows * row_bytes].reshape(rows, row_bytes)
    if data.size < rows * stride:  # the last row may stop at its last byte
        data = np.concatenate([data, np.zeros(rows * stride - data.size, np.uint8)])
    return np.ascontiguousarray(data[:rows * stride].reshape(rows, stride)[:, :row_bytes])


@dataclass(frozen=True)
class Colour:
    """A frame's colour description as struct daedalus_frame_info carries it:
    *primaries*, *transfer*, *matrix* are ITU-T H.273 code points
    (COLOUR_UNSPECIFIED when the bitstream signals none), *range* FFmpeg's
    AVColorRange (RANGE_UNSPECIFIED, RANGE_LIMITED, RANGE_FULL)."""

    primaries: int = COLOUR_UNSPECIFIED
    transfer: int = COLOUR_UNSPECIFIED
    matrix: int = COLOUR_UNSPECIFIED
    range: int = RANGE_UNSPECIFIED

    @classmethod
    def of(cls, frame: av.VideoFrame) -> Colour:
        """FFmpeg's description of *frame*: AVFrame's color_primaries,
        color_trc, colorspace and color_range, which the decoder sets from the
        bitstream (VP9's color_space and color_range, H.264's VUI, AV1's
        color_config); FFmpeg's values are H.273's code points. A value that
        does not fit the wire's byte (FFmpeg's private code points from 256
        on) is reported as unspecified."""

        def code(value: int, unspecified: int) -> int:
            return value if 0 <= value <= CODE_POINT_MAX else unspecified

        return cls(primaries=code(frame.color_primaries, COLOUR_UNSPECIFIED),
                   transfer=code(frame.color_trc, COLOUR_UNSPECIFIED),
                   matrix=code(frame.colorspace, COLOUR_UNSPECIFIED),
                   range=code(frame.color_range, RANGE_UNSPECIFIED))


@dataclass(frozen=True)
class PackedFrame:
    """One decoded frame in its protocol layout, planes tightly packed."""

    width: int
    height: int
    pixfmt: PixFmt
    key: bool
    pts: int | None
    luma: npt.NDArray[np.uint8]    # rows x row bytes
    chroma: npt.NDArray[np.uint8]  # interleaved CbCr, rows x row bytes
    colour: Colour = Colour()

    @property
    def digest(self) -> int:
        """FNV-1a 64 over the luma rows, then the chroma rows."""
        return fnv1a64(self.luma, self.chroma)

    def tobytes(self) -> bytes:
        return self.luma.tobytes() + self.chroma.tobytes()

    def info(self, timestamp: int) -> FrameInfo:
        return FrameInfo(width=self.width, height=self.height, pixfmt=self.pixfmt,
                         flags=FRAME_KEY if self.key else 0, digest=self.digest,
                         timestamp=timestamp, primaries=self.colour.primaries,
                         transfer=self.colour.transfer, matrix=self.colour.matrix,
                         range=self.colour.range)


def frame_size(width: int, height: int, pixfmt: PixFmt) -> int:
    """Bytes of one tightly packed frame (what ffmpeg's rawvideo writes per frame)."""
    sample = 2 if pixfmt == PixFmt.P010 else 1
    return (width * height + 2 * ((width + 1) // 2) * ((height + 1) // 2)) * sample


def _interleave(cb: npt.NDArray[Any], cr: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Cb and Cr rows (same shape) as CbCr rows: Cb, Cr, Cb, Cr ..."""
    out = np.empty((cb.shape[0], 2 * cb.shape[1]), cb.dtype)
    out[:, 0::2], out[:, 1::2] = cb, cr
    return out


def _pack_planar(frame: av.VideoFrame, pixfmt: PixFmt) -> tuple[npt.NDArray[np.uint8],
                                                                npt.NDArray[np.uint8]]:
    """Luma and CbCr rows of a planar 4:2:0 frame (PLANAR_420): copied, deeper
    samples moved to the upper bits of their 16-bit word (P010)."""
    width, height = frame.width, frame.height
    cw, ch = (width + 1) // 2, (height + 1) // 2
    planes = frame.planes
    if pixfmt == PixFmt.NV12:
        luma = np.array(_rows(planes[0], height, width))
        return luma, _interleave(_rows(planes[1], ch, cw), _rows(planes[2], ch, cw))
    shift = 16 - max(c.bits for c in frame.format.components)
    y, cb, cr = (_rows(plane, rows, 2 * n).view("<u2")
                 for plane, rows, n in ((planes[0], height, width), (planes[1], ch, cw),
                                        (planes[2], ch, cw)))
    return (y << shift).view(np.uint8), _interleave(cb << shift, cr << shift).view(np.uint8)


def pack(frame: av.VideoFrame) -> PackedFrame:
    """*frame* as tightly packed NV12 or P010 (see the module doc); UnsupportedLayout
    for a layout they cannot carry exactly."""
    pixfmt = layout_for(frame)
    if frame.format.name in PLANAR_420:
        luma, chroma = _pack_planar(frame, pixfmt)
    else:
        target = AV_FORMATS[pixfmt]
        converted = frame if frame.format.name == target else frame.reformat(format=target)
        width, height = converted.width, converted.height
        sample = 2 if pixfmt == PixFmt.P010 else 1
        luma = _rows(converted.planes[0], height, width * sample)
        chroma = _rows(converted.planes[1], (height + 1) // 2,
                       2 * ((width + 1) // 2) * sample)
    return PackedFrame(width=frame.width, height=frame.height, pixfmt=pixfmt,
                       key=bool(frame.key_frame), pts=frame.pts, luma=luma, chroma=chroma,
                       colour=Colour.of(frame))
