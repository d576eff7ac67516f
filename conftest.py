"""Phase-aware test selection shared by every test directory.

``pytest --phase 8.N`` collects the tests of phases 8.1...8.N only, so phase
N can be tested alone when bisecting; later phase directories are not even
imported. The default is the newest phase whose distribution (and those of
every phase below it) is installed, so in a ``phase-8-N`` environment it is
8.N. The tests of a shared distribution (shared/NAME/tests) are collected
only when that distribution is installed: the phase-8-1 environment has no
protocol or daemon. Asking for a phase whose distributions are missing is a
usage error rather than a pile of import errors.

Tests marked ``guest`` run only inside a booted guest (DAEDALUS_IN_GUEST=1,
set by the testbed); on the host they are skipped and the host-side driver
in shared/testbed/tests/test_guest_tier.py boots a guest to run them.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent
PHASE_DIR_RE = re.compile(r"^(\d+)\.(\d+)-")


def _phases() -> list[tuple[tuple[int, int], str, Path]]:
    out = []
    for entry in (ROOT / "phases").iterdir():
        m = PHASE_DIR_RE.match(entry.name)
        if m and entry.is_dir():
            out.append(((int(m[1]), int(m[2])), f"{m[1]}.{m[2]}", entry))
    return sorted(out)


@cache
def _dist_name(project: Path) -> str | None:
    """The distribution name in *project*/pyproject.toml, if there is one."""
    try:
        with open(project / "pyproject.toml", "rb") as f:
            name = tomllib.load(f)["project"]["name"]
    except (FileNotFoundError, KeyError):
        return None
    return str(name)


@cache
def _installed(name: str) -> bool:
    try:
        metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def _missing(number: str) -> list[str]:
    """Distributions of phases up to *number* that this environment lacks."""
    top = _phase_key(number)
    names = [_dist_name(path / "py") for key, _, path in _phases() if key <= top]
    return [n for n in names if n is not None and not _installed(n)]


def _newest_installed() -> str:
    newest = _phases()[0][1]
    for _, number, _ in _phases():
        if _missing(number):
            break
        newest = number
    return newest


def pytest_addoption(parser: pytest.Parser) -> None:
    default = os.environ.get("DAEDALUS_PHASE") or _newest_installed()
    parser.addoption("--phase", default=default,
                     help="test phases 8.1...PHASE against the PHASE build (default: the "
                          "newest phase installed in this environment, %(default)s)")
    parser.addoption("--kernels", default=os.environ.get("DAEDALUS_KERNELS", "6.12,6.1"),
                     help="comma-separated guest kernels for guest tests (default: %(default)s)")


def _phase_key(number: str) -> tuple[int, int]:
    major, minor = number.split(".")
    return int(major), int(minor)


def pytest_configure(config: pytest.Config) -> None:
    number = str(config.getoption("--phase"))
    if number not in [n for _, n, _ in _phases()]:
        raise pytest.UsageError(f"--phase {number}: no such phase in {ROOT / 'phases'}")
    missing = _missing(number)
    if missing:
        env = "phase-" + number.replace(".", "-")
        raise pytest.UsageError(
            f"--phase {number} needs {', '.join(missing)}, which this environment lacks: "
            f"run it in an environment that has them (hatch -e {env} run test --phase {number})")


def _shared_left_out() -> list[str]:
    """shared/NAME directories whose distribution is not installed here."""
    out = []
    for project in sorted((ROOT / "shared").iterdir()):
        name = _dist_name(project)
        if name is not None and not _installed(name):
            out.append(project.name)
    return out


def pytest_report_header(config: pytest.Config) -> str:
    left = ", ".join(f"shared/{d}" for d in _shared_left_out()) or "none"
    return f"daedalus: phase {config.getoption('--phase')}; not installed, so not collected: {left}"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    path = collection_path.resolve()
    try:
        rel = path.relative_to(ROOT / "shared")
    except ValueError:
        pass
    else:
        return True if rel.parts and rel.parts[0] in _shared_left_out() else None
    try:
        rel = path.relative_to(ROOT / "phases")
    except ValueError:
        return None
    m = PHASE_DIR_RE.match(rel.parts[0]) if rel.parts else None
    if m and (int(m[1]), int(m[2])) > _phase_key(config.getoption("--phase")):
        return True
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    in_guest = os.environ.get("DAEDALUS_IN_GUEST") == "1"
    skip_guest = pytest.mark.skip(reason="runs inside the guest (see test_guest_tier.py)")
    skip_host = pytest.mark.skip(reason="host-tier test; this is the guest")
    top = _phase_key(str(config.getoption("--phase")))
    for item in items:
        superseded = item.get_closest_marker("superseded_in")
        if superseded is not None and top >= _phase_key(str(superseded.args[0])):
            item.add_marker(pytest.mark.skip(
                reason=f"phase {superseded.args[0]} replaces this behaviour"))
            continue
        is_guest = item.get_closest_marker("guest") is not None
        if is_guest and not in_guest:
            item.add_marker(skip_guest)
        elif not is_guest and in_guest:
            item.add_marker(skip_host)


@pytest.fixture(scope="session")
def phase(pytestconfig: pytest.Config) -> str:
    return str(pytestconfig.getoption("--phase"))


@pytest.fixture(scope="session")
def guest_kernels(pytestconfig: pytest.Config) -> list[str]:
    return [k for k in str(pytestconfig.getoption("--kernels")).split(",") if k]


@pytest.fixture
def kernel_log() -> Iterator[Any]:
    """The kernel log during one guest test (daedalus.testbed.guestctl.KernelLog,
    from the test's start). Afterwards the test's daedalus lines are printed, and
    a warning, BUG, oops, hung task or lockdep report fails the test. A module
    turns it on for every test with ``pytest.mark.usefixtures("kernel_log")``;
    a test that reads the log asks for it by name."""
    from daedalus.testbed.guestctl import KernelLog

    with KernelLog() as log:
        yield log
        ours = [line for line in log.read() if "daedalus" in line]
        if ours:
            print("kernel log (daedalus):\n  " + "\n  ".join(ours[:30]))
        bad = log.problems()
    if bad:
        pytest.fail("kernel log shows problems:\n" + "\n".join(bad[:60]), pytrace=False)
