"""Boot a Debian kernel in QEMU with the host's root filesystem and run a command.

The guest sees the host's root read-only over virtio-9p, a writable results
folder shared with the host, and a module tree staged for the phase under
test (the kernel's own modules plus the m2m helper and our module, depmod-ed
on the host). Stage 1 is a tiny busybox initramfs that mounts the root;
stage 2 is guest-init.sh from this package. The command's output, exit
status and the kernel log come back through the results folder.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from daedalus.testbed import reaper
from daedalus.testbed.build import MODULE_NAME, build
from daedalus.testbed.kernels import Kernel, build_helper
from daedalus.testbed.paths import cache_dir, phase_by_number, repo_root
from daedalus.testbed.system import TestbedError, log, run

PKG_DIR = Path(__file__).resolve().parent

# Exit statuses of `daedalus-v4l2 guest` that are not the command's own.
EXIT_DMESG = 120     # the command succeeded but the kernel logged a warning/bug
EXIT_TIMEOUT = 124   # the guest did not finish in time and was killed
EXIT_SETUP = 125     # the guest could not load the modules or start services
EXIT_CRASH = 126     # the guest died (panic, triple fault) before finishing

# Kernel log lines that fail a run (WARN, BUG, oops, lockdep, KASAN, ...).
DMESG_BAD = re.compile(
    r"(WARNING:|\bBUG[: ]|Oops|general protection fault|Kernel panic|"
    r"possible circular locking|possible recursive locking|INFO: task .* blocked|"
    r"KASAN|UBSAN|kernel BUG|Call Trace:|RIP: |list_add corruption|refcount_t:)"
)

# The first phase whose guests start daedalusd before the command.
DAEMON_FROM_PHASE = (8, 2)
# How long the guest waits for daedalusd's handshake while the daemon runs (a
# daemon that exits fails the run at once). Its start is dominated by imports
# over 9p; several TCG guests on two host cores stretch it to minutes.
DAEMON_WAIT = 300

# Modules stage 1 needs to reach the root filesystem (with dependencies).
ROOT_MODULES = ["virtio_pci", "9pnet_virtio", "9p"]
# Modules every guest loads before the command: media core, vb2 (phase 8.6's
# module allocates with videobuf2-dma-sg; modprobe would also pull it in as a
# symbol dependency), the helper.
MEDIA_MODULES = ["videodev", "videobuf2-v4l2", "videobuf2-vmalloc", "videobuf2-dma-contig",
                 "videobuf2-dma-sg", "v4l2-mem2mem"]


@dataclass(frozen=True)
class GuestConfig:
    """What one guest run is made of (frozen, like kunit's QemuArchParams)."""

    kernel: Kernel
    phase: str
    memory_mb: int = 4096
    cpus: int = 2
    timeout: float = 600.0
    accel: str = "tcg"
    load_module: bool = True
    setup_cmd: str = ""
    daemon: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)
    kernel_args: str = "console=ttyS0 quiet loglevel=4 panic=-1"
    # "harness" (guest-init.sh: the phase's modules staged and loaded, the
    # checkout's daedalusd started) or "systemd" (guest-systemd.sh: the
    # installed system boots by itself)
    init: str = "harness"
    # units of the host's system a systemd guest must not start (services
    # of the testbed host that fail on a read-only root and slow the boot)
    mask_units: tuple[str, ...] = ()


@dataclass
class GuestResult:
    status: int  # what `daedalus-v4l2 guest` exits with
    cmd_status: int | None
    stdout: str
    stderr: str
    dmesg: str
    console: str
    problems: list[str]
    boot_seconds: float | None
    wall_seconds: float
    daemon_log: str = ""
    daemon_seconds: float | None = None  # daedalusd's exec to the kernel's "ready"

    @property
    def dmesg_problems(self) -> list[str]:
        return [line for line in self.dmesg.splitlines() if DMESG_BAD.search(line)]



# The emulated CPU: QEMU's "max" without AVX2. Debian 12's QEMU 7.2 was the
# first to emulate AVX2 under TCG, and it gets some of it wrong: frame 12 of
# av1-320x240-30f decodes to different pixels in the guest (each dav1d build
# and thread set-up differently wrong: Debian's ffmpeg, PyAV's, the daemon's)
# while every decoder on the host agrees. Without AVX2, dav1d and FFmpeg take
# their SSE4/AVX paths and the guest decodes as the host does.
TCG_CPU = "max,avx2=off"

def _modules_dep(release_dir: Path) -> dict[str, list[str]]:
    deps: dict[str, list[str]] = {}
    for line in (release_dir / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
    return deps


def _module_name(path: str) -> str:
    base = Path(path).name
    for suffix in (".xz", ".zst", ".gz"):
        base = base.removesuffix(suffix)
    return base.removesuffix(".ko").replace("-", "_")


def _load_order(release_dir: Path, wanted: Sequence[str]) -> list[str]:
    """Paths (relative to the release dir) of *wanted* modules and their deps, deps first."""
    deps = _modules_dep(release_dir)
    by_name = {_module_name(p): p for p in deps}
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in reversed(deps.get(path, [])):
            visit(dep)
        order.append(path)

    for name in wanted:
        path = by_name.get(name.replace("-", "_"))
        if path is None:
            continue  # built in
        visit(path)
    return order


def _decompress(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".xz":
        import lzma

        return lzma.decompress(data)
    if path.suffix == ".zst":
        return subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True).stdout
    if path.suffix == ".gz":
        return gzip.decompress(data)
    return data


def _cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A cpio 'newc' archive of (name, mode, data) entries (symlink data = target)."""
    buf = io.BytesIO()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        name_b = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08X}" for v in (
            ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name_b), 0))
        buf.write(hdr.encode())
        buf.write(name_b)
        buf.write(b"\0" * ((-(110 + len(name_b))) % 4))
        buf.write(data)
        buf.write(b"\0" * ((-len(data)) % 4))
    return buf.getvalue()


def initramfs(kernel: Kernel) -> Path:
    """Stage-1 initramfs for *kernel*: busybox, the 9p/virtio modules, init (cached)."""
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        raise TestbedError("/bin/busybox missing (apt-get install busybox-static)")
    init = (PKG_DIR / "initramfs-init.sh").read_bytes()
    order = _load_order(kernel.modules_dir, ROOT_MODULES)
    out = cache_dir() / "initramfs" / f"{kernel.release}.cpio.gz"
    stamp = out.with_suffix(".stamp")
    key = f"{init!r}{order}{busybox.stat().st_mtime}"
    if out.exists() and stamp.exists() and stamp.read_text() == key:
        return out
    dirs = ["bin", "dev", "proc", "sys", "newroot", "mods"]
    entries: list[tuple[str, int, bytes]] = [(d, 0o40755, b"") for d in dirs]
    entries.append(("bin/busybox", 0o100755, busybox.read_bytes()))
    entries.append(("bin/sh", 0o120777, b"busybox"))
    entries.append(("init", 0o100755, init))
    names = []
    for rel in order:
        name = _module_name(rel) + ".ko"
        names.append(name)
        entries.append((f"mods/{name}", 0o100644, _decompress(kernel.modules_dir / rel)))
    entries.append(("modules.list", 0o100644, ("\n".join(names) + "\n").encode()))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(gzip.compress(_cpio_newc(entries), compresslevel=1))
    stamp.write_text(key)
    return out


def stage_modules(kernel: Kernel, extra: Sequence[Path], dest: Path) -> Path:
    """A copy (hard links) of the kernel's module tree plus *extra* modules, depmod-ed."""
    rel_dir = dest / "lib" / "modules" / kernel.release
    rel_dir.mkdir(parents=True)
    src = kernel.modules_dir
    keep_meta = ("modules.order", "modules.builtin", "modules.builtin.modinfo")
    for entry in src.iterdir():
        generated = entry.name.startswith("modules.") and entry.name not in keep_meta
        # (updates/: what DKMS installed there for a systemd guest, which
        # must not shadow the phase under test)
        if entry.name in ("build", "source", "updates") or generated:
            continue
        target = rel_dir / entry.name
        if entry.is_dir():
            proc = subprocess.run(["cp", "-al", str(entry), str(target)], capture_output=True)
            if proc.returncode != 0:
                shutil.copytree(entry, target, symlinks=True, dirs_exist_ok=True)
        else:
            shutil.copy2(entry, target)
    updates = rel_dir / "updates"
    updates.mkdir(exist_ok=True)
    for mod in extra:
        shutil.copy2(mod, updates / mod.name)
    run(["depmod", "-b", dest, kernel.release])
    return dest


def daemon_command(config: GuestConfig) -> str | None:
    """daedalusd's path when this run starts it: phase 8.2 on, unless switched off."""
    if not config.daemon or not config.load_module:
        return None
    if phase_by_number(config.phase).key < DAEMON_FROM_PHASE:
        return None
    path = shutil.which("daedalusd")
    if path is None:
        raise TestbedError(f"phase {config.phase} needs daedalusd, which is not installed "
                           "(run through hatch, or pass --no-daemon)")
    return path


def kvm_usable(timeout: float = 20.0) -> bool:
    """Whether KVM boots a guest here (nested KVM often hangs); cached per machine."""
    probe = cache_dir() / "kvm-probe"
    if probe.exists():
        return probe.read_text().strip() == "yes"
    ok = False
    if os.access("/dev/kvm", os.R_OK | os.W_OK):
        with tempfile.TemporaryDirectory() as tmp:
            console = Path(tmp) / "console"
            kernels = sorted(Path("/boot").glob("vmlinuz-*"))
            if kernels:
                proc = subprocess.Popen(
                    ["qemu-system-x86_64", "-accel", "kvm", "-m", "512", "-nodefaults",
                     "-display", "none", "-no-reboot", "-serial", f"file:{console}",
                     "-kernel", str(kernels[-1]), "-append", "console=ttyS0 panic=-1"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline and proc.poll() is None:
                    if console.exists() and b"Linux version" in console.read_bytes():
                        ok = True
                        break
                    time.sleep(0.5)
                proc.kill()
                proc.wait()
    probe.write_text("yes\n" if ok else "no\n")
    return ok


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def source_dirs(root: Path) -> list[Path]:
    """The checkout's Python package trees (the editable installs' sources)."""
    return sorted([*root.glob("shared/*/src"), *root.glob("phases/*/py/src")])


def compile_sources(root: Path) -> bool:
    """Byte-compile the checkout's packages on the host, next to their sources.

    The guest sees the host's files read-only and runs with
    PYTHONDONTWRITEBYTECODE, so a module without a fresh ``__pycache__`` entry
    is compiled again by every process that imports it, at emulation speed
    (daedalusd's start went from about 12 s to 35-45 s in a quiet TCG guest).
    The standard library and the virtualenv's packages were compiled when
    they were installed; a fresh clone's own sources were not. Checked by
    timestamp (not by hash, whatever SOURCE_DATE_EPOCH says), so an
    up-to-date tree costs a stat per file. False if something could not be
    compiled (a read-only checkout): the guest then compiles it, slowly.
    """
    import compileall
    import py_compile

    ok = True
    for src in source_dirs(root):
        ok &= bool(compileall.compile_dir(
            src, quiet=2, invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP))
    if not ok:
        log.debug("could not byte-compile every module under %s", root)
    return ok


def _env_for_guest(extra: dict[str, str]) -> dict[str, str]:
    keep = ("PATH", "VIRTUAL_ENV", "PYTHONPATH", "LANG", "LC_ALL", "DAEDALUS_ROOT",
            "DAEDALUS_CACHE", "HOME")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.setdefault("HOME", "/root")
    env.update({
        # read the host's __pycache__ (compile_sources), never write: the root
        # is read-only (a PYTHONPYCACHEPREFIX would hide every host .pyc)
        "PYTHONDONTWRITEBYTECODE": "1",
        "XDG_CACHE_HOME": "/tmp/cache",
        "DAEDALUS_IN_GUEST": "1",
        "DAEDALUS_OUT": "/run/daedalus",
        "TERM": "dumb",
    })
    env.update(extra)
    return env


def run_guest(config: GuestConfig, argv: Sequence[str], *, cwd: Path | None = None) -> GuestResult:
    """Boot, run *argv* in the guest, power off; never leaves QEMU behind."""
    kernel = config.kernel
    systemd = config.init == "systemd"
    if config.init not in ("harness", "systemd"):
        raise TestbedError(f"unknown guest init {config.init!r} (harness or systemd)")
    modules = [] if systemd else [build_helper(kernel)]
    if config.load_module and not systemd:
        modules.append(build(config.phase, kernel).module)
    accel = config.accel
    if accel == "auto":
        accel = "kvm" if kvm_usable() else "tcg"
    start = time.monotonic()
    compile_sources(repo_root())
    runs = cache_dir() / "runs"
    runs.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="guest-", dir=runs) as tmp_s:
        tmp = Path(tmp_s)
        out = tmp / "out"
        out.mkdir()
        stage = tmp / "stage" if systemd else stage_modules(kernel, modules, tmp / "stage")
        preload = [*MEDIA_MODULES, MODULE_NAME] if config.load_module else MEDIA_MODULES
        daemon = None if systemd else daemon_command(config)
        env = _env_for_guest(config.extra_env)
        workdir = (cwd or Path.cwd()).resolve()
        keep = [str(p) for p in (repo_root(), workdir, stage, Path(env.get("VIRTUAL_ENV", "/")))
                if str(p).startswith("/tmp/")]
        config_sh = [f"DAEDALUS_STAGE={shlex.quote(str(stage))}",
                     f"DAEDALUS_KEEP_TMP={shlex.quote(' '.join(keep))}",
                     f"DAEDALUS_PRELOAD={shlex.quote(' '.join(preload))}",
                     f"DAEDALUS_SETUP={shlex.quote(config.setup_cmd)}",
                     f"DAEDALUS_DAEMON={'1' if daemon else ''}",
                     f"DAEDALUS_DAEMON_WAIT={DAEMON_WAIT}"]
        (out / "config.sh").write_text("\n".join(config_sh) + "\n")
        cmd_sh = [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())]
        cmd_sh.append(f"cd {shlex.quote(str(workdir))} || exit 125")
        cmd_sh.append("exec " + " ".join(shlex.quote(a) for a in argv))
        (out / "cmd.sh").write_text("\n".join(cmd_sh) + "\n")
        if daemon:
            daemon_sh = [line for line in cmd_sh if not line.startswith("exec ")]
            daemon_sh.append(f"exec {shlex.quote(daemon)} --verbose")
            (out / "daemon.sh").write_text("\n".join(daemon_sh) + "\n")
        console = tmp / "console.log"
        stage2 = "guest-systemd.sh" if systemd else "guest-init.sh"
        qemu = [
            "qemu-system-x86_64", "-accel", accel, "-cpu", TCG_CPU if accel == "tcg" else "host",
            "-smp", str(config.cpus), "-m", str(config.memory_mb),
            "-nodefaults", "-display", "none", "-no-reboot", "-monitor", "none",
            "-serial", f"file:{console}",
            "-kernel", str(kernel.vmlinuz), "-initrd", str(initramfs(kernel)),
            "-append", " ".join([config.kernel_args,
                                 *(f"systemd.mask={u}" for u in config.mask_units),
                                 f"dinit={PKG_DIR / stage2}"]),
            "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,"
                       "multidevs=remap",
            "-virtfs", f"local,path={out},mount_tag=dout,security_model=none,multidevs=remap",
            "-device", "virtio-rng-pci",
        ]
        log.debug("qemu: %s", " ".join(shlex.quote(a) for a in qemu))
        problems: list[str] = []
        timed_out = False
        # QEMU ends with this process, however it ends (reaper.child).
        with reaper.child(qemu, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT) as proc:
            try:
                qemu_out, _ = proc.communicate(timeout=config.timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                qemu_out, _ = proc.communicate()
        wall = time.monotonic() - start
        console_text = _read(console)
        dmesg = _read(out / "dmesg") or console_text
        rc_text = _read(out / "rc").strip()
        cmd_status = int(rc_text) if rc_text.lstrip("-").isdigit() else None
        boot_text = _read(out / "boot").strip()
        boot = float(boot_text) if re.fullmatch(r"\d+(\.\d+)?", boot_text) else None
        ready_text = _read(out / "daemon-ready").strip()
        daemon_seconds = (float(ready_text) if re.fullmatch(r"\d+(\.\d+)?", ready_text)
                          else None)
        if timed_out:
            problems.append(f"guest did not finish within {config.timeout:.0f} s and was killed")
            status = EXIT_TIMEOUT
        elif _read(out / "failed"):
            problems.append("guest setup failed:\n" + _read(out / "setup.log"))
            if _read(out / "daemon.log"):
                problems.append("daedalusd log:\n" + _read(out / "daemon.log")[-4000:])
            status = EXIT_SETUP
        elif cmd_status is None:
            why = "kernel panic" if "Kernel panic" in console_text else "no exit status"
            problems.append(f"guest died before the command finished ({why}); "
                            f"QEMU said: {qemu_out.decode(errors='replace').strip()[-500:]}")
            status = EXIT_CRASH
        else:
            status = cmd_status
        result = GuestResult(status, cmd_status, _read(out / "stdout"), _read(out / "stderr"),
                             dmesg, console_text, problems, boot, wall,
                             # (a systemd guest's daemon logs to the journal)
                             _read(out / ("journal" if systemd else "daemon.log")),
                             daemon_seconds)
        bad = result.dmesg_problems
        if bad:
            problems.append("kernel log shows problems:\n" + "\n".join(bad[:40]))
            if result.status == 0:
                result.status = EXIT_DMESG
        if status in (EXIT_TIMEOUT, EXIT_CRASH):
            tail = "\n".join(console_text.splitlines()[-60:])
            problems.append(f"last console lines:\n{tail}")
        return result
