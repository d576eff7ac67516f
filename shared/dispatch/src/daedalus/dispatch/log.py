"""Logging for daedalusd: stderr lines prefixed with their syslog priority.

systemd's journal reads ``<N>`` at the start of a line on a service's stderr
as the message's priority (sd-daemon(3)), so ``<3>daedalusd: ...`` shows up as
an error in ``journalctl -p err``; on a terminal the prefix is still readable.
Every line of a multi-line message (a traceback) carries the prefix.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

# sd-daemon(3): SD_EMERG 0 ... SD_DEBUG 7. logging has no NOTICE (5).
SD_CRIT, SD_ERR, SD_WARNING, SD_INFO, SD_DEBUG = 2, 3, 4, 6, 7


def priority(levelno: int) -> int:
    """The syslog priority of a logging level."""
    if levelno >= logging.CRITICAL:
        return SD_CRIT
    if levelno >= logging.ERROR:
        return SD_ERR
    if levelno >= logging.WARNING:
        return SD_WARNING
    if levelno >= logging.INFO:
        return SD_INFO
    return SD_DEBUG


class JournalFormatter(logging.Formatter):
    """``<N>ident: message``, one prefix per line."""

    def __init__(self, ident: str = "daedalusd") -> None:
        super().__init__("%(message)s")
        self.ident = ident

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>{self.ident}: "
        return "\n".join(prefix + line for line in (super().format(record).splitlines() or [""]))


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever sys.stderr is at the time (pytest's capsys swaps it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.setStream(sys.stderr)
        super().emit(record)


def setup_logging(verbose: bool = False, *, ident: str = "daedalusd") -> logging.Handler:
    """Send all logging to stderr in journal form; debug if *verbose*.

    Replaces a handler an earlier call installed, leaves others alone.
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)
    handler = _StderrHandler()
    handler.setFormatter(JournalFormatter(ident))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    return handler
