"""The hatch environments and tool lists, generated from the one list of phases.

The phases are the directories ``phases/NUMBER-NAME`` (``paths.all_phases()``);
the distributions are ``shared/*/pyproject.toml`` and
``phases/*/py/pyproject.toml``. From them this module writes the parts of
hatch.toml and pyproject.toml that name phases, between marker lines
(``# >>> generated: NAME`` ... ``# <<< generated: NAME``):

- hatch.toml: the workspace members of ``default`` and ``lint`` (every
  distribution) and one environment ``phase-8-N`` per phase, whose members
  are the harness (shared/testbed), the distributions of phases 8.1...8.N and
  the shared distributions those depend on and those built on them alone
  (shared/install on the newest phase);
- pyproject.toml: mypy's ``mypy_path`` and ``files``.

Adding a phase is: create its directory, then run this module::

    hatch run python -m daedalus.testbed.workspace            # rewrite
    hatch run python -m daedalus.testbed.workspace --check    # stale? (a test runs this)
    hatch -e phase-8-2 run python -m daedalus.testbed.workspace --check-env 8.2

``--check-env`` is CI's isolation check of one phase environment: it holds
exactly the distributions of that phase (nothing of a later phase), and every
subcommand and daemon handler installed in it loads.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from daedalus.testbed.paths import Phase, all_phases, phases_up_to, repo_root

HARNESS = "daedalus-testbed"  # in every environment: the build driver, guests, the CLI
COMMAND = "python -m daedalus.testbed.workspace"
REQ_NAME_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


@dataclass(frozen=True)
class Dist:
    """One distribution of the checkout."""

    name: str
    path: str  # project directory, relative to the checkout
    requires: tuple[str, ...]  # the checkout's own distributions it depends on
    phase: Phase | None  # None for shared/*

    @property
    def src(self) -> str:
        return f"{self.path}/src"

    @property
    def tests(self) -> str:
        """Where its tests live: shared/NAME/tests, phases/8.N-NAME/tests."""
        if self.phase is None:
            return f"{self.path}/tests"
        return f"{self.phase.path.relative_to(repo_root()).as_posix()}/tests"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _read(project: Path, phase: Phase | None) -> Dist | None:
    try:
        with open(project / "pyproject.toml", "rb") as f:
            data = tomllib.load(f)["project"]
    except (FileNotFoundError, KeyError):
        return None
    reqs = [m[1] for r in data.get("dependencies", []) if (m := REQ_NAME_RE.match(r))]
    rel = project.relative_to(repo_root()).as_posix()
    return Dist(_norm(data["name"]), rel, tuple(_norm(r) for r in reqs), phase)


def distributions() -> list[Dist]:
    """The shared distributions (harness first, then in dependency order), then the phases'."""
    root = repo_root()
    shared = [d for p in sorted((root / "shared").iterdir()) if (d := _read(p, None))]
    ordered: list[Dist] = []
    pending = sorted(shared, key=lambda d: (d.name != HARNESS, d.name))
    names = {d.name for d in shared}
    while pending:
        done = {d.name for d in ordered}
        ready = next((d for d in pending if set(d.requires) & names <= done), pending[0])
        ordered.append(ready)
        pending.remove(ready)
    phases = [d for p in all_phases() if (d := _read(p.path / "py", p))]
    return ordered + phases


def members(number: str | None = None) -> list[Dist]:
    """The distributions of phase *number*'s environment (every one when None)."""
    dists = distributions()
    if number is None:
        return dists
    by_name = {d.name: d for d in dists}
    wanted = {p.number for p in phases_up_to(number)}
    todo = [HARNESS] + [d.name for d in dists if d.phase and d.phase.number in wanted]
    chosen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in chosen or name not in by_name:
            continue
        chosen.add(name)
        todo += by_name[name].requires
    # and the shared distributions built on those alone (shared/install on
    # the newest phase): phase N's environment is everything N can run
    grown = True
    while grown:
        extra = {d.name for d in dists if d.phase is None and d.name not in chosen
                 and any(by_name[r].phase for r in d.requires if r in by_name)
                 and set(d.requires) & set(by_name) <= chosen}
        grown = bool(extra)
        chosen |= extra
    return [d for d in dists if d.name in chosen]


def env_name(number: str) -> str:
    return "phase-" + number.replace(".", "-")


def _array(key: str, items: list[str], indent: str = "") -> list[str]:
    return [f"{indent}{key} = [", *(f'{indent}  "{i}",' for i in items), f"{indent}]"]


def _phase_envs() -> list[str]:
    lines: list[str] = []
    for phase in all_phases():
        lines += ["", f"[envs.{env_name(phase.number)}]", 'installer = "uv"']
        lines += _array("workspace.members", [d.path for d in members(phase.number)])
    return lines[1:]


def regions() -> dict[str, dict[str, list[str]]]:
    """File -> region name -> the generated lines of that region."""
    every = [d.path for d in members()]
    mypy_files: list[str] = []
    for d in members():
        mypy_files += [d.src] + ([d.tests] if (repo_root() / d.tests).is_dir() else [])
    return {
        "hatch.toml": {
            "default-members": _array("workspace.members", every),
            "phase-envs": _phase_envs(),
            "lint-members": _array("workspace.members", every),
        },
        "pyproject.toml": {
            "mypy-path": _array("mypy_path", [d.src for d in members()]),
            "mypy-files": _array("files", [*mypy_files, "conftest.py"]),
        },
    }


def render(text: str, generated: dict[str, list[str]], filename: str) -> str:
    """*text* with each marked region replaced by its generated lines."""
    for name, lines in generated.items():
        begin = f"# >>> generated: {name} ({COMMAND})"
        end = f"# <<< generated: {name}"
        pattern = re.compile(rf"^{re.escape(begin)}\n.*?^{re.escape(end)}$", re.M | re.S)
        m = pattern.search(text)
        if m is None:
            raise SystemExit(f"{filename}: no region {begin!r} ... {end!r}")
        text = text[:m.start()] + "\n".join([begin, *lines, end]) + text[m.end():]
    return text


def stale() -> list[str]:
    """The files whose generated regions differ from what the phases give."""
    out = []
    for filename, generated in regions().items():
        path = repo_root() / filename
        text = path.read_text()
        if render(text, generated, filename) != text:
            out.append(filename)
    return out


def write() -> list[str]:
    changed = []
    for filename, generated in regions().items():
        path = repo_root() / filename
        text = path.read_text()
        new = render(text, generated, filename)
        if new != text:
            path.write_text(new)
            changed.append(filename)
    return changed


def check_env(number: str) -> list[str]:
    """What is wrong with this environment as phase *number*'s environment."""
    from importlib.metadata import entry_points

    problems = []
    ours = {d.name for d in distributions()}
    installed = {_norm(d.metadata["Name"]) for d in metadata.distributions()} & ours
    expected = {d.name for d in members(number)}
    if installed != expected:
        problems.append(f"installed {sorted(installed)}, expected {sorted(expected)} "
                        f"(extra: {sorted(installed - expected)}, "
                        f"missing: {sorted(expected - installed)})")
    for group in ("daedalus.commands", "daedalus.handlers"):
        for ep in entry_points(group=group):
            try:
                obj = ep.load()
            except Exception as exc:
                problems.append(f"{group} {ep.name} ({ep.value}) does not load: {exc}")
                continue
            phase = getattr(obj, "PHASE", None)
            if phase is not None and tuple(phase) > phases_up_to(number)[-1].key:
                problems.append(f"handler {ep.name} is of phase {phase}, later than {number}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true",
                      help="exit 1 if hatch.toml or pyproject.toml is stale")
    mode.add_argument("--check-env", metavar="PHASE",
                      help="check that this environment is exactly PHASE's environment")
    args = parser.parse_args(argv)
    if args.check_env:
        problems = check_env(args.check_env)
        for p in problems:
            print(f"{env_name(args.check_env)}: {p}", file=sys.stderr)
        if not problems:
            names = ", ".join(d.name for d in members(args.check_env))
            print(f"{env_name(args.check_env)}: exactly {names}; entry points load")
        return 1 if problems else 0
    if args.check:
        files = stale()
        for f in files:
            print(f"{f} is stale: run {COMMAND}", file=sys.stderr)
        return 1 if files else 0
    for f in write():
        print(f"rewrote {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
