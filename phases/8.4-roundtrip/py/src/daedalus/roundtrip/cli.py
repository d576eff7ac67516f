"""``daedalus-v4l2 roundtrip FILE``: decode a stream kernel -> daedalusd -> kernel.

FILE (VP9 or AV1 in IVF, H.264 Annex-B, AV1 OBU) is read with phase 8.3's
readers, one packet per frame / access unit / temporal unit. Each packet
goes to the kernel's debugfs decode file (default
/sys/kernel/debug/daedalus-v4l2/decode) as one REQ_DECODE: write(2) of a
struct daedalus_decode_req (stream_id 0: the kernel fills it in; timestamp
= the packet's index) followed by the packet, which returns once daedalusd
has answered; pread(2) then returns the RESP_FRAME. A last request with
DAEDALUS_DECODE_FLUSH drains the decoder, and closing the file sends
CLOSE_STREAM. The open file is the stream.

Output, one line per decoded frame in output order, then one per error::

       0  320x240  nv12  fnv1a64=5a0c6b2c31e8d3f4
    error  packet 7: EILSEQ: invalid bitstream: Invalid data found when processing input

The exit status is 0 when every request went through and no answer was an
error. ``--local`` runs the same DecodeHandler inside this process instead
(no kernel, no daemon): the reference the kernel path is compared with, and
useful where no module is loaded.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TextIO

from daedalus.proto import (
    DECODE_FLUSH,
    DECODE_REQ_SIZE,
    MAGIC,
    MAX_PAYLOAD,
    VERSION,
    Codec,
    FrameInfo,
    FrameResp,
    Header,
    MsgType,
    ProtocolError,
    codecs,
    pack_decode_req,
    parse_decode_req,
    parse_frame_resp,
    validate_frame_resp,
)

if TYPE_CHECKING:
    from daedalus.parse.readers import Packet
    from daedalus.roundtrip.decode import DecodeHandler

DEFAULT_DEBUGFS = "/sys/kernel/debug/daedalus-v4l2/decode"
READ_SIZE = 65536  # the RESP_FRAME of one round trip is far smaller
MAX_BITSTREAM = MAX_PAYLOAD - DECODE_REQ_SIZE
LOCAL_NOTE = ("--local: decoding in this process with DecodeHandler; the kernel module and "
              "daedalusd are NOT exercised")

HINTS = {
    errno.ENOTCONN: "no daemon connected (ENOTCONN): start daedalusd",
    errno.ETIMEDOUT: "the daemon did not answer in time (ETIMEDOUT): is daedalusd stuck? "
                     "see its log",
    errno.EIO: "the daemon could not serve the request (EIO): see daedalusd's log (is a "
               "phase 8.4 daedalusd with the decode handler running?)",
    errno.EINVAL: "the kernel refused the request (EINVAL)",
    errno.ENOENT: "no such file (ENOENT): is debugfs mounted and a daedalus_v4l2 module of "
                  "phase 8.4 or later loaded?",
    errno.EACCES: "permission denied (EACCES): debugfs needs root",
    errno.EPERM: "operation not permitted (EPERM): debugfs needs root",
}


class RoundtripError(Exception):
    """A request failed; the message is one line for the user."""


def explain(exc: OSError) -> str:
    if exc.errno in HINTS:
        return HINTS[exc.errno]
    name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return f"{exc.strerror or 'error'} ({name})"


def errno_name(code: int) -> str:
    return errno.errorcode.get(code, str(code))


class Transport(Protocol):
    """Where requests go: the kernel's debugfs file or an in-process handler."""

    where: str

    def round_trip(self, request: bytes) -> bytes:
        """One REQ_DECODE payload (stream_id 0) in, its RESP_FRAME payload out."""
        ...

    def close(self) -> None: ...


class KernelTransport:
    """The debugfs decode file: one open file is one kernel stream."""

    def __init__(self, path: str) -> None:
        self.where = f"through {path}"
        self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)

    def round_trip(self, request: bytes) -> bytes:
        written = os.write(self.fd, request)
        if written != len(request):
            raise RoundtripError(f"short write: {written} of {len(request)} bytes")
        return os.pread(self.fd, READ_SIZE, 0)

    def close(self) -> None:
        os.close(self.fd)  # the kernel sends CLOSE_STREAM


class LocalTransport:
    """DecodeHandler in this process, called the way daedalusd calls it."""

    STREAM_ID = 1

    def __init__(self, handler: DecodeHandler | None = None) -> None:
        from daedalus.roundtrip.decode import DecodeHandler  # PyAV: only when decoding here

        self.where = "in-process (--local, the kernel is not exercised)"
        self.handler = handler if handler is not None else DecodeHandler()
        self.cookie = 0

    def _header(self, type_: MsgType, payload: bytes) -> Header:
        self.cookie += 1
        return Header(magic=MAGIC, version=VERSION, type=type_, cookie=self.cookie,
                      payload_len=len(payload), flags=0, status=0)

    def round_trip(self, request: bytes) -> bytes:
        req, bitstream = parse_decode_req(request)  # what the kernel does: fill the stream id
        payload = pack_decode_req(req.codec, bitstream, stream_id=self.STREAM_ID,
                                  flags=req.flags, timestamp=req.timestamp,
                                  bitstream_len=req.bitstream_len, reserved=req.reserved)
        status, answer = self.handler.handle(self._header(MsgType.DECODE, payload), payload)
        if status:
            raise OSError(errno.EIO, f"the handler answered {errno_name(status)}: "
                                     f"{answer.decode(errors='replace')}")
        return answer

    def close(self) -> None:
        self.handler.close_stream(self.STREAM_ID)  # what daedalusd does on CLOSE_STREAM


@dataclass
class Result:
    packets: int = 0
    frames: list[FrameInfo] = field(default_factory=list)
    errors: list[tuple[str, FrameResp]] = field(default_factory=list)  # (what, response)
    skipped: list[str] = field(default_factory=list)  # packets never sent

    @property
    def ok(self) -> bool:
        return not self.errors and not self.skipped


def format_frame(index: int, frame: FrameInfo) -> str:
    return (f"{index:4d}  {frame.width}x{frame.height}  {frame.pixfmt_name}  "
            f"fnv1a64={frame.digest:016x}")


def format_error(what: str, resp: FrameResp) -> str:
    return f"error  {what}: {errno_name(resp.error)}: {resp.text}"


def _exchange(transport: Transport, request: bytes, what: str) -> FrameResp:
    try:
        answer = transport.round_trip(request)
    except OSError as exc:
        raise RoundtripError(f"{what}: {explain(exc)}") from exc
    try:
        resp = parse_frame_resp(answer)
        validate_frame_resp(resp)
    except ProtocolError as exc:
        raise RoundtripError(f"{what}: malformed RESP_FRAME ({len(answer)} bytes): {exc}") from exc
    return resp


def run_roundtrip(packets: Iterable[Packet], codec: Codec, transport: Transport,
                  out: TextIO | None = None) -> Result:
    """Send every packet (timestamp = its index), then a FLUSH; print each
    frame and error to *out* (default: stdout) as it comes. Raises
    RoundtripError when a request fails."""
    result = Result()
    out = sys.stdout if out is None else out

    def report(what: str, resp: FrameResp) -> None:
        if not resp.ok:
            result.errors.append((what, resp))
            print(format_error(what, resp), file=out, flush=True)
            return
        for frame in resp.frames:
            print(format_frame(len(result.frames), frame), file=out, flush=True)
            result.frames.append(frame)

    for packet in packets:
        result.packets += 1
        what = f"packet {packet.index}"
        if len(packet.data) > MAX_BITSTREAM:
            result.skipped.append(what)
            print(f"error  {what}: not sent: {len(packet.data)} bytes exceed the "
                  f"{MAX_BITSTREAM} a request holds", file=out, flush=True)
            continue
        request = pack_decode_req(codec, packet.data, timestamp=packet.index)
        report(what, _exchange(transport, request, what))
    report("flush", _exchange(transport, pack_decode_req(codec, flags=DECODE_FLUSH), "flush"))
    return result


class RoundtripCommand:
    NAME = "roundtrip"
    HELP = ("decode a VP9 / H.264 / AV1 stream kernel -> daedalusd -> kernel and print each "
            "frame's FNV-1a 64 digest")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("file", metavar="FILE",
                            help="VP9 or AV1 in IVF, H.264 Annex-B, or an AV1 OBU stream")
        parser.add_argument("--debugfs", default=DEFAULT_DEBUGFS, metavar="PATH",
                            help="the module's decode file (default: %(default)s)")
        parser.add_argument("--local", action="store_true",
                            help="decode in this process with the daemon's DecodeHandler, "
                                 "without the kernel (does NOT exercise the kernel)")

    def run(self, args: argparse.Namespace) -> int:
        from daedalus.parse.readers import ReaderError, open_stream

        path: str = args.file
        prog = "daedalus-v4l2 roundtrip"
        try:
            info, packets = open_stream(path)
        except (ReaderError, OSError) as exc:
            print(f"{prog}: {path}: {exc}", file=sys.stderr)
            return 1
        desc = codecs.BY_NAME.get(info.codec)
        if desc is None:
            print(f"{prog}: {path}: codec {info.codec!r} is not decoded here", file=sys.stderr)
            return 1
        codec = desc.codec
        if args.local:
            print(f"{prog}: {LOCAL_NOTE}", file=sys.stderr)
            if not getattr(args, "verbose", False):  # the error lines say it already
                logging.getLogger("daedalus.roundtrip").setLevel(logging.ERROR)
        transport: Transport
        try:
            transport = LocalTransport() if args.local else KernelTransport(args.debugfs)
        except OSError as exc:
            print(f"{prog}: cannot open {args.debugfs}: {explain(exc)}", file=sys.stderr)
            return 1
        try:
            result = run_roundtrip(packets, codec, transport)
        except (RoundtripError, ReaderError) as exc:
            print(f"{prog}: {exc}", file=sys.stderr)
            return 1
        finally:
            transport.close()
        print(f"{prog}: {path}: {info.codec} ({info.container}), {result.packets} packets, "
              f"{len(result.frames)} frames, {len(result.errors)} errors, "
              f"{len(result.skipped)} not sent; {transport.where}", file=sys.stderr)
        return 0 if result.ok else 1
