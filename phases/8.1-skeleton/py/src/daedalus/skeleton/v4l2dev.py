"""Minimal V4L2 access to the daedalus-v4l2 node, on top of linuxpy's raw ioctls.

Only what phase 8.1 exercises: find the node by its card name, QUERYCAP,
ENUM_FMT, ENUM_FRAMESIZES, G/S/TRY_FMT (multi-planar) and REQBUFS. Errors
come back as OSError with the kernel's errno.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from linuxpy.video import raw

CARD = "daedalus-v4l2"
OUTPUT = raw.BufType.VIDEO_OUTPUT_MPLANE
CAPTURE = raw.BufType.VIDEO_CAPTURE_MPLANE


def fourcc(code: str) -> int:
    a, b, c, d = (ord(ch) for ch in code)
    return a | (b << 8) | (c << 16) | (d << 24)


def fourcc_str(value: int) -> str:
    return "".join(chr((value >> (8 * i)) & 0xFF) for i in range(4))


def _ioctl(fd: int, request: int, arg: ctypes.Structure) -> ctypes.Structure:
    fcntl.ioctl(fd, request, arg)  # raises OSError(errno) on failure
    return arg


@dataclass(frozen=True)
class Capability:
    driver: str
    card: str
    bus_info: str
    version: int
    capabilities: int
    device_caps: int


@dataclass(frozen=True)
class PixFormat:
    pixelformat: str
    width: int
    height: int
    num_planes: int
    bytesperline: int
    sizeimage: int
    colorspace: int


class VideoNode:
    """An open /dev/videoN; closes on exit from a with block."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> VideoNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def querycap(self) -> Capability:
        cap = raw.v4l2_capability()
        _ioctl(self.fd, raw.IOC.QUERYCAP, cap)
        return Capability(cap.driver.decode(), cap.card.decode(), cap.bus_info.decode(),
                          cap.version, cap.capabilities, cap.device_caps)

    def formats(self, buf_type: int) -> list[str]:
        out = []
        for index in range(64):
            desc = raw.v4l2_fmtdesc()
            desc.index = index
            desc.type = buf_type
            try:
                _ioctl(self.fd, raw.IOC.ENUM_FMT, desc)
            except OSError:
                break
            out.append(fourcc_str(desc.pixelformat))
        return out

    def format_flags(self, buf_type: int, index: int) -> int:
        desc = raw.v4l2_fmtdesc()
        desc.index = index
        desc.type = buf_type
        _ioctl(self.fd, raw.IOC.ENUM_FMT, desc)
        return int(desc.flags)

    def framesizes(self, code: str) -> raw.v4l2_frmsizeenum:
        fs = raw.v4l2_frmsizeenum()
        fs.index = 0
        fs.pixel_format = fourcc(code)
        return _ioctl(self.fd, raw.IOC.ENUM_FRAMESIZES, fs)

    @staticmethod
    def _pix(fmt: raw.v4l2_format) -> PixFormat:
        p = fmt.fmt.pix_mp
        return PixFormat(fourcc_str(p.pixelformat), p.width, p.height, p.num_planes,
                         p.plane_fmt[0].bytesperline, p.plane_fmt[0].sizeimage, p.colorspace)

    def _fmt_ioctl(self, request: int, buf_type: int, code: str | None, width: int,
                   height: int) -> PixFormat:
        fmt = raw.v4l2_format()
        fmt.type = buf_type
        if code is not None:
            fmt.fmt.pix_mp.pixelformat = fourcc(code)
            fmt.fmt.pix_mp.width = width
            fmt.fmt.pix_mp.height = height
        _ioctl(self.fd, request, fmt)
        return self._pix(fmt)

    def g_fmt(self, buf_type: int) -> PixFormat:
        return self._fmt_ioctl(raw.IOC.G_FMT, buf_type, None, 0, 0)

    def s_fmt(self, buf_type: int, code: str, width: int, height: int) -> PixFormat:
        return self._fmt_ioctl(raw.IOC.S_FMT, buf_type, code, width, height)

    def try_fmt(self, buf_type: int, code: str, width: int, height: int) -> PixFormat:
        return self._fmt_ioctl(raw.IOC.TRY_FMT, buf_type, code, width, height)

    def request_buffers(self, buf_type: int, count: int,
                        memory: int = raw.Memory.MMAP) -> raw.v4l2_requestbuffers:
        """REQBUFS; the answer as the driver filled it in (count, capabilities)."""
        rb = raw.v4l2_requestbuffers()
        rb.type = buf_type
        rb.count = count
        rb.memory = memory
        return _ioctl(self.fd, raw.IOC.REQBUFS, rb)

    def reqbufs(self, buf_type: int, count: int, memory: int = raw.Memory.MMAP) -> int:
        return int(self.request_buffers(buf_type, count, memory).count)


def find_nodes(card: str = CARD) -> Iterator[Path]:
    """Every /dev/videoN whose QUERYCAP card is *card*, by sysfs name then QUERYCAP."""
    for dev in sorted(Path("/sys/class/video4linux").glob("video*")):
        name = (dev / "name").read_text().strip() if (dev / "name").exists() else ""
        if name != card:
            continue
        node = Path("/dev") / dev.name
        with VideoNode(node) as v:
            if v.querycap().card == card:
                yield node


def find_node(card: str = CARD) -> Path:
    for node in find_nodes(card):
        return node
    raise FileNotFoundError(f"no V4L2 node with card {card!r} (is daedalus_v4l2 loaded?)")
