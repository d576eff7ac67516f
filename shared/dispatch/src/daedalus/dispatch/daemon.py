"""daedalusd: serve the daedalus_v4l2 kernel module's requests.

The module queues requests on the misc device /dev/daedalus-v4l2; each read(2)
returns exactly one message and each write(2) takes exactly one. The daemon
opens the device non-blocking, watches it with the asyncio loop's
``add_reader`` and

- answers HELLO itself (same cookie, status 0, its struct daedalus_hello); a
  kernel speaking another protocol version is a fatal error (exit 1);
- answers CLOSE_STREAM itself, exactly once, after every handler that keeps
  per-stream state (``close_stream``, see registry.py) dropped the stream, in
  a worker thread; a handler that raises is logged and the stream is closed
  all the same (status 0). A malformed CLOSE_STREAM is EINVAL;
- hands every other request to the handler registered for its type (see
  registry.py), in a pool of worker threads so a slow handler never stops
  the reading, and writes the handler's answer (type | RESPONSE, same cookie);
- keeps the read order among a handler's requests of one order key (its
  ``order_key``, see registry.py: e.g. one stream's FEEDs): a request takes
  its place behind the previous one of its key as it is read, and its
  handler starts once the previous one's returned. Without that, a worker
  could overtake another: after a lost answer the kernel's next FEED could
  be decoded before the earlier one. A key's queue is dropped with its last
  request; an ``order_key`` that raises is logged and its request unordered;
- reads no more requests than it has workers: with as many requests in
  flight it stops reading until one is answered. The kernel counts a read
  request's time from the read and queues the unread ones fairly per user,
  so a burst of requests waits in the kernel's fair queue, not in ours where
  the last of them would outlive the kernel's watchdog;
- answers a type nobody handles with EOPNOTSUPP, a handler's exception with
  EIO and the exception's text, a malformed request with EPROTO;
- logs and survives a write the kernel refuses (EINVAL: e.g. the request
  timed out meanwhile and its cookie is no longer waiting);
- hands the device to the handlers that use it themselves
  (``attach_device``, see registry.py and device.py: the dma-bufs of a
  request's buffers) when the session starts, and detaches it when the
  session ends.

With ``--user NAME`` (and ``--group``) it opens the device as root and then
drops its privileges for good before it reads a single request
(privileges.py: that user and group, no supplementary groups, no
capabilities, no_new_privs in every thread, working directory ``/``), so
FFmpeg's parse of the application's bitstream never runs privileged. The
device's fd stays open across the drop: the kernel checks CAP_SYS_ADMIN only
at open(2); the requests, answers and dma-bufs (fds from ioctls on that
fd) need no privilege. The daemon opens nothing by path after the drop (the
unprivileged user may not even read the Python installation), so what it
and its handlers load must be loaded before it: the handlers' modules are
imported at registration, and a handler makes its start-up choices (say,
from entry points) when it is instantiated. A drop that fails or is incomplete is
fatal: daedalusd never serves as root when asked not to.

SIGTERM and SIGINT shut it down cleanly (exit 0). ``serve`` is the daemon
without the device opening, privilege drop and signal handling, for tests
and embedding.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import concurrent.futures.thread  # (ThreadPoolExecutor: imported here, before the drop)
import errno
import inspect
import logging
import os
import signal
import sys
import time
from collections.abc import Coroutine, Hashable, Iterable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from daedalus.dispatch import privileges
from daedalus.dispatch.device import Device
from daedalus.dispatch.log import setup_logging
from daedalus.dispatch.registry import HandlerResult, Registration, Registry, RegistryError
from daedalus.proto import (
    HDR_SIZE,
    MAGIC,
    MAX_PAYLOAD,
    RESPONSE,
    VERSION,
    Header,
    MsgType,
    ProtocolError,
    VersionMismatch,
    describe_type,
    encode_message,
    pack_hello,
    pack_message,
    parse_header,
    parse_hello,
    parse_stream,
    request_stream,
    validate_hello,
    validate_request,
)

log = logging.getLogger("daedalus.dispatch")

DEFAULT_DEVICE = "/dev/daedalus-v4l2"
DEFAULT_WAIT = 30.0
POLL_INTERVAL = 0.2
EXIT_OK = 0
EXIT_FAILURE = 1
READ_SIZE = HDR_SIZE + MAX_PAYLOAD
READS_PER_WAKEUP = 32  # then let the answers be written before reading on
# Requests read but not yet answered, and the worker threads running them:
# ThreadPoolExecutor's own default, one per CPU + 4 (decoders release the GIL).
DEFAULT_IN_FLIGHT = min(32, (os.cpu_count() or 1) + 4)


class DaemonError(Exception):
    """daedalusd cannot start (device missing, busy, not permitted)."""


def errno_name(code: int | None) -> str:
    return errno.errorcode.get(code, str(code)) if code is not None else "?"


def open_device(path: str, wait: float, *, poll: float = POLL_INTERVAL) -> int:
    """Open *path* read-write, non-blocking, waiting up to *wait* seconds for it
    to appear (daedalusd may start before the module is loaded)."""
    deadline = time.monotonic() + wait
    waiting = False
    while True:
        try:
            return os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            if time.monotonic() >= deadline:
                raise DaemonError(f"{path} did not appear within {wait:g} s: is the "
                                  "daedalus_v4l2 module (phase >= 8.2) loaded?") from None
            if not waiting:
                log.info("waiting up to %g s for %s", wait, path)
                waiting = True
            time.sleep(poll)
        except PermissionError as exc:
            raise DaemonError(f"cannot open {path}: {exc.strerror} (the device is mode 0600: "
                              "run daedalusd as root)") from None
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise DaemonError(f"{path} is busy: another daedalusd is already "
                                  "connected (one daemon at a time)") from None
            raise DaemonError(f"cannot open {path}: {exc.strerror} "
                              f"({errno_name(exc.errno)})") from None


def _check_result(result: object) -> HandlerResult:
    """A handler's (status, payload), or ValueError saying what is wrong with it."""
    if not (isinstance(result, tuple) and len(result) == 2):
        raise ValueError(f"handler returned {type(result).__name__}, not (status, payload)")
    status, body = result
    if not (isinstance(status, int) and not isinstance(status, bool) and 0 <= status < 2**32):
        raise ValueError(f"handler returned status {status!r}, not 0 or a positive errno")
    if not isinstance(body, bytes | bytearray | memoryview):
        raise ValueError(f"handler returned a {type(body).__name__} payload, not bytes")
    return status, bytes(body)


# A handler's OPCODES (no two handlers share one) and its order_key: each
# handler's keys are its own.
OrderKey = tuple[tuple[int, ...], Hashable]


@dataclass(frozen=True)
class Turn:
    """A request's place among the requests of its order key: its handler
    may start once *previous* is done (the request read before it returned
    from its handler), and it sets *done* when its own handler returned."""

    key: OrderKey
    previous: asyncio.Future[None] | None
    done: asyncio.Future[None]


class Session:
    """One open device: reads requests from *fd* and answers them."""

    def __init__(self, fd: int, registry: Registry, loop: asyncio.AbstractEventLoop,
                 *, max_in_flight: int = DEFAULT_IN_FLIGHT) -> None:
        self.fd = fd
        self.registry = registry
        self.loop = loop
        self.max_in_flight = max(1, max_in_flight)
        self.in_flight = 0  # handler requests read and not yet answered
        self.reading = False  # the loop watches fd for requests
        self.closing = False  # close() began: never read again
        self.executor = concurrent.futures.ThreadPoolExecutor(
            self.max_in_flight, thread_name_prefix="daedalusd")
        self.connected = False  # the kernel's HELLO was answered
        self.kernel_max_payload = MAX_PAYLOAD
        self.done: asyncio.Future[int] = loop.create_future()
        self._tasks: set[asyncio.Task[object]] = set()
        self._write_lock = asyncio.Lock()
        # Per order key, the last request read: its Turn's done (see _turn).
        self.turns: dict[OrderKey, asyncio.Future[None]] = {}
        # One buffer for every read: a message is copied out at its own size
        # instead of allocating HDR_SIZE + MAX_PAYLOAD bytes per read.
        self._buffer = bytearray(READ_SIZE)
        self._view = memoryview(self._buffer)
        # The handlers that use the device themselves get it now, before any
        # request; close() detaches it.
        self.device = Device(fd)
        registry.attach_device(self.device)

    # -- reading ---------------------------------------------------------

    def finish(self, code: int) -> None:
        """End the session with exit status *code* (the first call wins)."""
        if not self.done.done():
            self.done.set_result(code)

    def start_reading(self) -> None:
        if not self.reading and not self.closing and not self.done.done():
            self.loop.add_reader(self.fd, self.on_readable)
            self.reading = True

    def stop_reading(self) -> None:
        if self.reading:
            self.loop.remove_reader(self.fd)
            self.reading = False

    def on_readable(self) -> None:
        for _ in range(READS_PER_WAKEUP):
            if self.done.done():
                return
            if self.in_flight >= self.max_in_flight:
                self.stop_reading()  # resumed when an answer is written
                return
            try:
                size = os.readv(self.fd, [self._buffer])
            except BlockingIOError:
                return
            except OSError as exc:
                log.error("reading the device failed: %s (%s)", exc.strerror,
                          errno_name(exc.errno))
                self.finish(EXIT_FAILURE)
                return
            if not size:
                log.error("the device reported end of file: the kernel side went away")
                self.finish(EXIT_FAILURE)
                return
            self.on_message(bytes(self._view[:size]))

    def on_message(self, data: bytes) -> None:
        try:
            header = parse_header(data)
        except ProtocolError as exc:
            log.error("dropping a message from the kernel: %s", exc)
            return
        payload = data[HDR_SIZE:]
        if log.isEnabledFor(logging.DEBUG):  # (every message: no work when not --verbose)
            stream = request_stream(header, payload)
            log.debug("<- %s cookie %d, %s%d payload bytes", describe_type(header.type),
                      header.cookie, "" if stream is None else f"stream {stream}, ",
                      len(payload))
        try:
            validate_request(header, payload)
        except VersionMismatch as exc:
            log.error("%s: exiting", exc)
            self.finish(EXIT_FAILURE)
            return
        except ProtocolError as exc:
            log.error("invalid %s request, cookie %d: %s", describe_type(header.type),
                      header.cookie, exc)
            if header.magic == MAGIC and not header.is_response:
                self.spawn(self.reply(header, errno.EPROTO, str(exc).encode()))
            return
        if header.type == MsgType.HELLO:
            self.on_hello(header, payload)
            return
        if not self.connected:
            log.error("%s request, cookie %d, before HELLO", describe_type(header.type),
                      header.cookie)
            self.spawn(self.reply(header, errno.EPROTO, b"request before HELLO"))
            return
        if header.type == MsgType.CLOSE_STREAM:
            self.spawn_request(self.close_stream(header, payload))
            return
        registration = self.registry.lookup(header.type)
        if registration is None:
            log.warning("no handler for %s requests (cookie %d): answering EOPNOTSUPP",
                        describe_type(header.type), header.cookie)
            self.spawn(self.reply(header, errno.EOPNOTSUPP, b""))
            return
        self.spawn_request(self.dispatch(registration, header, payload,
                                         self._turn(registration, header, payload)))

    def on_hello(self, header: Header, payload: bytes) -> None:
        try:
            hello = parse_hello(payload)
            validate_hello(hello)
        except VersionMismatch as exc:
            log.error("%s: exiting (load a daedalus_v4l2 module and a daedalusd of the same "
                      "checkout)", exc)
            self.finish(EXIT_FAILURE)
            return
        except ProtocolError as exc:
            log.error("invalid HELLO from the kernel: %s: exiting", exc)
            self.finish(EXIT_FAILURE)
            return
        self.kernel_max_payload = min(hello.max_payload, MAX_PAYLOAD)
        self.connected = True
        phase = self.registry.hello_phase()
        log.info("kernel speaks protocol v%d (phase %d.%d, max payload %d); answering as "
                 "phase %d.%d", hello.proto_version, hello.phase // 10, hello.phase % 10,
                 hello.max_payload, phase // 10, phase % 10)
        self.spawn(self.reply(header, 0, pack_hello(proto_version=VERSION,
                                                    max_payload=MAX_PAYLOAD, phase=phase)))

    # -- answering -------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _call(self, registration: Registration, header: Header, payload: bytes) -> object:
        handle = registration.handler.handle
        if inspect.iscoroutinefunction(handle):  # async def: runs on the loop
            result = handle(header, payload)
            return await result if inspect.isawaitable(result) else result
        return await self.loop.run_in_executor(self.executor, handle, header, payload)

    def spawn_request(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run the answer to a request read from the device; it counts as in
        flight (see on_readable) until it is written."""
        self.in_flight += 1
        self.spawn(self._in_flight(coro))

    async def _in_flight(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        finally:
            self.in_flight -= 1
            self.start_reading()

    # -- request order (order_key, see registry.py) ------------------------

    def _turn(self, registration: Registration, header: Header, payload: bytes) -> Turn | None:
        """The request's place behind the last request of its order key, or
        None if it has none. Taken when the request is read (on_message), not
        in its task, so the places follow the read order."""
        ordered = registration.ordered
        if ordered is None:
            return None
        try:
            key = ordered.order_key(header, payload)
            if key is None:
                return None
            order_key: OrderKey = (registration.opcodes, key)
            previous = self.turns.get(order_key)  # TypeError if the key is unhashable
        except Exception as exc:
            log.warning("handler %s: order_key failed on %s cookie %d: %r; the request "
                        "runs unordered", registration.name, describe_type(header.type),
                        header.cookie, exc)
            return None
        done: asyncio.Future[None] = self.loop.create_future()
        self.turns[order_key] = done
        return Turn(order_key, previous, done)

    def _end_turn(self, turn: Turn) -> None:
        """*turn*'s handler returned (or never will run): the next request of
        its key may start. A request cancelled while it waited (the session
        closes) passes its place on only when the one before it is done."""
        previous = turn.previous
        if previous is not None and not previous.done():
            previous.add_done_callback(lambda _previous: self._end_turn(turn))
            return
        if not turn.done.done():
            turn.done.set_result(None)
        if self.turns.get(turn.key) is turn.done:  # the last of its key
            del self.turns[turn.key]

    async def _call_in_turn(self, registration: Registration, header: Header, payload: bytes,
                            turn: Turn | None) -> object:
        """_call, once the request read before it with the same order key returned."""
        if turn is None:
            return await self._call(registration, header, payload)
        try:
            if turn.previous is not None and not turn.previous.done():
                await asyncio.wait((turn.previous,))  # (cancelling us leaves it alone)
            return await self._call(registration, header, payload)
        finally:
            self._end_turn(turn)

    async def dispatch(self, registration: Registration, header: Header, payload: bytes,
                       turn: Turn | None = None) -> None:
        try:
            status, body = _check_result(
                await self._call_in_turn(registration, header, payload, turn))
        except Exception as exc:
            log.error("handler %s failed on %s cookie %d: %r", registration.name,
                      describe_type(header.type), header.cookie, exc,
                      exc_info=log.isEnabledFor(logging.DEBUG))
            status, body = errno.EIO, (str(exc) or type(exc).__name__).encode(errors="replace")
        await self.reply(header, status, body)

    async def close_stream(self, header: Header, payload: bytes) -> None:
        """CLOSE_STREAM: every StreamOwner drops the stream, then one answer."""
        try:
            stream = parse_stream(payload)
            if any(stream.reserved):
                raise ProtocolError(f"stream reserved words not zero: {list(stream.reserved)}")
        except ProtocolError as exc:
            log.warning("malformed CLOSE_STREAM, cookie %d: %s", header.cookie, exc)
            await self.reply(header, errno.EINVAL, encode_message(str(exc)))
            return
        # Blocking (a handler waits for a request still running on the
        # stream): in a worker; Registry.close_stream never raises.
        await self.loop.run_in_executor(self.executor, self.registry.close_stream,
                                        stream.stream_id)
        await self.reply(header, 0, b"")

    async def reply(self, header: Header, status: int, body: bytes) -> bool:
        """Write the answer to *header*'s request; False if it could not be written."""
        if len(body) > self.kernel_max_payload:
            if status == 0:
                log.error("%s answer to cookie %d is %d bytes, the kernel takes at most %d: "
                          "answering EMSGSIZE", describe_type(header.type), header.cookie,
                          len(body), self.kernel_max_payload)
                status, body = errno.EMSGSIZE, b"answer too large"
            else:  # an error text: shorten it
                body = body[:self.kernel_max_payload]
        message = pack_message(header.type | RESPONSE, header.cookie, body, status=status)
        # Logged before the write: a log line never lags behind the kernel
        # having the answer (a daemon stopped between the write and the line
        # would show a request as still pending); a refusal is logged next.
        log.debug("-> %s cookie %d, status %d, %d payload bytes",
                  describe_type(header.type | RESPONSE), header.cookie, status, len(body))
        async with self._write_lock:
            while True:
                try:
                    written = os.write(self.fd, message)
                except BlockingIOError:
                    await self._writable()
                    continue
                except OSError as exc:
                    log.warning("the kernel refused the answer to %s cookie %d: %s (%s); the "
                                "request may have timed out", describe_type(header.type),
                                header.cookie, exc.strerror, errno_name(exc.errno))
                    return False
                break
        if written != len(message):
            log.error("short write answering cookie %d: %d of %d bytes", header.cookie,
                      written, len(message))
            return False
        return True

    async def _writable(self) -> None:
        ready: asyncio.Future[None] = self.loop.create_future()

        def on_writable() -> None:
            if not ready.done():
                ready.set_result(None)

        self.loop.add_writer(self.fd, on_writable)
        try:
            await ready
        finally:
            self.loop.remove_writer(self.fd)

    async def close(self) -> None:
        """Cancel the answers still in flight (the kernel fails their requests
        with ENOTCONN once the device is closed)."""
        self.closing = True
        self.stop_reading()
        self.device.detach()  # (a handler still running gets ENOTCONN from it)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.turns.clear()  # (a task cancelled before it began never ended its turn)
        self.executor.shutdown(wait=False, cancel_futures=True)


async def serve(fd: int, handlers: Registry | Iterable[object], *,
                stop: asyncio.Event | None = None,
                max_in_flight: int = DEFAULT_IN_FLIGHT) -> int:
    """Serve the requests read from *fd* until *stop* is set (exit status 0) or
    the session fails (1: version mismatch, invalid HELLO, read error, EOF).

    *handlers* is a Registry or handler classes to register. *fd* is switched
    to non-blocking; it stays open (the caller owns it). At most
    *max_in_flight* handler requests are read and not yet answered.
    """
    registry = handlers if isinstance(handlers, Registry) else Registry.from_classes(handlers)
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    session = Session(fd, registry, loop, max_in_flight=max_in_flight)
    if registry.registrations:
        log.info("handlers: %s", registry.describe())
    else:
        log.warning("no handlers installed (entry-point group daedalus.handlers): only HELLO "
                    "will be answered")
    waiters: set[asyncio.Future[Any]] = {session.done}
    stopped = loop.create_task(stop.wait()) if stop is not None else None
    if stopped is not None:
        waiters.add(stopped)
    session.start_reading()
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        return session.done.result() if session.done.done() else EXIT_OK
    finally:
        if stopped is not None:
            stopped.cancel()
        await session.close()


async def _run(fd: int, registry: Registry) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        log.info("%s received, shutting down", sig.name)
        stop.set()

    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        return await serve(fd, registry, stop=stop)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"not a number of seconds >= 0: {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="daedalusd",
        description="Serve the daedalus_v4l2 kernel module's requests (decoding in userspace).",
        epilog="The device is root's (mode 0600, CAP_SYS_ADMIN at open): start daedalusd as "
               "root with --user, and it drops to that user once the device is open, before "
               "it reads any request, so the decoding of untrusted bitstreams never runs "
               "privileged. Without --user it keeps running as whoever started it.")
    parser.add_argument("--device", default=DEFAULT_DEVICE,
                        help="the module's misc device (default: %(default)s)")
    parser.add_argument("--wait", type=_seconds, default=DEFAULT_WAIT, metavar="SECONDS",
                        help="how long to wait for the device to appear, polling every "
                             f"{POLL_INTERVAL:g} s (default: %(default)g)")
    parser.add_argument("--user", metavar="NAME",
                        help="once the device is open, become this unprivileged user for "
                             "good: its uid, the group's gid, no supplementary groups, no "
                             "capabilities, no new privileges, working directory /; a drop "
                             "that fails is fatal (a dedicated system user, e.g. daedalusd)")
    parser.add_argument("--group", metavar="NAME",
                        help="the group to become with --user (default: the user's primary "
                             "group)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def _account(user: str | None, group: str | None) -> privileges.Account | None:
    """The account --user and --group name (None without --user), checked
    before the device is opened: PrivilegeError if this process cannot
    become it."""
    if user is None:
        return None
    account = privileges.resolve(user, group)
    privileges.check(account)
    return account


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.group is not None and args.user is None:
        parser.error("--group needs --user")
    setup_logging(args.verbose)
    try:
        account = _account(args.user, args.group)
    except privileges.PrivilegeError as exc:
        log.critical("%s", exc)
        return EXIT_FAILURE
    try:  # (imports the handlers' modules: before the drop)
        registry = Registry.from_entry_points()
    except RegistryError as exc:
        log.critical("%s", exc)
        return EXIT_FAILURE
    # Until the event loop takes over SIGTERM, let it end the wait like ^C does.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        try:
            fd = open_device(args.device, args.wait)
        except DaemonError as exc:
            log.error("%s", exc)
            return EXIT_FAILURE
        log.info("connected to %s", args.device)
        try:
            if account is not None:
                try:
                    dropped = privileges.drop(account)
                except privileges.PrivilegeError as exc:
                    log.critical("%s: exiting", exc)
                    return EXIT_FAILURE
                log.info("running as %s", dropped.describe())
            return asyncio.run(_run(fd, registry))
        finally:
            os.close(fd)
    except KeyboardInterrupt:
        log.info("interrupted, shutting down")
        return EXIT_OK
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
