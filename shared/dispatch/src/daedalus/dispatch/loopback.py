"""daedalusd against a stand-in kernel, in one process (for tests and tools).

The module's chardev gives the daemon one message per read(2) and per
write(2); a SEQPACKET socket pair does the same, so ``serve_against`` runs
``serve`` on one end while *kernel*, a coroutine, plays the module on the
other.

``MemfdDevice`` stands in for the module's DAEDALUS_IOC_GET_DMABUF: a
handler attached to it (``attach_device``) gets memfds instead of the
application's dma-bufs, with the kernel's rules (an unknown cookie or index
is ENOENT, an OUTPUT buffer is read-only) and with the contents of a
non-coherent exporter: a buffer holds its bytes only between the handler's
DMA_BUF_SYNC_START and _END, and what the handler wrote counts only if it
was there at END, so a handler that reads or writes outside the brackets
gets garbage or loses its pixels.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from daedalus.dispatch.daemon import DEFAULT_IN_FLIGHT, serve
from daedalus.dispatch.device import (
    DMA_BUF_SYNC_END,
    DMA_BUF_SYNC_READ,
    DMA_BUF_SYNC_WRITE,
    Device,
    DmaBuf,
    DmaBufError,
)
from daedalus.dispatch.registry import Registry
from daedalus.proto import HDR_SIZE, MAX_PAYLOAD, Header, pack_header, parse_header

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


def serve_until_done(registry: Registry | Iterable[object],
                     kernel: Callable[[socket.socket], Awaitable[object]]) -> None:
    """``serve_against`` in a fresh event loop; the daemon must exit 0."""
    async def main() -> None:
        _, status = await serve_against(kernel, registry)
        assert status == 0, f"daedalusd exited {status}"

    asyncio.run(main())


async def send(sock: socket.socket, type_: int, cookie: int, payload: bytes) -> None:
    """The stand-in kernel queues one request (a header and *payload*)."""
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, pack_header(type_, cookie, len(payload)) + payload)


async def recv(sock: socket.socket, timeout: float = 10) -> tuple[Header, bytes]:
    """The next message the daemon wrote: its header and payload."""
    loop = asyncio.get_running_loop()
    data = await asyncio.wait_for(loop.sock_recv(sock, HDR_SIZE + MAX_PAYLOAD), timeout)
    return parse_header(data), data[HDR_SIZE:]


# --- a stand-in for DAEDALUS_IOC_GET_DMABUF ----------------------------------------

# What a buffer holds outside its syncs: before START | READ and after END
# (the CPU's view is stale), and where nothing was written under START | WRITE.
STALE_BYTE = 0x5A


@dataclass
class MemfdBuffer:
    """One buffer of a request's job, as the stand-in kernel keeps it: the
    memfd (named ``name``) and, for OUTPUT, the bytes it holds while synced."""

    memfd: int
    name: str
    size: int
    writable: bool
    data: bytes = b""          # OUTPUT: what the application queued (size bytes)
    written: bytes | None = None  # CAPTURE: the contents at END | WRITE


@dataclass
class MemfdEvent:
    """One thing a handler did with a stand-in dma-buf (``MemfdDevice.events``)."""

    what: str                  # "get", "map", "sync", "close"
    cookie: int
    index: int
    flags: int = 0             # sync: DMA_BUF_SYNC_* flags; map: 1 if for writing


class MemfdDmaBuf(DmaBuf):
    """A DmaBuf over a new fd of a stand-in buffer's memfd: mapped and closed
    for real, synced by the stand-in (a memfd has no DMA_BUF_IOCTL_SYNC)."""

    def __init__(self, fd: int, size: int, writable: bool, device: MemfdDevice, cookie: int,
                 index: int) -> None:
        super().__init__(fd, size, writable)
        self.device = device
        self.cookie = cookie
        self.index = index

    def map(self, write: bool | None = None) -> memoryview:
        view = super().map(write)
        self.device.record("map", self, int(not view.readonly))
        return view

    def sync(self, flags: int) -> None:
        self.device.record("sync", self, flags)
        self.device.synced(self.cookie, self.index, flags)

    def close(self) -> None:
        was_open = not self.closed
        super().close()  # (ends a sync left open first)
        if was_open:
            self.device.record("close", self)


@dataclass
class MemfdDevice(Device):
    """A Device whose DAEDALUS_IOC_GET_DMABUF is played by the test: buffers
    are memfds added per (cookie, index) with ``add_output`` / ``add_capture``.

    ``get_dmabuf`` opens a new fd of the buffer's memfd (read-only for
    OUTPUT), as the kernel hands out a new dma-buf fd per call; ``events``
    records every get, map, sync and close, ``dmabufs`` every DmaBuf handed
    out (``leaks`` lists the ones still open). ``fail`` makes the next
    get_dmabuf fail with that errno. ``given_up`` holds the cookies the
    kernel no longer waits for (``in_flight`` False; get_dmabuf still
    succeeds: the give-up came while the daemon read the buffer)."""

    buffers: dict[tuple[int, int], MemfdBuffer] = field(default_factory=dict)
    events: list[MemfdEvent] = field(default_factory=list)
    dmabufs: list[MemfdDmaBuf] = field(default_factory=list)
    fail: int | None = None
    given_up: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        super().__init__(-1)  # no real device: get_dmabuf below never calls ioctl

    def _add(self, cookie: int, index: int, size: int, writable: bool, data: bytes) -> int:
        if (cookie, index) in self.buffers:
            raise ValueError(f"cookie {cookie} already has buffer {index}")
        name = f"daedalus-dmabuf-{cookie}-{index}"
        memfd = os.memfd_create(name, os.MFD_CLOEXEC)
        os.ftruncate(memfd, size)
        self.buffers[cookie, index] = MemfdBuffer(memfd, name, size, writable, data)
        self._stale(cookie, index)
        return memfd

    def add_output(self, cookie: int, data: bytes, *, size: int | None = None,
                   index: int = 0) -> MemfdBuffer:
        """An OUTPUT buffer (read-only) of *size* bytes (default: len(data))
        holding *data* from its start while synced."""
        size = len(data) if size is None else size
        if size < len(data):
            raise ValueError(f"{len(data)} bytes do not fit a buffer of {size}")
        self._add(cookie, index, size, False, data + bytes(size - len(data)))
        return self.buffers[cookie, index]

    def add_capture(self, cookie: int, size: int, *, index: int = 0) -> MemfdBuffer:
        """A CAPTURE buffer (read-write) of *size* bytes."""
        self._add(cookie, index, size, True, b"")
        return self.buffers[cookie, index]

    def remove(self, cookie: int, index: int = 0) -> MemfdBuffer:
        """The buffer goes back to the application: its memfd is closed."""
        buffer = self.buffers.pop((cookie, index))
        os.close(buffer.memfd)
        return buffer

    def close_all(self) -> None:
        for cookie, index in list(self.buffers):
            self.remove(cookie, index)

    def record(self, what: str, buf: MemfdDmaBuf, flags: int = 0) -> None:
        self.events.append(MemfdEvent(what, buf.cookie, buf.index, flags))

    def leaks(self) -> list[MemfdDmaBuf]:
        """The DmaBufs handed out and not closed."""
        return [d for d in self.dmabufs if not d.closed]

    # -- the stand-in exporter's view of the contents ---------------------------

    def _stale(self, cookie: int, index: int) -> None:
        buffer = self.buffers[cookie, index]
        os.pwrite(buffer.memfd, bytes([STALE_BYTE]) * buffer.size, 0)

    def synced(self, cookie: int, index: int, flags: int) -> None:
        buffer = self.buffers.get((cookie, index))
        if buffer is None:
            raise DmaBufError(errno.EBADF, f"cookie {cookie} has no buffer {index} any more")
        if flags & DMA_BUF_SYNC_END:
            if flags & DMA_BUF_SYNC_WRITE:
                buffer.written = os.pread(buffer.memfd, buffer.size, 0)
            self._stale(cookie, index)
        elif flags & DMA_BUF_SYNC_READ:
            os.pwrite(buffer.memfd, buffer.data, 0)
        else:  # START | WRITE: what was written before is lost, the rest is stale
            self._stale(cookie, index)

    # -- DAEDALUS_IOC_IN_FLIGHT ----------------------------------------------------

    def in_flight(self, cookie: int) -> bool:
        if not self.attached:
            raise DmaBufError(errno.ENOTCONN, "the device is no longer attached")
        self.events.append(MemfdEvent("in_flight", cookie, 0, 0))
        return cookie not in self.given_up

    # -- DAEDALUS_IOC_GET_DMABUF ---------------------------------------------------

    def get_dmabuf(self, cookie: int, index: int = 0) -> DmaBuf:
        if not self.attached:
            raise DmaBufError(errno.ENOTCONN, "the device is no longer attached")
        if self.fail is not None:
            code, self.fail = self.fail, None
            raise DmaBufError(code, f"DAEDALUS_IOC_GET_DMABUF for cookie {cookie}, buffer "
                                    f"{index} failed: {os.strerror(code)}")
        buffer = self.buffers.get((cookie, index))
        if buffer is None:
            raise DmaBufError(errno.ENOENT, f"DAEDALUS_IOC_GET_DMABUF for cookie {cookie}, "
                                            f"buffer {index} failed: {os.strerror(errno.ENOENT)}")
        mode = os.O_RDWR if buffer.writable else os.O_RDONLY
        fd = os.open(f"/proc/self/fd/{buffer.memfd}", mode | os.O_CLOEXEC)
        dmabuf = MemfdDmaBuf(fd, buffer.size, buffer.writable, self, cookie, index)
        self.dmabufs.append(dmabuf)
        self.record("get", dmabuf)
        return dmabuf


def open_fds_of(name: str) -> int:
    """How many fds of this process are open on the memfd called *name*."""
    count = 0
    for entry in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{entry}")
        except OSError:  # (the fd listdir used, closed meanwhile)
            continue
        if target.startswith(f"/memfd:{name} "):
            count += 1
    return count


def mappings_of(name: str) -> int:
    """How many mappings of this process are of the memfd called *name*."""
    with open("/proc/self/maps") as maps:
        return sum(1 for line in maps if line.rstrip().endswith(f"/memfd:{name} (deleted)"))
