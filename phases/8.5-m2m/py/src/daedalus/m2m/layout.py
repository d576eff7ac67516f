"""The CAPTURE layouts: frames between their tightly packed form and a V4L2 CAPTURE buffer.

Every layout (``LAYOUTS``, one row per ``enum daedalus_pixfmt``; the
kernel's decoded format table has the same rows) is one plane: ``height``
luma rows of ``bytesperline`` bytes, then the interleaved CbCr plane
starting at ``bytesperline * height``. What differs is data of the row:

======  =====  ============  ======  ================  ==========
layout  depth  sample bytes  chroma  CbCr row stride   CbCr rows
======  =====  ============  ======  ================  ==========
NV12    8      1             4:2:0   bytesperline      height / 2
P010    10     2             4:2:0   bytesperline      height / 2
NV16    8      1             4:2:2   bytesperline      height
NV24    8      1             4:4:4   2 * bytesperline  height
======  =====  ============  ======  ================  ==========

(V4L2's single-plane NV12, P010, NV16 and NV24: chroma rows as padded as
luma rows, so without horizontal subsampling twice as long.) The buffer's
``height`` (the CAPTURE format's) may exceed the picture's, and
``bytesperline`` the picture's row length.

Tightly packed (phase 8.4's frames.py, and ``ffmpeg -pix_fmt nv12 / p010le /
nv16 / nv24 -f rawvideo``): ``h`` luma rows of ``w`` samples, then
``ceil(h / vdiv)`` CbCr rows of ``2 * ceil(w / hdiv)`` samples (``Geometry``).

NV12 and P010 are the daemon's own layouts. NV16 and NV24 are opt-in, as in
the kernel's table: the daemon delivers them only when a later phase's
distribution enables them through the ``daedalus.layouts`` entry-point
group (phase 8.8, whose kernel layer offers them on the node); until then a
4:2:2 or 4:4:4 stream is refused (``layout_for``: UnsupportedLayout,
phases 8.5-8.7's message). The client side (crop, the decode tool) knows
every layout whatever the daemon delivers: it takes what the node gives.

``lay_out`` is the daemon's half (FETCH answers, or the CAPTURE buffer
itself with DAEDALUS_FETCH_DMABUF), ``crop`` the application's (the decode
command); both are whole-plane numpy copies, no per-row loops. ``pack`` is
the reference's tight packing of a decoded picture (phase 8.4's rules).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from daedalus.proto import PixFmt
from daedalus.roundtrip.frames import (
    UnsupportedLayout,
    _interleave,
    _rows,
    chroma_subsampling,
    unsupported_what,
)
from daedalus.roundtrip.frames import (
    pack as pack_420,
)

if TYPE_CHECKING:
    import av

log = logging.getLogger("daedalus.m2m")

GROUP = "daedalus.layouts"  # entry points: the PixFmt of an opt-in layout each


@dataclass(frozen=True)
class Layout:
    """One CAPTURE layout: V4L2's *fourcc* and FFmpeg's *av_name* for it,
    the *chroma* subsampling it carries (``frames.chroma_subsampling``'s
    names) at up to *bits* bits, *sample* bytes a sample, one chroma sample
    per *hdiv* luma samples of a row and one chroma row per *vdiv* luma
    rows. *opt_in*: delivered by the daemon only once enabled (``GROUP``)."""

    pixfmt: PixFmt
    fourcc: str
    av_name: str
    chroma: str
    bits: int
    sample: int
    hdiv: int
    vdiv: int
    opt_in: bool = False

    def chroma_stride(self, bytesperline: int) -> int:
        """Bytes from one CbCr row to the next in a buffer of luma stride *bytesperline*."""
        return bytesperline * 2 // self.hdiv

    def chroma_rows_of(self, height: int) -> int:
        """CbCr rows in a buffer of *height* luma rows."""
        return height // self.vdiv


LAYOUTS: dict[PixFmt, Layout] = {layout.pixfmt: layout for layout in (
    Layout(PixFmt.NV12, "NV12", "nv12", "4:2:0", 8, 1, 2, 2),
    Layout(PixFmt.P010, "P010", "p010le", "4:2:0", 10, 2, 2, 2),
    Layout(PixFmt.NV16, "NV16", "nv16", "4:2:2", 8, 1, 2, 1, opt_in=True),
    Layout(PixFmt.NV24, "NV24", "nv24", "4:4:4", 8, 1, 1, 1, opt_in=True),
)}
BY_FOURCC: dict[str, Layout] = {layout.fourcc: layout for layout in LAYOUTS.values()}


@dataclass(frozen=True)
class Geometry:
    """Row lengths and counts of a picture of *width* x *height* in *pixfmt*."""

    width: int
    height: int
    pixfmt: PixFmt = PixFmt.NV12

    @property
    def layout(self) -> Layout:
        return LAYOUTS[self.pixfmt]

    @property
    def sample(self) -> int:
        return self.layout.sample

    @property
    def luma_row(self) -> int:
        return self.width * self.sample

    @property
    def chroma_row(self) -> int:
        """Bytes of one tightly packed CbCr row: a Cb and a Cr sample per chroma column."""
        layout = self.layout
        return 2 * -(-self.width // layout.hdiv) * layout.sample

    @property
    def chroma_rows(self) -> int:
        return -(-self.height // self.layout.vdiv)

    @property
    def min_bytesperline(self) -> int:
        """The shortest stride both planes' rows fit in (the CbCr plane's
        stride is ``chroma_stride`` of it)."""
        return max(self.luma_row, -(-self.chroma_row * self.layout.hdiv // 2))

    @property
    def packed_size(self) -> int:
        return self.luma_row * self.height + self.chroma_row * self.chroma_rows


def buffer_size(bytesperline: int, height: int, pixfmt: PixFmt = PixFmt.NV12) -> int:
    """Bytes of a CAPTURE buffer of *height* luma rows in *pixfmt*: the luma
    plane and the CbCr plane (bytesperline * height * 3 / 2 for NV12 and
    P010, * 2 for NV16, * 3 for NV24)."""
    layout = LAYOUTS[pixfmt]
    return bytesperline * height + layout.chroma_stride(bytesperline) * layout.chroma_rows_of(
        height)


def fits(geometry: Geometry, bytesperline: int, height: int) -> str | None:
    """Why a buffer of *bytesperline* x *height* cannot hold the picture, or None."""
    if bytesperline < geometry.min_bytesperline:
        return (f"bytesperline {bytesperline} is shorter than the picture's rows "
                f"({geometry.min_bytesperline} bytes)")
    if height < geometry.height:
        return f"height {height} is less than the picture's {geometry.height} rows"
    rows = geometry.layout.chroma_rows_of(height)
    if rows < geometry.chroma_rows:
        return (f"height {height} leaves {rows} chroma rows, the picture has "
                f"{geometry.chroma_rows}")
    return None


def planes(buffer: npt.NDArray[np.uint8], bytesperline: int, height: int,
           pixfmt: PixFmt = PixFmt.NV12) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """The luma rows and the CbCr rows of a CAPTURE buffer (views of its first
    ``buffer_size`` bytes), each row as long as its stride."""
    layout = LAYOUTS[pixfmt]
    split = bytesperline * height
    size = buffer_size(bytesperline, height, pixfmt)
    return (buffer[:split].reshape(height, bytesperline),
            buffer[split:size].reshape(layout.chroma_rows_of(height),
                                       layout.chroma_stride(bytesperline)))


def lay_out(luma: npt.NDArray[np.uint8], chroma: npt.NDArray[np.uint8], bytesperline: int,
            height: int, out: npt.NDArray[np.uint8] | None = None, *,
            zeroed: bool = True, pixfmt: PixFmt = PixFmt.NV12) -> npt.NDArray[np.uint8]:
    """The tightly packed planes *luma* (rows x row bytes) and *chroma* in a
    buffer of *bytesperline* x *height* in *pixfmt*: rows zero-padded, rows
    past the picture zero. *out* (``buffer_size`` bytes) is filled in place
    when given: only the picture is written if it is *zeroed* already;
    otherwise (a mapped CAPTURE buffer holding an older frame) the padding
    and the rows past the picture are written with zeros too, each byte
    once. The caller checks ``fits`` first."""
    size = buffer_size(bytesperline, height, pixfmt)
    if out is None:
        out, zeroed = np.zeros(size, np.uint8), True
    elif out.size != size:
        raise ValueError(f"output of {out.size} bytes, the layout takes {size}")
    for plane, rows in zip((luma, chroma), planes(out, bytesperline, height, pixfmt),
                           strict=True):
        rows[:plane.shape[0], :plane.shape[1]] = plane
        if not zeroed:
            rows[:plane.shape[0], plane.shape[1]:] = 0
            rows[plane.shape[0]:] = 0
    return out


def crop(buffer: bytes | bytearray | memoryview | npt.NDArray[np.uint8], bytesperline: int,
         height: int, geometry: Geometry) -> bytes:
    """The tightly packed picture of *geometry* out of a CAPTURE buffer laid
    out as *bytesperline* x *height* in the geometry's layout (the inverse of
    ``lay_out``)."""
    reason = fits(geometry, bytesperline, height)
    if reason is not None:
        raise ValueError(reason)
    data = np.frombuffer(buffer, np.uint8)
    size = buffer_size(bytesperline, height, geometry.pixfmt)
    if data.size < size:
        raise ValueError(f"buffer of {data.size} bytes, a {bytesperline} x {height} "
                         f"{geometry.layout.fourcc} layout takes {size}")
    y, c = planes(data, bytesperline, height, geometry.pixfmt)
    return (y[:geometry.height, :geometry.luma_row].tobytes()
            + c[:geometry.chroma_rows, :geometry.chroma_row].tobytes())


# --- which layout carries a decoded picture (the daemon's rule) ------------------------


def layout_of(fmt: av.VideoFormat, layouts: Sequence[Layout]) -> PixFmt:
    """The layout of *layouts* that carries pictures of FFmpeg's *fmt*
    sample for sample: the one of its chroma subsampling with the fewest
    bits that hold its samples (8-bit 4:2:0: NV12; 9- and 10-bit 4:2:0:
    P010; 8-bit 4:2:2: NV16 ...). UnsupportedLayout when none does: a
    picture is re-arranged, never filtered (no chroma downscale, no dropped
    bits). With NV12 and P010 only, exactly phase 8.4's
    ``frames.layout_for``, message included."""
    chroma = chroma_subsampling(fmt)
    chromas = list(dict.fromkeys(layout.chroma for layout in layouts))
    same = ([] if fmt.has_palette or fmt.is_bayer
            else [layout for layout in layouts if layout.chroma == chroma])
    if not same:
        raise UnsupportedLayout(fmt.name, unsupported_what(fmt, chroma), (
            f"{' / '.join(chromas)} only ({' / '.join(lay.fourcc for lay in layouts)})"))
    bits = max((c.bits for c in fmt.components), default=8)
    deep = [layout for layout in same if bits <= layout.bits]
    if not deep:
        depths = " and ".join(f"{layout.bits}-bit {layout.fourcc}" for layout in same)
        of = f"{chroma} as " if len(chromas) > 1 else ""
        raise UnsupportedLayout(fmt.name, f"{bits}-bit samples", f"{of}{depths} only")
    return min(deep, key=lambda layout: layout.bits).pixfmt


def enabled_layouts(enabled: Iterable[PixFmt]) -> tuple[Layout, ...]:
    """``LAYOUTS`` without the opt-in layouts not in *enabled*, in table order."""
    on = set(enabled)
    return tuple(layout for layout in LAYOUTS.values()
                 if not layout.opt_in or layout.pixfmt in on)


def registered() -> list[PixFmt]:
    """The opt-in layouts enabled by the ``daedalus.layouts`` entry points of
    the installed distributions (one that does not load, or names no opt-in
    layout, is logged and left out)."""
    from daedalus.dispatch.entrypoints import entry_points

    found = []
    for entry in entry_points(GROUP):
        try:
            pixfmt = entry.load()
            if not isinstance(pixfmt, PixFmt) or not LAYOUTS[pixfmt].opt_in:
                raise TypeError(f"not the PixFmt of an opt-in layout: {pixfmt!r}")
        except Exception as exc:  # a broken plugin must not stop the daemon
            log.error("CAPTURE layout %s (%s) not enabled: %r", entry.name, entry.value, exc)
            continue
        found.append(pixfmt)
    return found


_lock = threading.Lock()  # protects _delivered
_delivered: tuple[Layout, ...] | None = None


def delivered() -> tuple[Layout, ...]:
    """The layouts this process's daemon delivers, chosen at the first call
    (NV12, P010 and what the entry points enable)."""
    global _delivered
    chosen = _delivered  # every frame asks: no lock once chosen
    if chosen is not None:
        return chosen
    with _lock:
        if _delivered is None:
            _delivered = enabled_layouts(registered())
            log.info("CAPTURE layouts: %s", ", ".join(lay.fourcc for lay in _delivered))
        return _delivered


def use(enabled: Iterable[PixFmt] | None) -> None:
    """Deliver the base layouts and the opt-in ones in *enabled* from now on
    (tests); None: read the entry points again at next use."""
    global _delivered
    with _lock:
        _delivered = None if enabled is None else enabled_layouts(enabled)


def layout_for(frame: av.VideoFrame) -> PixFmt:
    """The layout the daemon delivers *frame* in (``layout_of`` among
    ``delivered()``); UnsupportedLayout refuses the stream."""
    return layout_of(frame.format, delivered())


# --- the reference's tight packing --------------------------------------------------------

# FFmpeg's planar 8-bit layouts whose planes ``pack`` interleaves itself, by the opt-in
# layout that carries them (NV12 and P010: phase 8.4's frames.pack)
PLANAR_8 = {"yuv422p": PixFmt.NV16, "yuvj422p": PixFmt.NV16,
            "yuv444p": PixFmt.NV24, "yuvj444p": PixFmt.NV24}


def pack(frame: av.VideoFrame, pixfmt: PixFmt) -> tuple[npt.NDArray[np.uint8],
                                                        npt.NDArray[np.uint8]]:
    """*frame* tightly packed in *pixfmt*: its luma rows and its CbCr rows.
    NV12 and P010 as phase 8.4's ``frames.pack`` packs them; NV16 and NV24
    by the same rules: a planar frame's Cb and Cr planes interleaved sample
    for sample (no range conversion), any other layout of the same chroma
    and depth through swscale, which only moves samples for those.
    ValueError when *frame* is not a picture of *pixfmt* (``layout_of``
    among every layout)."""
    got = layout_of(frame.format, tuple(LAYOUTS.values()))
    if got != pixfmt:
        raise ValueError(f"frame packs as {got.name}, not {pixfmt.name}")
    layout = LAYOUTS[pixfmt]
    if not layout.opt_in:
        packed = pack_420(frame)
        return packed.luma, packed.chroma
    geometry = Geometry(frame.width, frame.height, pixfmt)
    rows, columns = geometry.chroma_rows, geometry.chroma_row // 2
    if PLANAR_8.get(frame.format.name) == pixfmt:
        y, cb, cr = frame.planes
        return (np.array(_rows(y, frame.height, frame.width)),
                _interleave(_rows(cb, rows, columns), _rows(cr, rows, columns)))
    converted = frame if frame.format.name == layout.av_name else frame.reformat(
        format=layout.av_name)
    return (_rows(converted.planes[0], frame.height, geometry.luma_row),
            _rows(converted.planes[1], rows, geometry.chroma_row))
