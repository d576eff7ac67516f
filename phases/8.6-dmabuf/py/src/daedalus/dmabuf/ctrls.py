"""The node's V4L2 controls from userspace, on linuxpy's raw structs.

What the stateless-control tests need and linuxpy leaves to its callers:

- ``query_all()`` enumerates every control with VIDIOC_QUERY_EXT_CTRL,
  ``V4L2_CTRL_FLAG_NEXT_CTRL | V4L2_CTRL_FLAG_NEXT_COMPOUND`` (compound
  controls included), ``query()`` asks for one; ``menu()`` is
  VIDIOC_QUERYMENU.
- ``get_ctrl()``, ``set_ctrl()`` and ``try_ctrl()`` are VIDIOC_G/S/TRY_EXT_CTRLS of one
  control: an integer for a plain control (menu, integer), bytes for a
  control with a payload (``V4L2_CTRL_FLAG_HAS_PAYLOAD``: compound controls,
  arrays), whose size is the caller's (``Control.payload_size``). Errors are
  OSError with the kernel's errno (ERANGE, EINVAL, ENOSPC, ...).
- ``parse_list_ctrls()`` reads ``v4l2-ctl --list-ctrls-menus``: one line per
  control, ``%31s %#8.8x (type)``, then a line per menu item
  (v4l2-ctl-common.cpp's print_qctrl in v4l-utils 1.22).

Flag and type values are linuxpy's (the uAPI's, include/uapi/linux/videodev2.h).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import re
from dataclasses import dataclass, field

from linuxpy.video import raw

# linuxpy's copies of the uAPI's values, as plain ints
CTRL_FLAG_NEXT_CTRL = int(raw.ControlFlag.NEXT_CTRL)
CTRL_FLAG_NEXT_COMPOUND = int(raw.ControlFlag.NEXT_COMPOUND)
CTRL_FLAG_HAS_PAYLOAD = int(raw.ControlFlag.HAS_PAYLOAD)
CTRL_FLAG_DYNAMIC_ARRAY = int(raw.ControlFlag.DYNAMIC_ARRAY)

CTRL_TYPE_MENU = int(raw.CtrlType.MENU)
CTRL_TYPE_CTRL_CLASS = int(raw.CtrlType.CTRL_CLASS)


def id2which(cid: int) -> int:
    """V4L2_CTRL_ID2WHICH(): the control class of *cid*, as ``which`` takes it."""
    return cid & 0x0FFF0000


@dataclass(frozen=True)
class Control:
    """One control, as VIDIOC_QUERY_EXT_CTRL describes it."""

    id: int
    type: int
    name: str
    minimum: int
    maximum: int
    step: int
    default: int
    flags: int
    elem_size: int
    elems: int
    dims: tuple[int, ...]

    @property
    def has_payload(self) -> bool:
        return bool(self.flags & CTRL_FLAG_HAS_PAYLOAD)

    @property
    def payload_size(self) -> int:
        """Bytes G/S_EXT_CTRLS move for it now (elements times their size)."""
        return self.elem_size * self.elems


def _control(q: raw.v4l2_query_ext_ctrl) -> Control:
    return Control(id=q.id, type=q.type, name=q.name.decode(), minimum=q.minimum,
                   maximum=q.maximum, step=q.step, default=q.default_value, flags=q.flags,
                   elem_size=q.elem_size, elems=q.elems,
                   dims=tuple(q.dims[i] for i in range(q.nr_of_dims)))


def query(fd: int, cid: int) -> Control:
    """VIDIOC_QUERY_EXT_CTRL of *cid* (with NEXT_* flags: the next control)."""
    q = raw.v4l2_query_ext_ctrl()
    q.id = cid
    fcntl.ioctl(fd, raw.IOC.QUERY_EXT_CTRL, q)
    return _control(q)


def query_all(fd: int) -> list[Control]:
    """Every control of the file, compound ones included, in id order."""
    found: list[Control] = []
    cid = 0
    while True:
        try:
            ctrl = query(fd, cid | CTRL_FLAG_NEXT_CTRL | CTRL_FLAG_NEXT_COMPOUND)
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # no control after cid
                return found
            raise
        found.append(ctrl)
        cid = ctrl.id


def menu(fd: int, cid: int, index: int) -> str:
    """VIDIOC_QUERYMENU: the name of item *index* of menu control *cid*."""
    m = raw.v4l2_querymenu()
    m.id = cid
    m.index = index
    fcntl.ioctl(fd, raw.IOC.QUERYMENU, m)
    return bytes(m.name).split(b"\0", 1)[0].decode()


def _ext_ctrls(cid: int, value: int | bytes | None, size: int) -> tuple[
        raw.v4l2_ext_controls, raw.v4l2_ext_control, ctypes.Array[ctypes.c_char] | None]:
    """One control in a struct v4l2_ext_controls of its class. A payload
    control gets a buffer of *size* bytes (holding *value* when it is
    bytes); a plain one carries *value* itself."""
    ctrl = raw.v4l2_ext_control()
    ctrl.id = cid
    buf: ctypes.Array[ctypes.c_char] | None = None
    if isinstance(value, bytes) or (value is None and size):
        buf = ctypes.create_string_buffer(value or b"", size)
        ctrl.size = size
        ctrl.ptr = ctypes.addressof(buf)
    elif value is not None:
        ctrl.value = value
    ctrls = raw.v4l2_ext_controls()
    ctrls.which = id2which(cid)
    ctrls.count = 1
    ctrls.controls = ctypes.pointer(ctrl)
    return ctrls, ctrl, buf


def get_ctrl(fd: int, ctrl: Control) -> int | bytes:
    """VIDIOC_G_EXT_CTRLS: the current value (bytes for a payload control)."""
    size = ctrl.payload_size if ctrl.has_payload else 0
    ctrls, one, buf = _ext_ctrls(ctrl.id, None, size)
    fcntl.ioctl(fd, raw.IOC.G_EXT_CTRLS, ctrls)
    if buf is not None:
        return buf.raw[:one.size]
    return int(one.value)


def _write(fd: int, request: int, cid: int, value: int | bytes) -> None:
    ctrls, _, _buf = _ext_ctrls(cid, value, len(value) if isinstance(value, bytes) else 0)
    fcntl.ioctl(fd, request, ctrls)


def set_ctrl(fd: int, cid: int, value: int | bytes) -> None:
    """VIDIOC_S_EXT_CTRLS of one control; *value* as bytes for a payload control."""
    _write(fd, raw.IOC.S_EXT_CTRLS, cid, value)


def try_ctrl(fd: int, cid: int, value: int | bytes) -> None:
    """VIDIOC_TRY_EXT_CTRLS of one control: validated, nothing changes."""
    _write(fd, raw.IOC.TRY_EXT_CTRLS, cid, value)


@dataclass(frozen=True)
class Listed:
    """One control of ``v4l2-ctl --list-ctrls-menus``."""

    name: str   # v4l2-ctl's variable-style name ("h264_decode_mode")
    id: int
    type: str   # what v4l2-ctl prints in parentheses ("menu", "h264-sps", "unknown")
    menu: dict[int, str] = field(default_factory=dict)


_CTRL_LINE = re.compile(r"^\s*(?P<name>\w+) (?P<id>0x[0-9a-f]{8}) \((?P<type>[^)]*)\)")
_MENU_LINE = re.compile(r"^\t+(?P<index>\d+): (?P<label>.*)$")


def parse_list_ctrls(text: str) -> list[Listed]:
    """The controls ``v4l2-ctl -d DEV --list-ctrls-menus`` printed, in order,
    with their menu items (class headings and blank lines are skipped)."""
    found: list[Listed] = []
    for line in text.splitlines():
        m = _CTRL_LINE.match(line)
        if m:
            found.append(Listed(m["name"], int(m["id"], 16), m["type"].strip()))
            continue
        item = _MENU_LINE.match(line)
        if item and found:
            found[-1].menu[int(item["index"])] = item["label"]
    return found
