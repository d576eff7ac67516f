"""The daemon's open /dev/daedalus-v4l2 as handlers see it: dma-bufs of a request's buffers.

Protocol v8 (phase 8.6) lets bitstream and pixels cross as dma-bufs of the
application's own buffers instead of inline: a FEED with
DAEDALUS_DECODE_DMABUF or a FETCH with DAEDALUS_FETCH_DMABUF carries no
bytes, and its handler asks the kernel for the request's buffer with
DAEDALUS_IOC_GET_DMABUF while it handles it (``Device.get_dmabuf``, for the
cookie of a request read and not answered yet). A handler gets the
``Device`` through ``attach_device`` (registry.py's ``DeviceUser``): daedalusd
attaches the device it serves when it starts, and detaches it when the
session ends (later calls fail with ENOTCONN).

Trust model (the kerneldoc of struct daedalus_dmabuf_req): a dma-buf cannot
be revoked, so a daemon that kept the fd or a mapping after answering could
still reach memory that belongs to the application again. A ``DmaBuf`` is
used as a context manager around the access, and its ``close`` unmaps it and
closes the fd on every path, errors included, before the handler answers::

    with device.get_dmabuf(header.cookie) as buf:
        with buf.access() as data:     # mapped; DMA_BUF_SYNC_START | READ
            bitstream = bytes(data[offset:offset + length])
        # DMA_BUF_SYNC_END | READ
    # unmapped, fd closed

The mapping is made with mmap(2) through ctypes rather than Python's mmap
module, which keeps a duplicate of the fd for the mapping's life and cannot
unmap while a view of it is alive. Here a view that outlives the access (a
memoryview slice, a numpy array, e.g. kept by a traceback) does not keep the
buffer: ``close`` then puts anonymous zero pages in the mapping's place
(mmap with MAP_FIXED), so the stale view reads zeros and the buffer is out
of reach; those pages are unmapped once the last view is gone.

CPU access brackets: DMA_BUF_IOCTL_SYNC (linux/dma-buf.h) with START, then
END, and READ or WRITE, around every access, so caches are flushed or
invalidated for exporters that need it (``DmaBuf.access``).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import mmap
import os
import struct
import sys
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Final

from daedalus.proto import (
    IOC_GET_DMABUF,
    IOC_IN_FLIGHT,
    ProtocolError,
    pack_dmabuf_req,
    parse_dmabuf_req,
)

log = logging.getLogger("daedalus.dispatch")

# --- linux/dma-buf.h -----------------------------------------------------------

# The ioctl number layout of <asm-generic/ioctl.h> (x86, arm, arm64, riscv...):
# number in bits 0..7, type in 8..15, argument size in 16..29, direction in 30..31.
_IOC_NRSHIFT: Final = 0
_IOC_TYPESHIFT: Final = 8
_IOC_SIZESHIFT: Final = 16
_IOC_DIRSHIFT: Final = 30
_IOC_WRITE: Final = 1  # userspace writes the argument (the kernel reads it)
_IOC_READ: Final = 2


def ioc(direction: int, kind: int, number: int, size: int) -> int:
    """_IOC(direction, type, nr, size) of <asm-generic/ioctl.h>."""
    return ((direction << _IOC_DIRSHIFT) | (kind << _IOC_TYPESHIFT)
            | (number << _IOC_NRSHIFT) | (size << _IOC_SIZESHIFT))


DMA_BUF_SYNC_READ: Final = 1 << 0
DMA_BUF_SYNC_WRITE: Final = 2 << 0
DMA_BUF_SYNC_RW: Final = DMA_BUF_SYNC_READ | DMA_BUF_SYNC_WRITE
DMA_BUF_SYNC_START: Final = 0 << 2
DMA_BUF_SYNC_END: Final = 1 << 2
DMA_BUF_BASE: Final = ord("b")
# struct dma_buf_sync { __u64 flags; }
DMA_BUF_SYNC: Final = struct.Struct("=Q")
# _IOW(DMA_BUF_BASE, 0, struct dma_buf_sync): 0x40086200
DMA_BUF_IOCTL_SYNC: Final = ioc(_IOC_WRITE, DMA_BUF_BASE, 0, DMA_BUF_SYNC.size)

# An ioctl interrupted by a signal, or one the exporter asks to repeat
# (EAGAIN), is tried again (as libdrm's drmIoctl does), this many times.
IOCTL_TRIES: Final = 16

# --- mmap(2) and munmap(2) through ctypes ---------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_mmap = _libc.mmap
_mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                  ctypes.c_long]
_mmap.restype = ctypes.c_void_p
_munmap = _libc.munmap
_munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_munmap.restype = ctypes.c_int
MAP_FAILED: Final = ctypes.c_void_p(-1).value
MAP_FIXED: Final = 0x10  # Linux, every architecture daedalus-v4l2 builds for


class DmaBufError(OSError):
    """A dma-buf the daemon could not get, map or sync: ``errno`` says why
    (ENOENT: the kernel has no such buffer for that cookie, the request was
    answered or timed out; ENOTCONN: the device is no longer attached ...),
    ``message`` in words. A handler answers it as an error status."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)

    @property
    def message(self) -> str:
        return str(self.strerror)


def _sync_name(flags: int) -> str:
    stage = "END" if flags & DMA_BUF_SYNC_END else "START"
    access = {DMA_BUF_SYNC_READ: "READ", DMA_BUF_SYNC_WRITE: "WRITE",
              DMA_BUF_SYNC_RW: "RW"}.get(flags & DMA_BUF_SYNC_RW, "0")
    return f"{stage}|{access}"


def _release_placeholder(address: int, size: int) -> None:
    """Unmap the zero pages close() left where a mapping was (its last view is gone)."""
    if _munmap(address, size) != 0:
        log.error("munmap of %d bytes at %#x failed: %s", size, address,
                  os.strerror(ctypes.get_errno()))


class DmaBuf:
    """One buffer's dma-buf, as DAEDALUS_IOC_GET_DMABUF handed it out: *fd*
    (the daemon's to close), *size* bytes to map, for writing too if
    *writable* (a CAPTURE buffer; an OUTPUT buffer is read-only).

    A context manager: leaving the ``with`` closes it (``close``)."""

    def __init__(self, fd: int, size: int, writable: bool) -> None:
        self.fd = fd
        self.size = size
        self.writable = writable
        self.closed = False
        self._address: int | None = None
        self._prot = 0
        self._memory: ctypes.Array[ctypes.c_char] | None = None
        self._views: list[memoryview] = []
        self._syncing: int | None = None  # the access of a sync_start not ended yet

    def __repr__(self) -> str:
        state = "closed" if self.closed else "mapped" if self._address is not None else "open"
        return (f"DmaBuf(fd={self.fd}, size={self.size}, "
                f"{'read-write' if self.writable else 'read-only'}, {state})")

    def __enter__(self) -> DmaBuf:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    # -- mapping -----------------------------------------------------------

    def map(self, write: bool | None = None) -> memoryview:
        """The buffer's *size* bytes, mapped shared: a memoryview of unsigned
        bytes, read-only unless *write* (default: ``writable``), valid until
        ``close``. The buffer is mapped once; a later call returns another
        view of the same mapping."""
        if self.closed:
            raise DmaBufError(errno.EBADF, "the dma-buf is closed")
        write = self.writable if write is None else write
        if write and not self.writable:
            raise DmaBufError(errno.EACCES, "the dma-buf is read-only: it cannot be mapped "
                                            "for writing")
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if write else 0)
        if self._memory is None:
            self._map(prot)
        elif prot & ~self._prot:
            raise DmaBufError(errno.EACCES, "the dma-buf is mapped read-only already")
        assert self._memory is not None
        base = memoryview(self._memory)
        view = base.cast("B")
        base.release()
        if not write:
            writable_view, view = view, view.toreadonly()
            writable_view.release()
        self._views.append(view)
        return view

    def _map(self, prot: int) -> None:
        if self.size <= 0:
            raise DmaBufError(errno.EINVAL, f"a dma-buf of {self.size} bytes cannot be mapped")
        address = _mmap(None, self.size, prot, mmap.MAP_SHARED, self.fd, 0)
        if address is None or address == MAP_FAILED:
            code = ctypes.get_errno() or errno.EIO
            raise DmaBufError(code, f"mmap of {self.size} bytes of the dma-buf failed: "
                                    f"{os.strerror(code)}")
        self._address, self._prot = address, prot
        self._memory = (ctypes.c_char * self.size).from_address(address)

    # -- CPU access --------------------------------------------------------

    def sync(self, flags: int) -> None:
        """DMA_BUF_IOCTL_SYNC with *flags* (DMA_BUF_SYNC_START or _END, with
        _READ, _WRITE or _RW); DmaBufError if it fails."""
        arg = DMA_BUF_SYNC.pack(flags)
        for _ in range(IOCTL_TRIES):
            try:
                fcntl.ioctl(self.fd, DMA_BUF_IOCTL_SYNC, arg)
                return
            except (InterruptedError, BlockingIOError):
                continue
            except OSError as exc:
                code = exc.errno or errno.EIO
                raise DmaBufError(code, f"DMA_BUF_IOCTL_SYNC {_sync_name(flags)} failed: "
                                        f"{os.strerror(code)}") from None
        raise DmaBufError(errno.EAGAIN, f"DMA_BUF_IOCTL_SYNC {_sync_name(flags)} was "
                                        f"interrupted {IOCTL_TRIES} times")

    def sync_start(self, write: bool = False) -> None:
        """Begin a CPU access (DMA_BUF_SYNC_START with READ, or WRITE)."""
        access = DMA_BUF_SYNC_WRITE if write else DMA_BUF_SYNC_READ
        self.sync(DMA_BUF_SYNC_START | access)
        self._syncing = access

    def sync_end(self, write: bool = False) -> None:
        """End the CPU access begun by sync_start (DMA_BUF_SYNC_END, same access)."""
        access = DMA_BUF_SYNC_WRITE if write else DMA_BUF_SYNC_READ
        self._syncing = None
        self.sync(DMA_BUF_SYNC_END | access)

    @contextmanager
    def access(self, write: bool = False) -> Iterator[memoryview]:
        """The mapping (``map(write)``) between sync_start and sync_end; the
        end is synced whatever the block raised. Do not keep views of it past
        the block: ``close`` takes the buffer from under them."""
        data = self.map(write)
        self.sync_start(write)
        try:
            yield data
        finally:
            self.sync_end(write)

    # -- the end -----------------------------------------------------------

    def close(self) -> None:
        """End an access still open, unmap the buffer, close the fd: nothing
        of it is left in the daemon. Idempotent; never raises (it runs on
        error paths): what fails is logged."""
        if self.closed:
            return
        self.closed = True
        try:
            if self._syncing is not None:
                try:
                    self.sync_end(self._syncing == DMA_BUF_SYNC_WRITE)
                except DmaBufError as exc:
                    log.warning("dma-buf fd %d: %s", self.fd, exc.message)
            self._unmap()
        finally:
            try:
                os.close(self.fd)
            except OSError as exc:
                log.error("closing dma-buf fd %d failed: %s", self.fd, exc.strerror)

    def _unmap(self) -> None:
        memory, self._memory = self._memory, None
        address, self._address = self._address, None
        if memory is None or address is None:
            return
        for view in self._views:
            try:
                view.release()
            except BufferError:  # exported (a raw buffer of it is in use): still referenced
                pass
        self._views.clear()
        # Views of the mapping (slices, numpy arrays) hold the array through
        # their buffer; only this name and getrefcount's argument: none is left.
        if sys.getrefcount(memory) <= 2:
            del memory
            if _munmap(address, self.size) != 0:
                log.error("munmap of dma-buf fd %d failed: %s", self.fd,
                          os.strerror(ctypes.get_errno()))
            return
        placeholder = _mmap(address, self.size, mmap.PROT_READ | mmap.PROT_WRITE,
                            MAP_FIXED | mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
        if placeholder != address:
            log.error("dma-buf fd %d: a view of its mapping is still alive and replacing the "
                      "mapping failed (%s): the buffer stays mapped until it goes", self.fd,
                      os.strerror(ctypes.get_errno()))
            return
        weakref.finalize(memory, _release_placeholder, address, self.size)
        log.warning("dma-buf fd %d: a view of its mapping outlived the access; the buffer was "
                    "unmapped from under it (it reads zeros now)", self.fd)


class Device:
    """The daemon's open /dev/daedalus-v4l2 (*fd*), for the handlers'
    requests to the kernel beyond read(2) and write(2). daedalusd makes one
    per session; ``detach`` ends it (the session is over: the fd is about to
    be closed)."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd
        self._lock = threading.Lock()  # detach waits for an ioctl in progress

    @property
    def attached(self) -> bool:
        return self._fd is not None

    def detach(self) -> None:
        """The session ended: get_dmabuf fails with ENOTCONN from now on."""
        with self._lock:
            self._fd = None

    def get_dmabuf(self, cookie: int, index: int = 0) -> DmaBuf:
        """DAEDALUS_IOC_GET_DMABUF: buffer *index* of the job of request
        *cookie* (read by this daemon and not answered yet), as a DmaBuf the
        caller closes (``with``). DmaBufError with the ioctl's errno if the
        kernel refuses (ENOENT: no such request or buffer), EPROTO if its
        answer is malformed."""
        try:
            arg = bytearray(pack_dmabuf_req(cookie, index))
        except ProtocolError as exc:
            raise DmaBufError(errno.EINVAL, str(exc)) from None
        self._ioctl(IOC_GET_DMABUF, arg, "DAEDALUS_IOC_GET_DMABUF",
                    f"cookie {cookie}, buffer {index}")
        got = parse_dmabuf_req(arg)
        what = f"DAEDALUS_IOC_GET_DMABUF for cookie {cookie}, buffer {index}"
        if got.fd < 0:
            raise DmaBufError(errno.EPROTO, f"{what} returned fd {got.fd}")
        try:  # from here on the fd is ours to close, whatever happens
            if got.size == 0:
                raise DmaBufError(errno.EPROTO, f"{what}: a buffer of 0 bytes")
            try:
                mode = fcntl.fcntl(got.fd, fcntl.F_GETFL) & os.O_ACCMODE
            except OSError as exc:
                raise DmaBufError(errno.EPROTO, f"{what} returned fd {got.fd}, which is not "
                                                f"open: {exc.strerror}") from None
            return DmaBuf(got.fd, got.size, writable=mode == os.O_RDWR)
        except BaseException:
            try:
                os.close(got.fd)
            except OSError:
                pass
            raise

    def in_flight(self, cookie: int) -> bool:
        """DAEDALUS_IOC_IN_FLIGHT: does request *cookie* still wait for this
        daemon's answer? False once the kernel answered, timed it out or
        cancelled it: a buffer of its job may be the application's again. A
        copy out of the job's buffer is the request's only if this is True
        after the copy. DmaBufError for a detached device or another error
        than ENOENT."""
        try:
            self._ioctl(IOC_IN_FLIGHT, bytearray(struct.pack("=Q", cookie)),
                        "DAEDALUS_IOC_IN_FLIGHT", f"cookie {cookie}")
        except DmaBufError as exc:
            if exc.errno == errno.ENOENT:
                return False
            raise
        return True

    def _ioctl(self, request: int, arg: bytearray, name: str, what: str) -> None:
        """ioctl *request* (called *name*) with *arg*, which the kernel may
        fill in, under the device's lock, again when interrupted (at most
        IOCTL_TRIES times). DmaBufError: ENOTCONN once detached, else the
        ioctl's errno ("NAME for WHAT failed: ...")."""
        with self._lock:
            if self._fd is None:
                raise DmaBufError(errno.ENOTCONN, "the device is no longer attached (the "
                                                  "daemon's session ended)")
            for _ in range(IOCTL_TRIES):
                try:
                    fcntl.ioctl(self._fd, request, arg, True)
                    return
                except InterruptedError:
                    continue
                except OSError as exc:
                    code = exc.errno or errno.EIO
                    raise DmaBufError(code, f"{name} for {what} failed: "
                                            f"{os.strerror(code)}") from None
            raise DmaBufError(errno.EINTR, f"{name} was interrupted {IOCTL_TRIES} times")
