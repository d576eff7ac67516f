"""The node's media controller as an application reads it: /dev/mediaN.

From phase 8.7 the decoder node has a media device. An application finds it
from the video node as v4l2-compliance does (utils/common/media-info.cpp,
``mi_get_media_fd``): the ``media*`` entries of the node's device in sysfs
(/sys/dev/char/MAJOR:MINOR/device), the one whose bus_info is the node's
VIDIOC_QUERYCAP bus_info. MEDIA_IOC_DEVICE_INFO describes it and
MEDIA_IOC_G_TOPOLOGY reads its graph whole: entities, interfaces, pads and
links (data links join pads, interface links join an interface to an
entity). The structures are <linux/media.h>'s as ctypes (linuxpy has no
media controller API); errors come back as OSError with the kernel's errno.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from linuxpy.ioctl import IOWR

from daedalus.skeleton.v4l2dev import VideoNode

# <linux/media.h>
MEDIA_ENT_F_IO_V4L = 0x00010001  # MEDIA_ENT_F_OLD_BASE + 1
MEDIA_ENT_F_PROC_VIDEO_DECODER = 0x00004008
MEDIA_INTF_T_V4L_VIDEO = 0x00000200
MEDIA_PAD_FL_SINK = 1 << 0
MEDIA_PAD_FL_SOURCE = 1 << 1
MEDIA_LNK_FL_ENABLED = 1 << 0
MEDIA_LNK_FL_IMMUTABLE = 1 << 1
MEDIA_LNK_FL_LINK_TYPE = 0xF << 28
MEDIA_LNK_FL_DATA_LINK = 0 << 28
MEDIA_LNK_FL_INTERFACE_LINK = 1 << 28


# the structures keep their C names
class media_device_info(ctypes.Structure):
    _fields_ = [
        ("driver", ctypes.c_char * 16),
        ("model", ctypes.c_char * 32),
        ("serial", ctypes.c_char * 40),
        ("bus_info", ctypes.c_char * 32),
        ("media_version", ctypes.c_uint32),
        ("hw_revision", ctypes.c_uint32),
        ("driver_version", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32 * 31),
    ]


class media_v2_entity(ctypes.Structure):
    _pack_ = 1
    _fields_ = [
        ("id", ctypes.c_uint32),
        ("name", ctypes.c_char * 64),
        ("function", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32 * 5),
    ]


class media_v2_interface(ctypes.Structure):
    _pack_ = 1
    _fields_ = [
        ("id", ctypes.c_uint32),
        ("intf_type", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32 * 9),
        # union { struct media_v2_intf_devnode devnode; __u32 raw[16]; }
        ("raw", ctypes.c_uint32 * 16),
    ]


class media_v2_pad(ctypes.Structure):
    _pack_ = 1
    _fields_ = [
        ("id", ctypes.c_uint32),
        ("entity_id", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("index", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32 * 4),
    ]


class media_v2_link(ctypes.Structure):
    _pack_ = 1
    _fields_ = [
        ("id", ctypes.c_uint32),
        ("source_id", ctypes.c_uint32),
        ("sink_id", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32 * 6),
    ]


class media_v2_topology(ctypes.Structure):
    _pack_ = 1
    _fields_ = [
        ("topology_version", ctypes.c_uint64),
        ("num_entities", ctypes.c_uint32),
        ("reserved1", ctypes.c_uint32),
        ("ptr_entities", ctypes.c_uint64),
        ("num_interfaces", ctypes.c_uint32),
        ("reserved2", ctypes.c_uint32),
        ("ptr_interfaces", ctypes.c_uint64),
        ("num_pads", ctypes.c_uint32),
        ("reserved3", ctypes.c_uint32),
        ("ptr_pads", ctypes.c_uint64),
        ("num_links", ctypes.c_uint32),
        ("reserved4", ctypes.c_uint32),
        ("ptr_links", ctypes.c_uint64),
    ]


MEDIA_IOC_DEVICE_INFO: int = IOWR("|", 0x00, media_device_info)
MEDIA_IOC_G_TOPOLOGY: int = IOWR("|", 0x04, media_v2_topology)


@dataclass(frozen=True)
class DeviceInfo:
    driver: str
    model: str
    serial: str
    bus_info: str
    media_version: int  # the kernel's LINUX_VERSION_CODE
    hw_revision: int
    driver_version: int


@dataclass(frozen=True)
class Entity:
    id: int
    name: str
    function: int
    flags: int


@dataclass(frozen=True)
class Interface:
    id: int
    intf_type: int
    flags: int
    major: int
    minor: int


@dataclass(frozen=True)
class Pad:
    id: int
    entity_id: int
    flags: int
    index: int


@dataclass(frozen=True)
class Link:
    id: int
    source_id: int  # a pad (data link) or an interface (interface link)
    sink_id: int  # a pad (data link) or an entity (interface link)
    flags: int

    @property
    def kind(self) -> int:
        return self.flags & MEDIA_LNK_FL_LINK_TYPE


@dataclass(frozen=True)
class Topology:
    version: int
    entities: list[Entity]
    interfaces: list[Interface]
    pads: list[Pad]
    links: list[Link]

    def entity(self, entity_id: int) -> Entity:
        return next(e for e in self.entities if e.id == entity_id)

    def pad(self, pad_id: int) -> Pad:
        return next(p for p in self.pads if p.id == pad_id)

    def data_links(self) -> set[tuple[str, int, str, int, int]]:
        """(source entity, its pad index, sink entity, its pad index, flags) of every
        data link, by entity name."""
        out = set()
        for link in self.links:
            if link.kind == MEDIA_LNK_FL_DATA_LINK:
                source, sink = self.pad(link.source_id), self.pad(link.sink_id)
                out.add((self.entity(source.entity_id).name, source.index,
                         self.entity(sink.entity_id).name, sink.index, link.flags))
        return out

    def interface_links(self) -> set[tuple[int, str, int]]:
        """(interface id, entity name, flags) of every interface link."""
        return {(link.source_id, self.entity(link.sink_id).name, link.flags)
                for link in self.links if link.kind == MEDIA_LNK_FL_INTERFACE_LINK}


def _text(raw: bytes) -> str:
    return raw.decode(errors="replace")


class MediaNode:
    """An open /dev/mediaN; closes on exit from a with block."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.fd = os.open(self.path, os.O_RDWR)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> MediaNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def device_info(self) -> DeviceInfo:
        info = media_device_info()
        fcntl.ioctl(self.fd, MEDIA_IOC_DEVICE_INFO, info)
        return DeviceInfo(_text(info.driver), _text(info.model), _text(info.serial),
                          _text(info.bus_info), info.media_version, info.hw_revision,
                          info.driver_version)

    def topology(self) -> Topology:
        """MEDIA_IOC_G_TOPOLOGY twice: the counts, then the arrays (a graph that
        grew in between is ENOSPC; one that shrank, the second call's counts)."""
        topo = media_v2_topology()
        fcntl.ioctl(self.fd, MEDIA_IOC_G_TOPOLOGY, topo)
        entities = (media_v2_entity * topo.num_entities)()
        interfaces = (media_v2_interface * topo.num_interfaces)()
        pads = (media_v2_pad * topo.num_pads)()
        links = (media_v2_link * topo.num_links)()
        topo.ptr_entities = ctypes.addressof(entities)
        topo.ptr_interfaces = ctypes.addressof(interfaces)
        topo.ptr_pads = ctypes.addressof(pads)
        topo.ptr_links = ctypes.addressof(links)
        fcntl.ioctl(self.fd, MEDIA_IOC_G_TOPOLOGY, topo)
        return Topology(
            topo.topology_version,
            [Entity(e.id, _text(e.name), e.function, e.flags)
             for e in entities[:topo.num_entities]],
            [Interface(i.id, i.intf_type, i.flags, i.raw[0], i.raw[1])
             for i in interfaces[:topo.num_interfaces]],
            [Pad(p.id, p.entity_id, p.flags, p.index) for p in pads[:topo.num_pads]],
            [Link(lk.id, lk.source_id, lk.sink_id, lk.flags) for lk in links[:topo.num_links]])


def media_nodes_of(video: str | Path) -> list[Path]:
    """The /dev/mediaN of every media device on the video node's device (sysfs)."""
    rdev = os.stat(video).st_rdev
    device = Path(f"/sys/dev/char/{os.major(rdev)}:{os.minor(rdev)}/device")
    return sorted(Path("/dev") / entry.name for entry in device.iterdir()
                  if entry.name.startswith("media") and entry.name[5:].isdigit())


def media_node_of(video: str | Path) -> Path:
    """The video node's /dev/mediaN: on its device, with its QUERYCAP bus_info."""
    with VideoNode(video) as v:
        bus_info = v.querycap().bus_info
    for media in media_nodes_of(video):
        with MediaNode(media) as m:
            if m.device_info().bus_info == bus_info:
                return media
    raise FileNotFoundError(f"{video} has no media device with bus_info {bus_info!r}")
