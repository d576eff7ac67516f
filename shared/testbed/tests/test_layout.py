"""The layering machinery, on a throwaway checkout with fake phases.

The fake layers are built by the real phases/Makefile and phases/Kbuild
(make alone, against an installed kernel's headers).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from daedalus.testbed import build, kernels, paths
from daedalus.testbed.guest import _cpio_newc, _load_order

LAYERS = [("8.1", "skeleton", "a_layer"), ("8.2", "bridge", "b_layer"),
          ("8.10", "later", "c_layer")]


@pytest.fixture()
def fake_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A checkout with the real phases/Kbuild and Makefile and three fake layers."""
    root = tmp_path / "src"
    (root / "phases").mkdir(parents=True)
    (root / "hatch.toml").touch()
    for name in ("Kbuild", "Makefile"):
        shutil.copy(paths.repo_root() / "phases" / name, root / "phases" / name)
    for num, name, sym in LAYERS:
        d = root / "phases" / f"{num}-{name}"
        (d / "kernel").mkdir(parents=True)
        (d / "kernel" / f"{name}.c").write_text(
            '#include <linux/module.h>\n#include "daedalus-layer.h"\n'
            f'const struct daedalus_layer {sym} = {{ .name = "{name}" }};\n'
            + ('MODULE_LICENSE("GPL");\n' if num == "8.1" else ""))
        (d / "layer.mk").write_text(f"layer-objs := {name}.o\nlayer-sym := {sym}\n")
    (root / "phases" / "8.1-skeleton" / "kernel" / "daedalus-layer.h").write_text(
        "struct daedalus_layer { const char *name; };\n")
    (root / "phases" / "8.3-nolayer" / "py").mkdir(parents=True)
    (root / "phases" / "README").write_text("not a phase\n")
    monkeypatch.setenv("DAEDALUS_ROOT", str(root))
    paths.repo_root.cache_clear()
    yield root
    paths.repo_root.cache_clear()


def test_phases_sort_numerically(fake_root: Path) -> None:
    assert [p.number for p in paths.all_phases()] == ["8.1", "8.2", "8.3", "8.10"]
    assert [p.number for p in paths.phases_up_to("8.2")] == ["8.1", "8.2"]
    with pytest.raises(ValueError, match="unknown phase"):
        paths.phase_by_number("9.9")


@pytest.fixture()
def kdir() -> Path:
    for series in kernels.SERIES:
        kdir = kernels.resolve(series).kdir
        if (kdir / "Makefile").exists():
            return kdir
    pytest.skip("no kernel headers installed (daedalus-v4l2 setup)")


def _tree(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


def _make(kdir: Path, out: Path, phase: str, target: str) -> str:
    argv = build.make_command(phase, kdir, out, target=target)
    proc = subprocess.run(argv, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_make_alone_builds_layers_up_to_phase_out_of_tree(fake_root: Path, kdir: Path,
                                                           tmp_path: Path) -> None:
    before = _tree(fake_root)
    out = tmp_path / "out"
    _make(kdir, out, "8.10", "modules")
    assert (out / "daedalus_v4l2.ko").is_file()
    table = (out / "layers.c").read_text()
    assert table.index("&a_layer,") < table.index("&b_layer,") < table.index("&c_layer,")
    assert "daedalus_phase_id = 90;" in table  # 8 * 10 + 10, as the HELLO carries it
    assert "extern const struct daedalus_layer c_layer;" in (out / "layers.h").read_text()
    assert (out / "8.2-bridge" / "bridge.o").is_file()
    assert _tree(fake_root) == before  # nothing written into the source tree
    # Same set of layers: the table is not rewritten and nothing is rebuilt.
    mtime = (out / "layers.c").stat().st_mtime_ns
    log = _make(kdir, out, "8.10", "modules")
    assert (out / "layers.c").stat().st_mtime_ns == mtime
    assert "CC [M]" not in log and "UPD" not in log


def test_phase_without_layer_takes_the_layers_below(fake_root: Path, kdir: Path,
                                                    tmp_path: Path) -> None:
    out = tmp_path / "out"
    _make(kdir, out, "8.3", "layers.o")
    table = (out / "layers.c").read_text()
    assert "&a_layer," in table and "&b_layer," in table and "c_layer" not in table
    assert "daedalus_phase_id = 83;" in table


def test_make_refuses_unknown_phase_and_in_place_builds(fake_root: Path, kdir: Path,
                                                         tmp_path: Path) -> None:
    argv = build.make_command("9.9", kdir, tmp_path / "out")
    proc = subprocess.run(argv, capture_output=True, text=True)
    assert proc.returncode != 0 and "unknown PHASE=9.9" in proc.stdout + proc.stderr
    proc = subprocess.run(["make", "-C", str(kdir), f"M={fake_root / 'phases'}", "PHASE=8.1"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "out of tree only" in proc.stdout + proc.stderr


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
    if not shutil.which("cpio"):
        pytest.skip("cpio not installed")
    data = _cpio_newc([("d", 0o40755, b""), ("d/f", 0o100644, b"hello"),
                       ("l", 0o120777, b"d/f")])
    subprocess.run(["cpio", "-id", "--quiet"], input=data, cwd=tmp_path, check=True)
    assert (tmp_path / "d/f").read_bytes() == b"hello"
    assert (tmp_path / "l").readlink() == Path("d/f")
