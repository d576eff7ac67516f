"""The codec table: one row per wire codec, lookups agree with the rows."""

from __future__ import annotations

from daedalus.proto import Codec
from daedalus.proto.codecs import (
    BY_CODEC,
    BY_DECODER,
    BY_IVF_FOURCC,
    BY_NAME,
    CODECS,
    by_codec,
    names,
)


def test_one_row_per_wire_codec() -> None:
    assert sorted(d.codec for d in CODECS) == sorted(Codec)
    assert len(BY_NAME) == len(BY_CODEC) == len(CODECS)
    assert all(by_codec(int(d.codec)) is d for d in CODECS)
    assert names() == "vp9, h264, av1"


def test_the_facts_the_phases_relied_on() -> None:
    assert {d.name: d.fourcc for d in CODECS} == {"vp9": "VP90", "h264": "H264", "av1": "AV01"}
    assert {d.name: d.decoder for d in CODECS} == {"vp9": "vp9", "h264": "h264",
                                                   "av1": "libdav1d"}
    assert {d.name: d.parser for d in CODECS if d.parser} == {"h264": "h264"}
    assert {d.name: d.split_filter for d in CODECS if d.split_filter} == {
        "vp9": "vp9_superframe_split", "av1": "av1_frame_split"}
    assert {k: d.name for k, d in BY_IVF_FOURCC.items()} == {b"VP90": "vp9", b"AV01": "av1"}
    assert dict(BY_NAME["av1"].low_delay_options) == {"max_frame_delay": "1"}
    assert BY_DECODER["libaom-av1"] is BY_DECODER["libdav1d"] is BY_NAME["av1"]
