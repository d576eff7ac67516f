"""Streaming readers for the three compressed-video containers the daemon sees.

- **IVF** (VP9 ``VP90``, AV1 ``AV01``): a 32-byte file header (``DKIF``, version
  0, header size 32, fourcc, width, height, rate, scale, frame count), then per
  frame a 12-byte header (le32 size, le64 timestamp) and the frame. One packet
  per IVF frame; a VP9 superframe stays one packet (decoders split it).
- **H.264 Annex-B byte stream** (ITU-T H.264 Annex B): NAL units behind
  ``00 00 01`` / ``00 00 00 01`` start codes, grouped into access units by the
  rules of 7.4.1.2.3: an AUD, SPS, PPS, SEI or NAL type 14...18 after the
  previous access unit's first slice, or a slice with ``first_mb_in_slice == 0``,
  starts a new access unit. A packet is one access unit, start codes included.
- **AV1 low-overhead OBU stream** (AV1 spec 5.2, the ``.obu`` format of
  ``ffmpeg -f obu``): OBUs with ``obu_has_size_field = 1``; a temporal unit
  starts at each temporal delimiter OBU. A packet is one temporal unit,
  temporal delimiter included.

Everything here is pure Python over ``mmap``/``read``: no FFmpeg, so the
readers are the independent half of the parse (ffparse.py is the FFmpeg half).
Malformed input raises :class:`ReaderError` with the byte offset of the
problem; a file cut at a packet boundary ends cleanly.

The API (Packet, StreamInfo, ReaderError, open_stream) is a contract other
phases code against; keep it.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from daedalus.proto import codecs

IVF_SIGNATURE = b"DKIF"
IVF_HEADER = struct.Struct("<4sHH4sHHIII4x")  # 32 bytes
IVF_FRAME_HEADER = struct.Struct("<IQ")  # 12 bytes
# Refuse absurd frame sizes before allocating (a 8K intra frame is far below).
MAX_PACKET = 256 * 1024 * 1024

# H.264 NAL unit types (Table 7-1) that matter for access-unit splitting.
NAL_SLICE, NAL_IDR = 1, 5
NAL_AU_STARTERS = {6, 7, 8, 9, 14, 15, 16, 17, 18}  # SEI, SPS, PPS, AUD, 14..18
NAL_VCL = {1, 2, 5}  # slice, slice data partition A, IDR slice

# AV1 OBU types (6.2.2)
OBU_SEQUENCE_HEADER = 1
OBU_TEMPORAL_DELIMITER = 2
OBU_PADDING = 15
OBU_RESERVED = {0, 9, 10, 11, 12, 13, 14}


@dataclass(frozen=True)
class Packet:
    index: int        # 0-based packet (frame / access unit / temporal unit) number
    offset: int       # byte offset of the packet in the file
    data: bytes       # the compressed frame as a decoder wants it
    pts: int | None   # IVF timestamp, else None


@dataclass(frozen=True)
class StreamInfo:
    codec: str        # "vp9" | "h264" | "av1"
    container: str    # "ivf" | "annexb" | "obu"
    width: int        # from the IVF header, else 0
    height: int


class ReaderError(ValueError):
    """Malformed or truncated input; *offset* is the byte offset of the problem."""

    def __init__(self, message: str, offset: int, path: str | None = None) -> None:
        self.offset = offset
        self.path = path
        where = f"{path}: " if path else ""
        super().__init__(f"{where}byte offset {offset}: {message}")


# --- IVF -----------------------------------------------------------------


def _ivf_header(head: bytes, path: str) -> tuple[str, int, int]:
    if len(head) < IVF_HEADER.size:
        raise ReaderError(f"IVF file header truncated ({len(head)} of {IVF_HEADER.size} bytes)",
                          len(head), path)
    sig, version, hdr_len, fourcc, width, height, _rate, _scale, _n = IVF_HEADER.unpack(head)
    if sig != IVF_SIGNATURE:
        raise ReaderError(f"not an IVF file (signature {sig!r})", 0, path)
    if version != 0:
        raise ReaderError(f"unsupported IVF version {version}", 4, path)
    if hdr_len != IVF_HEADER.size:
        raise ReaderError(f"unsupported IVF header length {hdr_len}", 6, path)
    desc = codecs.BY_IVF_FOURCC.get(fourcc)
    if desc is None:
        wanted = " or ".join(code.decode() for code in codecs.BY_IVF_FOURCC)
        raise ReaderError(f"unsupported IVF fourcc {fourcc!r} (want {wanted})", 8, path)
    return desc.name, width, height


def _ivf_packets(path: str) -> Iterator[Packet]:
    offset = IVF_HEADER.size
    index = 0
    with open(path, "rb") as f:
        f.seek(offset)
        while True:
            head = f.read(IVF_FRAME_HEADER.size)
            if not head:
                return
            if len(head) < IVF_FRAME_HEADER.size:
                raise ReaderError(f"IVF frame {index} header truncated ({len(head)} of "
                                  f"{IVF_FRAME_HEADER.size} bytes)", offset, path)
            size, pts = IVF_FRAME_HEADER.unpack(head)
            if size == 0:
                raise ReaderError(f"IVF frame {index} has size 0", offset, path)
            if size > MAX_PACKET:
                raise ReaderError(f"IVF frame {index} claims {size} bytes (limit "
                                  f"{MAX_PACKET})", offset, path)
            data = f.read(size)
            if len(data) < size:
                raise ReaderError(f"IVF frame {index} truncated ({len(data)} of {size} bytes)",
                                  offset, path)
            yield Packet(index=index, offset=offset, data=data, pts=pts)
            offset += IVF_FRAME_HEADER.size + size
            index += 1


# --- H.264 Annex-B -------------------------------------------------------


def _nal_units(buf: bytes | mmap.mmap, path: str) -> Iterator[tuple[int, int, int]]:
    """(unit start incl. start code, payload start, end) of each NAL unit.

    *end* excludes trailing zero bytes (they belong to the next start code or
    are trailing_zero_8bits)."""
    n = len(buf)
    # leading_zero_8bits, then the first start code
    i = 0
    while i < n and buf[i] == 0:
        i += 1
    if i < 2 or i >= n or buf[i] != 1:
        raise ReaderError("no H.264 Annex-B start code (00 00 01) at the start of the stream",
                          min(i, n), path)
    unit = max(0, i - 3)
    payload = i + 1
    while True:
        nxt = buf.find(b"\x00\x00\x01", payload)
        end = n if nxt < 0 else nxt
        stop = end
        while stop > payload and buf[stop - 1] == 0:
            stop -= 1
        if stop == payload:
            raise ReaderError("empty H.264 NAL unit", unit, path)
        yield unit, payload, stop
        if nxt < 0:
            return
        unit = stop
        payload = nxt + 3


def _first_mb_is_zero(buf: bytes | mmap.mmap, payload: int, end: int) -> bool:
    """first_mb_in_slice (ue(v), the first syntax element after the 1-byte NAL
    header) is 0 exactly when its first bit is 1."""
    return payload + 1 < end and bool(buf[payload + 1] & 0x80)


def _annexb_packets(buf: bytes | mmap.mmap, path: str) -> Iterator[Packet]:
    index = 0
    au_start: int | None = None
    au_end = 0
    seen_vcl = False
    for unit, payload, end in _nal_units(buf, path):
        header = buf[payload]
        if header & 0x80:
            raise ReaderError("H.264 NAL unit with forbidden_zero_bit set", payload, path)
        nal_type = header & 0x1F
        if nal_type in NAL_VCL and end - payload < 2:
            raise ReaderError("H.264 slice NAL unit without a slice header (truncated?)",
                              unit, path)
        starts_au = au_start is None or (seen_vcl and (
            nal_type in NAL_AU_STARTERS
            or (nal_type in NAL_VCL and _first_mb_is_zero(buf, payload, end))))
        if starts_au and au_start is not None:
            yield Packet(index=index, offset=au_start, data=bytes(buf[au_start:au_end]), pts=None)
            index += 1
            seen_vcl = False
            au_start = unit
        if au_start is None:
            au_start = unit
        if nal_type in NAL_VCL:
            seen_vcl = True
        au_end = end
    if au_start is not None:
        yield Packet(index=index, offset=au_start, data=bytes(buf[au_start:au_end]), pts=None)


# --- AV1 OBU -------------------------------------------------------------


def _leb128(buf: bytes | mmap.mmap, pos: int, path: str) -> tuple[int, int]:
    """(value, position after it); 4.10.5: at most 8 bytes, value < 2**32."""
    value = 0
    for i in range(8):
        if pos + i >= len(buf):
            raise ReaderError("OBU size field (leb128) truncated", pos, path)
        byte = buf[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if value >= 1 << 32:
                raise ReaderError(f"OBU size {value} does not fit 32 bits", pos, path)
            return value, pos + i + 1
    raise ReaderError("OBU size field (leb128) longer than 8 bytes", pos, path)


def _obus(buf: bytes | mmap.mmap, path: str) -> Iterator[tuple[int, int, int]]:
    """(offset, obu_type, end) of each OBU."""
    pos, n = 0, len(buf)
    while pos < n:
        header = buf[pos]
        if header & 0x80:
            raise ReaderError("OBU with obu_forbidden_bit set", pos, path)
        obu_type = (header >> 3) & 0xF
        if obu_type in OBU_RESERVED:
            raise ReaderError(f"reserved OBU type {obu_type}", pos, path)
        if not header & 0x02:
            raise ReaderError("OBU without obu_has_size_field (not a low-overhead OBU stream)",
                              pos, path)
        size_at = pos + 1 + (1 if header & 0x04 else 0)
        if size_at > n:
            raise ReaderError("OBU extension header truncated", pos, path)
        size, body = _leb128(buf, size_at, path)
        end = body + size
        if end > n:
            raise ReaderError(f"OBU truncated ({n - body} of {size} payload bytes)", pos, path)
        yield pos, obu_type, end
        pos = end


def _obu_packets(buf: bytes | mmap.mmap, path: str) -> Iterator[Packet]:
    index = 0
    tu_start: int | None = None
    tu_end = 0
    for pos, obu_type, end in _obus(buf, path):
        if obu_type == OBU_TEMPORAL_DELIMITER:
            if tu_start is not None:
                yield Packet(index=index, offset=tu_start, data=bytes(buf[tu_start:tu_end]),
                             pts=None)
                index += 1
            tu_start = pos
        elif tu_start is None:
            raise ReaderError("AV1 OBU stream does not start with a temporal delimiter",
                              pos, path)
        tu_end = end
    if tu_start is not None:
        yield Packet(index=index, offset=tu_start, data=bytes(buf[tu_start:tu_end]), pts=None)


# --- detection -----------------------------------------------------------

SUFFIX_HINTS = {".ivf": "ivf", ".h264": "annexb", ".264": "annexb", ".avc": "annexb",
                ".obu": "obu", ".av1": "obu"}


def detect(head: bytes) -> str | None:
    """The container the first bytes of a file look like, or None."""
    if head.startswith(IVF_SIGNATURE):
        return "ivf"
    zeros = len(head) - len(head.lstrip(b"\x00"))
    if zeros >= 2 and head[zeros:zeros + 1] == b"\x01":
        return "annexb"
    # a temporal delimiter OBU: type 2, has_size_field, optional extension, size 0
    if len(head) >= 2 and head[0] & 0xFA == 0x12:
        size_at = 1 + ((head[0] >> 2) & 1)
        if len(head) > size_at and head[size_at] == 0:
            return "obu"
    return None


def _mapped(path: str, split: Callable[[bytes | mmap.mmap, str], Iterator[Packet]]
            ) -> Iterator[Packet]:
    """Run *split* over the file mapped read-only (nothing is read up front)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            yield from split(b"", path)
            return
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        yield from split(buf, path)
    finally:
        buf.close()


def open_stream(path: str | os.PathLike[str]) -> tuple[StreamInfo, Iterator[Packet]]:
    """Open a VP9/AV1 IVF, H.264 Annex-B or AV1 OBU file.

    The container and codec are detected from the content; the file suffix
    only words the error when the content is not recognised. The header is
    checked here (ReaderError now); packets are read lazily and a later
    problem raises ReaderError from the iterator.
    """
    spath = os.fspath(path)
    with open(spath, "rb") as f:
        head = f.read(IVF_HEADER.size)
    kind = detect(head)
    if kind is None:
        hint = SUFFIX_HINTS.get(Path(spath).suffix.lower())
        if not head:
            raise ReaderError("empty file", 0, spath)
        expected = f" (the suffix suggests {hint}, but the content does not match)" if hint else ""
        raise ReaderError("not an IVF, H.264 Annex-B or AV1 OBU stream" + expected, 0, spath)
    if kind == "ivf":
        codec, width, height = _ivf_header(head, spath)
        return StreamInfo(codec, "ivf", width, height), _ivf_packets(spath)
    if kind == "annexb":
        return StreamInfo("h264", "annexb", 0, 0), _mapped(spath, _annexb_packets)
    return StreamInfo("av1", "obu", 0, 0), _mapped(spath, _obu_packets)


def read_all(path: str | os.PathLike[str]) -> tuple[StreamInfo, list[Packet]]:
    """open_stream, with every packet read (for tests and small files)."""
    info, packets = open_stream(path)
    return info, list(packets)
