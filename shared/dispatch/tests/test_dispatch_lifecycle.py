"""Stream lifecycle: CLOSE_STREAM is the core's, fanned out to every handler
with per-stream state (``close_stream``), answered exactly once."""

from __future__ import annotations

import errno
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import ClassVar

import pytest

from daedalus.dispatch.loopback import recv, send, serve_until_done
from daedalus.dispatch.registry import Registry, RegistryError, StreamOwner
from daedalus.proto import (
    RESPONSE,
    Header,
    MsgType,
    pack_hello,
    pack_stream,
)

FIRST, SECOND, PLAIN = 0x41, 0x42, 0x43


class Streams:
    """A handler with per-stream state: opens a stream on any request."""

    OPCODES: ClassVar[tuple[int, ...]] = (FIRST,)
    PHASE: ClassVar[tuple[int, int]] = (8, 4)
    NAME: ClassVar[str] = "first"
    fail = False

    def __init__(self) -> None:
        self.open: set[int] = set()
        self.closed: list[int] = []
        self.lock = threading.Lock()

    def handle(self, header: Header, payload: bytes) -> tuple[int, bytes]:
        with self.lock:
            self.open.add(int.from_bytes(payload, "little"))
        return 0, b""

    def close_stream(self, stream_id: int) -> None:
        with self.lock:
            self.closed.append(stream_id)
            self.open.discard(stream_id)
        if self.fail:
            raise RuntimeError("close bug")


class LaterStreams(Streams):
    OPCODES: ClassVar[tuple[int, ...]] = (SECOND,)
    PHASE: ClassVar[tuple[int, int]] = (8, 5)
    NAME: ClassVar[str] = "second"


class FailingStreams(Streams):
    fail = True


class Plain:
    """No per-stream state: never told of a close."""

    OPCODES: ClassVar[tuple[int, ...]] = (PLAIN,)
    PHASE: ClassVar[tuple[int, int]] = (8, 3)
    NAME: ClassVar[str] = "plain"

    def handle(self, header: Header, payload: bytes) -> tuple[int, bytes]:
        return 0, payload


def handlers(registry: Registry) -> dict[str, Streams]:
    return {r.name: r.handler for r in registry.registrations if isinstance(r.handler, Streams)}


def test_stream_owners_are_the_handlers_with_close_stream() -> None:
    registry = Registry.from_classes([LaterStreams, Plain, Streams])
    assert [r.name for r in registry.stream_owners] == ["first", "second"]
    assert all(isinstance(r.handler, StreamOwner) for r in registry.stream_owners)
    plain = registry.lookup(PLAIN)
    assert plain is not None and not isinstance(plain.handler, StreamOwner)
    assert "first (65 + stream close, phase 8.4" in registry.describe()


def test_both_handlers_see_the_close() -> None:
    registry = Registry.from_classes([Streams, LaterStreams, Plain])
    assert registry.close_stream(7) == []
    assert {name: h.closed for name, h in handlers(registry).items()} == {
        "first": [7], "second": [7]}


def test_a_failing_handler_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    registry = Registry.from_classes([FailingStreams, LaterStreams])
    failed = registry.close_stream(9)
    assert [(reg.name, str(exc)) for reg, exc in failed] == [("first", "close bug")]
    assert handlers(registry)["second"].closed == [9]
    assert "handler first failed to close stream 9" in caplog.text


def test_claiming_close_stream_is_fatal() -> None:
    class Claims(Plain):
        OPCODES: ClassVar[tuple[int, ...]] = (MsgType.CLOSE_STREAM,)

    with pytest.raises(RegistryError, match=r"CLOSE_STREAM \(4\) is claimed by both the daedalusd "
                                             r"core and"):
        Registry.from_classes([Claims])


def test_close_stream_that_is_not_a_method_is_refused() -> None:
    class NotCallable(Plain):
        close_stream = 3

    with pytest.raises(RegistryError, match="close_stream must be a method"):
        Registry.from_classes([NotCallable])


# --- through daedalusd ---------------------------------------------------------------

Kernel = Callable[[socket.socket], Awaitable[None]]


def serve(registry: Registry, kernel: Kernel) -> None:
    serve_until_done(registry, kernel)


async def silent(sock: socket.socket, timeout: float = 0.3) -> bool:
    try:
        await recv(sock, timeout)
    except TimeoutError:
        return True
    return False


@pytest.mark.parametrize("classes", [[Streams, LaterStreams, Plain],
                                     [FailingStreams, LaterStreams],
                                     [Plain]], ids=["two-owners", "one-fails", "no-owner"])
def test_close_stream_answered_once_after_every_owner(classes: list[type]) -> None:
    registry = Registry.from_classes(classes)
    owners = handlers(registry)

    async def kernel(sock: socket.socket) -> None:
        await send(sock, MsgType.HELLO, 1, pack_hello())
        assert (await recv(sock))[0].status == 0
        for cookie, opcode in enumerate((FIRST, SECOND), 2):
            if registry.lookup(opcode) is not None:
                await send(sock, opcode, cookie, (5).to_bytes(4, "little"))
                assert (await recv(sock))[0].status == 0
        assert all(h.open == {5} for h in owners.values())
        await send(sock, MsgType.CLOSE_STREAM, 10, pack_stream(5))
        answer, body = await recv(sock)
        assert (answer.type, answer.cookie, answer.status, body) == (
            MsgType.CLOSE_STREAM | RESPONSE, 10, 0, b"")
        # every owner was told before the answer was written
        assert all(h.closed == [5] and not h.open for h in owners.values())
        assert await silent(sock)  # exactly one answer

    serve(registry, kernel)


@pytest.mark.parametrize("bad", [pack_stream(4)[:-1], pack_stream(4) + b"\0",
                                 pack_stream(4, reserved=[0, 1])],
                         ids=["short", "long", "reserved"])
def test_malformed_close_stream_is_einval_and_closes_nothing(bad: bytes) -> None:
    registry = Registry.from_classes([Streams])

    async def kernel(sock: socket.socket) -> None:
        await send(sock, MsgType.HELLO, 1, pack_hello())
        await recv(sock)
        await send(sock, MsgType.CLOSE_STREAM, 2, bad)
        answer, body = await recv(sock)
        assert (answer.type, answer.status) == (MsgType.CLOSE_STREAM | RESPONSE, errno.EINVAL)
        assert body
        assert await silent(sock)

    serve(registry, kernel)
    assert handlers(registry)["first"].closed == []
