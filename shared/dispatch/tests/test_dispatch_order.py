"""Request order: a handler's requests of one ``order_key`` reach ``handle`` in
the order daedalusd read them, one after the other; other keys run alongside.

The daemon core runs over a SOCK_SEQPACKET socket pair as in
test_dispatch_daemon.py; the test plays the kernel. A request's payload is
``key:label[:delay]`` (``Keyed.order_key`` reads the key: ``none`` is None,
``raise`` raises, ``list`` is unhashable), and the handlers log when each
``handle`` starts and ends.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Hashable, Iterator
from typing import Any, ClassVar

import pytest

from daedalus.dispatch import daemon
from daedalus.dispatch.loopback import recv, send, serve_until_done
from daedalus.dispatch.registry import Ordered, Registry, RegistryError
from daedalus.proto import (
    RESPONSE,
    Header,
    MsgType,
    pack_hello,
)

KEYED, BARRIER, OTHER, PLAIN, ASYNC = 0x51, 0x52, 0x53, 0x54, 0x55


class Keyed:
    """Ordered by the payload's key; sleeps the payload's delay; logs its calls."""

    OPCODES: ClassVar[tuple[int, ...]] = (KEYED,)
    PHASE: ClassVar[tuple[int, int]] = (8, 4)
    NAME: ClassVar[str] = "keyed"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, str]] = []  # ("start" | "end", label)
        self.running: set[bytes] = set()
        self.overlaps: list[str] = []  # labels that started while their key ran
        self.release = threading.Event()  # label "wait" blocks until set
        self.release.set()

    def order_key(self, header: Header, payload: bytes) -> Hashable | None:
        key = payload.split(b":")[0]
        if key == b"none":
            return None
        if key == b"raise":
            raise ValueError("no key in this payload")
        if key == b"list":
            return [key]  # type: ignore[return-value]  # (unhashable on purpose)
        return key

    def handle(self, header: Header, payload: bytes) -> tuple[int, bytes]:
        key, label, *delay = payload.decode().split(":")
        with self.lock:
            self.events.append(("start", label))
            if key.encode() in self.running:
                self.overlaps.append(label)
            self.running.add(key.encode())
        try:
            if label == "wait":
                assert self.release.wait(10)
            time.sleep(float(delay[0]) if delay else 0)
            if label == "boom":
                raise RuntimeError("boom")
            return 0, label.encode()
        finally:
            with self.lock:
                self.running.discard(key.encode())
                self.events.append(("end", label))


class Barrier:
    """Ordered by the payload's key; each request waits for a second one."""

    OPCODES: ClassVar[tuple[int, ...]] = (BARRIER,)
    PHASE: ClassVar[tuple[int, int]] = (8, 4)
    NAME: ClassVar[str] = "barrier"
    timeout = 5.0

    def __init__(self) -> None:
        self.barrier = threading.Barrier(2, timeout=self.timeout)

    def order_key(self, header: Header, payload: bytes) -> Hashable | None:
        key = payload.split(b":")[0]
        return None if key == b"none" else key

    def handle(self, header: Header, payload: bytes) -> tuple[int, bytes]:
        self.barrier.wait()  # BrokenBarrierError (EIO) unless another request waits too
        return 0, payload


class AsyncKeyed(Keyed):
    """Keyed, as an ``async def`` handle on the loop."""

    OPCODES: ClassVar[tuple[int, ...]] = (ASYNC,)
    NAME: ClassVar[str] = "async-keyed"

    async def handle(self, header: Header, payload: bytes) -> tuple[int, bytes]:  # type: ignore[override]
        _key, label, delay = payload.decode().split(":")
        self.events.append(("start", label))
        await asyncio.sleep(float(delay))
        self.events.append(("end", label))
        return 0, label.encode()


class Other(Keyed):
    """Another handler returning the same keys: its order is its own."""

    OPCODES: ClassVar[tuple[int, ...]] = (OTHER,)
    NAME: ClassVar[str] = "other"


class Plain:
    OPCODES: ClassVar[tuple[int, ...]] = (PLAIN,)
    PHASE: ClassVar[tuple[int, int]] = (8, 2)
    NAME: ClassVar[str] = "plain"

    def handle(self, header: Header, payload: bytes) -> tuple[int, bytes]:
        return 0, payload


Kernel = Callable[[socket.socket], Awaitable[None]]


@pytest.fixture
def sessions(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[daemon.Session]]:
    """The Sessions serve() makes, to look at their order keys."""
    made: list[daemon.Session] = []

    class Recorded(daemon.Session):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(daemon, "Session", Recorded)
    yield made


def serve(registry: Registry, kernel: Kernel) -> None:
    serve_until_done(registry, kernel)


async def hello(sock: socket.socket) -> None:
    await send(sock, MsgType.HELLO, 1, pack_hello())
    assert (await recv(sock))[0].status == 0


async def answers(sock: socket.socket, count: int) -> dict[int, tuple[int, bytes]]:
    """The next *count* answers: cookie -> (status, payload)."""
    got = {}
    for _ in range(count):
        header, body = await recv(sock)
        assert header.type & RESPONSE
        got[header.cookie] = (header.status, body)
    return got


def handler(registry: Registry, opcode: int) -> Any:
    registration = registry.lookup(opcode)
    assert registration is not None
    return registration.handler


# --- the registry ---------------------------------------------------------------


def test_ordered_handlers_are_the_ones_with_order_key() -> None:
    registry = Registry.from_classes([Keyed, Plain])
    keyed, plain = registry.lookup(KEYED), registry.lookup(PLAIN)
    assert keyed is not None and plain is not None
    assert isinstance(keyed.ordered, Keyed) and isinstance(keyed.handler, Ordered)
    assert plain.ordered is None
    assert "keyed (81 + ordered, phase 8.4" in registry.describe()
    assert "plain (84, phase 8.2" in registry.describe()


def test_order_key_that_is_not_a_method_is_refused() -> None:
    class NotCallable(Plain):
        order_key = 3

    with pytest.raises(RegistryError, match="order_key must be a method"):
        Registry.from_classes([NotCallable])


# --- through daedalusd ---------------------------------------------------------------


@pytest.mark.parametrize("opcode", [KEYED, ASYNC], ids=["worker", "async"])
def test_one_key_runs_in_read_order(opcode: int, sessions: list[daemon.Session]) -> None:
    """The first request sleeps longest: run concurrently, the later ones
    would start (and end) before it ends."""
    registry = Registry.from_classes([Keyed, AsyncKeyed])
    keyed = handler(registry, opcode)
    count = 5
    delays = [0.05 * (count - 1 - n) for n in range(count)]  # 0.2, 0.15, ..., 0

    async def kernel(sock: socket.socket) -> None:
        await hello(sock)
        for n, delay in enumerate(delays):
            await send(sock, opcode, 10 + n, f"s:{n}:{delay}".encode())
        assert await answers(sock, count) == {10 + n: (0, str(n).encode())
                                              for n in range(count)}

    serve(registry, kernel)
    assert keyed.events == [(what, str(n)) for n in range(count) for what in ("start", "end")]
    assert keyed.overlaps == []
    assert sessions[0].turns == {}


def test_one_key_keeps_its_order_past_a_failing_handler() -> None:
    registry = Registry.from_classes([Keyed])
    keyed = handler(registry, KEYED)

    async def kernel(sock: socket.socket) -> None:
        await hello(sock)
        await send(sock, KEYED, 10, b"s:boom:0.2")
        await send(sock, KEYED, 11, b"s:after:0")
        assert await answers(sock, 2) == {10: (errno.EIO, b"boom"), 11: (0, b"after")}

    serve(registry, kernel)
    assert keyed.events == [("start", "boom"), ("end", "boom"),
                            ("start", "after"), ("end", "after")]


@pytest.mark.parametrize(("keys", "concurrent"), [
    (("a", "b"), True),
    (("none", "none"), True),
    (("a", "a"), False),  # the control: one key cannot meet at the barrier
])
def test_different_keys_run_concurrently(keys: tuple[str, str], concurrent: bool,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Both requests wait at a barrier of two: they pass only if both run at once."""
    monkeypatch.setattr(Barrier, "timeout", 5.0 if concurrent else 0.5)
    registry = Registry.from_classes([Barrier])

    async def kernel(sock: socket.socket) -> None:
        await hello(sock)
        for cookie, key in enumerate(keys, 10):
            await send(sock, BARRIER, cookie, f"{key}:{cookie}".encode())
        got = await answers(sock, 2)
        statuses = {status for status, _ in got.values()}
        assert statuses == ({0} if concurrent else {errno.EIO}), got

    serve(registry, kernel)


def test_handlers_do_not_share_keys() -> None:
    """Two handlers returning the same key: each one's order is its own."""
    registry = Registry.from_classes([Keyed, Other])
    keyed = handler(registry, KEYED)
    keyed.release.clear()

    async def kernel(sock: socket.socket) -> None:
        await hello(sock)
        await send(sock, KEYED, 10, b"s:wait")
        await send(sock, OTHER, 11, b"s:other")
        assert await answers(sock, 1) == {11: (0, b"other")}
        keyed.release.set()
        assert await answers(sock, 1) == {10: (0, b"wait")}

    try:
        serve(registry, kernel)
    finally:
        keyed.release.set()


def test_key_state_lives_while_requests_of_the_key_are_pending(
        sessions: list[daemon.Session]) -> None:
    registry = Registry.from_classes([Keyed])
    keyed = handler(registry, KEYED)
    keyed.release.clear()

    async def kernel(sock: socket.socket) -> None:
        await hello(sock)
        await send(sock, KEYED, 10, b"s:wait")
        await send(sock, KEYED, 11, b"s:next")
        await send(sock, KEYED, 12, b"t:other")
        assert await answers(sock, 1) == {12: (0, b"other")}  # t was not held up
        session = sessions[0]
        assert [key for _opcodes, key in session.turns] == [b"s"]  # t's is gone
        assert keyed.events[-2:] == [("start", "other"), ("end", "other")]
        assert ("start", "next") not in keyed.events
        keyed.release.set()
        assert await answers(sock, 2) == {10: (0, b"wait"), 11: (0, b"next")}
        assert session.turns == {}

    try:
        serve(registry, kernel)
    finally:
        keyed.release.set()
    assert keyed.overlaps == []


def test_requests_waiting_for_their_turn_end_with_the_session(
        sessions: list[daemon.Session]) -> None:
    """Stopping the daemon cancels the requests still waiting: no hang, no state."""
    registry = Registry.from_classes([Keyed])
    keyed = handler(registry, KEYED)
    keyed.release.clear()

    async def kernel(sock: socket.socket) -> None:
        await hello(sock)
        for cookie in (10, 11, 12):
            await send(sock, KEYED, cookie, b"s:wait")
        while len(keyed.events) < 1:
            await asyncio.sleep(0.01)

    try:
        serve(registry, kernel)
    finally:
        keyed.release.set()
    assert keyed.events[0] == ("start", "wait")
    assert sessions[0].turns == {}


@pytest.mark.parametrize("key", ["raise", "list"])
def test_failing_order_key_is_answered_unordered(key: str,
                                                 caplog: pytest.LogCaptureFixture,
                                                 sessions: list[daemon.Session]) -> None:
    registry = Registry.from_classes([Keyed])

    async def kernel(sock: socket.socket) -> None:
        await hello(sock)
        await send(sock, KEYED, 10, f"{key}:answered".encode())
        assert await answers(sock, 1) == {10: (0, b"answered")}
        assert sessions[0].turns == {}

    serve(registry, kernel)
    assert "handler keyed: order_key failed on" in caplog.text
    assert "cookie 10" in caplog.text and "runs unordered" in caplog.text
