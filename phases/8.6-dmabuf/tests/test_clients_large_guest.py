"""Phase 8.6 in the guest: the clients at real sizes (issue #12 item 8 and, in part, item 3).

Unmodified clients, byte for byte against Debian's ffmpeg decoding the same
file in software (daedalus.m2m.reference): FFmpeg 5.1's ``vp9_v4l2m2m`` /
``h264_v4l2m2m``, GStreamer 1.22's ``v4l2vp9dec`` / ``v4l2h264dec`` with its
default CAPTURE I/O and with ``capture-io-mode=dmabuf`` (its CAPTURE
buffers exported with VIDIOC_EXPBUF and handed downstream as dma-bufs),
and the project's ``daedalus-v4l2 decode``, at 128x96, 1280x720, 1920x1080
and a size that is not a multiple of 16 (174x98). GStreamer pads its NV12
rows to a multiple of 4 bytes, so its frames are compared on their visible
pixels (daedalus.m2m.clients.gst_frames).

Only what the other guest tests do not run already is here:

- 8.5's test_clients_guest.py / test_m2m_guest.py: FFmpeg and GStreamer
  (default I/O) at 320x240, 176x144, 352x288 and 322x242 (GStreamer for
  both codecs, FFmpeg for H.264), the refusals of 10-bit, 4:2:2 and 4:4:4;
- 8.6's test_dmabuf_guest.py: the decode tool at 720p and 1080p (VP9 and
  H.264), GStreamer's ``capture-io-mode=dmabuf`` at 320x240, a second
  context importing CAPTURE buffers at 320x240 and 1080p;
- 8.6's test_av1_guest.py: the decode tool on AV1 at 174x98 (an OBU
  stream), 320x240, 720p and 1080p (10 frames).

So FFmpeg's VP9 and GStreamer's dmabuf mode take 174x98 here; GStreamer's
default I/O and FFmpeg's H.264 have their non-multiple-of-16 size in 8.5.

Frames: 1080p VP9 decodes its 10 frames, 1080p H.264 its first 5 (the
issue's minimum; a 1080p frame costs about 2 s under TCG): FFmpeg is told
``-frames:v 5``, GStreamer ends its pipeline after 5 frames
(``gstreamer(frames=5)``), and both are compared with the reference's first
5. Every (client, codec) pair decodes 1080p once.

4096x2304 (``vp9-4096x2304``, 3 frames, 13.5 MiB NV12 frames) goes through
``daedalus-v4l2 decode --compare``; its OUTPUT buffers stay at the 1 MiB
minimum (the tool asks for its largest packet, 23 KB), within the node's
13.5 MiB bound at that size. The watchdog is raised to 60 s meanwhile: a
4096x2304 frame under TCG may take longer than the default 5 s to decode,
which is the watchdog's business, not this test's.

The large vectors are encoded on first use (corpus.path); Debian's ffmpeg
decodes each clip once per test run for the reference (cached here).
"""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path

import pytest

from daedalus.m2m.campaign import bridge_timeout
from daedalus.m2m.clients import (
    decode,
    ffmpeg_argv,
    frame_sizes,
    gst_frames,
    gstreamer,
    reference_frames,
    split,
    summary,
)
from daedalus.m2m.layout import Geometry
from daedalus.m2m.status import DecodeExit
from daedalus.parse import corpus
from daedalus.testbed.guestctl import daemon_state

pytestmark = pytest.mark.guest

SMALL = ["vp9-128x96", "h264-high-128x96"]
LARGE = ["vp9-1280x720", "h264-high-1280x720", "vp9-1920x1080", "h264-high-1920x1080"]
ODD = {"vp9": "vp9-174x98", "h264": "h264-high-174x98"}  # neither side a multiple of 16
# the issue's minimum at 1080p: VP9 10 frames (all), H.264 5
FRAMES = {"h264-high-1920x1080": 5}
# 720p and up through every client take 20-40 s each under TCG: the CI tier
# leaves them out (marker "extended"; DAEDALUS_EXTENDED=1 runs them, see the
# 8.6 closure page for the figures). Large frames stay in CI through
# test_dmabuf_guest.py's 720p/1080p decodes and imports.
EXTENDED = [pytest.param(name, marks=pytest.mark.extended) for name in LARGE]
FFMPEG_CLIPS = [*SMALL, *EXTENDED, ODD["vp9"]]
GST_CLIPS = [*SMALL, *EXTENDED]
GST_DMABUF_CLIPS = [*SMALL, *EXTENDED, ODD["vp9"], ODD["h264"]]
TOOL_CLIPS = ["vp9-128x96", "h264-high-128x96", "av1-128x96", ODD["vp9"], ODD["h264"]]
HUGE = "vp9-4096x2304"
CLIENT_TIMEOUT = 900  # one client run under TCG, 1080p included, generously
PATIENCE = "300"      # the decode tool's --timeout at 4096x2304
WATCHDOG_MS = 60000


@cache
def want(name: str) -> tuple[bytes, ...]:
    """Debian's ffmpeg's frames of clip *name* (one software decode per run)."""
    return tuple(reference_frames(name))


def expected(name: str) -> list[bytes]:
    """The frames a client is asked for: the first FRAMES[name], else all."""
    return list(want(name)[:FRAMES.get(name, len(want(name)))])


def sizes_of(name: str) -> list[tuple[int, int]]:
    return frame_sizes(name)[:FRAMES.get(name, len(frame_sizes(name)))]


def test_the_clips_are_the_sizes_the_issue_names() -> None:
    """128x96, 1280x720, 1920x1080 (VP9 at least 10 frames, H.264 at least
    5 decoded), 174x98 and 4096x2304: from the corpus manifest, not from
    the clips themselves."""
    ffmpeg_names = [*SMALL, *LARGE, ODD["vp9"]]
    for name in [*ffmpeg_names, *ODD.values(), *TOOL_CLIPS, HUGE]:
        entry = corpus.entry(name)
        assert f"{entry.width}x{entry.height}" in name, name
    assert {(corpus.entry(n).width, corpus.entry(n).height) for n in ffmpeg_names} == {
        (128, 96), (1280, 720), (1920, 1080), (174, 98)}
    assert len(sizes_of("vp9-1920x1080")) >= 10 and len(sizes_of("h264-high-1920x1080")) >= 5
    assert all(w % 16 and h % 16 for w, h in (frame_sizes(n)[0] for n in ODD.values()))
    assert (corpus.entry(HUGE).width, corpus.entry(HUGE).height) == (4096, 2304)


@pytest.mark.parametrize("name", FFMPEG_CLIPS)
def test_ffmpeg_decoders_at_real_sizes(name: str, tmp_path: Path) -> None:
    """``ffmpeg -c:v vp9_v4l2m2m|h264_v4l2m2m -i CLIP -pix_fmt nv12 -f
    rawvideo``: every frame byte for byte the software decode's."""
    out = tmp_path / "ff.yuv"
    limit = ["-frames:v", str(FRAMES[name])] if name in FRAMES else []
    proc = subprocess.run(ffmpeg_argv(name, out, *limit), capture_output=True, text=True,
                          timeout=CLIENT_TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    frames = expected(name)
    data = out.read_bytes()
    print(f"{name}: FFmpeg wrote {len(data)} bytes, {len(frames)} frames expected")
    assert split(data, sizes_of(name)) == frames
    assert daemon_state() == "ready"


def gst_decoded_exact(name: str, tmp_path: Path, options: list[str]) -> None:
    """GStreamer decodes clip *name* (its first FRAMES[name] frames) byte for
    byte on the visible pixels; without a frame limit, it also reports no
    frame lost by the driver ("bug in decoder": GStreamer's warning when
    frames stay behind at the end; a pipeline cut short leaves some, by
    design)."""
    limit = FRAMES.get(name)
    code, log, data = gstreamer(name, tmp_path, timeout=CLIENT_TIMEOUT,
                                decoder_options=options, frames=limit)
    assert code == 0, log
    if limit is None:
        assert "bug in decoder" not in log, log
    sizes = sizes_of(name)
    one = Geometry(*sizes[0])
    print(f"{name} {' '.join(options) or '(default I/O)'}: GStreamer wrote {len(data)} bytes "
          f"({len(sizes)} frames of {(one.width + 3) & ~3} x {one.height} rows expected)")
    assert gst_frames(data, sizes) == expected(name)
    assert daemon_state() == "ready"


@pytest.mark.parametrize("name", GST_CLIPS)
def test_gstreamer_at_real_sizes(name: str, tmp_path: Path) -> None:
    gst_decoded_exact(name, tmp_path, [])


@pytest.mark.parametrize("name", GST_DMABUF_CLIPS)
def test_gstreamer_exporting_capture_buffers_at_real_sizes(name: str, tmp_path: Path) -> None:
    """``capture-io-mode=dmabuf``: the decoder exports its CAPTURE buffers
    (VIDIOC_EXPBUF) and sends dma-buf memory downstream."""
    gst_decoded_exact(name, tmp_path, ["capture-io-mode=dmabuf"])


def tool_decoded_exact(name: str, tmp_path: Path, *options: str) -> str:
    """``daedalus-v4l2 decode --compare``: exit 0, byte-exact, every frame at
    its size and no buffer in error; then compared once more outside the
    tool, frame by frame. Its stdout."""
    out = tmp_path / "out.yuv"
    proc = decode(corpus.path(name), out, "--compare", *options)
    assert proc.returncode == DecodeExit.OK, proc.stdout + proc.stderr
    assert "byte-exact: yes" in proc.stdout.splitlines()
    sizes = frame_sizes(name)
    got = summary(proc.stdout)
    assert (got.frames, got.errors) == (len(sizes), 0), proc.stdout
    assert got.sizes == list(dict.fromkeys(f"{w}x{h}" for w, h in sizes))
    assert split(out.read_bytes(), sizes) == list(want(name))
    return proc.stdout


@pytest.mark.parametrize("name", TOOL_CLIPS)
def test_decode_tool_at_the_smallest_and_odd_sizes(name: str, tmp_path: Path) -> None:
    """VP9, H.264 and AV1 at 128x96; VP9 and H.264 at 174x98 (AV1's odd
    size, 174x98 from an OBU stream, is test_av1_guest.py's)."""
    tool_decoded_exact(name, tmp_path)


@pytest.mark.extended
def test_decode_tool_at_4096x2304(tmp_path: Path) -> None:
    """The largest size the issue asks for: 3 frames of 4096x2304 VP9,
    byte-exact, in CAPTURE buffers of 14,155,776 bytes (the NV12 size:
    4096 x 2304 x 3 / 2, rows of 4096 bytes)."""
    with bridge_timeout(WATCHDOG_MS):
        stdout = tool_decoded_exact(HUGE, tmp_path, "--timeout", PATIENCE)
    print(stdout)
    assert len(want(HUGE)) == 3
    assert {len(frame) for frame in want(HUGE)} == {4096 * 2304 * 3 // 2}
    assert daemon_state() == "ready"
