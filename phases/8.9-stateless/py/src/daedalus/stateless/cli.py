"""``daedalus-v4l2 decode-stateless FILE``: decode through the stateless node from our own parser.

FILE (VP9 or AV1 in IVF, H.264 Annex B, AV1 as OBUs) is read with phase 8.3's
readers, and each frame goes to the stateless node (``--device``, default:
the node whose card is ``daedalus-v4l2-stateless``) in its own media
request, allocated on its media device (``--media``, default: the
/dev/mediaN whose topology holds the node), with the codec's controls filled
from daedalus.stateless's parsers (client.py: VP9's ``VP9_FRAME``, H.264's
SPS / PPS / scaling matrix / ``DECODE_PARAMS`` with the DPB by timestamp;
client_av1.py: AV1's sequence, frame and tile-group controls). No GStreamer
involved: the path is tested on its own.

The shown pictures (hidden frames are decoded but not output; a re-shown
frame shows a kept picture again) are written to ``--output`` tightly packed
NV12 (P010 for 10-bit) at the frame size, as ``ffmpeg -f rawvideo`` writes
them. One summary line on stdout::

    decode-stateless: FILE: 30 frames (1 hidden), 320x240, 41.2 fps, 31 requests, 0 errors -> OUT

``--compare`` then decodes FILE with Debian's ffmpeg (daedalus.m2m.reference)
and prints ``byte-exact: yes`` or ``byte-exact: no (first difference at byte
N, frame F)``. Exit statuses are ``daedalus-v4l2 decode``'s (listed in
--help), and so is how a decode ends (daedalus.m2m.cli.decode_outcome).
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from pathlib import Path

from daedalus.m2m.cli import compare_with_ffmpeg, decode_outcome, positive, seconds
from daedalus.m2m.status import DecodeExit, epilog
from daedalus.m2m.v4l2 import (
    DEFAULT_BUFFERS,
    DEFAULT_TIMEOUT,
    DecodeError,
    DecodeTimeout,
    Frame,
    M2MNode,
    NotADecoder,
    StreamRefused,
    packets_of,
)
from daedalus.stateless.client import (
    StatelessStats,
    decode_for_codec,
    find_media_node,
    find_stateless_node,
)

PROG = "daedalus-v4l2 decode-stateless"
log = logging.getLogger("daedalus.stateless.decode")


def format_summary(path: str, out: str | None, stats: StatelessStats) -> str:
    sizes = ", ".join(f"{w}x{h}" for w, h in stats.sizes) or "no picture"
    extra = [f"{stats.hidden} hidden"] if stats.hidden else []
    if stats.shown_again:
        extra.append(f"{stats.shown_again} shown again")
    more = f" ({', '.join(extra)})" if extra else ""
    return (f"decode-stateless: {path}: {stats.frames} frames{more}, {sizes}, "
            f"{stats.fps:.1f} fps, {stats.requests} requests, {len(stats.errors)} errors"
            + (f" -> {out}" if out else ""))


class _Collect:
    """Keeps the pictures, for OUT and --compare (the clips are small)."""

    def __init__(self) -> None:
        self.pictures: list[bytes] = []

    def __call__(self, frame: Frame) -> None:
        self.pictures.append(frame.data)


class StatelessDecodeCommand:
    NAME = "decode-stateless"
    HELP = ("decode a VP9, H.264 or AV1 file through the V4L2 stateless decoder node "
            "(media requests, controls filled by daedalus's own parser) into raw NV12 "
            "(P010 for 10-bit), optionally compared with ffmpeg byte for byte")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        parser.epilog = epilog()
        parser.add_argument("file", metavar="FILE",
                            help="VP9 or AV1 in IVF, H.264 Annex B, AV1 OBUs")
        parser.add_argument("-o", "--output", metavar="OUT.nv12",
                            help="where the shown frames go (tightly packed NV12, P010 for 10-bit)")
        parser.add_argument("--device", metavar="/dev/videoN",
                            help="the stateless node (default: the daedalus-v4l2-stateless "
                                 "node)")
        parser.add_argument("--media", metavar="/dev/mediaN",
                            help="its media device (default: the one whose topology holds "
                                 "the node)")
        parser.add_argument("--buffers", type=positive, default=DEFAULT_BUFFERS, metavar="N",
                            help="buffers per queue (default: %(default)s)")
        parser.add_argument("--timeout", type=seconds, default=DEFAULT_TIMEOUT,
                            metavar="SECONDS",
                            help="how long one request may take (default: %(default)g)")
        parser.add_argument("--compare", action="store_true",
                            help="compare the frames byte for byte with /usr/bin/ffmpeg's "
                                 "decode (-pix_fmt nv12)")

    def run(self, args: argparse.Namespace) -> int:
        status, message = self._run(args)
        if message:
            print(f"{PROG}: {message}", file=sys.stderr)
        return int(status)

    def _run(self, args: argparse.Namespace) -> tuple[DecodeExit, str | None]:
        from daedalus.parse.readers import ReaderError

        path: str = args.file
        try:
            codec, _width, _height, packets = packets_of(path)
        except ReaderError as exc:
            return DecodeExit.UNREADABLE, str(exc)
        except OSError as exc:
            return DecodeExit.UNREADABLE, f"{path}: {exc.strerror or exc}"
        try:
            decode_class = decode_for_codec(codec)
        except (NotImplementedError, ValueError) as exc:
            return DecodeExit.REFUSED, f"{path}: {exc}"
        try:
            device = Path(args.device) if args.device else find_stateless_node()
            media = Path(args.media) if args.media else find_media_node(device)
        except OSError as exc:
            return DecodeExit.NO_DEVICE, ("cannot find the stateless node or its media "
                                          f"device: {exc.strerror or exc}")

        def warn(text: str) -> None:
            print(f"{PROG}: {text}", file=sys.stderr, flush=True)

        collect = _Collect()
        failure: tuple[DecodeExit, str | None] | None = None
        try:
            node = M2MNode(device)
        except OSError as exc:
            return DecodeExit.NO_DEVICE, f"cannot open {device}: {exc.strerror or exc}"
        try:
            media_fd = os.open(media, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            node.close()
            return DecodeExit.NO_DEVICE, f"cannot open {media}: {exc.strerror or exc}"
        decode = decode_class(node, media_fd, packets, collect, buffers=args.buffers,
                              timeout=args.timeout, log=log.debug, warn=warn)
        try:
            decode.run()
        except NotADecoder as exc:
            failure = DecodeExit.NO_DEVICE, str(exc)
        except StreamRefused as exc:
            failure = DecodeExit.REFUSED, f"{path}: {exc}"
        except DecodeTimeout as exc:
            failure = DecodeExit.TIMEOUT, f"{device}: {exc}"
        except DecodeError as exc:
            failure = DecodeExit.FAILED, f"{device}: {exc}"
        except ReaderError as exc:
            failure = DecodeExit.UNREADABLE, str(exc)
        except OSError as exc:
            name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            failure = DecodeExit.FAILED, (f"{device}: V4L2 / request call failed: "
                                          f"{exc.strerror or exc} ({name})")
        finally:
            os.close(media_fd)
            node.close()
        stats = decode.stats
        got = b"".join(collect.pictures)
        if args.output:
            try:
                Path(args.output).write_bytes(got)
            except OSError as exc:
                return DecodeExit.FAILED, f"{args.output}: {exc.strerror or exc}"
        print(format_summary(path, args.output, stats), flush=True)
        ended = decode_outcome(failure, stats.frames, len(stats.errors), device)
        if ended is not None:
            return ended
        if args.compare:
            return compare_with_ffmpeg(path, stats.pixfmts, got, stats.frame_bytes)
        return DecodeExit.OK, None

