"""The campaigns' host-side parts: seeded mutations, reproducible plans, the command.

The campaigns themselves need the node and daedalusd: test_campaign_guest.py.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from daedalus.m2m.campaign import (
    CLEAN_BASE,
    CampaignCommand,
    Clip,
    default_clips,
    fuzz_clips,
    fuzz_plan,
    judge_clean_copy,
    load_clip,
    meminfo,
)
from daedalus.m2m.mutate import KINDS, MAX_GARBAGE, MAX_SPAN, _one, digest, mutate, stream_rng
from daedalus.m2m.reference import reference_output
from daedalus.m2m.v4l2 import Frame
from daedalus.parse import corpus
from daedalus.parse.readers import read_all

STREAM = [bytes([i]) * (50 + i) for i in range(12)]  # 12 distinct, non-empty packets


def test_a_seed_and_index_always_give_the_same_stream() -> None:
    for index in range(20):
        a = mutate(STREAM, stream_rng(7, index))
        b = mutate(STREAM, stream_rng(7, index))
        assert a == b
    streams = {digest(mutate(STREAM, stream_rng(7, i))[0]) for i in range(50)}
    assert len(streams) > 45  # different indexes, different streams
    assert mutate(STREAM, stream_rng(7, 3)) != mutate(STREAM, stream_rng(8, 3))


def test_stream_rng_is_independent_of_the_process() -> None:
    """A finding printed by one run is reproduced by another (no hash randomisation)."""
    code = ("from daedalus.m2m.mutate import stream_rng; "
            "print(stream_rng(42, 5).getrandbits(64))")
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout
            for seed in ("1", "2")}
    assert runs == {f"{stream_rng(42, 5).getrandbits(64)}\n"}


@pytest.mark.parametrize("kind", KINDS)
def test_each_mutation_keeps_the_stream_feedable(kind: str) -> None:
    rng = random.Random(kind)
    for _ in range(200):
        packets = list(STREAM)
        done = _one(packets, kind, rng)
        assert done.kind == kind and str(done).startswith(f"{kind}@")
        assert packets and all(packets), "an empty stream or packet"
        if kind != "garbage":
            assert max(len(p) for p in packets) <= max(len(p) for p in STREAM)
        if kind == "drop":
            assert len(packets) == len(STREAM) - 1
        elif kind in ("duplicate", "garbage"):
            assert len(packets) == len(STREAM) + 1
        elif kind == "cut":
            assert packets == STREAM[:done.packet + 1]
        else:
            assert len(packets) == len(STREAM)
        changed = [i for i, (a, b) in enumerate(zip(packets, STREAM, strict=False)) if a != b]
        if kind in ("flip", "truncate", "run", "random"):
            assert changed in ([], [done.packet])  # a run of equal bytes may change nothing
            if kind == "flip":
                assert changed == [done.packet]
                bits = [int(b) for b in done.detail.split(",")]
                diff = int.from_bytes(packets[done.packet], "little") ^ int.from_bytes(
                    STREAM[done.packet], "little")
                assert diff == sum(1 << b for b in bits)
            if kind in ("run", "random"):
                start, size = (int(x) for x in done.detail.split("=")[0].split("+"))
                assert 1 <= size <= MAX_SPAN
                a, b = packets[done.packet], STREAM[done.packet]
                assert a[:start] == b[:start] and a[start + size:] == b[start + size:]
        if kind == "swap":
            i = done.packet
            assert (packets[i], packets[i + 1]) == (STREAM[i + 1], STREAM[i])
        if kind == "garbage":
            assert 1 <= len(packets[done.packet]) <= MAX_GARBAGE


def test_mutate_refuses_what_the_node_cannot_be_fed() -> None:
    with pytest.raises(ValueError):
        mutate([], random.Random(1))
    with pytest.raises(ValueError):
        mutate([b"x", b""], random.Random(1))


def _clip(name: str, n: int) -> Clip:
    return Clip(name, "vp9", "VP90", 16, 16, tuple(bytes([n, i]) * 9 for i in range(8)),
                tuple(bytes([i]) * 384 for i in range(8)))


def test_one_stream_of_a_plan_is_reproduced_alone() -> None:
    clips = [_clip("a", 1), _clip("b", 2)]
    whole = list(fuzz_plan(clips, seed=5, first=0, count=10))
    assert [clip.name for _, clip, _, _ in whole] == ["a", "b"] * 5  # every clip in turn
    for index in (0, 3, 9):
        alone = list(fuzz_plan(clips, seed=5, first=index, count=1))
        assert alone == [whole[index]]
    assert CLEAN_BASE > max(len(p) for _, _, p, _ in whole)  # clean timestamps stand apart


def test_clips_carry_ffmpegs_frames() -> None:
    clip = load_clip("vp9-128x96")
    path = corpus.path("vp9-128x96")
    _, packets = read_all(path)
    assert clip.packets == tuple(p.data for p in packets)
    assert len(clip.frames) == 10 and all(len(f) == 128 * 96 * 3 // 2 for f in clip.frames)
    assert b"".join(clip.frames) == reference_output(path)
    with pytest.raises(Exception, match="8-bit clips of one size"):
        load_clip("vp9-resize-320x240-174x98")
    with pytest.raises(Exception, match=r"8-bit clips of one size .* yuv444p"):
        load_clip("vp9-p1-444-176x144")


def test_meminfo_has_what_the_soak_samples() -> None:
    mem = meminfo()
    assert {"Slab", "SUnreclaim", "VmallocUsed"} <= set(mem)
    assert mem["Slab"] >= mem["SUnreclaim"] > 0


def test_campaign_command_is_registered_and_needs_a_node() -> None:
    commands = {ep.name: ep for ep in entry_points(group="daedalus.commands")}
    assert commands["campaign"].load() is CampaignCommand
    proc = subprocess.run(["daedalus-v4l2", "campaign", "--help"], capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0
    for name in ("fuzz", "kill", "soak"):
        assert name in proc.stdout
    proc = subprocess.run(["daedalus-v4l2", "campaign", "fuzz", "--device", "/nonexistent"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("daedalus-v4l2 campaign fuzz: no decoder node: ")


def test_fuzz_takes_every_usable_clip_of_each_codec_interleaved() -> None:
    names = fuzz_clips(["vp9", "h264"])
    want = {e.name for e in corpus.entries(large=False)
            if e.codec in ("vp9", "h264") and e.bit_depth == 8 and len(e.sizes) == 1
            and e.pix_fmt == "yuv420p"}
    assert set(names) == want and len(names) == len(want)
    assert {"vp9-320x240", "h264-high-320x240", "vp9-174x98"} <= want
    # the layouts the daemon refuses are no fuzz material
    assert not {"h264-high444-176x144", "h264-high422-176x144", "vp9-p1-444-176x144"} & want
    codecs = [corpus.entry(n).codec for n in names]
    assert codecs[:2] in (["vp9", "h264"], ["h264", "vp9"])  # the first two: both codecs
    assert default_clips(["vp9", "h264"]) == ["vp9-320x240", "h264-high-320x240"]


def _frames(*stamped: tuple[int, bytes]) -> list[Frame]:
    return [Frame(4, 4, ts, False, data) for ts, data in stamped]


def test_the_clean_copy_is_judged_by_its_place_and_pixels() -> None:
    want = [b"A", b"B", b"C"]
    c = CLEAN_BASE
    # intact, after two frames of the mutated part
    assert judge_clean_copy(_frames((0, b"x"), (1, b"y"), (c, b"A"), (c + 2, b"B"),
                                    (c + 1, b"C")), want) == (0, 0, 0)
    # the key frame's access unit began in the mutated part's last buffer: the
    # frame carries that buffer's timestamp (dev-decoder.rst), pixels intact
    assert judge_clean_copy(_frames((0, b"A"), (c + 1, b"B"), (c + 2, b"C")), want) == (0, 0, 1)
    # the first clean frame missing: the tail reaches into the mutated part
    assert judge_clean_copy(_frames((0, b"x"), (c + 1, b"B"), (c + 2, b"C")), want) == (0, 1, 0)
    # the same on a stream with nothing before the clean copy
    assert judge_clean_copy(_frames((c + 1, b"B"), (c + 2, b"C")), want) == (1, 0, 0)
    # a middle one missing
    assert judge_clean_copy(_frames((c, b"A"), (c + 2, b"C")), want) == (1, 1, 0)
    # a frame not byte-exact
    assert judge_clean_copy(_frames((c, b"A"), (c + 1, b"b"), (c + 2, b"C")), want)[1] == 1
    # a mutated-part frame delivered among the clean ones
    assert judge_clean_copy(_frames((c, b"A"), (5, b"B"), (c + 2, b"C")), want)[1] == 1
    # a clean-stamped frame before the tail: one frame too many
    assert judge_clean_copy(_frames((c, b"A"), (c, b"A"), (c + 1, b"B"), (c + 2, b"C")),
                            want)[1] == 1
