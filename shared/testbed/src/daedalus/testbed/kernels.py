"""Test kernels from Debian's archive: resolve, install, helper modules, checkpatch.

A kernel is named by its series ("6.12", "6.1") or by its full release
("6.12.117+deb12-amd64"). The series resolves to the newest image Debian
offers, and the resolution is remembered in the cache so that later runs use
the same kernel until ``daedalus-v4l2 setup --refresh``.
"""

from __future__ import annotations

import json
import re
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from daedalus.testbed.paths import cache_dir
from daedalus.testbed.system import (
    TestbedError,
    apt_candidates,
    apt_depends,
    apt_install,
    apt_update_once,
    apt_version,
    log,
    run,
)

SERIES = ("6.12", "6.1")
DEFAULT_SERIES = "6.12"

# What the host needs besides the kernels themselves.
HOST_PACKAGES = [
    "qemu-system-x86", "v4l-utils", "ffmpeg", "busybox-static", "build-essential",
    "bc", "kmod", "cpio", "xz-utils", "perl", "libelf-dev",
    "gstreamer1.0-tools", "gstreamer1.0-plugins-good", "gstreamer1.0-plugins-base",
    "gstreamer1.0-plugins-bad",  # h264parse, which v4l2h264dec needs in front of it
    # shared/install's proof: install with DKMS, boot the result with systemd
    "dkms", "systemd", "udev", "python3-venv", "python3-dev", "util-linux",
]

# Files taken out of linux-source-X.Y: the m2m helper and checkpatch.
SOURCE_MEMBERS = [
    "drivers/media/v4l2-core/v4l2-mem2mem.c",
    "scripts/checkpatch.pl",
    "scripts/spelling.txt",
    "scripts/const_structs.checkpatch",
]


@dataclass(frozen=True)
class Kernel:
    """One installed test kernel."""

    series: str
    release: str  # uname -r in the guest

    @property
    def image_package(self) -> str:
        return f"linux-image-{self.release}"

    @property
    def headers_package(self) -> str:
        return f"linux-headers-{self.release}"

    @property
    def source_package(self) -> str:
        return f"linux-source-{self.series}"

    @property
    def vmlinuz(self) -> Path:
        return Path("/boot") / f"vmlinuz-{self.release}"

    @property
    def modules_dir(self) -> Path:
        return Path("/lib/modules") / self.release

    @property
    def kdir(self) -> Path:
        return self.modules_dir / "build"

    @property
    def source_dir(self) -> Path:
        """Extracted parts of linux-source, keyed by its Debian version."""
        version = apt_version(self.source_package) or "unknown"
        return cache_dir() / "src" / f"{self.source_package}_{version}"

    @property
    def helper_dir(self) -> Path:
        return cache_dir() / "helpers" / self.release

    @property
    def helper_module(self) -> Path:
        return self.helper_dir / "v4l2-mem2mem.ko"


def _series_of(release: str) -> str:
    m = re.match(r"(\d+\.\d+)", release)
    if not m:
        raise TestbedError(f"cannot tell the series of kernel {release!r}")
    return m[1]


def _resolve_series(series: str) -> str:
    """The newest Debian kernel release of *series* (e.g. 6.12 -> 6.12.117+deb12-amd64)."""
    apt_update_once()
    if series == "6.1":
        deps = [d for d in apt_depends("linux-image-amd64") if d.startswith("linux-image-6.1.")]
        if deps:
            return deps[0].removeprefix("linux-image-")
    rx = rf"linux-image-{re.escape(series)}\.(\d+)\+deb\d+-amd64"
    names = apt_candidates(rx)
    if not names:
        raise TestbedError(f"Debian's archive offers no linux-image for kernel {series}")

    def key(name: str) -> int:
        m = re.fullmatch(rx, name)
        return int(m[1]) if m else -1

    return max(names, key=key).removeprefix("linux-image-")


def _resolutions_file() -> Path:
    return cache_dir() / "kernels.json"


def resolve(name: str | None, *, refresh: bool = False) -> Kernel:
    """Map "6.12", "6.1" or a full release to a Kernel (not necessarily installed yet)."""
    name = name or DEFAULT_SERIES
    if name not in SERIES:
        return Kernel(_series_of(name), name)
    path = _resolutions_file()
    known: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    if refresh or name not in known:
        known[name] = _resolve_series(name)
        path.write_text(json.dumps(known, indent=2) + "\n")
    return Kernel(name, known[name])


def install(kernel: Kernel) -> None:
    """Image, headers and source of *kernel* from Debian's archive (idempotent)."""
    apt_install([kernel.image_package, kernel.headers_package, kernel.source_package])
    if not kernel.vmlinuz.exists() or not kernel.kdir.exists():
        raise TestbedError(f"{kernel.image_package} / {kernel.headers_package} installed "
                           f"but {kernel.vmlinuz} or {kernel.kdir} is missing")
    image_v = apt_version(kernel.image_package)
    source_v = apt_version(kernel.source_package)
    if image_v != source_v:
        log.warning("kernel %s is Debian version %s but %s is %s: the m2m helper is built "
                    "from a different source release", kernel.release, image_v,
                    kernel.source_package, source_v)


def extract_source(kernel: Kernel) -> Path:
    """Take SOURCE_MEMBERS out of /usr/src/linux-source-X.Y.tar.xz into the cache."""
    dest = kernel.source_dir
    if all((dest / m).exists() for m in SOURCE_MEMBERS):
        return dest
    tarballs = sorted(Path("/usr/src").glob(f"linux-source-{kernel.series}.tar.*"))
    if not tarballs:
        raise TestbedError(f"/usr/src/linux-source-{kernel.series}.tar.* not found "
                           f"(apt-get install {kernel.source_package})")
    log.info("extracting %s from %s", ", ".join(SOURCE_MEMBERS), tarballs[0])
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    wanted = {f"linux-source-{kernel.series}/{m}": m for m in SOURCE_MEMBERS}
    with tarfile.open(tarballs[0]) as tar:
        for member in tar:
            rel = wanted.pop(member.name, None)
            if rel is None:
                continue
            out = tmp / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(member)
            if src is None:
                raise TestbedError(f"{member.name} in {tarballs[0]} is not a file")
            out.write_bytes(src.read())
            if not wanted:
                break
    if wanted:
        raise TestbedError(f"{tarballs[0]} lacks {', '.join(wanted)}")
    (tmp / "scripts/checkpatch.pl").chmod(0o755)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def build_helper(kernel: Kernel) -> Path:
    """Build v4l2-mem2mem.ko out of tree (Debian's amd64 kernels do not ship it)."""
    src = extract_source(kernel) / SOURCE_MEMBERS[0]
    out = kernel.helper_dir
    stamp = out / "source.txt"
    if kernel.helper_module.exists() and stamp.exists() and stamp.read_text() == str(src):
        return kernel.helper_module
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    shutil.copy(src, out / "v4l2-mem2mem.c")
    (out / "Kbuild").write_text("obj-m := v4l2-mem2mem.o\n")
    log.info("building v4l2-mem2mem.ko for %s", kernel.release)
    run(["make", "-s", "-C", kernel.kdir, f"M={out}", "modules"], capture=True)
    stamp.write_text(str(src))
    return kernel.helper_module


def checkpatch(kernel: Kernel | None = None) -> Path:
    """Path to checkpatch.pl from Debian's linux-source (6.12 unless told)."""
    kernel = kernel or resolve(DEFAULT_SERIES)
    return extract_source(kernel) / "scripts/checkpatch.pl"


def setup(kernels: list[Kernel]) -> None:
    """Everything a guest run needs, from Debian's archive (idempotent)."""
    apt_install(HOST_PACKAGES)
    for kernel in kernels:
        install(kernel)
        build_helper(kernel)
    if not Path("/lib/modules").is_dir():
        Path("/lib/modules").mkdir()
