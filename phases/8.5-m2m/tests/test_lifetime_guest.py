"""Phase 8.5 in the guest: the device's lifetime when it goes away under its users.

A platform unbind (``/sys/bus/platform/drivers/daedalus-v4l2/unbind``) takes
the video node and the daemon's chardev away at once, while an application
still holds the node open mid-stream and daedalusd still holds the chardev.
The layers' state (the mem2mem device, the bridge) must live until the last of
them closes (the v4l2_device release callback), as the kernel's own m2m
drivers do: no use after free, no WARN, and after a bind the device works
again.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daedalus.m2m.reference import reference_output
from daedalus.parse import corpus
from daedalus.skeleton.v4l2dev import find_node
from daedalus.testbed.guestctl import daemon_state, start_daemon, stop_daemon, tool

pytestmark = pytest.mark.guest

DRIVER = Path("/sys/bus/platform/drivers/daedalus-v4l2")
DEVICE = "daedalus-v4l2"
BAD_KERNEL_LOG = re.compile(r"WARNING:|BUG:|Oops|general protection|KASAN|refcount_t|"
                            r"use-after-free|list_del corruption|blocked for more than")

# The application: VP9 320x240 on OUTPUT, eight packets queued, decoding under
# way (SOURCE_CHANGE seen), CAPTURE set up and streaming; then it waits for
# the unbind, tries an ioctl (which must fail, not crash), and closes.
CLIENT = """
import errno, select, sys
from daedalus.m2m.v4l2 import EVENT_SOURCE_CHANGE, BufferQueue, M2MNode
from daedalus.parse.readers import read_all
from daedalus.skeleton.v4l2dev import CAPTURE, OUTPUT, find_node

_, packets = read_all(sys.argv[1])
node = M2MNode(find_node()).__enter__()
node.set_output_format("VP90", 320, 240)
output, capture = BufferQueue(node.fd, OUTPUT), BufferQueue(node.fd, CAPTURE)
node.subscribe(EVENT_SOURCE_CHANGE)
count = output.request(8)
output.streamon()
for index in range(count):
    output.queue(index, packets[index].data, index)
while node.dequeue_event() is None:
    select.select([node.fd], [], [node.fd], 1)
for index in range(capture.request(4)):
    capture.queue(index)
capture.streamon()
print("holding", flush=True)
sys.stdin.readline()
try:
    output.queue(0, packets[0].data, 99)
    print("after unbind: QBUF accepted", flush=True)
except OSError as exc:
    print(f"after unbind: QBUF {errno.errorcode.get(exc.errno, exc.errno)}", flush=True)
node.__exit__(None, None, None)
print("closed", flush=True)
"""


def _dmesg() -> str:
    return subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout


def _wait_for_node(timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            find_node()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_unbind_mid_stream_then_close_is_clean(tmp_path: Path) -> None:
    clip = corpus.path("vp9-320x240")
    before = len(_dmesg())
    client = subprocess.Popen([sys.executable, "-c", CLIENT, str(clip)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert client.stdin is not None and client.stdout is not None
    try:
        line = client.stdout.readline()
        assert line.strip() == "holding", line + client.communicate(timeout=60)[1]
        (DRIVER / "unbind").write_text(DEVICE)
        assert not (DRIVER / DEVICE).exists()
        client.stdin.write("go\n")
        client.stdin.flush()
        out, err = client.communicate(timeout=120)
        assert client.returncode == 0, out + err
        assert "after unbind: QBUF ENODEV" in out and "closed" in out, out + err
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        # The old daemon still holds the old bridge; the device comes back
        # with a new one, to which a new daemon connects.
        stop_daemon()
        if not (DRIVER / DEVICE).exists():
            (DRIVER / "bind").write_text(DEVICE)
        _wait_for_node(60)
        start_daemon()
    log = _dmesg()[before:]
    bad = [line for line in log.splitlines() if BAD_KERNEL_LOG.search(line)]
    assert not bad, "\n".join(bad)
    assert daemon_state() == "ready"
    out_path = tmp_path / "out.yuv"
    proc = subprocess.run([tool("daedalus-v4l2"), "decode", str(clip), "-o", str(out_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out_path.read_bytes() == reference_output(clip)
