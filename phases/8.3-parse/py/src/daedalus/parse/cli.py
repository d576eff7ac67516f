"""``daedalus-v4l2 parse FILE [--json]``: one line per frame, in decode order.

Columns: frame index, source packet, compressed bytes, K (keyframe) or -, S
(shown) or H (hidden), picture type, width x height, profile, bit depth, frame
qp (from the headers), block count and block qp min/mean/max (from FFmpeg's
VIDEO_ENC_PARAMS side data; "-" where the decoder exports none, e.g. AV1).
``--json`` prints one JSON object per frame instead (Frame.as_dict()).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from daedalus.parse.ffparse import Frame, parse


def format_frame(f: Frame) -> str:
    summary = f.block_summary()
    if f.blocks is None:
        blocks = "blocks -"
    elif summary is None:
        blocks = "blocks 0"
    else:
        blocks = (f"blocks {len(f.blocks)} qp {summary[0]}/{summary[1]:.1f}/{summary[2]}")
    qp = "-" if f.qp is None else str(f.qp)
    return (f"{f.index:5} pkt {f.packet:5} {f.size:8} B {'K' if f.keyframe else '-'}"
            f"{'S' if f.shown else 'H'} {f.pict_type:2} {f.width}x{f.height} "
            f"{f.profile} {f.bit_depth}-bit qp {qp} {blocks}")


class ParseCommand:
    NAME = "parse"
    HELP = "parse a VP9/AV1 IVF, H.264 Annex-B or AV1 OBU file with FFmpeg: frames and blocks"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("file", metavar="FILE", help="the stream")
        parser.add_argument("--json", action="store_true", help="JSON lines, one per frame")
        parser.add_argument("--no-blocks", action="store_true",
                            help="do not ask the decoder for block-level information")

    def run(self, args: argparse.Namespace) -> int:
        try:
            info, frames = parse(args.file, blocks=not args.no_blocks)
            if not args.json:
                size = f" {info.width}x{info.height}" if info.width else ""
                print(f"{args.file}: {info.codec} in {info.container}{size}")
            count = 0
            for f in frames:
                print(json.dumps(f.as_dict()) if args.json else format_frame(f))
                count += 1
        except BrokenPipeError:  # e.g. | head: stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        except OSError as exc:
            print(f"daedalus-v4l2 parse: {args.file}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        except ValueError as exc:  # ReaderError, ParseError
            print(f"daedalus-v4l2 parse: {exc}", file=sys.stderr)
            return 1
        if not args.json:
            print(f"{count} frames")
        return 0
