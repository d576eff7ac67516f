"""The guest tests' clients of the node, and how their output is compared.

Shared by the guest tests of phase 8.5 and later (test directories are not
packages, so what several import lives here):

- the project's own decode tool, ``daedalus-v4l2 decode``, run as a separate
  process as an application would be (``decode``), its summary line
  (``summary``) and its output cut into frames (``split``);
- Debian 12's GStreamer 1.22 (``v4l2h264dec`` / ``v4l2vp9dec``, any decoder
  properties such as ``capture-io-mode=dmabuf`` appended) and FFmpeg 5.1
  (``h264_v4l2m2m`` / ``vp9_v4l2m2m``) on a corpus clip;
- the reference: Debian's ffmpeg decoding the same clip in software
  (daedalus.m2m.reference), cut into frames at the sizes of the clip's
  recipe, in the CAPTURE format the node gives the clip (``capture_format``:
  NV12, or P010 for a 10-bit clip, compared with ffmpeg's ``p010le``, NV16
  / NV24 for an 8-bit 4:2:2 / 4:4:4 one, compared with ``nv16`` / ``nv24``;
  the node offers them from phase 8.8). GStreamer's raw NV12 rows are
  padded to a multiple of 4 bytes (its default stride), so its frames are
  compared on their visible pixels (``gst_frames``).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av

from daedalus.m2m.layout import LAYOUTS, Geometry, layout_of
from daedalus.m2m.reference import PIX_FMTS, reference_output
from daedalus.m2m.v4l2 import CAPTURE_FORMATS, M2MNode, StatefulDecode, Stats, packets_of
from daedalus.parse import corpus
from daedalus.proto.codecs import BY_NAME
from daedalus.skeleton.v4l2dev import CAPTURE, PixFormat
from daedalus.testbed.guestctl import tool

FFMPEG = "/usr/bin/ffmpeg"
GST_DECODER = {"vp9": ["matroskademux", "!", "v4l2vp9dec"],
               "h264": ["h264parse", "!", "v4l2h264dec"]}
V4L2M2M = {"vp9": "vp9_v4l2m2m", "h264": "h264_v4l2m2m"}
DECODE_TIMEOUT = 600  # one decode under TCG, generously
SUMMARY = re.compile(r"^decode: (?P<file>.+): (?P<frames>\d+) frames, (?P<sizes>.*), "
                     r"(?P<fps>[\d.]+) fps, (?P<errors>\d+) errors")
FORMATS = re.compile(r" \((?P<formats>[0-9A-Z]{4}(?:, [0-9A-Z]{4})*)\)$")  # after OUT


# --- the decode tool ---------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    frames: int
    sizes: list[str]
    errors: int
    # the CAPTURE formats of the frames: what follows OUT, else NV12 (none: no picture)
    formats: list[str] = field(default_factory=list)


def summary(stdout: str) -> Summary:
    for line in stdout.splitlines():
        m = SUMMARY.match(line)
        if m:
            sizes = [] if m["sizes"] == "no picture" else m["sizes"].split(", ")
            named = FORMATS.search(line)
            formats = (named["formats"].split(", ") if named is not None
                       else ["NV12"] if int(m["frames"]) else [])
            return Summary(int(m["frames"]), sizes, int(m["errors"]), formats)
    raise AssertionError(f"no summary line in {stdout!r}")


def decode_argv(path: Path, out: Path, *extra: str) -> list[str]:
    return [tool("daedalus-v4l2"), "decode", str(path), "-o", str(out), *extra]


def decode(path: Path, out: Path, *extra: str,
           timeout: float = DECODE_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(decode_argv(path, out, *extra), capture_output=True, text=True,
                          timeout=timeout)


def split(data: bytes, sizes: list[tuple[int, int]], pixfmt: str = "NV12") -> list[bytes]:
    """Tightly packed frames of *sizes* in *pixfmt* (a CAPTURE fourcc), one after the other."""
    frames, pos = [], 0
    for width, height in sizes:
        size = Geometry(width, height, CAPTURE_FORMATS[pixfmt]).packed_size
        frames.append(data[pos:pos + size])
        pos += size
    assert pos == len(data), f"{len(sizes)} frames make {pos} bytes, not {len(data)}"
    return frames


# --- the reference, and GStreamer and FFmpeg ---------------------------------------------


def frame_sizes(name: str) -> list[tuple[int, int]]:
    """Each frame's size, from the recipe that made the clip."""
    return [(p.width, p.height) for p in corpus.spec(name).parts for _ in range(p.frames)]


def capture_format(name: str) -> str:
    """The CAPTURE format the node gives clip *name* (from phase 8.8, which
    offers P010, NV16 and NV24): the layout of its FFmpeg pixel format
    (daedalus.m2m.layout's ``layout_of``): P010 for a 10-bit 4:2:0 clip,
    NV16 / NV24 for an 8-bit 4:2:2 / 4:4:4 one, else NV12. (Before phase
    8.8 the node refuses all but NV12: those clips have no frames to compare.)"""
    pix_fmt = av.VideoFormat(corpus.entry(name).pix_fmt)
    return LAYOUTS[layout_of(pix_fmt, tuple(LAYOUTS.values()))].fourcc


def reference_frames(name: str, pixfmt: str | None = None) -> list[bytes]:
    """Debian's ffmpeg's frames of clip *name*, tightly packed in *pixfmt*
    (a CAPTURE fourcc; default ``capture_format(name)``), one per frame."""
    pixfmt = pixfmt or capture_format(name)
    data = reference_output(corpus.path(name), PIX_FMTS[pixfmt])
    frames, pos = [], 0
    for width, height in frame_sizes(name):
        size = Geometry(width, height, CAPTURE_FORMATS[pixfmt]).packed_size
        frames.append(data[pos:pos + size])
        pos += size
    assert pos == len(data), f"ffmpeg made {len(data)} bytes, the sizes say {pos}"
    return frames


def gst_frames(data: bytes, sizes: list[tuple[int, int]]) -> list[bytes]:
    """GStreamer's raw NV12 frames (rows of ROUND_UP_4(width) bytes, chroma
    at stride * ROUND_UP_2(height)) cropped to their visible pixels."""
    frames, pos = [], 0
    for width, height in sizes:
        stride = (width + 3) & ~3
        rows = (height + 1) & ~1
        luma = [data[pos + r * stride:pos + r * stride + width] for r in range(height)]
        base = pos + stride * rows
        cwidth = 2 * ((width + 1) // 2)
        chroma = [data[base + r * stride:base + r * stride + cwidth]
                  for r in range((height + 1) // 2)]
        frames.append(b"".join(luma + chroma))
        pos += stride * rows * 3 // 2
    assert pos == len(data), f"GStreamer wrote {len(data)} bytes, {len(sizes)} frames make {pos}"
    return frames


def webm_of(clip: Path, tmp_path: Path) -> Path:
    """GStreamer 1.22's plugins-good read WebM, not IVF: the same frames, remuxed."""
    if clip.suffix != ".ivf":
        return clip
    out = tmp_path / "clip.webm"
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-i", str(clip), "-c", "copy",
                    str(out)], check=True, timeout=300)
    return out


def gstreamer(name: str, tmp_path: Path, timeout: float = 600,
              decoder_options: Sequence[str] = (),
              frames: int | None = None) -> tuple[int, str, bytes]:
    """gst-launch-1.0 decoding clip *name* to raw NV12 through the node's
    decoder element, with *decoder_options* (``property=value``) set on it:
    (exit status, its output, the bytes it wrote). With *frames*, the
    pipeline ends after that many decoded frames: ``identity`` after the
    decoder answers the next buffer with EOS (GStreamer 1.22's
    ``eos-after=N`` lets N - 1 buffers through), the decoder stops, and the
    EOS the source then sends ends the pipeline."""
    out = tmp_path / "gst.yuv"
    proc = subprocess.run(gstreamer_argv(name, out, tmp_path, decoder_options, frames),
                          timeout=timeout, capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr, out.read_bytes() if out.exists() else b""


# GStreamer 1.22's v4l2 decoders on a stream the node refuses after the
# element's CMD_STOP (a short clip: every packet queued before the first frame
# is decoded): the element ends the stream itself and gst-launch exits 0.
GST_UNDRAINED = re.compile(r"frames? [\d-]+ left undrained after CMD_STOP")


# FFmpeg 5.1's v4l2m2m decoders on a short stream the node refuses before
# their end-of-stream DECODER_CMD(STOP): the command fails (EIO, the stream is
# in error), FFmpeg logs it ("output stop_decode", at error level) and carries
# on to exit 0 with nothing decoded. Any line its wrapper logs at -loglevel
# error is such a report.
FFMPEG_V4L2_ERROR = re.compile(r"^\[\w+_v4l2m2m @ 0x[0-9a-f]+\] ", re.M)


def ffmpeg_refused(code: int, stderr: str) -> bool:
    """Did ffmpeg (run with ffmpeg_argv: -loglevel error) report the node's
    refusal of its stream? It exits non-zero, or, when the refusal came
    before its end-of-stream STOP, exits 0 having logged the failed STOP as
    an error of its v4l2m2m wrapper (FFMPEG_V4L2_ERROR)."""
    return code != 0 or bool(FFMPEG_V4L2_ERROR.search(stderr))


def gstreamer_refused(code: int, log: str) -> bool:
    """Did gst-launch report the node's refusal of its stream? It exits non-zero
    ("Failed to process frame"), or, when the refusal came after its CMD_STOP,
    exits 0 with its own "left undrained" warning (GST_UNDRAINED)."""
    return code != 0 or bool(GST_UNDRAINED.search(log))


def gstreamer_argv(name: str, out: Path, workdir: Path, decoder_options: Sequence[str] = (),
                   frames: int | None = None) -> list[str]:
    """gstreamer()'s pipeline, writing to *out*; a VP9 clip is remuxed to
    WebM in *workdir* first (GStreamer 1.22 reads no IVF)."""
    codec = corpus.entry(name).codec
    limit = [] if frames is None else ["identity", f"eos-after={frames + 1}", "!"]
    return ["gst-launch-1.0", "-q", "filesrc",
            f"location={webm_of(corpus.path(name), workdir)}", "!",
            *GST_DECODER[codec], *decoder_options, "!", *limit,
            "video/x-raw,format=NV12", "!", "filesink", f"location={out}"]


def ffmpeg_argv(name: str, out: Path, *extra: str, pix_fmt: str = "nv12") -> list[str]:
    codec = corpus.entry(name).codec
    return [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-c:v", V4L2M2M[codec],
            "-i", str(corpus.path(name)), *extra, "-fps_mode", "passthrough", "-pix_fmt", pix_fmt,
            "-f", "rawvideo", "-y", str(out)]


class Negotiating(StatefulDecode):
    """StatefulDecode that, each time the stream's format is announced, first
    records what CAPTURE offers and what S_FMT(NV12) gives, as an application
    that insists on NV12 would see it; then sets CAPTURE up as the tool does
    (phase 8.8's P010 and NV16 / NV24 guest tests)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.offered: list[list[str]] = []
        self.insisted: list[PixFormat] = []
        self.got: list[PixFormat] = []

    def _setup_capture(self) -> None:
        fmt = self.node.g_fmt(CAPTURE)
        if self.capture is not None:
            self.capture.queue.close()  # (S_FMT needs CAPTURE idle; super closes it too)
            self.capture = None
        self.offered.append(self.node.formats(CAPTURE))
        self.insisted.append(self.node.s_fmt(CAPTURE, "NV12", fmt.width, fmt.height))
        super()._setup_capture()
        self.got.append(self.node.g_fmt(CAPTURE))


def negotiate(node: M2MNode, name: str,
              timeout: float) -> tuple[Negotiating, list[bytes], Stats]:
    """Decode corpus clip *name* on the open *node* with Negotiating (a ring
    of 4): the run (what CAPTURE offered and gave), the frames' bytes, the
    stats."""
    frames: list[bytes] = []
    codec, width, height, packets = packets_of(corpus.path(name))
    run = Negotiating(node, BY_NAME[codec].fourcc, packets,
                      lambda frame: frames.append(frame.data), buffers=4,
                      timeout=timeout, width=width, height=height)
    stats = run.run()
    return run, frames, stats
