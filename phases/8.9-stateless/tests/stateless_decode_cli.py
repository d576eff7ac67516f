"""``daedalus-v4l2 decode-stateless`` as the phase 8.9 guest tests run it.

Not a test module (pytest collects ``test_*.py`` only): the guest tests
import it by name, their directory being on ``sys.path`` as pytest puts it
there for a test directory without ``__init__.py`` (the default
``--import-mode=prepend``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from daedalus.testbed.guestctl import tool

TIMEOUT = 600  # one whole decode under TCG, generously


def decode_stateless(path: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """The client on *path*, its frames written to *out*, run as a separate process
    as an application would be; its output captured."""
    return subprocess.run([tool("daedalus-v4l2"), "decode-stateless", str(path), "-o",
                           str(out), *extra], capture_output=True, text=True, timeout=TIMEOUT)
