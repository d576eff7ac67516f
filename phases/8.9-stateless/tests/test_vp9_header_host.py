"""VP9 frame headers vs struct v4l2_ctrl_vp9_frame, and decode-order delivery through PyAV.

Independent paths: Debian's ffmpeg (``-bsf:v trace_headers``: FFmpeg's own
VP9 header reader, bit by bit, superframes split; ``-f rawvideo``: the
reference pictures), Debian's ffprobe (key_frame / size of each shown frame)
and the spec's invariants. PyAV is the decoder daedalusd drives (created as
the daemon creates it, ``daedalus.codec.session.create_decoder``).
"""

from __future__ import annotations

import re
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import av
import pytest

from daedalus.codec.session import create_decoder
from daedalus.m2m.reference import FFMPEG, reference_output
from daedalus.parse import corpus
from daedalus.parse.readers import open_stream
from daedalus.parse.reference import have_ffprobe, probe_frames
from daedalus.proto import Codec
from daedalus.roundtrip.frames import pack
from daedalus.stateless import vp9_ctrls as c
from daedalus.stateless.vp9_check import Vp9RefSlots, check
from daedalus.stateless.vp9_header import (
    KEY_FRAME,
    Vp9FrameHeader,
    Vp9HeaderError,
    Vp9Parser,
    fill,
    show_existing_frame,
    split_superframe,
)

pytestmark = pytest.mark.skipif(not Path(FFMPEG).is_file() or not have_ffprobe(),
                                reason="needs Debian's ffmpeg and ffprobe")

VP9_CLIPS = [e.name for e in corpus.entries(large=False) if e.codec == "vp9"]
ALTREF = "vp9-320x240-altref"
TS = 1000  # timestamp step: request n carries n * TS, as GStreamer's frame number * 1000


# --- the stream as requests ------------------------------------------------------


@dataclass
class Request:
    """One frame of the stream as a stateless client queues it."""

    number: int
    data: bytes
    header: Vp9FrameHeader
    control: c.Vp9Frame | None        # None for show_existing_frame
    slots_before: list[int | None] = field(default_factory=list)

    @property
    def timestamp(self) -> int:
        return self.number * TS


def frames_of(path: Path) -> list[bytes]:
    _info, packets = open_stream(path)
    return [frame for packet in packets for frame in split_superframe(packet.data)]


@cache
def requests(name: str) -> list[Request]:
    """Every frame of clip *name* in decode order, with the control a client
    fills for it (reference timestamps from the slots)."""
    parser, slots, out = Vp9Parser(), Vp9RefSlots(), []
    for n, data in enumerate(frames_of(corpus.path(name))):
        h = parser.parse(data)
        ctrl = None if h.show_existing_frame else fill(h, slots.ts)
        out.append(Request(n, data, h, ctrl, list(slots.ts)))
        parser.advance(h)
        slots.update(h.refresh_frame_flags, n * TS)
    return out


# --- ffmpeg's trace_headers --------------------------------------------------------

TRACE_LINE = re.compile(r"^\[trace_headers @ [0-9a-fx]+\] (?:(\d+)\s+(\S+)\s+\S*\s*= (-?\d+)|"
                        r"(Frame|Superframe Index|Packet:.*))$")


@dataclass
class Traced:
    """One frame as FFmpeg's cbs_vp9 reads it: syntax element -> value, and
    the bit position after each."""

    values: dict[str, int] = field(default_factory=dict)
    end: dict[str, int] = field(default_factory=dict)


@cache
def trace(name: str) -> tuple[list[Traced], list[list[int]]]:
    """The frames (in decode order) and the superframe indexes' frame sizes of clip *name*."""
    cmd = [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "verbose", "-i",
           str(corpus.path(name)), "-map", "0:v:0", "-c:v", "copy", "-bsf:v", "trace_headers",
           "-f", "null", "-"]
    log = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    frames: list[Traced] = []
    indexes: list[list[int]] = []
    in_index = False
    for line in log.splitlines():
        m = TRACE_LINE.match(line.strip())
        if not m:
            continue
        if m[4] == "Frame":
            frames.append(Traced())
            in_index = False
        elif m[4] == "Superframe Index":
            indexes.append([])
            in_index = True
        elif m[4]:
            in_index = False
        elif in_index:
            if m[2].startswith("frame_sizes["):
                # the index is traced twice (marker at both ends): keep the sizes once
                indexes[-1].append(int(m[3]))
        else:
            bits = len(line.split("=")[0].split()[-1]) if "=" in line else 0
            frames[-1].values[m[2]] = int(m[3])
            frames[-1].end[m[2]] = int(m[1]) + bits
    return frames, indexes


def traced_fields(t: Traced, h: Vp9FrameHeader) -> Iterator[tuple[str, int, int]]:
    """(name, ffmpeg's value, ours) for every element FFmpeg traced that we keep."""
    v = t.values
    simple = {
        "show_existing_frame": h.show_existing_frame,
        "frame_type": h.frame_type,
        "show_frame": h.show_frame,
        "error_resilient_mode": h.error_resilient_mode,
        "intra_only": h.intra_only,
        "reset_frame_context": h.reset_frame_context,
        "refresh_frame_flags": h.refresh_frame_flags,
        "frame_to_show_map_idx": h.frame_to_show_map_idx,
        "allow_high_precision_mv": h.allow_high_precision_mv,
        "refresh_frame_context": h.refresh_frame_context,
        "frame_parallel_decoding_mode": h.frame_parallel_decoding_mode,
        "frame_context_idx": h.frame_context_idx,
        "color_space": h.color.color_space,
        "color_range": h.color.color_range,
        "loop_filter_level": h.lf_level,
        "loop_filter_sharpness": h.lf_sharpness,
        "loop_filter_delta_enabled": h.lf_delta_enabled,
        "loop_filter_delta_update": h.lf_delta_update,
        "base_q_idx": h.base_q_idx,
        "segmentation_enabled": h.seg_enabled,
        "segmentation_update_map": h.seg_update_map,
        "segmentation_temporal_update": h.seg_temporal_update,
        "segmentation_update_data": h.seg_update_data,
        "segmentation_abs_or_delta_update": h.seg_abs_or_delta_update,
        "tile_cols_log2": h.tile_cols_log2,
        "tile_rows_log2": h.tile_rows_log2,
        "header_size_in_bytes": h.compressed_header_size,
    }
    for key, ours in simple.items():
        if key in v:
            yield key, v[key], ours
    if "profile_low_bit" in v:
        yield "profile", v["profile_low_bit"] | v["profile_high_bit"] << 1, h.profile
    for i in range(3):
        if f"ref_frame_idx[{i}]" in v:
            yield f"ref_frame_idx[{i}]", v[f"ref_frame_idx[{i}]"], h.ref_frame_idx[i]
            yield (f"ref_frame_sign_bias[{i + 1}]", v[f"ref_frame_sign_bias[{i + 1}]"],
                   h.ref_frame_sign_bias[i])
    if "frame_width_minus_1" in v:
        yield "frame_width_minus_1", v["frame_width_minus_1"], h.width - 1
        yield "frame_height_minus_1", v["frame_height_minus_1"], h.height - 1
    if "render_width_minus_1" in v:
        yield "render_width_minus_1", v["render_width_minus_1"], h.render_width - 1
    for i in range(4):
        if f"loop_filter_ref_deltas[{i}]" in v:
            yield f"loop_filter_ref_deltas[{i}]", v[f"loop_filter_ref_deltas[{i}]"], \
                h.lf_ref_deltas[i]
    for i in range(7):
        if f"segmentation_tree_probs[{i}].prob" in v:
            yield (f"segmentation_tree_probs[{i}]", v[f"segmentation_tree_probs[{i}].prob"],
                   h.seg_tree_probs[i])
    for i in range(8):
        for j in range(4):
            if f"feature_enabled[{i}][{j}]" in v:
                yield (f"feature_enabled[{i}][{j}]", v[f"feature_enabled[{i}][{j}]"],
                       h.seg_feature_enabled[i][j])
            if f"feature_value[{i}][{j}]" in v:
                sign = -1 if v.get(f"feature_sign[{i}][{j}]", 0) else 1
                yield (f"feature_value[{i}][{j}]", sign * v[f"feature_value[{i}][{j}]"],
                       h.seg_feature_data[i][j])
    if "header_size_in_bytes" in t.end:   # the uncompressed header ends byte-aligned after it
        yield ("uncompressed header bytes", (t.end["header_size_in_bytes"] + 7) // 8,
               h.uncompressed_header_size)


# --- headers against ffmpeg, ffprobe and the spec --------------------------------------


@pytest.mark.parametrize("name", VP9_CLIPS)
def test_headers_match_ffmpeg_trace(name: str) -> None:
    """Superframes split into the frames FFmpeg's superframe index reader
    lists, and every uncompressed-header element FFmpeg traces has our value."""
    reqs = requests(name)
    traced, indexes = trace(name)
    assert len(reqs) == len(traced), "frames after splitting superframes"
    _info, packets = open_stream(corpus.path(name))
    ours = [[len(f) for f in split_superframe(p.data)] for p in packets]
    assert [s for s in ours if len(s) > 1] == indexes
    compared = [(r.number, key, want, got) for r, t in zip(reqs, traced, strict=True)
                for key, want, got in traced_fields(t, r.header)]
    wrong = [f"frame {n}: {key} ffmpeg {want}, ours {got}" for n, key, want, got in compared
             if want != got]
    assert not wrong, "\n".join(wrong)
    # not vacuous: every frame had its sizes and quantizer compared
    for r in reqs:
        keys = {key for n, key, _, _ in compared if n == r.number}
        assert {"header_size_in_bytes", "uncompressed header bytes", "base_q_idx",
                "frame_type", "show_frame"} <= keys, f"frame {r.number}: {sorted(keys)}"


@pytest.mark.parametrize("name", VP9_CLIPS)
def test_shown_frames_match_ffprobe(name: str) -> None:
    """The frames with show_frame (or show_existing_frame) are ffprobe's frames:
    same count, size and key_frame, pict_type I exactly on key frames."""
    shown = [r.header for r in requests(name) if r.header.show_frame]
    probed = probe_frames(corpus.path(name))
    assert [(h.width, h.height, int(h.key_frame)) for h in shown] == \
        [(f["width"], f["height"], f["key_frame"]) for f in probed]
    assert [f["pict_type"] == "I" for f in probed] == [h.key_frame for h in shown]


@pytest.mark.parametrize("name", VP9_CLIPS)
def test_spec_invariants(name: str) -> None:
    """Key frames refresh all 8 slots; the two headers fit in the frame and
    leave tile data behind them; an inter frame's references are filled slots
    (the first frame is a key frame); the superframes' frames add up to the packets."""
    reqs = requests(name)
    assert reqs[0].header.key_frame
    for r in reqs:
        h = r.header
        if h.key_frame:
            assert h.refresh_frame_flags == 0xFF
            if h.profile < 3:  # the sync code follows 8 bits (9 in profile 3)
                assert r.data[1:4] == bytes.fromhex("498342")
        if not h.show_existing_frame:
            assert h.compressed_header_size > 0
            assert h.uncompressed_header_size + h.compressed_header_size < len(r.data)
        if not h.frame_is_intra:
            assert all(r.slots_before[i] is not None for i in h.ref_frame_idx)
    _info, packets = open_stream(corpus.path(name))
    unindexed = 0
    for p in packets:
        frames = split_superframe(p.data)
        index = 2 + ((p.data[-1] >> 3 & 3) + 1) * len(frames) if len(frames) > 1 else 0
        unindexed += len(p.data) - index
    assert sum(len(r.data) for r in reqs) == unindexed


def test_sync_code_position() -> None:
    """The sync code 0x49 0x83 0x42 follows the 8 bits of frame marker,
    profile, show_existing_frame, frame_type, show_frame and error_resilient_mode
    of a profile 0-2 key frame, and a corrupted one is refused."""
    key = requests("vp9-128x96")[0].data
    assert key[1:4] == bytes.fromhex("498342")
    with pytest.raises(Vp9HeaderError, match="frame_sync_code"):
        Vp9Parser().parse(key[:1] + b"\x00" + key[2:])


# --- the control: fixed point, mutations, layout ----------------------------------


@pytest.mark.parametrize("name", VP9_CLIPS)
def test_fill_is_a_fixed_point(name: str) -> None:
    """The control filled from a frame has no contradiction with that frame
    or with the slots, for every frame of every clip."""
    parser, slots = Vp9Parser(), Vp9RefSlots()
    for r in requests(name):
        assert r.control is not None
        assert check(r.control, r.data, slots, parser) == [], f"frame {r.number}"
        assert c.Vp9Frame.unpack(r.control.pack()) == r.control
        parser.advance(parser.parse(r.data))
        slots.update(r.header.refresh_frame_flags, r.timestamp)


def _state_before(name: str, number: int) -> tuple[Vp9Parser, Vp9RefSlots]:
    parser, slots = Vp9Parser(), Vp9RefSlots()
    for r in requests(name)[:number]:
        parser.advance(parser.parse(r.data))
        slots.update(r.header.refresh_frame_flags, r.timestamp)
    return parser, slots


def test_mutated_controls_are_named() -> None:
    """Each mutation of a correct control is one contradiction naming the
    field and both values."""
    reqs = requests(ALTREF)
    # the first shown frame after the hidden alt-ref: its ALTREF is the hidden frame
    hidden = next(r for r in reqs if not r.header.show_frame)
    after = reqs[hidden.number + 1]
    assert after.header.show_frame
    assert after.control is not None
    parser, slots = _state_before(ALTREF, after.number)
    slot = after.header.ref_frame_idx[2]
    assert slots.ts[slot] == hidden.timestamp == after.control.alt_frame_ts

    def problems(mutate: str, value: int) -> list[str]:
        assert after.control is not None
        ctrl = c.Vp9Frame.unpack(after.control.pack())
        obj: object = ctrl
        *path, last = mutate.split(".")
        for part in path:
            obj = getattr(obj, part)
        setattr(obj, last, value)
        return check(ctrl, after.data, slots, parser)

    ctl = after.control
    h = after.header
    assert problems("frame_width_minus_1", ctl.frame_width_minus_1 + 16) == \
        [f"width: control {h.width + 16}, frame {h.width}"]
    assert problems("quant.base_q_idx", (h.base_q_idx + 7) % 256) == \
        [f"quant.base_q_idx: control {(h.base_q_idx + 7) % 256}, frame {h.base_q_idx}"]
    assert problems("compressed_header_size", h.compressed_header_size + 1) == \
        [f"compressed_header_size: control {h.compressed_header_size + 1}, "
         f"frame {h.compressed_header_size}"]
    [key] = problems("flags", ctl.flags | c.V4L2_VP9_FRAME_FLAG_KEY_FRAME)
    assert key.startswith("flag KEY_FRAME: control set, frame clear")
    missing = 999 * TS
    assert missing not in slots
    assert problems("alt_frame_ts", missing) == \
        [f"ALTREF reference: control names timestamp {missing}, slot {slot} holds the frame "
         f"of timestamp {hidden.timestamp}"]
    # the shown frame of the superframe names the slot's previous occupant: stale reference
    old = next(ts for ts in (r.timestamp for r in reqs[:hidden.number]) if ts != slots.ts[slot])
    assert problems("alt_frame_ts", old) == \
        [f"ALTREF reference: control names timestamp {old}, slot {slot} holds the frame "
         f"of timestamp {hidden.timestamp}"]


def test_check_uses_the_stream_state() -> None:
    """An inter frame cannot be read without the stream (its colour config and
    maybe its size come from earlier frames): a fresh parser refuses it with a
    reason, the stream's parser reads it."""
    reqs = requests("vp9-320x240")
    inter = next(r for r in reqs if r.header.size_from_ref >= 0)
    assert inter.control is not None
    assert check(inter.control, inter.data, Vp9RefSlots()) == \
        ["frame header: inter frame before any key frame"]
    parser, slots = _state_before("vp9-320x240", inter.number)
    assert check(inter.control, inter.data, slots, parser) == []


def test_control_layout() -> None:
    """168 bytes as the uAPI's struct (the u64 timestamps at offset 128)."""
    r = requests(ALTREF)[1]
    assert r.control is not None
    raw = r.control.pack()
    assert len(raw) == c.FRAME_SIZE == 168
    assert struct.unpack_from("<QQQ", raw, 128) == r.control.ref_ts
    assert struct.unpack_from("<I", raw, 112) == (r.control.flags,)
    assert c.V4L2_CID_STATELESS_VP9_FRAME == 0xA40A2C


def test_superframe_index_errors() -> None:
    """An index claiming more bytes than precede it is refused; bytes that
    merely look like a marker at the end without a matching first byte are one frame."""
    with pytest.raises(Vp9HeaderError, match="superframe index"):
        split_superframe(b"\x00" * 4 + bytes([0xC1, 0x10, 0x10, 0xC1]))
    assert split_superframe(b"\x82\x00\xc1") == [b"\x82\x00\xc1"]


# --- decode order through PyAV ----------------------------------------------------------


def _decode_frames(frames: list[bytes]) -> tuple[list[int], list[tuple[int, bytes]], int]:
    """PyAV (as daedalusd opens it): frames out per packet in, (pts, NV12) of
    each output, and how many frames a final drain adds."""
    ctx = create_decoder(Codec.VP9)
    per_packet, out = [], []
    for n, data in enumerate(frames):
        packet = av.Packet(data)
        packet.pts = n
        got = list(ctx.decode(packet))
        per_packet.append(len(got))
        out += [(int(f.pts or 0), pack(f).tobytes()) for f in got]
    drained = list(ctx.decode(None))
    return per_packet, out, len(drained)


@pytest.mark.parametrize("name", [ALTREF, "vp9-320x240"])
def test_pyav_outputs_each_shown_frame_immediately(name: str) -> None:
    """One frame per packet: a hidden frame yields nothing, a shown frame
    yields exactly its own picture (pts = its packet) before the next packet;
    the drain adds nothing; the pictures are ffmpeg's, byte for byte."""
    reqs = requests(name)
    per_packet, out, drained = _decode_frames([r.data for r in reqs])
    assert per_packet == [r.header.show_frame for r in reqs]
    assert [pts for pts, _ in out] == [r.number for r in reqs if r.header.show_frame]
    assert drained == 0
    assert b"".join(p for _, p in out) == reference_output(corpus.path(name), "nv12")
    if name == ALTREF:
        assert per_packet.count(0) == 1   # the clip has one hidden alt-ref


def _ivf(frames: list[bytes], width: int, height: int) -> bytes:
    head = struct.pack("<4sHH4sHHIII4x", b"DKIF", 0, 32, b"VP90", width, height, 30, 1,
                       len(frames))
    return head + b"".join(struct.pack("<IQ", len(f), i) + f for i, f in enumerate(frames))


def _ffmpeg_nv12(ivf: bytes, tmp_path: Path) -> list[bytes]:
    path = tmp_path / "clip.ivf"
    path.write_bytes(ivf)
    raw = reference_output(path, "nv12")
    size = 320 * 240 * 3 // 2
    assert len(raw) % size == 0
    return [raw[i:i + size] for i in range(0, len(raw), size)]


def test_pyav_show_existing_frame(tmp_path: Path) -> None:
    """A show_existing_frame packet (synthesised: the alt-ref clip has none)
    yields one picture at once, with its own pts: the slot's picture again,
    byte-equal to what Debian's ffmpeg shows for the same stream. Fed right
    after the hidden alt-ref, it returns the hidden frame's picture, and the
    frames after it decode exactly as without it (the decoder state is
    unchanged): how a hidden frame's request gets its picture."""
    reqs = requests(ALTREF)
    hidden = next(r for r in reqs if not r.header.show_frame)
    slot = next(i for i in range(8) if hidden.header.refresh_frame_flags >> i & 1)
    se = show_existing_frame(hidden.header.profile, slot)
    parsed = Vp9Parser(Vp9Parser().state).parse(se)
    assert parsed.show_existing_frame and parsed.frame_to_show_map_idx == slot
    frames = [r.data for r in reqs]
    frames.insert(hidden.number + 1, se)
    per_packet, out, drained = _decode_frames(frames)
    expected = [r.header.show_frame for r in reqs]
    expected.insert(hidden.number + 1, 1)
    assert per_packet == expected
    assert drained == 0
    assert [pts for pts, _ in out] == [n for n, k in enumerate(expected) if k]
    # the independent decode of the same frames (IVF packets = frames, the hidden one alone)
    want = _ffmpeg_nv12(_ivf(frames, 320, 240), tmp_path)
    assert [p for _, p in out] == want
    # without the inserted frame, the other pictures are the clip's own reference
    plain = reference_output(corpus.path(ALTREF), "nv12")
    others = [p for pts, p in out if pts != hidden.number + 1]
    assert b"".join(others) == plain
    # the hidden frame's picture is not one of the shown ones before it
    shown_before = [p for pts, p in out if pts <= hidden.number]
    assert out[hidden.number][1] not in shown_before


def test_gstreamer_key_frame_refs_name_slot_zero() -> None:
    """GStreamer fills the reference timestamps of a key frame from
    ref_frame_idx = {0, 0, 0} (its zeroed header) when slot 0 holds a frame;
    check() does not look at a key frame's references."""
    reqs = requests("vp9-resize-176x144-352x288")
    later_keys = [r for r in reqs[1:] if r.header.frame_type == KEY_FRAME]
    for r in later_keys:
        assert r.control is not None
        assert r.control.ref_ts == (r.slots_before[0],) * 3
        assert check(r.control, r.data, Vp9RefSlots()) == []
