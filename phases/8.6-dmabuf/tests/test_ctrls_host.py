"""daedalus.dmabuf.ctrls on the host: the ioctl structs it builds, its
enumeration loop, and its reading of ``v4l2-ctl --list-ctrls-menus``.

No node is needed: fcntl.ioctl is replaced by a fake that checks what would
reach the kernel and answers as the V4L2 core does. The ioctl numbers and
struct sizes expected here are what a C compiler gives for the uAPI headers
(include/uapi/linux/videodev2.h of 6.1 and 6.12, x86-64: the same on both),
so linuxpy's structs, which the module and the guest tests use, are checked
against them. The v4l2-ctl text is laid out as v4l-utils 1.22's print_qctrl()
prints it (``%31s %#8.8x (type)``, menu items behind four tabs).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
from typing import Any

import pytest
from linuxpy.video import raw

from daedalus.dmabuf import ctrls
from daedalus.dmabuf.ctrls import (
    Control,
    get_ctrl,
    id2which,
    parse_list_ctrls,
    query_all,
    set_ctrl,
    try_ctrl,
)

# _IOWR('V', nr, struct) on x86-64, from the uAPI header
VIDIOC_QUERYMENU = 0xC02C5625
VIDIOC_G_EXT_CTRLS = 0xC0205647
VIDIOC_S_EXT_CTRLS = 0xC0205648
VIDIOC_TRY_EXT_CTRLS = 0xC0205649
VIDIOC_QUERY_EXT_CTRL = 0xC0E85667

H264_SPS = 0x00A40902          # V4L2_CID_STATELESS_H264_SPS
H264_DECODE_MODE = 0x00A40900  # V4L2_CID_STATELESS_H264_DECODE_MODE


def test_linuxpy_structs_and_ioctls_are_the_uapis() -> None:
    assert ctypes.sizeof(raw.v4l2_ext_control) == 20  # packed
    assert ctypes.sizeof(raw.v4l2_ext_controls) == 32
    assert ctypes.sizeof(raw.v4l2_query_ext_ctrl) == 232
    assert ctypes.sizeof(raw.v4l2_querymenu) == 44
    got = {name: int(getattr(raw.IOC, name)) & 0xFFFFFFFF
           for name in ("QUERYMENU", "G_EXT_CTRLS", "S_EXT_CTRLS", "TRY_EXT_CTRLS",
                        "QUERY_EXT_CTRL")}
    assert got == {"QUERYMENU": VIDIOC_QUERYMENU, "G_EXT_CTRLS": VIDIOC_G_EXT_CTRLS,
                   "S_EXT_CTRLS": VIDIOC_S_EXT_CTRLS, "TRY_EXT_CTRLS": VIDIOC_TRY_EXT_CTRLS,
                   "QUERY_EXT_CTRL": VIDIOC_QUERY_EXT_CTRL}


def test_id2which_is_the_control_class() -> None:
    assert id2which(H264_SPS) == 0x00A40000   # V4L2_CTRL_CLASS_CODEC_STATELESS
    assert id2which(0x00980927) == 0x00980000  # MIN_BUFFERS_FOR_CAPTURE: user class


class FakeIoctl:
    """Records (request, what the struct carried) and answers through *answer*."""

    def __init__(self, answer: Any = None) -> None:
        self.calls: list[tuple[int, Any]] = []
        self.answer = answer

    def __call__(self, fd: int, request: int, arg: Any) -> int:
        self.calls.append((int(request) & 0xFFFFFFFF, arg))
        if self.answer is not None:
            self.answer(int(request) & 0xFFFFFFFF, arg)
        return 0


def ext_seen(arg: Any) -> tuple[int, int, int, int, bytes]:
    """which, count, id, size and payload of a one-control v4l2_ext_controls."""
    one = arg.controls[0]
    data = ctypes.string_at(one.ptr, one.size) if one.size else b""
    return arg.which, arg.count, one.id, one.size, data


def test_set_and_try_carry_a_payload_in_its_class(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, tuple[int, int, int, int, bytes]]] = []
    fake = FakeIoctl(lambda request, arg: seen.append((request, ext_seen(arg))))
    monkeypatch.setattr(fcntl, "ioctl", fake)
    sps = bytes(range(256)) * 4 + bytes(24)  # 1048 bytes, struct v4l2_ctrl_h264_sps
    set_ctrl(7, H264_SPS, sps)
    try_ctrl(7, H264_SPS, sps)
    assert seen == [(VIDIOC_S_EXT_CTRLS, (0x00A40000, 1, H264_SPS, 1048, sps)),
                    (VIDIOC_TRY_EXT_CTRLS, (0x00A40000, 1, H264_SPS, 1048, sps))]


def test_set_carries_a_plain_value_without_payload(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, int, int]] = []
    fake = FakeIoctl(lambda request, arg: seen.append(
        (arg.controls[0].id, arg.controls[0].size, arg.controls[0].value)))
    monkeypatch.setattr(fcntl, "ioctl", fake)
    set_ctrl(7, H264_DECODE_MODE, 1)
    assert seen == [(H264_DECODE_MODE, 0, 1)]


def control(cid: int, size: int, flags: int) -> Control:
    return Control(id=cid, type=0x0200, name="H264 Sequence Parameter Set", minimum=0,
                   maximum=0, step=0, default=0, flags=flags, elem_size=size, elems=1,
                   dims=())


def test_get_reads_the_payload_the_kernel_wrote(monkeypatch: pytest.MonkeyPatch) -> None:
    written = bytes([0x64, 0, 0, 0, 1]) + bytes(1043)

    def kernel(request: int, arg: Any) -> None:
        assert request == VIDIOC_G_EXT_CTRLS
        assert arg.controls[0].size == 1048
        ctypes.memmove(arg.controls[0].ptr, written, len(written))

    monkeypatch.setattr(fcntl, "ioctl", FakeIoctl(kernel))
    assert get_ctrl(3, control(H264_SPS, 1048, ctrls.CTRL_FLAG_HAS_PAYLOAD)) == written


def test_get_of_a_plain_control_is_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    def kernel(request: int, arg: Any) -> None:
        assert arg.controls[0].size == 0
        arg.controls[0].value = 1

    monkeypatch.setattr(fcntl, "ioctl", FakeIoctl(kernel))
    assert get_ctrl(3, control(H264_DECODE_MODE, 4, 0)) == 1


def test_query_all_walks_next_ctrl_and_next_compound(monkeypatch: pytest.MonkeyPatch) -> None:
    """The core answers NEXT_* with the first id above the one given, and
    EINVAL after the last."""
    ids = [0x00980001, 0x00980927, 0x00A40001, 0x00A40900, 0x00A40902]
    asked: list[int] = []

    def kernel(request: int, arg: Any) -> None:
        assert request == VIDIOC_QUERY_EXT_CTRL
        asked.append(arg.id)
        assert arg.id & 0xC0000000 == 0xC0000000
        after = arg.id & ~0xC0000000
        nxt = next((i for i in ids if i > after), None)
        if nxt is None:
            raise OSError(errno.EINVAL, "no more")
        arg.id = nxt
        arg.name = b"x"
        arg.elem_size = 4
        arg.elems = 1
        arg.nr_of_dims = 1 if nxt == 0x00A40902 else 0
        arg.dims[0] = 512

    monkeypatch.setattr(fcntl, "ioctl", FakeIoctl(kernel))
    found = query_all(5)
    assert [c.id for c in found] == ids
    assert [a & ~0xC0000000 for a in asked] == [0, *ids]
    assert found[-1].dims == (512,) and found[0].dims == ()


LISTING = (
    "\n"
    "User Controls\n"
    "\n"
    "  min_number_of_capture_buffers 0x00980927 (int)    : min=1 max=32 step=1 default=4"
    " value=4 flags=read-only, volatile\n"
    "\n"
    "Stateless Codec Controls\n"
    "\n"
    "               h264_decode_mode 0x00a40900 (menu)   : min=1 max=1 default=1 value=1"
    " (Frame-Based)\n"
    "\t\t\t\t1: Frame-Based\n"
    "                h264_start_code 0x00a40901 (menu)   : min=1 max=1 default=1 value=1"
    " (Annex B Start Code)\n"
    "\t\t\t\t1: Annex B Start Code\n"
    "    h264_sequence_parameter_set 0x00a40902 (h264-sps): value=unsupported payload type"
    " flags=has-payload\n"
    "    vp9_frame_decode_parameters 0x00a40a2c (unknown): type=261 value=unsupported payload"
    " type flags=has-payload\n"
    "           av1_tile_group_entry 0x00a40af5 (unknown): type=281 dims=[512]"
    " flags=has-payload, 0x00000800\n"
)


def test_parse_list_ctrls_reads_controls_and_menus() -> None:
    listed = parse_list_ctrls(LISTING)
    assert [(c.name, c.id, c.type) for c in listed] == [
        ("min_number_of_capture_buffers", 0x00980927, "int"),
        ("h264_decode_mode", 0x00A40900, "menu"),
        ("h264_start_code", 0x00A40901, "menu"),
        ("h264_sequence_parameter_set", 0x00A40902, "h264-sps"),
        ("vp9_frame_decode_parameters", 0x00A40A2C, "unknown"),
        ("av1_tile_group_entry", 0x00A40AF5, "unknown"),
    ]
    assert [c.menu for c in listed] == [{}, {1: "Frame-Based"}, {1: "Annex B Start Code"},
                                        {}, {}, {}]


def test_parse_list_ctrls_of_a_node_without_controls() -> None:
    assert parse_list_ctrls("") == []
