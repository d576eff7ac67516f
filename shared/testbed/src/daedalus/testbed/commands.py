"""Testbed subcommands: setup, build, checkpatch, guest, demo."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from daedalus.testbed import kernels
from daedalus.testbed.build import build, kernel_sources
from daedalus.testbed.guest import GuestConfig, initramfs, run_guest
from daedalus.testbed.paths import latest_phase, phase_by_number, repo_root
from daedalus.testbed.system import apt_install, eprint, run


def _add_phase(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--phase", default=None,
                        help="roadmap phase whose layers 8.1...N are built (default: newest)")


def _phase(args: argparse.Namespace) -> str:
    phase: str = args.phase or latest_phase()
    phase_by_number(phase)  # validates
    return phase


def _add_kernel(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kernel", default=kernels.DEFAULT_SERIES,
                        help="guest kernel: 6.12, 6.1 or a full release (default: %(default)s)")


class SetupCommand:
    NAME = "setup"
    HELP = "install what the testbed needs from Debian's archive (idempotent, as root)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--kernel", action="append", default=None,
                            help="kernel to install (repeatable; default: 6.12 and 6.1)")
        parser.add_argument("--refresh", action="store_true",
                            help="re-resolve 6.12/6.1 to the newest Debian release")

    def run(self, args: argparse.Namespace) -> int:
        names = args.kernel or list(kernels.SERIES)
        apt_install(kernels.HOST_PACKAGES)
        ks = [kernels.resolve(n, refresh=args.refresh) for n in names]
        kernels.setup(ks)
        for k in ks:
            initramfs(k)
            print(f"kernel {k.series}: {k.release} ready "
                  f"(m2m helper {k.helper_module})")
        print(f"checkpatch: {kernels.checkpatch()}")
        return 0


class BuildCommand:
    NAME = "build"
    HELP = "build daedalus_v4l2.ko for a phase against a kernel build directory"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _add_phase(parser)
        _add_kernel(parser)
        parser.add_argument("--kdir", type=Path, default=None,
                            help="kernel build directory (default: /lib/modules/RELEASE/build)")

    def run(self, args: argparse.Namespace) -> int:
        kernel = kernels.resolve(args.kernel)
        result = build(_phase(args), kernel, args.kdir)
        print(result.module)
        return 0


class CheckpatchCommand:
    NAME = "checkpatch"
    HELP = "run checkpatch.pl --strict (from Debian's linux-source) over the kernel sources"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _add_phase(parser)

    def run(self, args: argparse.Namespace) -> int:
        files = kernel_sources(args.phase)
        script = kernels.checkpatch()
        proc = run([script, "--strict", "--no-tree", "--terse", "--show-types", "-f", *files],
                   cwd=repo_root(), check=False, capture=True)
        sys.stdout.write(proc.stdout)
        print(f"checkpatch --strict: {len(files)} files, "
              f"{'clean' if proc.returncode == 0 else 'NOT clean'}")
        return proc.returncode


class GuestCommand:
    NAME = "guest"
    HELP = "boot a kernel in QEMU with the phase's module loaded and run a command in it"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _add_phase(parser)
        _add_kernel(parser)
        parser.add_argument("--timeout", type=float, default=900.0,
                            help="seconds before the guest is killed (default: %(default)s)")
        parser.add_argument("--accel", choices=("tcg", "kvm", "auto"), default="tcg",
                            help="QEMU accelerator; auto probes KVM once (default: %(default)s)")
        parser.add_argument("--memory", type=int, default=4096, help="guest memory in MiB")
        parser.add_argument("--no-module", action="store_true",
                            help="do not load daedalus_v4l2 (the media core and helper still load)")
        parser.add_argument("--no-daemon", action="store_true",
                            help="do not start daedalusd (phase 8.2 on starts it by default)")
        parser.add_argument("--init", choices=("harness", "systemd"), default="harness",
                            help="harness: load the phase's module and start the checkout's "
                                 "daedalusd; systemd: boot the machine as installed "
                                 "(shared/install/install.sh) with nothing from the harness "
                                 "(default: %(default)s)")
        parser.add_argument("--mask", action="append", default=[], metavar="UNIT",
                            help="with --init systemd: a unit of this machine not to start "
                                 "(repeatable)")
        parser.add_argument("--show-dmesg", action="store_true", help="print the guest's dmesg")
        parser.add_argument("--show-daemon-log", action="store_true",
                            help="print daedalusd's log")
        parser.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")

    def run(self, args: argparse.Namespace) -> int:
        argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not argv:
            eprint("daedalus-v4l2 guest: no command given (… guest --phase 8.1 -- CMD ARGS)")
            return 2
        config = GuestConfig(kernel=kernels.resolve(args.kernel), phase=_phase(args),
                             memory_mb=args.memory, timeout=args.timeout, accel=args.accel,
                             load_module=not args.no_module, daemon=not args.no_daemon,
                             init=args.init, mask_units=tuple(args.mask))
        result = run_guest(config, argv)
        sys.stdout.write(result.stdout)
        sys.stdout.flush()
        sys.stderr.write(result.stderr)
        if args.show_dmesg:
            eprint(result.dmesg)
        if args.show_daemon_log:
            eprint(result.daemon_log)
        for problem in result.problems:
            eprint(f"daedalus-v4l2 guest: {problem}")
        boot = f"{result.boot_seconds:.2f} s" if result.boot_seconds is not None else "?"
        daemon = (f"daemon {result.daemon_seconds:.1f} s, "
                  if result.daemon_seconds is not None else "")
        eprint(f"daedalus-v4l2 guest: kernel {config.kernel.release}, phase {config.phase}, "
               f"boot {boot}, {daemon}wall {result.wall_seconds:.1f} s, exit {result.status}")
        return result.status


# The clip the demo decodes, by the phase that can: 8.5's inline transport
# carries frames up to ~1 MiB, 8.6's dma-bufs any size.
DEMO_CLIPS = {(8, 5): "vp9-320x240", (8, 6): "vp9-1280x720"}


def demo_clip_name(phase: tuple[int, int]) -> str | None:
    """The corpus clip the demo decodes at *phase*; None before phase 8.5."""
    names = [name for key, name in sorted(DEMO_CLIPS.items()) if key <= phase]
    return names[-1] if names else None


def _demo_clip(name: str) -> Path | None:
    """Phase 8.3's corpus clip *name* (made on first use if large), if installed."""
    try:
        from daedalus.parse import corpus  # phase 8.3 and later
    except ImportError:
        return None
    return Path(corpus.path(name))


class DemoCommand:
    NAME = "demo"
    HELP = ("the main job: build, boot, show the decoder device and its formats, and "
            "(phase 8.5 on) decode a corpus clip through it, checked against FFmpeg")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _add_phase(parser)
        _add_kernel(parser)

    def run(self, args: argparse.Namespace) -> int:
        kernel = kernels.resolve(args.kernel)
        kernels.setup([kernel])
        phase = _phase(args)
        script = ("set -e; v4l2-ctl --list-devices; dev=$(v4l2-ctl --list-devices | "
                  "awk '/daedalus-v4l2/{getline; print $1; exit}'); "
                  "v4l2-ctl -d \"$dev\" --info; v4l2-ctl -d \"$dev\" --list-formats-out; "
                  "v4l2-ctl -d \"$dev\" --list-formats; v4l2-ctl -d \"$dev\" --get-fmt-video-out")
        name = demo_clip_name(phase_by_number(phase).key)
        clip = _demo_clip(name) if name else None
        decodes = clip is not None
        if decodes:
            script += (f"; echo; echo '== decoding {name} through' \"$dev\"; "
                       f"daedalus-v4l2 decode {clip} -o /tmp/demo.yuv --device \"$dev\" "
                       "--compare")
        config = GuestConfig(kernel=kernel, phase=phase)
        result = run_guest(config, ["sh", "-c", script])
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        for problem in result.problems:
            eprint(f"daedalus-v4l2 demo: {problem}")
        what = "decode through the device" if decodes else "device and formats"
        print(f"demo: phase {phase} on {kernel.release}: {what}: "
              f"{'OK' if result.status == 0 else 'FAILED'} "
              f"(guest boot {result.boot_seconds} s, wall {result.wall_seconds:.1f} s)")
        return result.status
