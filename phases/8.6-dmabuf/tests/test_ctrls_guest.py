"""Phase 8.6 in the guest: the V4L2 stateless codec controls on the node.

From this phase on every open file of the node has the stateless controls of
each codec it offers, whichever coded format is set (the codec table's
controls, registered by the dma-buf layer; daedalus-ctrls.c):

- VP9: frame decode parameters, compressed header probabilities;
- H.264: SPS, PPS, scaling matrix, prediction weights, slice parameters,
  decode parameters, decode mode, start code;
- AV1, where the running kernel's uAPI has it (6.5 on, so on 6.12, not on
  6.1): sequence, tile group entry, frame, film grain.

That is 14 controls on 6.12 and 10 on 6.1, next to phase 8.5's
V4L2_CID_MIN_BUFFERS_FOR_CAPTURE. They do nothing on this stateful node (the
daemon parses the bitstream itself): setting them must not change a decode.

Expected values come from the uAPI, not from the driver: the control ids,
types and payload sizes are written here from include/uapi/linux
(v4l2-controls.h, videodev2.h; the sizes as a C compiler gives them for
x86-64 on both kernels), the menus from the stateless codec control
documentation (ext-ctrls-codec-stateless.rst) and the V4L2 core's menu
names, the defaults from the core's (std_init_compound(): VP9 profile 0 at
8 bits, 4:2:0; the flat H.264 scaling lists, eq. 7-8/7-9 of the H.264
spec; AV1 at 8 bits). The core refuses out-of-range menu values with
ERANGE and compound payloads its own validation rejects with EINVAL.

Run (as the lead, per kernel)::

    hatch run daedalus-v4l2 guest --phase 8.6 [--kernel 6.1] -- python -m pytest \\
        -p no:cacheprovider -q -rA --phase=8.6 -m guest phases/8.6-dmabuf/tests/test_ctrls_guest.py
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import subprocess
from collections.abc import Iterator

import pytest
from linuxpy.video import raw

from daedalus.dmabuf.ctrls import (
    Control,
    get_ctrl,
    menu,
    parse_list_ctrls,
    query,
    query_all,
    set_ctrl,
    try_ctrl,
)
from daedalus.m2m.campaign import KernelLog
from daedalus.m2m.reference import reference_output
from daedalus.m2m.v4l2 import Frame, M2MNode, StatefulDecode, packets_of
from daedalus.parse import corpus
from daedalus.skeleton.v4l2dev import OUTPUT, VideoNode, find_node

pytestmark = pytest.mark.guest

# include/uapi/linux/v4l2-controls.h
CTRL_CLASS_USER = 0x00980000
CID_USER_CLASS = CTRL_CLASS_USER | 1
CID_MIN_BUFFERS_FOR_CAPTURE = (CTRL_CLASS_USER | 0x900) + 39
CTRL_CLASS_CODEC_STATELESS = 0x00A40000
CID_CODEC_STATELESS_CLASS = CTRL_CLASS_CODEC_STATELESS | 1
BASE = CTRL_CLASS_CODEC_STATELESS | 0x900  # V4L2_CID_CODEC_STATELESS_BASE
H264_DECODE_MODE = BASE + 0
H264_START_CODE = BASE + 1
H264_SPS = BASE + 2
H264_PPS = BASE + 3
H264_SCALING_MATRIX = BASE + 4
H264_PRED_WEIGHTS = BASE + 5
H264_SLICE_PARAMS = BASE + 6
H264_DECODE_PARAMS = BASE + 7
VP9_FRAME = BASE + 300
VP9_COMPRESSED_HDR = BASE + 301
AV1_SEQUENCE = BASE + 500
AV1_TILE_GROUP_ENTRY = BASE + 501
AV1_FRAME = BASE + 502
AV1_FILM_GRAIN = BASE + 505
STATELESS_H264_DECODE_MODE_FRAME_BASED = 1   # enum v4l2_stateless_h264_decode_mode
STATELESS_H264_START_CODE_ANNEX_B = 1        # enum v4l2_stateless_h264_start_code
VP9_FRAME_FLAG_KEY_FRAME = 0x001
VP9_FRAME_FLAG_SHOW_FRAME = 0x002
VP9_FRAME_FLAG_X_SUBSAMPLING = 0x080
VP9_FRAME_FLAG_Y_SUBSAMPLING = 0x100
H264_SPS_FLAG_FRAME_MBS_ONLY = 0x10
AV1_MAX_TILE_COUNT = 512

# include/uapi/linux/videodev2.h
CTRL_TYPE_MENU = 3
CTRL_TYPE_CTRL_CLASS = 6
CTRL_FLAG_READ_ONLY = 0x0004
CTRL_FLAG_WRITE_ONLY = 0x0040
CTRL_FLAG_HAS_PAYLOAD = 0x0100
CTRL_FLAG_DYNAMIC_ARRAY = 0x0800

# id -> (type, element size in bytes); sizes of the uAPI structs on x86-64
VP9 = {
    VP9_FRAME: (0x0261, 168),           # struct v4l2_ctrl_vp9_frame
    VP9_COMPRESSED_HDR: (0x0260, 2040),  # struct v4l2_ctrl_vp9_compressed_hdr
}
H264 = {
    H264_DECODE_MODE: (CTRL_TYPE_MENU, 4),
    H264_START_CODE: (CTRL_TYPE_MENU, 4),
    H264_SPS: (0x0200, 1048),
    H264_PPS: (0x0201, 12),
    H264_SCALING_MATRIX: (0x0202, 480),
    H264_SLICE_PARAMS: (0x0203, 152),
    H264_DECODE_PARAMS: (0x0204, 560),
    H264_PRED_WEIGHTS: (0x0205, 772),
}
AV1 = {
    AV1_SEQUENCE: (0x0280, 12),
    AV1_TILE_GROUP_ENTRY: (0x0281, 16),
    AV1_FRAME: (0x0282, 1784),
    AV1_FILM_GRAIN: (0x0283, 194),
}
MENUS = {  # the one item each menu offers: the node takes Annex B access units
    H264_DECODE_MODE: (STATELESS_H264_DECODE_MODE_FRAME_BASED, "Frame-Based"),
    H264_START_CODE: (STATELESS_H264_START_CODE_ANNEX_B, "Annex B Start Code"),
}

CLIPS = {"vp9-320x240": "VP90", "h264-high-320x240": "H264", "av1-320x240": "AV01"}


def kernel_has_av1_uapi(release: str | None = None) -> bool:
    """V4L2_CID_STATELESS_AV1_* came with Linux 6.5."""
    m = re.match(r"(\d+)\.(\d+)", release or os.uname().release)
    assert m, release
    return (int(m[1]), int(m[2])) >= (6, 5)


def expected() -> dict[int, tuple[int, int]]:
    """The stateless controls this kernel's node must have: id -> (type, size)."""
    return {**VP9, **H264, **(AV1 if kernel_has_av1_uapi() else {})}


def stateless(controls: list[Control]) -> dict[int, Control]:
    return {c.id: c for c in controls
            if c.id & 0x0FFF0000 == CTRL_CLASS_CODEC_STATELESS and c.type != CTRL_TYPE_CTRL_CLASS}


@pytest.fixture(scope="module", autouse=True)
def kernel_log() -> Iterator[KernelLog]:
    log = KernelLog()
    yield log
    assert not log.problems(), "the kernel logged a warning while the controls were used"


@pytest.fixture
def node(kernel_log: KernelLog) -> Iterator[M2MNode]:
    with M2MNode(find_node()) as n:
        yield n
    assert not kernel_log.problems()


def default_of(fd: int, ctrl: Control) -> bytes:
    value = get_ctrl(fd, ctrl)
    assert isinstance(value, bytes)
    return value


def payload(struct: type[ctypes.Structure], **fields: int) -> bytes:
    """A uAPI struct (linuxpy's layout of it), zero but for *fields*."""
    obj = struct()
    for name, value in fields.items():
        setattr(obj, name, value)
    return bytes(obj)


def test_every_codec_has_its_controls_whatever_the_format() -> None:
    """QUERY_EXT_CTRL with NEXT_CTRL | NEXT_COMPOUND finds exactly the spec's
    stateless controls of every codec (AV1's only where the uAPI has them),
    with their types and element sizes, next to phase 8.5's control and the
    two class controls; the same whichever coded format is set."""
    want = expected()
    assert len(want) == (14 if kernel_has_av1_uapi() else 10)
    for code in ("VP90", "H264", "AV01"):
        with M2MNode(find_node()) as n:
            if code in n.formats(OUTPUT):
                n.set_output_format(code, 320, 240)
            controls = query_all(n.fd)
        ids = [c.id for c in controls]
        assert ids == sorted(ids)
        assert set(ids) == {CID_USER_CLASS, CID_MIN_BUFFERS_FOR_CAPTURE,
                            CID_CODEC_STATELESS_CLASS, *want}, [hex(i) for i in ids]
        got = stateless(controls)
        assert {cid: (c.type, c.elem_size) for cid, c in got.items()} == want
        klass = next(c for c in controls if c.id == CID_CODEC_STATELESS_CLASS)
        assert klass.type == CTRL_TYPE_CTRL_CLASS
        assert klass.name == "Stateless Codec Controls"
        for cid, c in got.items():
            assert not c.flags & (CTRL_FLAG_READ_ONLY | CTRL_FLAG_WRITE_ONLY), hex(cid)
            if c.type == CTRL_TYPE_MENU:
                assert not c.flags & CTRL_FLAG_HAS_PAYLOAD
            else:
                assert c.flags & CTRL_FLAG_HAS_PAYLOAD, hex(cid)
        if kernel_has_av1_uapi():
            tiles = got[AV1_TILE_GROUP_ENTRY]
            assert tiles.flags & CTRL_FLAG_DYNAMIC_ARRAY
            assert tiles.dims == (AV1_MAX_TILE_COUNT,) and tiles.elems == 1


def test_without_next_compound_only_the_menus_are_listed(node: M2MNode) -> None:
    """V4L2_CTRL_FLAG_NEXT_CTRL alone skips compound controls: of the
    stateless class only its class control and the two H.264 menus."""
    found: list[int] = []
    cid = 0
    while True:
        try:
            cid = query(node.fd, cid | 0x80000000).id  # V4L2_CTRL_FLAG_NEXT_CTRL
        except OSError as exc:
            assert exc.errno == errno.EINVAL
            break
        found.append(cid)
    assert [c for c in found if c & 0x0FFF0000 == CTRL_CLASS_CODEC_STATELESS] == [
        CID_CODEC_STATELESS_CLASS, H264_DECODE_MODE, H264_START_CODE]


def test_h264_menus_offer_frame_based_annex_b(node: M2MNode) -> None:
    """Each menu has the one item that says what the node takes, as its
    minimum, maximum and default; QUERYMENU names it and refuses the rest."""
    for cid, (value, name) in MENUS.items():
        c = query(node.fd, cid)
        assert (c.minimum, c.maximum, c.default, c.step) == (value, value, value, 1)
        assert menu(node.fd, cid, value) == name
        for index in (0, 2):
            with pytest.raises(OSError) as info:
                menu(node.fd, cid, index)
            assert info.value.errno == errno.EINVAL
        assert get_ctrl(node.fd, c) == value


def test_defaults_are_the_cores_and_valid(node: M2MNode) -> None:
    """G_EXT_CTRLS gives every control its default (zero but where the core
    sets one); TRY_EXT_CTRLS and S_EXT_CTRLS of the default succeed and the
    value stays (the all-zero SPS as H.264 reads it: profile_idc 0 codes no
    chroma_format_idc, which is then inferred to be 1, 7.4.2.1.1)."""
    want_defaults = {
        VP9_FRAME: payload(raw.v4l2_ctrl_vp9_frame, profile=0, bit_depth=8,
                           flags=VP9_FRAME_FLAG_X_SUBSAMPLING | VP9_FRAME_FLAG_Y_SUBSAMPLING),
        H264_SCALING_MATRIX: bytes([16]) * 480,  # Flat_4x4_16 and Flat_8x8_16
    }
    if kernel_has_av1_uapi():
        want_defaults[AV1_SEQUENCE] = payload(raw.v4l2_ctrl_av1_sequence, bit_depth=8)
    stored = {H264_SPS: payload(raw.v4l2_ctrl_h264_sps, chroma_format_idc=1)}
    controls = stateless(query_all(node.fd))
    for cid, c in sorted(controls.items()):
        value = get_ctrl(node.fd, c)
        if c.type == CTRL_TYPE_MENU:
            assert value == c.default == MENUS[cid][0], hex(cid)
        else:
            assert isinstance(value, bytes)
            assert len(value) == c.elem_size * c.elems, hex(cid)
            assert value == want_defaults.get(cid, bytes(len(value))), hex(cid)
        try_ctrl(node.fd, cid, value)
        set_ctrl(node.fd, cid, value)
        assert get_ctrl(node.fd, c) == stored.get(cid, value), hex(cid)


@pytest.mark.parametrize("cid", list(MENUS), ids=["decode_mode", "start_code"])
def test_menu_values_beyond_the_menu_are_erange(node: M2MNode, cid: int) -> None:
    """The uAPI enums have two items (0, 1); 2 is past the menu's maximum,
    0 below its minimum: ERANGE from TRY and S, and the value stays."""
    c = query(node.fd, cid)
    for bad in (2, 0, -1):
        for call in (try_ctrl, set_ctrl):
            with pytest.raises(OSError) as info:
                call(node.fd, cid, bad)
            assert info.value.errno == errno.ERANGE, (hex(cid), bad, call.__name__)
    assert get_ctrl(node.fd, c) == MENUS[cid][0]


def invalid_payloads() -> list[tuple[str, int, bytes]]:
    """(why, control, payload) the core's validation refuses: each breaks one
    rule of the uAPI documentation, the rest valid."""
    subsampled = VP9_FRAME_FLAG_X_SUBSAMPLING | VP9_FRAME_FLAG_Y_SUBSAMPLING
    cases = [
        ("VP9 profile 4 (V4L2_VP9_PROFILE_MAX is 3)", VP9_FRAME,
         payload(raw.v4l2_ctrl_vp9_frame, profile=4, bit_depth=8, flags=subsampled)),
        ("VP9 profile 0 at 10 bits", VP9_FRAME,
         payload(raw.v4l2_ctrl_vp9_frame, profile=0, bit_depth=10, flags=subsampled)),
        ("H.264 chroma_format_idc 4 (High 4:4:4 Predictive)", H264_SPS,
         payload(raw.v4l2_ctrl_h264_sps, profile_idc=244, chroma_format_idc=4)),
        ("H.264 4:4:4 in the High profile", H264_SPS,
         payload(raw.v4l2_ctrl_h264_sps, profile_idc=100, chroma_format_idc=3)),
        ("H.264 bit_depth_luma_minus8 7 (High)", H264_SPS,
         payload(raw.v4l2_ctrl_h264_sps, profile_idc=100, chroma_format_idc=1,
                 bit_depth_luma_minus8=7)),
        ("H.264 weighted_bipred_idc 3", H264_PPS,
         payload(raw.v4l2_ctrl_h264_pps, weighted_bipred_idc=3)),
    ]
    if kernel_has_av1_uapi():
        cases += [
            ("AV1 seq_profile 3 (reserved)", AV1_SEQUENCE,
             payload(raw.v4l2_ctrl_av1_sequence, seq_profile=3, bit_depth=8)),
            ("AV1 frame flag 1 << 31 (undefined)", AV1_FRAME,
             payload(raw.v4l2_ctrl_av1_frame, flags=1 << 31)),
            ("AV1 film grain num_y_points 15 (at most 14)", AV1_FILM_GRAIN,
             payload(raw.v4l2_ctrl_av1_film_grain, num_y_points=15)),
        ]
    return cases


@pytest.mark.parametrize(("why", "cid", "data"), invalid_payloads(),
                         ids=[case[0] for case in invalid_payloads()])
def test_invalid_compound_payloads_are_einval(node: M2MNode, why: str, cid: int,
                                              data: bytes) -> None:
    c = query(node.fd, cid)
    assert len(data) == c.elem_size, "linuxpy's struct is not the kernel's"
    before = default_of(node.fd, c)
    for call in (try_ctrl, set_ctrl):
        with pytest.raises(OSError) as info:
            call(node.fd, cid, data)
        assert info.value.errno == errno.EINVAL, (why, call.__name__)
    assert default_of(node.fd, c) == before


def test_valid_values_are_kept_per_file(node: M2MNode) -> None:
    """A valid non-default value is stored (G gives it back) and belongs to
    that file: a second open of the node still has the default."""
    sps = payload(raw.v4l2_ctrl_h264_sps, profile_idc=100, level_idc=31, chroma_format_idc=1,
                  pic_width_in_mbs_minus1=19, pic_height_in_map_units_minus1=14,
                  max_num_ref_frames=4, flags=H264_SPS_FLAG_FRAME_MBS_ONLY)
    c = query(node.fd, H264_SPS)
    set_ctrl(node.fd, H264_SPS, sps)
    assert get_ctrl(node.fd, c) == sps
    with VideoNode(find_node()) as other:
        assert get_ctrl(other.fd, query(other.fd, H264_SPS)) == bytes(c.elem_size)


def test_v4l2_ctl_lists_the_controls_and_menus() -> None:
    """``v4l2-ctl --list-ctrls-menus`` (v4l-utils 1.22) shows every stateless
    control, and each menu's one item."""
    out = subprocess.run(["v4l2-ctl", "-d", str(find_node()), "--list-ctrls-menus"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    listed = {c.id: c for c in parse_list_ctrls(out)}
    assert {cid for cid in listed if cid & 0x0FFF0000 == CTRL_CLASS_CODEC_STATELESS} == \
        set(expected()), out
    assert "Stateless Codec Controls" in out
    assert "error" not in out.lower(), out
    for cid, (value, name) in MENUS.items():
        assert listed[cid].type == "menu"
        assert listed[cid].menu == {value: name}, out
    assert listed[CID_MIN_BUFFERS_FOR_CAPTURE].name == "min_number_of_capture_buffers"


def set_every_control(fd: int) -> None:
    """Every stateless control set: a plausible SPS and VP9 key frame, the
    rest their defaults."""
    for cid, c in stateless(query_all(fd)).items():
        set_ctrl(fd, cid, get_ctrl(fd, c))
    set_ctrl(fd, H264_SPS, payload(raw.v4l2_ctrl_h264_sps, profile_idc=100, level_idc=13,
                                   chroma_format_idc=1, pic_width_in_mbs_minus1=19,
                                   pic_height_in_map_units_minus1=14,
                                   flags=H264_SPS_FLAG_FRAME_MBS_ONLY))
    set_ctrl(fd, VP9_FRAME, payload(raw.v4l2_ctrl_vp9_frame, profile=0, bit_depth=8,
                                    frame_width_minus_1=319, frame_height_minus_1=239,
                                    flags=VP9_FRAME_FLAG_KEY_FRAME | VP9_FRAME_FLAG_SHOW_FRAME |
                                    VP9_FRAME_FLAG_X_SUBSAMPLING |
                                    VP9_FRAME_FLAG_Y_SUBSAMPLING))


@pytest.mark.parametrize("name", list(CLIPS))
def test_decode_after_setting_controls_is_byte_exact(node: M2MNode, name: str) -> None:
    """The controls do nothing: with all of them set on the file, the same
    file decodes the clip byte for byte as Debian's ffmpeg does."""
    path = corpus.path(name)
    set_every_control(node.fd)
    _, width, height, packets = packets_of(path)
    frames: list[Frame] = []
    stats = StatefulDecode(node, CLIPS[name], packets, frames.append, width=width,
                           height=height, timeout=120).run()
    assert stats.errors == 0, stats
    assert b"".join(f.data for f in frames) == reference_output(path)
    sps = query(node.fd, H264_SPS)
    assert get_ctrl(node.fd, sps) != bytes(sps.elem_size)  # still set
