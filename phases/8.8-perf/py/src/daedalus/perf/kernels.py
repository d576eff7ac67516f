"""Phase 8.8's implementations of the daemon's per-frame kernels (``daedalus.m2m.kernels``).

Registered in the ``daedalus.kernels`` entry-point group; the table prefers
them to phase 8.5's references unless ``DAEDALUS_DISPATCH`` says otherwise.

``place`` = ``direct`` (vectorised numpy): the decoded picture goes from
FFmpeg's planes straight into the CAPTURE buffer, each byte copied once:
luma rows read through a strided view of the plane (no copy without its
padding first) and written at the buffer's stride; a Cb and Cr pair
written as one little-endian word (NV12: Cr << 8 | Cb) or double word (P010:
both shifted to the upper bits of their 16-bit halves), contiguous writes
that vectorise where byte-strided ones do not (a stride that does not hold
whole words takes the strided writes); then, unless the buffer is zero
already, the padding and the rows past the picture set to zero. The
reference packs tightly first and lays out second: two copies and a
temporary of the frame's size. Planar 4:2:0 with 8-bit samples (NV12) and
9- or 10-bit little-endian ones (P010), and planar 8-bit 4:2:2 (NV16) and
4:4:4 (NV24): what FFmpeg's VP9, H.264 and AV1 decoders output, the chroma
planes' rows and columns as the layout's table (``daedalus.m2m.layout``)
says. Anything else (a semi-planar or big-endian decoder output, an odd
P010 stride) is left to the reference (``NotImplemented``).
"""

from __future__ import annotations

import av
import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import as_strided

from daedalus.m2m.kernels import Implementation
from daedalus.m2m.layout import LAYOUTS, buffer_size
from daedalus.proto import PixFmt

# FFmpeg's planar 8-bit layouts and the CAPTURE layout that carries each
PLANAR_8 = {"yuv420p": PixFmt.NV12, "yuvj420p": PixFmt.NV12,
            "yuv422p": PixFmt.NV16, "yuvj422p": PixFmt.NV16,
            "yuv444p": PixFmt.NV24, "yuvj444p": PixFmt.NV24}
PLANAR_DEEP = {"yuv420p9le": 9, "yuv420p10le": 10}  # P010's


def _plane(plane: av.video.plane.VideoPlane, rows: int, samples: int,
           dtype: type[np.generic]) -> npt.NDArray[np.generic]:
    """*rows* x *samples* samples of *plane* as a view at the plane's stride."""
    size = np.dtype(dtype).itemsize
    stride = plane.line_size
    data = np.frombuffer(memoryview(plane), np.uint8)
    if stride < samples * size or data.size < (rows - 1) * stride + samples * size:
        raise ValueError(f"plane of {data.size} bytes, stride {stride}, cannot hold {rows} "
                         f"rows of {samples} samples")
    if stride % size or data.ctypes.data % size:
        raise ValueError("plane not aligned to its samples")
    return as_strided(data.view(dtype) if data.size % size == 0 else
                      data[:data.size - data.size % size].view(dtype),
                      (rows, samples), (stride, size), writeable=False)


def place_direct(frame: av.VideoFrame, pixfmt: PixFmt, bytesperline: int, height: int,
                 out: npt.NDArray[np.uint8], zeroed: bool) -> object:
    """``place`` in one copy (see the module doc); NotImplemented for a frame
    or a buffer it does not handle."""
    name = frame.format.name
    deep = PLANAR_DEEP.get(name)
    if not (PLANAR_8.get(name) == pixfmt
            or (pixfmt == PixFmt.P010 and deep is not None and bytesperline % 2 == 0)):
        return NotImplemented
    layout = LAYOUTS[pixfmt]
    width, rows = frame.width, frame.height
    cw, ch = -(-width // layout.hdiv), -(-rows // layout.vdiv)
    split = bytesperline * height
    stride = layout.chroma_stride(bytesperline)
    size = buffer_size(bytesperline, height, pixfmt)
    if out.size != size:
        raise ValueError(f"output of {out.size} bytes, a {bytesperline} x {height} "
                         f"{layout.fourcc} layout takes {size}")
    luma = out[:split].reshape(height, bytesperline)
    chroma = out[split:].reshape(layout.chroma_rows_of(height), stride)
    planes = frame.planes
    if deep is None:
        luma[:rows, :width] = _plane(planes[0], rows, width, np.uint8)
        cb, cr = _plane(planes[1], ch, cw, np.uint8), _plane(planes[2], ch, cw, np.uint8)
        if stride % 2 == 0:  # a CbCr pair is one little-endian word: Cr << 8 | Cb
            pairs = chroma.view("<u2")[:ch, :cw]
            np.left_shift(cr, 8, out=pairs, dtype=np.uint16)
            pairs |= cb
        else:
            chroma[:ch, 0:2 * cw:2] = cb
            chroma[:ch, 1:2 * cw:2] = cr
        row_bytes = width
    else:
        shift = 16 - deep
        np.left_shift(_plane(planes[0], rows, width, np.uint16), shift,
                      out=luma.view("<u2")[:rows, :width])
        cb, cr = _plane(planes[1], ch, cw, np.uint16), _plane(planes[2], ch, cw, np.uint16)
        if bytesperline % 4 == 0:  # a CbCr pair is one little-endian double word
            pairs = chroma.view("<u4")[:ch, :cw]
            np.left_shift(cr, 16 + shift, out=pairs, dtype=np.uint32)
            pairs |= np.left_shift(cb, shift)  # (16-bit: what spills is dropped, as P010's)
        else:
            chroma16 = chroma.view("<u2")
            np.left_shift(cb, shift, out=chroma16[:ch, 0:2 * cw:2])
            np.left_shift(cr, shift, out=chroma16[:ch, 1:2 * cw:2])
        row_bytes = 2 * width
    if not zeroed:
        chroma_bytes = 2 * cw * (2 if deep else 1)
        luma[:rows, row_bytes:] = 0
        luma[rows:] = 0
        chroma[:ch, chroma_bytes:] = 0
        chroma[ch:] = 0
    return None


PLACE_DIRECT = Implementation(
    "place", "direct", place_direct, rank=1,
    about="FFmpeg's planes straight into the CAPTURE buffer (numpy): one copy")
