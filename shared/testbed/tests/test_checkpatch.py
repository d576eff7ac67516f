"""Every kernel source is checkpatch.pl --strict clean (checkpatch from Debian's linux-source)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from daedalus.testbed import kernels
from daedalus.testbed.build import kernel_sources, make_command
from daedalus.testbed.paths import repo_root


def _checkpatch() -> str:
    try:
        return str(kernels.checkpatch())
    except Exception as exc:  # not set up on this machine
        pytest.skip(f"checkpatch unavailable: {exc}")


def test_sources_are_checkpatch_strict_clean() -> None:
    files = kernel_sources()
    assert files
    proc = subprocess.run([_checkpatch(), "--strict", "--no-tree", "--terse", "--show-types",
                           "-f", *map(str, files)], cwd=repo_root(), capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout


def test_generated_layer_table_is_checkpatch_clean(tmp_path: Path, phase: str) -> None:
    """phases/Kbuild's layers.c and layers.h for the phase under test."""
    script = _checkpatch()
    kdir = next((k.kdir for k in map(kernels.resolve, kernels.SERIES)
                 if (k.kdir / "Makefile").exists()), None)
    if kdir is None:
        pytest.skip("no kernel headers installed (daedalus-v4l2 setup)")
    proc = subprocess.run(make_command(phase, kdir, tmp_path, target="layers.o"),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = subprocess.run([script, "--strict", "--no-tree", "--terse", "-f",
                           str(tmp_path / "layers.c"), str(tmp_path / "layers.h")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
