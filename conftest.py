"""Phase-aware test selection shared by every test directory.

``pytest --phase 8.N`` (default: the newest phase in the checkout) collects
the tests of shared/ and of phases 8.1...8.N only, so phase N can be tested
alone when bisecting. Tests marked ``guest`` run only inside a booted guest
(DAEDALUS_IN_GUEST=1, set by the testbed); on the host they are skipped and
the host-side driver in shared/testbed/tests/test_guest_tier.py boots a guest
to run them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
PHASE_DIR_RE = re.compile(r"^(\d+)\.(\d+)-")


def _phases() -> list[tuple[tuple[int, int], str]]:
    out = []
    for entry in (ROOT / "phases").iterdir():
        m = PHASE_DIR_RE.match(entry.name)
        if m and entry.is_dir():
            out.append(((int(m[1]), int(m[2])), f"{m[1]}.{m[2]}"))
    return sorted(out)


def pytest_addoption(parser: pytest.Parser) -> None:
    newest = _phases()[-1][1]
    parser.addoption("--phase", default=os.environ.get("DAEDALUS_PHASE", newest),
                     help="test phases 8.1...PHASE against the PHASE build (default: %(default)s)")
    parser.addoption("--kernels", default=os.environ.get("DAEDALUS_KERNELS", "6.12,6.1"),
                     help="comma-separated guest kernels for guest tests (default: %(default)s)")


def _phase_key(number: str) -> tuple[int, int]:
    major, minor = number.split(".")
    return int(major), int(minor)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    top = _phase_key(config.getoption("--phase"))
    try:
        rel = collection_path.resolve().relative_to(ROOT / "phases")
    except ValueError:
        return None
    m = PHASE_DIR_RE.match(rel.parts[0]) if rel.parts else None
    if m and (int(m[1]), int(m[2])) > top:
        return True
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    in_guest = os.environ.get("DAEDALUS_IN_GUEST") == "1"
    skip_guest = pytest.mark.skip(reason="runs inside the guest (see test_guest_tier.py)")
    skip_host = pytest.mark.skip(reason="host-tier test; this is the guest")
    for item in items:
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
