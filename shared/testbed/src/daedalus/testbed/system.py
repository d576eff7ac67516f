"""Small helpers around subprocess and apt, with clear errors."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("daedalus.testbed")


class TestbedError(RuntimeError):
    """Something the testbed needs is missing or failed; the message says what."""


def run(argv: Sequence[str | Path], *, cwd: Path | None = None, capture: bool = False,
        check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    args = [str(a) for a in argv]
    log.debug("run: %s", " ".join(args))
    proc = subprocess.run(args, cwd=cwd, text=True, env=env,
                          stdout=subprocess.PIPE if capture else None,
                          stderr=subprocess.STDOUT if capture else None)
    if check and proc.returncode != 0:
        tail = ("\n" + proc.stdout[-4000:]) if capture and proc.stdout else ""
        raise TestbedError(f"command failed ({proc.returncode}): {' '.join(args)}{tail}")
    return proc


def dpkg_installed(packages: Sequence[str]) -> set[str]:
    """The subset of *packages* that dpkg reports as installed."""
    if not packages or not shutil.which("dpkg-query"):
        return set()
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Status}\\n", *packages],
                          text=True, capture_output=True)
    return {line.split()[0] for line in proc.stdout.splitlines() if line.endswith(" installed")}


_apt_updated = False


def apt_update_once() -> None:
    """apt-get update, at most once per process (a fresh machine has stale lists)."""
    global _apt_updated
    if not _apt_updated:
        run(["apt-get", "update", "-q"],
            env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        _apt_updated = True


def apt_install(packages: Sequence[str]) -> None:
    """Install what is missing from Debian's archive (idempotent; needs root)."""
    missing = [p for p in packages if p not in dpkg_installed(packages)]
    if not missing:
        return
    if not shutil.which("apt-get"):
        raise TestbedError(f"apt-get not found; install by hand: {' '.join(missing)}")
    log.info("installing from Debian's archive: %s", " ".join(missing))
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    apt_update_once()
    run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=env)


def apt_candidates(pattern: str) -> list[str]:
    """Package names matching a regex, from apt's lists."""
    proc = subprocess.run(["apt-cache", "pkgnames"], text=True, capture_output=True)
    rx = re.compile(pattern)
    return sorted(n for n in proc.stdout.split() if rx.fullmatch(n))


def apt_depends(package: str) -> list[str]:
    proc = run(["apt-cache", "depends", package], capture=True)
    return [line.split(":", 1)[1].strip() for line in proc.stdout.splitlines()
            if line.strip().startswith("Depends:")]


def apt_version(package: str, *, installed: bool = True) -> str | None:
    if installed:
        proc = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package],
                              text=True, capture_output=True)
        return proc.stdout.strip() or None
    proc = subprocess.run(["apt-cache", "policy", package], text=True, capture_output=True)
    for line in proc.stdout.splitlines():
        if line.strip().startswith("Candidate:"):
            return line.split(":", 1)[1].strip()
    return None


def eprint(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)
