"""``daedalus-v4l2 doctor``: what an installed daedalus-v4l2 lacks, and how to fix it.

Runs as an ordinary user. The checks (``CHECKS``), in order, one line each
(the node checks one line per node)::

    ✓ what
    ✗ what — fix: a command the user can type
    - what — skipped: the check it needs failed      (the mark is an en dash)

1. kernel headers for the running kernel (/lib/modules/RELEASE/build/Makefile);
2. the m2m helper v4l2_mem2mem: loaded, or installed for this kernel
   (modules.dep / modules.builtin);
3. daedalus_v4l2 loaded (/sys/module/daedalus_v4l2), its phase (the world-readable
   /sys/class/misc/daedalus-v4l2/phase) the same as the newest phase
   distribution this Python has;
4. /dev/daedalus-v4l2: a character device, root's, no group or other access;
5. the decoder's video nodes (/sys/class/video4linux/*/name is daedalus-v4l2)
   and their media nodes (the node's device's media* in sysfs, as 8.7's
   topology.media_nodes_of), readable and writable by this user; from phase
   8.9 also the stateless node (name daedalus-v4l2-stateless, same media
   device), when the module has one;
6. daedalusd connected (sysfs ``daemon`` is ready);
7. the module's protocol version (sysfs ``protocol``) the one this Python speaks;
8. the coded formats and CAPTURE formats the node offers (ENUM_FMT);
9. a one-frame decode of the packaged clip (data/, see its README) through the
   node with phase 8.5's stateful client, byte for byte against PyAV's
   software decode of it converted to NV12 (``to_ndarray(format="nv12")``:
   swscale, not the daemon's packing).

A check that needs an earlier one (the node checks need the module, the
decode the node and the daemon) is skipped when that failed, and a skipped
check counts as failed: the exit status is 0 only when every line is ✓.
``--device`` names the bridge device (default /dev/daedalus-v4l2), ``--video``
the decoder node (default: every node named daedalus-v4l2, found in sysfs
without opening it); ``--root DIR`` reads /sys, /lib and /dev under DIR (the
host tests build fake trees).
"""

from __future__ import annotations

import argparse
import enum
import grp
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path

CLIP = "doctor-vp9-128x96.ivf"
CARD = "daedalus-v4l2"
STATELESS_CARD = CARD + "-stateless"  # phase 8.9's second node
HELPER = "v4l2_mem2mem"
MODULE = "daedalus_v4l2"
CHARDEV = "/dev/daedalus-v4l2"
MISC = "/sys/class/misc/daedalus-v4l2"
PHASE_DIST = re.compile(r"^daedalus[-_]phase[-_](\d+)[-_](\d+)$")

FIX_HEADERS = "sudo apt-get install linux-headers-$(uname -r)"
FIX_DKMS = "sudo dkms autoinstall"
FIX_MODPROBE = "sudo modprobe daedalus_v4l2"
FIX_RELOAD = ("sudo systemctl stop daedalusd && sudo modprobe -r daedalus_v4l2 && "
              f"{FIX_DKMS} && {FIX_MODPROBE} && sudo systemctl start daedalusd")
FIX_START = "sudo systemctl start daedalusd; its log: journalctl -u daedalusd"
FIX_LOG = "journalctl -u daedalusd"


class Mark(enum.Enum):
    OK = "✓"
    FAIL = "✗"
    SKIP = "\N{EN DASH}"


@dataclass(frozen=True)
class Line:
    mark: Mark
    what: str
    fix: str = ""  # ✗: a command; skipped: why

    def __str__(self) -> str:
        if self.mark is Mark.FAIL:
            return f"{self.mark.value} {self.what} — fix: {self.fix}"
        if self.mark is Mark.SKIP:
            return f"{self.mark.value} {self.what} — skipped: {self.fix}"
        return f"{self.mark.value} {self.what}"


@dataclass
class Context:
    """Where to look, and what the checks so far found (for the later ones)."""

    root: Path
    release: str
    chardev: Path
    video: Path | None
    loaded: bool = False
    nodes: list[Path] = field(default_factory=list)  # usable video nodes
    ready: bool = False
    offers_clip: bool = False

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    def status(self, name: str) -> str | None:
        """A file of the bridge's sysfs directory, stripped; None when unreadable."""
        try:
            return self.path(MISC).joinpath(name).read_text().strip()
        except OSError:
            return None


Check = Callable[[Context], list[Line]]


def _module_names(listing: Path) -> set[str]:
    """Module names in modules.dep / modules.builtin (path: deps per line)."""
    try:
        text = listing.read_text()
    except OSError:
        return set()
    names = set()
    for line in text.splitlines():
        base = line.partition(":")[0].rsplit("/", 1)[-1]
        if ".ko" in base:
            names.add(base[:base.index(".ko")].replace("-", "_"))
    return names


def _installed(ctx: Context, module: str) -> bool:
    moddir = ctx.path(f"/lib/modules/{ctx.release}")
    return any(module in _module_names(moddir / f) for f in ("modules.dep", "modules.builtin"))


def python_phase() -> str | None:
    """The newest daedalus-phase-8-N distribution installed here, as "8.N"."""
    found = []
    for dist in metadata.distributions():
        m = PHASE_DIST.match(dist.metadata["Name"] or "")
        if m:
            found.append((int(m[1]), int(m[2])))
    return "{}.{}".format(*max(found)) if found else None


def python_protocol() -> int:
    from daedalus.proto import lib

    return int(lib.DAEDALUS_PROTO_VERSION)


# --- the checks, in order -------------------------------------------------------------


def check_headers(ctx: Context) -> list[Line]:
    what = f"kernel headers for {ctx.release}"
    if ctx.path(f"/lib/modules/{ctx.release}/build/Makefile").is_file():
        return [Line(Mark.OK, what)]
    return [Line(Mark.FAIL, f"no {what}", FIX_HEADERS)]


def check_helper(ctx: Context) -> list[Line]:
    if ctx.path(f"/sys/module/{HELPER}").is_dir():
        return [Line(Mark.OK, f"m2m helper {HELPER} loaded")]
    if _installed(ctx, HELPER):
        return [Line(Mark.OK, f"m2m helper {HELPER} installed (not loaded yet)")]
    series = ".".join(ctx.release.split(".")[:2])  # built from the kernel's source package
    return [Line(Mark.FAIL, f"m2m helper {HELPER} not installed for {ctx.release}",
                 f"sudo apt-get install linux-source-{series} && {FIX_DKMS}")]


def check_module(ctx: Context) -> list[Line]:
    if not ctx.path(f"/sys/module/{MODULE}").is_dir():
        fix = FIX_MODPROBE if _installed(ctx, MODULE) else f"{FIX_DKMS} && {FIX_MODPROBE}"
        return [Line(Mark.FAIL, f"{MODULE} not loaded", fix)]
    ctx.loaded = True
    phase, newest = ctx.status("phase"), python_phase()
    if phase is None:
        return [Line(Mark.FAIL, f"{MODULE} loaded, but without {MISC}/phase (a module "
                                "older than this doctor)", FIX_RELOAD)]
    if newest is not None and phase != newest:
        return [Line(Mark.FAIL, f"{MODULE} loaded, phase {phase}, but this installation's "
                                f"Python is phase {newest}", FIX_RELOAD)]
    return [Line(Mark.OK, f"{MODULE} loaded, phase {phase}"
                          + (f" (Python: phase {newest})" if newest else ""))]


def _group(st: os.stat_result) -> str:
    try:
        return grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        return str(st.st_gid)


def _mode(st: os.stat_result) -> str:
    return f"{stat.S_IMODE(st.st_mode):04o}, uid {st.st_uid}, group {_group(st)}"


def check_chardev(ctx: Context) -> list[Line]:
    what = f"{ctx.chardev}"
    if not ctx.loaded:
        return [Line(Mark.SKIP, what, f"{MODULE} not loaded")]
    try:
        st = os.stat(ctx.chardev)
    except OSError as exc:
        return [Line(Mark.FAIL, f"{what}: {exc.strerror}",
                     f"{FIX_MODPROBE} (or, if it is loaded: sudo udevadm trigger)")]
    if not stat.S_ISCHR(st.st_mode):
        return [Line(Mark.FAIL, f"{what} is not a character device",
                     f"sudo rm {ctx.chardev} && sudo udevadm trigger")]
    if st.st_uid != 0 or stat.S_IMODE(st.st_mode) & 0o077:
        return [Line(Mark.FAIL, f"{what} is {_mode(st)}: others could pose as daedalusd",
                     f"sudo chown root {ctx.chardev} && sudo chmod 0600 {ctx.chardev} "
                     "(and drop the udev rule that opened it)")]
    return [Line(Mark.OK, f"{what}: root only ({_mode(st)})")]


def _sysfs_of(ctx: Context, node: Path) -> Path | None:
    """The sysfs directory of a device node given by the user, by its number."""
    try:
        rdev = os.stat(node).st_rdev
    except OSError:
        return None
    return ctx.path(f"/sys/dev/char/{os.major(rdev)}:{os.minor(rdev)}")


def _named_nodes(ctx: Context, card: str) -> Iterator[tuple[Path, Path]]:
    """(video node, its sysfs directory) of every node whose sysfs name is *card*."""
    for sysdir in sorted(ctx.path("/sys/class/video4linux").glob("video*")):
        try:
            name = (sysdir / "name").read_text().strip()
        except OSError:
            continue
        if name == card:
            yield ctx.path(f"/dev/{sysdir.name}"), sysdir


def _video_nodes(ctx: Context) -> Iterator[tuple[Path, Path | None]]:
    """(video node, its sysfs directory) of the decoder, --video or by sysfs name."""
    if ctx.video is not None:
        yield ctx.video, _sysfs_of(ctx, ctx.video)
        return
    yield from _named_nodes(ctx, CARD)


def _media_nodes(ctx: Context, sysdir: Path | None) -> list[Path]:
    if sysdir is None or not (sysdir / "device").is_dir():
        return []
    return sorted(ctx.path(f"/dev/{e.name}") for e in (sysdir / "device").iterdir()
                  if e.name.startswith("media") and e.name[5:].isdigit())


def _access(node: Path, kind: str) -> Line:
    try:
        st = os.stat(node)
    except OSError as exc:
        return Line(Mark.FAIL, f"{kind} {node}: {exc.strerror}", "sudo udevadm trigger")
    if os.access(node, os.R_OK | os.W_OK):
        return Line(Mark.OK, f"{kind} {node}: readable and writable by you ({_mode(st)})")
    group = _group(st)
    if group == "root" or (stat.S_IMODE(st.st_mode) & 0o060) != 0o060:
        fix = "install daedalus-v4l2's udev rule (group video, 0660), then: sudo udevadm trigger"
    else:
        fix = f"add yourself to group {group}: sudo usermod -aG {group} $USER, then log in again"
    return Line(Mark.FAIL, f"{kind} {node} is {_mode(st)}: you cannot open it", fix)


def check_nodes(ctx: Context) -> list[Line]:
    if not ctx.loaded:
        return [Line(Mark.SKIP, "video and media nodes", f"{MODULE} not loaded")]
    lines = []
    for video, sysdir in _video_nodes(ctx):
        line = _access(video, "video node")
        lines.append(line)
        if line.mark is Mark.OK:
            ctx.nodes.append(video)
        media = _media_nodes(ctx, sysdir)
        lines += [_access(m, "media node") for m in media]
        if not media:
            lines.append(Line(Mark.FAIL, f"no media node for {video}", FIX_RELOAD))
    if not lines:
        lines.append(Line(Mark.FAIL, f"no video node named {CARD}", FIX_RELOAD))
    if ctx.video is None:  # the stateless node (phase 8.9): access only, as GStreamer's v4l2sl*
        lines += [_access(node, "stateless video node")
                  for node, _ in _named_nodes(ctx, STATELESS_CARD)]
    return lines


def check_daemon(ctx: Context) -> list[Line]:
    if not ctx.loaded:
        return [Line(Mark.SKIP, "daedalusd", f"{MODULE} not loaded")]
    state = ctx.status("daemon")
    if state == "ready":
        ctx.ready = True
        return [Line(Mark.OK, "daedalusd connected (ready)")]
    if state == "connected":
        return [Line(Mark.FAIL, "daedalusd connected, but its handshake did not complete",
                     FIX_LOG)]
    return [Line(Mark.FAIL, f"daedalusd not connected ({state or 'no ' + MISC + '/daemon'})",
                 FIX_START)]


def check_protocol(ctx: Context) -> list[Line]:
    if not ctx.loaded:
        return [Line(Mark.SKIP, "protocol version", f"{MODULE} not loaded")]
    ours, theirs = python_protocol(), ctx.status("protocol")
    if theirs == str(ours):
        return [Line(Mark.OK, f"protocol v{ours} (module and Python)")]
    return [Line(Mark.FAIL, f"protocol: module v{theirs}, Python v{ours}", FIX_RELOAD)]


def check_formats(ctx: Context) -> list[Line]:
    if not ctx.nodes:
        return [Line(Mark.SKIP, "formats", "no video node you can open")]
    from daedalus.proto import codecs
    from daedalus.skeleton.v4l2dev import CAPTURE, OUTPUT, VideoNode

    titles = {d.fourcc: d.title for d in codecs.CODECS}
    lines = []
    for video in ctx.nodes:
        try:
            with VideoNode(video) as node:
                card = node.querycap().card
                coded, raw = node.formats(OUTPUT), node.formats(CAPTURE)
        except OSError as exc:
            lines.append(Line(Mark.FAIL, f"{video}: not a V4L2 device ({exc.strerror or exc})",
                              FIX_RELOAD))
            continue
        if card != CARD:
            lines.append(Line(Mark.FAIL, f"{video} is {card!r}, not {CARD}",
                              f"daedalus-v4l2 doctor --video /dev/videoN (the {CARD} node)"))
            continue
        what = (f"{video} decodes {', '.join(titles.get(c, c) for c in coded) or 'nothing'} "
                f"to {', '.join(raw) or 'nothing'}")
        ok = bool(coded) and "NV12" in raw
        ctx.offers_clip = ctx.offers_clip or (ok and "VP90" in coded)
        lines.append(Line(Mark.OK, what) if ok else Line(Mark.FAIL, what, FIX_RELOAD))
    return lines


def reference_frame(clip: Path) -> bytes:
    """PyAV's first frame of *clip*, tightly packed NV12."""
    import av

    with av.open(str(clip)) as container:
        frame = next(container.decode(video=0))
        return bytes(frame.to_ndarray(format="nv12").tobytes())


def check_decode(ctx: Context) -> list[Line]:
    what = f"one-frame decode of {CLIP}"
    if not (ctx.nodes and ctx.ready and ctx.offers_clip):
        why = ("no video node you can open" if not ctx.nodes else
               "daedalusd not ready" if not ctx.ready else "no node offers VP9 to NV12")
        return [Line(Mark.SKIP, what, why)]
    from daedalus.m2m.reference import first_difference
    from daedalus.m2m.v4l2 import DecodeError, Frame, M2MNode, StatefulDecode, packets_of

    video = ctx.nodes[0]
    frames: list[Frame] = []
    warnings: list[str] = []
    with resources.as_file(resources.files("daedalus.install") / "data" / CLIP) as clip:
        try:
            _, width, height, packets = packets_of(clip)
            with M2MNode(video) as node:
                StatefulDecode(node, "VP90", packets, frames.append, width=width,
                               height=height, warn=warnings.append).run()
        except (DecodeError, OSError) as exc:
            return [Line(Mark.FAIL, f"{what} through {video}: {exc}", FIX_LOG)]
        want = reference_frame(clip)
    if len(frames) != 1 or frames[0].pixfmt != "NV12":
        got = ", ".join(f"{f.width}x{f.height} {f.pixfmt}" for f in frames) or "none"
        why = f" ({warnings[0]})" if warnings else ""
        return [Line(Mark.FAIL, f"{what} through {video}: frames {got}, not one NV12{why}",
                     FIX_LOG)]
    offset = first_difference(frames[0].data, want)
    if offset is not None:
        return [Line(Mark.FAIL, f"{what} through {video}: differs from PyAV's decode at "
                                f"byte {offset}", FIX_LOG)]
    return [Line(Mark.OK, f"{what} through {video}: {width}x{height} NV12, byte-exact "
                          "with PyAV")]


CHECKS: tuple[Check, ...] = (
    check_headers, check_helper, check_module, check_chardev, check_nodes, check_daemon,
    check_protocol, check_formats, check_decode,
)


def run_checks(ctx: Context) -> Iterator[Line]:
    for check in CHECKS:
        yield from check(ctx)


class DoctorCommand:
    NAME = "doctor"
    HELP = ("check an installed daedalus-v4l2 (headers, m2m helper, module, device nodes and "
            "their permissions, daedalusd, protocol, formats, a one-frame decode); one ✓/✗ "
            "line per check with the fix; exit status 0 when all pass")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--device", default=None, metavar="PATH",
                            help=f"the bridge device (default: {CHARDEV})")
        parser.add_argument("--video", default=None, metavar="/dev/videoN",
                            help=f"the decoder node (default: every node named {CARD})")
        parser.add_argument("--root", default="/", metavar="DIR",
                            help="read /sys, /lib and /dev under DIR (default: /)")

    def run(self, args: argparse.Namespace) -> int:
        root = Path(args.root)
        ctx = Context(root=root, release=os.uname().release,
                      chardev=Path(args.device) if args.device else root / CHARDEV.lstrip("/"),
                      video=Path(args.video) if args.video else None)
        ok = True
        for line in run_checks(ctx):
            print(line, flush=True)
            ok = ok and line.mark is Mark.OK
        return 0 if ok else 1
