"""The layering machinery, on a throwaway checkout with fake phases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from daedalus.testbed import build, paths
from daedalus.testbed.guest import _cpio_newc, _load_order


@pytest.fixture()
def fake_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "hatch.toml").touch()
    phases = tmp_path / "phases"
    phases.mkdir()
    (phases / "Kbuild").write_text("# fake\n")
    for num, name, sym in [("8.1", "skeleton", "a_layer"), ("8.2", "bridge", "b_layer"),
                           ("8.10", "later", "c_layer")]:
        d = phases / f"{num}-{name}"
        (d / "kernel").mkdir(parents=True)
        (d / "kernel" / f"{name}.c").write_text("/* x */\n")
        (d / "layer.mk").write_text(f"layer-objs := {name}.o\nlayer-sym := {sym}\n")
    (phases / "README").write_text("not a phase\n")
    monkeypatch.setenv("DAEDALUS_ROOT", str(tmp_path))
    paths.repo_root.cache_clear()
    yield tmp_path
    paths.repo_root.cache_clear()


def test_phases_sort_numerically(fake_root: Path) -> None:
    assert [p.number for p in paths.all_phases()] == ["8.1", "8.2", "8.10"]
    assert [p.number for p in paths.phases_up_to("8.2")] == ["8.1", "8.2"]
    with pytest.raises(ValueError, match="unknown phase"):
        paths.phase_by_number("9.9")


def test_layout_links_layers_up_to_phase(fake_root: Path) -> None:
    bdir, layers = build.layout("8.2", "6.12.0-test")
    assert [layer.dirname for layer in layers] == ["8.1-skeleton", "8.2-bridge"]
    assert (bdir / "8.2-bridge" / "bridge.c").resolve() == \
        fake_root / "phases/8.2-bridge/kernel/bridge.c"
    assert not (bdir / "8.10-later").exists()
    table = (bdir / "layers.c").read_text()
    assert table.index("&a_layer,") < table.index("&b_layer,")
    assert "c_layer" not in table


def test_layout_switching_phase_rewrites_only_the_table(fake_root: Path) -> None:
    bdir, _ = build.layout("8.1", "r")
    first = (bdir / "layers.c").stat().st_mtime_ns
    build.layout("8.1", "r")
    assert (bdir / "layers.c").stat().st_mtime_ns == first  # unchanged set: not rewritten
    bdir2, _ = build.layout("8.2", "r")
    assert "b_layer" in (bdir2 / "layers.c").read_text()


def test_load_order_puts_dependencies_first(tmp_path: Path) -> None:
    (tmp_path / "modules.dep").write_text(
        "kernel/fs/9p/9p.ko.xz: kernel/fs/netfs/netfs.ko.xz kernel/net/9p/9pnet.ko.xz\n"
        "kernel/net/9p/9pnet_virtio.ko.xz: kernel/net/9p/9pnet.ko.xz\n"
        "kernel/net/9p/9pnet.ko.xz:\n"
        "kernel/fs/netfs/netfs.ko.xz:\n")
    order = _load_order(tmp_path, ["9pnet_virtio", "9p", "virtio_pci"])
    assert order == ["kernel/net/9p/9pnet.ko.xz", "kernel/net/9p/9pnet_virtio.ko.xz",
                     "kernel/fs/netfs/netfs.ko.xz", "kernel/fs/9p/9p.ko.xz"]


def test_cpio_is_readable_by_cpio(tmp_path: Path) -> None:
    import shutil
    import subprocess

    if not shutil.which("cpio"):
        pytest.skip("cpio not installed")
    data = _cpio_newc([("d", 0o40755, b""), ("d/f", 0o100644, b"hello"),
                       ("l", 0o120777, b"d/f")])
    subprocess.run(["cpio", "-id", "--quiet"], input=data, cwd=tmp_path, check=True)
    assert (tmp_path / "d/f").read_bytes() == b"hello"
    assert (tmp_path / "l").readlink() == Path("d/f")
