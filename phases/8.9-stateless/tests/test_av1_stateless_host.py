"""AV1 through the stateless controls, on the host: fill -> rebuild -> libdav1d == Debian's ffmpeg.

For each corpus AV1 8-bit clip, ``av1_fill`` plays the client (GStreamer's
v4l2codecav1dec way of filling ``V4L2_CID_STATELESS_AV1_*`` and the
``V4L2_PIX_FMT_AV1_FRAME`` OUTPUT buffer), ``av1_rebuild`` plays the daemon:
it sees only the controls' bytes (packed and unpacked through the uAPI
layout) and the buffer, in which every byte outside the tile ranges the
entries name is overwritten, and writes the temporal unit that the daemon's
decoder (``create_decoder(Codec.AV1)``, libdav1d) decodes. Hidden frames are
shown through a synthesised show_existing_frame of a slot they refreshed, as
the VP9 path does; the client's own show_existing_frame re-shows the request's
picture. The pictures shown, in order, must equal Debian's ffmpeg CLI
(``-f rawvideo -pix_fmt nv12``) byte for byte.

The layout test compiles the kernel's v4l2-controls.h with the C compiler and
compares sizeof/offsetof with the ctypes mirror.
"""

from __future__ import annotations

import ctypes
import glob
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import av
import pytest

from daedalus.codec.session import create_decoder
from daedalus.m2m.reference import FFMPEG, reference_output
from daedalus.parse import corpus
from daedalus.parse.readers import read_all
from daedalus.proto import Codec
from daedalus.stateless import av1_ctrls as C
from daedalus.stateless.av1_bits import BitReader, BitWriter
from daedalus.stateless.av1_fill import Request, ShowExisting, fill_stream
from daedalus.stateless.av1_rebuild import Av1Rebuilder

needs_ffmpeg = pytest.mark.skipif(not Path(FFMPEG).is_file(), reason="needs Debian's ffmpeg")

CLIPS = ["av1-320x240", "av1-128x96", "av1-174x98"]


@dataclass
class Run:
    shown: list[bytes]
    requests: int = 0
    hidden: int = 0
    show_existing: int = 0
    tiles: int = 0
    film_grain: int = 0


def _nv12(frame: av.VideoFrame) -> bytes:
    return bytes(frame.reformat(format="nv12").to_ndarray().tobytes())


def _through_uapi(req: Request) -> Request:
    """What the daemon sees: the controls as uAPI bytes, the buffer with only tile bytes kept."""
    keep = bytearray(b"\xa5" * len(req.buffer))
    for e in req.entries:
        keep[e.tile_offset:e.tile_offset + e.tile_size] = \
            req.buffer[e.tile_offset:e.tile_offset + e.tile_size]
    fg = None if req.film_grain is None else C.unpack(C.Av1FilmGrain, C.pack(req.film_grain))
    return Request(req.timestamp, C.unpack(C.Av1Sequence, C.pack(req.sequence)),
                   C.unpack(C.Av1Frame, C.pack(req.frame)), fg,
                   C.unpack_entries(C.pack_entries(req.entries)), bytes(keep))


def run_stateless(path: Path, tamper: dict[int, int] | None = None) -> Run:
    """Decode *path* through fill -> uAPI bytes -> rebuild -> libdav1d; *tamper*
    maps a request number to a luma loop-filter level to force on it."""
    _, packets = read_all(path)
    dec = create_decoder(Codec.AV1)
    rebuilder = Av1Rebuilder()
    pictures: dict[int, bytes] = {}
    run = Run(shown=[])

    def decode(tu: bytes) -> list[bytes]:
        return [_nv12(f) for f in dec.decode(av.Packet(tu))]

    for ev in fill_stream(p.data for p in packets):
        if isinstance(ev, ShowExisting):
            run.show_existing += 1
            run.shown.append(pictures[ev.timestamp])
            if ev.key_frame:
                rebuilder.show_existing_key(ev.slot)
            continue
        req = _through_uapi(ev)
        if tamper and run.requests in tamper:
            req.frame.loop_filter.level[0] = tamper[run.requests]
        run.requests += 1
        run.tiles = max(run.tiles, len(req.entries))
        grain = req.film_grain
        if grain is not None and grain.flags & C.V4L2_AV1_FILM_GRAIN_FLAG_APPLY_GRAIN:
            run.film_grain += 1
        assert rebuilder.reference_problems(req.frame) == []
        out = decode(rebuilder.temporal_unit(req.sequence, req.frame, req.film_grain,
                                             req.entries, req.buffer, req.timestamp))
        shown = bool(req.frame.flags & C.V4L2_AV1_FRAME_FLAG_SHOW_FRAME)
        if not shown:
            run.hidden += 1
            assert out == [], "a hidden frame gave a picture"
            slot = next(i for i in range(8) if req.frame.refresh_frame_flags >> i & 1)
            out = decode(rebuilder.show_existing(slot))
        assert len(out) == 1, f"request {req.timestamp}: {len(out)} pictures"
        pictures[req.timestamp] = out[0]
        if shown:
            run.shown.append(out[0])
    return run


@needs_ffmpeg
@pytest.mark.parametrize("name", CLIPS)
def test_stateless_av1_matches_ffmpeg(name: str) -> None:
    path = corpus.path(name)
    want = reference_output(path)
    run = run_stateless(path)
    assert run.shown, "no picture"
    frame_bytes = len(run.shown[0])
    assert len(want) == frame_bytes * len(run.shown), \
        f"{len(run.shown)} pictures, ffmpeg gave {len(want) / frame_bytes}"
    for i, pic in enumerate(run.shown):
        assert pic == want[i * frame_bytes:(i + 1) * frame_bytes], f"picture {i} differs"
    # the clips exercise hidden (alt-ref) frames and the client's show_existing_frame
    assert run.hidden > 0 and run.show_existing > 0


@needs_ffmpeg
def test_a_contradicting_control_changes_the_pictures() -> None:
    """The comparison sees the controls: a wrong loop-filter level on the key frame (a
    post-filter, so the tile data still decodes) breaks equality."""
    path = corpus.path("av1-128x96")
    want = reference_output(path)
    good = run_stateless(path)
    bad = run_stateless(path, tamper={0: 63})
    assert b"".join(good.shown) == want
    assert b"".join(bad.shown) != want
    assert bad.shown[0] != want[:len(bad.shown[0])]


def _libaom() -> bool:
    if not Path(FFMPEG).is_file():
        return False
    out = subprocess.run([FFMPEG, "-hide_banner", "-encoders"], capture_output=True,
                         text=True, check=False).stdout
    return "libaom-av1" in out


@pytest.mark.skipif(not _libaom(), reason="needs Debian's ffmpeg with libaom-av1")
@pytest.mark.parametrize("extra,tiles,grain", [
    (["-tiles", "2x2"], 4, False),
    (["-tile-columns", "1", "-denoise-noise-level", "10"], 2, True),
])
def test_generated_tiles_and_film_grain(tmp_path: Path, extra: list[str], tiles: int,
                                        grain: bool) -> None:
    """Features the corpus lacks: several tiles per frame, film grain (8 tiny frames)."""
    clip = tmp_path / "clip.ivf"
    subprocess.run([FFMPEG, "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=256x144:rate=30", "-frames:v", "8", "-pix_fmt", "yuv420p",
                    "-c:v", "libaom-av1", "-usage", "good", "-cpu-used", "8", "-b:v", "300k",
                    "-threads", "1", "-row-mt", "0", *extra, str(clip)], check=True,
                   timeout=120)
    run = run_stateless(clip)
    assert run.tiles == tiles
    assert (run.film_grain > 0) == grain
    assert b"".join(run.shown) == reference_output(clip)


def test_reference_timestamp_mismatch_is_reported() -> None:
    path = corpus.path("av1-128x96")
    _, packets = read_all(path)
    rebuilder = Av1Rebuilder()
    for ev in fill_stream(p.data for p in packets):
        if isinstance(ev, ShowExisting):
            continue
        if ev.frame.frame_type == C.V4L2_AV1_INTER_FRAME:
            slot = ev.frame.ref_frame_idx[0]
            ev.frame.reference_frame_ts[slot] += 1
            problems = rebuilder.reference_problems(ev.frame)
            assert problems and f"slot {slot}" in problems[0]
            return
        rebuilder.temporal_unit(ev.sequence, ev.frame, ev.film_grain, ev.entries, ev.buffer,
                                ev.timestamp)
    pytest.fail("no inter frame")


def test_descriptors_round_trip() -> None:
    """ns / su / subexp written by BitWriter read back (AV1 spec 4.10.7, 4.10.6, 5.9.26-28)."""
    w = BitWriter()
    cases: list[tuple[str, int, int, int]] = []
    for n in (1, 2, 3, 5, 7, 16, 100):
        for v in range(n):
            w.ns(n, v)
            cases.append(("ns", n, 0, v))
    for v in range(-64, 64):
        w.su(7, v)
        cases.append(("su", 7, 0, v))
    for ref in (-4096, -5, 0, 17, 4096):
        for v in (-4096, -1000, -1, 0, 1, 63, 4095, 4096):
            w.signed_subexp_with_ref(-4096, 4097, ref, v)
            cases.append(("gm", 0, ref, v))
    w.byte_alignment()
    r = BitReader(w.tobytes())
    for kind, n, ref, v in cases:
        if kind == "ns":
            assert r.ns(n) == v
        elif kind == "su":
            assert r.su(n) == v
        else:
            assert r.signed_subexp_with_ref(-4096, 4097, ref) == v


def _uapi_header() -> str | None:
    for h in sorted(glob.glob("/usr/src/linux-headers-*/include/uapi/linux/v4l2-controls.h")):
        if "v4l2_ctrl_av1_frame" in Path(h).read_text(errors="replace"):
            return h
    return None


LAYOUT = {
    "v4l2_ctrl_av1_frame": (C.Av1Frame, ["quantization", "superres_denom", "segmentation",
                                         "loop_filter", "cdef", "skip_mode_frame",
                                         "primary_ref_frame", "loop_restoration",
                                         "global_motion", "flags", "frame_type", "order_hint",
                                         "render_width_minus_1", "current_frame_id",
                                         "buffer_removal_time", "order_hints",
                                         "reference_frame_ts", "ref_frame_idx",
                                         "refresh_frame_flags"]),
    "v4l2_ctrl_av1_sequence": (C.Av1Sequence, ["seq_profile", "max_frame_height_minus_1"]),
    "v4l2_ctrl_av1_tile_group_entry": (C.Av1TileGroupEntry, ["tile_col"]),
    "v4l2_ctrl_av1_film_grain": (C.Av1FilmGrain, ["point_y_value", "num_cb_points",
                                                   "ar_coeffs_y_plus_128", "cb_offset",
                                                   "cr_offset"]),
    "v4l2_av1_tile_info": (C.Av1TileInfo, ["mi_col_starts", "height_in_sbs_minus_1",
                                           "tile_size_bytes"]),
    "v4l2_av1_segmentation": (C.Av1Segmentation, ["feature_data"]),
    "v4l2_av1_global_motion": (C.Av1GlobalMotion, ["type", "params", "invalid"]),
    "v4l2_av1_loop_restoration": (C.Av1LoopRestoration, ["frame_restoration_type",
                                                         "loop_restoration_size"]),
    "v4l2_av1_loop_filter": (C.Av1LoopFilter, ["ref_deltas", "delta_lf_res"]),
    "v4l2_av1_quantization": (C.Av1Quantization, ["delta_q_res"]),
    "v4l2_av1_cdef": (C.Av1Cdef, ["uv_sec_strength"]),
}


@pytest.mark.skipif(shutil.which("cc") is None or _uapi_header() is None,
                    reason="needs a C compiler and Linux 6.5+ uAPI headers")
def test_ctrl_layout_matches_the_uapi_header(tmp_path: Path) -> None:
    header = _uapi_header()
    assert header is not None
    (tmp_path / "linux").mkdir()
    shutil.copy(header, tmp_path / "linux" / "v4l2-controls.h")
    lines = ["#include <stdio.h>", "#include <stddef.h>", "#include <linux/v4l2-controls.h>",
             "int main(void) {"]
    for struct, (_, fields) in LAYOUT.items():
        lines.append(f'printf("{struct} %zu\\n", sizeof(struct {struct}));')
        for f in fields:
            lines.append(f'printf("{struct}.{f} %zu\\n", offsetof(struct {struct}, {f}));')
    lines += ["return 0; }"]
    (tmp_path / "l.c").write_text("\n".join(lines))
    subprocess.run(["cc", "-I", str(tmp_path), "-o", str(tmp_path / "l"),
                    str(tmp_path / "l.c")], check=True, timeout=60)
    got = dict(line.split() for line in subprocess.run(
        [str(tmp_path / "l")], capture_output=True, text=True, check=True).stdout.splitlines())
    for struct, (cls, fields) in LAYOUT.items():
        assert int(got[struct]) == ctypes.sizeof(cls), struct
        for f in fields:
            assert int(got[f"{struct}.{f}"]) == getattr(cls, f).offset, f"{struct}.{f}"
    # pinned: the sizes the kernel's v4l2-ctrls-core.c checks for these controls
    assert (ctypes.sizeof(C.Av1Sequence), ctypes.sizeof(C.Av1Frame),
            ctypes.sizeof(C.Av1FilmGrain), ctypes.sizeof(C.Av1TileGroupEntry)) == \
        (12, 1784, 194, 16)
