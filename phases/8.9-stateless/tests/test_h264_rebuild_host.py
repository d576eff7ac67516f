"""H.264 parameter sets rebuilt from the V4L2 stateless controls (issue #15), on the host.

A stateless client hands SPS / PPS / scaling matrix as controls; the daemon
rebuilds NAL units from them (daedalus.stateless.h264_rebuild) for FFmpeg.
Checked here:

* the Exp-Golomb reader / writer against the spec's code tables (9.1) and in
  round trips, RBSP <-> NAL emulation prevention round trips (hypothesis);
* random controls -> NAL units -> parse gives the same controls (hypothesis);
* every H.264 clip of the corpus, and x264 streams made here with scaling
  matrices (cqm=jvt with and without 8x8dct, custom lists in 4:2:0 and 4:4:4),
  Baseline (POC type 2) and MBAFF: the parsed controls of each SPS / PPS,
  rebuilt and parsed again, are unchanged (fixed point);
* the proof: a copy of each stream with every SPS / PPS replaced by the one
  rebuilt from its controls (all other NAL units byte for byte the same)
  decodes with Debian's ffmpeg to the same frames, byte for byte, as the
  original -- with the matrix written in the PPS or in the SPS; and,
  rebuilt without frame cropping (what the node decodes), to whole-macroblock
  frames whose visible rectangle is the original frame;
* the custom matrices parse to the values x264 was given (x264 takes them in
  raster order, the V4L2 control's order);
* what the controls cannot express is refused (FMO, chroma syntax outside the
  High profiles).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daedalus.parse import corpus
from daedalus.parse.reference import have_ffprobe, probe_frames
from daedalus.stateless.h264_ctrls import (
    V4L2_H264_PPS_FLAG_SCALING_MATRIX_PRESENT,
    V4L2_H264_PPS_FLAG_TRANSFORM_8X8_MODE,
    V4L2_H264_SPS_FLAG_FRAME_MBS_ONLY,
    V4L2_H264_SPS_FLAG_MB_ADAPTIVE_FRAME_FIELD,
    V4L2_H264_SPS_FLAG_SEPARATE_COLOUR_PLANE,
    Pps,
    ScalingMatrix,
    Sps,
    check_ctrl,
    sps_has_chroma_format,
)
from daedalus.stateless.h264_rebuild import (
    parameter_set_nals,
    pps_nal,
    pps_rbsp,
    sps_nal,
)
from daedalus.stateless.h264_syntax import (
    DEFAULT_4X4_INTER,
    DEFAULT_4X4_INTRA,
    ZIGZAG_4X4,
    ZIGZAG_8X8,
    BitReader,
    BitWriter,
    H264SyntaxError,
    ParamSet,
    Unit,
    nal_to_rbsp,
    parameter_sets,
    parse_pps,
    parse_sps,
    rbsp_to_nal,
    split_annexb,
    zigzag_to_raster,
)

FFMPEG = os.environ.get("DAEDALUS_FFMPEG", "/usr/bin/ffmpeg")
needs_ffmpeg = pytest.mark.skipif(not (Path(FFMPEG).is_file() and have_ffprobe()),
                                  reason="needs Debian's ffmpeg / ffprobe (apt-get install ffmpeg)")

CORPUS = [e.name for e in corpus.entries(large=False) if e.codec == "h264"]

# --- streams made here by Debian's ffmpeg / libx264 ----------------------------------

CQM_4IY = list(range(8, 54, 3))
CQM_4IC = list(range(20, 51, 2))
CQM_4PY = list(range(40, 9, -2))
CQM_4PC = list(range(12, 28))
CQM_8I = [10 + i // 2 for i in range(64)]
CQM_8P = [60 - i // 3 for i in range(64)]


def _list(values: list[int]) -> str:
    return ",".join(map(str, values))


CUSTOM = (f"cqm4iy={_list(CQM_4IY)}:cqm4ic={_list(CQM_4IC)}:cqm4py={_list(CQM_4PY)}:"
          f"cqm4pc={_list(CQM_4PC)}:cqm8i={_list(CQM_8I)}:cqm8p={_list(CQM_8P)}:8x8dct=1")

# name -> (pix_fmt, extra encoder options)
MADE: dict[str, tuple[str, tuple[str, ...]]] = {
    "x264-cqm-jvt": ("yuv420p", ("-profile:v", "high", "-x264-params", "cqm=jvt:8x8dct=0")),
    "x264-cqm-jvt-8x8dct": ("yuv420p", ("-profile:v", "high", "-x264-params",
                                        "cqm=jvt:8x8dct=1")),
    "x264-cqm-custom": ("yuv420p", ("-x264-params", CUSTOM)),
    "x264-cqm-custom-444": ("yuv444p", ("-x264-params", CUSTOM)),
    "x264-baseline": ("yuv420p", ("-profile:v", "baseline")),
    "x264-mbaff-174x100": ("yuv420p", ("-x264-params", "interlaced=1:tff=1")),
}
SCALING = ["x264-cqm-jvt", "x264-cqm-jvt-8x8dct", "x264-cqm-custom", "x264-cqm-custom-444"]


@pytest.fixture(scope="session")
def made(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """The stream *name* of MADE, encoded on first use (10 frames of testsrc2)."""
    out = tmp_path_factory.mktemp("h264-made")

    def get(name: str) -> Path:
        path = out / f"{name}.h264"
        if not path.exists():
            pix_fmt, options = MADE[name]
            size = "174x100" if name.endswith("174x100") else "176x144"
            subprocess.run([FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
                            "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30",
                            "-frames:v", "10", "-pix_fmt", pix_fmt, "-c:v", "libx264", *options,
                            "-threads", "1", "-flags:v", "+bitexact", "-fflags", "+bitexact",
                            "-map_metadata", "-1", "-f", "h264", os.fspath(path)],
                           check=True, timeout=120)
        return path
    return get


def stream_path(name: str, made: Callable[[str], Path]) -> Path:
    return made(name) if name in MADE else corpus.path(name)


# --- rebuilding a stream ----------------------------------------------------------


def _matrix_for_sps(sets: list[ParamSet], at: int) -> ScalingMatrix | None:
    """The matrix of the first PPS after the SPS at *at* that uses it, if flagged."""
    info = sets[at].sps
    sps_id = info.sps.seq_parameter_set_id if info is not None else -1
    for later in sets[at + 1:]:
        if later.sps is not None and later.sps.sps.seq_parameter_set_id == sps_id:
            return None
        if later.pps is not None and later.pps.pps.seq_parameter_set_id == sps_id:
            pps = later.pps
            return pps.matrix if pps.pps.flags & V4L2_H264_PPS_FLAG_SCALING_MATRIX_PRESENT \
                else None
    return None


def rebuild(data: bytes, *, matrix_in: str = "pps", crop: bool = True) -> bytes:
    """*data* with every SPS / PPS NAL unit replaced by the one rebuilt from its
    controls; *matrix_in* "pps" (pps_nal's lists) or "sps" (as parameter_set_nals:
    the SPS carries them, the PPS inherits); *crop*: keep frame cropping."""
    units = split_annexb(data)
    sets = list(parameter_sets(units))
    new = list(units)
    for n, ps in enumerate(sets):
        if ps.sps is not None:
            scaling = _matrix_for_sps(sets, n) if matrix_in == "sps" else None
            nal = sps_nal(ps.sps.sps, scaling, crop=ps.sps.crop if crop else None)
        else:
            assert ps.pps is not None and ps.pps_sps is not None
            nal = pps_nal(ps.pps.pps, ps.pps_sps.sps, ps.pps.matrix,
                          matrix_in_sps=matrix_in == "sps")
        assert nal[:4] == b"\x00\x00\x00\x01"
        new[ps.index] = Unit(ps.unit.prefix, nal[4:])
    return b"".join(u.prefix + u.nal for u in new)


def decode(path: Path, scratch: Path) -> tuple[bytes, list[str]]:
    """Debian's ffmpeg: the decoded frames in their native pix_fmt (no conversion,
    no scaling at size changes, no frame dropping), and its framemd5 lines."""
    md5 = scratch / f"{path.stem}.framemd5"   # never beside *path* (the corpus)
    per_output = ["-map", "0:v:0", "-fps_mode", "passthrough", "-autoscale", "0"]
    proc = subprocess.run([FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error",
                           "-f", "h264", "-i", os.fspath(path),
                           *per_output, "-f", "rawvideo", "-",
                           *per_output, "-f", "framemd5", "-y", os.fspath(md5)],
                          capture_output=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    lines = [ln for ln in md5.read_text().splitlines() if ln and not ln.startswith("#")]
    return proc.stdout, lines


def assert_same_decode(original: Path, rebuilt: Path) -> int:
    """(*rebuilt* lives in the test's tmp_path: the framemd5 files go there too.)"""
    want, want_frames = decode(original, rebuilt.parent)
    got, got_frames = decode(rebuilt, rebuilt.parent)
    assert len(got_frames) == len(want_frames) > 0
    assert len(got) == len(want)
    assert got == want, "decoded frames differ"
    return len(want_frames)


# --- bits ---------------------------------------------------------------------


# Table 9-2 (bit strings of ue(v) codeNum 0..8) and 9-3 (codeNum k -> se(v))
UE_CODES = ["1", "010", "011", "00100", "00101", "00110", "00111", "0001000", "0001001"]
SE_OF_CODE = [0, 1, -1, 2, -2, 3, -3, 4, -4]


def test_exp_golomb_matches_the_spec_tables() -> None:
    for value, code in enumerate(UE_CODES):
        w = BitWriter()
        w.ue(value)
        assert w.bits == len(code)
        assert BitReader(w.rbsp()).ue() == value
        bits = format(int.from_bytes(w.rbsp(), "big"), f"0{len(w.rbsp()) * 8}b")
        assert bits.startswith(code + "1")  # the code, then the rbsp_stop_one_bit
    for k, value in enumerate(SE_OF_CODE):
        w = BitWriter()
        w.se(value)
        assert BitReader(w.rbsp()).ue() == k


ITEMS = st.lists(st.one_of(
    st.tuples(st.just("ue"), st.integers(0, 2**32 - 2)),
    st.tuples(st.just("se"), st.integers(-(2**31) + 1, 2**31 - 1)),
    st.integers(1, 32).flatmap(lambda n: st.tuples(st.just(f"u{n}"), st.integers(0, 2**n - 1)))),
    max_size=40)


@given(ITEMS)
@settings(max_examples=300, deadline=None)
def test_exp_golomb_round_trip(items: list[tuple[str, int]]) -> None:
    w = BitWriter()
    for kind, value in items:
        if kind == "ue":
            w.ue(value)
        elif kind == "se":
            w.se(value)
        else:
            w.u(int(kind[1:]), value)
    r = BitReader(w.rbsp())
    for kind, value in items:
        got = r.ue() if kind == "ue" else r.se() if kind == "se" else r.u(int(kind[1:]))
        assert got == value
    assert not r.more_rbsp_data()
    assert r.u(1) == 1  # the stop bit
    assert r.bits_left() < 8


@given(st.binary(max_size=200).map(lambda b: b + b"\x01"), st.integers(0, 3))
@settings(max_examples=300, deadline=None)
def test_rbsp_nal_round_trip(rbsp: bytes, cabac_zero_words: int) -> None:
    rbsp += b"\x00\x00" * cabac_zero_words
    nal = rbsp_to_nal(rbsp)
    for pattern in (b"\x00\x00\x00", b"\x00\x00\x01", b"\x00\x00\x02"):
        assert pattern not in nal
    for i in range(len(nal) - 2):  # every 0x000003 is followed by 0x00..0x03 or is last
        if nal[i:i + 3] == b"\x00\x00\x03":
            assert i + 3 == len(nal) or nal[i + 3] <= 3
    assert not nal.endswith(b"\x00")
    assert nal_to_rbsp(nal) == rbsp
    if b"\x00\x00" not in rbsp:
        assert nal == rbsp


def test_emulation_prevention_examples() -> None:
    assert rbsp_to_nal(b"\x00\x00\x01\x00\x00\x00") == b"\x00\x00\x03\x01\x00\x00\x03\x00\x03"
    assert rbsp_to_nal(b"\x00\x00\x04") == b"\x00\x00\x04"
    assert nal_to_rbsp(b"\x00\x00\x03\x03") == b"\x00\x00\x03"


def test_scans_are_the_zigzag_of_8_5_6() -> None:
    """A zig-zag scan: a permutation running along anti-diagonals, alternating direction,
    starting right (0,1) -- Tables 8-12 / 8-13 (frame scan)."""
    for scan, n in ((ZIGZAG_4X4, 4), (ZIGZAG_8X8, 8)):
        assert sorted(scan) == list(range(n * n))
        pos = [(i // n, i % n) for i in scan]
        diag = [r + c for r, c in pos]
        assert diag == sorted(diag)
        assert pos[1] == (0, 1)
        for d in range(2 * n - 1):
            rows = [r for r, c in pos if r + c == d]
            assert rows == sorted(rows, reverse=d % 2 == 0)
    # Table 7-3 in raster order, as FFmpeg's h264_ps.c default_scaling4 writes it
    assert zigzag_to_raster(DEFAULT_4X4_INTRA) == [6, 13, 20, 28, 13, 20, 28, 32,
                                                   20, 28, 32, 37, 28, 32, 37, 42]
    assert zigzag_to_raster(DEFAULT_4X4_INTER) == [10, 14, 20, 24, 14, 20, 24, 27,
                                                   20, 24, 27, 30, 24, 27, 30, 34]


# --- controls -> NAL -> controls --------------------------------------------------


@st.composite
def controls(draw: st.DrawFn) -> tuple[Sps, Pps, ScalingMatrix]:
    profile = draw(st.sampled_from([66, 77, 88, 100, 110, 122, 244, 44]))
    high = sps_has_chroma_format(profile)
    sps = Sps(profile_idc=profile, constraint_set_flags=draw(st.integers(0, 63)),
              level_idc=draw(st.integers(0, 255)), seq_parameter_set_id=draw(st.integers(0, 31)),
              chroma_format_idc=draw(st.integers(0, 3)) if high else 1,
              bit_depth_luma_minus8=draw(st.integers(0, 6)) if high else 0,
              bit_depth_chroma_minus8=draw(st.integers(0, 6)) if high else 0,
              log2_max_frame_num_minus4=draw(st.integers(0, 12)),
              pic_order_cnt_type=draw(st.integers(0, 2)),
              max_num_ref_frames=draw(st.integers(0, 16)),
              pic_width_in_mbs_minus1=draw(st.integers(0, 1000)),
              pic_height_in_map_units_minus1=draw(st.integers(0, 1000)))
    flags = draw(st.integers(0, 0x7F))
    if not (high and sps.chroma_format_idc == 3):
        flags &= ~V4L2_H264_SPS_FLAG_SEPARATE_COLOUR_PLANE
    if not high:
        flags &= ~0x02  # QPPRIME_Y_ZERO_TRANSFORM_BYPASS
    if flags & V4L2_H264_SPS_FLAG_FRAME_MBS_ONLY:
        flags &= ~V4L2_H264_SPS_FLAG_MB_ADAPTIVE_FRAME_FIELD
    if sps.pic_order_cnt_type == 0:
        sps.log2_max_pic_order_cnt_lsb_minus4 = draw(st.integers(0, 12))
    if sps.pic_order_cnt_type != 1:
        flags &= ~0x04  # DELTA_PIC_ORDER_ALWAYS_ZERO
    else:
        s32 = st.integers(-(2**31) + 1, 2**31 - 1)
        sps.offset_for_non_ref_pic = draw(s32)
        sps.offset_for_top_to_bottom_field = draw(s32)
        offsets = draw(st.lists(s32, max_size=255))
        sps.num_ref_frames_in_pic_order_cnt_cycle = len(offsets)
        sps.offset_for_ref_frame[:len(offsets)] = offsets
    sps.flags = flags
    pflags = draw(st.integers(0, 0xFF))
    if not high:
        pflags &= ~(V4L2_H264_PPS_FLAG_SCALING_MATRIX_PRESENT
                    | V4L2_H264_PPS_FLAG_TRANSFORM_8X8_MODE)
    pps = Pps(pic_parameter_set_id=draw(st.integers(0, 255)),
              seq_parameter_set_id=sps.seq_parameter_set_id,
              num_ref_idx_l0_default_active_minus1=draw(st.integers(0, 31)),
              num_ref_idx_l1_default_active_minus1=draw(st.integers(0, 31)),
              weighted_bipred_idc=draw(st.integers(0, 2)),
              pic_init_qp_minus26=draw(st.integers(-26, 25)),
              pic_init_qs_minus26=draw(st.integers(-26, 25)),
              chroma_qp_index_offset=draw(st.integers(-12, 12)),
              second_chroma_qp_index_offset=draw(st.integers(-12, 12)), flags=pflags)
    n8 = 6 if sps.chroma_format_idc == 3 else 2
    matrix = ScalingMatrix(
        [draw(st.lists(st.integers(1, 255), min_size=16, max_size=16)) for _ in range(6)],
        [draw(st.lists(st.integers(1, 255), min_size=64, max_size=64)) if i < n8 else [0] * 64
         for i in range(6)])
    return sps, pps, matrix


@given(controls())
@settings(max_examples=150, deadline=None)
def test_controls_survive_nal_and_back(ctrl: tuple[Sps, Pps, ScalingMatrix]) -> None:
    """Written with the matrix in the SPS (parameter_set_nals), parsed back: the
    same SPS, the same PPS, and -- when flagged -- the same matrix, 8x8 lists too;
    written with the matrix in the PPS (pps_nal), the same 4x4 lists and, with
    transform_8x8_mode_flag, the same 8x8 lists."""
    sps, pps, matrix = ctrl
    check_ctrl(sps)
    check_ctrl(pps)
    units = split_annexb(parameter_set_nals(sps, pps, matrix))
    assert [u.nal_type for u in units] == [7, 8]
    info = parse_sps(units[0].nal)
    assert info.sps == sps
    assert info.crop is None and not info.vui_parameters_present_flag
    got = parse_pps(units[1].nal, {sps.seq_parameter_set_id: info})
    assert got.pps == pps
    flagged = bool(pps.flags & V4L2_H264_PPS_FLAG_SCALING_MATRIX_PRESENT)
    assert info.seq_scaling_matrix_present_flag == flagged
    assert not got.pic_scaling_matrix_present_flag
    if flagged:
        assert got.matrix == matrix
    plain = parse_sps(sps_nal(sps)[4:])
    assert plain.sps == sps and not plain.seq_scaling_matrix_present_flag
    got = parse_pps(pps_nal(pps, sps, matrix)[4:], {sps.seq_parameter_set_id: plain})
    assert got.pps == pps
    assert got.pic_scaling_matrix_present_flag == flagged
    if flagged:
        assert got.matrix.scaling_list_4x4 == matrix.scaling_list_4x4
        if pps.flags & V4L2_H264_PPS_FLAG_TRANSFORM_8X8_MODE:
            assert got.matrix.scaling_list_8x8 == matrix.scaling_list_8x8


# --- the corpus and the made streams -------------------------------------------------


ALL = CORPUS + list(MADE)


def test_the_corpus_has_the_h264_profiles() -> None:
    profiles = set()
    for name in CORPUS:
        for ps in parameter_sets(split_annexb(corpus.path(name).read_bytes())):
            if ps.sps is not None:
                profiles.add(ps.sps.sps.profile_idc)
    assert profiles >= {77, 100, 110, 122, 244}  # Main, High, High 10, 4:2:2, 4:4:4 Predictive


def test_made_streams_cover_the_syntax_the_corpus_lacks(made: Callable[[str], Path]) -> None:
    """Baseline with POC type 2, MBAFF with field crop units, matrices with the 8x8
    transform off and on, and 4:4:4 with six 8x8 lists."""
    def first(name: str) -> tuple[Sps, Pps, bool]:
        sets = list(parameter_sets(split_annexb(made(name).read_bytes())))
        sps = next(ps.sps for ps in sets if ps.sps is not None)
        pps = next(ps.pps for ps in sets if ps.pps is not None)
        return sps.sps, pps.pps, pps.pic_scaling_matrix_present_flag
    sps, pps, _ = first("x264-baseline")
    assert (sps.profile_idc, sps.pic_order_cnt_type) == (66, 2)
    assert not pps.flags & 0x0001  # CAVLC
    sps, _, _ = first("x264-mbaff-174x100")
    assert sps.flags & V4L2_H264_SPS_FLAG_MB_ADAPTIVE_FRAME_FIELD
    assert not sps.flags & V4L2_H264_SPS_FLAG_FRAME_MBS_ONLY
    for name, t8x8 in (("x264-cqm-jvt", 0), ("x264-cqm-jvt-8x8dct", 1), ("x264-cqm-custom", 1),
                       ("x264-cqm-custom-444", 1)):
        sps, pps, pic_matrix = first(name)
        assert pic_matrix and bool(pps.flags & V4L2_H264_PPS_FLAG_TRANSFORM_8X8_MODE) == t8x8
    assert first("x264-cqm-custom-444")[0].chroma_format_idc == 3


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("matrix_in", ["pps", "sps"])
def test_parameter_sets_are_a_fixed_point(name: str, matrix_in: str,
                                          made: Callable[[str], Path]) -> None:
    """parse -> rebuild -> parse gives the controls again (and the crop, when kept)."""
    data = stream_path(name, made).read_bytes()
    units = split_annexb(data)
    assert b"".join(u.prefix + u.nal for u in units) == data.rstrip(b"\x00")
    before = list(parameter_sets(units))
    after = list(parameter_sets(split_annexb(rebuild(data, matrix_in=matrix_in))))
    assert len(before) == len(after) >= 2
    for old, new in zip(before, after, strict=True):
        if old.sps is not None:
            assert new.sps is not None
            assert new.sps.sps == old.sps.sps
            assert new.sps.crop == old.sps.crop
            assert new.sps.visible_rect() == old.sps.visible_rect()
            assert not new.sps.vui_parameters_present_flag
        else:
            assert old.pps is not None and new.pps is not None
            assert new.pps.pps == old.pps.pps
            if old.pps.pps.flags & V4L2_H264_PPS_FLAG_TRANSFORM_8X8_MODE or matrix_in == "sps":
                assert new.pps.matrix == old.pps.matrix
            else:  # a PPS without 8x8 transform cannot send 8x8 lists: only 4x4 ones count
                assert new.pps.matrix.scaling_list_4x4 == old.pps.matrix.scaling_list_4x4


@needs_ffmpeg
@pytest.mark.parametrize("name", ALL)
def test_rebuilt_stream_decodes_identically(name: str, made: Callable[[str], Path],
                                            tmp_path: Path) -> None:
    """Every SPS / PPS replaced by its rebuild (VUI dropped, crop kept): ffmpeg's
    decoded frames are byte-identical, as many as the original's."""
    original = stream_path(name, made)
    rebuilt = tmp_path / "rebuilt.h264"
    rebuilt.write_bytes(rebuild(original.read_bytes()))
    assert rebuilt.read_bytes() != original.read_bytes()
    frames = assert_same_decode(original, rebuilt)
    if name in CORPUS:
        assert frames == corpus.entry(name).frames


@needs_ffmpeg
@pytest.mark.parametrize("name", SCALING)
def test_scaling_matrix_moved_to_the_sps_decodes_identically(
        name: str, made: Callable[[str], Path], tmp_path: Path) -> None:
    """x264 sends its matrices in the PPS; rebuilt as parameter_set_nals writes them
    (explicit in the SPS, the PPS inheriting), the frames are still byte-identical."""
    original = made(name)
    sets = list(parameter_sets(split_annexb(original.read_bytes())))
    pps = [ps.pps for ps in sets if ps.pps is not None]
    assert pps and all(p.pic_scaling_matrix_present_flag for p in pps)
    assert all(p.pps.flags & V4L2_H264_PPS_FLAG_SCALING_MATRIX_PRESENT for p in pps)
    assert pps[0].matrix != ScalingMatrix.flat()
    rebuilt = tmp_path / "rebuilt.h264"
    rebuilt.write_bytes(rebuild(original.read_bytes(), matrix_in="sps"))
    after = list(parameter_sets(split_annexb(rebuilt.read_bytes())))
    assert all(ps.sps.seq_scaling_matrix_present_flag for ps in after if ps.sps is not None)
    assert not any(ps.pps.pic_scaling_matrix_present_flag for ps in after if ps.pps is not None)
    assert_same_decode(original, rebuilt)


def test_custom_matrices_are_the_values_x264_was_given(made: Callable[[str], Path]) -> None:
    """x264's --cqm* lists are in raster order (its cqmfile is the JM's raster
    layout); the V4L2 control is raster order too, so they must come back as given,
    4:4:4's chroma 8x8 lists being copies of the luma ones (x264 has one 8x8 intra
    and one inter list)."""
    for name, n8 in (("x264-cqm-custom", 2), ("x264-cqm-custom-444", 6)):
        sets = list(parameter_sets(split_annexb(made(name).read_bytes())))
        m = next(ps.pps.matrix for ps in sets if ps.pps is not None)
        assert m.scaling_list_4x4 == [CQM_4IY, CQM_4IC, CQM_4IC, CQM_4PY, CQM_4PC, CQM_4PC]
        assert m.scaling_list_8x8 == [[CQM_8I, CQM_8P][i % 2] if i < n8 else [0] * 64
                                      for i in range(6)]


def _planes(frame: bytes, w: int, h: int, pix_fmt: str) -> list[np.ndarray]:
    bps = 2 if pix_fmt.endswith("10le") else 1
    cw, ch = {"yuv420p": (w // 2, h // 2), "yuv420p10le": (w // 2, h // 2)}[pix_fmt]
    out, pos = [], 0
    for pw, ph in ((w, h), (cw, ch), (cw, ch)):
        size = pw * ph * bps
        out.append(np.frombuffer(frame[pos:pos + size], dtype=np.uint8).reshape(ph, pw * bps))
        pos += size
    assert pos == len(frame)
    return out


@needs_ffmpeg
@pytest.mark.parametrize("name", ["h264-high-174x98", "h264-high-322x242", "h264-high10-320x240",
                                  "x264-mbaff-174x100"])
def test_uncropped_rebuild_decodes_the_whole_macroblocks(
        name: str, made: Callable[[str], Path], tmp_path: Path) -> None:
    """Without cropping (the controls have none) the frames are whole macroblocks;
    their top-left visible part (x264 crops right / bottom) is the original frame."""
    original = stream_path(name, made)
    rebuilt = tmp_path / "rebuilt.h264"
    rebuilt.write_bytes(rebuild(original.read_bytes(), crop=False))
    pix_fmt = "yuv420p10le" if "high10" in name else "yuv420p"
    want, want_lines = decode(original, tmp_path)
    got, got_lines = decode(rebuilt, tmp_path)
    assert len(want_lines) == len(got_lines)
    w, h = (int(probe_frames(original)[0][k]) for k in ("width", "height"))
    cw, chh = (int(probe_frames(rebuilt)[0][k]) for k in ("width", "height"))
    rows = 32 if "mbaff" in name else 16  # field MB pairs: map units of 2 macroblocks
    assert (cw % 16, chh % rows, cw - w, chh - h) == (0, 0, -w % 16, -h % rows)
    fsize = len(want) // len(want_lines)
    csize = len(got) // len(got_lines)
    for i in range(len(want_lines)):
        ref = _planes(want[i * fsize:(i + 1) * fsize], w, h, pix_fmt)
        full = _planes(got[i * csize:(i + 1) * csize], cw, chh, pix_fmt)
        for r, f in zip(ref, full, strict=True):
            assert np.array_equal(f[:r.shape[0], :r.shape[1]], r), f"frame {i}"


# --- what the controls cannot say -------------------------------------------------


def test_fmo_and_non_high_chroma_syntax_are_refused() -> None:
    sps = Sps(profile_idc=66, level_idc=30, chroma_format_idc=1, pic_width_in_mbs_minus1=10,
              pic_height_in_map_units_minus1=8, flags=V4L2_H264_SPS_FLAG_FRAME_MBS_ONLY)
    with pytest.raises(ValueError, match="FMO"):
        pps_rbsp(Pps(num_slice_groups_minus1=1), sps)
    with pytest.raises(ValueError, match="profile_idc 66"):
        sps_nal(dataclasses.replace(sps, chroma_format_idc=2))
    with pytest.raises(ValueError, match="profile_idc 77"):
        sps_nal(dataclasses.replace(sps, profile_idc=77), ScalingMatrix.flat())
    with pytest.raises(ValueError, match="without a scaling matrix"):
        pps_rbsp(Pps(flags=V4L2_H264_PPS_FLAG_SCALING_MATRIX_PRESENT),
                 dataclasses.replace(sps, profile_idc=100))
    with pytest.raises(ValueError, match="does not fit __u8"):
        check_ctrl(Pps(pic_parameter_set_id=256))


def test_parse_errors_are_syntax_errors() -> None:
    with pytest.raises(H264SyntaxError):
        parse_sps(b"\x67\x64")  # profile_idc, then nothing
    with pytest.raises(H264SyntaxError, match="names SPS 0"):
        parse_pps(b"\x68\xce\x38\x80", {})
    with pytest.raises(H264SyntaxError, match="start code"):
        split_annexb(b"\x67\x64\x00\x1e")
