"""The exit statuses of ``daedalus-v4l2 decode``: one per outcome, defined here only.

The command's ``--help`` lists them (``epilog()``) and so does
docs/content/reference/cli.md (a host test checks that the two agree).
"""

from __future__ import annotations

import textwrap
from enum import IntEnum


class DecodeExit(IntEnum):
    """What ``daedalus-v4l2 decode`` exits with."""

    OK = 0
    ERRORS = 1
    USAGE = 2
    MISMATCH = 3
    REFUSED = 4
    UNREADABLE = 5
    TIMEOUT = 6
    NO_DEVICE = 7
    FAILED = 8

    @property
    def meaning(self) -> str:
        return MEANINGS[self]


MEANINGS: dict[DecodeExit, str] = {
    DecodeExit.OK: "every packet decoded, no buffer in error (and with --compare: "
                     "byte-exact with ffmpeg)",
    DecodeExit.ERRORS: "frames were decoded, but some buffers came back in error",
    DecodeExit.USAGE: "bad command line",
    DecodeExit.MISMATCH: "--compare: decoded without errors, but not byte-exact with "
                           "ffmpeg",
    DecodeExit.REFUSED: "nothing decoded: the node does not offer the codec, stopped "
                          "the stream (a pixel layout it does not deliver, e.g. 4:4:4 "
                          "chroma or 10-bit on an NV12 node: the line names it), returned "
                          "every buffer in error, grants no OUTPUT buffer as large as the "
                          "largest packet, or the stream holds no picture",
    DecodeExit.UNREADABLE: "FILE cannot be read: missing, empty, not IVF / H.264 Annex-B "
                             "/ AV1 OBU, or malformed",
    DecodeExit.TIMEOUT: "nothing moved for --timeout seconds",
    DecodeExit.NO_DEVICE: "no decoder node (or it cannot be opened, or is not a "
                            "memory-to-memory decoder), or daedalusd is not connected "
                            "(read from the module's debugfs, as root)",
    DecodeExit.FAILED: "any other failure: OUT cannot be written, an unexpected V4L2 "
                         "error, ffmpeg (--compare) failed",
}


def epilog() -> str:
    """The exit statuses as the command's --help shows them."""
    width = max(len(s.name) for s in DecodeExit)
    lines = ["exit status:"]
    for status in DecodeExit:
        head = f"  {status.value}  {status.name:<{width}}  "
        lines += textwrap.wrap(status.meaning, 79, initial_indent=head, break_on_hyphens=False,
                               subsequent_indent=" " * len(head))
    return "\n".join(lines)
