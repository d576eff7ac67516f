"""AV1 bit-level descriptors (AV1 spec 4.10, 5.9.26-5.9.28) read and written.

:class:`BitReader` reads f(n), su(n), ns(n), le(n), leb128 and the
subexponential global-motion code; :class:`BitWriter` writes the same
descriptors so that the reader gives the value back. :func:`obu` frames a
payload as a low-overhead OBU (obu_has_size_field = 1, no extension).
"""

from __future__ import annotations

OBU_SEQUENCE_HEADER = 1
OBU_TEMPORAL_DELIMITER = 2
OBU_FRAME_HEADER = 3
OBU_TILE_GROUP = 4
OBU_METADATA = 5
OBU_FRAME = 6
OBU_REDUNDANT_FRAME_HEADER = 7
OBU_TILE_LIST = 8
OBU_PADDING = 15


class BitstreamError(ValueError):
    pass


def floor_log2(x: int) -> int:
    return x.bit_length() - 1


class BitReader:
    def __init__(self, data: bytes, pos_bits: int = 0) -> None:
        self.data = data
        self.pos = pos_bits

    def f(self, n: int) -> int:
        value = 0
        for _ in range(n):
            byte = self.pos >> 3
            if byte >= len(self.data):
                raise BitstreamError("read past the end of the OBU")
            value = (value << 1) | (self.data[byte] >> (7 - (self.pos & 7)) & 1)
            self.pos += 1
        return value

    def su(self, n: int) -> int:
        value = self.f(n)
        sign = 1 << (n - 1)
        return value - 2 * sign if value & sign else value

    def ns(self, n: int) -> int:
        w = floor_log2(n) + 1
        m = (1 << w) - n
        v = self.f(w - 1)
        if v < m:
            return v
        return (v << 1) - m + self.f(1)

    def le(self, n: int) -> int:
        t = 0
        for i in range(n):
            t += self.f(8) << (i * 8)
        return t

    def byte_alignment(self) -> None:
        self.pos = (self.pos + 7) & ~7

    def subexp(self, num_syms: int) -> int:
        i, mk, k = 0, 0, 3
        while True:
            b2 = k + i - 1 if i else k
            a = 1 << b2
            if num_syms <= mk + 3 * a:
                return self.ns(num_syms - mk) + mk
            if self.f(1):
                i += 1
                mk += a
            else:
                return self.f(b2) + mk

    def signed_subexp_with_ref(self, low: int, high: int, r: int) -> int:
        mx, r = high - low, r - low
        v = self.subexp(mx)
        x = inverse_recenter(r, v) if (r << 1) <= mx else mx - 1 - inverse_recenter(mx - 1 - r, v)
        return x + low


def inverse_recenter(r: int, v: int) -> int:
    if v > 2 * r:
        return v
    if v & 1:
        return r - ((v + 1) >> 1)
    return r + (v >> 1)


def recenter(r: int, x: int) -> int:
    """The v for which inverse_recenter(r, v) == x."""
    if x > 2 * r:
        return x
    if x >= r:
        return (x - r) << 1
    return ((r - x) << 1) - 1


class BitWriter:
    def __init__(self) -> None:
        self.bits: list[int] = []

    def f(self, n: int, value: int) -> None:
        if value < 0 or value >> n:
            raise ValueError(f"{value} does not fit f({n})")
        self.bits.extend((value >> (n - 1 - i)) & 1 for i in range(n))

    def flag(self, value: bool | int) -> None:
        self.f(1, 1 if value else 0)

    def su(self, n: int, value: int) -> None:
        if not -(1 << (n - 1)) <= value < 1 << (n - 1):
            raise ValueError(f"{value} does not fit su({n})")
        self.f(n, value & ((1 << n) - 1))

    def ns(self, n: int, value: int) -> None:
        if not 0 <= value < n:
            raise ValueError(f"{value} does not fit ns({n})")
        w = floor_log2(n) + 1
        m = (1 << w) - n
        if value < m:
            self.f(w - 1, value)
        else:
            y = value + m
            self.f(w - 1, y >> 1)
            self.f(1, y & 1)

    def subexp(self, num_syms: int, value: int) -> None:
        i, mk, k = 0, 0, 3
        while True:
            b2 = k + i - 1 if i else k
            a = 1 << b2
            if num_syms <= mk + 3 * a:
                self.ns(num_syms - mk, value - mk)
                return
            if value >= mk + a:
                self.f(1, 1)
                i += 1
                mk += a
            else:
                self.f(1, 0)
                self.f(b2, value - mk)
                return

    def signed_subexp_with_ref(self, low: int, high: int, r: int, value: int) -> None:
        mx, r, x = high - low, r - low, value - low
        if not 0 <= x < mx:
            raise ValueError(f"{value} outside [{low}, {high})")
        v = recenter(r, x) if (r << 1) <= mx else recenter(mx - 1 - r, mx - 1 - x)
        self.subexp(mx, v)

    def trailing_bits(self) -> None:
        """5.3.4 trailing_bits: a one bit then zeros up to the byte boundary."""
        self.bits.append(1)
        while len(self.bits) % 8:
            self.bits.append(0)

    def byte_alignment(self) -> None:
        while len(self.bits) % 8:
            self.bits.append(0)

    @property
    def pos(self) -> int:
        return len(self.bits)

    def tobytes(self) -> bytes:
        if len(self.bits) % 8:
            raise ValueError("BitWriter not byte aligned")
        out = bytearray()
        for i in range(0, len(self.bits), 8):
            b = 0
            for bit in self.bits[i:i + 8]:
                b = (b << 1) | bit
            out.append(b)
        return bytes(out)


def leb128(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_leb128(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(8):
        if pos + i >= len(data):
            raise BitstreamError("leb128 truncated")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    raise BitstreamError("leb128 longer than 8 bytes")


def obu(obu_type: int, payload: bytes) -> bytes:
    """A low-overhead OBU: header (has_size_field, no extension), leb128 size, payload."""
    return bytes([(obu_type << 3) | 0x02]) + leb128(len(payload)) + payload


def split_obus(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(obu_type, temporal_id, spatial_id, payload) of each OBU of a temporal unit."""
    out: list[tuple[int, int, int, bytes]] = []
    pos = 0
    while pos < len(data):
        header = data[pos]
        if header & 0x80:
            raise BitstreamError("obu_forbidden_bit set")
        obu_type = (header >> 3) & 0xF
        tid = sid = 0
        pos += 1
        if header & 0x04:
            ext = data[pos]
            tid, sid = ext >> 5, (ext >> 3) & 3
            pos += 1
        if header & 0x02:
            size, pos = read_leb128(data, pos)
        else:
            size = len(data) - pos
        if pos + size > len(data):
            raise BitstreamError("OBU truncated")
        out.append((obu_type, tid, sid, data[pos:pos + size]))
        pos += size
    return out
