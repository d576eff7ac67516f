"""The phase environments: generated from the phases, fresh, and isolated.

Isolation is checked statically here, in any environment: every ``daedalus.X``
that a distribution's code imports comes from a distribution it depends on,
and every one that the tests of phase 8.N import comes from phase 8.N's
environment. So a test of phase 8.2 cannot come to need phase 8.4's code
without this failing, even where every phase is installed. The harness,
shared/testbed, is in every environment and may be imported anywhere. (An
import inside ``try: ... except ImportError`` is optional and allowed.) CI
additionally makes every phase-8-N environment and collects its tests
(``./daedalus test``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from daedalus.testbed import workspace
from daedalus.testbed.paths import all_phases, repo_root


def test_generated_regions_are_fresh() -> None:
    assert workspace.stale() == [], "run: hatch run python -m daedalus.testbed.workspace"


def test_phase_environments_grow_by_one_phase_each() -> None:
    names = [d.name for d in workspace.members(all_phases()[0].number)]
    assert names[0] == workspace.HARNESS
    previous: set[str] = set()
    for phase in all_phases():
        now = {d.name for d in workspace.members(phase.number)}
        assert previous < now
        assert {d.phase.number for d in workspace.members(phase.number) if d.phase} == \
            {p.number for p in all_phases() if p <= phase and (p.path / "py").is_dir()}
        previous = now
    assert previous == {d.name for d in workspace.members()}


def _providers() -> dict[str, str]:
    """daedalus subpackage -> the distribution that ships it."""
    out: dict[str, str] = {}
    for d in workspace.distributions():
        for pkg in (repo_root() / d.src / "daedalus").iterdir():
            if pkg.is_dir() and not pkg.name.startswith(("_", ".")):
                assert pkg.name not in out, f"daedalus.{pkg.name} shipped twice"
                out[pkg.name] = d.name
    return out


def _optional(node: ast.Try) -> bool:
    for handler in node.handlers:
        names = [handler.type] if not isinstance(handler.type, ast.Tuple) else handler.type.elts
        if any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError")
               for n in names):
            return True
    return False


def _imports(path: Path) -> set[str]:
    """daedalus subpackages *path* imports, outside try/except ImportError."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Try) and _optional(node):
            return
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module]
            if node.module == "daedalus":
                modules = [f"daedalus.{a.name}" for a in node.names]
        found.update(m.split(".")[1] for m in modules
                     if m.startswith("daedalus.") and len(m.split(".")) > 1)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return found


def _closure(name: str) -> set[str]:
    by_name = {d.name: d for d in workspace.distributions()}
    seen: set[str] = set()
    todo = [name]
    while todo:
        n = todo.pop()
        if n not in seen and n in by_name:
            seen.add(n)
            todo += by_name[n].requires
    return seen


CASES = [(d.name, kind) for d in workspace.distributions() for kind in ("src", "tests")]


@pytest.mark.parametrize(("dist", "kind"), CASES, ids=[f"{d}-{k}" for d, k in CASES])
def test_imports_stay_within_the_environment(dist: str, kind: str) -> None:
    d = next(x for x in workspace.distributions() if x.name == dist)
    # The harness (shared/testbed) is in every environment.
    if kind == "src":
        allowed = _closure(d.name) | _closure(workspace.HARNESS)
    elif d.phase is not None:  # a phase's tests run in that phase's environment
        allowed = {m.name for m in workspace.members(d.phase.number)}
    else:  # a shared distribution's tests, wherever it is installed
        allowed = _closure(d.name) | _closure(workspace.HARNESS)
    providers = _providers()
    top = repo_root() / (d.src if kind == "src" else d.tests)
    wrong = []
    for path in sorted(top.rglob("*.py")) if top.is_dir() else []:
        for pkg in sorted(_imports(path)):
            owner = providers.get(pkg, f"nothing (daedalus.{pkg})")
            if owner not in allowed:
                wrong.append(f"{path.relative_to(repo_root())}: daedalus.{pkg} is {owner}")
    assert not wrong, "\n".join(wrong)
