"""Phase 8.1 on the host: the module builds warning-free for both kernels."""

from __future__ import annotations

import subprocess

import pytest

from daedalus.testbed import kernels
from daedalus.testbed.build import build


@pytest.mark.parametrize("series", ["6.12", "6.1"])
def test_module_builds_without_warnings(series: str) -> None:
    kernel = kernels.resolve(series)
    if not kernel.kdir.exists():
        pytest.skip(f"kernel {series} not installed (daedalus-v4l2 setup)")
    result = build("8.1", kernel)  # raises on any warning
    info = subprocess.run(["modinfo", "-F", "vermagic", str(result.module)],
                          capture_output=True, text=True, check=True).stdout
    assert info.split()[0] == kernel.release
    name = subprocess.run(["modinfo", "-F", "name", str(result.module)],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert name == "daedalus_v4l2"
    assert result.layers[0] == "8.1-skeleton"
