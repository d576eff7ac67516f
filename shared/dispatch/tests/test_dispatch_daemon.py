"""daedalusd's core against a fake kernel.

``serve`` runs on one end of an AF_UNIX SOCK_SEQPACKET socket pair, which
keeps message boundaries like the chardev (one read, one message; one write,
one message); the test plays the kernel on the other end.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from daedalus.dispatch import daemon
from daedalus.dispatch.log import JournalFormatter, priority, setup_logging
from daedalus.dispatch.loopback import serve_against
from daedalus.dispatch.registry import Handler, Registry, RegistryError
from daedalus.proto import (
    HDR_SIZE,
    MAX_PAYLOAD,
    RESPONSE,
    VERSION,
    Header,
    Hello,
    MsgType,
    pack_header,
    pack_hello,
    parse_header,
    parse_hello,
)

SLOW = 3
BOOM = 8  # (4 is CLOSE_STREAM, the core's)
BAD_RESULT = 5
ASYNC = 6
BIG = 7
UNKNOWN = 0x77


class Echo:
    OPCODES: ClassVar[tuple[int, ...]] = (MsgType.PING,)
    PHASE: ClassVar[tuple[int, int]] = (8, 2)
    NAME: ClassVar[str] = "echo"

    def handle(self, header: Header, payload: bytes) -> tuple[int, bytes]:
        return 0, payload


class Slow:
    """Blocks until released: proves the reader keeps going meanwhile."""

    OPCODES: ClassVar[tuple[int, ...]] = (SLOW,)
    PHASE: ClassVar[tuple[int, int]] = (8, 3)
    NAME: ClassVar[str] = "slow"
    release = threading.Event()

    def handle(self, header: Header, payload: bytes) -> tuple[int, bytes]:
        assert self.release.wait(10)
        return 0, b"slow done"


class Boom:
    OPCODES: ClassVar[tuple[int, ...]] = (BOOM,)
    PHASE: ClassVar[tuple[int, int]] = (8, 3)
    NAME: ClassVar[str] = "boom"

    def handle(self, header: Header, payload: bytes) -> tuple[int, bytes]:
        raise RuntimeError("kaboom")


class BadResult:
    OPCODES: ClassVar[tuple[int, ...]] = (BAD_RESULT,)
    PHASE: ClassVar[tuple[int, int]] = (8, 3)
    NAME: ClassVar[str] = "bad-result"

    def handle(self, header: Header, payload: bytes) -> Any:
        return "not a tuple"


class Async:
    OPCODES: ClassVar[tuple[int, ...]] = (ASYNC,)
    PHASE: ClassVar[tuple[int, int]] = (8, 5)
    NAME: ClassVar[str] = "async"

    async def handle(self, header: Header, payload: bytes) -> tuple[int, bytes]:
        await asyncio.sleep(0)
        return errno.ENOENT, payload[::-1]


class Big:
    OPCODES: ClassVar[tuple[int, ...]] = (BIG,)
    PHASE: ClassVar[tuple[int, int]] = (8, 3)
    NAME: ClassVar[str] = "big"

    def handle(self, header: Header, payload: bytes) -> tuple[int, bytes]:
        return 0, bytes(int.from_bytes(payload, "little"))


ALL = [Echo, Slow, Boom, BadResult, Async, Big]
SHAPES: list[Handler] = [Echo(), Slow(), Boom(), BadResult(), Async(), Big()]  # mypy: Protocol


class FakeKernel:
    """The kernel's end of the socket pair."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.next_cookie = 100

    def cookie(self) -> int:
        self.next_cookie += 1
        return self.next_cookie

    async def send(self, type_: int, cookie: int, payload: bytes = b"", **fields: Any) -> None:
        fields.setdefault("payload_len", len(payload))
        header = pack_header(type_, cookie, **fields)
        await self.loop.sock_sendall(self.sock, header + payload)

    async def recv(self, timeout: float = 5.0) -> tuple[Header, bytes]:
        data = await asyncio.wait_for(self.loop.sock_recv(self.sock, HDR_SIZE + MAX_PAYLOAD),
                                      timeout)
        header = parse_header(data)
        assert header.payload_len == len(data) - HDR_SIZE
        assert (header.magic, header.version, header.flags) == (0x4C345644, VERSION, 0)
        assert header.reserved == (0,) * 5
        return header, data[HDR_SIZE:]

    async def request(self, type_: int, payload: bytes = b"") -> tuple[Header, bytes]:
        cookie = self.cookie()
        await self.send(type_, cookie, payload)
        header, answer = await self.recv()
        assert header.cookie == cookie
        assert header.type == type_ | RESPONSE
        return header, answer

    async def handshake(self, max_payload: int = MAX_PAYLOAD) -> Hello:
        header, payload = await self.request(MsgType.HELLO, pack_hello(max_payload=max_payload))
        assert header.status == 0
        return parse_hello(payload)

    async def silent(self, timeout: float = 0.2) -> bool:
        """True if nothing arrives within *timeout*."""
        try:
            await asyncio.wait_for(self.loop.sock_recv(self.sock, 1), timeout)
        except TimeoutError:
            return True
        return False


Scenario = Callable[[FakeKernel], Awaitable[None]]


def run(scenario: Scenario, handlers: Iterable[object] | Registry = ALL,
        *, timeout: float = 20.0, max_in_flight: int = daemon.DEFAULT_IN_FLIGHT) -> int:
    """Run serve() against *scenario*; stop it when the scenario returns.
    Returns serve's exit status."""

    async def main() -> int:
        _, status = await serve_against(lambda sock: scenario(FakeKernel(sock)), handlers,
                                        timeout=timeout, max_in_flight=max_in_flight)
        return status

    return asyncio.run(main())


# --- handshake ----------------------------------------------------------------


def test_hello_answered_with_version_and_phase() -> None:
    async def scenario(kernel: FakeKernel) -> None:
        cookie = 2**64 - 1
        await kernel.send(MsgType.HELLO, cookie, pack_hello(phase=82))
        header, payload = await kernel.recv()
        assert header.type == MsgType.HELLO | RESPONSE
        assert (header.cookie, header.status) == (cookie, 0)
        assert parse_hello(payload) == Hello(proto_version=VERSION, max_payload=MAX_PAYLOAD,
                                             phase=85)  # Async's PHASE (8, 5) is the highest

    assert run(scenario) == 0


def test_hello_phase_comes_from_the_handlers() -> None:
    async def scenario(kernel: FakeKernel) -> None:
        assert (await kernel.handshake()).phase == 82

    assert run(scenario, [Echo]) == 0


@pytest.mark.parametrize("where", ["header", "hello"])
def test_version_mismatch_exits_nonzero(where: str, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(kernel: FakeKernel) -> None:
        if where == "header":
            await kernel.send(MsgType.HELLO, 1, pack_hello(), version=VERSION + 1)
        else:
            await kernel.send(MsgType.HELLO, 1, pack_hello(proto_version=VERSION + 1))
        assert await kernel.silent(0.5)  # no answer; the daemon is gone

    assert run(scenario) == 1
    assert f"kernel speaks protocol v{VERSION + 1}, daemon v{VERSION}" in caplog.text


def test_invalid_hello_exits_nonzero(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(kernel: FakeKernel) -> None:
        await kernel.send(MsgType.HELLO, 1, pack_hello()[:-4])
        assert await kernel.silent(0.3)

    assert run(scenario) == 1
    assert "invalid HELLO" in caplog.text


def test_request_before_hello_is_eproto() -> None:
    async def scenario(kernel: FakeKernel) -> None:
        header, _ = await kernel.request(MsgType.PING, b"early")
        assert header.status == errno.EPROTO
        await kernel.handshake()
        header, payload = await kernel.request(MsgType.PING, b"now")
        assert (header.status, payload) == (0, b"now")

    assert run(scenario) == 0


# --- requests -----------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 47, 48, 4096, 65536])
def test_ping_echoed_byte_for_byte(size: int) -> None:
    async def scenario(kernel: FakeKernel) -> None:
        await kernel.handshake()
        payload = os.urandom(size)
        header, answer = await kernel.request(MsgType.PING, payload)
        assert header.status == 0
        assert answer == payload

    assert run(scenario) == 0


def test_many_pings_in_flight_each_answered_with_its_cookie() -> None:
    async def scenario(kernel: FakeKernel) -> None:
        await kernel.handshake()
        sent = {kernel.cookie(): os.urandom(n + 1) for n in range(64)}
        for cookie, payload in sent.items():
            await kernel.send(MsgType.PING, cookie, payload)
        got = {}
        for _ in sent:
            header, payload = await kernel.recv()
            assert header.type == MsgType.PING | RESPONSE and header.status == 0
            got[header.cookie] = payload
        assert got == sent

    assert run(scenario) == 0


def test_unknown_type_is_eopnotsupp() -> None:
    async def scenario(kernel: FakeKernel) -> None:
        await kernel.handshake()
        header, payload = await kernel.request(UNKNOWN, b"what is this")
        assert (header.status, payload) == (errno.EOPNOTSUPP, b"")
        assert header.status == 95

    assert run(scenario) == 0


def test_handler_exception_is_eio_and_daemon_survives() -> None:
    async def scenario(kernel: FakeKernel) -> None:
        await kernel.handshake()
        header, payload = await kernel.request(BOOM, b"x")
        assert (header.status, payload) == (errno.EIO, b"kaboom")
        header, payload = await kernel.request(BAD_RESULT)
        assert header.status == errno.EIO and b"not (status, payload)" in payload
        header, payload = await kernel.request(MsgType.PING, b"still here")
        assert (header.status, payload) == (0, b"still here")

    assert run(scenario) == 0


def test_async_handler_runs_on_the_loop() -> None:
    async def scenario(kernel: FakeKernel) -> None:
        await kernel.handshake()
        header, payload = await kernel.request(ASYNC, b"abc")
        assert (header.status, payload) == (errno.ENOENT, b"cba")

    assert run(scenario) == 0


def test_slow_handler_does_not_block_the_reader() -> None:
    Slow.release.clear()

    async def scenario(kernel: FakeKernel) -> None:
        await kernel.handshake()
        slow_cookie = kernel.cookie()
        await kernel.send(SLOW, slow_cookie)
        header, payload = await kernel.request(MsgType.PING, b"overtakes")
        assert payload == b"overtakes"
        Slow.release.set()
        header, payload = await kernel.recv()
        assert (header.cookie, header.status, payload) == (slow_cookie, 0, b"slow done")

    try:
        assert run(scenario) == 0
    finally:
        Slow.release.set()


def test_requests_beyond_the_workers_stay_unread_until_one_is_answered() -> None:
    """With max_in_flight requests running, the daemon reads no more: the rest
    wait in the kernel's fair queue, where their watchdog time has not begun."""
    Slow.release.clear()

    async def scenario(kernel: FakeKernel) -> None:
        await kernel.handshake()
        slow = [kernel.cookie() for _ in range(2)]
        for cookie in slow:
            await kernel.send(SLOW, cookie)
        ping = kernel.cookie()
        await kernel.send(MsgType.PING, ping, b"queued")
        assert await kernel.silent(0.5), "a third request was read with two in flight"
        Slow.release.set()
        answers = {}
        for _ in range(3):
            header, payload = await kernel.recv()
            answers[header.cookie] = (header.status, payload)
        assert answers == {slow[0]: (0, b"slow done"), slow[1]: (0, b"slow done"),
                           ping: (0, b"queued")}
        header, payload = await kernel.request(MsgType.PING, b"reading again")
        assert payload == b"reading again"

    try:
        assert run(scenario, max_in_flight=2) == 0
    finally:
        Slow.release.set()


def test_answer_larger_than_the_kernel_takes_is_emsgsize() -> None:
    async def scenario(kernel: FakeKernel) -> None:
        await kernel.handshake(max_payload=64)
        header, payload = await kernel.request(BIG, (64).to_bytes(4, "little"))
        assert (header.status, len(payload)) == (0, 64)
        header, payload = await kernel.request(BIG, (65).to_bytes(4, "little"))
        assert header.status == errno.EMSGSIZE

    assert run(scenario) == 0


@pytest.mark.parametrize(("fields", "payload_len"), [
    ({"flags": 1}, None),
    ({"status": 3}, None),
    ({"reserved": [0, 1, 0, 0, 0]}, None),
    ({}, 10),  # payload_len says 10, 3 bytes follow
])
def test_invalid_request_is_eproto_and_daemon_survives(fields: dict[str, Any],
                                                       payload_len: int | None) -> None:
    extra = dict(fields) if payload_len is None else {**fields, "payload_len": payload_len}

    async def scenario(kernel: FakeKernel) -> None:
        await kernel.handshake()
        cookie = kernel.cookie()
        await kernel.send(MsgType.PING, cookie, b"abc", **extra)
        header, payload = await kernel.recv()
        assert (header.cookie, header.status) == (cookie, errno.EPROTO)
        assert payload  # says what was wrong
        header, payload = await kernel.request(MsgType.PING, b"ok")
        assert (header.status, payload) == (0, b"ok")

    assert run(scenario) == 0


def test_garbage_is_dropped_without_an_answer(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(kernel: FakeKernel) -> None:
        await kernel.handshake()
        await kernel.loop.sock_sendall(kernel.sock, b"short")
        await kernel.send(MsgType.PING, kernel.cookie(), b"x", magic=0x12345678)
        await kernel.send(MsgType.PING | RESPONSE, kernel.cookie(), b"x")
        assert await kernel.silent(0.3)
        _, payload = await kernel.request(MsgType.PING, b"ok")
        assert payload == b"ok"

    assert run(scenario) == 0
    assert "short message" in caplog.text and "bad magic" in caplog.text


def test_refused_write_is_logged_and_daemon_keeps_going(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The kernel answers a write for a timed-out cookie with EINVAL."""
    real_write = os.write
    refused: list[int] = []

    def write(fd: int, data: bytes) -> int:
        if len(data) >= HDR_SIZE and parse_header(data).cookie == 999:
            refused.append(999)
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)

    async def scenario(kernel: FakeKernel) -> None:
        await kernel.handshake()
        await kernel.send(MsgType.PING, 999, b"too late")
        _, payload = await kernel.request(MsgType.PING, b"next")
        assert payload == b"next"

    assert run(scenario) == 0
    assert refused == [999]
    assert "refused the answer to PING cookie 999" in caplog.text and "EINVAL" in caplog.text


def test_end_of_file_ends_the_session() -> None:
    async def main() -> int:
        daemon_end, kernel_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with daemon_end:
            kernel_end.close()
            return await asyncio.wait_for(daemon.serve(daemon_end.fileno(), ALL), 5)

    assert asyncio.run(main()) == 1


def test_reply_fields() -> None:
    """The answer header: RESPONSE bit, same cookie, status, no flags/reserved."""
    async def scenario(kernel: FakeKernel) -> None:
        await kernel.handshake()
        header, _ = await kernel.request(MsgType.PING, b"abc")
        expected = Header(magic=0x4C345644, version=VERSION, type=MsgType.PING | RESPONSE,
                          cookie=header.cookie, payload_len=3, flags=0, status=0)
        assert header == expected

    assert run(scenario) == 0


# --- logging --------------------------------------------------------------------


def test_journal_prefix_on_every_line() -> None:
    formatter = JournalFormatter()
    record = logging.LogRecord("daedalus.dispatch", logging.INFO, __file__, 1,
                               "connected to %s", ("/dev/daedalus-v4l2",), None)
    assert formatter.format(record) == "<6>daedalusd: connected to /dev/daedalus-v4l2"
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "one\ntwo", (), None)
    assert formatter.format(record) == "<3>daedalusd: one\n<3>daedalusd: two"
    assert [priority(level) for level in (logging.DEBUG, logging.INFO, logging.WARNING,
                                          logging.ERROR, logging.CRITICAL)] == [7, 6, 4, 3, 2]


def test_setup_logging_verbose(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(verbose=True)
    logging.getLogger("daedalus.test").debug("details")
    setup_logging(verbose=False)  # replaces the first handler
    logging.getLogger("daedalus.test").debug("hidden")
    logging.getLogger("daedalus.test").warning("shown once")
    err = capsys.readouterr().err
    assert "<7>daedalusd: details" in err and "hidden" not in err
    assert err.count("<4>daedalusd: shown once") == 1


# --- the daedalusd command --------------------------------------------------------


def test_device_that_never_appears(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    start = time.monotonic()
    status = daemon.main(["--device", str(tmp_path / "daedalus-v4l2"), "--wait", "0.5"])
    elapsed = time.monotonic() - start
    assert status == 1
    assert 0.5 <= elapsed < 5
    err = capsys.readouterr().err
    assert f"<3>daedalusd: {tmp_path / 'daedalus-v4l2'} did not appear within 0.5 s" in err
    assert "daedalus_v4l2 module" in err


def test_device_that_appears_late(tmp_path: Path) -> None:
    path = tmp_path / "late"
    timer = threading.Timer(0.4, os.mkfifo, [path])
    timer.start()
    try:
        fd = daemon.open_device(str(path), wait=5)
    finally:
        timer.join()
    try:
        assert os.get_blocking(fd) is False
    finally:
        os.close(fd)


def test_device_permission_denied(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root opens anything")
    path = tmp_path / "locked"
    os.mkfifo(path, 0o000)
    with pytest.raises(daemon.DaemonError, match=r"(?i)permission denied"):
        daemon.open_device(str(path), wait=0)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_shuts_down_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    """daedalusd on a FIFO (it never speaks): connected, signalled, exits 0."""
    fifo = tmp_path / "fake-device"
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [sys.executable, "-m", "daedalus.dispatch.daemon", "--device", str(fifo), "--wait", "5"],
        stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if "handlers:" in line or "no handlers installed" in line:
                break  # serving
        assert any(f"<6>daedalusd: connected to {fifo}" in ln for ln in lines), lines
        proc.send_signal(sig)
        rest = proc.communicate(timeout=10)[1]
        assert proc.returncode == 0, "".join(lines) + rest
        assert f"<6>daedalusd: {sig.name} received, shutting down" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_while_waiting_for_the_device(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "daedalus.dispatch.daemon", "--device", str(tmp_path / "never"),
         "--wait", "30"], stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        first = ""
        while "waiting up to" not in first:  # the SIGTERM handler is in place by then
            line = proc.stderr.readline()
            assert line, "daedalusd exited early"
            first += line
        assert "<6>daedalusd: waiting up to 30 s for" in first
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=10)[1]
        assert proc.returncode == 0, first + err
        assert "interrupted" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_registry_error_is_fatal(monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    def broken(cls: type[Registry]) -> Registry:
        raise RegistryError("opcode PING (2) is claimed by both a and b")

    monkeypatch.setattr(Registry, "from_entry_points", classmethod(broken))
    assert daemon.main(["--device", "/nonexistent", "--wait", "0"]) == 1
    assert "<2>daedalusd: opcode PING (2) is claimed by both a and b" in capsys.readouterr().err
