"""Every kernel source is checkpatch.pl --strict clean (checkpatch from Debian's linux-source)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from daedalus.testbed import kernels
from daedalus.testbed.build import generate_layers_c, generate_layers_h, kernel_sources
from daedalus.testbed.paths import all_phases, repo_root


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


@pytest.mark.parametrize("count", [1, 2, 3])
def test_generated_layer_table_is_checkpatch_clean(tmp_path: Path, count: int) -> None:
    layers = [p for p in all_phases() if p.has_kernel_layer][:count]
    (tmp_path / "layers.c").write_text(generate_layers_c(layers))
    (tmp_path / "layers.h").write_text(generate_layers_h(layers))
    proc = subprocess.run([_checkpatch(), "--strict", "--no-tree", "--terse", "-f",
                           str(tmp_path / "layers.c"), str(tmp_path / "layers.h")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
