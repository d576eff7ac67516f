"""The wire layout as Python sees it, pinned three ways.

1. Golden numbers, worked out by hand from daedalus_v4l2_proto.h and the C
   layout rules (each field at the next multiple of its alignment, the struct
   padded to its largest alignment): in struct daedalus_msg_hdr the __u64
   cookie lands at 8 right after magic (4) + version (2) + type (2), and
   payload_len, flags, status and reserved[5] (20 bytes) follow at 16..47,
   48 bytes in all, a multiple of 8. struct daedalus_hello is eight __u32s.
   Phase 8.4 (protocol v5): struct daedalus_decode_req is the __u64
   stream_id and timestamp at 0 and 8, three __u32s at 16..27 and reserved[5]
   at 28..47 (48 bytes; protocol v8 takes the first reserved word for
   bitstream_offset at 28, reserved[4] at 32..47); struct
   daedalus_frame_info is four __u32s, digest and timestamp (__u64, at 16 and
   24) and reserved[2] at 32..39 (40 bytes, a multiple of 8); struct
   daedalus_frame_resp is eight __u32s (32 bytes) and struct daedalus_stream
   a __u64 and reserved[2] (16 bytes). Phase 8.5: struct daedalus_fetch_req
   is the __u64 stream_id, timestamp and digest at 0, 8 and 16, four __u32s
   and reserved[2] at 24..47 (48 bytes, a multiple of 8); struct
   daedalus_fetch_resp is a struct daedalus_frame_info (40 bytes, 8-aligned)
   then bytes at 40 and reserved[3] at 44..55 (56 bytes, a multiple of 8).
   Phase 8.6 (protocol v8): struct daedalus_dmabuf_req is the __u64 cookie
   at 0, index and flags at 8 and 12, the __s32 fd at 16, size at 20 and
   reserved[2] at 24..31 (32 bytes); DAEDALUS_IOC_GET_DMABUF is
   _IOWR(0xDA, 1, that struct): direction 3 (read and write) in bits 30..31,
   size 32 in bits 16..29, type 0xDA in bits 8..15, number 1: 0xc020da01.
   Protocol v9 splits struct daedalus_frame_info's first reserved word into
   four __u8 (primaries, transfer, matrix, range at 32, 33, 34, 35: no
   padding between bytes) and keeps one __u32 reserved at 36..39, so the struct
   stays 40 bytes and struct daedalus_fetch_resp 56. Protocol v10 adds
   DAEDALUS_IOC_IN_FLIGHT, _IOW(0xDA, 2, __u64): direction 1 (write) in bits
   30..31, size 8, type 0xDA, number 2: 0x4008da02.
   Protocol v12 (phase 8.9): struct daedalus_request_decode is the __u64
   stream_id and timestamp at 0 and 8, thirteen __u32s at 16..67 (codec,
   flags, out_index, bitstream_offset, bitstream_len, cap_index, pixfmt,
   width, height, bytesperline, sizeimage, nr_ctrls, ctrls_len) and
   reserved[3] at 68..79: 80 bytes, a multiple of 8; struct
   daedalus_request_ctrl four __u32s (16 bytes), struct
   daedalus_request_decode_resp three __u32s and reserved[5] (32 bytes).
2. The same numbers from gcc, compiling a tiny program against the header
   (an independent path: no cffi involved).
3. cffi's view (``ffi.sizeof`` / ``ffi.offsetof``) and the bytes that
   pack_header/pack_hello produce.

A cdef that drifts from the header must not load, and an extension compiled
from another header must not import.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from daedalus import proto
from daedalus.proto import _build, _gencdef
from daedalus.proto.cdef import CDEF

INCLUDE = Path(__file__).resolve().parents[2] / "proto" / "include"

HDR_SIZE = 48
HDR_OFFSETS = {"magic": 0, "version": 4, "type": 6, "cookie": 8, "payload_len": 16,
               "flags": 20, "status": 24, "reserved": 28}
HDR_WIDTHS = {"magic": 4, "version": 2, "type": 2, "cookie": 8, "payload_len": 4,
              "flags": 4, "status": 4, "reserved": 20}
HELLO_SIZE = 32
HELLO_OFFSETS = {"proto_version": 0, "max_payload": 4, "phase": 8, "reserved": 12}
HELLO_WIDTHS = {"proto_version": 4, "max_payload": 4, "phase": 4, "reserved": 20}
# Phase 8.4 and 8.5 structs: size, then {field: (offset, width)}.
LAYOUTS: dict[str, tuple[int, dict[str, tuple[int, int]]]] = {
    "daedalus_decode_req": (48, {"stream_id": (0, 8), "timestamp": (8, 8), "codec": (16, 4),
                                 "flags": (20, 4), "bitstream_len": (24, 4),
                                 "bitstream_offset": (28, 4), "reserved": (32, 16)}),
    "daedalus_frame_info": (40, {"width": (0, 4), "height": (4, 4), "pixfmt": (8, 4),
                                 "flags": (12, 4), "digest": (16, 8), "timestamp": (24, 8),
                                 "primaries": (32, 1), "transfer": (33, 1), "matrix": (34, 1),
                                 "range": (35, 1), "reserved": (36, 4)}),
    "daedalus_frame_resp": (32, {"status": (0, 4), "error": (4, 4), "nr_frames": (8, 4),
                                 "msg_len": (12, 4), "reserved": (16, 16)}),
    "daedalus_stream": (16, {"stream_id": (0, 8), "reserved": (8, 8)}),
    "daedalus_fetch_req": (48, {"stream_id": (0, 8), "timestamp": (8, 8), "digest": (16, 8),
                                "flags": (24, 4), "bytesperline": (28, 4), "height": (32, 4),
                                "max_bytes": (36, 4), "reserved": (40, 8)}),
    "daedalus_fetch_resp": (56, {"frame": (0, 40), "bytes": (40, 4), "reserved": (44, 12)}),
    "daedalus_dmabuf_req": (32, {"cookie": (0, 8), "index": (8, 4), "flags": (12, 4),
                                 "fd": (16, 4), "size": (20, 4), "reserved": (24, 8)}),
    "daedalus_request_decode": (80, {
        "stream_id": (0, 8), "timestamp": (8, 8), "codec": (16, 4), "flags": (20, 4),
        "out_index": (24, 4), "bitstream_offset": (28, 4), "bitstream_len": (32, 4),
        "cap_index": (36, 4), "pixfmt": (40, 4), "width": (44, 4), "height": (48, 4),
        "bytesperline": (52, 4), "sizeimage": (56, 4), "nr_ctrls": (60, 4),
        "ctrls_len": (64, 4), "reserved": (68, 12)}),
    "daedalus_request_ctrl": (16, {"id": (0, 4), "flags": (4, 4), "size": (8, 4),
                                   "elems": (12, 4)}),
    "daedalus_request_decode_resp": (32, {"error": (0, 4), "bytes": (4, 4), "msg_len": (8, 4),
                                          "reserved": (12, 20)}),
}
CONSTANTS = {"DAEDALUS_PROTO_MAGIC": 0x4C345644, "DAEDALUS_PROTO_VERSION": 12,
             "DAEDALUS_MAX_PAYLOAD": 1024 * 1024, "DAEDALUS_MSG_RESPONSE": 0x8000,
             "DAEDALUS_MSG_HELLO": 1, "DAEDALUS_MSG_PING": 2, "DAEDALUS_MSG_DECODE": 3,
             "DAEDALUS_MSG_CLOSE_STREAM": 4, "DAEDALUS_CODEC_VP9": 1, "DAEDALUS_CODEC_H264": 2,
             "DAEDALUS_CODEC_AV1": 3, "DAEDALUS_PIXFMT_NV12": 1, "DAEDALUS_PIXFMT_P010": 2,
             "DAEDALUS_PIXFMT_NV16": 3, "DAEDALUS_PIXFMT_NV24": 4,
             "DAEDALUS_DECODE_FLUSH": 1, "DAEDALUS_MAX_FRAMES": 16, "DAEDALUS_MAX_MSG": 256,
             "DAEDALUS_DECODE_OK": 0, "DAEDALUS_DECODE_ERROR": 1, "DAEDALUS_FRAME_KEY": 1,
             "DAEDALUS_FRAME_CORRUPT": 2,
             "DAEDALUS_MSG_FEED": 5, "DAEDALUS_MSG_FETCH": 6, "DAEDALUS_DECODE_RESET": 2,
             "DAEDALUS_DECODE_RESYNC": 4, "DAEDALUS_FETCH_DISCARD": 1, "DAEDALUS_MAX_WIDTH": 8192,
             "DAEDALUS_MAX_HEIGHT": 4352, "DAEDALUS_DECODE_DMABUF": 8, "DAEDALUS_FETCH_DMABUF": 2,
             "DAEDALUS_IOC_MAGIC": 0xDA, "DAEDALUS_IOC_GET_DMABUF": 0xC020DA01,
             "DAEDALUS_IOC_IN_FLIGHT": 0x4008DA02,
             # H.273's "unspecified" code point; FFmpeg's AVColorRange
             "DAEDALUS_COLOUR_UNSPECIFIED": 2, "DAEDALUS_RANGE_UNSPECIFIED": 0,
             "DAEDALUS_RANGE_LIMITED": 1, "DAEDALUS_RANGE_FULL": 2,
             # phase 8.9 (protocol v12)
             "DAEDALUS_MSG_DECODE_REQUEST": 7, "DAEDALUS_REQUEST_NEW_FRAME": 1,
             "DAEDALUS_REQUEST_HOLD": 2, "DAEDALUS_REQUEST_RESET": 4,
             "DAEDALUS_REQUEST_CTRLS_MAX": 16384, "DAEDALUS_CTRL_IN_REQUEST": 1}


def _field(data: bytes, offsets: dict[str, int], widths: dict[str, int], name: str) -> int:
    start = offsets[name]
    return int.from_bytes(data[start:start + widths[name]], sys.byteorder)


# --- 1 + 3: golden numbers against cffi ------------------------------------


def test_golden_sizes_match_cffi() -> None:
    assert proto.ffi.sizeof("struct daedalus_msg_hdr") == HDR_SIZE == proto.HDR_SIZE
    assert proto.ffi.sizeof("struct daedalus_hello") == HELLO_SIZE == proto.HELLO_SIZE
    assert proto.RESERVED_WORDS == 5
    assert [proto.ffi.sizeof(f"struct {name}") for name in LAYOUTS] == [
        size for size, _ in LAYOUTS.values()]
    assert (proto.DECODE_REQ_SIZE, proto.FRAME_INFO_SIZE, proto.FRAME_RESP_SIZE,
            proto.STREAM_SIZE, proto.FETCH_REQ_SIZE, proto.FETCH_RESP_SIZE,
            proto.DMABUF_REQ_SIZE, proto.REQUEST_DECODE_SIZE, proto.REQUEST_CTRL_SIZE,
            proto.REQUEST_DECODE_RESP_SIZE) == (48, 40, 32, 16, 48, 56, 32, 80, 16, 32)


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_golden_phase_8_4_to_8_6_offsets_match_cffi(name: str) -> None:
    ctype = f"struct {name}"
    fields = dict(proto.ffi.typeof(ctype).fields)
    assert list(fields) == list(LAYOUTS[name][1])  # same fields, same order, nothing else
    for field_name, (offset, width) in LAYOUTS[name][1].items():
        assert proto.ffi.offsetof(ctype, field_name) == offset, field_name
        assert proto.ffi.sizeof(fields[field_name].type) == width, field_name


@pytest.mark.parametrize(("ctype", "offsets", "widths"), [
    ("struct daedalus_msg_hdr", HDR_OFFSETS, HDR_WIDTHS),
    ("struct daedalus_hello", HELLO_OFFSETS, HELLO_WIDTHS),
])
def test_golden_offsets_match_cffi(ctype: str, offsets: dict[str, int],
                                   widths: dict[str, int]) -> None:
    fields = dict(proto.ffi.typeof(ctype).fields)
    assert list(fields) == list(offsets)  # same fields, same order, nothing else
    for name, offset in offsets.items():
        assert proto.ffi.offsetof(ctype, name) == offset, name
        assert proto.ffi.sizeof(fields[name].type) == widths[name], name


def test_golden_constants_match_cffi() -> None:
    for name, value in CONSTANTS.items():
        assert getattr(proto.lib, name) == value, name
    assert (proto.MAGIC, proto.VERSION, proto.MAX_PAYLOAD, proto.RESPONSE) == (
        0x4C345644, 12, 1024 * 1024, 0x8000)
    assert [int(t) for t in proto.MsgType] == [1, 2, 3, 4, 5, 6, 7]
    assert [t.name for t in proto.MsgType] == ["HELLO", "PING", "DECODE", "CLOSE_STREAM",
                                               "FEED", "FETCH", "DECODE_REQUEST"]
    assert {c.name: int(c) for c in proto.Codec} == {"VP9": 1, "H264": 2, "AV1": 3}
    assert {p.name: int(p) for p in proto.PixFmt} == {"NV12": 1, "P010": 2, "NV16": 3,
                                                     "NV24": 4}
    assert (proto.DECODE_FLUSH, proto.MAX_FRAMES, proto.MAX_MSG, proto.FRAME_KEY) == (
        1, 16, 256, 1)
    assert (proto.DecodeStatus.OK, proto.DecodeStatus.ERROR) == (0, 1)
    assert (proto.DECODE_RESET, proto.DECODE_RESYNC, proto.FETCH_DISCARD) == (2, 4, 1)
    assert (proto.MAX_WIDTH, proto.MAX_HEIGHT) == (8192, 4352)  # no version bump: not layout
    assert (proto.DECODE_FLAGS, proto.FEED_FLAGS) == (1, 15)  # REQ_DECODE: no DMABUF
    assert (proto.FRAME_CORRUPT, proto.FRAME_FLAGS) == (2, 3)
    assert (proto.DECODE_DMABUF, proto.FETCH_DMABUF, proto.FETCH_FLAGS) == (8, 2, 3)
    assert (proto.IOC_GET_DMABUF, proto.IOC_IN_FLIGHT) == (0xC020DA01, 0x4008DA02)
    assert (proto.COLOUR_UNSPECIFIED, proto.RANGE_UNSPECIFIED, proto.RANGE_LIMITED,
            proto.RANGE_FULL) == (2, 0, 1, 2)
    assert (proto.REQUEST_NEW_FRAME, proto.REQUEST_HOLD, proto.REQUEST_RESET,
            proto.REQUEST_FLAGS, proto.REQUEST_CTRLS_MAX, proto.CTRL_IN_REQUEST,
            proto.CTRL_FLAGS) == (1, 2, 4, 7, 16384, 1, 1)


def test_magic_reads_dv4l_on_little_endian() -> None:
    if sys.byteorder != "little":
        pytest.skip("the header documents the little-endian spelling")
    assert proto.pack_header(proto.MsgType.PING, 1, 0)[:4] == b"DV4L"


# --- 2: gcc against the header, no cffi -------------------------------------

C_PROGRAM = r"""
#include <stddef.h>
#include <stdio.h>
#include "daedalus_v4l2_proto.h"

#define OFF(s, f) printf("%s.%s %zu %zu\n", #s, #f, offsetof(struct s, f), \
                         sizeof(((struct s *)0)->f))
#define VAL(c) printf("%s %llu\n", #c, (unsigned long long)(c))

int main(void)
{
    printf("sizeof.daedalus_msg_hdr %zu\n", sizeof(struct daedalus_msg_hdr));
    printf("sizeof.daedalus_hello %zu\n", sizeof(struct daedalus_hello));
    OFF(daedalus_msg_hdr, magic); OFF(daedalus_msg_hdr, version);
    OFF(daedalus_msg_hdr, type); OFF(daedalus_msg_hdr, cookie);
    OFF(daedalus_msg_hdr, payload_len); OFF(daedalus_msg_hdr, flags);
    OFF(daedalus_msg_hdr, status); OFF(daedalus_msg_hdr, reserved);
    OFF(daedalus_hello, proto_version); OFF(daedalus_hello, max_payload);
    OFF(daedalus_hello, phase); OFF(daedalus_hello, reserved);
    printf("sizeof.daedalus_decode_req %zu\n", sizeof(struct daedalus_decode_req));
    printf("sizeof.daedalus_frame_info %zu\n", sizeof(struct daedalus_frame_info));
    printf("sizeof.daedalus_frame_resp %zu\n", sizeof(struct daedalus_frame_resp));
    printf("sizeof.daedalus_stream %zu\n", sizeof(struct daedalus_stream));
    OFF(daedalus_decode_req, stream_id); OFF(daedalus_decode_req, codec);
    OFF(daedalus_decode_req, flags); OFF(daedalus_decode_req, bitstream_len);
    OFF(daedalus_decode_req, timestamp); OFF(daedalus_decode_req, bitstream_offset);
    OFF(daedalus_decode_req, reserved);
    OFF(daedalus_frame_info, width); OFF(daedalus_frame_info, height);
    OFF(daedalus_frame_info, pixfmt); OFF(daedalus_frame_info, flags);
    OFF(daedalus_frame_info, digest); OFF(daedalus_frame_info, timestamp);
    OFF(daedalus_frame_info, primaries); OFF(daedalus_frame_info, transfer);
    OFF(daedalus_frame_info, matrix); OFF(daedalus_frame_info, range);
    OFF(daedalus_frame_info, reserved);
    OFF(daedalus_frame_resp, status); OFF(daedalus_frame_resp, error);
    OFF(daedalus_frame_resp, nr_frames); OFF(daedalus_frame_resp, msg_len);
    OFF(daedalus_frame_resp, reserved);
    OFF(daedalus_stream, stream_id); OFF(daedalus_stream, reserved);
    printf("sizeof.daedalus_fetch_req %zu\n", sizeof(struct daedalus_fetch_req));
    printf("sizeof.daedalus_fetch_resp %zu\n", sizeof(struct daedalus_fetch_resp));
    OFF(daedalus_fetch_req, stream_id); OFF(daedalus_fetch_req, flags);
    OFF(daedalus_fetch_req, timestamp); OFF(daedalus_fetch_req, digest);
    OFF(daedalus_fetch_req, bytesperline); OFF(daedalus_fetch_req, height);
    OFF(daedalus_fetch_req, max_bytes); OFF(daedalus_fetch_req, reserved);
    OFF(daedalus_fetch_resp, frame); OFF(daedalus_fetch_resp, bytes);
    OFF(daedalus_fetch_resp, reserved);
    printf("sizeof.daedalus_dmabuf_req %zu\n", sizeof(struct daedalus_dmabuf_req));
    OFF(daedalus_dmabuf_req, cookie); OFF(daedalus_dmabuf_req, index);
    OFF(daedalus_dmabuf_req, flags); OFF(daedalus_dmabuf_req, fd);
    OFF(daedalus_dmabuf_req, size); OFF(daedalus_dmabuf_req, reserved);
    printf("sizeof.daedalus_request_decode %zu\n", sizeof(struct daedalus_request_decode));
    OFF(daedalus_request_decode, stream_id); OFF(daedalus_request_decode, timestamp);
    OFF(daedalus_request_decode, codec); OFF(daedalus_request_decode, flags);
    OFF(daedalus_request_decode, out_index); OFF(daedalus_request_decode, bitstream_offset);
    OFF(daedalus_request_decode, bitstream_len); OFF(daedalus_request_decode, cap_index);
    OFF(daedalus_request_decode, pixfmt); OFF(daedalus_request_decode, width);
    OFF(daedalus_request_decode, height); OFF(daedalus_request_decode, bytesperline);
    OFF(daedalus_request_decode, sizeimage); OFF(daedalus_request_decode, nr_ctrls);
    OFF(daedalus_request_decode, ctrls_len); OFF(daedalus_request_decode, reserved);
    printf("sizeof.daedalus_request_ctrl %zu\n", sizeof(struct daedalus_request_ctrl));
    OFF(daedalus_request_ctrl, id); OFF(daedalus_request_ctrl, flags);
    OFF(daedalus_request_ctrl, size); OFF(daedalus_request_ctrl, elems);
    printf("sizeof.daedalus_request_decode_resp %zu\n",
           sizeof(struct daedalus_request_decode_resp));
    OFF(daedalus_request_decode_resp, error); OFF(daedalus_request_decode_resp, bytes);
    OFF(daedalus_request_decode_resp, msg_len); OFF(daedalus_request_decode_resp, reserved);
    VAL(DAEDALUS_PROTO_MAGIC); VAL(DAEDALUS_PROTO_VERSION); VAL(DAEDALUS_MAX_PAYLOAD);
    VAL(DAEDALUS_MSG_RESPONSE); VAL(DAEDALUS_MSG_HELLO); VAL(DAEDALUS_MSG_PING);
    VAL(DAEDALUS_MSG_DECODE); VAL(DAEDALUS_MSG_CLOSE_STREAM);
    VAL(DAEDALUS_CODEC_VP9); VAL(DAEDALUS_CODEC_H264); VAL(DAEDALUS_CODEC_AV1);
    VAL(DAEDALUS_PIXFMT_NV12); VAL(DAEDALUS_PIXFMT_P010); VAL(DAEDALUS_PIXFMT_NV16);
    VAL(DAEDALUS_PIXFMT_NV24); VAL(DAEDALUS_DECODE_FLUSH);
    VAL(DAEDALUS_MAX_FRAMES); VAL(DAEDALUS_MAX_MSG); VAL(DAEDALUS_DECODE_OK);
    VAL(DAEDALUS_DECODE_ERROR); VAL(DAEDALUS_FRAME_KEY); VAL(DAEDALUS_FRAME_CORRUPT);
    VAL(DAEDALUS_MSG_FEED); VAL(DAEDALUS_MSG_FETCH); VAL(DAEDALUS_DECODE_RESET);
    VAL(DAEDALUS_DECODE_RESYNC);
    VAL(DAEDALUS_FETCH_DISCARD); VAL(DAEDALUS_MAX_WIDTH); VAL(DAEDALUS_MAX_HEIGHT);
    VAL(DAEDALUS_DECODE_DMABUF); VAL(DAEDALUS_FETCH_DMABUF); VAL(DAEDALUS_IOC_MAGIC);
    VAL(DAEDALUS_IOC_GET_DMABUF); VAL(DAEDALUS_IOC_IN_FLIGHT);
    VAL(DAEDALUS_COLOUR_UNSPECIFIED);
    VAL(DAEDALUS_RANGE_UNSPECIFIED); VAL(DAEDALUS_RANGE_LIMITED); VAL(DAEDALUS_RANGE_FULL);
    VAL(DAEDALUS_MSG_DECODE_REQUEST); VAL(DAEDALUS_REQUEST_NEW_FRAME);
    VAL(DAEDALUS_REQUEST_HOLD); VAL(DAEDALUS_REQUEST_RESET);
    VAL(DAEDALUS_REQUEST_CTRLS_MAX); VAL(DAEDALUS_CTRL_IN_REQUEST);
    return 0;
}
"""


@pytest.fixture(scope="module")
def gcc_layout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[int]]:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("no gcc")
    tmp = tmp_path_factory.mktemp("gcc-layout")
    (tmp / "layout.c").write_text(C_PROGRAM)
    subprocess.run([gcc, "-std=gnu11", "-Wall", "-Werror", "-I", str(INCLUDE),
                    "-o", str(tmp / "layout"), str(tmp / "layout.c")], check=True)
    out = subprocess.run([str(tmp / "layout")], check=True, capture_output=True, text=True).stdout
    return {name: [int(v) for v in rest] for name, *rest in (ln.split() for ln in out.splitlines())}


def test_gcc_agrees_with_golden_numbers(gcc_layout: dict[str, list[int]]) -> None:
    assert gcc_layout["sizeof.daedalus_msg_hdr"] == [HDR_SIZE]
    assert gcc_layout["sizeof.daedalus_hello"] == [HELLO_SIZE]
    for name, offset in HDR_OFFSETS.items():
        assert gcc_layout[f"daedalus_msg_hdr.{name}"] == [offset, HDR_WIDTHS[name]], name
    for name, offset in HELLO_OFFSETS.items():
        assert gcc_layout[f"daedalus_hello.{name}"] == [offset, HELLO_WIDTHS[name]], name
    for struct, (size, fields) in LAYOUTS.items():
        assert gcc_layout[f"sizeof.{struct}"] == [size], struct
        for name, (offset, width) in fields.items():
            assert gcc_layout[f"{struct}.{name}"] == [offset, width], f"{struct}.{name}"
    for name, value in CONSTANTS.items():
        assert gcc_layout[name] == [value], name


def test_gcc_agrees_with_cffi(gcc_layout: dict[str, list[int]]) -> None:
    structs: list[tuple[str, Iterable[str]]] = [("daedalus_msg_hdr", HDR_OFFSETS),
                                                ("daedalus_hello", HELLO_OFFSETS)]
    structs += [(struct, fields) for struct, (_, fields) in LAYOUTS.items()]
    for struct, names in structs:
        assert gcc_layout[f"sizeof.{struct}"] == [proto.ffi.sizeof(f"struct {struct}")]
        for name in names:
            assert gcc_layout[f"{struct}.{name}"][0] == proto.ffi.offsetof(f"struct {struct}",
                                                                            name)
    for name in CONSTANTS:
        assert gcc_layout[name] == [getattr(proto.lib, name)], name


# --- packing and parsing ----------------------------------------------------


def test_pack_header_puts_every_field_at_its_golden_offset() -> None:
    data = proto.pack_header(0x8002, 0x0123456789ABCDEF, 77, status=5, flags=0x10,
                             magic=0xAABBCCDD, version=0x1234, reserved=[1, 2, 3, 4, 5])
    assert len(data) == HDR_SIZE
    expected = {"magic": 0xAABBCCDD, "version": 0x1234, "type": 0x8002,
                "cookie": 0x0123456789ABCDEF, "payload_len": 77, "flags": 0x10, "status": 5}
    for name, value in expected.items():
        assert _field(data, HDR_OFFSETS, HDR_WIDTHS, name) == value, name
    words = data[HDR_OFFSETS["reserved"]:HDR_SIZE]
    assert [int.from_bytes(words[i:i + 4], sys.byteorder) for i in range(0, 20, 4)] == [
        1, 2, 3, 4, 5]


@pytest.mark.parametrize("header", [
    proto.Header(magic=proto.MAGIC, version=proto.VERSION, type=proto.MsgType.PING, cookie=1,
                 payload_len=0, flags=0, status=0),
    proto.Header(magic=proto.MAGIC, version=proto.VERSION, type=proto.MsgType.PING | 0x8000,
                 cookie=2**64 - 1, payload_len=proto.MAX_PAYLOAD, flags=0, status=110),
    proto.Header(magic=0, version=0xFFFF, type=0xFFFF, cookie=0, payload_len=2**32 - 1,
                 flags=2**32 - 1, status=2**32 - 1, reserved=(9, 8, 7, 6, 5)),
])
def test_header_round_trip(header: proto.Header) -> None:
    data = header.pack()
    assert len(data) == HDR_SIZE
    assert proto.parse_header(data) == header
    assert proto.parse_header(data + b"payload follows") == header
    assert proto.parse_header(memoryview(b"x" + data)[1:]) == header  # unaligned view


def test_parse_header_rejects_short_data() -> None:
    with pytest.raises(proto.ProtocolError, match="short message: 47 bytes"):
        proto.parse_header(bytes(HDR_SIZE - 1))
    with pytest.raises(proto.ProtocolError):
        proto.parse_header(b"")


@pytest.mark.parametrize("kwargs", [{"cookie": -1}, {"cookie": 2**64}, {"type": 0x10000},
                                    {"reserved": [0] * 6}, {"status": -5}])
def test_pack_header_rejects_values_that_do_not_fit(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"type": 2, "cookie": 1, "payload_len": 0} | kwargs
    with pytest.raises(proto.ProtocolError):
        proto.pack_header(**args)


def test_pack_message_is_header_then_payload() -> None:
    msg = proto.pack_message(proto.MsgType.PING | proto.RESPONSE, 42, b"abc", status=0)
    header = proto.parse_header(msg)
    assert (header.type, header.cookie, header.payload_len) == (0x8002, 42, 3)
    assert header.is_response and header.opcode == proto.MsgType.PING
    assert msg[HDR_SIZE:] == b"abc"
    with pytest.raises(proto.ProtocolError, match="exceeds"):
        proto.pack_message(proto.MsgType.PING, 1, bytes(proto.MAX_PAYLOAD + 1))


def test_hello_round_trip_and_layout() -> None:
    data = proto.pack_hello(proto_version=1, max_payload=4096, phase=82)
    assert len(data) == HELLO_SIZE
    assert [_field(data, HELLO_OFFSETS, HELLO_WIDTHS, n)
            for n in ("proto_version", "max_payload", "phase")] == [1, 4096, 82]
    assert data[HELLO_OFFSETS["reserved"]:] == bytes(20)
    assert proto.parse_hello(data) == proto.Hello(proto_version=1, max_payload=4096, phase=82)
    defaults = proto.parse_hello(proto.pack_hello())
    assert (defaults.proto_version, defaults.max_payload) == (proto.VERSION, proto.MAX_PAYLOAD)


@pytest.mark.parametrize("size", [0, HELLO_SIZE - 1, HELLO_SIZE + 1])
def test_parse_hello_wants_exactly_one_struct(size: int) -> None:
    with pytest.raises(proto.ProtocolError, match="HELLO payload"):
        proto.parse_hello(bytes(size))


def test_validate_hello() -> None:
    proto.validate_hello(proto.parse_hello(proto.pack_hello(phase=82)))
    other = proto.VERSION + 1
    with pytest.raises(proto.VersionMismatch,
                       match=f"kernel speaks protocol v{other}, daemon v{proto.VERSION}"):
        proto.validate_hello(proto.parse_hello(proto.pack_hello(proto_version=other)))
    with pytest.raises(proto.ProtocolError, match="reserved"):
        proto.validate_hello(proto.parse_hello(proto.pack_hello(reserved=[0, 0, 1, 0, 0])))
    with pytest.raises(proto.ProtocolError, match="max_payload"):
        proto.validate_hello(proto.parse_hello(proto.pack_hello(max_payload=0)))


GOOD = proto.Header(magic=proto.MAGIC, version=proto.VERSION, type=proto.MsgType.PING,
                    cookie=9, payload_len=3, flags=0, status=0)


def test_validate_request_accepts_a_good_request() -> None:
    proto.validate_request(GOOD, b"abc")
    proto.validate_request(dataclasses.replace(GOOD, type=0x7FFF), b"abc")  # unknown: still valid
    proto.validate_request(dataclasses.replace(GOOD, payload_len=0), b"")


@pytest.mark.parametrize(("changes", "payload", "match"), [
    ({"magic": 0x12345678}, b"abc", "bad magic"),
    ({"type": proto.MsgType.PING | 0x8000}, b"abc", "response"),
    ({"flags": 1}, b"abc", "flags"),
    ({"status": 5}, b"abc", "status"),
    ({"reserved": (0, 0, 0, 0, 1)}, b"abc", "reserved"),
    ({"payload_len": 4}, b"abc", "payload_len 4 but 3"),
    ({"payload_len": 2}, b"abc", "payload_len 2 but 3"),
    ({"payload_len": 2**20 + 1}, b"abc", "exceeds"),
])
def test_validate_request_rejects(changes: dict[str, Any], payload: bytes, match: str) -> None:
    with pytest.raises(proto.ProtocolError, match=match):
        proto.validate_request(dataclasses.replace(GOOD, **changes), payload)


def test_validate_request_reports_another_version() -> None:
    other = proto.VERSION + 1
    with pytest.raises(proto.VersionMismatch) as info:
        proto.validate_request(dataclasses.replace(GOOD, version=other), b"abc")
    assert info.value.version == other
    assert str(info.value) == f"kernel speaks protocol v{other}, daemon v{proto.VERSION}"


def test_describe_type() -> None:
    assert proto.describe_type(2) == "PING"
    assert proto.describe_type(0x8001) == "HELLO|RESPONSE"
    assert proto.describe_type(0x8003) == "DECODE|RESPONSE"
    assert proto.describe_type(4) == "CLOSE_STREAM"
    assert proto.describe_type(5) == "FEED"
    assert proto.describe_type(0x8006) == "FETCH|RESPONSE"
    assert proto.describe_type(0x8007) == "DECODE_REQUEST|RESPONSE"
    assert proto.describe_type(77) == "77"


# --- cdef.py is generated from the header -----------------------------------


def test_cdef_is_what_gencdef_generates_from_the_header() -> None:
    """Edited the header? Run: python shared/protocol/src/daedalus/proto/_gencdef.py"""
    expected = _gencdef.generate((INCLUDE / _build.HEADER).read_text())
    assert _gencdef.CDEF_PATH.read_text() == expected, (
        f"cdef.py is stale; run: python {_gencdef.__file__}")
    assert _gencdef.main(["--check"]) == 0


def test_gencdef_check_fails_when_the_header_changed(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    header = tmp_path / _build.HEADER
    header.write_text((INCLUDE / _build.HEADER).read_text().replace(
        "\t__u32 bytes;\n", "\t__u32 bytes;\n\t__u32 more;\n"))
    assert _gencdef.main(["--header", str(header), "--check"]) == 1
    assert "stale" in capsys.readouterr().err
    out = tmp_path / "cdef.py"
    assert _gencdef.main(["--header", str(header), "--output", str(out)]) == 0
    assert "    __u32 bytes;\n    __u32 more;\n" in out.read_text()
    assert _gencdef.main(["--header", str(header), "--output", str(out), "--check"]) == 0


def test_gencdef_rewrites_values_to_dots() -> None:
    cdef = _gencdef.declarations(
        "#ifndef G\n#define G\n#include <linux/types.h>\n/* c */\n#define A\t(1 << 2)\t/* x */\n"
        "enum e {\n\tE_ONE\t= 1,\n\tE_TWO = 2,\n};\nstruct s {\n\t__u32 a; // y\n};\n#endif\n")
    assert cdef == _gencdef.TYPEDEFS + (
        "\n#define A ...\nenum e {\n    E_ONE,\n    E_TWO,\n    ...\n};\n"
        "struct s {\n    __u32 a;\n};\n")


@pytest.mark.parametrize("line", ["#define F(x) (x)", "#if X", "enum e {\n\tE_ONE,\n};"])
def test_gencdef_refuses_what_it_cannot_rewrite(line: str) -> None:
    with pytest.raises(_gencdef.HeaderError):
        _gencdef.declarations(line + "\n")


# --- drift: a cdef or an extension that disagrees with the header -----------


def _load_extension(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _compile_drifted(tmp_path: Path, name: str, old: str, new: str) -> ModuleType:
    assert old in CDEF
    built = _build.compile_extension(tmp_path, cdef=CDEF.replace(old, new), module=name,
                                     include=INCLUDE)
    return _load_extension(built, name)


@pytest.mark.parametrize(("tag", "old", "new", "ctype", "match"), [
    ("version", "__u16 version;", "__u32 version;", "struct daedalus_msg_hdr",
     "wrong size for field 'version'"),
    ("cookie", "__u64 cookie;", "__u32 cookie;", "struct daedalus_msg_hdr", "wrong"),
    ("phase", "    __u32 phase;\n", "", "struct daedalus_hello", "wrong"),
    ("digest", "__u64 digest;", "__u32 digest;", "struct daedalus_frame_info", "wrong"),
    ("range", "__u8 range;", "__u16 range;", "struct daedalus_frame_info", "wrong"),
    ("timestamp", "__u64 timestamp;\n    __u32 codec;",
     "__u32 timestamp;\n    __u32 codec;", "struct daedalus_decode_req", "wrong"),
    ("fetch_bytes", "__u32 bytes;", "__u64 bytes;", "struct daedalus_fetch_resp", "wrong"),
    ("fetch_height", "__u32 height;\n    __u32 max_bytes;", "__u16 height;\n    __u32 max_bytes;",
     "struct daedalus_fetch_req", "wrong"),
    ("dmabuf_cookie", "__u64 cookie;\n    __u32 index;", "__u32 cookie;\n    __u32 index;",
     "struct daedalus_dmabuf_req", "wrong"),
])
def test_drifted_cdef_does_not_load(tmp_path: Path, tag: str, old: str, new: str, ctype: str,
                                    match: str) -> None:
    module = _compile_drifted(tmp_path, f"daedalus_drift_{tag}", old, new)
    with pytest.raises(module.ffi.error, match=match):
        module.ffi.sizeof(ctype)


@pytest.mark.parametrize(("tag", "old", "new"), [
    ("flagz", "__u32 flags;", "__u32 flagz;"),  # a field the header does not have
    ("reserved", "__u32 reserved[5];\n};\n\nstruct daedalus_hello",  # array length
     "__u32 reserved[4];\n};\n\nstruct daedalus_hello"),
    ("constant", "#define DAEDALUS_MAX_PAYLOAD ...", "#define DAEDALUS_MAX_PAYLOADS ..."),
    ("req_reserved", "__u32 bitstream_offset;\n    __u32 reserved[4];",
     "__u32 bitstream_offset;\n    __u32 reserved[5];"),
    ("bitstream_offset", "__u32 bitstream_offset;", "__u32 bitstream_offst;"),
    ("dmabuf_fd", "__s32 fd;", "__s32 dmabuf_fd;"),
    ("nr_frames", "__u32 nr_frames;", "__u32 nframes;"),
    ("enum", "DAEDALUS_CODEC_AV1,", "DAEDALUS_CODEC_AV2,"),
    ("feed", "DAEDALUS_MSG_FEED,", "DAEDALUS_MSG_FED,"),
    ("max_bytes", "__u32 max_bytes;", "__u32 maxbytes;"),
    # protocol v8's frame_info (no colour description) against the v9 header
    ("frame_info_v8", "__u8 primaries;\n    __u8 transfer;\n    __u8 matrix;\n"
     "    __u8 range;\n    __u32 reserved;", "__u32 reserved[2];"),
])
def test_drifted_cdef_does_not_compile(tmp_path: Path, tag: str, old: str, new: str) -> None:
    assert old in CDEF
    with pytest.raises(_build.BuildError, match="failed"):
        _build.compile_extension(tmp_path, cdef=CDEF.replace(old, new),
                                 module=f"daedalus_nocompile_{tag}", include=INCLUDE)


def test_the_real_cdef_compiles_and_loads(tmp_path: Path) -> None:
    module = _load_extension(_build.compile_extension(tmp_path, module="daedalus_undrifted",
                                                      include=INCLUDE), "daedalus_undrifted")
    assert module.ffi.sizeof("struct daedalus_msg_hdr") == HDR_SIZE


def test_extension_built_from_another_header_does_not_import(tmp_path: Path) -> None:
    """A header edited after the (editable) build: importing says to rebuild."""
    (tmp_path / _build.HEADER).write_text((INCLUDE / _build.HEADER).read_text() + "/* edit */\n")
    env = os.environ | {_build.INCLUDE_ENV: str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", "import daedalus.proto"], env=env,
                          capture_output=True, text=True, check=False)
    assert proc.returncode != 0
    assert "compiled from another daedalus_v4l2_proto.h" in proc.stderr
    assert "rebuild it" in proc.stderr


def test_extension_built_from_another_cdef_or_c_source_does_not_import(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """cdef.py or _build.py's C source edited after the build: rebuild."""
    proto._check_fresh()  # the real one is fresh
    monkeypatch.setattr(_build, "C_SOURCE", _build.C_SOURCE + "/* edit */\n")
    with pytest.raises(ImportError, match=r"another cdef\.py or C source.*rebuild it"):
        proto._check_fresh()
