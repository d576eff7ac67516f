"""daedalusd against a stand-in kernel, in one process (for tests and tools).

The module's chardev gives the daemon one message per read(2) and per
write(2); a SEQPACKET socket pair does the same, so ``serve_against`` runs
``serve`` on one end while *kernel*, a coroutine, plays the module on the
other.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from daedalus.dispatch.daemon import DEFAULT_IN_FLIGHT, serve
from daedalus.dispatch.registry import Registry

T = TypeVar("T")


async def serve_against(kernel: Callable[[socket.socket], Awaitable[T]],
                        handlers: Registry | Iterable[object], *, timeout: float = 20.0,
                        stop_timeout: float = 5.0,
                        max_in_flight: int = DEFAULT_IN_FLIGHT) -> tuple[T, int]:
    """Serve *handlers* while *kernel* (given its non-blocking end of the
    pair) runs, at most *timeout* s; then stop the daemon. Returns what
    *kernel* returned and the daemon's exit status."""
    daemon_end, kernel_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with daemon_end, kernel_end:
        kernel_end.setblocking(False)
        stop = asyncio.Event()
        served = asyncio.create_task(serve(daemon_end.fileno(), handlers, stop=stop,
                                           max_in_flight=max_in_flight))
        try:
            result = await asyncio.wait_for(kernel(kernel_end), timeout)
        finally:
            stop.set()
        return result, await asyncio.wait_for(served, stop_timeout)
