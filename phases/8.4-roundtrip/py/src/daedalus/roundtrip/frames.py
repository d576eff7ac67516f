"""Decoded frames as the protocol reports them: tightly packed NV12 / P010 and their digest.

A frame is reported in the layout the kernel's CAPTURE queue offers:

- 8-bit video as **NV12**: the luma plane, ``height`` rows of ``width``
  bytes, then the interleaved CbCr plane, ``ceil(height / 2)`` rows of
  ``2 * ceil(width / 2)`` bytes (Cb, Cr, Cb, Cr ...);
- deeper video (10-bit) as **P010**: the same two planes in 16-bit
  little-endian words holding the sample in their upper 10 bits, so every row
  is twice as long (``2 * width`` bytes of luma).

Rows are packed without any padding, whatever the decoder's stride (its
``line_size``). For even sizes this is exactly what
``ffmpeg -i FILE -pix_fmt nv12 -f rawvideo -`` (or ``p010le``) writes per
frame, ``width * height * 3 / 2`` bytes (twice that for P010), and the
digest is FNV-1a 64 (``daedalus.proto.fnv1a64``) over those bytes in that
order: luma rows top to bottom, then chroma rows top to bottom.

Other decoder formats are converted by FFmpeg's swscale
(``VideoFrame.reformat``): yuv420p -> nv12 and yuv420p10le -> p010le are
lossless re-arrangements, identical to what the ffmpeg CLI's automatic
conversion does. Subsampling 4:2:2 / 4:4:4 video to 4:2:0 is a filter, whose
output need not match the ffmpeg CLI's (different default scaler flags).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from daedalus.proto import FRAME_KEY, FrameInfo, PixFmt, fnv1a64

if TYPE_CHECKING:
    import av

# The swscale format name of each protocol layout.
AV_FORMATS = {PixFmt.NV12: "nv12", PixFmt.P010: "p010le"}


def layout_for(frame: av.VideoFrame) -> PixFmt:
    """NV12 for 8-bit video, P010 for anything deeper (10-bit; 12-bit loses
    its two lowest bits)."""
    bits = max((c.bits for c in frame.format.components), default=8)
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
class PackedFrame:
    """One decoded frame in its protocol layout, planes tightly packed."""

    width: int
    height: int
    pixfmt: PixFmt
    key: bool
    pts: int | None
    luma: npt.NDArray[np.uint8]    # rows x row bytes
    chroma: npt.NDArray[np.uint8]  # interleaved CbCr, rows x row bytes

    @property
    def digest(self) -> int:
        """FNV-1a 64 over the luma rows, then the chroma rows."""
        return fnv1a64(self.luma, self.chroma)

    def tobytes(self) -> bytes:
        return self.luma.tobytes() + self.chroma.tobytes()

    def info(self, timestamp: int) -> FrameInfo:
        return FrameInfo(width=self.width, height=self.height, pixfmt=self.pixfmt,
                         flags=FRAME_KEY if self.key else 0, digest=self.digest,
                         timestamp=timestamp)


def frame_size(width: int, height: int, pixfmt: PixFmt) -> int:
    """Bytes of one tightly packed frame (what ffmpeg's rawvideo writes per frame)."""
    sample = 2 if pixfmt == PixFmt.P010 else 1
    return (width * height + 2 * ((width + 1) // 2) * ((height + 1) // 2)) * sample


def pack(frame: av.VideoFrame) -> PackedFrame:
    """*frame* converted to NV12 or P010 and packed tightly (see the module doc)."""
    pixfmt = layout_for(frame)
    target = AV_FORMATS[pixfmt]
    converted = frame if frame.format.name == target else frame.reformat(format=target)
    width, height = converted.width, converted.height
    sample = 2 if pixfmt == PixFmt.P010 else 1
    luma = _rows(converted.planes[0], height, width * sample)
    chroma = _rows(converted.planes[1], (height + 1) // 2, 2 * ((width + 1) // 2) * sample)
    return PackedFrame(width=width, height=height, pixfmt=pixfmt, key=bool(frame.key_frame),
                       pts=frame.pts, luma=luma, chroma=chroma)
