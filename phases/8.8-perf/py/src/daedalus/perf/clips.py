"""``daedalus-v4l2 bench --make-clips DIR``: clips to benchmark decoding on.

Made with Debian's ffmpeg (``/usr/bin/ffmpeg``, or ``DAEDALUS_FFMPEG``), one
per codec and depth: VP9 (libvpx-vp9, profile 0 / profile 2), H.264
(libx264, High / High 10) and AV1 (libaom-av1, main 8- and 10-bit), 4:2:0,
1920x1080 at 30 fps and 60 frames by default.

The picture is not a flat test card, which every encoder squeezes into
almost nothing and every decoder then runs through at a flattering speed:
``testsrc2`` (moving shapes, a scrolling gradient, text) under moving noise
(the ``noise`` filter, new every frame: ``allf=t+u``), so each frame carries
residual everywhere, as camera content with grain does. The encoders run at
fixed bit rates typical of 1080p30 streaming (VP9 4 Mbit/s, H.264 6 Mbit/s,
AV1 3 Mbit/s) with their usual tools (VP9 alt-ref frames, H.264 B-frames and
CABAC, AV1 "good" usage) and a keyframe every 30 frames; libaom at
``cpu-used`` 6 with row multithreading keeps the AV1 encodes near a minute
each on two cores.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from daedalus.m2m.reference import FFMPEG

DEFAULT_SIZE = (1920, 1080)
DEFAULT_FRAMES = 60
RATE = 30
CONTENT = "testsrc2=size={width}x{height}:rate={rate},noise=alls=12:allf=t+u"
TEN = "yuv420p10le"


@dataclass(frozen=True)
class ClipSpec:
    """One clip: codec name (the codec table's), depth, container suffix,
    ffmpeg's muxer and the encoder's options."""

    codec: str
    bit_depth: int
    suffix: str
    muxer: str
    encoder: tuple[str, ...]

    def name(self, width: int, height: int) -> str:
        depth = "-10bit" if self.bit_depth == 10 else ""
        return f"{self.codec}{depth}-{width}x{height}{self.suffix}"

    @property
    def pix_fmt(self) -> str:
        return TEN if self.bit_depth == 10 else "yuv420p"

    def argv(self, out: Path, width: int, height: int, frames: int) -> list[str]:
        """The ffmpeg command line that writes the clip to *out*."""
        return [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
                "-f", "lavfi", "-i", CONTENT.format(width=width, height=height, rate=RATE),
                "-frames:v", str(frames), "-pix_fmt", self.pix_fmt, *self.encoder,
                "-flags:v", "+bitexact", "-fflags", "+bitexact", "-map_metadata", "-1",
                "-f", self.muxer, os.fspath(out)]


_VP9 = ("-c:v", "libvpx-vp9", "-deadline", "good", "-cpu-used", "5", "-row-mt", "1",
        "-b:v", "4M", "-g", "30", "-auto-alt-ref", "1", "-lag-in-frames", "16")
_H264 = ("-c:v", "libx264", "-preset", "medium", "-b:v", "6M", "-g", "30", "-bf", "3")
_AV1 = ("-c:v", "libaom-av1", "-usage", "good", "-cpu-used", "6", "-row-mt", "1",
        "-tiles", "2x2", "-b:v", "3M", "-g", "30")

CLIPS: tuple[ClipSpec, ...] = (
    ClipSpec("vp9", 8, ".ivf", "ivf", (*_VP9, "-profile:v", "0")),
    ClipSpec("vp9", 10, ".ivf", "ivf", (*_VP9, "-profile:v", "2")),
    ClipSpec("h264", 8, ".h264", "h264", (*_H264, "-profile:v", "high")),
    ClipSpec("h264", 10, ".h264", "h264", (*_H264, "-profile:v", "high10")),
    ClipSpec("av1", 8, ".ivf", "ivf", _AV1),
    ClipSpec("av1", 10, ".ivf", "ivf", _AV1),
)


class ClipError(RuntimeError):
    """ffmpeg could not make a clip."""


def make_clips(directory: Path, *, size: tuple[int, int] = DEFAULT_SIZE,
               frames: int = DEFAULT_FRAMES, specs: Sequence[ClipSpec] = CLIPS,
               progress: Callable[[str], None] | None = None) -> list[Path]:
    """Encode every clip of *specs* into *directory* (made if missing); their
    paths, in order. *progress* gets a line before each encode."""
    directory.mkdir(parents=True, exist_ok=True)
    width, height = size
    made = []
    for i, spec in enumerate(specs, 1):
        out = directory / spec.name(width, height)
        if progress is not None:
            progress(f"[{i}/{len(specs)}] encoding {out.name} ({frames} frames)")
        argv = spec.argv(out, width, height, frames)
        try:
            proc = subprocess.run(argv, capture_output=True, check=False)
        except OSError as exc:
            raise ClipError(f"{argv[0]}: {exc} (Debian: apt-get install ffmpeg)") from None
        if proc.returncode != 0:
            raise ClipError(f"{' '.join(argv)} failed ({proc.returncode}): "
                            f"{proc.stderr.decode(errors='replace').strip()}")
        made.append(out)
    return made
