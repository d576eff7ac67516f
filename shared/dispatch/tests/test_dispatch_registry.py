"""The handler registry: validation, ordering, conflicts, entry points."""

from __future__ import annotations

from importlib.metadata import EntryPoint, distributions
from pathlib import Path
from typing import Any, ClassVar

import pytest

from daedalus.dispatch.registry import GROUP, Registration, Registry, RegistryError
from daedalus.proto import Header, MsgType


class Echo:
    OPCODES: ClassVar[tuple[int, ...]] = (MsgType.PING,)
    PHASE: ClassVar[tuple[int, int]] = (8, 2)
    NAME: ClassVar[str] = "echo"

    def handle(self, header: Header, payload: bytes) -> tuple[int, bytes]:
        return 0, payload


class Later:
    OPCODES: ClassVar[tuple[int, ...]] = (7, 5)
    PHASE: ClassVar[tuple[int, int]] = (8, 4)
    NAME: ClassVar[str] = "later"

    def handle(self, header: Header, payload: bytes) -> tuple[int, bytes]:
        return 0, b""


class Middle:
    OPCODES: ClassVar[tuple[int, ...]] = (9,)
    PHASE: ClassVar[tuple[int, int]] = (8, 3)
    NAME: ClassVar[str] = "middle"

    def handle(self, header: Header, payload: bytes) -> tuple[int, bytes]:
        return 0, b""


class AlsoPing(Echo):
    NAME: ClassVar[str] = "also-ping"


class ClaimsHello(Echo):
    OPCODES: ClassVar[tuple[int, ...]] = (MsgType.HELLO,)


def test_handlers_sorted_by_phase_then_opcode() -> None:
    registry = Registry.from_classes([Later, Echo, Middle])
    assert [r.name for r in registry.registrations] == ["echo", "middle", "later"]
    assert registry.opcodes == [2, 5, 7, 9]
    later = registry.lookup(5)
    assert later is not None and later.name == "later" and later.opcodes == (7, 5)
    assert registry.lookup(MsgType.HELLO) is None  # the core's
    assert registry.lookup(1234) is None
    assert isinstance(registry.lookup(MsgType.PING), Registration)


def test_hello_phase_is_the_highest_handler_phase() -> None:
    assert Registry.from_classes([Echo]).hello_phase() == 82
    assert Registry.from_classes([Later, Echo, Middle]).hello_phase() == 84
    assert Registry().hello_phase() == 0


def test_duplicate_opcode_names_both_handlers() -> None:
    with pytest.raises(RegistryError) as info:
        Registry.from_classes([Echo, AlsoPing])
    message = str(info.value)
    assert "PING (2)" in message
    assert f"{__name__}:Echo" in message and f"{__name__}:AlsoPing" in message


def test_duplicate_opcode_reported_in_a_stable_order() -> None:
    with pytest.raises(RegistryError) as one:
        Registry.from_classes([Echo, AlsoPing])
    with pytest.raises(RegistryError) as two:
        Registry.from_classes([AlsoPing, Echo])
    assert str(one.value) == str(two.value)  # sorted by (PHASE, opcode, owner), not by arrival


def test_claiming_hello_is_fatal() -> None:
    with pytest.raises(RegistryError, match=r"HELLO \(1\) is claimed by both the daedalusd core"):
        Registry.from_classes([ClaimsHello])


@pytest.mark.parametrize(("attrs", "match"), [
    ({"OPCODES": ()}, "OPCODES"),
    ({"OPCODES": [2]}, "OPCODES"),
    ({"OPCODES": (0x8002,)}, "OPCODES"),
    ({"OPCODES": (0,)}, "OPCODES"),
    ({"OPCODES": (3, 3)}, "twice"),
    ({"PHASE": "8.2"}, "PHASE"),
    ({"PHASE": (8, 2, 1)}, "PHASE"),
    ({"PHASE": (8, 12)}, "PHASE"),
    ({"NAME": ""}, "NAME"),
    ({"handle": None}, "handle"),
])
def test_invalid_handler_classes(attrs: dict[str, object], match: str) -> None:
    broken = type("Broken", (Echo,), attrs)
    with pytest.raises(RegistryError, match=match):
        Registry.from_classes([broken])


def test_not_a_class_and_failing_constructor() -> None:
    with pytest.raises(RegistryError, match="not a class"):
        Registry.from_classes([Echo()])

    class Fails(Echo):
        def __init__(self) -> None:
            raise OSError("no device")

    with pytest.raises(RegistryError, match=r"failed to initialise.*no device"):
        Registry.from_classes([Fails])


# --- entry points, from fake installed distributions ------------------------


def _fake_dist(site: Path, name: str, entries: dict[str, str]) -> None:
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = "".join(f"{key} = {value}\n" for key, value in entries.items())
    (info / "entry_points.txt").write_text(f"[{GROUP}]\n{lines}")


def _entry_points(site: Path) -> list[EntryPoint]:
    return [ep for dist in distributions(path=[str(site)]) for ep in dist.entry_points
            if ep.group == GROUP]


def test_entry_points_load(tmp_path: Path) -> None:
    _fake_dist(tmp_path, "fake-phase-a", {"echo": f"{__name__}:Echo"})
    _fake_dist(tmp_path, "fake-phase-b", {"later": f"{__name__}:Later"})
    registry = Registry.from_entry_points(_entry_points(tmp_path))
    assert [r.name for r in registry.registrations] == ["echo", "later"]
    echo = registry.lookup(MsgType.PING)
    assert echo is not None and echo.owner == f"fake-phase-a ({__name__}:Echo)"


def test_entry_points_duplicate_names_both_distributions(tmp_path: Path) -> None:
    _fake_dist(tmp_path, "fake-phase-a", {"ping": f"{__name__}:Echo"})
    _fake_dist(tmp_path, "fake-phase-b", {"ping2": f"{__name__}:AlsoPing"})
    with pytest.raises(RegistryError) as info:
        Registry.from_entry_points(_entry_points(tmp_path))
    assert "fake-phase-a" in str(info.value) and "fake-phase-b" in str(info.value)


def test_entry_point_that_does_not_import(tmp_path: Path) -> None:
    _fake_dist(tmp_path, "fake-broken", {"gone": "daedalus_no_such_module:Handler"})
    with pytest.raises(RegistryError, match=r"'gone' of fake-broken.*failed to load"):
        Registry.from_entry_points(_entry_points(tmp_path))


@pytest.mark.parametrize("group", [GROUP, "daedalus.commands", "console_scripts",
                                   "pytest11"])
def test_cheap_entry_points_agree_with_importlib_metadata(group: str) -> None:
    """entrypoints.py against the standard library's reader, on this environment."""
    from importlib.metadata import entry_points as stdlib_entry_points

    from daedalus.dispatch.entrypoints import entry_points

    def key(ep: Any) -> tuple[str, str, str]:
        return ep.name, ep.value, ep.dist.name if ep.dist else ""

    ours = sorted(key(ep) for ep in entry_points(group))
    want = sorted(key(ep) for ep in stdlib_entry_points(group=group))
    assert ours == want
    if group == GROUP:  # the handlers load to the very same classes
        loaded = {ep.name: ep.load() for ep in stdlib_entry_points(group=group)}
        assert {ep.name: ep.load() for ep in entry_points(group)} == loaded


def test_cheap_entry_points_of_fake_distributions(tmp_path: Path) -> None:
    from daedalus.dispatch.entrypoints import entry_points

    _fake_dist(tmp_path, "fake-phase-a", {"echo": f"{__name__}:Echo"})
    _fake_dist(tmp_path, "fake-phase-b", {"later": f"{__name__}:Later"})
    found = entry_points(GROUP, [str(tmp_path)])
    assert sorted((ep.name, ep.dist.name if ep.dist else "") for ep in found) == [
        ("echo", "fake-phase-a"), ("later", "fake-phase-b")]
    assert {ep.load() for ep in found} == {Echo, Later}
    registry = Registry.from_entry_points(found)
    assert [r.name for r in registry.registrations] == ["echo", "later"]
    # the first of two copies on the path wins, as with importlib.metadata
    assert entry_points(GROUP, [str(tmp_path), str(tmp_path)]) == found
