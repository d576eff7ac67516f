"""Why the node stopped a stream: the input file's own facts against the node's CAPTURE formats.

When the daemon refuses a stream (its FEED answered DECODE_ERROR / EOPNOTSUPP:
4:2:2 / 4:4:4 chroma before phase 8.8, or deeper than 8-bit 4:2:2 / 4:4:4) or
a decoded frame needs a CAPTURE pixel format the node does not offer (10-bit
P010 on a node that offers NV12 only), the kernel
puts the file handle in the fatal state of dev-decoder.rst and the decode
tool sees EIO. The node does not say which property was the problem; the file
does. ``probe`` opens it with PyAV (codec, profile, pixel format, bit depth,
chroma subsampling) and ``explain`` turns that into the one line the tool
prints::

    H.264 High 4:4:4 Predictive, yuv444p (4:4:4 chroma): the node's CAPTURE
    format NV12 carries 8-bit 4:2:0 only
    VP9 Profile 2, yuv420p10le (10-bit): the node offers NV12 (8-bit) only

(each on one line). ``explain`` is None when the node's formats carry the
stream: the refusal was something else.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import av

from daedalus.proto import codecs
from daedalus.roundtrip.frames import chroma_subsampling

# CAPTURE formats (V4L2 fourcc): the chroma subsampling each carries, at what bit depth
FORMATS = {"NV12": ("4:2:0", 8), "NM12": ("4:2:0", 8), "P010": ("4:2:0", 10),
           "NV16": ("4:2:2", 8), "NV24": ("4:4:4", 8)}


@dataclass(frozen=True)
class StreamFacts:
    """What a file's video stream decodes to, as FFmpeg says."""

    codec: str           # the codec table's title ("H.264"), else FFmpeg's codec name
    profile: str | None  # FFmpeg's profile name ("High 4:4:4 Predictive", "Profile 1")
    pix_fmt: str         # FFmpeg's pixel format ("yuv444p")
    bit_depth: int       # bits per sample, the deepest component
    chroma: str          # "4:2:0", "4:2:2", "4:4:4" ... (frames.chroma_subsampling)

    def describe(self) -> str:
        """"H.264 High 4:4:4 Predictive, yuv444p"."""
        name = f"{self.codec} {self.profile}" if self.profile else self.codec
        return f"{name}, {self.pix_fmt}"


def probe(path: str | os.PathLike[str]) -> StreamFacts | None:
    """The facts of *path*'s first video stream (decoding its first frame if
    the container does not say); None when FFmpeg cannot tell."""
    try:
        with av.open(os.fspath(path)) as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            ctx = stream.codec_context
            fmt = ctx.format
            if fmt is None:
                frame = next(container.decode(stream), None)
                fmt = frame.format if frame is not None else None
            if fmt is None:
                return None
            desc = codecs.BY_DECODER.get(ctx.name)
            return StreamFacts(codec=desc.title if desc is not None else ctx.name,
                               profile=ctx.profile or None, pix_fmt=fmt.name,
                               bit_depth=max((c.bits for c in fmt.components), default=8),
                               chroma=chroma_subsampling(fmt))
    except (av.FFmpegError, OSError):
        return None


def _depths(bits: Sequence[int]) -> str:
    """[8] -> "8-bit", [8, 10] -> "8- and 10-bit"."""
    if len(bits) == 1:
        return f"{bits[0]}-bit"
    return ", ".join(str(b) for b in bits[:-1]) + f"- and {bits[-1]}-bit"


def _kinds(formats: Sequence[str]) -> str:
    """["NV12", "P010"] -> "8- and 10-bit 4:2:0"; with NV16: "..., 8-bit 4:2:2"."""
    depths: dict[str, set[int]] = {}
    for name in formats:
        chroma, bits = FORMATS[name]
        depths.setdefault(chroma, set()).add(bits)
    return ", ".join(f"{_depths(sorted(bits))} {chroma}" for chroma, bits in depths.items())


def explain(facts: StreamFacts, capture_formats: Sequence[str]) -> str | None:
    """Why a node whose CAPTURE queue offers *capture_formats* (fourccs) cannot
    deliver a stream of *facts*, in one line; None if one of them carries it."""
    carried = [f for f in capture_formats if f in FORMATS] or ["NV12"]
    bits = sorted({FORMATS[f][1] for f in carried})
    chromas = list(dict.fromkeys(FORMATS[f][0] for f in carried))
    same = [f for f in carried if FORMATS[f][0] == facts.chroma]
    if not same:
        what = f"{facts.chroma} chroma" if facts.chroma[0].isdigit() else facts.chroma
        if facts.chroma == "4:0:0":
            what = "4:0:0, no chroma"
        if facts.bit_depth > bits[-1]:
            what += f", {facts.bit_depth}-bit"
        names = ", ".join(carried)
        verb = "format {} carries" if len(carried) == 1 else "formats {} carry"
        return (f"{facts.describe()} ({what}): the node's CAPTURE {verb.format(names)} "
                f"{_kinds(carried)} only")
    if facts.bit_depth > max(FORMATS[f][1] for f in same):
        offered = ", ".join(f"{f} ({FORMATS[f][1]}-bit)" for f in same)
        if len(chromas) == 1:  # the node carries one chroma subsampling: no need to name it
            return f"{facts.describe()} ({facts.bit_depth}-bit): the node offers {offered} only"
        return (f"{facts.describe()} ({facts.chroma} chroma, {facts.bit_depth}-bit): the node "
                f"offers {offered} for {facts.chroma} only")
    return None


def why_refused(path: str | os.PathLike[str], capture_formats: Sequence[str]) -> str | None:
    """``explain`` of ``probe(path)``; None when the file cannot be probed or
    the node's formats carry it."""
    facts = probe(path)
    return explain(facts, capture_formats) if facts is not None else None
