"""Phase 8.3 readers: hand-built IVF / Annex-B / OBU streams, truncation at
every offset of real corpus files, garbage."""

from __future__ import annotations

import dataclasses
import inspect
import os
import struct
from pathlib import Path

import pytest

from daedalus.parse import corpus
from daedalus.parse.readers import Packet, ReaderError, StreamInfo, detect, open_stream, read_all


def ivf(fourcc: bytes, frames: list[bytes], width: int = 64, height: int = 48) -> bytes:
    head = struct.pack("<4sHH4sHHIII4x", b"DKIF", 0, 32, fourcc, width, height, 30, 1,
                       len(frames))
    body = b"".join(struct.pack("<IQ", len(f), i * 3) + f for i, f in enumerate(frames))
    return head + body


def nal(nal_type: int, payload: bytes, *, long: bool = False, ref: int = 3) -> bytes:
    return (b"\x00\x00\x00\x01" if long else b"\x00\x00\x01") + bytes([ref << 5 | nal_type]) \
        + payload


def obu(obu_type: int, payload: bytes) -> bytes:
    assert len(payload) < 128
    return bytes([obu_type << 3 | 0x02, len(payload)]) + payload


TD = obu(2, b"")


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_contract() -> None:
    """The API other phases code against."""
    assert [f.name for f in dataclasses.fields(Packet)] == ["index", "offset", "data", "pts"]
    assert [f.name for f in dataclasses.fields(StreamInfo)] == ["codec", "container", "width",
                                                                 "height"]
    assert Packet.__dataclass_params__.frozen and StreamInfo.__dataclass_params__.frozen  # type: ignore[attr-defined]
    assert issubclass(ReaderError, ValueError)
    assert list(inspect.signature(open_stream).parameters) == ["path"]
    assert ReaderError("x", 7).offset == 7


def test_ivf(tmp_path: Path) -> None:
    p = write(tmp_path, "a.bin", ivf(b"VP90", [b"\x82\x49\x83", b"\x86", b"\x87\x88"]))
    info, packets = read_all(p)
    assert info == StreamInfo("vp9", "ivf", 64, 48)
    assert packets == [Packet(0, 32, b"\x82\x49\x83", 0), Packet(1, 47, b"\x86", 3),
                       Packet(2, 60, b"\x87\x88", 6)]
    info, _ = read_all(write(tmp_path, "b.ivf", ivf(b"AV01", [b"\x12\x00"])))
    assert info.codec == "av1"
    info, packets = read_all(write(tmp_path, "empty.ivf", ivf(b"VP90", [])))
    assert packets == []


@pytest.mark.parametrize(("data", "offset", "words"), [
    (ivf(b"VP80", [b"x"]), 8, "fourcc"),
    (ivf(b"VP90", [b"x"])[:20], 20, "header truncated"),
    (b"DKIF\x01\x00" + bytes(26), 4, "version"),
    (ivf(b"VP90", [b"abc"])[:-1], 32, "truncated (2 of 3 bytes)"),
    (ivf(b"VP90", [b"abc"]) + b"\x05\x00", 47, "header truncated"),
    (ivf(b"VP90", [b""]), 32, "size 0"),
    (ivf(b"VP90", []) + struct.pack("<IQ", 0xFFFFFFF0, 0), 32, "claims"),
])
def test_ivf_errors(tmp_path: Path, data: bytes, offset: int, words: str) -> None:
    p = write(tmp_path, "bad.ivf", data)
    with pytest.raises(ReaderError) as err:
        read_all(p)
    assert err.value.offset == offset
    assert words in str(err.value) and f"byte offset {offset}" in str(err.value)


def test_annexb_access_units(tmp_path: Path) -> None:
    sps, pps = nal(7, b"\x64\x00\x1f", long=True), nal(8, b"\xee\x3c\x80", long=True)
    idr = nal(5, b"\x88\x84")           # first_mb_in_slice = 0 (first bit 1)
    idr2 = nal(5, b"\x30\x84")          # first_mb_in_slice != 0: same picture
    p1 = nal(1, b"\x9a\x22", ref=2)
    aud = nal(9, b"\xf0")
    p2 = nal(1, b"\x9a\x23", ref=2)
    data = b"\x00" + sps + pps + idr + idr2 + p1 + aud + p2 + b"\x00\x00"
    info, packets = read_all(write(tmp_path, "s.h264", data))
    assert info == StreamInfo("h264", "annexb", 0, 0)
    assert [p.data for p in packets] == [sps + pps + idr + idr2, p1, aud + p2]
    assert [p.offset for p in packets] == [1, 1 + len(sps + pps + idr + idr2),
                                           1 + len(sps + pps + idr + idr2 + p1)]
    assert all(p.pts is None for p in packets)


@pytest.mark.parametrize(("data", "offset", "words"), [
    (b"\x00\x00\x02\x65", 0, "not an IVF, H.264 Annex-B or AV1 OBU stream"),
    (b"\x00\x00\x01\x65\x88\x00\x00\x01\x41", 5, "without a slice header"),
    (b"\x00\x00\x01\xe5\x88", 3, "forbidden_zero_bit"),
    (b"\x00\x00\x01\x65\x88\x00\x00\x01", 5, "empty H.264 NAL unit"),
    (b"\x00\x00\x01\x65\x88\x00\x00\x01\x00\x00\x01\x41", 5, "empty"),
])
def test_annexb_errors(tmp_path: Path, data: bytes, offset: int, words: str) -> None:
    with pytest.raises(ReaderError) as err:
        open_stream_list(write(tmp_path, "bad.h264", data))
    assert err.value.offset == offset and words in str(err.value)


def open_stream_list(p: Path) -> list[Packet]:
    _info, packets = open_stream(p)
    return list(packets)


def test_obu_temporal_units(tmp_path: Path) -> None:
    seq, frame1 = obu(1, b"\x00\x00\x00"), obu(6, b"\x10\x20")
    frame2, pad = obu(6, b"\x30"), obu(15, b"\x00\x00")
    ext = bytes([6 << 3 | 0x06, 0x08, 1]) + b"\x40"  # with an extension byte
    data = TD + seq + frame1 + TD + frame2 + pad + TD + ext
    info, packets = read_all(write(tmp_path, "s.obu", data))
    assert info == StreamInfo("av1", "obu", 0, 0)
    assert [p.data for p in packets] == [TD + seq + frame1, TD + frame2 + pad, TD + ext]
    assert [p.offset for p in packets] == [0, len(TD + seq + frame1),
                                           len(TD + seq + frame1 + TD + frame2 + pad)]


@pytest.mark.parametrize(("data", "offset", "words"), [
    (TD + bytes([6 << 3 | 0x02, 5, 1, 2]), 2, "OBU truncated (2 of 5"),
    (TD + bytes([6 << 3 | 0x02, 0x80]), 3, "leb128"),
    (TD + bytes([6 << 3 | 0x02]) + b"\xff" * 8 + b"\x01", 3, "longer than 8"),
    (TD + bytes([0x80 | 6 << 3 | 0x02, 0]), 2, "forbidden"),
    (TD + bytes([9 << 3 | 0x02, 0]), 2, "reserved OBU type 9"),
    (TD + bytes([6 << 3, 0]), 2, "obu_has_size_field"),
    (TD + bytes([6 << 3 | 0x06]), 2, "extension header truncated"),
])
def test_obu_errors(tmp_path: Path, data: bytes, offset: int, words: str) -> None:
    with pytest.raises(ReaderError) as err:
        open_stream_list(write(tmp_path, "bad.obu", data))
    assert err.value.offset == offset and words in str(err.value)


def test_obu_must_start_with_temporal_delimiter(tmp_path: Path) -> None:
    data = TD + obu(6, b"\x10")
    # detection needs a leading TD; a stream that lost it is garbage
    with pytest.raises(ReaderError) as err:
        read_all(write(tmp_path, "x.obu", data[2:]))
    assert err.value.offset == 0


@pytest.mark.parametrize("data", [b"", b"hello world", bytes(range(256)), b"\x00" * 100,
                                  b"\x12", b"DKI"])
def test_garbage(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(ReaderError) as err:
        read_all(write(tmp_path, "garbage.h264", data))
    assert err.value.offset >= 0 and "byte offset" in str(err.value)


def test_suffix_is_only_a_hint(tmp_path: Path) -> None:
    good = ivf(b"VP90", [b"\x82"])
    info, _ = read_all(write(tmp_path, "really-ivf.h264", good))
    assert info.container == "ivf"
    with pytest.raises(ReaderError, match="suffix suggests obu"):
        read_all(write(tmp_path, "bad.obu", b"junk junk"))


def test_detect() -> None:
    assert detect(b"DKIF") == "ivf"
    assert detect(b"\x00\x00\x01\x67") == "annexb"
    assert detect(b"\x00\x00\x00\x01\x67") == "annexb"
    assert detect(b"\x12\x00\x0a") == "obu"
    assert detect(b"\x16\x08\x00") == "obu"  # TD with an extension byte
    assert detect(b"\x12\x05") is None
    assert detect(b"\x00\x01") is None


TRUNCATED = ["vp9-128x96", "h264-high-128x96", "av1-174x98", "av1-10bit-128x96"]


@pytest.mark.parametrize("name", TRUNCATED)
def test_truncation_at_every_offset(tmp_path: Path, name: str) -> None:
    """Cut a real file at every byte: ReaderError or a clean end, never anything else;
    every packet read is a prefix-consistent copy of the full read."""
    data = corpus.path(name).read_bytes()
    _info, full = read_all(corpus.path(name))
    by_offset = {p.offset: p for p in full}
    p = tmp_path / ("cut" + corpus.path(name).suffix)
    errors = clean = 0
    for n in range(len(data)):
        p.write_bytes(data[:n])
        packets: list[Packet] = []
        try:
            _i, it = open_stream(p)
            for pkt in it:
                packets.append(pkt)
        except ReaderError as exc:
            assert 0 <= exc.offset <= n
            errors += 1
        else:
            clean += 1
        for pkt in packets:
            whole = by_offset[pkt.offset]
            if name.startswith("vp9") or name.startswith("av1-10bit"):  # IVF: exact
                assert pkt == whole
            else:  # Annex-B / OBU: the last unit may be cut short
                assert whole.data.startswith(pkt.data) and pkt.index == whole.index
    assert errors > 0 and clean > 0


def test_file_handles_are_closed(tmp_path: Path) -> None:
    fd_dir = Path("/proc/self/fd")
    if not fd_dir.is_dir():
        pytest.skip("no /proc/self/fd")
    before = len(os.listdir(fd_dir))
    for name in TRUNCATED:
        for _ in range(20):
            read_all(corpus.path(name))
            _info, it = open_stream(corpus.path(name))
            next(it)
            del it
    assert len(os.listdir(fd_dir)) <= before + 1
