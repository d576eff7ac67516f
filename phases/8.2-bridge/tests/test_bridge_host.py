"""Phase 8.2 on the host: the PING echo handler and the ping command's logic.

The kernel side (debugfs trigger, chardev) is exercised by the guest tier in
test_bridge_guest.py; here the round trip's statistics and comparison run
against fakes, and the echo handler runs inside the real daemon core over a
socket pair.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import socket
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from daedalus.bridge import ping
from daedalus.bridge.echo import PingHandler
from daedalus.dispatch import daemon
from daedalus.dispatch.registry import Handler, Registry
from daedalus.proto import (
    HDR_SIZE,
    MAX_PAYLOAD,
    RESPONSE,
    Header,
    MsgType,
    pack_hello,
    pack_message,
    parse_header,
    parse_hello,
)

# --- the echo handler -----------------------------------------------------------


def _header(payload: bytes) -> Header:
    return parse_header(pack_message(MsgType.PING, 7, payload))


@pytest.mark.parametrize("payload", [b"", b"\x00", os.urandom(4096), bytes(range(256)) * 8])
def test_echo_returns_the_payload(payload: bytes) -> None:
    assert PingHandler().handle(_header(payload), payload) == (0, payload)


def test_echo_handler_declaration() -> None:
    handler: Handler = PingHandler()  # mypy checks the plugin's shape here
    assert handler.NAME == "ping"
    assert PingHandler.OPCODES == (MsgType.PING,)
    assert PingHandler.PHASE == (8, 2)
    assert PingHandler.NAME == "ping"


def test_entry_points_are_installed() -> None:
    handlers = {ep.name: ep.value for ep in entry_points(group="daedalus.handlers")}
    assert handlers.get("ping") == "daedalus.bridge.echo:PingHandler"
    commands = {ep.name: ep for ep in entry_points(group="daedalus.commands")}
    assert commands["ping"].load() is ping.PingCommand


def test_installed_handlers_register_without_conflict() -> None:
    registry = Registry.from_entry_points()
    echo = registry.lookup(MsgType.PING)
    assert echo is not None and isinstance(echo.handler, PingHandler)
    assert "daedalus-phase-8-2" in echo.owner
    assert registry.hello_phase() >= 82


def test_echo_through_the_daemon_core() -> None:
    """Kernel -> daemon -> PingHandler -> kernel, over a SEQPACKET pair."""

    async def main() -> None:
        daemon_end, kernel_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with daemon_end, kernel_end:
            kernel_end.setblocking(False)
            loop = asyncio.get_running_loop()
            stop = asyncio.Event()
            served = asyncio.create_task(daemon.serve(daemon_end.fileno(), [PingHandler],
                                                      stop=stop))

            async def exchange(type_: int, cookie: int, payload: bytes) -> tuple[Header, bytes]:
                await loop.sock_sendall(kernel_end, pack_message(type_, cookie, payload))
                data = await asyncio.wait_for(loop.sock_recv(kernel_end, HDR_SIZE + MAX_PAYLOAD),
                                              5)
                return parse_header(data), data[HDR_SIZE:]

            header, payload = await exchange(MsgType.HELLO, 1, pack_hello(phase=82))
            assert header.status == 0 and parse_hello(payload).phase == 82
            for cookie in range(2, 50):
                sent = os.urandom(cookie * 37)
                header, payload = await exchange(MsgType.PING, cookie, sent)
                assert (header.type, header.cookie, header.status) == (
                    MsgType.PING | RESPONSE, cookie, 0)
                assert payload == sent
            stop.set()
            assert await asyncio.wait_for(served, 5) == 0

    asyncio.run(main())


# --- the ping command's pure parts ------------------------------------------------


def test_first_mismatch() -> None:
    assert ping.first_mismatch(b"abc", b"abc") is None
    assert ping.first_mismatch(b"", b"") is None
    assert ping.first_mismatch(b"abc", b"abd") == 2
    assert ping.first_mismatch(b"xbc", b"abc") == 0
    assert ping.first_mismatch(b"abc", b"ab") == 2  # short answer
    assert ping.first_mismatch(b"ab", b"abc") == 2  # long answer
    assert ping.first_mismatch(b"abc", b"") == 0


def test_percentile_nearest_rank() -> None:
    values = list(range(1, 101))  # 1..100
    assert ping.percentile(values, 50) == 50
    assert ping.percentile(values, 99) == 99
    assert ping.percentile(values, 100) == 100
    assert ping.percentile(values, 0) == 1
    assert ping.percentile([5], 50) == ping.percentile([5], 99) == 5
    assert ping.percentile([1, 2, 3, 4], 50) == 2
    assert ping.percentile([1, 2, 3, 4], 99) == 4
    with pytest.raises(ValueError):
        ping.percentile([], 50)


class FakeTrigger:
    """The debugfs file: write echoes (optionally corrupted), pread returns it."""

    def __init__(self, *, corrupt: dict[int, int] | None = None,
                 fail: dict[int, int] | None = None, short: int | None = None) -> None:
        self.corrupt = corrupt or {}  # round trip -> offset to flip
        self.fail = fail or {}  # round trip -> errno
        self.short = short  # round trip whose write is short
        self.n = 0
        self.echo = b""
        self.sent: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.n += 1
        self.sent.append(data)
        if self.n in self.fail:
            raise OSError(self.fail[self.n], os.strerror(self.fail[self.n]))
        echo = bytearray(data)
        if self.n in self.corrupt:
            echo[self.corrupt[self.n]] ^= 0xFF
        self.echo = bytes(echo)
        return len(data) - 1 if self.n == self.short else len(data)

    def read(self, n: int) -> bytes:
        return self.echo[:n]


def fake_clock(step_ns: Iterator[int]) -> Callable[[], int]:
    now = 0

    def clock() -> int:
        nonlocal now
        now += next(step_ns)
        return now

    return clock


def test_run_pings_all_match_and_statistics() -> None:
    trigger = FakeTrigger()
    # each round trip calls the clock twice: +1 before, +latency after
    latencies = [10_000 * (i + 1) for i in range(100)]  # 10 us ... 1000 us
    steps = iter(x for lat in latencies for x in (1, lat))
    clock = fake_clock(steps)
    stats = ping.run_pings(trigger.write, trigger.read, 100, 64, clock=clock)
    assert stats.ok and (stats.completed, stats.matched, len(stats.mismatches)) == (100, 100, 0)
    assert len({bytes(p) for p in trigger.sent}) == 100  # fresh bytes every time
    assert all(len(p) == 64 for p in trigger.sent)
    assert (stats.min_us, stats.latency_us(50), stats.latency_us(99), stats.max_us) == (
        10.0, 500.0, 990.0, 1000.0)
    busy = sum(latencies) / 1e9
    assert stats.busy_s == pytest.approx(busy)
    assert stats.round_trips_per_s == pytest.approx(100 / busy)
    assert stats.mb_per_s == pytest.approx(100 * 64 / busy / 1e6)
    text = ping.format_summary(stats, "/fake/ping")
    assert "100 round trips of 64 bytes through /fake/ping: 100 matched, 0 mismatched" in text
    assert "min 10.0, p50 500.0, p99 990.0, max 1000.0" in text
    assert "round trips/s" in text and "MB/s echoed" in text
    assert "mismatch:" not in text


def test_run_pings_reports_the_first_mismatch() -> None:
    trigger = FakeTrigger(corrupt={3: 17, 5: 2})
    stats = ping.run_pings(trigger.write, trigger.read, 6, 32)
    assert not stats.ok
    assert (stats.matched, len(stats.mismatches)) == (4, 2)
    assert stats.mismatches[0] == ping.Mismatch(round_trip=3, offset=17, sent_len=32, got_len=32)
    text = ping.format_summary(stats)
    assert "4 matched, 2 mismatched" in text
    assert "first mismatch: round trip 3, offset 17" in text


def test_run_pings_short_echo_is_a_mismatch() -> None:
    stats = ping.run_pings(lambda data: len(data), lambda n: b"\x00" * (n - 1), 1, 8,
                           random=lambda n: b"\x00" * n)
    assert stats.mismatches == (ping.Mismatch(1, 7, 8, 7),)


@pytest.mark.parametrize(("code", "words"), [
    (errno.ENOTCONN, "no daemon connected (ENOTCONN): start daedalusd"),
    (errno.ETIMEDOUT, "ETIMEDOUT"),
    (errno.EIO, "error status (EIO)"),
    (errno.EINVAL, "EINVAL"),
    (errno.EBADMSG, "EBADMSG"),  # no hint: strerror and the name
])
def test_oserror_is_one_clear_line(code: int, words: str) -> None:
    trigger = FakeTrigger(fail={2: code})
    with pytest.raises(ping.PingError) as info:
        ping.run_pings(trigger.write, trigger.read, 5, 16)
    message = str(info.value)
    assert message.startswith("round trip 2 of 5: ")
    assert words in message and "\n" not in message


def test_short_write_is_an_error() -> None:
    trigger = FakeTrigger(short=1)
    with pytest.raises(ping.PingError, match="short write, 15 of 16 bytes"):
        ping.run_pings(trigger.write, trigger.read, 3, 16)


# --- the command -------------------------------------------------------------------


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    ping.PingCommand().add_arguments(parser)
    return parser.parse_args(list(argv))


def test_arguments_and_defaults() -> None:
    args = _args()
    assert (args.count, args.size, args.debugfs) == (
        100, 64, "/sys/kernel/debug/daedalus-v4l2/ping")
    assert _args("--size", str(MAX_PAYLOAD)).size == MAX_PAYLOAD
    for bad in (["--count", "0"], ["--size", "0"], ["--size", str(MAX_PAYLOAD + 1)]):
        with pytest.raises(SystemExit):
            _args(*bad)


def test_command_on_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = ping.PingCommand().run(_args("--debugfs", str(tmp_path / "ping")))
    assert status == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "ENOENT" in err and "daedalus_v4l2" in err


def test_command_on_a_regular_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A plain file echoes the first write at offset 0, then the writes move on:
    one round trip matches, later ones read the first payload back."""
    path = tmp_path / "ping"
    path.touch()
    assert ping.PingCommand().run(_args("--debugfs", str(path), "--count", "1")) == 0
    assert "1 matched, 0 mismatched" in capsys.readouterr().out
    path.write_bytes(b"")
    assert ping.PingCommand().run(_args("--debugfs", str(path), "--count", "3",
                                        "--size", "4096")) == 1
    out = capsys.readouterr().out
    assert "1 matched, 2 mismatched" in out and "first mismatch: round trip 2" in out
