"""The independent reference: Debian's ffmpeg decoding the same file to raw NV12, P010 ...

``/usr/bin/ffmpeg -i FILE -pix_fmt nv12 -f rawvideo -`` (a different FFmpeg
build than PyAV's, which decodes in daedalusd), with ``-fps_mode
passthrough`` (every decoded frame once, none duplicated or dropped) and
``-autoscale 0`` (a stream that changes resolution keeps each frame at its
own size instead of scaling it to the first one's). Frames are tightly
packed: ``w * h`` bytes of luma, then ``2 * ceil(w / 2) * ceil(h / 2)`` of
interleaved chroma. A 10-bit stream, which the node hands out as P010
(phase 8.8), is compared with ``-pix_fmt p010le``: the same planes with two
bytes a sample, little-endian, the value in the upper 10 bits
(``pix_fmt_for``: a CAPTURE fourcc's ffmpeg name). 8-bit 4:2:2 and 4:4:4
(phase 8.8's NV16 and NV24) with ``-pix_fmt nv16`` / ``nv24``: the luma
plane, then ``h`` rows of interleaved chroma, ``2 * ceil(w / 2)`` (NV16) or
``2 * w`` (NV24) bytes each.

Debian 12's ffmpeg (5.1) cannot write nv16: its swscale has no NV16 output
("Impossible to convert between the formats"). For ``nv16`` the reference
asks ffmpeg for ``yuv422p`` instead, the decoder's own planar layout of the
same samples, and interleaves its Cb and Cr planes itself, sample for
sample, frame by frame at the sizes Debian's ffprobe reports for the file
(``PLANAR_INSTEAD``). nv24 needs no such step (``-pix_fmt nv24`` works),
which lets a test check the interleaving against ffmpeg's own on 4:4:4.

The samples are the decoder's, never rescaled: ``-vf
scale=in_range=tv:out_range=tv`` (phase 8.4's KEEP_RANGE, the same filter its
reference uses) gives swscale the same range on both sides, so it only moves
samples into NV12's planes. Without it a full-range stream
(H.264's yuvj420p, a VP9 or AV1 frame tagged full range) would be squeezed
into limited range on the way to NV12, while daedalusd hands out the samples
as decoded (phase 8.4's frames.py). On limited-range and untagged streams the
two commands give the same bytes.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from daedalus.m2m.layout import LAYOUTS
from daedalus.parse.reference import probe_frames
from daedalus.roundtrip.clips import KEEP_RANGE

FFMPEG = os.environ.get("DAEDALUS_FFMPEG", "/usr/bin/ffmpeg")
TIMEOUT = 600.0


# the CAPTURE fourccs of the node and ffmpeg's -pix_fmt of the same tightly packed layout
PIX_FMTS = {layout.fourcc: layout.av_name for layout in LAYOUTS.values()}
# -pix_fmt values Debian's ffmpeg 5.1 cannot write: the planar layout asked instead and its
# chroma subsampling (luma samples per chroma sample along a row, luma rows per chroma row)
PLANAR_INSTEAD = {"nv16": ("yuv422p", 2, 1)}


class ReferenceError(RuntimeError):
    """ffmpeg could not decode the file."""


def pix_fmt_for(pixfmts: Sequence[str]) -> str:
    """ffmpeg's -pix_fmt for frames in the CAPTURE formats *pixfmts* (fourccs,
    e.g. a decode's ``Stats.pixfmts``): ``nv12`` when there is none (no
    picture) or NV12 only, ``p010le`` for P010 only, ``nv16`` / ``nv24``
    for NV16 / NV24 only. ffmpeg writes one
    pix_fmt for the whole file, so frames in two formats (a stream switching
    bit depth) or in another one cannot be compared: ReferenceError."""
    formats = list(dict.fromkeys(pixfmts)) or ["NV12"]
    if len(formats) > 1:
        raise ReferenceError(f"frames in {' and '.join(formats)}: ffmpeg writes one pix_fmt "
                             "for the whole file, they cannot be compared with it")
    if formats[0] not in PIX_FMTS:
        raise ReferenceError(f"no ffmpeg pix_fmt for the CAPTURE format {formats[0]}")
    return PIX_FMTS[formats[0]]


def reference_command(path: str | os.PathLike[str], pix_fmt: str = "nv12") -> list[str]:
    return [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-i", os.fspath(path),
            "-map", "0:v:0", "-fps_mode", "passthrough", "-autoscale", "0",
            "-vf", KEEP_RANGE, "-pix_fmt", pix_fmt, "-f", "rawvideo", "-"]


def interleave_planar(data: bytes, sizes: Sequence[tuple[int, int]], hdiv: int,
                      vdiv: int) -> bytes:
    """Planar frames (*data*: each frame's Y, Cb and Cr planes, tightly
    packed, at *sizes*; one chroma sample per *hdiv* luma samples of a row,
    one chroma row per *vdiv* luma rows) as semi-planar ones: the Y plane,
    then Cb and Cr interleaved sample for sample. ReferenceError when the
    sizes do not add up to *data*."""
    out, pos = [], 0
    for width, height in sizes:
        luma, chroma = width * height, -(-width // hdiv) * -(-height // vdiv)
        if pos + luma + 2 * chroma > len(data):
            break
        pairs = np.empty((chroma, 2), np.uint8)
        pairs[:, 0] = np.frombuffer(data, np.uint8, chroma, pos + luma)
        pairs[:, 1] = np.frombuffer(data, np.uint8, chroma, pos + luma + chroma)
        out += [data[pos:pos + luma], pairs.tobytes()]
        pos += luma + 2 * chroma
    if pos != len(data):
        raise ReferenceError(f"{len(sizes)} frames of the sizes ffprobe reports do not make "
                             f"the {len(data)} bytes ffmpeg wrote")
    return b"".join(out)


def reference_output(path: str | os.PathLike[str], pix_fmt: str = "nv12", *,
                     timeout: float = TIMEOUT) -> bytes:
    """ffmpeg's decoded frames of *path*, tightly packed, concatenated."""
    if pix_fmt in PLANAR_INSTEAD:
        planar, hdiv, vdiv = PLANAR_INSTEAD[pix_fmt]
        data = reference_output(path, planar, timeout=timeout)
        try:
            frames = probe_frames(path)
        except (OSError, subprocess.SubprocessError) as exc:
            raise ReferenceError(f"ffprobe {os.fspath(path)}: {exc}") from exc
        sizes = [(int(f["width"]), int(f["height"])) for f in frames]
        return interleave_planar(data, sizes, hdiv, vdiv)
    cmd = reference_command(path, pix_fmt)
    try:
        proc = subprocess.run(cmd, capture_output=True, check=False, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ReferenceError(f"{' '.join(cmd)}: {exc} (Debian: apt-get install ffmpeg)") from exc
    if proc.returncode != 0:
        raise ReferenceError(f"{' '.join(cmd)} failed ({proc.returncode}): "
                             f"{proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def first_difference(a: bytes, b: bytes) -> int | None:
    """Offset of the first byte where *a* and *b* differ (a length difference
    counts at the shorter length), or None when they are equal."""
    if a == b:
        return None
    n = min(len(a), len(b))
    diff = np.flatnonzero(np.frombuffer(a, np.uint8, n) != np.frombuffer(b, np.uint8, n))
    return int(diff[0]) if diff.size else n


def frame_at(offset: int, frame_bytes: Sequence[int]) -> int:
    """The index of the frame holding byte *offset*, given each frame's size
    (past the end: the index one past the last frame)."""
    end = 0
    for index, size in enumerate(frame_bytes):
        end += size
        if offset < end:
            return index
    return len(frame_bytes)


@dataclass(frozen=True)
class Comparison:
    got_bytes: int
    want_bytes: int
    offset: int | None = None   # first differing byte
    frame: int | None = None    # the frame of the decode's output holding it

    @property
    def equal(self) -> bool:
        return self.offset is None

    def describe(self) -> str:
        if self.equal:
            return "byte-exact: yes"
        sizes = "" if self.got_bytes == self.want_bytes else (
            f"; {self.got_bytes} bytes decoded, ffmpeg wrote {self.want_bytes}")
        return (f"byte-exact: no (first difference at byte {self.offset}, frame {self.frame}"
                f"{sizes})")


def compare(got: bytes, want: bytes, frame_bytes: Sequence[int]) -> Comparison:
    """*got* (frames of *frame_bytes* bytes each) against ffmpeg's *want*."""
    offset = first_difference(got, want)
    return Comparison(got_bytes=len(got), want_bytes=len(want), offset=offset,
                      frame=None if offset is None else frame_at(offset, frame_bytes))
