"""Phase 8.8 on the host: 8-bit 4:2:2 and 4:4:4 frames as NV16 and NV24 (issue #14 item 4).

Phase 8.8's distribution enables the opt-in CAPTURE layouts NV16 and NV24 of
``daedalus.m2m.layout`` (its ``daedalus.layouts`` entry points); its kernel
layer offers them on the node. Checked here without a kernel:

- the layouts' sizes are V4L2's single-plane NV16 / NV24
  (pixfmt-yuv-planar.rst: CbCr rows at full height, as long as luma rows
  for NV16, twice as long for NV24), and ``lay_out`` / ``crop`` put every
  byte where a buffer laid out by hand here has it;
- without the opt-in layouts the daemon's rule is exactly phase 8.4's
  (``frames.layout_for``, message included: what phases 8.5-8.7 answer);
  with them 8-bit 4:2:2 / 4:4:4 get NV16 / NV24 and deeper 4:2:2 / 4:4:4
  is still refused, with a message that says so;
- the corpus's H.264 High 4:2:2, H.264 High 4:4:4 and VP9 profile 1 clips,
  and VP9 profile 1 4:2:2, AV1 high 4:4:4 and AV1 professional 4:2:2
  streams Debian's ffmpeg makes here, go through the stateful handler as
  the kernel drives it (FEED, then FETCH inline or into a dma-buf of the
  node's CAPTURE format): every byte of every buffer, padding included,
  equals Debian's ``ffmpeg -pix_fmt nv16 / nv24`` frame laid out by hand;
  a 10-bit 4:2:2 H.264 and a 10-bit 4:4:4 VP9 stream are refused
  (DECODE_ERROR / EOPNOTSUPP), no frame kept;
- the reference itself: Debian's ffmpeg 5.1 cannot write nv16, so
  ``reference_output(..., "nv16")`` interleaves ffmpeg's yuv422p; the same
  interleaving of ffmpeg's yuv444p and yuv420p output equals ffmpeg's own
  nv24 and nv12 output;
- the client's side: the ffmpeg pix_fmt of a decode's formats, the clips'
  CAPTURE formats, the summary line, why a deeper 4:2:2 stream is refused
  by an 8.8 node; the bench's CAPTURE geometry and its daemon path on a
  4:2:2 clip.

(The per-frame kernel ``place``, reference against direct, on NV16 / NV24:
test_kernels_host.py.)
"""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import av
import numpy as np
import pytest

from daedalus.dispatch.loopback import STALE_BYTE, MemfdDevice
from daedalus.m2m import layout
from daedalus.m2m.cli import format_summary
from daedalus.m2m.clients import capture_format, reference_frames, split, summary
from daedalus.m2m.layout import Geometry, buffer_size, crop, fits, lay_out
from daedalus.m2m.reference import (
    FFMPEG,
    ReferenceError,
    interleave_planar,
    pix_fmt_for,
    reference_output,
)
from daedalus.m2m.stateful import StatefulHandler
from daedalus.m2m.unsupported import StreamFacts, explain
from daedalus.m2m.v4l2 import CAPTURE_FORMATS, Stats, packets_of
from daedalus.parse import corpus
from daedalus.perf import bench
from daedalus.proto import (
    DECODE_FLUSH,
    FETCH_DMABUF,
    MAGIC,
    VERSION,
    FrameInfo,
    Header,
    MsgType,
    PixFmt,
    codecs,
    pack_decode_req,
    pack_fetch_req,
    parse_fetch_resp,
    parse_frame_resp,
    validate_fetch_resp,
    validate_frame_resp,
)
from daedalus.roundtrip import frames as frames_84

CLIPS = {"h264-high422-176x144": "NV16", "h264-high444-176x144": "NV24",
         "vp9-p1-444-176x144": "NV24"}
# V4L2's single-plane layouts, as pixfmt-yuv-planar.rst defines them: the CbCr
# plane's row stride in luma strides, luma rows per CbCr row, luma columns per Cb, Cr pair
V4L2 = {"NV12": (1, 2, 2), "NV16": (1, 1, 2), "NV24": (2, 1, 1)}


def align(value: int, to: int) -> int:
    return -(-value // to) * to


def by_hand(packed: bytes, width: int, height: int, fourcc: str, bytesperline: int,
            rows: int) -> bytes:
    """A tightly packed 8-bit frame laid out by hand in a CAPTURE buffer of
    *bytesperline* x *rows* in *fourcc* (``V4L2``): every byte not the
    picture's zero."""
    strides, vdiv, hdiv = V4L2[fourcc]
    stride, chroma_rows, chroma_row = (strides * bytesperline, -(-height // vdiv),
                                       2 * -(-width // hdiv))
    out = bytearray(bytesperline * rows + stride * (rows // vdiv))
    for row in range(height):
        out[row * bytesperline:row * bytesperline + width] = packed[row * width:(row + 1) * width]
    base, luma = bytesperline * rows, width * height
    for row in range(chroma_rows):
        out[base + row * stride:base + row * stride + chroma_row] = packed[
            luma + row * chroma_row:luma + (row + 1) * chroma_row]
    assert luma + chroma_rows * chroma_row == len(packed)
    return bytes(out)


# --- the layouts ---------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), [(176, 144), (66, 50), (1920, 1080), (2, 2)])
def test_nv16_and_nv24_buffers_are_v4l2s(width: int, height: int) -> None:
    """The node's CAPTURE format (rows padded to 4 bytes): sizeimage is
    bytesperline x height x 2 (NV16) and x 3 (NV24); a tightly packed frame
    is w x h plus 2 x ceil(w / 2) x h (NV16) or 2 x w x h (NV24) bytes."""
    bpl = align(width, 4)
    assert bench.capture_format(width, height, PixFmt.NV16) == (bpl, height)
    assert bench.capture_format(width, height, PixFmt.NV24) == (bpl, height)
    assert buffer_size(bpl, height, PixFmt.NV16) == bpl * height * 2
    assert buffer_size(bpl, height, PixFmt.NV24) == bpl * height * 3
    assert buffer_size(bpl, height, PixFmt.NV12) == bpl * height * 3 // 2  # as it was
    nv16, nv24 = Geometry(width, height, PixFmt.NV16), Geometry(width, height, PixFmt.NV24)
    assert nv16.packed_size == width * height + 2 * -(-width // 2) * height
    assert nv24.packed_size == 3 * width * height
    assert (nv16.chroma_rows, nv16.chroma_row, nv24.chroma_rows, nv24.chroma_row) == (
        height, 2 * -(-width // 2), height, 2 * width)
    assert nv16.min_bytesperline == max(width, 2 * -(-width // 2))
    assert nv24.min_bytesperline == width  # the CbCr rows' stride is twice that


@pytest.mark.parametrize("fourcc", ["NV16", "NV24"])
@pytest.mark.parametrize(("width", "height", "extra", "more_rows"), [
    (66, 50, 2, 0), (33, 17, 0, 0), (33, 17, 7, 3), (1, 1, 0, 1), (64, 48, 64, 16)])
def test_lay_out_and_crop_put_every_byte_where_v4l2_has_it(fourcc: str, width: int,
                                                           height: int, extra: int,
                                                           more_rows: int) -> None:
    pixfmt = CAPTURE_FORMATS[fourcc]
    geometry = Geometry(width, height, pixfmt)
    rng = np.random.default_rng(width * 1000 + height)
    packed = rng.integers(1, 256, geometry.packed_size, dtype=np.uint8).tobytes()
    luma = np.frombuffer(packed, np.uint8, width * height).reshape(height, width)
    chroma = np.frombuffer(packed, np.uint8, offset=width * height).reshape(
        geometry.chroma_rows, geometry.chroma_row)
    bpl, rows = geometry.min_bytesperline + extra, height + more_rows
    assert fits(geometry, bpl, rows) is None
    want = by_hand(packed, width, height, fourcc, bpl, rows)
    assert lay_out(luma, chroma, bpl, rows, pixfmt=pixfmt).tobytes() == want
    dirty = np.full(buffer_size(bpl, rows, pixfmt), 0xEE, np.uint8)
    assert lay_out(luma, chroma, bpl, rows, out=dirty, zeroed=False,
                   pixfmt=pixfmt).tobytes() == want
    assert crop(want, bpl, rows, geometry) == packed


def test_fits_explains_the_new_layouts() -> None:
    nv24 = Geometry(33, 17, PixFmt.NV24)
    assert fits(nv24, 32, 17) == "bytesperline 32 is shorter than the picture's rows (33 bytes)"
    assert fits(nv24, 33, 17) is None  # CbCr rows of 66 bytes in a stride of 66
    nv16 = Geometry(33, 17, PixFmt.NV16)
    assert fits(nv16, 33, 17) == "bytesperline 33 is shorter than the picture's rows (34 bytes)"
    assert fits(nv16, 34, 16) == "height 16 is less than the picture's 17 rows"
    with pytest.raises(ValueError, match="a 34 x 17 NV16 layout takes 1156"):
        crop(bytes(1000), 34, 17, nv16)


# --- which layout the daemon delivers -------------------------------------------------------

PIX_FMTS = ["yuv420p", "yuvj420p", "yuv420p10le", "yuv420p12le", "yuv422p", "yuvj422p",
            "yuv422p10le", "yuv444p", "yuvj444p", "yuv444p10le", "yuv444p12le", "yuv440p",
            "yuv411p", "gray", "gray10le", "pal8", "rgb24", "gbrp", "nv12", "nv16", "nv24",
            "p010le", "bayer_rggb8"]


def outcome(call: object) -> str:
    assert callable(call)
    try:
        return str(call())
    except frames_84.UnsupportedLayout as exc:
        return f"refused: {exc}"


@pytest.mark.parametrize("pix_fmt", PIX_FMTS)
def test_without_the_opt_in_layouts_the_rule_is_phase_84s(pix_fmt: str) -> None:
    """What phases 8.5-8.7 deliver and say, whether phase 8.8 is installed or
    not: NV12 / P010 or phase 8.4's refusal, word for word."""
    base = layout.enabled_layouts([])
    assert [lay.fourcc for lay in base] == ["NV12", "P010"]
    frame = av.VideoFrame(16, 16, pix_fmt)
    assert outcome(lambda: layout.layout_of(frame.format, base)) == outcome(
        lambda: frames_84.layout_for(frame))


def test_phase_88_enables_nv16_and_nv24() -> None:
    assert layout.registered() == [PixFmt.NV16, PixFmt.NV24]
    layout.use(None)
    assert [lay.fourcc for lay in layout.delivered()] == ["NV12", "P010", "NV16", "NV24"]
    layouts = layout.delivered()

    def of(pix_fmt: str) -> str:
        return outcome(lambda: layout.layout_of(av.VideoFormat(pix_fmt), layouts).name)

    assert [of(p) for p in ("yuv420p", "yuvj420p", "yuv420p10le", "yuv422p", "yuvj422p",
                            "nv16", "yuv444p", "yuvj444p", "nv24")] == [
        "NV12", "NV12", "P010", "NV16", "NV16", "NV16", "NV24", "NV24", "NV24"]
    assert of("yuv422p10le") == (
        "refused: the stream decodes to yuv422p10le (10-bit samples); daedalus-v4l2 delivers "
        "4:2:2 as 8-bit NV16 only, so it is refused rather than converted")
    assert of("yuv444p12le") == (
        "refused: the stream decodes to yuv444p12le (12-bit samples); daedalus-v4l2 delivers "
        "4:4:4 as 8-bit NV24 only, so it is refused rather than converted")
    assert of("yuv420p12le") == (
        "refused: the stream decodes to yuv420p12le (12-bit samples); daedalus-v4l2 delivers "
        "4:2:0 as 8-bit NV12 and 10-bit P010 only, so it is refused rather than converted")
    assert of("yuv440p") == (
        "refused: the stream decodes to yuv440p (4:4:0 chroma); daedalus-v4l2 delivers "
        "4:2:0 / 4:2:2 / 4:4:4 only (NV12 / P010 / NV16 / NV24), so it is refused rather than "
        "converted")


def test_an_entry_point_that_names_no_opt_in_layout_is_left_out(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    @dataclass
    class Entry:
        name: str
        value: str
        obj: object

        def load(self) -> object:
            return self.obj

    entries = [Entry("nv12", "x:NV12", PixFmt.NV12), Entry("junk", "x:junk", "NV16"),
               Entry("nv24", "x:NV24", PixFmt.NV24)]
    monkeypatch.setattr("daedalus.dispatch.entrypoints.entry_points",
                        lambda group: entries if group == layout.GROUP else [])
    assert layout.registered() == [PixFmt.NV24]
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "CAPTURE layout nv12", "CAPTURE layout junk"]


# --- through the handler, as the kernel drives it -----------------------------------------

_cookies = count(1)


def header(type_: int, payload: bytes) -> Header:
    return Header(magic=MAGIC, version=VERSION, type=type_, cookie=next(_cookies),
                  payload_len=len(payload), flags=0, status=0)


@dataclass
class Fetched:
    frame: FrameInfo
    buffer: bytes       # the whole CAPTURE layout, padding included
    bytesperline: int
    rows: int


def feed_all(handler: StatefulHandler, stream_id: int, path: Path
             ) -> tuple[list[FrameInfo], list[tuple[int, str]]]:
    """Every packet of *path* as a FEED, then the drain: the frames listed
    and each error answer's (errno, text)."""
    name, _, _, packets = packets_of(path)
    codec = codecs.BY_NAME[name].codec
    listed: list[FrameInfo] = []
    errors: list[tuple[int, str]] = []
    chunks = [(number, data, 0) for number, data in packets]
    for number, data, flags in [*chunks, (2**63, b"", DECODE_FLUSH)]:
        payload = pack_decode_req(codec, data, stream_id=stream_id, flags=flags,
                                  timestamp=number)
        status, answer = handler.handle(header(MsgType.FEED, payload), payload)
        assert status == 0, answer
        resp = parse_frame_resp(answer)
        validate_frame_resp(resp)  # the kernel's daedalus_resp_valid
        if resp.ok:
            listed += resp.frames
        else:
            assert not resp.frames
            errors.append((resp.error, resp.text))
    return listed, errors


def fetch(handler: StatefulHandler, stream_id: int, frame: FrameInfo, bytesperline: int,
          rows: int, device: MemfdDevice | None) -> Fetched:
    """FETCH *frame* in a geometry of *bytesperline* x *rows*: inline, or (with
    *device*) into a CAPTURE buffer 64 bytes larger than the node's sizeimage."""
    size = buffer_size(bytesperline, rows, PixFmt(frame.pixfmt))
    payload = pack_fetch_req(stream_id, flags=FETCH_DMABUF if device else 0,
                             bytesperline=bytesperline, height=rows, max_bytes=size,
                             timestamp=frame.timestamp, digest=frame.digest)
    fetch_hdr = header(MsgType.FETCH, payload)
    if device is not None:
        device.add_capture(fetch_hdr.cookie, size + 64)
    status, answer = handler.handle(fetch_hdr, payload)
    assert status == 0, answer
    resp, inline = parse_fetch_resp(answer, dmabuf=device is not None)
    validate_fetch_resp(resp)
    assert resp.frame == frame and resp.bytes == size  # what the kernel checks
    pixels = bytes(inline)
    if device is not None:
        written = device.remove(fetch_hdr.cookie).written
        assert not pixels and written is not None
        assert written[size:] == bytes([STALE_BYTE]) * 64  # past the layout: untouched
        pixels = written[:size]
    assert len(pixels) == size
    return Fetched(resp.frame, pixels, bytesperline, rows)


@pytest.fixture
def delivered_by_88() -> Iterator[None]:
    """The daemon as phase 8.8 installs it (read from the entry points again)."""
    layout.use(None)
    yield
    layout.use(None)


def decode_and_compare(path: Path, fourcc: str, sizes: list[tuple[int, int]],
                       transport: str) -> None:
    device = MemfdDevice() if transport == "dmabuf" else None
    handler = StatefulHandler()
    if device is not None:
        handler.attach_device(device)
    listed, errors = feed_all(handler, 7, path)
    assert not errors
    pixfmt = CAPTURE_FORMATS[fourcc]
    assert [(f.width, f.height, f.pixfmt) for f in listed] == [(w, h, pixfmt) for w, h in sizes]
    assert [f.digest for f in listed] == list(range(1, len(sizes) + 1))
    want = split(reference_output(path, pix_fmt_for([fourcc])), sizes, fourcc)
    for index, (frame, packed) in enumerate(zip(listed, want, strict=True)):
        # the node's CAPTURE format, then a wider and taller one
        bpl, rows = bench.capture_format(frame.width, frame.height, pixfmt)
        geometry = (bpl + 64, rows + 6) if index % 2 else (bpl, rows)
        got = fetch(handler, 7, frame, *geometry, device)
        assert got.buffer == by_hand(packed, frame.width, frame.height, fourcc,
                                     *geometry), f"frame {index}"
        assert crop(got.buffer, *geometry, Geometry(frame.width, frame.height,
                                                    pixfmt)) == packed
    handler.close()
    if device is not None:
        assert not device.leaks()


@pytest.mark.usefixtures("delivered_by_88")
@pytest.mark.parametrize("transport", ["inline", "dmabuf"])
@pytest.mark.parametrize("name", sorted(CLIPS))
def test_corpus_422_and_444_clips_are_byte_exact_through_the_handler(name: str,
                                                                     transport: str) -> None:
    entry = corpus.entry(name)
    assert (entry.bit_depth, entry.pix_fmt) == (8, {"NV16": "yuv422p",
                                                    "NV24": "yuv444p"}[CLIPS[name]])
    decode_and_compare(corpus.path(name), CLIPS[name], [(entry.width, entry.height)] *
                       entry.frames, transport)


# streams the corpus lacks (VP9 4:2:2, AV1 high and professional), and deeper 4:2:2 /
# 4:4:4, made here by Debian's ffmpeg at 66x50 (rows padded to 68 bytes on the node)
MADE = {
    "vp9-p1-422": ("yuv422p", "libvpx-vp9", "ivf", ["-deadline", "realtime", "-cpu-used", "8"]),
    "av1-high-444": ("yuv444p", "libaom-av1", "ivf", ["-usage", "realtime", "-cpu-used", "8"]),
    "av1-professional-422": ("yuv422p", "libaom-av1", "ivf",
                             ["-usage", "realtime", "-cpu-used", "8"]),
    "h264-high422-10bit": ("yuv422p10le", "libx264", "h264", ["-preset", "ultrafast"]),
    "vp9-p3-444-10bit": ("yuv444p10le", "libvpx-vp9", "ivf",
                         ["-deadline", "realtime", "-cpu-used", "8"]),
}
MADE_SIZE, MADE_FRAMES = (66, 50), 4


def make(name: str, tmp_path: Path) -> Path:
    pix_fmt, encoder, muxer, options = MADE[name]
    out = tmp_path / f"{name}.{muxer}"
    width, height = MADE_SIZE
    subprocess.run([FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f",
                    "lavfi", "-i", f"testsrc2=size={width}x{height}:rate=30", "-frames:v",
                    str(MADE_FRAMES), "-pix_fmt", pix_fmt, "-c:v", encoder, *options,
                    "-f", muxer, str(out)], check=True, timeout=300)
    return out


@pytest.mark.usefixtures("delivered_by_88")
@pytest.mark.parametrize("transport", ["inline", "dmabuf"])
@pytest.mark.parametrize(("name", "fourcc"), [("vp9-p1-422", "NV16"), ("av1-high-444", "NV24"),
                                              ("av1-professional-422", "NV16")])
def test_vp9_and_av1_422_and_444_are_byte_exact_through_the_handler(
        name: str, fourcc: str, transport: str, tmp_path: Path) -> None:
    decode_and_compare(make(name, tmp_path), fourcc, [MADE_SIZE] * MADE_FRAMES, transport)


@pytest.mark.usefixtures("delivered_by_88")
@pytest.mark.parametrize(("name", "pix_fmt", "chroma", "fourcc"), [
    ("h264-high422-10bit", "yuv422p10le", "4:2:2", "NV16"),
    ("vp9-p3-444-10bit", "yuv444p10le", "4:4:4", "NV24")])
def test_deeper_422_and_444_are_refused_not_converted(name: str, pix_fmt: str, chroma: str,
                                                      fourcc: str, tmp_path: Path) -> None:
    """V4L2 has no single-plane 10-bit 4:2:2 / 4:4:4 format on these kernels:
    every FEED that completes a frame is DECODE_ERROR / EOPNOTSUPP, no frame
    listed or kept."""
    handler = StatefulHandler()
    listed, errors = feed_all(handler, 9, make(name, tmp_path))
    assert not listed and errors
    assert set(errors) == {(errno.EOPNOTSUPP, (
        f"the stream decodes to {pix_fmt} (10-bit samples); daedalus-v4l2 delivers {chroma} "
        f"as 8-bit {fourcc} only, so it is refused rather than converted"))}
    stream = handler.stream(9)
    assert stream is not None and not stream.kept


def test_the_bench_daemon_path_lays_out_a_422_clip() -> None:
    """The bench's daemon path (frame_entry, then place into the node's CAPTURE
    format): every buffer equals ffmpeg's frame laid out by hand."""
    name = "h264-high422-176x144"
    entry = corpus.entry(name)
    seen: list[tuple[FrameInfo, bytes, int, int]] = []
    layout.use(None)
    bench.daemon_run(bench.load_clip(name), 1, lambda info, buf, bpl, rows: seen.append(
        (info, buf.tobytes(), bpl, rows)))
    want = reference_frames(name)
    assert len(seen) == len(want) == entry.frames
    for (info, buffer, bpl, rows), packed in zip(seen, want, strict=True):
        assert (info.pixfmt, bpl, rows) == (PixFmt.NV16, 176, 144)
        assert buffer == by_hand(packed, 176, 144, "NV16", bpl, rows)


# --- the reference -------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "planar", "semi", "hdiv", "vdiv"), [
    ("h264-high444-176x144", "yuv444p", "nv24", 1, 1),
    ("vp9-p1-444-176x144", "yuv444p", "nv24", 1, 1),
    ("h264-high-174x98", "yuv420p", "nv12", 2, 2),   # odd chroma sizes: ceil(87 / ...)
    ("vp9-resize-320x240-174x98", "yuv420p", "nv12", 2, 2),
])
def test_the_references_interleaving_is_ffmpegs(name: str, planar: str, semi: str, hdiv: int,
                                                vdiv: int) -> None:
    """What the reference does for nv16 (which Debian's ffmpeg cannot write),
    done to layouts ffmpeg can write: the same bytes as ffmpeg's own."""
    path = corpus.path(name)
    sizes = [(p.width, p.height) for p in corpus.spec(name).parts for _ in range(p.frames)]
    data = reference_output(path, planar)
    assert interleave_planar(data, sizes, hdiv, vdiv) == reference_output(path, semi)
    with pytest.raises(ReferenceError, match="do not make"):
        interleave_planar(data, sizes[:-1], hdiv, vdiv)


def test_the_nv16_reference_of_the_422_clip() -> None:
    """Per frame (the sizes from Debian's ffprobe): w x h luma bytes, then h
    rows of 2 x ceil(w / 2) bytes, Cb first, each sample where ffmpeg's
    yuv422p has it."""
    path = corpus.path("h264-high422-176x144")
    data = reference_output(path, "nv16")
    frame, luma = 176 * 144 * 2, 176 * 144
    assert len(data) == 5 * frame
    planar = reference_output(path, "yuv422p")
    for i in range(5):
        got = np.frombuffer(data, np.uint8, frame, i * frame)
        src = np.frombuffer(planar, np.uint8, frame, i * frame)
        assert np.array_equal(got[:luma], src[:luma])
        cb, cr = src[luma:luma + luma // 2], src[luma + luma // 2:]
        assert np.array_equal(got[luma::2], cb) and np.array_equal(got[luma + 1::2], cr)
        assert len(set(cb.tolist())) > 1 and not np.array_equal(cb, cr)  # (a real picture)


# --- the client ----------------------------------------------------------------------------


def test_client_formats_references_and_summary() -> None:
    assert sorted(CAPTURE_FORMATS) == ["NV12", "NV16", "NV24", "P010"]
    assert [pix_fmt_for(f) for f in (["NV16"], ["NV24"], ["NV16", "NV16"])] == [
        "nv16", "nv24", "nv16"]
    with pytest.raises(ReferenceError, match="frames in NV12 and NV16"):
        pix_fmt_for(["NV12", "NV16"])
    assert {name: capture_format(name) for name in CLIPS} == CLIPS
    assert capture_format("vp9-p2-10bit-320x240") == "P010"
    assert capture_format("vp9-320x240") == "NV12"
    got = Stats(frames=5, pixfmts=["NV16"], seconds=1.0)
    got.sizes = [(176, 144)]
    line = format_summary("in.h264", "out.yuv", got)
    assert line == "decode: in.h264: 5 frames, 176x144, 5.0 fps, 0 errors -> out.yuv (NV16)"
    assert summary(line).formats == ["NV16"]
    one = bytes(range(256)) * 4 + bytes(33 * 17 + 34 * 17 - 1024)  # odd width: 17 Cb, Cr pairs
    assert split(one + one[::-1], [(33, 17)] * 2, "NV16") == [one, one[::-1]]
    assert [len(f) for f in split(bytes(66 * 50 * 3), [(66, 50)], "NV24")] == [66 * 50 * 3]
    with pytest.raises(AssertionError):
        split(one, [(33, 17)], "NV24")


def test_why_an_88_node_refuses_deeper_422() -> None:
    """The decode tool's line when phase 8.8's node stops a stream, from the
    node's CAPTURE formats before the header (NV12, P010, NV16, NV24)."""
    node = ["NV12", "P010", "NV16", "NV24"]
    deep = StreamFacts("H.264", "High 4:2:2", "yuv422p10le", 10, "4:2:2")
    assert explain(deep, node) == ("H.264 High 4:2:2, yuv422p10le (4:2:2 chroma, 10-bit): the "
                                   "node offers NV16 (8-bit) for 4:2:2 only")
    assert explain(StreamFacts("VP9", "Profile 1", "yuv444p", 8, "4:4:4"), node) is None
    assert explain(StreamFacts("H.264", "High 4:2:2", "yuv422p", 8, "4:2:2"), node) is None
    odd = StreamFacts("VP9", "Profile 1", "yuv440p", 8, "4:4:0")
    assert explain(odd, node) == (
        "VP9 Profile 1, yuv440p (4:4:0 chroma): the node's CAPTURE formats NV12, P010, NV16, "
        "NV24 carry 8- and 10-bit 4:2:0, 8-bit 4:2:2, 8-bit 4:4:4 only")
    # the lines of a node with NV12 (and P010) only are as they were
    assert explain(StreamFacts("VP9", "Profile 1", "yuv444p", 8, "4:4:4"), ["NV12"]) == (
        "VP9 Profile 1, yuv444p (4:4:4 chroma): the node's CAPTURE format NV12 carries 8-bit "
        "4:2:0 only")
