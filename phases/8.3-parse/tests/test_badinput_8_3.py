"""Phase 8.3 bad input: truncated, bit-flipped and random files never crash or
hang the parser. Every failure is a ValueError (ReaderError from the readers,
ParseError from FFmpeg) naming the byte offset; nothing else escapes.

Time bound per file: the parser's own time_limit (checked between packets),
and faulthandler as the hard stop if FFmpeg itself ever hangs inside one call
(it dumps the stacks and exits the test process rather than hang CI)."""

from __future__ import annotations

import faulthandler
import random
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daedalus.parse import corpus
from daedalus.parse.ffparse import Frame, ParseError, parse_all
from daedalus.parse.readers import ReaderError

PER_FILE_S = 20.0  # hard bound for one parse (faulthandler)
TIME_LIMIT_S = 10.0  # the parser's own bound
SMALL = ["vp9-128x96", "vp9-320x240-altref", "vp9-p2-10bit-320x240", "h264-high-128x96",
         "h264-high10-320x240", "av1-320x240", "av1-174x98"]


@contextmanager
def hard_time_bound(seconds: float) -> Iterator[None]:
    faulthandler.dump_traceback_later(seconds, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def parse_bounded(path: Path) -> tuple[str, list[Frame] | ValueError]:
    """('ok', frames) or ('error', the ValueError); any other exception propagates."""
    start = time.monotonic()
    with hard_time_bound(PER_FILE_S):
        try:
            _info, frames = parse_all(path, time_limit=TIME_LIMIT_S)
        except (ReaderError, ParseError) as exc:
            assert "byte offset" in str(exc) or "frame" in str(exc) or "FFmpeg" in str(exc), exc
            result: tuple[str, list[Frame] | ValueError] = ("error", exc)
        else:
            result = ("ok", frames)
    assert time.monotonic() - start < PER_FILE_S
    return result


@pytest.mark.parametrize("name", SMALL)
def test_truncated(tmp_path: Path, name: str) -> None:
    data = corpus.path(name).read_bytes()
    p = tmp_path / ("cut" + corpus.path(name).suffix)
    outcomes = set()
    for n in sorted({*range(0, len(data), max(1, len(data) // 40)), len(data) - 1}):
        p.write_bytes(data[:n])
        outcomes.add(parse_bounded(p)[0])
    assert "error" in outcomes


@pytest.mark.parametrize("name", SMALL)
def test_bit_flips(tmp_path: Path, name: str) -> None:
    data = corpus.path(name).read_bytes()
    rng = random.Random(f"8.3-{name}")
    p = tmp_path / ("flip" + corpus.path(name).suffix)
    for _ in range(25):
        buf = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            pos = rng.randrange(len(buf))
            buf[pos] ^= 1 << rng.randrange(8)
        p.write_bytes(bytes(buf))
        parse_bounded(p)


@pytest.mark.parametrize("seed", range(10))
def test_random_files(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    body = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 5000)))
    heads = [b"", b"\x00\x00\x00\x01\x67", b"\x12\x00\x0a\x0b",
             struct.pack("<4sHH4sHHIII4x", b"DKIF", 0, 32, b"VP90", 64, 48, 30, 1, 1),
             struct.pack("<4sHH4sHHIII4x", b"DKIF", 0, 32, b"AV01", 64, 48, 30, 1, 1)]
    for i, head in enumerate(heads):
        p = tmp_path / f"random{i}.bin"
        p.write_bytes(head + body)
        status, _ = parse_bounded(p)
        if not head:
            assert status == "error"


def test_errors_name_the_offset(tmp_path: Path) -> None:
    data = bytearray(corpus.path("vp9-128x96").read_bytes())
    data[32 + 12:32 + 12 + 64] = bytes(64)  # wipe the first frame's uncompressed header
    p = tmp_path / "broken.ivf"
    p.write_bytes(bytes(data))
    status, result = parse_bounded(p)
    assert status == "error" and isinstance(result, ParseError)
    assert result.offset == 32 and result.frame == 0


FUZZ_FILES = {name: corpus.path(name).read_bytes() for name in SMALL}
FUZZ_RUNS: list[str] = []


@settings(max_examples=400, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(name=st.sampled_from(SMALL),
       edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
                      max_size=12),
       cut=st.floats(0.05, 1.0))
def test_fuzz(tmp_path: Path, name: str, edits: list[tuple[float, int]], cut: float) -> None:
    """Hypothesis: a corpus file with bytes XOR-ed at random places, then cut."""
    buf = bytearray(FUZZ_FILES[name])
    for where, xor in edits:
        buf[int(where * len(buf))] ^= xor
    buf = buf[:max(1, int(cut * len(buf)))]
    p = tmp_path / f"fuzz{corpus.path(name).suffix}"
    p.write_bytes(bytes(buf))
    FUZZ_RUNS.append(parse_bounded(p)[0])


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=2048),
       head=st.sampled_from([b"", b"\x00\x00\x01", b"\x12\x00", b"DKIF"]))
def test_fuzz_random_bytes(tmp_path: Path, data: bytes, head: bytes) -> None:
    p = tmp_path / "fuzz.bin"
    p.write_bytes(head + data)
    FUZZ_RUNS.append(parse_bounded(p)[0])
