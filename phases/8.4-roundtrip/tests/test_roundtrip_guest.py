"""Phase 8.4 in the guest: decode round trips kernel -> daedalusd -> kernel.

Runs inside a booted guest with the phase 8.4 module loaded and the real
daedalusd (with the DECODE handler) connected. Each stream goes through the
debugfs decode file: one open file is one kernel stream, each write(2) one
REQ_DECODE / RESP_FRAME round trip, pread(2) the answer.

The reference is the ffmpeg command line in the guest decoding the same
file to raw NV12 / P010, digested with FNV-1a 64 (``daedalus.proto.fnv1a64``,
checked against a pure-Python FNV-1a on the host); the in-process
``--local`` run of the same handler must print exactly the same lines.
"""

from __future__ import annotations

import errno
import io
import os
import re
import subprocess
import threading
from pathlib import Path

import pytest

from daedalus.proto import (
    DECODE_FLUSH,
    Codec,
    DecodeStatus,
    FrameInfo,
    fnv1a64,
    pack_decode_req,
    parse_frame_resp,
    validate_frame_resp,
)
from daedalus.roundtrip.cli import (
    DEFAULT_DEBUGFS,
    KernelTransport,
    LocalTransport,
    Result,
    run_roundtrip,
)
from daedalus.roundtrip.clips import Clip, find_clips, reference_frames
from daedalus.testbed.guestctl import daemon_state, daemon_stopped, tool

pytestmark = pytest.mark.guest

FRAME_LINE = re.compile(r"^\s*(\d+)  (\d+)x(\d+)  (nv12|p010)  fnv1a64=([0-9a-f]{16})$")
TIMEOUT = 600  # a whole stream under TCG


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Clip]:
    # The corpus's committed vectors where they fit; only vp9-gop is encoded here.
    return find_clips(tmp_path_factory.mktemp("clips"), ["vp9", "h264", "av1", "vp9-gop"])


def roundtrip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("daedalus-v4l2"), "roundtrip", *args], capture_output=True,
                          text=True, timeout=TIMEOUT)


def digests(stdout: str) -> list[int]:
    found = []
    for line in stdout.splitlines():
        m = FRAME_LINE.match(line)
        if m:
            found.append(int(m[5], 16))
    return found


def packets_of(path: Path) -> list[bytes]:
    from daedalus.parse.readers import open_stream

    _, packets = open_stream(str(path))
    return [p.data for p in packets]


@pytest.mark.parametrize("role", ["vp9", "h264", "av1"])
def test_roundtrip_digests_equal_ffmpeg(clips: dict[str, Clip], role: str) -> None:
    clip = clips[role]
    if role == "vp9":
        assert (clip.width, clip.height, clip.frames) == (320, 240, 30)
    proc = roundtrip(str(clip.path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert DEFAULT_DEBUGFS in proc.stderr and "NOT exercised" not in proc.stderr
    assert digests(proc.stdout) == [fnv1a64(f) for f in reference_frames(clip)]
    assert len(proc.stdout.splitlines()) == clip.frames  # one line per frame, nothing else
    local = roundtrip("--local", str(clip.path))
    assert local.returncode == 0 and local.stdout == proc.stdout


def test_corrupt_stream_gives_error_lines_and_recovers(clips: dict[str, Clip],
                                                       tmp_path: Path) -> None:
    from daedalus.parse.readers import open_stream

    clip = clips["vp9-gop"]
    bad = clip.key_packets[0] + 4
    resume = min(k for k in clip.key_packets if k > bad)
    _, reader = open_stream(str(clip.path))
    packet = next(p for p in reader if p.index == bad)
    data = bytearray(clip.path.read_bytes())
    data[packet.offset + 12] ^= 0xFF  # first byte after the IVF frame header
    corrupt = tmp_path / "corrupt.ivf"
    corrupt.write_bytes(bytes(data))

    proc = roundtrip(str(corrupt))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    errors = [line for line in proc.stdout.splitlines() if line.startswith("error")]
    assert errors and errors[0].startswith(f"error  packet {bad}: EILSEQ: ")
    got = digests(proc.stdout)
    clean = [fnv1a64(f) for f in reference_frames(clip)]
    assert got[-(clip.frames - resume):] == clean[resume:]  # from the keyframe on
    assert got[:bad] == clean[:bad]
    assert daemon_state() == "ready"  # the daemon survived


def _stream(path: Path, codec: Codec, results: dict[str, Result], key: str,
            errors: list[BaseException]) -> None:
    try:
        transport = KernelTransport(DEFAULT_DEBUGFS)
        try:
            from daedalus.parse.readers import open_stream

            _, packets = open_stream(str(path))
            results[key] = run_roundtrip(packets, codec, transport, out=io.StringIO())
        finally:
            transport.close()
    except BaseException as exc:
        errors.append(exc)


def test_concurrent_streams_keep_their_own_references(clips: dict[str, Clip]) -> None:
    """Three open files decoding at once (two VP9 streams and an H.264 one):
    each gets exactly what it gets alone."""
    from daedalus.parse.readers import open_stream

    jobs = {"a": clips["vp9"], "b": clips["vp9-gop"], "c": clips["h264"]}
    expected = {}
    for key, clip in jobs.items():
        _, packets = open_stream(str(clip.path))
        expected[key] = run_roundtrip(packets, clip.wire_codec, LocalTransport(),
                                      out=io.StringIO()).frames
    results: dict[str, Result] = {}
    errors: list[BaseException] = []
    threads = [threading.Thread(target=_stream, args=(clip.path, clip.wire_codec, results,
                                                      key, errors))
               for key, clip in jobs.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not errors
    for key in jobs:
        assert results[key].ok and results[key].frames == expected[key], key


def _write(fd: int, data: bytes) -> int | None:
    """None if the write went through, else its errno."""
    try:
        assert os.write(fd, data) == len(data)
    except OSError as exc:
        return exc.errno
    return None


def test_malformed_requests_are_einval_and_the_stream_goes_on(clips: dict[str, Clip]) -> None:
    first = packets_of(clips["vp9"].path)[0]
    bad = {
        "stream id set": pack_decode_req(Codec.VP9, first, stream_id=3),
        "length mismatch": pack_decode_req(Codec.VP9, first, bitstream_len=len(first) + 1),
        "unknown codec": pack_decode_req(7, first),
        "unknown flag": pack_decode_req(Codec.VP9, first, flags=0x80),
        "reserved": pack_decode_req(Codec.VP9, first, reserved=[0, 0, 0, 9]),
        "too short": pack_decode_req(Codec.VP9)[:-1],
    }
    fd = os.open(DEFAULT_DEBUGFS, os.O_RDWR)
    try:
        for name, data in bad.items():
            assert _write(fd, data) == errno.EINVAL, name
        assert _write(fd, pack_decode_req(Codec.VP9, first, timestamp=5)) is None
        resp = parse_frame_resp(os.pread(fd, 65536, 0))
        validate_frame_resp(resp)
        assert resp.ok and [(f.width, f.height, f.timestamp, f.key) for f in resp.frames] == [
            (320, 240, 5, True)]
        # the codec is fixed once the stream has decoded
        assert _write(fd, pack_decode_req(Codec.H264, first)) == errno.EINVAL
    finally:
        os.close(fd)


def test_decode_error_is_data_not_a_failed_write() -> None:
    fd = os.open(DEFAULT_DEBUGFS, os.O_RDWR)
    try:
        request = pack_decode_req(Codec.VP9, b"\x00" * 64, timestamp=1)
        assert _write(fd, request) is None
        resp = parse_frame_resp(os.pread(fd, 65536, 0))
        assert (resp.status, resp.error, resp.frames) == (DecodeStatus.ERROR, errno.EILSEQ, ())
        assert resp.text
        assert _write(fd, pack_decode_req(Codec.VP9, flags=DECODE_FLUSH)) is None
        assert parse_frame_resp(os.pread(fd, 65536, 0)).ok
    finally:
        os.close(fd)


def test_no_daemon_is_enotconn_and_the_cli_says_so(clips: dict[str, Clip]) -> None:
    with daemon_stopped():
        fd = os.open(DEFAULT_DEBUGFS, os.O_RDWR)
        try:
            assert _write(fd, pack_decode_req(Codec.VP9, b"x")) == errno.ENOTCONN
        finally:
            os.close(fd)
        proc = roundtrip(str(clips["vp9"].path))
        assert proc.returncode == 1 and "start daedalusd" in proc.stderr
    proc = roundtrip(str(clips["vp9"].path))  # the daemon is back: streams work again
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_frame_info_reports_key_frames(clips: dict[str, Clip]) -> None:
    clip = clips["vp9-gop"]
    transport = KernelTransport(DEFAULT_DEBUGFS)
    try:
        from daedalus.parse.readers import open_stream

        _, packets = open_stream(str(clip.path))
        frames: list[FrameInfo] = run_roundtrip(packets, Codec.VP9, transport,
                                                out=io.StringIO()).frames
    finally:
        transport.close()
    assert [f.timestamp for f in frames if f.key] == list(clip.key_packets)
    assert [f.timestamp for f in frames] == list(range(clip.frames))
