"""Children that cannot outlive the process that started them (QEMU, for guests).

``with child(argv) as proc:`` starts *argv* in a session of its own (so its
whole process group can be killed, and a terminal's or ``timeout``'s signal
to our group does not reach it half-way) and makes sure it ends with us,
however we end:

- **SIGKILL** or a crash: the kernel sends the child SIGKILL when we die
  (``prctl(PR_SET_PDEATHSIG)``, set between fork and exec);
- **SIGTERM, SIGINT, SIGHUP** (``timeout``, a CI step limit, Ctrl-C, a
  closed terminal): handlers kill the child's process group, then end us
  (SIGINT as KeyboardInterrupt, the others as SystemExit(128 + signal)) so
  that ``finally`` blocks still clean up;
- **normal exit** with the child still running: ``atexit`` kills its group;
- **hatch killed** (``kill`` of ``hatch run ...``): hatch does not pass
  SIGTERM on to its command, whose shell stays alive. While a child runs, a
  thread watches the nearest ``hatch`` among our ancestors and treats its
  end as SIGHUP.

The handlers are installed only from the main thread and only while a child
runs; the previous ones are restored after. Leaving the block kills the
child's group if it is still running and reaps it.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import os
import signal
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import Any

PR_SET_PDEATHSIG = 1
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
WATCH_INTERVAL = 0.5

_live: set[subprocess.Popen[bytes]] = set()
_lock = threading.Lock()
_saved: dict[int, Any] = {}
_libc = ctypes.CDLL(None, use_errno=True)  # loaded before any fork


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.returncode is None:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


def kill_all() -> None:
    """Kill the process group of every child still running."""
    with _lock:
        procs = list(_live)
    for proc in procs:
        _kill_group(proc)


atexit.register(kill_all)


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    kill_all()
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def _install() -> None:
    if threading.current_thread() is not threading.main_thread() or _saved:
        return
    for sig in SIGNALS:
        _saved[sig] = signal.signal(sig, _on_signal)


def _restore() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for sig, old in _saved.items():
        signal.signal(sig, old)
    _saved.clear()


def _die_with(parent: int) -> None:
    """preexec_fn: SIGKILL when the thread that forked us dies."""
    if _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        os._exit(127)
    if os.getppid() != parent:  # the parent died before the prctl
        os._exit(127)


def _stat(pid: int) -> tuple[str, str, str] | None:
    """(state, parent pid, start time) of *pid* from /proc, or None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], fields[1], fields[19]


def hatch_ancestor() -> tuple[int, str] | None:
    """(pid, start time) of the nearest ancestor whose command is hatch, if any."""
    pid = os.getppid()
    while pid > 1:
        stat = _stat(pid)
        if stat is None:
            return None
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        if any(Path(a.decode(errors="replace")).name == "hatch" for a in argv[:2]):
            return pid, stat[2]
        pid = int(stat[1])
    return None


def _watch(ancestor: tuple[int, str], stop: threading.Event) -> None:
    # Signals to the process must reach the main thread: one taken by this
    # thread would run the handler only when the main thread next wakes up,
    # not interrupt its wait for the child.
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    pid, start = ancestor
    while not stop.wait(WATCH_INTERVAL):
        stat = _stat(pid)
        if stat is None or stat[0] == "Z" or stat[2] != start:
            main = threading.main_thread().ident
            if main is not None:
                signal.pthread_kill(main, signal.SIGHUP)
            return


@contextmanager
def child(argv: Sequence[str], **popen_kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
    """Popen(*argv*) in a new session, ended (its whole group) whenever we end."""
    _install()
    proc = subprocess.Popen(list(argv), start_new_session=True,
                            preexec_fn=functools.partial(_die_with, os.getpid()),
                            **popen_kwargs)
    with _lock:
        _live.add(proc)
    stop = threading.Event()
    ancestor = hatch_ancestor()
    if ancestor is not None:
        threading.Thread(target=_watch, args=(ancestor, stop), daemon=True,
                         name="reaper-watch").start()
    try:
        yield proc
    finally:
        stop.set()
        _kill_group(proc)
        proc.wait()
        with _lock:
            _live.discard(proc)
            idle = not _live
        if idle:
            _restore()
