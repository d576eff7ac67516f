"""The stand-in kernel the host tests of the DECODE_REQUEST handler drive it with.

Not a test module (pytest collects ``test_*.py`` only): the handler tests
import it by name, their directory being on ``sys.path`` as pytest puts it
there for a test directory without ``__init__.py`` (the default
``--import-mode=prepend``).

``StandInNode`` plays the kernel for one DECODE_REQUEST at a time: new
buffers each (``daedalus.dispatch.loopback.MemfdDevice``), the OUTPUT
buffer a memfd with the bitstream behind ``JUNK`` at ``bitstream_offset``,
the CAPTURE buffer a memfd ``CAPTURE_SLACK`` bytes larger than
``sizeimage``. After each answer it checks that both buffers were given
back (no dma-buf left open) and that the answer is well-formed for the
buffers the handler took. ``kernel_ctrls`` is the control list
daedalus_sl_build sends: every control of the node's codec.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from daedalus.dispatch.loopback import MemfdDevice
from daedalus.proto import (
    CTRL_IN_REQUEST,
    Codec,
    MsgType,
    RequestCtrl,
    RequestDecode,
    RequestDecodeResp,
    pack_header,
    pack_request_decode,
    parse_header,
    parse_request_decode_resp,
    validate_request_decode_resp,
)
from daedalus.stateless.handler import CODEC_CTRLS, StatelessHandler

JUNK = b"\xee" * 16            # what precedes the bitstream in the OUTPUT buffer
CAPTURE_SLACK = 64             # CAPTURE buffer bytes past sizeimage, never written


def kernel_ctrls(codec: Codec, set_by_client: list[tuple[int, bytes]]) -> tuple[RequestCtrl, ...]:
    """Every control of the node for *codec*, as daedalus_sl_build sends them: the
    request's values flagged IN_REQUEST, the others zero (never set); a dynamic
    array's elems its entry count."""
    given = dict(set_by_client)
    out = []
    for cid, spec in CODEC_CTRLS[codec].items():
        value = given.get(cid, bytes(spec.size))
        elems = len(value) // spec.size if spec.max_elems > 1 else 1
        out.append(RequestCtrl(cid, CTRL_IN_REQUEST if cid in given else 0, elems, value))
    return tuple(out)


@dataclass
class Answer:
    resp: RequestDecodeResp
    capture: bytes | None       # the CAPTURE buffer at the handler's END | WRITE
    took: set[int]              # the buffer indexes the handler asked for


@dataclass
class StandInNode:
    """The stand-in kernel: one DECODE_REQUEST at a time, new buffers each.
    ``stream_id``: what the handler's order_key must say of a request."""

    handler: StatelessHandler = field(default_factory=StatelessHandler)
    device: MemfdDevice = field(default_factory=MemfdDevice)
    cookie: int = 100
    stream_id: int = 7

    def __post_init__(self) -> None:
        self.handler.attach_device(self.device)

    def exchange(self, payload: bytes, bitstream: bytes, sizeimage: int,
                 order_keys: Collection[int | None]) -> Answer:
        """*payload* as one DECODE_REQUEST, its OUTPUT buffer holding *bitstream*
        and its CAPTURE buffer sized for *sizeimage*; the handler's order_key of
        it must be one of *order_keys*."""
        self.cookie += 1
        cookie = self.cookie
        self.device.add_output(cookie, JUNK + bitstream + b"\xee" * 8, index=0)
        self.device.add_capture(cookie, sizeimage + CAPTURE_SLACK, index=1)
        header = parse_header(pack_header(MsgType.DECODE_REQUEST, cookie, len(payload)))
        assert self.handler.order_key(header, payload) in order_keys
        status, answer = self.handler.handle(header, payload)
        assert status == 0
        resp = parse_request_decode_resp(answer)
        took = {e.index for e in self.device.events if e.cookie == cookie and e.what == "get"}
        capture = self.device.remove(cookie, 1).written
        self.device.remove(cookie, 0)
        assert self.device.leaks() == []
        validate_request_decode_resp(resp, sizeimage, took_capture=1 in took)
        return Answer(resp, capture, took)

    def decode(self, req: RequestDecode, bitstream: bytes) -> Answer:
        """*req* with its own sizeimage, of the node's stream."""
        return self.exchange(pack_request_decode(req), bitstream, req.sizeimage,
                             (self.stream_id,))
