"""The module build driver: daedalus_v4l2.ko for phase N from layers 8.1...N.

The build itself is make's: ``make -C phases PHASE=N KDIR=... BUILD=...``
(phases/Makefile, then phases/Kbuild under kbuild), which lays out the build
directory ``build/<release>/<phase>/``, generates the layer table and builds
there, never in the source tree. This module only runs that command with the
testbed's kernel and m2m helper, and turns warnings into failures.
"""

from __future__ import annotations

import fcntl
import re
from dataclasses import dataclass
from pathlib import Path

from daedalus.testbed.kernels import Kernel, build_helper
from daedalus.testbed.paths import build_root, phases_up_to, repo_root
from daedalus.testbed.system import TestbedError, log, run

MODULE_NAME = "daedalus_v4l2"


@dataclass(frozen=True)
class BuildResult:
    module: Path
    layers: list[str]
    log: str


def make_command(phase: str, kdir: Path, out: Path, extra_symbols: Path | None = None,
                 target: str = "modules") -> list[str]:
    """The make command that builds *phase* against *kdir* into *out* (no Python needed)."""
    argv = ["make", "-C", str(repo_root() / "phases"), f"PHASE={phase}", f"KDIR={kdir}",
            f"BUILD={out}"]
    if extra_symbols is not None:
        argv.append(f"KBUILD_EXTRA_SYMBOLS={extra_symbols}")
    return [*argv, target]


def build(phase: str, kernel: Kernel, kdir: Path | None = None) -> BuildResult:
    """Build the phase's module; fails on any compiler or modpost warning."""
    kdir = kdir or kernel.kdir
    if not (kdir / "Makefile").exists():
        raise TestbedError(f"no kernel build directory at {kdir} "
                           f"(apt-get install {kernel.headers_package}, or pass --kdir)")
    layers = [p.dirname for p in phases_up_to(phase) if p.has_kernel_layer]
    if not layers:
        raise TestbedError(f"phase {phase} has no kernel layers")
    out = build_root() / kernel.release / phase
    out.mkdir(parents=True, exist_ok=True)
    # Our module links against the out-of-tree v4l2-mem2mem helper: modpost
    # needs its exported symbols (and their CRCs) to resolve and version them.
    helper_symvers = build_helper(kernel).parent / "Module.symvers"
    log.info("building %s.ko for phase %s (%s) against %s", MODULE_NAME, phase,
             " ".join(layers), kdir)
    # Guests of the same phase and kernel may be started concurrently: one
    # make at a time per build directory.
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = run(make_command(phase, kdir, out, helper_symvers), capture=True, check=False)
    text = proc.stdout
    if proc.returncode != 0:
        raise TestbedError(f"module build failed for phase {phase}:\n{text[-6000:]}")
    warnings = [line for line in text.splitlines() if re.search(r"\bwarning\b", line, re.I)]
    if warnings:
        raise TestbedError("module build has warnings:\n" + "\n".join(warnings))
    return BuildResult(out / f"{MODULE_NAME}.ko", layers, text)


def kernel_sources(phase: str | None = None) -> list[Path]:
    """The .c/.h files of the layers up to *phase* (all phases when None)."""
    from daedalus.testbed.paths import all_phases

    phases = phases_up_to(phase) if phase else all_phases()
    files: list[Path] = []
    for p in phases:
        kdir = p.path / "kernel"
        if kdir.is_dir():
            files += sorted(f for f in kdir.iterdir() if f.suffix in (".c", ".h"))
    proto = repo_root() / "shared" / "proto" / "include"
    if proto.is_dir():
        files += sorted(proto.rglob("*.h"))
    return files
