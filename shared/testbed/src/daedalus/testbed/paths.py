"""Where things are: the checkout, the phases, the cache outside the repo."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PHASE_DIR_RE = re.compile(r"^(?P<num>\d+\.\d+)-(?P<name>[a-z0-9-]+)$")


@cache
def repo_root() -> Path:
    """The checkout: DAEDALUS_ROOT, or the directory above this file holding hatch.toml."""
    env = os.environ.get("DAEDALUS_ROOT")
    if env:
        return Path(env).resolve()
    for parent in Path(__file__).resolve().parents:
        if (parent / "hatch.toml").is_file() and (parent / "phases").is_dir():
            return parent
    raise RuntimeError("cannot find the daedalus-v4l2 checkout; set DAEDALUS_ROOT")


def cache_dir() -> Path:
    """Expensive artefacts (kernels' helper builds, initramfs) live outside the repo."""
    env = os.environ.get("DAEDALUS_CACHE")
    if env:
        base = Path(env)
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "daedalus-v4l2"
    base.mkdir(parents=True, exist_ok=True)
    return base


def build_root() -> Path:
    """Per-(kernel, phase) module build trees, inside the checkout (git-ignored)."""
    return repo_root() / "build"


@dataclass(frozen=True, order=True)
class Phase:
    """A roadmap phase directory such as phases/8.1-skeleton."""

    key: tuple[int, int]
    number: str
    dirname: str
    path: Path

    @property
    def has_kernel_layer(self) -> bool:
        return (self.path / "layer.mk").is_file()


def all_phases() -> list[Phase]:
    phases = []
    for entry in (repo_root() / "phases").iterdir():
        m = PHASE_DIR_RE.match(entry.name)
        if not m or not entry.is_dir():
            continue
        major, minor = (int(x) for x in m["num"].split("."))
        phases.append(Phase((major, minor), m["num"], entry.name, entry))
    return sorted(phases)


def phase_by_number(number: str) -> Phase:
    for phase in all_phases():
        if phase.number == number:
            return phase
    known = ", ".join(p.number for p in all_phases())
    raise ValueError(f"unknown phase {number!r} (this checkout has: {known})")


def phases_up_to(number: str) -> list[Phase]:
    """Phases 8.1...N: what the phase-N build and tests are made of."""
    top = phase_by_number(number)
    return [p for p in all_phases() if p <= top]


def latest_phase() -> str:
    return all_phases()[-1].number
