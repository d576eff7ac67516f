"""Phase 8.2 in the guest: the /dev/daedalus-v4l2 bridge against real and fake daemons.

The fake daemon is this test process opening the chardev itself (with the
real daedalusd stopped) and writing well-formed or hostile messages. Every
malformed message must be refused with EINVAL and change nothing: the
handshake that follows still works. Message layouts come from the protocol
header through cffi; nothing here restates the ABI.
"""

from __future__ import annotations

import errno
import os
import random
import re
import select
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from daedalus.bridge.fake import (
    CHARDEV,
    HDR,
    DebugfsCall,
    chardev,
    handshake,
    hdr_bytes,
    hello_payload,
    parse,
    read_msg,
    write_errno,
)
from daedalus.proto import ffi, lib
from daedalus.testbed.guestctl import daemon_state, daemon_stopped, tool

pytestmark = pytest.mark.guest

PING = "/sys/kernel/debug/daedalus-v4l2/ping"
TIMEOUT_PARAM = Path("/sys/module/daedalus_v4l2/parameters/daemon_timeout_ms")


def write_expect(fd: int, data: bytes, err: int | None) -> None:
    got = write_errno(fd, data)
    assert got == err, f"expected {err}, got {got}"


@pytest.fixture()
def fake() -> Iterator[int]:
    """The chardev, opened by this process with the real daemon stopped."""
    with daemon_stopped(), chardev() as fd:
        yield fd


class Pinger(DebugfsCall):
    """One ping round trip in the background."""

    def __init__(self, payload: bytes) -> None:
        super().__init__("ping", payload, len(payload))

    @property
    def echo(self) -> bytes:
        return self.answer


def _dmesg() -> str:
    return subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout


# --- the device node -------------------------------------------------------


def test_chardev_is_root_only() -> None:
    st = os.stat(CHARDEV)
    assert stat.S_ISCHR(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0


def test_unprivileged_open_refused() -> None:
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           "sh", "-c", f"exec 3<>{CHARDEV}"], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "Permission denied" in proc.stderr or "Operation not permitted" in proc.stderr


def test_second_daemon_gets_ebusy() -> None:
    assert daemon_state() == "ready"  # the real daedalusd holds the device
    with pytest.raises(OSError) as exc:
        os.open(CHARDEV, os.O_RDWR)
    assert exc.value.errno == errno.EBUSY


# --- the handshake and hostile replies --------------------------------------


def test_hello_is_sent_on_connect(fake: int) -> None:
    type_, cookie, status, payload = parse(read_msg(fake))
    assert type_ == lib.DAEDALUS_MSG_HELLO and status == 0 and cookie > 0
    hello = ffi.new("struct daedalus_hello *")
    ffi.memmove(hello, payload, len(payload))
    assert len(payload) == ffi.sizeof("struct daedalus_hello")
    assert hello.proto_version == lib.DAEDALUS_PROTO_VERSION
    assert hello.max_payload == lib.DAEDALUS_MAX_PAYLOAD
    assert daemon_state() == "connected"


def test_read_buffer_too_small_keeps_message(fake: int) -> None:
    select.select([fake], [], [], 5)
    with pytest.raises(OSError) as exc:
        os.read(fake, HDR - 1)
    assert exc.value.errno == errno.EINVAL
    handshake(fake)  # still there


def test_malformed_replies_are_rejected_without_side_effects(fake: int) -> None:
    type_, cookie, _, _ = parse(read_msg(fake))
    resp = type_ | lib.DAEDALUS_MSG_RESPONSE
    good = hello_payload()
    full = hdr_bytes(resp, cookie, good)
    rng = random.Random(8_2)
    cases = {
        "wrong magic": hdr_bytes(resp, cookie, good, magic=0x12345678),
        "wrong version": hdr_bytes(resp, cookie, good, version=lib.DAEDALUS_PROTO_VERSION + 1),
        "short header": full[: HDR - 4],
        "empty": b"",
        "length beyond the write": hdr_bytes(resp, cookie, good, payload_len=len(good) + 16),
        "length short of the write": hdr_bytes(resp, cookie, good, payload_len=len(good) - 4),
        "unknown cookie": hdr_bytes(resp, cookie + 1000, good),
        "cookie zero": hdr_bytes(resp, 0, good),
        "not a response": hdr_bytes(type_, cookie, good),
        "wrong response type": hdr_bytes(lib.DAEDALUS_MSG_PING | lib.DAEDALUS_MSG_RESPONSE,
                                         cookie, good),
        "flags set": hdr_bytes(resp, cookie, good, flags=1),
        "reserved set": hdr_bytes(resp, cookie, good, reserved4=1),
        "status beyond errno range": hdr_bytes(resp, cookie, good, status=70000),
        "hello of another protocol version": hdr_bytes(
            resp, cookie, hello_payload(version=lib.DAEDALUS_PROTO_VERSION + 1)),
        "hello with reserved set": hdr_bytes(resp, cookie, hello_payload(reserved0=7)),
        "hello too short": hdr_bytes(resp, cookie, good[:-4]),
        "oversize payload": hdr_bytes(resp, cookie, bytes(lib.DAEDALUS_MAX_PAYLOAD + 1)),
        "random bytes": rng.randbytes(HDR + 32),
    }
    for name, data in cases.items():
        try:
            os.write(fake, data)
        except OSError as exc:
            assert exc.errno == errno.EINVAL, name
        else:
            pytest.fail(f"{name}: accepted")
        assert daemon_state() == "connected", name
    write_expect(fake, full, None)  # the real answer still completes the handshake
    assert daemon_state() == "ready"
    write_expect(fake, full, errno.EINVAL)  # reused cookie


def test_no_requests_before_handshake(fake: int) -> None:
    read_msg(fake)  # HELLO, left unanswered
    pinger = Pinger(b"x")
    pinger.start()
    pinger.join(10)
    assert pinger.error == errno.ENOTCONN


# --- ping through a fake daemon --------------------------------------------


def test_ping_round_trip_through_fake_daemon(fake: int) -> None:
    handshake(fake)
    assert daemon_state() == "ready"
    payload = os.urandom(4096)
    pinger = Pinger(payload)
    pinger.start()
    type_, cookie, _, got = parse(read_msg(fake))
    assert type_ == lib.DAEDALUS_MSG_PING and got == payload
    resp = type_ | lib.DAEDALUS_MSG_RESPONSE
    write_expect(fake, hdr_bytes(resp, cookie, payload + b"extra"), errno.EINVAL)  # too long
    write_expect(fake, hdr_bytes(resp, cookie, payload[::-1]), None)
    pinger.join(10)
    assert pinger.error is None and pinger.echo == payload[::-1]


def test_daemon_error_status_is_eio(fake: int) -> None:
    handshake(fake)
    pinger = Pinger(b"hello")
    pinger.start()
    type_, cookie, _, _ = parse(read_msg(fake))
    write_expect(fake, hdr_bytes(type_ | lib.DAEDALUS_MSG_RESPONSE, cookie, b"no such thing",
                                 status=errno.ENOENT), None)
    pinger.join(10)
    assert pinger.error == errno.EIO


@pytest.fixture()
def short_timeout() -> Iterator[int]:
    old = TIMEOUT_PARAM.read_text().strip()
    TIMEOUT_PARAM.write_text("1000\n")
    try:
        yield 1000
    finally:
        TIMEOUT_PARAM.write_text(old + "\n")


def test_unanswered_request_times_out(fake: int, short_timeout: int) -> None:
    handshake(fake)
    pinger = Pinger(b"are you there")
    pinger.start()
    type_, cookie, _, _ = parse(read_msg(fake))
    pinger.join(30)
    assert pinger.error == errno.ETIMEDOUT
    assert 0.9 <= pinger.elapsed < 10
    late = hdr_bytes(type_ | lib.DAEDALUS_MSG_RESPONSE, cookie, b"are you there")
    write_expect(fake, late, errno.EINVAL)  # its cookie is gone
    assert "did not answer request" in _dmesg()


def test_daemon_killed_with_requests_in_flight() -> None:
    script = (
        "import os, select, time\n"
        f"fd = os.open({CHARDEV!r}, os.O_RDWR)\n"
        "from daedalus.proto import ffi, lib\n"
        "m = os.read(fd, 1 << 21); h = ffi.new('struct daedalus_msg_hdr *')\n"
        "ffi.memmove(h, m, ffi.sizeof(h[0])); h.type |= lib.DAEDALUS_MSG_RESPONSE\n"
        "p = ffi.new('struct daedalus_hello *'); p.proto_version = lib.DAEDALUS_PROTO_VERSION\n"
        "h.payload_len = ffi.sizeof(p[0])\n"
        "os.write(fd, bytes(ffi.buffer(h)) + bytes(ffi.buffer(p)))\n"
        "print('ready', flush=True)\n"
        "os.read(fd, 1 << 21)\n"
        "print('holding', flush=True)\n"
        "time.sleep(600)\n")
    with daemon_stopped():
        TIMEOUT_PARAM.write_text("30000\n")
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            pinger = Pinger(b"x" * 1000)
            pinger.start()
            assert proc.stdout.readline().strip() == "holding"
            proc.kill()
            pinger.join(20)
            assert pinger.error == errno.ENOTCONN
            assert pinger.elapsed < 5  # failed at once, not at the 30 s timeout
            assert daemon_state() == "disconnected"
        finally:
            proc.kill()
            proc.wait()
            TIMEOUT_PARAM.write_text("5000\n")
    assert daemon_state() == "ready"  # a new daemon connected
    ping = subprocess.run([tool("daedalus-v4l2"), "ping", "--count", "10"], capture_output=True,
                          text=True)
    assert ping.returncode == 0, ping.stdout + ping.stderr


def test_ping_without_daemon_is_enotconn() -> None:
    with daemon_stopped():
        pinger = Pinger(b"anyone?")
        pinger.start()
        pinger.join(10)
        assert pinger.error == errno.ENOTCONN


def test_module_removal_refused_while_daemon_connected() -> None:
    assert daemon_state() == "ready"
    proc = subprocess.run(["modprobe", "-r", "daedalus_v4l2"], capture_output=True, text=True)
    assert proc.returncode != 0 and "in use" in proc.stderr
    with daemon_stopped():
        subprocess.run(["modprobe", "-r", "daedalus_v4l2"], check=True)
        assert daemon_state() == "absent"
        subprocess.run(["modprobe", "daedalus_v4l2"], check=True)
    assert daemon_state() == "ready"


# --- the real daemon ---------------------------------------------------------


def test_ping_cli_thousand_round_trips() -> None:
    proc = subprocess.run([tool("daedalus-v4l2"), "ping", "--count", "1000", "--size", "256"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"\b1000\b", proc.stdout)
    assert "p50" in proc.stdout and "p99" in proc.stdout


@pytest.mark.parametrize("size", [1, 65536, 1024 * 1024])
def test_ping_cli_sizes(size: int) -> None:
    proc = subprocess.run([tool("daedalus-v4l2"), "ping", "--count", "5", "--size", str(size)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ping_larger_than_protocol_limit_is_einval() -> None:
    fd = os.open(PING, os.O_RDWR)
    try:
        with pytest.raises(OSError) as exc:
            os.write(fd, bytes(lib.DAEDALUS_MAX_PAYLOAD + 1))
        assert exc.value.errno == errno.EINVAL
    finally:
        os.close(fd)


def test_start_daemon_after_restart_is_clean() -> None:
    with daemon_stopped():
        assert daemon_state() == "disconnected"
    assert daemon_state() == "ready"
    assert f"daemon connected (protocol v{lib.DAEDALUS_PROTO_VERSION}" in _dmesg()
