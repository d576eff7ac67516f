"""Phase 8.5 in the guest: unmodified clients on everyday streams.

Debian 12's GStreamer 1.22 (``v4l2h264dec`` / ``v4l2vp9dec``) and FFmpeg 5.1
(``h264_v4l2m2m`` / ``vp9_v4l2m2m``), and the project's own decode tool, on
the corpus kinds real video has: widths that are not a multiple of 64 (or of
16, or of 4), resolution changes up and down, B-pyramids, and streams the
node cannot carry exactly (4:2:2, 4:4:4, 10-bit), which it refuses.

The reference is Debian's ffmpeg decoding the same file in software
(daedalus.m2m.reference), compared byte for byte. GStreamer's raw NV12 rows
are padded to a multiple of 4 bytes (its default stride), so its frames are
compared on their visible pixels.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from daedalus.m2m.clients import (
    ffmpeg_argv,
    ffmpeg_refused,
    frame_sizes,
    gst_frames,
    gstreamer,
    gstreamer_refused,
    reference_frames,
)
from daedalus.m2m.status import DecodeExit
from daedalus.parse import corpus
from daedalus.testbed.guestctl import daemon_pid, daemon_state, tool

pytestmark = pytest.mark.guest

TIMEOUT_PARAM = Path("/sys/module/daedalus_v4l2/parameters/daemon_timeout_ms")

ODD_WIDTHS = ["vp9-176x144", "h264-high-176x144", "vp9-352x288", "h264-high-352x288",
              "vp9-322x242", "h264-high-322x242"]
GROWTH = ["vp9-resize-176x144-352x288", "h264-resize-176x144-352x288"]
SHRINK = ["vp9-resize-352x288-176x144", "h264-resize-352x288-176x144"]
GST_RESIZES = [*GROWTH, *SHRINK, "vp9-resize-320x240-174x98", "h264-resize-320x240-128x96"]
REFUSED = {
    "h264-high444-176x144": "4:4:4",
    "h264-high422-176x144": "4:2:2",
    "vp9-p1-444-176x144": "4:4:4",
    "vp9-p2-10bit-320x240": "10-bit",
    "h264-high10-320x240": "10-bit",
}
# phase 8.8 offers P010: its 10-bit streams decode (phases/8.8-perf/tests/test_p010_guest.py)
REFUSED_PARAMS = [pytest.param(name, marks=pytest.mark.superseded_in("8.8"))
                  if REFUSED[name] == "10-bit" else name for name in sorted(REFUSED)]
# and NV16 / NV24: the decode tool decodes every one of them from phase 8.8 on (4:2:2 and
# 4:4:4: phases/8.8-perf/tests/test_chroma_guest.py); FFmpeg 5.1 and GStreamer 1.22, which
# set CAPTURE up as NV12 before the header, are still refused on 4:2:2 and 4:4:4
TOOL_REFUSED_PARAMS = [pytest.param(name, marks=pytest.mark.superseded_in("8.8"))
                       for name in sorted(REFUSED)]


def dmesg() -> str:
    return subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("name", ODD_WIDTHS)
def test_gstreamer_frames_have_the_visible_size(name: str, tmp_path: Path) -> None:
    """Widths that are not a multiple of 64 (176, 352) or of 16 and 4 (322):
    GStreamer's frames are the visible picture, byte for byte ffmpeg's."""
    code, log, data = gstreamer(name, tmp_path)
    assert code == 0, log
    assert "bug in decoder" not in log, log
    assert gst_frames(data, frame_sizes(name)) == reference_frames(name)


@pytest.mark.parametrize("name", GST_RESIZES)
def test_gstreamer_across_a_resolution_change(name: str, tmp_path: Path) -> None:
    """Growth and shrink, at an H.264 SPS change and at a VP9 keyframe: every
    frame at its own size, byte for byte ffmpeg's."""
    code, log, data = gstreamer(name, tmp_path)
    assert code == 0, log
    assert gst_frames(data, frame_sizes(name)) == reference_frames(name)


@pytest.mark.parametrize("name", GROWTH + SHRINK)
def test_decode_tool_across_a_resolution_change(name: str, tmp_path: Path) -> None:
    out = tmp_path / "out.yuv"
    proc = subprocess.run([tool("daedalus-v4l2"), "decode", str(corpus.path(name)), "-o",
                           str(out), "--compare"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out.read_bytes() == b"".join(reference_frames(name))


@pytest.mark.parametrize("name", ["vp9-176x144", "h264-high-322x242"])
def test_ffmpeg_still_gets_the_visible_size(name: str, tmp_path: Path) -> None:
    """The stride change that GStreamer needed leaves FFmpeg byte-exact."""
    out = tmp_path / "ff.yuv"
    subprocess.run(ffmpeg_argv(name, out), check=True, timeout=300)
    assert out.read_bytes() == b"".join(reference_frames(name))


@pytest.mark.parametrize("name", GROWTH + SHRINK)
def test_ffmpeg_across_a_resolution_change_with_a_copying_filter(name: str,
                                                                 tmp_path: Path) -> None:
    """FFmpeg 5.1's v4l2m2m decoder re-allocates CAPTURE only once the
    application has released every frame it got (ff_v4l2_m2m_codec_reinit
    waits on a semaphore), and the ffmpeg CLI always keeps its last output
    frame: a filter that copies (``-vf copy``) releases them. With it, the
    node's sequence (old frames, empty LAST, SOURCE_CHANGE, CAPTURE set up
    again) gives every frame at its own size. FFmpeg restarts CAPTURE only when
    it sends another packet, so the corpus' changes come 8 frames before
    24 more."""
    out = tmp_path / "ff.yuv"
    proc = subprocess.run(ffmpeg_argv(name, out, "-vf", "copy", "-autoscale", "0"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == b"".join(reference_frames(name))


def test_ffmpeg_stuck_in_its_own_reinit_is_ended_by_sigkill(tmp_path: Path) -> None:
    """Without the copying filter, ffmpeg stops at the resolution change inside
    FFmpeg (its semaphore wait retries on EINTR, so SIGTERM does not end it).
    Whatever it does, SIGKILL ends it at once: close() never waits for the
    daemon. Then the node serves the next client byte-exact."""
    name = GROWTH[1]
    out = tmp_path / "ff.yuv"
    proc = subprocess.Popen(ffmpeg_argv(name, out), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    last, still = -1, time.monotonic()
    while proc.poll() is None and time.monotonic() - still < 15:
        size = out.stat().st_size if out.exists() else 0
        if size != last:
            last, still = size, time.monotonic()
        time.sleep(0.2)
    stuck = proc.poll() is None
    if stuck:
        proc.terminate()
        time.sleep(3)
        stuck = proc.poll() is None
    started = time.monotonic()
    proc.kill()
    proc.wait(timeout=30)
    ended = time.monotonic() - started
    print(f"ffmpeg {'stuck after SIGTERM' if stuck else 'ended'} with {last} bytes out; "
          f"SIGKILL to exit {ended:.2f} s")
    assert ended < 5
    check = tmp_path / "next.yuv"
    subprocess.run(ffmpeg_argv("vp9-176x144", check), check=True, timeout=300)
    assert check.read_bytes() == b"".join(reference_frames("vp9-176x144"))
    assert daemon_state() == "ready"


@pytest.mark.parametrize("stop", [0.5, 2.5])
def test_ffmpeg_b_pyramid_with_a_slowed_daemon(stop: float, tmp_path: Path) -> None:
    """3 B-frames with a pyramid through h264_v4l2m2m while daedalusd is
    stopped (SIGSTOP) three times for *stop* seconds, with the watchdog at 1 s.

    Shorter than the watchdog: every frame, byte for byte ffmpeg's. Longer:
    no hang, no more frames than the stream has, the daemon serves on; the
    figures are printed (frames out, CAPTURE buffers in error, OUTPUT buffers
    the daemon did not read in time). Whether every missing frame was flagged
    cannot be counted through FFmpeg, which reports no OUTPUT buffer error: an
    OUTPUT buffer whose packet the decoder rejected (EILSEQ after a lost
    reference) is flagged without a kernel log line. A FEED whose answer was
    lost no longer loses frames (RESYNC; the host tests count them)."""
    name = "h264-main-bpyramid-320x240"
    want = reference_frames(name)
    size = len(want[0])
    out = tmp_path / "ff.yuv"
    pid = daemon_pid()
    assert pid is not None
    saved = TIMEOUT_PARAM.read_text().strip()
    TIMEOUT_PARAM.write_text("1000")
    log_before = dmesg()
    stops = 0
    try:
        argv = ffmpeg_argv(name, out)
        proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        marks = [2, 9, 16]  # stop once this many frames are out
        while proc.poll() is None and time.monotonic() < deadline:
            done = out.stat().st_size // size if out.exists() else 0
            if marks and done >= marks[0]:
                marks.pop(0)
                os.kill(pid, signal.SIGSTOP)
                time.sleep(stop)
                os.kill(pid, signal.SIGCONT)
                stops += 1
            time.sleep(0.05)
        _, err = proc.communicate(timeout=60)
    finally:
        os.kill(pid, signal.SIGCONT)
        TIMEOUT_PARAM.write_text(saved)
    assert proc.returncode == 0, err
    assert stops >= 1, "FFmpeg was done before the daemon could be stopped"
    data = out.read_bytes()
    got = [data[i:i + size] for i in range(0, len(data), size)]
    errors = err.count("driver decode error")
    log = dmesg()[len(log_before):] if dmesg().startswith(log_before) else dmesg()
    undecoded = len(re.findall(r"OUTPUT buffer \d+ not decoded: -110", log))
    wrong = sum(g != w for g, w in zip(got, want, strict=False))
    print(f"{stops} stops of {stop} s: {len(got)} frames out ({errors} CAPTURE buffers in "
          f"error, {wrong} differ from ffmpeg's), {undecoded} OUTPUT buffers not read in time")
    if stop < 1.0:
        assert (len(got), wrong, errors, undecoded) == (len(want), 0, 0, 0), err
    else:
        assert len(got) <= len(want)
    assert daemon_state() == "ready"


@pytest.mark.parametrize("name", TOOL_REFUSED_PARAMS)
def test_refused_stream_through_the_decode_tool(name: str, tmp_path: Path) -> None:
    """The tool names the property the node cannot carry; no pixels come out."""
    out = tmp_path / "out.yuv"
    proc = subprocess.run([tool("daedalus-v4l2"), "decode", str(corpus.path(name)), "-o",
                           str(out)], capture_output=True, text=True, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode == DecodeExit.REFUSED, text
    assert REFUSED[name] in text, text
    assert not out.exists() or out.stat().st_size == 0
    assert re.search(r"stream \d+ refused: ", dmesg())


@pytest.mark.parametrize("name", REFUSED_PARAMS)
def test_refused_stream_through_ffmpeg_and_gstreamer(name: str, tmp_path: Path) -> None:
    """Both clients stop with an error (no hang), and write no picture: the
    node never hands out a frame that is not the decoder's. FFmpeg reports it
    by its exit status, or, when the refusal came before its end-of-stream
    STOP (a short clip under load), by logging that STOP's failure with
    status 0 (clients.ffmpeg_refused). GStreamer reports
    it by its exit status, or, when the refusal came after its CMD_STOP (the
    node refuses at the first decoded frame, which an H.264 stream with
    reordering yields only after several packets), by its own "left
    undrained" warning with status 0 (clients.gstreamer_refused)."""
    out = tmp_path / "ff.yuv"
    proc = subprocess.run(ffmpeg_argv(name, out), capture_output=True, text=True, timeout=300)
    assert ffmpeg_refused(proc.returncode, proc.stderr), proc.stderr
    assert not out.exists() or out.stat().st_size == 0, proc.stderr
    code, log, data = gstreamer(name, tmp_path, timeout=300)
    assert gstreamer_refused(code, log), log
    assert not data, log
    assert daemon_state() == "ready"
