"""Message handlers: plugins from the ``daedalus.handlers`` entry-point group.

Each phase's distribution adds the request types it serves by being
installed, e.g. ``ping = "daedalus.bridge.echo:PingHandler"``. A handler is a
class with

- ``OPCODES``: the message types it answers (tuple of ints, without RESPONSE);
- ``PHASE``: the roadmap phase that introduced it, e.g. ``(8, 2)``;
- ``NAME``: a short name for logs;
- ``handle(self, header, payload) -> (status, payload)``: status 0 or a
  positive errno, and the answer's payload. A plain (blocking) method runs in
  the event loop's default executor; an ``async def`` runs on the loop.

Declare the three attributes as ``ClassVar[...]`` (see daedalus.bridge.echo)
so that mypy can check a class against the ``Handler`` protocol. Handlers are
instantiated once, without arguments. Two handlers claiming the
same opcode is a startup error naming both, and so is a handler claiming HELLO
or CLOSE_STREAM: the daemon core answers those itself.

Stream lifecycle: a handler that keeps state per kernel stream also defines
``close_stream(self, stream_id) -> None`` (the ``StreamOwner`` protocol). The
core answers every CLOSE_STREAM after calling ``close_stream`` of each such
handler, in registration order (``Registry.close_stream``); one that raises
is logged and the others still run. So a later phase adds its per-stream
state without touching an earlier phase's handler.

Request order: the core hands requests to their handlers concurrently, so
two requests of one stream may reach ``handle`` in either order (worker
threads take a stream's lock in no particular order). A handler whose
requests must run in the order the kernel sent them also defines
``order_key(self, header, payload) -> Hashable | None`` (the ``Ordered``
protocol), e.g. the request's stream id. Of one handler's requests with the
same key, each one's ``handle`` starts only after the previous one's
returned, in the order they were read from the device (their answers may
be written in any order); requests with another key or None run
concurrently. ``order_key`` runs on the event loop for every request: it only
reads the payload's fixed fields, never blocks, and returns None for a
payload it cannot read (``handle`` refuses it). One that raises is logged and
its request is handled unordered.

The device: a handler that asks the kernel for more than the request's
payload (phase 8.6: the dma-bufs of a request's buffers, with
DAEDALUS_IOC_GET_DMABUF) also defines ``attach_device(self, device) -> None``
(the ``DeviceUser`` protocol). When daedalusd starts serving a device it
calls ``attach_device`` of each such handler, in registration order, with a
``daedalus.dispatch.device.Device`` for it (``Registry.attach_device``); one
that raises is logged and the others are still attached. The handler keeps
it and uses it from ``handle``; when the session ends the device is
detached (its calls fail with ENOTCONN). A handler that was never attached
(tests, an embedding without a device) refuses what needs one.

Entry points come in no reliable order, so handlers are sorted by
(PHASE, opcode).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

from daedalus.dispatch.device import Device
from daedalus.dispatch.entrypoints import entry_points
from daedalus.proto import RESPONSE, Header, MsgType

log = logging.getLogger("daedalus.dispatch")

GROUP = "daedalus.handlers"
CORE_OWNER = "the daedalusd core"
# Answered by the core: HELLO itself, CLOSE_STREAM after the StreamOwners.
CORE_OPCODES = (int(MsgType.HELLO), int(MsgType.CLOSE_STREAM))

HandlerResult = tuple[int, bytes]


class RegistryError(Exception):
    """The handlers cannot be registered (fatal at daemon start)."""


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class EntryPointLike(Protocol):
    """An importlib.metadata.EntryPoint, or daedalus.dispatch.entrypoints' own."""

    @property
    def name(self) -> str: ...

    @property
    def value(self) -> str: ...

    @property
    def dist(self) -> _Named | None: ...

    def load(self) -> Any: ...


class Handler(Protocol):
    OPCODES: ClassVar[tuple[int, ...]]
    PHASE: ClassVar[tuple[int, int]]
    NAME: ClassVar[str]

    def handle(self, header: Header, payload: bytes) -> HandlerResult | Awaitable[HandlerResult]:
        ...


@runtime_checkable
class StreamOwner(Protocol):
    """A handler with per-stream state: told of every CLOSE_STREAM.

    ``close_stream`` runs in a worker thread; it drops the stream's state
    (an unknown stream is not an error: the kernel closes streams that never
    reached this handler) and may wait for a request still running on it."""

    def close_stream(self, stream_id: int) -> None: ...


@runtime_checkable
class Ordered(Protocol):
    """A handler whose requests of one key (e.g. one stream) run in read order.

    ``order_key`` runs on the event loop when the request is read: cheap, no
    blocking; None (a payload it cannot read, a request of no stream) puts no
    order on the request."""

    def order_key(self, header: Header, payload: bytes) -> Hashable | None: ...


@runtime_checkable
class DeviceUser(Protocol):
    """A handler that reaches the device itself (e.g. ``Device.get_dmabuf``).

    ``attach_device`` runs on the event loop when daedalusd starts serving a
    device, before any request: it only keeps *device* (cheap, no
    blocking). It may run again with another device for a new session."""

    def attach_device(self, device: Device) -> None: ...


def _each(registrations: Iterable[Registration], call: Callable[[Registration], None],
          what: str) -> list[tuple[Registration, Exception]]:
    """*call* each registration in order; never raises. Returns the ones that
    failed (each logged as failing to *what*), with their exception: one
    handler's bug must not cost the others."""
    failed: list[tuple[Registration, Exception]] = []
    for reg in registrations:
        try:
            call(reg)
        except Exception as exc:
            log.exception("handler %s failed to %s", reg.name, what)
            failed.append((reg, exc))
    return failed


def opcode_name(opcode: int) -> str:
    try:
        return f"{MsgType(opcode).name} ({opcode})"
    except ValueError:
        return str(opcode)


def _qualname(obj: object) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"


def close_stream_absent(stream_id: int) -> None:
    """Stands for a handler's missing close_stream (it keeps no per-stream state)."""


def order_key_absent(header: Header, payload: bytes) -> None:
    """Stands for a handler's missing order_key (its requests run in any order)."""


def attach_device_absent(device: Device) -> None:
    """Stands for a handler's missing attach_device (it never needs the device)."""


@dataclass(frozen=True)
class Registration:
    """One handler instance and where it came from."""

    handler: Handler
    name: str
    phase: tuple[int, int]
    opcodes: tuple[int, ...]
    owner: str  # "distribution (module:Class)", for error messages and logs

    @property
    def stream_owner(self) -> StreamOwner | None:
        """The handler, if it keeps per-stream state (has close_stream)."""
        return self.handler if isinstance(self.handler, StreamOwner) else None

    @property
    def ordered(self) -> Ordered | None:
        """The handler, if some of its requests must run in read order (has order_key)."""
        return self.handler if isinstance(self.handler, Ordered) else None

    @property
    def device_user(self) -> DeviceUser | None:
        """The handler, if it uses the device itself (has attach_device)."""
        return self.handler if isinstance(self.handler, DeviceUser) else None

    @property
    def phase_text(self) -> str:
        return f"{self.phase[0]}.{self.phase[1]}"

    @classmethod
    def of(cls, handler_class: object, owner: str | None = None) -> Registration:
        """Check a handler class's attributes and instantiate it."""
        owner = owner or _qualname(handler_class)
        if not isinstance(handler_class, type):
            raise RegistryError(f"handler {owner} is not a class")
        opcodes = getattr(handler_class, "OPCODES", None)
        phase = getattr(handler_class, "PHASE", None)
        name = getattr(handler_class, "NAME", None)
        if not (isinstance(opcodes, tuple) and opcodes
                and all(isinstance(op, int) and 0 < op < RESPONSE for op in opcodes)):
            raise RegistryError(f"handler {owner}: OPCODES must be a non-empty tuple of message "
                                f"types between 1 and {RESPONSE - 1:#x}, not {opcodes!r}")
        if len(set(opcodes)) != len(opcodes):
            raise RegistryError(f"handler {owner}: OPCODES lists an opcode twice: {opcodes!r}")
        if not (isinstance(phase, tuple) and len(phase) == 2
                and all(isinstance(p, int) and 0 <= p < 10 for p in phase)):
            raise RegistryError(f"handler {owner}: PHASE must be (major, minor) with single "
                                f"digits, e.g. (8, 2), not {phase!r}")
        if not (isinstance(name, str) and name):
            raise RegistryError(f"handler {owner}: NAME must be a non-empty string")
        if not callable(getattr(handler_class, "handle", None)):
            raise RegistryError(f"handler {owner} has no handle(header, payload) method")
        if not callable(getattr(handler_class, "close_stream", close_stream_absent)):
            raise RegistryError(f"handler {owner}: close_stream must be a method "
                                "close_stream(stream_id)")
        if not callable(getattr(handler_class, "order_key", order_key_absent)):
            raise RegistryError(f"handler {owner}: order_key must be a method "
                                "order_key(header, payload)")
        if not callable(getattr(handler_class, "attach_device", attach_device_absent)):
            raise RegistryError(f"handler {owner}: attach_device must be a method "
                                "attach_device(device)")
        try:
            handler: Handler = handler_class()
        except Exception as exc:
            raise RegistryError(f"handler {owner} failed to initialise: {exc!r}") from exc
        return cls(handler=handler, name=name, phase=(phase[0], phase[1]),
                   opcodes=tuple(int(op) for op in opcodes), owner=owner)


class Registry:
    """Handlers by opcode; construction fails on any conflict."""

    def __init__(self, registrations: Iterable[Registration] = ()) -> None:
        self.registrations: tuple[Registration, ...] = tuple(
            sorted(registrations, key=lambda r: (r.phase, r.opcodes, r.owner)))
        table: dict[int, Registration] = {}
        claims = sorted(((r.phase, op, r) for r in self.registrations for op in r.opcodes),
                        key=lambda claim: (claim[0], claim[1], claim[2].owner))
        for _phase, opcode, reg in claims:
            if opcode in CORE_OPCODES:
                raise RegistryError(f"opcode {opcode_name(opcode)} is claimed by both "
                                    f"{CORE_OWNER} and {reg.owner}")
            if opcode in table:
                raise RegistryError(f"opcode {opcode_name(opcode)} is claimed by both "
                                    f"{table[opcode].owner} and {reg.owner}")
            table[opcode] = reg
        self._table = table

    @classmethod
    def from_classes(cls, handler_classes: Iterable[object]) -> Registry:
        """Register handler classes directly (tests, embedding)."""
        return cls(Registration.of(c) for c in handler_classes)

    @classmethod
    def from_entry_points(cls, eps: Iterable[EntryPointLike] | None = None) -> Registry:
        """Load every handler installed in the ``daedalus.handlers`` group (read
        by entrypoints.py: importlib.metadata costs seconds under emulation)."""
        found = entry_points(GROUP) if eps is None else eps
        registrations = []
        for ep in found:
            dist = ep.dist.name if ep.dist else "unknown distribution"
            owner = f"{dist} ({ep.value})"
            try:
                handler_class = ep.load()
            except Exception as exc:
                raise RegistryError(f"handler entry point {ep.name!r} of {owner} failed to "
                                    f"load: {exc!r}") from exc
            registrations.append(Registration.of(handler_class, owner))
        return cls(registrations)

    def lookup(self, opcode: int) -> Registration | None:
        return self._table.get(opcode)

    @property
    def stream_owners(self) -> tuple[Registration, ...]:
        """The registrations whose handler keeps per-stream state, in order."""
        return tuple(r for r in self.registrations if r.stream_owner is not None)

    def close_stream(self, stream_id: int) -> list[tuple[Registration, Exception]]:
        """Tell every StreamOwner that *stream_id* is closed, in registration
        order; never raises. Returns the handlers that failed (each logged),
        with their exception: a handler's bug must not keep the others' state."""
        def close(reg: Registration) -> None:
            assert reg.stream_owner is not None
            reg.stream_owner.close_stream(stream_id)

        return _each(self.stream_owners, close, f"close stream {stream_id}")

    @property
    def device_users(self) -> tuple[Registration, ...]:
        """The registrations whose handler uses the device itself, in order."""
        return tuple(r for r in self.registrations if r.device_user is not None)

    def attach_device(self, device: Device) -> list[tuple[Registration, Exception]]:
        """Hand *device* to every DeviceUser, in registration order; never
        raises. Returns the handlers that failed (each logged), with their
        exception: the others are attached all the same."""
        def attach(reg: Registration) -> None:
            assert reg.device_user is not None
            reg.device_user.attach_device(device)

        return _each(self.device_users, attach, "attach the device")

    @property
    def opcodes(self) -> Sequence[int]:
        return sorted(self._table)

    def hello_phase(self) -> int:
        """The HELLO answer's phase: the highest handler PHASE, (8, 2) -> 82; 0 if none."""
        if not self.registrations:
            return 0
        major, minor = max(r.phase for r in self.registrations)
        return major * 10 + minor

    def describe(self) -> str:
        return ", ".join(f"{r.name} ({'/'.join(opcode_name(op) for op in r.opcodes)}"
                         f"{' + stream close' if r.stream_owner is not None else ''}"
                         f"{' + ordered' if r.ordered is not None else ''}"
                         f"{' + device' if r.device_user is not None else ''}, phase "
                         f"{r.phase_text}, {r.owner})" for r in self.registrations) or "none"
