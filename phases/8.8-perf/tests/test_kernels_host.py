"""Phase 8.8 on the host: the per-frame kernels' dispatch table and the fast ``place``.

The fast implementation (daedalus.perf.kernels' ``direct``) must write the
very bytes phase 8.5's reference writes (pack tightly, then lay out): on
random pictures (hypothesis: sizes odd and even, 8-bit and 10-bit 4:2:0,
8-bit 4:2:2 and 4:4:4 (NV16, NV24), strides and heights larger than the
picture, a buffer zero already or full of garbage) and on every frame of
every corpus clip, decoded by the daemon's decoder and laid out in the
CAPTURE format the node sets (the 4:2:2 and 4:4:4 clips as NV16 and NV24,
the layouts phase 8.8's daemon delivers). The reference
itself is checked against Debian's ffmpeg by phase 8.5's tests. Then the
table: entry points found, the fastest chosen, DAEDALUS_DISPATCH obeyed,
nonsense in it refused with a message naming what there is.
"""

from __future__ import annotations

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daedalus.codec.session import create_decoder
from daedalus.m2m import kernels, layout
from daedalus.m2m.layout import Geometry, buffer_size
from daedalus.m2m.v4l2 import packets_of
from daedalus.parse import corpus
from daedalus.perf.bench import capture_format
from daedalus.perf.kernels import place_direct
from daedalus.proto import PixFmt
from daedalus.proto.codecs import BY_NAME


def random_frame(data: st.DataObject, fmt: str, width: int, height: int) -> av.VideoFrame:
    frame = av.VideoFrame(width, height, fmt)
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    for plane in frame.planes:
        view = np.frombuffer(memoryview(plane), np.uint8)
        view[:] = rng.integers(0, 256, view.size, dtype=np.uint8)
    return frame


def both(frame: av.VideoFrame, pixfmt: PixFmt, bytesperline: int, height: int,
         garbage: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The reference's and direct's layouts of *frame* into buffers that are
    zero (*garbage* None) or filled with *garbage*."""
    size = buffer_size(bytesperline, height, pixfmt)
    outs = []
    for place in (kernels.place_reference, place_direct):
        out = np.full(size, 0 if garbage is None else garbage, np.uint8)
        result = place(frame, pixfmt, bytesperline, height, out, garbage is None)
        assert result is None
        outs.append(out)
    return outs[0], outs[1]


# FFmpeg's planar layouts and the CAPTURE layout each is placed in
PLANAR = {"yuv420p": PixFmt.NV12, "yuvj420p": PixFmt.NV12, "yuv420p10le": PixFmt.P010,
          "yuv422p": PixFmt.NV16, "yuvj422p": PixFmt.NV16, "yuv444p": PixFmt.NV24,
          "yuvj444p": PixFmt.NV24}


@settings(max_examples=250, deadline=None)
@given(data=st.data(), fmt=st.sampled_from(sorted(PLANAR)),
       width=st.integers(1, 97), height=st.integers(1, 67),
       extra_bytes=st.integers(0, 40), extra_rows=st.integers(0, 9),
       garbage=st.one_of(st.none(), st.integers(1, 255)))
def test_direct_place_writes_the_references_bytes(data: st.DataObject, fmt: str, width: int,
                                                  height: int, extra_bytes: int,
                                                  extra_rows: int, garbage: int | None) -> None:
    frame = random_frame(data, fmt, width, height)
    pixfmt = PLANAR[fmt]
    geometry = Geometry(width, height, pixfmt)
    bytesperline = geometry.min_bytesperline + extra_bytes * geometry.sample
    rows = height + extra_rows
    vdiv = geometry.layout.vdiv  # height // vdiv chroma rows must hold the picture's
    rows += max(0, vdiv * geometry.chroma_rows - rows)
    reference, direct = both(frame, pixfmt, bytesperline, rows, garbage)
    assert np.array_equal(reference, direct)


def test_direct_leaves_what_it_does_not_handle_to_the_reference() -> None:
    frame = av.VideoFrame(64, 48, "nv12")   # semi-planar already: not direct's
    out = np.zeros(buffer_size(64, 48), np.uint8)
    assert place_direct(frame, PixFmt.NV12, 64, 48, out, True) is NotImplemented
    deep = av.VideoFrame(64, 48, "yuv420p10le")
    out = np.zeros(buffer_size(129, 48), np.uint8)  # P010 rows of an odd byte count
    assert place_direct(deep, PixFmt.P010, 129, 48, out, True) is NotImplemented
    semi = av.VideoFrame(64, 48, "nv16")
    out = np.zeros(buffer_size(64, 48, PixFmt.NV16), np.uint8)
    assert place_direct(semi, PixFmt.NV16, 64, 48, out, True) is NotImplemented
    wrong = av.VideoFrame(64, 48, "yuv444p")  # not the layout asked
    assert place_direct(wrong, PixFmt.NV16, 64, 48, out, True) is NotImplemented
    # the table then runs the reference, which writes the frame
    table = kernels.Table({"place": kernels.registered()["place"][-1]})
    table.place(frame, PixFmt.NV12, 64, 48, out := np.ones(buffer_size(64, 48), np.uint8),
                False)
    reference = np.zeros_like(out)
    kernels.place_reference(frame, PixFmt.NV12, 64, 48, reference, True)
    assert np.array_equal(out, reference)


@pytest.mark.parametrize("name", [e.name for e in corpus.entries()])
def test_direct_place_on_every_corpus_frame(name: str) -> None:
    layout.use(None)  # the layouts phase 8.8's daemon delivers: NV16 and NV24 too
    codec, _, _, stream = packets_of(corpus.path(name))
    decoder = create_decoder(BY_NAME[codec].codec, threads=1)
    frames = 0
    for _, data in [*stream, (0, None)]:
        try:
            decoded = decoder.decode(None if data is None else av.Packet(data))
        except av.FFmpegError:
            continue  # the corpus's corrupt streams: what decodes is compared
        for frame in decoded:
            pixfmt = layout.layout_for(frame)  # every corpus layout is delivered now
            bytesperline, height = capture_format(frame.width, frame.height, pixfmt)
            reference, direct = both(frame, pixfmt, bytesperline, height, 0xA5)
            assert np.array_equal(reference, direct), f"{name}: frame {frames}"
            frames += 1
    assert frames or name.startswith(("corrupt", "garbage")), f"{name}: no frame decoded"


# --- the table ----------------------------------------------------------------------------


def test_the_fast_place_is_registered_and_chosen_by_default() -> None:
    found = kernels.registered()
    assert [i.name for i in found["place"]] == ["reference", "direct"]
    assert kernels.choose(found, None).chosen["place"].name == "direct"
    assert kernels.choose(found, "").describe() == "place=direct"


@pytest.mark.parametrize("setting", ["reference", "place=reference", " place=reference , "])
def test_dispatch_reference_from_the_environment(setting: str) -> None:
    assert kernels.choose(kernels.registered(), setting).chosen["place"].name == "reference"


@pytest.mark.parametrize(("setting", "message"), [
    ("fast", r"'fast' is not KERNEL=IMPLEMENTATION with a kernel of \['place'\]"),
    ("digest=c", r"'digest=c' is not KERNEL=IMPLEMENTATION"),
    ("place=simd", r"kernel 'place' has no implementation 'simd' \(it has \['direct', "
                   r"'reference'\]\)"),
])
def test_dispatch_nonsense_is_refused(setting: str, message: str) -> None:
    with pytest.raises(kernels.DispatchError, match=message):
        kernels.choose(kernels.registered(), setting)


def test_the_handler_chooses_at_start_up_and_refuses_a_bad_setting(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from daedalus.m2m.stateful import StatefulHandler

    monkeypatch.setenv(kernels.ENV, "place=simd")
    kernels.use(None)
    try:
        with pytest.raises(kernels.DispatchError, match="no implementation 'simd'"):
            StatefulHandler()
        monkeypatch.setenv(kernels.ENV, "reference")
        kernels.use(None)
        StatefulHandler()
        assert kernels.table().describe() == "place=reference"
    finally:
        kernels.use(None)
