"""Phase 8.3 validation: our parse against ffprobe (Debian's FFmpeg 5.1, an
independent build from PyAV's bundled FFmpeg) over every corpus vector, and
the block-level data against the frame it belongs to."""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import pytest

from daedalus.parse import corpus
from daedalus.parse.ffparse import Frame, enc_params_blocks, parse_all
from daedalus.parse.readers import StreamInfo, read_all
from daedalus.parse.reference import ffprobe, have_ffprobe, probe_frames, probe_packets

ENTRIES = corpus.entries()
NAMES = [e.name for e in ENTRIES]
QP_MAX = {"vp9": 255, "av1": 255}

pytestmark = pytest.mark.skipif(not have_ffprobe(), reason="needs Debian's ffprobe "
                                "(apt-get install ffmpeg)")


@cache
def parsed(name: str) -> tuple[StreamInfo, list[Frame]]:
    return parse_all(corpus.path(name), time_limit=60)


def qp_max(codec: str, bit_depth: int) -> int:
    return QP_MAX.get(codec, 51 + 6 * (bit_depth - 8))


@pytest.mark.parametrize("name", NAMES)
def test_frames_match_ffprobe(name: str) -> None:
    _info, frames = parsed(name)
    shown = sorted((f for f in frames if f.decoded), key=lambda f: f.output or 0)
    ours = [{"key_frame": int(f.keyframe), "pict_type": f.pict_type,
             "width": f.width, "height": f.height} for f in shown]
    assert ours == probe_frames(corpus.path(name))
    assert len(shown) == corpus.entry(name).frames
    # every shown frame was output by the decoder, hidden ones never
    assert all(f.decoded == f.shown for f in frames)


@pytest.mark.parametrize("name", NAMES)
def test_headers_agree_with_decoder(name: str) -> None:
    """Two FFmpeg paths: the CBS header parse (trace_headers) and the decoder."""
    _info, frames = parsed(name)
    e = corpus.entry(name)
    for f in frames:
        assert f.bit_depth == e.bit_depth
        if not f.decoded:
            continue
        assert f.decoded_key == f.keyframe, f
        assert f.decoded_pict_type == f.pict_type, f
        if e.codec == "vp9":
            assert f.base_qp == f.qp  # VP9's exported qp is base_q_idx


@pytest.mark.parametrize("name", NAMES)
def test_packets_match_ffprobe(name: str) -> None:
    info, packets = read_all(corpus.path(name))
    e = corpus.entry(name)
    assert (info.codec, info.container) == (e.codec, e.container)
    # ffprobe's IVF packet position is that of the 12-byte frame header, like ours
    assert [(p.offset, len(p.data)) for p in packets] == probe_packets(corpus.path(name))
    assert len(packets) == e.packets


@pytest.mark.parametrize("name", NAMES)
def test_stream_profile_matches_ffprobe(name: str) -> None:
    _info, frames = parsed(name)
    stream = ffprobe(corpus.path(name), "-show_streams", "-show_entries",
                     "stream=profile,pix_fmt")["streams"][0]
    assert {f.profile for f in frames} == {stream["profile"]}
    assert stream["pix_fmt"] == corpus.entry(name).pix_fmt


def coverage(blocks: Any, width: int, height: int) -> Any:
    """How often each pixel of the frame is covered by a block (clipped to the frame)."""
    mask = np.zeros((height, width), dtype=np.int32)
    for x, y, w, h in zip(blocks["x"], blocks["y"], blocks["w"], blocks["h"], strict=True):
        mask[max(y, 0):max(min(y + h, height), 0), max(x, 0):max(min(x + w, width), 0)] += 1
    return mask


@pytest.mark.parametrize("name", NAMES)
def test_blocks_tile_the_frame(name: str) -> None:
    e = corpus.entry(name)
    _info, frames = parsed(name)
    with_blocks = [f for f in frames if f.blocks is not None and len(f.blocks)]
    if e.codec == "av1":
        assert all(f.blocks is None for f in frames)  # libdav1d exports no VIDEO_ENC_PARAMS
        pytest.skip("FFmpeg exports no AV1 block information (libdav1d)")
    decoded = [f for f in frames if f.decoded]
    if e.codec == "h264":
        assert len(with_blocks) == len(decoded)
    else:  # VP9: blocks only on frames with segmentation; the corpus enables it (aq-mode)
        assert len(with_blocks) >= len(decoded) // 2
    top = qp_max(e.codec, e.bit_depth)
    for f in with_blocks:
        assert f.blocks is not None
        assert f.blocks["w"].min() > 0 and f.blocks["h"].min() > 0
        mask = coverage(f.blocks, f.width, f.height)
        assert mask.min() == 1 and mask.max() == 1, f"frame {f.index}: not tiled exactly once"
        assert 0 <= f.blocks["qp"].min() and f.blocks["qp"].max() <= top
        if e.codec == "h264":
            assert len(f.blocks) == ((f.width + 15) // 16) * ((f.height + 15) // 16)
    for f in frames:
        assert f.qp is None or 0 <= f.qp <= top


def test_raw_side_data_matches_pyav() -> None:
    """Our raw AVVideoEncParams reader agrees with PyAV's VideoEncParams wrapper."""
    import av
    from av.sidedata.encparams import VideoEncParams
    from av.sidedata.sidedata import Type

    checked = 0
    for name in ("h264-high-320x240", "vp9-320x240"):
        with av.open(str(corpus.path(name))) as container:
            stream = container.streams.video[0]
            stream.codec_context.options = {"export_side_data": "venc_params"}
            for frame in container.decode(stream):
                side_data: Any = frame.side_data
                if Type.VIDEO_ENC_PARAMS in side_data:
                    raw = side_data[Type.VIDEO_ENC_PARAMS]
                    ours = enc_params_blocks(memoryview(raw))
                    sd = raw
                    assert isinstance(sd, VideoEncParams)
                    assert ours.qp == sd.qp and len(ours.blocks) == sd.nb_blocks
                    for i in range(0, sd.nb_blocks, max(1, sd.nb_blocks // 7)):
                        b = sd.block_params(i)
                        assert tuple(ours.blocks[i])[:4] == (b.src_x, b.src_y, b.w, b.h)
                        if name.startswith("h264"):
                            assert ours.blocks[i]["qp"] == sd.qp + b.delta_qp
                        checked += 1
    assert checked > 100


def test_resolution_change_is_seen() -> None:
    for name in ("vp9-resize-320x240-174x98", "h264-resize-320x240-128x96"):
        _info, frames = parsed(name)
        sizes = []
        for f in frames:
            if f"{f.width}x{f.height}" not in sizes:
                sizes.append(f"{f.width}x{f.height}")
        assert tuple(sizes) == corpus.entry(name).sizes
        change = next(f for f in frames if f"{f.width}x{f.height}" == sizes[1])
        assert change.keyframe


def test_hidden_frames_are_parsed() -> None:
    """Superframes / temporal units are split: hidden frames get their own record."""
    for name in ("vp9-320x240-altref", "av1-320x240"):
        _info, packets = read_all(corpus.path(name))
        _info, frames = parsed(name)
        hidden = [f for f in frames if not f.shown]
        assert hidden and len(frames) > len(packets)
        assert all(f.qp is not None and f.width > 0 for f in hidden)
        assert sum(f.size for f in frames) <= sum(len(p.data) for p in packets)
