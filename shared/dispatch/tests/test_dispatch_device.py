"""The device as handlers see it (phase 8.6): DAEDALUS_IOC_GET_DMABUF and the
dma-bufs it hands out, and how daedalusd attaches the device to the handlers.

No kernel here: ``fcntl.ioctl`` is replaced where the ioctl itself is
checked (its number and argument bytes), and memfds stand in for dma-bufs
(they map like one; DMA_BUF_IOCTL_SYNC is ENOTTY on them). The ioctl
numbers are checked against the headers they come from: the protocol
header through cffi (daedalus.proto) and <linux/dma-buf.h> compiled here.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import fcntl
import gc
import importlib.util
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from daedalus import proto
from daedalus.dispatch import device as device_module
from daedalus.dispatch.device import (
    DMA_BUF_IOCTL_SYNC,
    DMA_BUF_SYNC,
    DMA_BUF_SYNC_END,
    DMA_BUF_SYNC_READ,
    DMA_BUF_SYNC_RW,
    DMA_BUF_SYNC_START,
    DMA_BUF_SYNC_WRITE,
    Device,
    DmaBuf,
    DmaBufError,
    ioc,
)
from daedalus.dispatch.loopback import (
    STALE_BYTE,
    MemfdDevice,
    mappings_of,
    open_fds_of,
    serve_against,
)
from daedalus.dispatch.registry import DeviceUser, Registry, RegistryError
from daedalus.proto import (
    HDR_SIZE,
    MAX_PAYLOAD,
    Header,
    MsgType,
    pack_header,
    pack_hello,
    parse_header,
)

DMA_BUF_H = Path("/usr/include/linux/dma-buf.h")
# _IOWR(0xDA, 1, struct daedalus_dmabuf_req) (32 bytes): see test_proto_layout.py
GET_DMABUF = 0xC020DA01


@pytest.fixture
def memfd(request: pytest.FixtureRequest) -> Iterator[tuple[int, str]]:
    """A memfd of 8192 bytes holding 0, 1, 2, ... (mod 251), and its name."""
    name = f"daedalus-test-{request.node.name}"[:200]
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.pwrite(fd, bytes(i % 251 for i in range(8192)), 0)
    try:
        yield fd, name
    finally:
        os.close(fd)


def reopen(fd: int, flags: int) -> int:
    """A new fd of the file *fd* is open on (as the kernel hands out a new dma-buf fd)."""
    return os.open(f"/proc/self/fd/{fd}", flags | os.O_CLOEXEC)


# --- the ioctl numbers, from their headers -------------------------------------------


@pytest.fixture(scope="module")
def dma_buf_h(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """<linux/dma-buf.h>'s values, as the C compiler sees them (through cffi)."""
    if not DMA_BUF_H.is_file():
        pytest.skip(f"no {DMA_BUF_H}")
    cffi = pytest.importorskip("cffi")
    names = ["DMA_BUF_BASE", "DMA_BUF_IOCTL_SYNC", "DMA_BUF_SYNC_READ", "DMA_BUF_SYNC_WRITE",
             "DMA_BUF_SYNC_RW", "DMA_BUF_SYNC_START", "DMA_BUF_SYNC_END"]
    ffi = cffi.FFI()
    ffi.cdef("".join(f"#define {name} ...\n" for name in names)
             + "struct dma_buf_sync { unsigned long long flags; };\n")
    ffi.set_source("daedalus_test_dma_buf_h", "#include <linux/dma-buf.h>\n")
    tmp = tmp_path_factory.mktemp("dma-buf-h")
    built = ffi.compile(tmpdir=str(tmp), verbose=False)
    spec = importlib.util.spec_from_file_location("daedalus_test_dma_buf_h", built)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dma_buf_sync_numbers_match_linux_dma_buf_h(dma_buf_h: Any) -> None:
    lib, ffi = dma_buf_h.lib, dma_buf_h.ffi
    assert DMA_BUF_IOCTL_SYNC == lib.DMA_BUF_IOCTL_SYNC == 0x40086200
    assert (DMA_BUF_SYNC_READ, DMA_BUF_SYNC_WRITE, DMA_BUF_SYNC_RW, DMA_BUF_SYNC_START,
            DMA_BUF_SYNC_END) == (lib.DMA_BUF_SYNC_READ, lib.DMA_BUF_SYNC_WRITE,
                                  lib.DMA_BUF_SYNC_RW, lib.DMA_BUF_SYNC_START,
                                  lib.DMA_BUF_SYNC_END) == (1, 2, 3, 0, 4)
    assert device_module.DMA_BUF_BASE == lib.DMA_BUF_BASE == ord("b")
    assert DMA_BUF_SYNC.size == ffi.sizeof("struct dma_buf_sync") == 8


def test_ioc_recomputes_the_protocol_ioctl() -> None:
    """The _IOC layout device.py uses gives the compiler's DAEDALUS_IOC_GET_DMABUF."""
    assert proto.IOC_GET_DMABUF == proto.lib.DAEDALUS_IOC_GET_DMABUF == GET_DMABUF
    assert ioc(3, proto.lib.DAEDALUS_IOC_MAGIC, 1, proto.DMABUF_REQ_SIZE) == GET_DMABUF


# --- Device.get_dmabuf against a stand-in ioctl ----------------------------------------


class FakeIoctl:
    """fcntl.ioctl of a kernel that answers GET_DMABUF with a new fd of *backing*."""

    def __init__(self, backing: int, size: int, flags: int = os.O_RDWR) -> None:
        self.backing, self.size, self.flags = backing, size, flags
        self.calls: list[tuple[int, int, bytes, bool]] = []
        self.fail: list[type[OSError] | int] = []  # per call: raise this, or errno
        self.fds: list[int] = []
        self.answer_fd: int | None = None  # force the fd the kernel writes

    def __call__(self, fd: int, request: int, arg: Any = 0, mutate: bool = True) -> int:
        self.calls.append((fd, request, bytes(arg), mutate))
        if self.fail:
            what = self.fail.pop(0)
            if isinstance(what, int):
                raise OSError(what, os.strerror(what))
            raise what()
        if request == GET_DMABUF:
            new = reopen(self.backing, self.flags) if self.answer_fd is None else self.answer_fd
            self.fds.append(new)
            req = proto.parse_dmabuf_req(arg)
            arg[:] = proto.pack_dmabuf_req(req.cookie, req.index, fd=new, size=self.size)
        return 0


def expected_request(cookie: int, index: int) -> bytes:
    """struct daedalus_dmabuf_req by hand: __u64 cookie, __u32 index, then zeros."""
    return cookie.to_bytes(8, "little") + index.to_bytes(4, "little") + bytes(20)


@pytest.mark.parametrize(("flags", "writable"), [(os.O_RDWR, True), (os.O_RDONLY, False)])
def test_get_dmabuf_packs_the_request_and_wraps_the_fd(monkeypatch: pytest.MonkeyPatch,
                                                       memfd: tuple[int, str], flags: int,
                                                       writable: bool) -> None:
    backing, name = memfd
    fake = FakeIoctl(backing, 8192, flags)
    monkeypatch.setattr(fcntl, "ioctl", fake)
    device = Device(777)
    with device.get_dmabuf(0xFEDCBA9876543210, 1) as buf:
        assert fake.calls == [(777, GET_DMABUF, expected_request(0xFEDCBA9876543210, 1), True)]
        assert (buf.fd, buf.size, buf.writable) == (fake.fds[0], 8192, writable)
        assert open_fds_of(name) == 2
        assert bytes(buf.map()[:4]) == b"\x00\x01\x02\x03"
    assert buf.closed and open_fds_of(name) == 1 and mappings_of(name) == 0
    assert device.get_dmabuf(5).size == 8192  # index 0 by default
    assert fake.calls[-1][2] == expected_request(5, 0)
    os.close(fake.fds[-1])


@pytest.fixture
def no_sync(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """DmaBuf.sync records its flags instead of the ioctl (memfds have no SYNC)."""
    flags: list[int] = []
    monkeypatch.setattr(DmaBuf, "sync", lambda self, f: flags.append(f))
    return flags


@pytest.mark.parametrize(("code", "match"), [
    (errno.ENOENT, "cookie 9, buffer 0 failed: No such file or directory"),
    (errno.EBADF, "failed: Bad file descriptor"),
    (errno.ENOTTY, "Inappropriate ioctl"),
])
def test_get_dmabuf_failure_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                             memfd: tuple[int, str], code: int,
                                             match: str) -> None:
    fake = FakeIoctl(memfd[0], 8192)
    fake.fail = [code]
    monkeypatch.setattr(fcntl, "ioctl", fake)
    with pytest.raises(DmaBufError, match=match) as info:
        Device(3).get_dmabuf(9)
    assert info.value.errno == code and "DAEDALUS_IOC_GET_DMABUF" in info.value.message
    assert isinstance(info.value, OSError) and not fake.fds


def test_get_dmabuf_retries_an_interrupted_ioctl(monkeypatch: pytest.MonkeyPatch,
                                                 memfd: tuple[int, str]) -> None:
    fake = FakeIoctl(memfd[0], 100)
    fake.fail = [InterruptedError, InterruptedError]
    monkeypatch.setattr(fcntl, "ioctl", fake)
    with Device(3).get_dmabuf(9) as buf:
        assert buf.size == 100 and len(fake.calls) == 3
    fake.fail = [InterruptedError] * device_module.IOCTL_TRIES
    with pytest.raises(DmaBufError, match="interrupted") as info:
        Device(3).get_dmabuf(9)
    assert info.value.errno == errno.EINTR


def test_in_flight_asks_the_kernel_and_reads_enoent_as_no(monkeypatch: pytest.MonkeyPatch,
                                                          memfd: tuple[int, str]) -> None:
    """DAEDALUS_IOC_IN_FLIGHT: 0 is True, ENOENT False (the request is gone),
    an interrupted ioctl is asked again, any other errno is a DmaBufError;
    the argument is the cookie as a __u64."""
    fake = FakeIoctl(memfd[0], 100)
    monkeypatch.setattr(fcntl, "ioctl", fake)
    device = Device(3)
    assert device.in_flight(0xFEDCBA9876543210)
    assert fake.calls[-1][1:3] == (proto.IOC_IN_FLIGHT, (0xFEDCBA9876543210).to_bytes(8, "little"))
    fake.fail = [InterruptedError, errno.ENOENT]
    assert not device.in_flight(7)
    assert len(fake.calls) == 3
    fake.fail = [errno.EBADF]
    with pytest.raises(DmaBufError, match="DAEDALUS_IOC_IN_FLIGHT for cookie 7 failed") as info:
        device.in_flight(7)
    assert info.value.errno == errno.EBADF
    device.detach()
    with pytest.raises(DmaBufError) as info:
        device.in_flight(7)
    assert info.value.errno == errno.ENOTCONN


def test_malformed_answer_is_eproto_and_its_fd_is_closed(monkeypatch: pytest.MonkeyPatch,
                                                         memfd: tuple[int, str]) -> None:
    backing, name = memfd
    fake = FakeIoctl(backing, 0)  # a buffer of 0 bytes
    monkeypatch.setattr(fcntl, "ioctl", fake)
    with pytest.raises(DmaBufError, match="0 bytes") as info:
        Device(3).get_dmabuf(1)
    assert info.value.errno == errno.EPROTO and open_fds_of(name) == 1  # closed
    fake.answer_fd = -1
    with pytest.raises(DmaBufError, match="returned fd -1"):
        Device(3).get_dmabuf(1)
    unused = os.open("/dev/null", os.O_RDONLY)
    os.close(unused)
    fake.answer_fd, fake.size = unused, 4096
    with pytest.raises(DmaBufError, match="not open"):
        Device(3).get_dmabuf(1)


def test_detached_device_is_enotconn_without_an_ioctl(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeIoctl(-1, 0)
    monkeypatch.setattr(fcntl, "ioctl", fake)
    device = Device(3)
    assert device.attached
    device.detach()
    with pytest.raises(DmaBufError, match="no longer attached") as info:
        device.get_dmabuf(1)
    assert info.value.errno == errno.ENOTCONN and not device.attached and not fake.calls


def test_get_dmabuf_on_a_real_fd_that_is_not_the_device() -> None:
    """The real ioctl: a file that does not know DAEDALUS_IOC_GET_DMABUF."""
    fd = os.open("/dev/null", os.O_RDWR)
    try:
        with pytest.raises(DmaBufError, match="cookie 4, buffer 0 failed") as info:
            Device(fd).get_dmabuf(4)
        assert info.value.errno == errno.ENOTTY
    finally:
        os.close(fd)


# --- DmaBuf: mapping, syncing, closing ------------------------------------------------


def test_map_writable_and_close_unmaps_and_closes(memfd: tuple[int, str]) -> None:
    backing, name = memfd
    buf = DmaBuf(reopen(backing, os.O_RDWR), 8192, writable=True)
    with buf:
        view = buf.map()
        assert not view.readonly and view.format == "B" and view.nbytes == 8192
        assert view[250:253].tolist() == [250, 0, 1]
        view[0:3] = b"abc"
        assert os.pread(backing, 3, 0) == b"abc"  # shared
        again = buf.map(write=False)  # the same mapping, read-only view
        assert again.readonly and again[0] == ord("a") and mappings_of(name) == 1
        assert "mapped" in repr(buf)
    assert buf.closed and mappings_of(name) == 0 and open_fds_of(name) == 1
    with pytest.raises(ValueError):  # the views were released
        view[0]
    with pytest.raises(DmaBufError, match="closed"):
        buf.map()
    buf.close()  # idempotent


def test_map_read_only(memfd: tuple[int, str]) -> None:
    backing, name = memfd
    with DmaBuf(reopen(backing, os.O_RDONLY), 4096, writable=False) as buf:
        view = buf.map()
        assert view.readonly and bytes(view[:3]) == b"\x00\x01\x02"
        with pytest.raises(TypeError):
            view[0] = 1
        with pytest.raises(DmaBufError, match="read-only") as info:
            buf.map(write=True)
        assert info.value.errno == errno.EACCES
    assert mappings_of(name) == 0 and open_fds_of(name) == 1


def test_map_failure_and_empty_buffer(memfd: tuple[int, str]) -> None:
    fd = os.open("/dev/null", os.O_RDONLY)  # /dev/null cannot be mapped shared
    with DmaBuf(fd, 4096, writable=False) as buf, pytest.raises(DmaBufError, match="mmap"):
        buf.map()
    with pytest.raises(OSError):
        os.fstat(fd)  # closed all the same
    with DmaBuf(reopen(memfd[0], os.O_RDONLY), 0, writable=False) as empty:
        with pytest.raises(DmaBufError, match="0 bytes"):
            empty.map()


def test_close_takes_the_buffer_from_a_view_left_alive(memfd: tuple[int, str],
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """A view that outlives close (here a slice; a traceback may keep one)
    does not keep the buffer: its pages are replaced by zeros, the fd is
    closed, and the placeholder goes with the last view."""
    backing, name = memfd
    buf = DmaBuf(reopen(backing, os.O_RDWR), 8192, writable=True)
    view = buf.map()
    kept = view[100:110]
    address = ctypes.addressof(ctypes.c_char.from_buffer(kept)) - 100
    with caplog.at_level(logging.WARNING, logger="daedalus.dispatch"):
        buf.close()
    assert "outlived" in caplog.text
    assert mappings_of(name) == 0 and open_fds_of(name) == 1
    assert bytes(kept) == bytes(10)  # zeros, not the buffer
    kept[0] = 7  # writable, private: the buffer is untouched
    assert os.pread(backing, 1, 100) == bytes([100])
    assert mapped_at(address)
    del kept, view
    gc.collect()
    assert not mapped_at(address)


def mapped_at(address: int) -> bool:
    with open("/proc/self/maps") as maps:
        for line in maps:
            start, end = (int(part, 16) for part in line.split()[0].split("-"))
            if start <= address < end:
                return True
    return False


def test_sync_ioctl_number_and_argument(monkeypatch: pytest.MonkeyPatch,
                                       memfd: tuple[int, str]) -> None:
    fake = FakeIoctl(memfd[0], 0)
    monkeypatch.setattr(fcntl, "ioctl", fake)
    fd = reopen(memfd[0], os.O_RDWR)
    with DmaBuf(fd, 4096, writable=True) as buf:
        with buf.access(write=True) as data:
            data[0] = 1
        with buf.access() as data:
            assert data[0] == 1
    flags = [DMA_BUF_SYNC_START | DMA_BUF_SYNC_WRITE, DMA_BUF_SYNC_END | DMA_BUF_SYNC_WRITE,
             DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ, DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ]
    assert fake.calls == [(fd, 0x40086200, f.to_bytes(8, "little"), True) for f in flags]
    assert flags == [2, 6, 1, 5]


def test_access_syncs_the_end_when_the_block_raises_and_close_ends_an_open_sync(
        no_sync: list[int], memfd: tuple[int, str]) -> None:
    buf = DmaBuf(reopen(memfd[0], os.O_RDWR), 4096, writable=True)
    with pytest.raises(RuntimeError), buf, buf.access(write=True):
        raise RuntimeError("while writing")
    assert no_sync == [DMA_BUF_SYNC_START | DMA_BUF_SYNC_WRITE,
                       DMA_BUF_SYNC_END | DMA_BUF_SYNC_WRITE] and buf.closed
    no_sync.clear()
    other = DmaBuf(reopen(memfd[0], os.O_RDONLY), 4096, writable=False)
    other.map()
    other.sync_start()
    other.close()
    assert no_sync == [DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ,
                       DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ]


def test_sync_failure_is_a_clear_error(memfd: tuple[int, str]) -> None:
    """The real ioctl on a memfd, which is no dma-buf: ENOTTY, named."""
    with DmaBuf(reopen(memfd[0], os.O_RDONLY), 4096, writable=False) as buf:
        with pytest.raises(DmaBufError, match=r"DMA_BUF_IOCTL_SYNC START\|READ failed") as info:
            buf.sync_start()
        assert info.value.errno == errno.ENOTTY
    assert buf.closed


# --- the stand-in kernel's buffers (loopback.MemfdDevice) ---------------------------


def test_memfd_device_holds_contents_only_between_the_syncs() -> None:
    """The stand-in exporter is non-coherent on purpose: an OUTPUT buffer
    reads its bytes only under START | READ, a CAPTURE buffer keeps only
    what was there at END | WRITE."""
    device = MemfdDevice()
    device.add_output(7, b"bitstream", size=64)
    device.add_capture(8, 32)
    try:
        with device.get_dmabuf(7) as out:
            assert not out.writable and out.size == 64
            data = out.map()
            assert bytes(data[:4]) == bytes([STALE_BYTE]) * 4  # not synced yet
            with out.access() as synced:
                assert bytes(synced[:9]) == b"bitstream" and not any(synced[9:])
            assert bytes(data[:4]) == bytes([STALE_BYTE]) * 4
        with device.get_dmabuf(8) as cap:
            assert cap.writable
            cap.map()[:2] = b"no"  # before START: lost
            with cap.access(write=True) as synced:
                synced[4:6] = b"ok"
            cap.map()[6:8] = b"no"  # after END: lost
        written = device.buffers[8, 0].written
        assert written is not None and written[4:6] == b"ok"
        assert written[:2] == written[6:8] == bytes([STALE_BYTE]) * 2
        assert [(e.what, e.cookie, e.flags) for e in device.events] == [
            ("get", 7, 0), ("map", 7, 0), ("map", 7, 0), ("sync", 7, 1), ("sync", 7, 5),
            ("close", 7, 0), ("get", 8, 0), ("map", 8, 1), ("map", 8, 1), ("sync", 8, 2),
            ("sync", 8, 6), ("map", 8, 1), ("close", 8, 0)]
        assert not device.leaks() and len(device.dmabufs) == 2
        with pytest.raises(DmaBufError, match="cookie 9, buffer 0") as info:
            device.get_dmabuf(9)
        assert info.value.errno == errno.ENOENT
        device.fail = errno.EIO
        with pytest.raises(DmaBufError) as info:
            device.get_dmabuf(7)
        assert info.value.errno == errno.EIO
        device.get_dmabuf(7).close()  # once only
    finally:
        names = [b.name for b in device.buffers.values()]
        device.close_all()
    assert all(open_fds_of(name) == 0 and mappings_of(name) == 0 for name in names)


# --- the registry and the session attach the device -----------------------------------


class UsesDevice:
    """Answers with what Device.get_dmabuf said for the request's cookie."""

    OPCODES: ClassVar[tuple[int, ...]] = (0x61,)
    PHASE: ClassVar[tuple[int, int]] = (8, 6)
    NAME: ClassVar[str] = "uses-device"

    def __init__(self) -> None:
        self.devices: list[Device] = []

    def attach_device(self, device: Device) -> None:
        self.devices.append(device)

    def handle(self, header: Header, payload: bytes) -> tuple[int, bytes]:
        try:
            with self.devices[-1].get_dmabuf(header.cookie):
                return 0, b""
        except DmaBufError as exc:
            return exc.errno or errno.EIO, exc.message.encode()


class FailsToAttach(UsesDevice):
    OPCODES: ClassVar[tuple[int, ...]] = (0x62,)
    NAME: ClassVar[str] = "fails-to-attach"

    def attach_device(self, device: Device) -> None:
        raise RuntimeError("attach bug")


class NoDevice:
    OPCODES: ClassVar[tuple[int, ...]] = (0x63,)
    PHASE: ClassVar[tuple[int, int]] = (8, 2)
    NAME: ClassVar[str] = "no-device"

    def handle(self, header: Header, payload: bytes) -> tuple[int, bytes]:
        return 0, b""


def test_device_users_are_the_handlers_with_attach_device(
        caplog: pytest.LogCaptureFixture) -> None:
    registry = Registry.from_classes([NoDevice, FailsToAttach, UsesDevice])
    assert [r.name for r in registry.device_users] == ["uses-device", "fails-to-attach"]
    assert isinstance(UsesDevice(), DeviceUser) and not isinstance(NoDevice(), DeviceUser)
    assert "uses-device (97 + device, phase 8.6" in registry.describe()
    device = Device(5)
    with caplog.at_level(logging.ERROR, logger="daedalus.dispatch"):
        failed = registry.attach_device(device)
    assert [(reg.name, str(exc)) for reg, exc in failed] == [("fails-to-attach", "attach bug")]
    assert "failed to attach the device" in caplog.text
    user = registry.lookup(0x61)
    assert user is not None and isinstance(user.handler, UsesDevice)
    assert user.handler.devices == [device]  # attached despite the other's failure


def test_attach_device_that_is_not_a_method_is_refused() -> None:
    broken = type("Broken", (NoDevice,), {"attach_device": 5})
    with pytest.raises(RegistryError, match="attach_device must be a method"):
        Registry.from_classes([broken])


def test_the_session_attaches_the_device_it_serves_and_detaches_it() -> None:
    """serve() hands its fd to the DeviceUsers before the first request; a
    GET_DMABUF on it is the real ioctl (on a socket: ENOTTY), answered as the
    handler's error status; after the session the device is detached."""
    registry = Registry.from_classes([UsesDevice])
    reg = registry.lookup(0x61)
    assert reg is not None and isinstance(reg.handler, UsesDevice)
    handler = reg.handler

    async def kernel(sock: socket.socket) -> tuple[Header, bytes]:
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(sock, pack_header(MsgType.HELLO, 1, 32) + pack_hello())
        await asyncio.wait_for(loop.sock_recv(sock, HDR_SIZE + MAX_PAYLOAD), 10)
        assert len(handler.devices) == 1 and handler.devices[0].attached
        await loop.sock_sendall(sock, pack_header(0x61, 42, 0))
        data = await asyncio.wait_for(loop.sock_recv(sock, HDR_SIZE + MAX_PAYLOAD), 10)
        return parse_header(data), data[HDR_SIZE:]

    (answer, body), status = asyncio.run(serve_against(kernel, registry))
    assert status == 0 and answer.cookie == 42
    assert answer.status == errno.ENOTTY
    assert body == b"DAEDALUS_IOC_GET_DMABUF for cookie 42, buffer 0 failed: " + os.strerror(
        errno.ENOTTY).encode()
    assert len(handler.devices) == 1 and not handler.devices[0].attached
