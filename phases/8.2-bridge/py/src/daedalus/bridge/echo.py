"""The PING handler: answers every PING with the same bytes.

Registered in the ``daedalus.handlers`` entry-point group as ``ping``; the
kernel's debugfs ping file (and ``daedalus-v4l2 ping``) drives it.
"""

from __future__ import annotations

from typing import ClassVar

from daedalus.proto import Header, MsgType


class PingHandler:
    OPCODES: ClassVar[tuple[int, ...]] = (MsgType.PING,)
    PHASE: ClassVar[tuple[int, int]] = (8, 2)
    NAME: ClassVar[str] = "ping"

    def handle(self, header: Header, payload: bytes) -> tuple[int, bytes]:
        return 0, payload
