"""``daedalus-v4l2 decode FILE -o OUT.yuv``: decode through the V4L2 node like any application.

FILE (VP9 in IVF, H.264 Annex-B, AV1 in IVF or as a low-overhead OBU stream)
is read with phase 8.3's readers, one packet per OUTPUT buffer (an AV1
packet is one temporal unit), its timestamp the packet's index. The coded
format is the codec's V4L2 fourcc in daedalus.proto.codecs (VP90, H264,
AV01); a node whose ENUM_FMT(OUTPUT) does not list it (AV1 before phase
8.6) is REFUSED: "... does not offer the coded format AV01 (it offers VP90,
H264)". The node (``--device``, default: the daedalus-v4l2 node found by
its card name) is driven through the stateful decoder sequence of
dev-decoder.rst (see v4l2.py), and every decoded picture is written to OUT
tightly packed at its own size, in the CAPTURE format the node gives
(G_FMT after SOURCE_CHANGE): NV12 for an 8-bit stream, and on phase 8.8's
node P010 for a 10-bit one, NV16 / NV24 for 8-bit 4:2:2 / 4:4:4: the
visible rectangle's luma rows, then its interleaved CbCr rows (half as
many as luma rows for NV12 and P010, as many for NV16 and NV24); P010 has
two bytes a sample, little-endian, the value in the upper 10 bits (what
``ffmpeg -pix_fmt p010le / nv16 / nv24 -f rawvideo`` writes).

One summary line on stdout; the CAPTURE format follows OUT when it is not
NV12 (the line of an 8-bit stream is as it ever was)::

    decode: FILE: 30 frames, 320x240, 212.5 fps, 0 errors -> OUT
    decode: FILE: 10 frames, 320x240, 48.0 fps, 0 errors -> OUT (P010)

Buffer memory: the node offers MMAP and DMABUF (no USERPTR) on both
queues, and VIDIOC_EXPBUF of its MMAP buffers. ``--capture-io`` says how
CAPTURE buffers are provided: ``mmap`` (the default: MMAP, read through the
node's mappings), ``export`` (MMAP, each buffer exported with EXPBUF and the
frames read through the dma-bufs) or ``import`` (DMABUF: buffers allocated by a
second open of the same node, exported there and imported here; see
v4l2.ExportingContext). ``--output-io dmabuf`` imports the OUTPUT buffers the
same way; the bitstream is written through the dma-bufs. The CPU reads and
writes dma-bufs between DMA_BUF_IOCTL_SYNC START and END.

OUTPUT buffers are asked as large as FILE's largest packet (found by
reading FILE once before the decode; S_FMT's sizeimage, which the node
clamps to the coded picture's NV12 size, at least 1 MiB, at most 32 MiB).
A packet larger than what the node grants is REFUSED before anything is
queued, in one line (a decode that skipped it would lose the frames that
refer to it)::

    daedalus-v4l2 decode: FILE: packet 3 is 1048577 bytes, more than an OUTPUT
    buffer holds: /dev/video0 grants at most 1048576 bytes for 128x96 VP90;
    nothing was queued

The picture size S_FMT is given comes from the IVF header; for an H.264
Annex-B or AV1 OBU file the tool does not read it, and asks for 320x240
(so at most 1 MiB packets).

Buffers in error are reported on stderr as they come. ``--compare`` then
decodes FILE with Debian's ffmpeg (reference.py; ``-pix_fmt nv12``, or
``p010le`` / ``nv16`` / ``nv24`` when the frames came as P010 / NV16 /
NV24) and prints ``byte-exact: yes`` or
``byte-exact: no (first difference at byte N, frame F)``.

Exit status: one per outcome (status.py: DecodeExit, listed in --help):
0 when every packet was decoded without a buffer in error (and, with
--compare, byte-exact); otherwise what went wrong, most specific first: an
unreadable FILE, no device or no daemon, a refused stream, a timeout (each
wait is bounded by ``--timeout``), buffers in error, a mismatch. Each
failure is one line on stderr.

A stream the node stops (dev-decoder.rst's fatal state, EIO: the daemon
refused its 4:2:2 / 4:4:4 chroma (before phase 8.8; from it, deeper than
8 bits of it), or its 10-bit frames need P010 on a node that offers NV12
only) is REFUSED, and the line names the property, probed
from FILE itself (unsupported.py), in one line::

    daedalus-v4l2 decode: FILE: refused: H.264 High 4:4:4 Predictive, yuv444p
    (4:4:4 chroma): the node's CAPTURE format NV12 carries 8-bit 4:2:0 only
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import BinaryIO

from daedalus.m2m.status import DecodeExit, epilog
from daedalus.m2m.v4l2 import (
    DEFAULT_BUFFERS,
    DEFAULT_TIMEOUT,
    DecodeError,
    DecodeTimeout,
    ExportingContext,
    Frame,
    M2MNode,
    NodeStopped,
    NotADecoder,
    PacketTooLarge,
    StatefulDecode,
    Stats,
    StreamRefused,
    daemon_connected,
    largest_packet,
    packets_of,
)
from daedalus.proto import codecs

PROG = "daedalus-v4l2 decode"
CAPTURE_IO = ("mmap", "export", "import")
OUTPUT_IO = ("mmap", "dmabuf")
log = logging.getLogger("daedalus.m2m.decode")


def errno_name(code: int | None) -> str:
    return errno.errorcode.get(code or 0, str(code))


def format_summary(path: str, out: str, stats: Stats) -> str:
    sizes = ", ".join(f"{w}x{h}" for w, h in stats.sizes) or "no picture"
    detail = []
    if stats.output_errors:
        detail.append(f"{len(stats.output_errors)} OUTPUT")
    if stats.capture_errors:
        detail.append(f"{len(stats.capture_errors)} CAPTURE")
    if stats.skipped:
        detail.append(f"{len(stats.skipped)} packets skipped")
    errors = f"{stats.errors} errors" + (f" ({', '.join(detail)})" if detail else "")
    formats = f" ({', '.join(stats.pixfmts)})" if stats.pixfmts not in ([], ["NV12"]) else ""
    return (f"decode: {path}: {stats.frames} frames, {sizes}, {stats.fps:.1f} fps, {errors} "
            f"-> {out}{formats}")


def refusal(path: str, device: Path, node: M2MNode, exc: NodeStopped) -> str:
    """The line for a stream the node stopped: which property of FILE the
    node's CAPTURE formats do not carry (probed from the file), else the
    node's side of it."""
    from daedalus.m2m.unsupported import why_refused
    from daedalus.skeleton.v4l2dev import CAPTURE

    why = why_refused(path, node.formats(CAPTURE))  # ENUM_FMT works in the fatal state
    return f"{path}: refused: {why}" if why is not None else f"{device}: {exc}"


class _Writer:
    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.frame_bytes: list[int] = []

    def __call__(self, frame: Frame) -> None:
        self.out.write(frame.data)
        self.frame_bytes.append(len(frame.data))


def positive(text: str) -> int:
    """argparse type: a whole number >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def seconds(text: str) -> float:
    """argparse type: a number of seconds > 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"not a number of seconds > 0: {text}")
    return value


Outcome = tuple[DecodeExit, str | None]
"""An exit status and the one line that explains a failure (None: said already)."""


def decode_outcome(failure: Outcome | None, frames: int, errors: int,
                   device: Path) -> Outcome | None:
    """How a decode that ran ends before any comparison (None: it went well): its
    *failure*; REFUSED when no frame came out and ERRORS when buffers came back in
    error (the warnings and the summary said why). REFUSED, ERRORS and TIMEOUT become
    NO_DEVICE when daedalusd is not connected: the buffers in error (or the silence)
    are its absence. Shared by ``decode`` and phase 8.9's ``decode-stateless``."""
    if failure is None and frames == 0:
        failure = DecodeExit.REFUSED, None
    elif failure is None and errors:
        failure = DecodeExit.ERRORS, None
    if failure is None:
        return None
    status, message = failure
    if (status in (DecodeExit.REFUSED, DecodeExit.ERRORS, DecodeExit.TIMEOUT)
            and daemon_connected() is False):
        if message is None or "daedalusd" not in message:
            message = f"{device}: daedalusd is not connected: start it"
        return DecodeExit.NO_DEVICE, message
    return status, message


def compare_with_ffmpeg(path: str, pixfmts: Sequence[str], got: bytes,
                        frame_bytes: Sequence[int]) -> Outcome:
    """``--compare``: *got* (frames of *frame_bytes* bytes in the CAPTURE formats
    *pixfmts*) against Debian's ffmpeg's decode of *path*, with the byte-exact line
    printed; MISMATCH is said by that line."""
    from daedalus.m2m.reference import ReferenceError, compare, pix_fmt_for, reference_output

    try:
        want = reference_output(path, pix_fmt_for(pixfmts))
    except ReferenceError as exc:
        return DecodeExit.FAILED, str(exc)
    result = compare(got, want, frame_bytes)
    print(result.describe(), flush=True)
    return (DecodeExit.OK if result.equal else DecodeExit.MISMATCH), None


class DecodeCommand:
    NAME = "decode"
    HELP = ("decode a VP9 / H.264 / AV1 file through the V4L2 stateful decoder node into raw "
            "NV12, or P010 / NV16 / NV24 for 10-bit / 4:2:2 / 4:4:4 (optionally compared with "
            "ffmpeg byte for byte)")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        parser.epilog = epilog()
        parser.add_argument("file", metavar="FILE",
                            help="VP9 in IVF, H.264 Annex-B, or AV1 in IVF or as a low-overhead "
                                 "OBU stream (where the node offers AV01)")
        parser.add_argument("-o", "--output", required=True, metavar="OUT.yuv",
                            help="where the decoded frames go (tightly packed NV12, or P010 / "
                                 "NV16 / NV24 for a 10-bit / 4:2:2 / 4:4:4 stream)")
        parser.add_argument("--device", metavar="/dev/videoN",
                            help="the decoder node (default: the daedalus-v4l2 node)")
        parser.add_argument("--buffers", type=positive, default=DEFAULT_BUFFERS, metavar="N",
                            help="buffers per queue (default: %(default)s)")
        parser.add_argument("--timeout", type=seconds, default=DEFAULT_TIMEOUT,
                            metavar="SECONDS",
                            help="give up when nothing moves for this long "
                                 "(default: %(default)g)")
        parser.add_argument("--compare", action="store_true",
                            help="compare OUT byte for byte with /usr/bin/ffmpeg's decode "
                                 "(-pix_fmt nv12, or p010le / nv16 / nv24 for P010 / NV16 / "
                                 "NV24 frames)")
        parser.add_argument("--capture-io", choices=CAPTURE_IO, default="mmap",
                            help="CAPTURE buffers (the node offers MMAP and DMABUF memory, no "
                                 "USERPTR): mmap = MMAP buffers read through the node's "
                                 "mappings; export = MMAP buffers exported with VIDIOC_EXPBUF "
                                 "and read through the dma-bufs; import = DMABUF buffers "
                                 "exported by a second context of the same node "
                                 "(default: %(default)s)")
        parser.add_argument("--output-io", choices=OUTPUT_IO, default="mmap",
                            help="OUTPUT buffers: mmap = MMAP; dmabuf = DMABUF buffers exported "
                                 "by a second context of the same node, the bitstream written "
                                 "through the dma-bufs (default: %(default)s)")

    def run(self, args: argparse.Namespace) -> int:
        status, message = self._run(args)
        if message:
            print(f"{PROG}: {message}", file=sys.stderr)
        return int(status)

    def _run(self, args: argparse.Namespace) -> tuple[DecodeExit, str | None]:
        """The exit status and the one line that explains a failure."""
        from daedalus.parse.readers import ReaderError
        from daedalus.skeleton.v4l2dev import find_node

        path: str = args.file
        try:
            largest = largest_packet(path)  # reads the whole file once: malformed is found now
            codec, width, height, packets = packets_of(path)
        except ReaderError as exc:
            return DecodeExit.UNREADABLE, str(exc)  # names the file
        except OSError as exc:
            return DecodeExit.UNREADABLE, f"{path}: {exc.strerror or exc}"
        desc = codecs.BY_NAME.get(codec)
        code = desc.fourcc if desc is not None else None
        if code is None:
            return DecodeExit.REFUSED, f"{path}: codec {codec!r} is not decoded here"
        try:
            device = Path(args.device) if args.device else find_node()
            node = M2MNode(device)
        except OSError as exc:
            where = args.device or "the daedalus-v4l2 node"
            return DecodeExit.NO_DEVICE, f"cannot open {where}: {exc.strerror or exc}"

        def warn(text: str) -> None:
            print(f"{PROG}: {text}", file=sys.stderr, flush=True)

        capture_io: str = args.capture_io
        output_io: str = args.output_io
        exporter: ExportingContext | None = None
        if capture_io == "import" or output_io == "dmabuf":
            try:
                exporter = ExportingContext(device)
            except OSError as exc:
                node.close()
                return DecodeExit.NO_DEVICE, (f"cannot open a second context of {device} to "
                                              f"export buffers from: {exc.strerror or exc}")

        failure: tuple[DecodeExit, str | None] | None = None
        try:
            with ExitStack() as stack:
                stack.enter_context(node)
                if exporter is not None:
                    stack.enter_context(exporter)  # closed after the decode's queues
                out = stack.enter_context(open(args.output, "wb"))
                writer = _Writer(out)
                decode = StatefulDecode(
                    node, code, packets, writer, buffers=args.buffers, timeout=args.timeout,
                    width=width, height=height, log=log.debug, warn=warn,
                    capture_export=capture_io == "export",
                    capture_from=exporter.capture if capture_io == "import" and exporter
                    else None,
                    output_from=exporter.output if output_io == "dmabuf" and exporter
                    else None, largest_packet=largest)
                try:
                    decode.run()
                except NotADecoder as exc:
                    failure = DecodeExit.NO_DEVICE, str(exc)
                except PacketTooLarge as exc:
                    failure = DecodeExit.REFUSED, f"{path}: {exc}"
                except NodeStopped as exc:
                    failure = DecodeExit.REFUSED, refusal(path, device, node, exc)
                except StreamRefused as exc:
                    failure = DecodeExit.REFUSED, f"{device}: {exc}"
                except DecodeTimeout as exc:
                    failure = DecodeExit.TIMEOUT, f"{device}: {exc}"
                except DecodeError as exc:
                    failure = DecodeExit.FAILED, f"{device}: {exc}"
                except ReaderError as exc:
                    failure = DecodeExit.UNREADABLE, str(exc)
                except OSError as exc:
                    failure = DecodeExit.FAILED, (
                        f"{device}: V4L2 call failed: {exc.strerror or exc} "
                        f"({errno_name(exc.errno)})")
        except OSError as exc:
            return DecodeExit.FAILED, f"{args.output}: {exc.strerror or exc}"
        stats = decode.stats
        print(format_summary(path, args.output, stats), flush=True)
        ended = decode_outcome(failure, stats.frames, stats.errors, device)
        if ended is not None:
            return ended
        if args.compare:
            return compare_with_ffmpeg(path, stats.pixfmts, Path(args.output).read_bytes(),
                                       writer.frame_bytes)
        return DecodeExit.OK, None
