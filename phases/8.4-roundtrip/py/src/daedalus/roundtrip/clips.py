"""Test clips and the reference they are checked against.

The reference for every digest is the ffmpeg command line (Debian's
/usr/bin/ffmpeg, a different FFmpeg build than PyAV's) decoding the same
file: ``ffmpeg -i FILE -fps_mode passthrough -autoscale 0 -pix_fmt nv12 -f
rawvideo -`` (``p010le`` for 10-bit), cut into frames of ``frame_size``
bytes (``-autoscale 0``: a stream that changes size keeps each frame's own).
The samples are the decoder's, as daedalusd hands them out: ``-vf KEEP_RANGE``
keeps swscale from squeezing a full-range stream into limited range on its way
to NV12 (it gives the same bytes as before on every other stream).

Clips come from phase 8.3's corpus when it has one that fits a role
(``daedalus.parse.corpus``), else they are made here with the ffmpeg CLI
from lavfi test patterns: small, with a keyframe every ``GOP`` frames so that
decoding can be shown to resume at the next one.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av

from daedalus.codec.session import create_decoder
from daedalus.proto import Codec, PixFmt, codecs
from daedalus.roundtrip.frames import AV_FORMATS, frame_size

GOP = 10
SIZE = (320, 240)
FRAMES = 30
CORPUS_MAX_BYTES = 4 * 1024 * 1024  # corpus files probed (decoded) to find a role's clip
# The reference's filter: the same range in and out, so swscale only moves samples
# into NV12 / P010's planes and never rescales them (frames.py: no range conversion).
KEEP_RANGE = "scale=in_range=tv:out_range=tv"


class ClipError(RuntimeError):
    """A clip could not be made or decoded by the reference."""


@dataclass(frozen=True)
class Clip:
    """A compressed test stream and what the reference decoder makes of it."""

    name: str
    path: Path
    codec: str                 # "vp9" | "h264" | "av1"
    width: int
    height: int
    frames: int
    bit_depth: int
    key_packets: tuple[int, ...]  # indexes of the packets holding a keyframe
    origin: str                # "corpus" | "generated"
    pix_fmt: str = "yuv420p"   # FFmpeg's name of the decoded layout

    @property
    def pixfmt(self) -> PixFmt:
        return PixFmt.NV12 if self.bit_depth <= 8 else PixFmt.P010

    @property
    def wire_codec(self) -> Codec:
        """The protocol's codec id of the clip's codec (the codec table's)."""
        return codecs.BY_NAME[self.codec].codec


@dataclass(frozen=True)
class Role:
    """What a test needs from a clip, and how to generate one."""

    codec: str
    bit_depth: int
    suffix: str
    args: tuple[str, ...]      # ffmpeg output options (encoder ...)
    source: str = "testsrc2"
    exact: bool = False        # must be SIZE and FRAMES exactly
    min_keys: int = 1          # keyframes (3 and more: decoding resumes at one)
    generate_only: bool = False

    @property
    def pix_fmt(self) -> str:
        """4:2:0 always: the layouts the daemon delivers (NV12 / P010)."""
        return "yuv420p" if self.bit_depth == 8 else "yuv420p10le"


def _ffmpeg() -> str:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise ClipError("ffmpeg is not installed (Debian: apt-get install ffmpeg)")
    return ffmpeg


def encoders() -> set[str]:
    out = subprocess.run([_ffmpeg(), "-hide_banner", "-encoders"], capture_output=True,
                         text=True, check=True).stdout
    return {line.split()[1] for line in out.splitlines()
            if len(line.split()) > 1 and line.startswith(" V")}


def _av1_args() -> tuple[str, ...]:
    have = encoders()
    if "libaom-av1" in have:
        return ("-c:v", "libaom-av1", "-cpu-used", "8", "-b:v", "300k", "-g", str(GOP),
                "-keyint_min", str(GOP), "-pix_fmt", "yuv420p", "-f", "ivf")
    if "libsvtav1" in have:
        return ("-c:v", "libsvtav1", "-preset", "12", "-g", str(GOP), "-pix_fmt", "yuv420p",
                "-f", "ivf")
    raise ClipError("this ffmpeg has no AV1 encoder (libaom-av1 or libsvtav1)")


# Always 4:2:0: from an RGB source (testsrc) libvpx-vp9 would pick 4:4:4 RGB.
YUV420 = ("-pix_fmt", "yuv420p")
VP9_ARGS = ("-c:v", "libvpx-vp9", "-b:v", "300k", "-g", str(GOP), "-keyint_min", str(GOP),
            "-cpu-used", "5", "-f", "ivf")
H264_ARGS = ("-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-g", str(GOP),
             "-keyint_min", str(GOP), "-sc_threshold", "0", "-pix_fmt", "yuv420p", "-f", "h264")
ROLES: dict[str, Callable[[], Role]] = {
    # The stream of the phase's acceptance: VP9, 320x240, 30 frames.
    "vp9": lambda: Role("vp9", 8, "ivf", (*YUV420, *VP9_ARGS), exact=True),
    # B-frames: output is reordered and the last frames only come with the flush.
    "h264": lambda: Role("h264", 8, "h264", H264_ARGS),
    "av1": lambda: Role("av1", 8, "ivf", _av1_args()),
    "vp9-10bit": lambda: Role("vp9", 10, "ivf", ("-pix_fmt", "yuv420p10le", "-profile:v", "2",
                                                 *VP9_ARGS)),
    # Other content, same codec and size: its digests must all differ from "vp9"'s.
    "vp9-other": lambda: Role("vp9", 8, "ivf", (*YUV420, *VP9_ARGS), source="testsrc",
                              exact=True, generate_only=True),
    # A keyframe every GOP frames: corrupt a packet, decoding resumes at the next one.
    "vp9-gop": lambda: Role("vp9", 8, "ivf", (*YUV420, *VP9_ARGS), min_keys=3),
    "h264-gop": lambda: Role("h264", 8, "h264", H264_ARGS, min_keys=3),
    "av1-gop": lambda: Role("av1", 8, "ivf", _av1_args(), min_keys=3),
}


def reference_output(path: Path, pixfmt: PixFmt) -> bytes:
    """ffmpeg's decoded frames of *path*, tightly packed NV12 / P010, concatenated.
    (-autoscale 0: a stream that changes size keeps each frame's own size;
    KEEP_RANGE: samples as decoded, a full-range stream's too.)"""
    cmd = [_ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin", "-i", str(path),
           "-map", "0:v:0", "-fps_mode", "passthrough", "-autoscale", "0",
           "-vf", KEEP_RANGE, "-pix_fmt", AV_FORMATS[pixfmt], "-f", "rawvideo", "-"]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        raise ClipError(f"{' '.join(cmd)} failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


def split_frames(data: bytes, sizes: Sequence[tuple[int, int]], pixfmt: PixFmt) -> list[bytes]:
    """*data* cut into frames of the given (width, height), in order; ClipError
    unless they use up every byte."""
    frames = []
    pos = 0
    for width, height in sizes:
        size = frame_size(width, height, pixfmt)
        frames.append(data[pos:pos + size])
        pos += size
    if pos != len(data):
        raise ClipError(f"{len(sizes)} frames of the given sizes make {pos} bytes, the "
                        f"reference wrote {len(data)}")
    return frames


def reference_frames(clip: Clip) -> list[bytes]:
    """ffmpeg's frames of a clip of one size: *clip.frames* frames of
    width * height * 3 / 2 bytes (twice that for P010)."""
    return split_frames(reference_output(clip.path, clip.pixfmt),
                        [(clip.width, clip.height)] * clip.frames, clip.pixfmt)


def demux(path: Path) -> list[bytes]:
    """The packets of *path* as FFmpeg's demuxer (and parser) splits them."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [bytes(p) for p in container.demux(stream) if p.size]


def probe(path: Path, name: str, origin: str) -> Clip:
    """Decode *path* once with PyAV: codec, size, depth, frames, keyframe packets."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        desc = codecs.BY_DECODER.get(stream.codec_context.name)
        codec = desc.name if desc is not None else stream.codec_context.name
    packets = demux(path)
    if desc is None:
        raise ClipError(f"{path}: codec {codec} is not one of {codecs.names()}")
    decoder = create_decoder(desc.codec)
    frames: list[av.VideoFrame] = []
    for index, data in enumerate(packets):
        packet = av.Packet(data)
        packet.pts = index
        frames += decoder.decode(packet)
    frames += decoder.decode(None)
    if not frames:
        raise ClipError(f"{path}: no frames decoded")
    first = frames[0]
    depth = max(c.bits for c in first.format.components)
    keys = tuple(sorted(int(f.pts) for f in frames if f.key_frame and f.pts is not None))
    return Clip(name=name, path=path, codec=codec, width=first.width, height=first.height,
                frames=len(frames), bit_depth=depth, key_packets=keys, origin=origin,
                pix_fmt=first.format.name)


def make_clip(name: str, dest: Path, *, frames: int = FRAMES,
              size: tuple[int, int] = SIZE) -> Clip:
    """Generate the clip of role *name* (see ROLES) in *dest*."""
    role = ROLES[name]()
    path = dest / f"{name}.{role.suffix}"
    source = f"{role.source}=size={size[0]}x{size[1]}:rate=30"
    cmd = [_ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "lavfi",
           "-i", source, "-frames:v", str(frames), *role.args, str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ClipError(f"{' '.join(cmd)} failed: {proc.stderr}")
    return probe(path, name, "generated")


def fits(clip: Clip, role: Role) -> bool:
    if role.generate_only or (clip.codec, clip.bit_depth, clip.pix_fmt) != (
            role.codec, role.bit_depth, role.pix_fmt):
        return False
    if role.exact and ((clip.width, clip.height) != SIZE or clip.frames != FRAMES):
        return False
    return (len(clip.key_packets) >= role.min_keys and clip.frames <= 120
            and clip.width * clip.height <= 640 * 480)


def _corpus_entries() -> list[Any]:
    """Phase 8.3's committed corpus entries (not the large ones); [] without a corpus."""
    try:
        from daedalus.parse import corpus
    except ImportError:
        return []
    try:
        return [e for e in corpus.entries() if not getattr(e, "large", False)]
    except Exception:  # no manifest in this checkout
        return []


def _probe_entry(entry: Any) -> Clip | None:
    from daedalus.parse import corpus

    try:
        path = Path(corpus.path(entry.name))
        if path.stat().st_size > CORPUS_MAX_BYTES:
            return None
        return probe(path, entry.name, "corpus")
    except Exception:  # an entry this phase cannot use (missing, other codec ...)
        return None


def corpus_clips() -> list[Clip]:
    """Every committed phase 8.3 corpus vector, probed; [] without a corpus."""
    return [c for c in map(_probe_entry, _corpus_entries()) if c is not None]


def _may_fit(entry: Any, role: Role) -> bool:
    """The manifest's word on an entry, before decoding it to be sure."""
    try:
        if role.generate_only or (entry.codec, entry.bit_depth) != (role.codec, role.bit_depth):
            return False
        if getattr(entry, "pix_fmt", role.pix_fmt) != role.pix_fmt:  # 4:2:2, 4:4:4 ...
            return False
        return not role.exact or (entry.width, entry.height, entry.frames) == (*SIZE, FRAMES)
    except AttributeError:
        return True


def find_clips(dest: Path, roles: Sequence[str] = tuple(ROLES), *,
               corpus: Sequence[Clip] | None = None) -> dict[str, Clip]:
    """A clip per role: a corpus vector when one fits (*corpus*: default the
    phase 8.3 corpus, probed as needed), else one generated into *dest*."""
    entries = _corpus_entries() if corpus is None else []
    probed: dict[str, Clip | None] = {}
    clips: dict[str, Clip] = {}
    for name in roles:
        role = ROLES[name]()
        match = next((c for c in corpus or () if fits(c, role)), None)
        for entry in entries:
            if match is not None:
                break
            if _may_fit(entry, role):
                if entry.name not in probed:
                    probed[entry.name] = _probe_entry(entry)
                clip = probed[entry.name]
                if clip is not None and fits(clip, role):
                    match = clip
        clips[name] = match if match is not None else make_clip(name, dest)
    return clips
