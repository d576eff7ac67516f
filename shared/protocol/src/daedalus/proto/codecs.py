"""The codec descriptors: every fact about a codec that the phases need, in one table.

One frozen ``CodecDesc`` per codec (as rkvdec's ``rkvdec_coded_fmt_desc`` and
fluster's ``Codec``): the phases look codecs up here and keep no table of
their own keyed by codec. Adding a codec is adding a row (and its
``DAEDALUS_CODEC_*`` to the protocol header).

- ``name``: the codec's name in the corpus, the readers' ``StreamInfo`` and
  the command lines (also FFmpeg's codec name, for its bitstream filters);
- ``title``: the codec's name for people, in messages ("H.264");
- ``codec``: the wire codec id (``DAEDALUS_CODEC_*`` of the protocol header);
- ``fourcc``: the V4L2 coded pixel format on the OUTPUT queue (phase 8.5);
- ``ivf_fourcc``: the fourcc of an IVF file header, None if the codec is not
  carried in IVF (phase 8.3's readers);
- ``decoder``: the FFmpeg decoder (PyAV codec name). FFmpeg's native ``av1``
  decoder only drives hardware accelerators; ``libdav1d`` decodes in software;
- ``decoder_aliases``: other FFmpeg decoder names a demuxed file may report
  for this codec (PyAV picks libaom for AV1 when it is built in);
- ``low_delay_options``: decoder options for one packet in, its frame out
  (libdav1d holds frames back for frame threading by default), used by the
  daemon's decoders (phases 8.4, 8.5), not by phase 8.3's parsing;
- ``parser``: FFmpeg's parser that splits a continuous byte stream into
  packets, None when a buffer holds one frame / temporal unit (phase 8.5's
  V4L2_FMT_FLAG_CONTINUOUS_BYTESTREAM);
- ``split_filter``: the bitstream filter that splits one packet into its
  frames (VP9 superframes, AV1 temporal units), None if there is none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from daedalus.proto import Codec


def _frozen(items: dict[str, str] | None = None) -> Mapping[str, str]:
    return MappingProxyType(dict(items or {}))


@dataclass(frozen=True)
class CodecDesc:
    """One codec's facts; see the module docstring for each field."""

    name: str
    title: str
    codec: Codec
    fourcc: str
    ivf_fourcc: bytes | None
    decoder: str
    parser: str | None = None
    split_filter: str | None = None
    decoder_aliases: tuple[str, ...] = ()
    low_delay_options: Mapping[str, str] = field(default_factory=_frozen)


CODECS: tuple[CodecDesc, ...] = (
    CodecDesc(name="vp9", title="VP9", codec=Codec.VP9, fourcc="VP90", ivf_fourcc=b"VP90",
              decoder="vp9", split_filter="vp9_superframe_split"),
    CodecDesc(name="h264", title="H.264", codec=Codec.H264, fourcc="H264", ivf_fourcc=None,
              decoder="h264", parser="h264"),
    CodecDesc(name="av1", title="AV1", codec=Codec.AV1, fourcc="AV01", ivf_fourcc=b"AV01",
              decoder="libdav1d", split_filter="av1_frame_split",
              decoder_aliases=("libaom-av1",),
              low_delay_options=_frozen({"max_frame_delay": "1"})),
)

BY_NAME: Mapping[str, CodecDesc] = MappingProxyType({d.name: d for d in CODECS})
BY_CODEC: Mapping[Codec, CodecDesc] = MappingProxyType({d.codec: d for d in CODECS})
BY_IVF_FOURCC: Mapping[bytes, CodecDesc] = MappingProxyType(
    {d.ivf_fourcc: d for d in CODECS if d.ivf_fourcc is not None})
BY_DECODER: Mapping[str, CodecDesc] = MappingProxyType(
    {name: d for d in CODECS for name in (d.decoder, d.name, *d.decoder_aliases)})


def by_codec(codec: int) -> CodecDesc:
    """The descriptor of a wire codec id (KeyError for an unknown one)."""
    return BY_CODEC[Codec(codec)]


def names() -> str:
    """The codec names, for messages: "vp9, h264, av1"."""
    return ", ".join(d.name for d in CODECS)
