"""dma-buf file descriptors for the CPU: their size, a mapping, and DMA_BUF_IOCTL_SYNC.

A dma-buf (from VIDIOC_EXPBUF, or handed in to be imported with
V4L2_MEMORY_DMABUF) is read or written by the CPU through mmap(2) of its fd,
each access bracketed by DMA_BUF_IOCTL_SYNC: ``START | READ`` before reading
what a device wrote, ``END | READ`` after (``WRITE`` for data the CPU writes
for a device). The kernel's Documentation/driver-api/dma-buf.rst, "CPU
access to DMA buffer objects"; the exporter makes its caches coherent there
(vb2 dma-contig), or does nothing (vb2 vmalloc). The ioctl may fail with
EAGAIN or EINTR, and is then repeated.

The numbers are linux/dma-buf.h's, in this one place.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
from collections.abc import Iterator
from contextlib import contextmanager

# asm-generic/ioctl.h: _IOC(dir, type, nr, size) = dir << 30 | size << 16 | type << 8 | nr.
# (x86, arm, arm64, riscv; alpha, mips, powerpc and sparc encode differently.)
_IOC_WRITE = 1
_IOC_NRSHIFT, _IOC_TYPESHIFT, _IOC_SIZESHIFT, _IOC_DIRSHIFT = 0, 8, 16, 30


def _iow(kind: str, nr: int, size: int) -> int:
    """_IOW(type, nr, size) of asm-generic/ioctl.h."""
    return ((_IOC_WRITE << _IOC_DIRSHIFT) | (size << _IOC_SIZESHIFT)
            | (ord(kind) << _IOC_TYPESHIFT) | (nr << _IOC_NRSHIFT))


class dma_buf_sync(ctypes.Structure):  # linux/dma-buf.h's struct
    _fields_ = [("flags", ctypes.c_uint64)]


# linux/dma-buf.h
DMA_BUF_BASE = "b"
DMA_BUF_SYNC_READ = 1 << 0
DMA_BUF_SYNC_WRITE = 2 << 0
DMA_BUF_SYNC_RW = DMA_BUF_SYNC_READ | DMA_BUF_SYNC_WRITE
DMA_BUF_SYNC_START = 0 << 2
DMA_BUF_SYNC_END = 1 << 2
# _IOW(DMA_BUF_BASE, 0, struct dma_buf_sync) = 0x40086200
DMA_BUF_IOCTL_SYNC = _iow(DMA_BUF_BASE, 0, ctypes.sizeof(dma_buf_sync))


def _ioctl(fd: int, request: int, arg: ctypes.Structure) -> None:
    fcntl.ioctl(fd, request, arg)  # OSError(errno) on failure


def sync(fd: int, flags: int) -> None:
    """DMA_BUF_IOCTL_SYNC with *flags*, repeated while it fails with EAGAIN or EINTR."""
    arg = dma_buf_sync(flags)
    while True:
        try:
            _ioctl(fd, DMA_BUF_IOCTL_SYNC, arg)
            return
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EINTR):
                raise


def dmabuf_size(fd: int) -> int:
    """The size of the dma-buf behind *fd* (lseek to its end, as dma-buf allows)."""
    size = os.lseek(fd, 0, os.SEEK_END)
    os.lseek(fd, 0, os.SEEK_SET)
    return size


class DmaBuf:
    """One dma-buf fd, mapped: ``read()`` and ``write()`` bracket the CPU's access
    with DMA_BUF_IOCTL_SYNC. *owned*: ``close()`` closes the fd too (an fd
    from EXPBUF, or a dup of one handed in); the mapping keeps its own
    reference to the buffer either way."""

    def __init__(self, fd: int, *, owned: bool, writable: bool = False) -> None:
        self.fd = fd
        self.owned = owned
        self.size = dmabuf_size(fd)
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        self.map: mmap.mmap | None = mmap.mmap(fd, self.size, mmap.MAP_SHARED, prot)

    def _mapped(self) -> mmap.mmap:
        if self.map is None:
            raise ValueError(f"dma-buf fd {self.fd} is closed")
        return self.map

    @contextmanager
    def read(self) -> Iterator[memoryview]:
        """The buffer's bytes, between SYNC START|READ and END|READ; the view is
        released on the way out (the caller copies what it keeps)."""
        mapped = self._mapped()
        sync(self.fd, DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ)
        try:
            with memoryview(mapped) as view:
                yield view
        finally:
            sync(self.fd, DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ)

    def write(self, data: bytes, offset: int = 0) -> None:
        """*data* at *offset*, between SYNC START|WRITE and END|WRITE."""
        mapped = self._mapped()
        if offset + len(data) > self.size:
            raise ValueError(f"{len(data)} bytes at {offset} exceed the dma-buf's {self.size}")
        sync(self.fd, DMA_BUF_SYNC_START | DMA_BUF_SYNC_WRITE)
        try:
            mapped[offset:offset + len(data)] = data
        finally:
            sync(self.fd, DMA_BUF_SYNC_END | DMA_BUF_SYNC_WRITE)

    def close(self) -> None:
        if self.map is not None:
            self.map.close()
            self.map = None
        if self.owned and self.fd >= 0:
            os.close(self.fd)
        self.fd = -1
