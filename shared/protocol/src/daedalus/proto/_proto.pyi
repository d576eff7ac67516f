# Types of the cffi extension that _build.py compiles from cdef.py.
# cdata objects stay Any: fields are read and written by name (h.magic = ...).
from typing import Any

class _FFI:
    error: type[Exception]
    def new(self, cdecl: Any, init: Any = ..., /) -> Any: ...
    def sizeof(self, cdecl: Any, /) -> int: ...
    def offsetof(self, cdecl: Any, *fields_or_indexes: str | int) -> int: ...
    def typeof(self, cdecl: Any, /) -> Any: ...
    def buffer(self, cdata: Any, size: int = ..., /) -> Any: ...
    def from_buffer(self, cdecl: Any, python_buffer: Any = ...,
                    require_writable: bool = ...) -> Any: ...
    def memmove(self, dest: Any, src: Any, n: int, /) -> None: ...
    def string(self, cdata: Any, maxlen: int = ..., /) -> bytes | str: ...
    def __getattr__(self, name: str) -> Any: ...

class _Lib:
    DAEDALUS_PROTO_MAGIC: int
    DAEDALUS_PROTO_VERSION: int
    DAEDALUS_MAX_PAYLOAD: int
    DAEDALUS_MAX_WIDTH: int
    DAEDALUS_MAX_HEIGHT: int
    DAEDALUS_MSG_RESPONSE: int
    DAEDALUS_MSG_HELLO: int
    DAEDALUS_MSG_PING: int
    DAEDALUS_MSG_DECODE: int
    DAEDALUS_MSG_CLOSE_STREAM: int
    DAEDALUS_MSG_FEED: int
    DAEDALUS_MSG_FETCH: int
    DAEDALUS_MSG_DECODE_REQUEST: int
    DAEDALUS_REQUEST_NEW_FRAME: int
    DAEDALUS_REQUEST_HOLD: int
    DAEDALUS_REQUEST_RESET: int
    DAEDALUS_REQUEST_CTRLS_MAX: int
    DAEDALUS_CTRL_IN_REQUEST: int
    DAEDALUS_CODEC_VP9: int
    DAEDALUS_CODEC_H264: int
    DAEDALUS_CODEC_AV1: int
    DAEDALUS_PIXFMT_NV12: int
    DAEDALUS_PIXFMT_P010: int
    DAEDALUS_PIXFMT_NV16: int
    DAEDALUS_PIXFMT_NV24: int
    DAEDALUS_DECODE_FLUSH: int
    DAEDALUS_DECODE_RESET: int
    DAEDALUS_DECODE_RESYNC: int
    DAEDALUS_DECODE_DMABUF: int
    DAEDALUS_FETCH_DISCARD: int
    DAEDALUS_FETCH_DMABUF: int
    DAEDALUS_IOC_MAGIC: int
    DAEDALUS_IOC_GET_DMABUF: int
    DAEDALUS_IOC_IN_FLIGHT: int
    DAEDALUS_MAX_FRAMES: int
    DAEDALUS_MAX_MSG: int
    DAEDALUS_DECODE_OK: int
    DAEDALUS_DECODE_ERROR: int
    DAEDALUS_FRAME_KEY: int
    DAEDALUS_FRAME_CORRUPT: int
    DAEDALUS_COLOUR_UNSPECIFIED: int
    DAEDALUS_RANGE_UNSPECIFIED: int
    DAEDALUS_RANGE_LIMITED: int
    DAEDALUS_RANGE_FULL: int
    DAEDALUS_FNV1A64_OFFSET_BASIS: int
    DAEDALUS_FNV1A64_PRIME: int
    daedalus_py_header_sha256: Any
    daedalus_py_source_sha256: Any
    def daedalus_fnv1a64(self, h: int, p: Any, n: int, /) -> int: ...

ffi: _FFI
lib: _Lib
