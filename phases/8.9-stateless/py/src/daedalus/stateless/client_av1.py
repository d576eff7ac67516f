"""AV1 through the stateless node: ``Av1StatelessDecode``, the client side of item 4 of issue #15.

The OUTPUT format is ``V4L2_PIX_FMT_AV1_FRAME`` ('AV1F', one frame per
buffer). The container's temporal units go through ``av1_fill.fill_stream``
(our own parse, the controls filled as GStreamer's v4l2codecav1dec fills
them), which gives per frame a ``Request`` (decode order) and per
``show_existing_frame`` a ``ShowExisting`` event. The sequence is the VP9
class's (``client.Vp9StatelessDecode``, see client.py's module doc):

1. the queues are set up for the sequence's largest frame
   (``max_frame_width_minus_1 + 1`` x ``max_frame_height_minus_1 + 1``):
   S_FMT(OUTPUT, AV1F), then ``V4L2_CID_STATELESS_AV1_SEQUENCE`` set as the
   file's value (outside any request) before G_FMT(CAPTURE), which follows
   it: NV12 for 8-bit, P010 for 10-bit 4:2:0 (anything else is refused);
   again on a key frame whose sequence changes that size or depth;
2. each request sets SEQUENCE, FRAME, TILE_GROUP_ENTRY (a dynamic array:
   ``size`` is every entry's bytes) and, when the sequence has film grain,
   FILM_GRAIN, with the OUTPUT buffer the frame's OBU payloads; the n-th
   request's timestamp is n (``request_ns(n)`` ns, the value
   ``reference_frame_ts`` names it by);
3. the CAPTURE picture is cropped to the frame's size (``upscaled_width`` x
   ``frame_height_minus_1 + 1``): a shown frame's is output, a hidden frame's
   kept; a ``ShowExisting`` event outputs again the picture of the request
   it names (no request, as GStreamer). Pictures are kept while a reference
   slot holds their request.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from daedalus.m2m.v4l2 import DecodeError, Frame, M2MNode, StreamRefused
from daedalus.stateless import av1_ctrls as C
from daedalus.stateless.av1_bits import BitstreamError
from daedalus.stateless.av1_fill import KEY_FRAME, Request, ShowExisting, fill_stream
from daedalus.stateless.client import (
    V4L2_PIX_FMT_AV1_FRAME,
    V4L2_PIX_FMT_NV12,
    V4L2_PIX_FMT_P010,
    StatelessStats,
    Vp9StatelessDecode,
    request_ns,
)

_SUBSAMPLING_420 = C.V4L2_AV1_SEQUENCE_FLAG_SUBSAMPLING_X | C.V4L2_AV1_SEQUENCE_FLAG_SUBSAMPLING_Y


def av1_request_controls(req: Request) -> list[tuple[int, bytes]]:
    """The controls one AV1 request sets: (id, payload) each."""
    controls = [(C.V4L2_CID_STATELESS_AV1_SEQUENCE, C.pack(req.sequence)),
                (C.V4L2_CID_STATELESS_AV1_FRAME, C.pack(req.frame)),
                (C.V4L2_CID_STATELESS_AV1_TILE_GROUP_ENTRY, C.pack_entries(req.entries))]
    if req.film_grain is not None:
        controls.append((C.V4L2_CID_STATELESS_AV1_FILM_GRAIN, C.pack(req.film_grain)))
    return controls


class Av1StatelessDecode(Vp9StatelessDecode):
    """One decode of AV1 *packets* ((index, temporal unit) of a container)
    through the stateless node (see the module doc); *on_frame* gets every
    output picture in display order."""

    CODED_FORMAT = V4L2_PIX_FMT_AV1_FRAME

    def __init__(self, node: M2MNode, media_fd: int, packets: Iterator[tuple[int, bytes]],
                 on_frame: Callable[[Frame], None], **kwargs: Any) -> None:
        super().__init__(node, media_fd, packets, on_frame, **kwargs)
        self.pictures: dict[int, Frame] = {}   # request timestamp (ns) -> its picture

    def run(self) -> StatelessStats:
        start = time.monotonic()
        index = -1

        def units() -> Iterator[bytes]:
            nonlocal index
            for number, packet in self.packets:
                index = number   # the packet a parse error names
                yield packet

        try:
            events = fill_stream(units(), first_timestamp=request_ns(1),
                                 step=request_ns(1))
            while True:
                try:
                    ev = next(events)
                except StopIteration:
                    break
                except BitstreamError as exc:
                    raise DecodeError(f"packet {index}: {exc}") from None
                if isinstance(ev, ShowExisting):
                    self._show_again(index, ev)
                else:
                    self._av1_frame(index, ev)
        finally:
            self.stats.seconds = time.monotonic() - start
            self._teardown()
        return self.stats

    def _av1_frame(self, index: int, req: Request) -> None:
        seq = req.sequence
        if (seq.bit_depth not in (8, 10) or seq.flags & C.V4L2_AV1_SEQUENCE_FLAG_MONO_CHROME
                or seq.flags & _SUBSAMPLING_420 != _SUBSAMPLING_420):
            raise StreamRefused(f"packet {index}: a {seq.bit_depth}-bit sequence, flags "
                                f"{seq.flags:#x}: the node's CAPTURE formats NV12 and P010 "
                                "carry 4:2:0 at 8 and 10 bits only")
        capture = V4L2_PIX_FMT_NV12 if seq.bit_depth == 8 else V4L2_PIX_FMT_P010
        width, height = seq.max_frame_width_minus_1 + 1, seq.max_frame_height_minus_1 + 1
        key = req.frame.frame_type == KEY_FRAME
        queues = self.queues
        if queues is None or (width, height, capture) != (
                queues.width, queues.height, queues.capture_fmt.pixelformat):
            if queues is not None and not key:
                raise DecodeError(f"packet {index}: the sequence's size or depth changes to "
                                  f"{width}x{height} {capture} on a frame that is not a key "
                                  "frame")
            queues = self._configure(width, height, (C.V4L2_CID_STATELESS_AV1_SEQUENCE,
                                                     C.pack(seq)), capture)
        self.number += 1
        if req.timestamp != request_ns(self.number):
            raise DecodeError(f"packet {index}: request {self.number} filled with timestamp "
                              f"{req.timestamp}")
        f = req.frame
        visible = (int(f.upscaled_width), int(f.frame_height_minus_1) + 1)
        picture = self._request(queues, req.buffer, av1_request_controls(req), self.number,
                                key, visible=visible)
        slots = [int(ts) for ts in f.reference_frame_ts]
        for i in range(len(slots)):
            if f.refresh_frame_flags >> i & 1:
                slots[i] = req.timestamp
        if picture is not None:
            self.pictures[req.timestamp] = picture
        self.pictures = {ts: p for ts, p in self.pictures.items() if ts in slots}
        if picture is None:
            return
        if f.flags & C.V4L2_AV1_FRAME_FLAG_SHOW_FRAME:
            self._output(picture)
        else:
            self.stats.hidden += 1

    def _show_again(self, index: int, ev: ShowExisting) -> None:
        self.stats.shown_again += 1
        picture = self.pictures.get(ev.timestamp)
        if picture is None:
            self.stats.errors.append(self.number)
            self.warn(f"packet {index}: show_existing_frame of slot {ev.slot}, which holds "
                      "no decoded picture")
            return
        self._output(picture)

