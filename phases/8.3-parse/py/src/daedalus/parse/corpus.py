"""The test-vector corpus: VP9 / AV1 / H.264 streams made offline by Debian's ffmpeg.

Every vector is encoded by ``/usr/bin/ffmpeg`` (Debian 12: libvpx-vp9,
libaom-av1, libx264) from the synthetic ``lavfi`` source ``testsrc2``, single
threaded and with the bitexact flags, so the same ffmpeg build produces the
same bytes: ``daedalus-v4l2 corpus --check`` re-encodes and compares SHA-256.

The small vectors are committed under ``phases/8.3-parse/corpus/`` with the
manifest ``corpus.toml`` (written by ``daedalus-v4l2 corpus``); the large ones
(720p, 1080p, 4096x2304) are listed in the manifest too but generated on demand into
``${DAEDALUS_CACHE:-~/.cache/daedalus-v4l2}/corpus``.

API for other phases' tests::

    from daedalus.parse import corpus
    for entry in corpus.entries():          # manifest entries (Entry)
        p = corpus.path(entry.name)         # the file; large ones encoded on first use
"""

from __future__ import annotations

import argparse
import hashlib
import os
import struct
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daedalus.parse.readers import IVF_FRAME_HEADER, IVF_HEADER, read_all

FFMPEG = os.environ.get("DAEDALUS_FFMPEG", "/usr/bin/ffmpeg")
MANIFEST = "corpus.toml"
SOURCE = "testsrc2"
RATE = 30

# Everything that makes an encode deterministic: one thread, bitexact codec
# and muxer flags, no metadata. Encoder-specific settings are in each Spec.
OUTPUT_FLAGS = ("-threads", "1", "-flags:v", "+bitexact", "-fflags", "+bitexact",
                "-map_metadata", "-1")


class CorpusError(Exception):
    """A vector could not be made or is unknown; one line for the user."""


def corpus_dir() -> Path:
    """The committed vectors: DAEDALUS_CORPUS, else phases/8.3-parse/corpus of this checkout."""
    env = os.environ.get("DAEDALUS_CORPUS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[4] / "corpus"


def cache_dir() -> Path:
    """Where large vectors go: ${DAEDALUS_CACHE:-~/.cache/daedalus-v4l2}/corpus."""
    env = os.environ.get("DAEDALUS_CACHE")
    base = Path(env) if env else (
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "daedalus-v4l2")
    return base / "corpus"


# --- what the vectors are --------------------------------------------------


@dataclass(frozen=True)
class Part:
    """One ffmpeg encode (a vector is one part, or several concatenated)."""

    width: int
    height: int
    frames: int
    encoder: str
    options: tuple[str, ...]
    pix_fmt: str = "yuv420p"
    two_pass: bool = False

    def argv(self, out: str, fmt: str, passlog: str = "PASSLOG") -> list[list[str]]:
        src = ["-f", "lavfi", "-i", f"{SOURCE}=size={self.width}x{self.height}:rate={RATE}",
               "-frames:v", str(self.frames), "-pix_fmt", self.pix_fmt, "-c:v", self.encoder,
               *self.options]
        head = [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
        if not self.two_pass:
            return [[*head, *src, *OUTPUT_FLAGS, "-f", fmt, out]]
        return [[*head, *src, "-pass", "1", "-passlogfile", passlog, *OUTPUT_FLAGS,
                 "-f", "null", "-"],
                [*head, *src, "-pass", "2", "-passlogfile", passlog, *OUTPUT_FLAGS,
                 "-f", fmt, out]]


CONTAINERS = {"ivf": ("ivf", ".ivf"), "annexb": ("h264", ".h264"), "obu": ("obu", ".obu")}


@dataclass(frozen=True)
class Spec:
    name: str
    codec: str
    container: str
    bit_depth: int
    parts: tuple[Part, ...]
    description: str
    large: bool = False

    @property
    def file(self) -> str:
        return self.name + CONTAINERS[self.container][1]

    @property
    def frames(self) -> int:
        return sum(p.frames for p in self.parts)

    @property
    def pix_fmt(self) -> str:
        """The layout every part is encoded from (and decodes to), FFmpeg's name."""
        return self.parts[0].pix_fmt

    def command(self) -> str:
        """The exact command lines, as recorded in the manifest."""
        fmt = CONTAINERS[self.container][0]
        lines = []
        for i, part in enumerate(self.parts):
            out = self.file if len(self.parts) == 1 else f"part{i}{CONTAINERS[self.container][1]}"
            lines += [" ".join(argv) for argv in part.argv(out, fmt)]
        if len(self.parts) > 1:
            lines.append(CONCAT_NOTE[self.container].format(file=self.file))
        return "\n".join(lines)


CONCAT_NOTE = {
    "ivf": "# then corpus.py concatenates: the IVF header of part0 (frame count summed), "
           "the frames of each part in order, timestamps continued -> {file}",
    "annexb": "# then: cat part0.h264 part1.h264 ... > {file}",
    "obu": "# then: cat part0.obu part1.obu ... > {file}",
}


def colour(primaries: str | None = None, transfer: str | None = None,
           matrix: str | None = None, range_: str | None = None) -> tuple[str, ...]:
    """ffmpeg's options that make the encoder signal a colour description (FFmpeg's
    names: ``-color_primaries``, ``-color_trc``, ``-colorspace``, ``-color_range``);
    what a codec cannot carry (VP9 has no primaries or transfer) it leaves out."""
    options = {"-color_primaries": primaries, "-color_trc": transfer, "-colorspace": matrix,
               "-color_range": range_}
    return tuple(x for name, value in options.items() if value for x in (name, value))


def _vp9(w: int, h: int, n: int, *, pix_fmt: str = "yuv420p", two_pass: bool = False,
         bitrate: str = "300k", tags: tuple[str, ...] = ()) -> Part:
    # aq-mode 1 (variance) turns on segmentation, so FFmpeg exports per-block qp
    return Part(w, h, n, "libvpx-vp9",
                ("-deadline", "good", "-cpu-used", "4", "-b:v", bitrate, "-g", "30",
                 "-auto-alt-ref", "1", "-lag-in-frames", "10", "-aq-mode", "1",
                 "-row-mt", "0", "-tile-columns", "0", *tags), pix_fmt, two_pass)


def _vp9_fast(w: int, h: int, n: int, bitrate: str = "4M") -> Part:
    return Part(w, h, n, "libvpx-vp9",
                ("-deadline", "realtime", "-cpu-used", "8", "-b:v", bitrate, "-g", "30",
                 "-aq-mode", "3", "-row-mt", "0", "-tile-columns", "0"))


# libx264's profile for each input layout: the lowest H.264 profile that carries it
# (yuvj420p: full-range 4:2:0, what FFmpeg's H.264 decoder makes of a full-range stream).
X264_PROFILES = {"yuv420p": "high", "yuvj420p": "high", "yuv420p10le": "high10",
                 "yuv422p": "high422", "yuv444p": "high444"}


def _h264(w: int, h: int, n: int, *, pix_fmt: str = "yuv420p", preset: str = "medium",
          profile: str | None = None, bframes: int = 2, x264: str = "aq-mode=1",
          tags: tuple[str, ...] = ()) -> Part:
    return Part(w, h, n, "libx264",
                ("-preset", preset, "-profile:v", profile or X264_PROFILES[pix_fmt],
                 "-g", "30", "-bf", str(bframes), "-x264-params", x264, *tags), pix_fmt)


def _av1(w: int, h: int, n: int, *, pix_fmt: str = "yuv420p", usage: str = "good",
         cpu: str = "6", bitrate: str = "200k", tags: tuple[str, ...] = ()) -> Part:
    return Part(w, h, n, "libaom-av1",
                ("-usage", usage, "-cpu-used", cpu, "-b:v", bitrate, "-g", "30",
                 "-row-mt", "0", "-tiles", "1x1", "-aq-mode", "1", *tags), pix_fmt)


TEN = "yuv420p10le"
YUV422 = "yuv422p"
YUV444 = "yuv444p"
SPECS: tuple[Spec, ...] = (
    Spec("vp9-320x240", "vp9", "ivf", 8, (_vp9(320, 240, 30),),
         "VP9 profile 0, 30 frames, one keyframe then inter frames (phase 8.4's stream)"),
    Spec("vp9-320x240-altref", "vp9", "ivf", 8, (_vp9(320, 240, 30, two_pass=True),),
         "VP9 profile 0, two-pass: hidden alt-ref frames in superframes"),
    Spec("vp9-128x96", "vp9", "ivf", 8, (_vp9(128, 96, 10, bitrate="150k"),),
         "VP9 profile 0, smallest size"),
    Spec("vp9-174x98", "vp9", "ivf", 8, (_vp9(174, 98, 10, bitrate="150k"),),
         "VP9 profile 0, size not a multiple of 8"),
    Spec("vp9-p2-10bit-320x240", "vp9", "ivf", 10, (_vp9(320, 240, 10, pix_fmt=TEN),),
         "VP9 profile 2, 10-bit"),
    Spec("vp9-resize-320x240-174x98", "vp9", "ivf", 8,
         (_vp9(320, 240, 10), _vp9(174, 98, 10, bitrate="150k")),
         "VP9 changing resolution at a keyframe (two encodes, IVF-concatenated)"),
    Spec("vp9-176x144", "vp9", "ivf", 8, (_vp9(176, 144, 10, bitrate="150k"),),
         "VP9 profile 0, QCIF: width not a multiple of 64 (one partial superblock column)"),
    Spec("vp9-352x288", "vp9", "ivf", 8, (_vp9(352, 288, 8),),
         "VP9 profile 0, CIF"),
    Spec("vp9-322x242", "vp9", "ivf", 8, (_vp9(322, 242, 10),),
         "VP9 profile 0, size not a multiple of 16 nor of 4"),
    # 24 frames after a change: FFmpeg 5.1's v4l2m2m restarts CAPTURE only for
    # a packet still to send (see the 8.5 closure page)
    Spec("vp9-resize-176x144-352x288", "vp9", "ivf", 8,
         (_vp9(176, 144, 8, bitrate="150k"), _vp9(352, 288, 24)),
         "VP9 growing at a keyframe, QCIF to CIF (two encodes, IVF-concatenated)"),
    Spec("vp9-resize-352x288-176x144", "vp9", "ivf", 8,
         (_vp9(352, 288, 8), _vp9(176, 144, 24, bitrate="150k")),
         "VP9 shrinking at a keyframe, CIF to QCIF (two encodes, IVF-concatenated)"),
    Spec("vp9-p1-444-176x144", "vp9", "ivf", 8, (_vp9(176, 144, 5, pix_fmt=YUV444,
                                                      bitrate="150k"),),
         "VP9 profile 1, 8-bit 4:4:4: a layout daedalus-v4l2 refuses (NV12 / P010 only)"),
    Spec("h264-high-320x240", "h264", "annexb", 8, (_h264(320, 240, 30),),
         "H.264 High, 30 frames, B-frames (reordered output)"),
    Spec("h264-high-128x96", "h264", "annexb", 8, (_h264(128, 96, 10),),
         "H.264 High, smallest size"),
    Spec("h264-high-174x98", "h264", "annexb", 8, (_h264(174, 98, 10),),
         "H.264 High, cropped size (not a multiple of 16)"),
    Spec("h264-high10-320x240", "h264", "annexb", 10, (_h264(320, 240, 10, pix_fmt=TEN),),
         "H.264 High 10 (Debian's libx264 encodes 10-bit)"),
    Spec("h264-resize-320x240-128x96", "h264", "annexb", 8,
         (_h264(320, 240, 10), _h264(128, 96, 10)),
         "H.264 changing resolution at an IDR (new SPS; two encodes concatenated)"),
    Spec("h264-high-176x144", "h264", "annexb", 8, (_h264(176, 144, 10),),
         "H.264 High, QCIF: width not a multiple of 64"),
    Spec("h264-high-352x288", "h264", "annexb", 8, (_h264(352, 288, 8),),
         "H.264 High, CIF"),
    Spec("h264-high-322x242", "h264", "annexb", 8, (_h264(322, 242, 10),),
         "H.264 High, cropped size (not a multiple of 16 nor of 4)"),
    Spec("h264-resize-176x144-352x288", "h264", "annexb", 8,
         (_h264(176, 144, 8), _h264(352, 288, 24)),
         "H.264 growing at an IDR, QCIF to CIF (new SPS; two encodes concatenated)"),
    Spec("h264-resize-352x288-176x144", "h264", "annexb", 8,
         (_h264(352, 288, 8), _h264(176, 144, 24)),
         "H.264 shrinking at an IDR, CIF to QCIF (new SPS; two encodes concatenated)"),
    Spec("h264-main-bpyramid-320x240", "h264", "annexb", 8,
         (_h264(320, 240, 24, profile="main", bframes=3,
                x264="aq-mode=1:b-pyramid=normal:b-adapt=0"),),
         "H.264 Main, 3 B-frames with b-pyramid (a B-frame used as reference; "
         "two frames of reordering)"),
    Spec("h264-slices-320x240", "h264", "annexb", 8,
         (_h264(320, 240, 10, x264="aq-mode=1:slices=4"),),
         "H.264 High, 4 slices per picture and B-frames (one frame in several slice NAL "
         "units)"),
    Spec("h264-high444-176x144", "h264", "annexb", 8, (_h264(176, 144, 5, pix_fmt=YUV444),),
         "H.264 High 4:4:4 Predictive, 8-bit 4:4:4: a layout daedalus-v4l2 refuses "
         "(NV12 / P010 only)"),
    Spec("h264-high422-176x144", "h264", "annexb", 8, (_h264(176, 144, 5, pix_fmt=YUV422),),
         "H.264 High 4:2:2, 8-bit 4:2:2: a layout daedalus-v4l2 refuses (NV12 / P010 only)"),
    Spec("av1-320x240", "av1", "ivf", 8, (_av1(320, 240, 10),),
         "AV1 main 8-bit in IVF, hidden frames and show_existing_frame"),
    Spec("av1-320x240-30f", "av1", "ivf", 8, (_av1(320, 240, 30),),
         "AV1 main 8-bit in IVF, 30 frames: one keyframe, then inter frames, hidden frames "
         "and show_existing_frame (phase 8.7's multi-frame stream)"),
    Spec("av1-128x96", "av1", "ivf", 8, (_av1(128, 96, 10),),
         "AV1 main 8-bit in IVF, smallest size"),
    Spec("av1-10bit-128x96", "av1", "ivf", 10, (_av1(128, 96, 10, pix_fmt=TEN),),
         "AV1 main 10-bit in IVF"),
    Spec("av1-174x98", "av1", "obu", 8, (_av1(174, 98, 10),),
         "AV1 main 8-bit, low-overhead OBU stream, odd size"),
    Spec("av1-10bit-320x240", "av1", "obu", 10, (_av1(320, 240, 10, pix_fmt=TEN),),
         "AV1 main 10-bit, low-overhead OBU stream"),
    # colour-tagged: what each bitstream signals (phase 8.6's colorspace round trip);
    # every other vector signals no colour description (H.264: no range either;
    # VP9 and AV1 always code a range bit, limited in the untagged ones)
    Spec("vp9-bt709-tv-128x96", "vp9", "ivf", 8,
         (_vp9(128, 96, 5, bitrate="150k", tags=colour(matrix="bt709", range_="tv")),),
         "VP9 profile 0 signalling BT.709 (color_space) and limited range; VP9 carries no "
         "primaries or transfer"),
    Spec("vp9-smpte170m-pc-128x96", "vp9", "ivf", 8,
         (_vp9(128, 96, 5, bitrate="150k", tags=colour(matrix="smpte170m", range_="pc")),),
         "VP9 profile 0 signalling BT.601 (SMPTE 170M color_space) and full range"),
    Spec("h264-bt709-tv-128x96", "h264", "annexb", 8,
         (_h264(128, 96, 5, tags=colour("bt709", "bt709", "bt709", "tv")),),
         "H.264 High, VUI: BT.709 primaries, transfer and matrix, limited range"),
    Spec("h264-bt470bg-pc-128x96", "h264", "annexb", 8,
         (_h264(128, 96, 5, pix_fmt="yuvj420p",
                tags=colour("bt470bg", "gamma28", "bt470bg", "pc")),),
         "H.264 High, VUI: BT.470 System B/G primaries, gamma 2.8 transfer (V4L2 has no "
         "name for it), BT.601 matrix, full range (decodes to yuvj420p)"),
    Spec("av1-bt2020-pq-128x96", "av1", "ivf", 8,
         (_av1(128, 96, 5, tags=colour("bt2020", "smpte2084", "bt2020nc", "tv")),),
         "AV1 main 8-bit, color_config: BT.2020 primaries and matrix, SMPTE 2084 (PQ) "
         "transfer, limited range"),
    Spec("vp9-1280x720", "vp9", "ivf", 8, (_vp9_fast(1280, 720, 10),),
         "VP9 profile 0 720p, 10 frames (realtime settings)", large=True),
    Spec("h264-high-1280x720", "h264", "annexb", 8,
         (_h264(1280, 720, 10, preset="veryfast"),), "H.264 High 720p, 10 frames", large=True),
    Spec("av1-1280x720", "av1", "ivf", 8,
         (_av1(1280, 720, 10, usage="realtime", cpu="8", bitrate="1M"),),
         "AV1 main 8-bit 720p, 10 frames (realtime settings)", large=True),
    Spec("vp9-1920x1080", "vp9", "ivf", 8, (_vp9_fast(1920, 1080, 10),),
         "VP9 profile 0 1080p, 10 frames (realtime settings)", large=True),
    Spec("h264-high-1920x1080", "h264", "annexb", 8,
         (_h264(1920, 1080, 10, preset="veryfast"),), "H.264 High 1080p, 10 frames", large=True),
    Spec("av1-1920x1080", "av1", "ivf", 8,
         (_av1(1920, 1080, 10, usage="realtime", cpu="8", bitrate="2M"),),
         "AV1 main 8-bit 1080p, 10 frames (realtime settings)", large=True),
    Spec("vp9-4096x2304", "vp9", "ivf", 8, (_vp9_fast(4096, 2304, 3, bitrate="1M"),),
         "VP9 profile 0 4096x2304 (14 MiB NV12 frames), 3 frames at a low bitrate "
         "(realtime settings)", large=True),
)


def spec(name: str) -> Spec:
    for s in SPECS:
        if s.name == name:
            return s
    raise CorpusError(f"no corpus vector named {name!r} (have: "
                      f"{', '.join(s.name for s in SPECS)})")


# --- making them -----------------------------------------------------------


def ffmpeg_version() -> str:
    try:
        out = subprocess.run([FFMPEG, "-version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise CorpusError(f"cannot run {FFMPEG}: {exc} (apt-get install ffmpeg)") from exc
    return out.stdout.splitlines()[0] if out.stdout else "unknown"


def _run(argv: Sequence[str], cwd: Path) -> None:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CorpusError(f"ffmpeg failed ({proc.returncode}): {' '.join(argv)}\n"
                          f"{proc.stderr[-2000:]}")


def concat_ivf(parts: Sequence[bytes]) -> bytes:
    """One IVF from several: the first header (frame count summed), all frames
    in order, each part's timestamps continued after the previous part's."""
    header = bytearray(parts[0][:IVF_HEADER.size])
    body = bytearray()
    count = 0
    next_pts = 0
    for data in parts:
        pos = IVF_HEADER.size
        last = next_pts
        while pos < len(data):
            size, pts = IVF_FRAME_HEADER.unpack_from(data, pos)
            last = next_pts + pts
            body += IVF_FRAME_HEADER.pack(size, last)
            body += data[pos + IVF_FRAME_HEADER.size:pos + IVF_FRAME_HEADER.size + size]
            pos += IVF_FRAME_HEADER.size + size
            count += 1
        next_pts = last + 1
    struct.pack_into("<I", header, 24, count)
    return bytes(header + body)


def pad_ivf_packet(data: bytes, index: int, size: int) -> bytes:
    """The IVF *data* with packet *index* grown to *size* bytes by zero bytes
    after its end (a VP9 or AV1 decoder reads no further than the frame's
    own data: the pictures stay the same), for tests of packets larger than
    a buffer."""
    out = bytearray(data[:IVF_HEADER.size])
    pos = IVF_HEADER.size
    count = 0
    while pos < len(data):
        length, pts = IVF_FRAME_HEADER.unpack_from(data, pos)
        packet = data[pos + IVF_FRAME_HEADER.size:pos + IVF_FRAME_HEADER.size + length]
        if count == index:
            if size < length:
                raise ValueError(f"packet {index} has {length} bytes, more than {size}")
            packet += bytes(size - length)
        out += IVF_FRAME_HEADER.pack(len(packet), pts) + packet
        pos += IVF_FRAME_HEADER.size + length
        count += 1
    if index >= count:
        raise ValueError(f"no packet {index} (the file has {count})")
    return bytes(out)


def encode(s: Spec, out_dir: Path) -> Path:
    """Encode *s* into *out_dir*/<file>; returns the path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fmt, suffix = CONTAINERS[s.container]
    with tempfile.TemporaryDirectory(prefix="daedalus-corpus-") as tmp:
        work = Path(tmp)
        pieces = []
        for i, part in enumerate(s.parts):
            name = f"part{i}{suffix}"
            for argv in part.argv(name, fmt, passlog=str(work / f"passlog{i}")):
                _run(argv, work)
            pieces.append((work / name).read_bytes())
        data = concat_ivf(pieces) if s.container == "ivf" and len(pieces) > 1 else b"".join(
            pieces)
    target = out_dir / s.file
    tmp_target = target.with_suffix(target.suffix + ".tmp")
    tmp_target.write_bytes(data)
    tmp_target.replace(target)
    return target


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the manifest ----------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One manifest entry of corpus.toml."""

    name: str
    file: str
    codec: str
    container: str
    width: int           # first frame's size
    height: int
    frames: int          # shown (displayed) frames
    packets: int         # reader packets (IVF frames / access units / temporal units)
    bit_depth: int
    pix_fmt: str         # FFmpeg's name of the decoded layout: yuv420p, yuv444p ...
    bytes: int
    sha256: str
    large: bool
    description: str
    command: str         # the exact ffmpeg command line(s)
    sizes: tuple[str, ...] = field(default_factory=tuple)  # every WxH, in order

    @property
    def committed(self) -> bool:
        return not self.large


def describe(s: Spec, path: Path) -> Entry:
    """The manifest entry of a freshly encoded vector."""
    info, packets = read_all(path)
    if (info.codec, info.container) != (s.codec, s.container):
        raise CorpusError(f"{path}: reads as {info.codec}/{info.container}, expected "
                          f"{s.codec}/{s.container}")
    sizes = []
    for part in s.parts:
        size = f"{part.width}x{part.height}"
        if size not in sizes:
            sizes.append(size)
    return Entry(name=s.name, file=s.file, codec=s.codec, container=s.container,
                 width=s.parts[0].width, height=s.parts[0].height, frames=s.frames,
                 packets=len(packets), bit_depth=s.bit_depth, pix_fmt=s.pix_fmt,
                 bytes=path.stat().st_size, sha256=sha256(path), large=s.large,
                 description=s.description,
                 command=s.command(), sizes=tuple(sizes))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value)
    if "\n" in text:
        return '"""\n' + text.replace("\\", "\\\\").replace('"""', '\\"""') + '"""'
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


FIELDS = ("name", "file", "codec", "container", "width", "height", "sizes", "frames",
          "packets", "bit_depth", "pix_fmt", "bytes", "sha256", "large", "description",
          "command")


def render_manifest(entries: Iterable[Entry], version: str) -> str:
    lines = ["# The daedalus-v4l2 test-vector corpus. Generated by `daedalus-v4l2 corpus`;",
             "# `daedalus-v4l2 corpus --check` re-encodes and compares sha256.",
             "# Vectors with large = true are not committed: corpus.path(name) encodes them",
             "# into ${DAEDALUS_CACHE:-~/.cache/daedalus-v4l2}/corpus on first use.",
             f"ffmpeg = {_toml_value(version)}", ""]
    for e in entries:
        lines.append("[[vector]]")
        lines += [f"{k} = {_toml_value(getattr(e, k))}" for k in FIELDS]
        lines.append("")
    return "\n".join(lines)


def load_manifest(directory: Path | None = None) -> tuple[str, list[Entry]]:
    path = (directory or corpus_dir()) / MANIFEST
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise CorpusError(f"no manifest {path}: run `daedalus-v4l2 corpus`") from exc
    entries = []
    for raw in data.get("vector", []):
        raw = dict(raw)
        raw["sizes"] = tuple(raw.get("sizes", ()))
        missing = [k for k in FIELDS if k not in raw]
        if missing:
            raise CorpusError(f"{path}: vector {raw.get('name', '?')!r} has no "
                              f"{', '.join(missing)} (an older manifest): run "
                              "`daedalus-v4l2 corpus`")
        entries.append(Entry(**{k: raw[k] for k in FIELDS}))
    return str(data.get("ffmpeg", "")), entries


def entries(*, large: bool = True) -> list[Entry]:
    """The manifest's entries (committed ones first); *large*=False leaves out the large ones."""
    return [e for e in load_manifest()[1] if large or not e.large]


def entry(name: str) -> Entry:
    for e in entries():
        if e.name == name:
            return e
    raise CorpusError(f"no corpus vector named {name!r} in {corpus_dir() / MANIFEST}")


def path(name: str) -> Path:
    """The file of vector *name*; a large one is encoded into the cache on first use
    (and re-encoded when the cached copy's sha256 differs from the manifest)."""
    e = entry(name)
    if not e.large:
        p = corpus_dir() / e.file
        if not p.is_file():
            raise CorpusError(f"{p} is missing from the checkout")
        return p
    p = cache_dir() / e.file
    if not p.is_file() or sha256(p) != e.sha256:
        encode(spec(name), cache_dir())
    return p



def file_or_vector(name: str) -> Path:
    """*name* as a file when one exists there, else the corpus vector of that
    name (see path()); CorpusError when it is neither."""
    given = Path(name)
    if given.exists():
        return given
    try:
        return path(name)
    except CorpusError as exc:
        raise CorpusError(f"{name}: neither a file nor a corpus clip ({exc})") from None

# --- check -----------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    expected: str
    got: str
    detail: str = ""


def check(names: Iterable[str] | None = None, *, large: bool = False) -> list[CheckResult]:
    """Re-encode vectors into a temporary directory and compare sha256 with the manifest."""
    version, listed = load_manifest()
    wanted = set(names) if names is not None else None
    current = ffmpeg_version()
    results = []
    with tempfile.TemporaryDirectory(prefix="daedalus-corpus-check-") as tmp:
        for e in listed:
            if (wanted is not None and e.name not in wanted) or (e.large and not large
                                                                  and wanted is None):
                continue
            got = sha256(encode(spec(e.name), Path(tmp)))
            detail = ""
            if got != e.sha256:
                detail = ("re-encoded bytes differ" + (
                    f"; the manifest was made with {version!r}, this is {current!r}"
                    if version != current else
                    "; same ffmpeg build, so an encoder is not deterministic here"))
            results.append(CheckResult(e.name, got == e.sha256, e.sha256, got, detail))
    return results


# --- the command -----------------------------------------------------------


def _fmt_size(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.2f} MiB"


class CorpusCommand:
    NAME = "corpus"
    HELP = "make (or --check) the VP9/AV1/H.264 test-vector corpus with Debian's ffmpeg"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--large", action="store_true",
                            help="also the large (720p and up) vectors, into the cache "
                                 "(or --out)")
        parser.add_argument("--check", action="store_true",
                            help="re-encode into a temporary directory and compare sha256 "
                                 "with the manifest; exit 1 on a difference")
        parser.add_argument("--out", metavar="DIR", type=Path,
                            help="write vectors and corpus.toml here instead of the "
                                 f"checkout's corpus directory ({corpus_dir()})")

    def run(self, args: argparse.Namespace) -> int:
        try:
            if args.check:
                return self._check(args.large)
            return self._make(args.out, args.large)
        except CorpusError as exc:
            print(f"daedalus-v4l2 corpus: {exc}", file=sys.stderr)
            return 1

    def _check(self, large: bool) -> int:
        results = check(large=large)
        for r in results:
            status = "ok" if r.ok else "DIFFERS"
            print(f"{r.name:32} {status}" + (f": {r.detail}" if r.detail else ""))
        bad = [r for r in results if not r.ok]
        print(f"corpus --check: {len(results) - len(bad)} of {len(results)} vectors "
              "reproduced bit for bit")
        return 1 if bad else 0

    def _make(self, out: Path | None, large: bool) -> int:
        small_dir = out or corpus_dir()
        large_dir = out or cache_dir()
        made = []
        try:
            _old_version, old = load_manifest(small_dir)
        except CorpusError:
            old = []
        previous = {e.name: e for e in old}
        for s in SPECS:
            if s.large and not large:
                if s.name in previous:
                    made.append(previous[s.name])
                    continue
                # a large vector is listed even when not made now: encode it
                # into a temporary directory to learn its sha256
                with tempfile.TemporaryDirectory(prefix="daedalus-corpus-") as tmp:
                    made.append(describe(s, encode(s, Path(tmp))))
                continue
            target = encode(s, large_dir if s.large else small_dir)
            e = describe(s, target)
            made.append(e)
            print(f"{e.name:32} {e.frames:3} frames  {_fmt_size(e.bytes):>10}  {target}")
        small_dir.mkdir(parents=True, exist_ok=True)
        (small_dir / MANIFEST).write_text(render_manifest(made, ffmpeg_version()))
        total = sum(e.bytes for e in made if not e.large)
        print(f"corpus: {len(made)} vectors, committed ones {_fmt_size(total)}; manifest "
              f"{small_dir / MANIFEST}")
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m daedalus.parse.corpus")
    cmd = CorpusCommand()
    cmd.add_arguments(parser)
    return cmd.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
