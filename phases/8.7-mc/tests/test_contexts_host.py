"""Phase 8.7 on the host: several streams at once through daedalusd's core, and the bench.

The daemon side of "the daemon decodes different contexts in parallel (one
context's slow frame does not stall another's)": daedalusd's own core
(``daedalus.dispatch.daemon.serve``, over a SOCK_SEQPACKET pair with
``daedalus.dispatch.loopback.serve_against``) runs phase 8.5's
``StatefulHandler`` whose decoders pass the gates of
``daedalus.mc.contexts.DecoderGates``; the test plays the kernel: FEEDs,
then a FETCH per frame each answer lists, several streams at once, the
answers matched by cookie. Pictures are compared byte for byte with
Debian's ffmpeg's software decode (daedalus.m2m.clients.reference_frames).
The same gates run in the guest (test_contexts_guest.py) behind the real
module and unmodified clients.

shared/dispatch's test_dispatch_order.py shows the core side alone with
toy handlers (a held request of one key does not hold another key's); here
the hold is inside the real handler, in a decoder's ``decode()``, under the
stream's lock, where a slow frame is.

The bench (daedalus.mc.bench): its figures, table and JSON from given
spans, the repeated clip, and its worker processes for real (software
decodes; without a node, the node decodes fail and the bench says so).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import select
import socket
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from daedalus.dispatch.loopback import recv, send, serve_against
from daedalus.dispatch.registry import Registry
from daedalus.m2m.clients import reference_frames
from daedalus.m2m.layout import Geometry, buffer_size, crop
from daedalus.m2m.reference import reference_output
from daedalus.m2m.stateful import StatefulHandler
from daedalus.m2m.status import DecodeExit
from daedalus.m2m.v4l2 import packets_of
from daedalus.mc import bench
from daedalus.mc.bench import Figures, Report, Run, Span, Workers
from daedalus.mc.contexts import DecoderGates, serving_on, with_handler
from daedalus.parse import corpus
from daedalus.parse.readers import read_all
from daedalus.proto import (
    DECODE_FLUSH,
    HDR_SIZE,
    MAX_PAYLOAD,
    RESPONSE,
    Codec,
    Header,
    MsgType,
    pack_decode_req,
    pack_fetch_req,
    pack_header,
    pack_hello,
    parse_fetch_resp,
    parse_frame_resp,
    parse_header,
    validate_frame_resp,
)

VP9 = "vp9-320x240"
H264 = "h264-high-320x240"
AV1 = "av1-320x240"
SMALL = "vp9-128x96"     # 10 frames
WAIT = 120.0             # any one answer, generously

Call = Callable[[int, bytes], Awaitable[tuple[Header, bytes]]]


def chunks(name: str) -> list[bytes]:
    """The clip's packets, one per FEED (what the decode tool queues)."""
    return [data for _, data in packets_of(corpus.path(name))[3]]


class Kernel:
    """The kernel's side of several streams over one socket: requests sent as
    the streams need them, answers matched to them by cookie."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.cookies = itertools.count(2)
        self.waiting: dict[int, asyncio.Future[tuple[Header, bytes]]] = {}

    async def hello(self) -> None:
        await send(self.sock, MsgType.HELLO, 1, pack_hello(phase=87))
        header, _ = await recv(self.sock, WAIT)
        assert (header.type, header.status) == (MsgType.HELLO | RESPONSE, 0)

    async def read_answers(self) -> None:
        while True:
            header, body = await recv(self.sock, 3600)
            self.waiting.pop(header.cookie).set_result((header, body))

    async def call(self, type_: int, payload: bytes) -> tuple[Header, bytes]:
        cookie = next(self.cookies)
        answer: asyncio.Future[tuple[Header, bytes]] = asyncio.get_running_loop().create_future()
        self.waiting[cookie] = answer
        await send(self.sock, type_, cookie, payload)
        header, body = await answer
        assert header.type == type_ | RESPONSE and header.status == 0, (header, body)
        return header, body

    async def decode(self, stream_id: int, codec: Codec, packets: list[bytes]) -> list[bytes]:
        """One stream as daedalus-m2m.c runs it: a FEED per packet, then the
        drain (FLUSH), a FETCH of every frame an answer lists; the pictures."""
        pictures = []
        feeds = [(data, 0) for data in packets] + [(b"", DECODE_FLUSH)]
        for timestamp, (data, flags) in enumerate(feeds):
            _, body = await self.call(MsgType.FEED, pack_decode_req(
                codec, data, stream_id=stream_id, timestamp=timestamp, flags=flags))
            resp = parse_frame_resp(body)
            validate_frame_resp(resp)
            assert resp.ok, resp.text
            for frame in resp.frames:
                geometry = Geometry(frame.width, frame.height)
                stride = (geometry.min_bytesperline + 63) & ~63
                _, answer = await self.call(MsgType.FETCH, pack_fetch_req(
                    stream_id, bytesperline=stride, height=frame.height,
                    max_bytes=buffer_size(stride, frame.height), timestamp=frame.timestamp,
                    digest=frame.digest))
                fetched, pixels = parse_fetch_resp(answer)
                assert fetched.frame == frame
                pictures.append(crop(bytes(pixels), stride, frame.height, geometry))
        return pictures


def serve_gated(gates: DecoderGates, kernel: Callable[[Kernel], Awaitable[None]]) -> None:
    """daedalusd's core with the installed handlers, the stateful one gated,
    while *kernel* runs."""
    registry = with_handler(StatefulHandler(decoder_factory=gates.factory))

    async def play(sock: socket.socket) -> None:
        k = Kernel(sock)
        await k.hello()
        reader = asyncio.create_task(k.read_answers())
        try:
            await kernel(k)
        finally:
            reader.cancel()

    async def main() -> None:
        _, status = await serve_against(play, registry, timeout=600, stop_timeout=30)
        assert status == 0

    try:
        asyncio.run(main())
    finally:
        gates.disarm()


async def until(event_set: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not event_set():
        assert loop.time() < deadline, f"{what} did not happen within {timeout:g} s"
        await asyncio.sleep(0.01)


# --- the handler's registration --------------------------------------------------------


def test_with_handler_replaces_the_claimant_of_its_opcodes_and_keeps_the_rest() -> None:
    installed = Registry.from_entry_points()
    mine = StatefulHandler()
    registry = with_handler(mine, installed)
    for opcode in (MsgType.FEED, MsgType.FETCH):
        found = registry.lookup(opcode)
        assert found is not None and found.handler is mine
        assert found.owner.endswith("(in process)")
    for opcode in (MsgType.PING, MsgType.DECODE):  # phase 8.2's and 8.4's, as installed
        before, after = installed.lookup(opcode), registry.lookup(opcode)
        assert before is not None and after is before
    assert len(registry.registrations) == len(installed.registrations)
    assert registry.hello_phase() == installed.hello_phase()


def in_process_daemons() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "daedalusd (in process)"]


def test_serving_on_runs_daedalusds_core_in_a_thread_for_the_block() -> None:
    """What the guest module serves the node with, on a socket pair: the
    block starts once the HELLO is answered; a PING is echoed by the
    installed phase 8.2 handler; after the block the daemon's thread has
    ended and the fd is still open (the caller's)."""
    daemon_end, kernel_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with daemon_end, kernel_end:
        hello = pack_hello(phase=87)
        kernel_end.sendall(pack_header(MsgType.HELLO, 1, len(hello)) + hello)

        def answered() -> bool:
            return bool(select.select([kernel_end], [], [], 0)[0])

        with serving_on(daemon_end.fileno(), Registry.from_entry_points(), answered,
                        ready_timeout=WAIT):
            answer = parse_header(kernel_end.recv(HDR_SIZE + MAX_PAYLOAD))
            assert (answer.type, answer.cookie, answer.status) == (MsgType.HELLO | RESPONSE,
                                                                   1, 0)
            kernel_end.sendall(pack_header(MsgType.PING, 2, 3) + b"abc")
            data = kernel_end.recv(HDR_SIZE + MAX_PAYLOAD)
            assert (parse_header(data).cookie, data[HDR_SIZE:]) == (2, b"abc")
            assert len(in_process_daemons()) == 1
        assert in_process_daemons() == []
        assert os.fstat(daemon_end.fileno())


def test_serving_on_that_never_gets_ready_says_so_and_stops_the_daemon() -> None:
    daemon_end, kernel_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with daemon_end, kernel_end, pytest.raises(RuntimeError, match="did not become ready "
                                                                 r"\(no HELLO; None\)"):
        with serving_on(daemon_end.fileno(), Registry.from_entry_points(), lambda: False,
                        ready_timeout=0.5, what=lambda: "no HELLO"):
            raise AssertionError("the block ran")
    assert in_process_daemons() == []


# --- through daedalusd's core ----------------------------------------------------------


def test_a_held_frame_of_one_stream_does_not_stall_another() -> None:
    """H.264 stream 1's packet 2 is held inside its decoder's decode(); VP9
    stream 2 is then decoded from its first FEED to its last FETCH, all 30
    frames, while it is still held. Released, stream 1 ends byte-exact too."""
    gates = DecoderGates()
    rnd = gates.arm(hold=Codec.H264, hold_at=2, limit=60)  # (a failure takes that long)
    got: dict[str, list[bytes]] = {}
    held_throughout: list[bool] = []

    async def kernel(k: Kernel) -> None:
        slow = asyncio.create_task(k.decode(1, Codec.H264, chunks(H264)))
        await until(rnd.holding.is_set, "the hold")
        got[VP9] = await k.decode(2, Codec.VP9, chunks(VP9))
        held_throughout.append(not rnd.resumed.is_set() and not slow.done())
        rnd.release()
        got[H264] = await slow

    serve_gated(gates, kernel)
    assert held_throughout == [True]
    assert not rnd.hold_given_up
    assert got[VP9] == reference_frames(VP9)
    assert got[H264] == reference_frames(H264)


def test_the_start_line_sends_streams_off_together_and_they_decode_at_once() -> None:
    """Three streams (VP9, H.264, AV1), each decoder's first packet held at
    the line until all three wait there; then they decode side by side: at
    some moment two real decode() calls ran at once (PyAV releases the GIL;
    a lock shared by the streams would keep it at one). All byte-exact."""
    gates = DecoderGates()
    rnd = gates.arm(line=3)
    names = {1: (VP9, Codec.VP9), 2: (H264, Codec.H264), 3: (AV1, Codec.AV1)}
    got: dict[str, list[bytes]] = {}

    async def kernel(k: Kernel) -> None:
        results = await asyncio.gather(*(k.decode(stream_id, codec, chunks(name))
                                         for stream_id, (name, codec) in names.items()))
        got.update(zip([name for name, _ in names.values()], results, strict=True))

    serve_gated(gates, kernel)
    assert (rnd.at_line, rnd.line_met, rnd.line_given_up) == (3, True, False)
    print(f"at most {rnd.max_running} decode() calls at once")
    assert rnd.max_running >= 2
    for name, _ in names.values():
        assert got[name] == reference_frames(name), name


def test_gates_open_at_their_limit_so_nothing_waits_forever() -> None:
    """A start line for three with only two streams, and a hold nobody
    releases: after *limit* both let the decoders go, and the streams decode
    in full. (The guest tests rely on this: a client that never comes must
    not leave the others hanging.)"""
    gates = DecoderGates()
    rnd = gates.arm(line=3, hold=Codec.VP9, hold_at=1, limit=1.0)
    got: dict[str, list[bytes]] = {}

    async def kernel(k: Kernel) -> None:
        vp9, h264 = await asyncio.gather(k.decode(1, Codec.VP9, chunks(VP9)),
                                         k.decode(2, Codec.H264, chunks(H264)))
        got.update({VP9: vp9, H264: h264})

    serve_gated(gates, kernel)
    assert (rnd.at_line, rnd.line_met, rnd.line_given_up) == (2, False, True)
    assert rnd.holding.is_set() and rnd.resumed.is_set() and rnd.hold_given_up
    assert got == {VP9: reference_frames(VP9), H264: reference_frames(H264)}


def test_arming_again_opens_the_previous_rounds_gates() -> None:
    gates = DecoderGates()
    first = gates.arm(line=5)
    assert not first.closed
    second = gates.arm(hold=Codec.AV1)
    assert first.closed and first.released.is_set() and not second.closed
    assert gates.round is second
    gates.disarm()
    assert second.closed and gates.round.line == 0 and gates.round.hold is None


# --- the bench: figures, table, JSON ------------------------------------------------------


def test_contexts_list() -> None:
    assert bench.contexts_list("1,2,4") == [1, 2, 4]
    assert bench.contexts_list("3") == [3]
    for bad in ("", "0,1", "1,x", "-2"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"context counts|not a comma"):
            bench.contexts_list(bad)


def spans(*pairs: tuple[float, float], frames: int = 10, **kw: object) -> list[Span]:
    return [Span(start, end, frames, **kw) for start, end in pairs]  # type: ignore[arg-type]


def test_figures_take_the_wall_time_from_the_first_start_to_the_last_end() -> None:
    f = Figures.of(spans((100.0, 101.0), (100.5, 102.0)))
    assert (f.contexts, f.frames) == (2, 20)
    assert f.wall_s == pytest.approx(2.0) and f.fps == pytest.approx(10.0)
    assert f.ok
    assert not Figures.of(spans((0.0, 1.0), status=7)).ok
    assert not Figures.of(spans((0.0, 1.0), errors=1)).ok
    assert not Figures.of(spans((0.0, 1.0), byte_exact=False)).ok
    with pytest.raises(ValueError):
        Figures.of([])


def report_of(node_fps_spans: list[list[Span]], frames: int = 10) -> Report:
    runs = [Run(Figures.of(node), Figures.of(spans(*[(0.0, 0.5)] * len(node), frames=frames)))
            for node in node_fps_spans]
    return Report("vp9-128x96", 1, frames, "128x96", 2, "6.12.0", "PyAV 0", runs)


def test_report_table_and_json() -> None:
    one = spans((0.0, 1.0), byte_exact=True)                      # 10 fps
    two = spans((0.0, 1.0), (0.0, 1.0), byte_exact=True)          # 20 fps
    four = spans(*[(0.0, 2.0)] * 4, byte_exact=True)              # 20 fps
    report = report_of([one, two, four])
    assert report.ok()
    text = bench.table(report)
    rows = [line.split() for line in text.splitlines()[2:]]
    assert [row[0] for row in rows] == ["1", "2", "4"]
    # contexts, frames, node s, node fps, ffmpeg s, ffmpeg fps, node/ffmpeg, xN/x1, ok
    assert rows[0] == ["1", "10", "1.00", "10.0", "0.50", "20.0", "0.500", "1.00", "yes"]
    assert rows[2] == ["4", "40", "2.00", "20.0", "0.50", "80.0", "0.250", "2.00", "yes"]
    data = json.loads(json.dumps(report.to_json()))
    assert data["ok"] is True and data["frames_per_context"] == 10
    assert [r["contexts"] for r in data["runs"]] == [1, 2, 4]
    assert [r["node"]["fps"] for r in data["runs"]] == [10.0, 20.0, 20.0]
    assert [r["node_vs_one_context"] for r in data["runs"]] == [1.0, 2.0, 2.0]
    assert data["runs"][1]["node"]["per_context"][0] == {
        "frames": 10, "errors": 0, "status": 0, "byte_exact": True, "message": "",
        "seconds": 1.0}


def test_report_names_what_went_wrong() -> None:
    bad = spans((0.0, 1.0), status=7, frames=0, byte_exact=False,
                message="decode tool exit status 7")
    short = spans((0.0, 1.0), frames=9, byte_exact=True)
    for node in (bad, short):
        report = report_of([node])
        assert not report.ok()
        text = bench.table(report)
        assert text.splitlines()[2].endswith("NO")
        assert "1 contexts, node decode 0: status" in text
    assert "NOT byte-exact: decode tool exit status 7" in bench.table(report_of([bad]))


def test_repeat_clip(tmp_path: Path) -> None:
    """IVF: one header, 3x the frames; Annex-B and OBU: the bytes 3x. Debian's
    ffmpeg decodes each to 3x the clip's pictures."""
    for name in (SMALL, "h264-high-128x96", "av1-174x98"):
        source = corpus.path(name)
        out = bench.repeat_clip(source, 3, tmp_path)
        assert out.parent == tmp_path and out.suffix == source.suffix
        assert len(read_all(out)[1]) == 3 * len(read_all(source)[1]), name
        assert reference_output(out) == reference_output(source) * 3, name
    assert bench.repeat_clip(corpus.path(SMALL), 1, tmp_path) == corpus.path(SMALL)


# --- the bench's workers, for real (no node on the host) ----------------------------------


def test_workers_decode_in_software_and_fail_cleanly_without_a_node(tmp_path: Path) -> None:
    frames = len(reference_frames(SMALL))
    with Workers(2, corpus.path(SMALL), tmp_path, timeout=300) as workers:
        for count in (1, 2):
            got = workers.run("ffmpeg", count, tmp_path)
            assert [(s.frames, s.status, s.errors) for s in got] == [(frames, 0, 0)] * count
            assert all(s.end > s.start for s in got)
        node = workers.run("node", 1, tmp_path)
    assert [(s.frames, s.status) for s in node] == [(0, DecodeExit.NO_DEVICE)]
    assert node[0].message == f"decode tool exit status {int(DecodeExit.NO_DEVICE)}"
    assert "cannot open the daedalus-v4l2 node" in (tmp_path / "worker-0.log").read_text()


def test_bench_command_without_a_node_reports_and_fails(tmp_path: Path) -> None:
    """The whole run on the host: the software figures are there, the node's
    decodes fail (no node), so the table says NO and the exit status is 1."""
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "daedalus.mc.bench", "--clip", SMALL,
                           "--repeat", "2", "--contexts", "1,2", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert data["ok"] is False and data["frames_per_context"] == 20
    assert [r["contexts"] for r in data["runs"]] == [1, 2]
    assert [r["ffmpeg"]["frames"] for r in data["runs"]] == [20, 40]
    for run in data["runs"]:
        assert {c["status"] for c in run["node"]["per_context"]} == {int(DecodeExit.NO_DEVICE)}
        assert {c["byte_exact"] for c in run["node"]["per_context"]} == {False}
    rows = [line.split() for line in proc.stdout.splitlines()[2:4]]
    assert [(row[0], row[-1]) for row in rows] == [("1", "NO"), ("2", "NO")]
    again = subprocess.run([sys.executable, "-m", "daedalus.mc.bench", "--clip", SMALL,
                            "--repeat", "1", "--contexts", "1", "--json", "-"],
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 1, again.stdout + again.stderr
    last = json.loads(again.stdout.splitlines()[-1])
    assert (last["frames_per_context"], [r["contexts"] for r in last["runs"]]) == (10, [1])


def test_bench_command_is_registered() -> None:
    from importlib.metadata import entry_points

    commands = {ep.name: ep for ep in entry_points(group="daedalus.commands")}
    assert commands["bench-contexts"].load() is bench.BenchCommand
    proc = subprocess.run(["daedalus-v4l2", "bench-contexts", "--help"], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0 and "--contexts" in proc.stdout
