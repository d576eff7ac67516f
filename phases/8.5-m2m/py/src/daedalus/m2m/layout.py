"""NV12 / P010 frames between their tightly packed form and a V4L2 CAPTURE buffer.

A CAPTURE buffer of the daedalus-v4l2 node is one plane: ``height`` luma rows
of ``bytesperline`` bytes, then the interleaved CbCr plane starting at
``bytesperline * height`` with ``height / 2`` rows of the same stride. The
buffer's ``height`` (the CAPTURE format's) may exceed the picture's, and
``bytesperline`` the picture's row length (64-byte aligned strides).

Tightly packed (phase 8.4's frames.py, and ``ffmpeg -pix_fmt nv12 -f
rawvideo``): ``h`` luma rows of ``w`` bytes, then ``ceil(h / 2)`` chroma
rows of ``2 * ceil(w / 2)`` bytes; P010 doubles every row length.

``lay_out`` is the daemon's half (FETCH answers, or the CAPTURE buffer
itself with DAEDALUS_FETCH_DMABUF), ``crop`` the application's (the decode
command); both are whole-plane numpy copies, no per-row loops.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from daedalus.proto import PixFmt


@dataclass(frozen=True)
class Geometry:
    """Row lengths and counts of a picture of *width* x *height* in *pixfmt*."""

    width: int
    height: int
    pixfmt: PixFmt = PixFmt.NV12

    @property
    def sample(self) -> int:
        return 2 if self.pixfmt == PixFmt.P010 else 1

    @property
    def luma_row(self) -> int:
        return self.width * self.sample

    @property
    def chroma_row(self) -> int:
        return 2 * ((self.width + 1) // 2) * self.sample

    @property
    def chroma_rows(self) -> int:
        return (self.height + 1) // 2

    @property
    def min_bytesperline(self) -> int:
        """The shortest stride both planes' rows fit in."""
        return max(self.luma_row, self.chroma_row)

    @property
    def packed_size(self) -> int:
        return self.luma_row * self.height + self.chroma_row * self.chroma_rows


def buffer_size(bytesperline: int, height: int) -> int:
    """Bytes of a CAPTURE buffer of *height* luma rows: bytesperline * height * 3 / 2
    (the chroma plane has height / 2 rows)."""
    return bytesperline * (height + height // 2)


def fits(geometry: Geometry, bytesperline: int, height: int) -> str | None:
    """Why a buffer of *bytesperline* x *height* cannot hold the picture, or None."""
    if bytesperline < geometry.min_bytesperline:
        return (f"bytesperline {bytesperline} is shorter than the picture's rows "
                f"({geometry.min_bytesperline} bytes)")
    if height < geometry.height:
        return f"height {height} is less than the picture's {geometry.height} rows"
    if height // 2 < geometry.chroma_rows:
        return (f"height {height} leaves {height // 2} chroma rows, the picture has "
                f"{geometry.chroma_rows}")
    return None


def lay_out(luma: npt.NDArray[np.uint8], chroma: npt.NDArray[np.uint8], bytesperline: int,
            height: int, out: npt.NDArray[np.uint8] | None = None, *,
            zeroed: bool = True) -> npt.NDArray[np.uint8]:
    """The tightly packed planes *luma* (rows x row bytes) and *chroma* in a
    buffer of *bytesperline* x *height*: rows zero-padded, rows past the
    picture zero. *out* (``buffer_size`` bytes) is filled in place when
    given: only the picture is written if it is *zeroed* already; otherwise
    (a mapped CAPTURE buffer holding an older frame) the padding and the rows
    past the picture are written with zeros too, each byte once. The caller
    checks ``fits`` first."""
    size = buffer_size(bytesperline, height)
    if out is None:
        out, zeroed = np.zeros(size, np.uint8), True
    elif out.size != size:
        raise ValueError(f"output of {out.size} bytes, the layout takes {size}")
    split = bytesperline * height
    for plane, rows in ((luma, out[:split].reshape(height, bytesperline)),
                        (chroma, out[split:].reshape(height // 2, bytesperline))):
        rows[:plane.shape[0], :plane.shape[1]] = plane
        if not zeroed:
            rows[:plane.shape[0], plane.shape[1]:] = 0
            rows[plane.shape[0]:] = 0
    return out


def crop(buffer: bytes | bytearray | memoryview | npt.NDArray[np.uint8], bytesperline: int,
         height: int, geometry: Geometry) -> bytes:
    """The tightly packed picture of *geometry* out of a CAPTURE buffer laid
    out as *bytesperline* x *height* (the inverse of ``lay_out``)."""
    reason = fits(geometry, bytesperline, height)
    if reason is not None:
        raise ValueError(reason)
    data = np.frombuffer(buffer, np.uint8)
    size = buffer_size(bytesperline, height)
    if data.size < size:
        raise ValueError(f"buffer of {data.size} bytes, a {bytesperline} x {height} layout "
                         f"takes {size}")
    split = bytesperline * height
    y = data[:split].reshape(height, bytesperline)[:geometry.height, :geometry.luma_row]
    c = data[split:size].reshape(height // 2, bytesperline)[:geometry.chroma_rows,
                                                            :geometry.chroma_row]
    return y.tobytes() + c.tobytes()
