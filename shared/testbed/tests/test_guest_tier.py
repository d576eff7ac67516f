"""Boot one guest per kernel and run the guest-tier tests of phases 8.1...N in it.

The inner pytest runs with the same --phase, so phase N's build is exercised
by the tests of every phase up to N (regression bisecting by phase).
"""

from __future__ import annotations

import sys

import pytest

from daedalus.testbed import kernels
from daedalus.testbed.guest import GuestConfig, run_guest
from daedalus.testbed.paths import repo_root

pytestmark = pytest.mark.boots


@pytest.mark.parametrize("series", ["6.12", "6.1"])
def test_guest_tier(series: str, phase: str, guest_kernels: list[str]) -> None:
    if series not in guest_kernels:
        pytest.skip(f"kernel {series} not selected (--kernels)")
    kernel = kernels.resolve(series)
    if not kernel.vmlinuz.exists():
        pytest.skip(f"kernel {series} not installed (daedalus-v4l2 setup)")
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA",
            f"--phase={phase}", "-m", "guest", str(repo_root())]
    result = run_guest(GuestConfig(kernel=kernel, phase=phase, timeout=2400), argv,
                       cwd=repo_root())
    print(result.stdout[-20000:])
    print(result.stderr[-5000:], file=sys.stderr)
    assert result.status == 0, "\n".join(result.problems) or result.stdout[-3000:]
    assert " passed" in result.stdout and " failed" not in result.stdout
