"""Seeded mutations of a packet stream, for ``daedalus-v4l2 campaign fuzz``.

A stream is a list of packets (one OUTPUT buffer each: an IVF frame, an H.264
access unit). ``mutate`` applies one to ``MAX_MUTATIONS`` mutations chosen by
the caller's ``random.Random``, so a (seed, stream index) pair always gives the
same bytes: a finding is reproduced by its seed and index alone.

Mutations (``KINDS``):

- ``flip``: 1-8 random bits of one packet inverted;
- ``truncate``: one packet cut to a random shorter length (at least a byte);
- ``run``: a span of 1-64 bytes of one packet set to one byte (00, FF or random);
- ``random``: a span of 1-64 bytes of one packet replaced by random bytes;
- ``drop``: one packet left out;
- ``duplicate``: one packet sent twice;
- ``swap``: two neighbouring packets exchanged;
- ``garbage``: a packet of 1-2048 random bytes inserted;
- ``cut``: the stream ends after a random packet (the rest is never sent).

No packet is ever empty (an OUTPUT buffer with ``bytesused`` 0 means "the
whole buffer" to the V4L2 core) and no packet grows, except ``garbage`` ones.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass

KINDS = ("flip", "truncate", "run", "random", "drop", "duplicate", "swap", "garbage", "cut")
MAX_MUTATIONS = 4
MAX_SPAN = 64
MAX_GARBAGE = 2048


@dataclass(frozen=True)
class Mutation:
    kind: str
    packet: int       # index in the stream as it was when the mutation was applied
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind}@{self.packet}" + (f"({self.detail})" if self.detail else "")


def _one(packets: list[bytes], kind: str, rng: random.Random) -> Mutation:
    """Apply *kind* to *packets* in place."""
    index = rng.randrange(len(packets))
    data = bytearray(packets[index])
    if kind == "flip":
        bits = sorted(rng.sample(range(len(data) * 8), min(len(data) * 8, rng.randint(1, 8))))
        for bit in bits:
            data[bit // 8] ^= 1 << (bit % 8)
        packets[index] = bytes(data)
        return Mutation(kind, index, ",".join(str(b) for b in bits))
    if kind == "truncate":
        if len(data) < 2:
            return Mutation(kind, index, "too short, unchanged")
        size = rng.randrange(1, len(data))
        packets[index] = bytes(data[:size])
        return Mutation(kind, index, f"{len(data)}->{size}")
    if kind in ("run", "random"):
        start = rng.randrange(len(data))
        size = rng.randint(1, min(MAX_SPAN, len(data) - start))
        if kind == "run":
            value = rng.choice((0x00, 0xFF, rng.randrange(256)))
            data[start:start + size] = bytes([value]) * size
            detail = f"{start}+{size}={value:02x}"
        else:
            data[start:start + size] = rng.randbytes(size)
            detail = f"{start}+{size}"
        packets[index] = bytes(data)
        return Mutation(kind, index, detail)
    if kind == "drop":
        if len(packets) < 2:
            return Mutation(kind, index, "last packet, kept")
        del packets[index]
        return Mutation(kind, index)
    if kind == "duplicate":
        packets.insert(index + 1, packets[index])
        return Mutation(kind, index)
    if kind == "swap":
        if len(packets) < 2:
            return Mutation(kind, index, "one packet, unchanged")
        index = min(index, len(packets) - 2)
        packets[index], packets[index + 1] = packets[index + 1], packets[index]
        return Mutation(kind, index)
    if kind == "garbage":
        size = rng.randint(1, MAX_GARBAGE)
        packets.insert(index, rng.randbytes(size))
        return Mutation(kind, index, str(size))
    if kind == "cut":
        del packets[index + 1:]
        return Mutation(kind, index)
    raise ValueError(f"unknown mutation {kind!r}")


def mutate(packets: Sequence[bytes], rng: random.Random, *,
           kinds: Sequence[str] = KINDS,
           max_mutations: int = MAX_MUTATIONS) -> tuple[list[bytes], list[Mutation]]:
    """A mutated copy of *packets* (at least one packet, none empty) and what was done."""
    if not packets or not all(packets):
        raise ValueError("mutate needs a non-empty stream of non-empty packets")
    out = list(packets)
    done = [_one(out, rng.choice(kinds), rng)
            for _ in range(rng.randint(1, max_mutations))]
    return out, done


def stream_rng(seed: int, index: int, what: str = "fuzz") -> random.Random:
    """The RNG of stream *index* of a campaign seeded *seed*: independent of
    every other stream, so one stream is reproduced without the ones before."""
    return random.Random(f"daedalus-{what}:{seed}:{index}")


def digest(packets: Sequence[bytes]) -> str:
    """SHA-256 of a packet stream (sizes and bytes), to show two runs fed the same."""
    h = hashlib.sha256()
    for data in packets:
        h.update(len(data).to_bytes(4, "little"))
        h.update(data)
    return h.hexdigest()
