"""What cffi is told about shared/proto/include/daedalus_v4l2_proto.h.

cffi's cdef parser cannot read the header itself (include guards, ``#include``),
so this restates its declarations for cffi. It is not a second definition of
the ABI: in API mode the C compiler compiles these declarations against the
real header, and cffi checks them against it.

- The structs are declared field by field, without ``...;``: cffi then
  compares every field's offset and size, and each struct's size, with what
  the C compiler computed from the header, and a difference is an
  ``ffi.error`` when the extension is loaded (``daedalus.proto`` loads every
  struct at import). A renamed or removed field does not compile at all.
- Constants are ``#define NAME ...`` and the enums are ``{ NAME, ..., ... }``:
  their values come from the header through the compiler, never from here.
- After the header's declarations come the extension's own (not wire
  format): the FNV-1a 64 digest that _build.py's C source defines, and the
  build stamps.
- The ``__uNN`` typedefs restate <asm-generic/int-ll64.h>, which every Linux
  architecture uses for the uapi types.

This module is read by file path (runpy) at build time, before the package
can be imported: keep it a plain assignment of ``CDEF``, without imports.
"""

CDEF = """
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define DAEDALUS_PROTO_MAGIC ...
#define DAEDALUS_PROTO_VERSION ...
#define DAEDALUS_MAX_PAYLOAD ...
#define DAEDALUS_MAX_WIDTH ...
#define DAEDALUS_MAX_HEIGHT ...
#define DAEDALUS_MSG_RESPONSE ...

enum daedalus_msg_type {
    DAEDALUS_MSG_HELLO,
    DAEDALUS_MSG_PING,
    DAEDALUS_MSG_DECODE,
    DAEDALUS_MSG_CLOSE_STREAM,
    DAEDALUS_MSG_FEED,
    DAEDALUS_MSG_FETCH,
    ...
};

struct daedalus_msg_hdr {
    __u32 magic;
    __u16 version;
    __u16 type;
    __u64 cookie;
    __u32 payload_len;
    __u32 flags;
    __u32 status;
    __u32 reserved[5];
};

struct daedalus_hello {
    __u32 proto_version;
    __u32 max_payload;
    __u32 phase;
    __u32 reserved[5];
};

enum daedalus_codec {
    DAEDALUS_CODEC_VP9,
    DAEDALUS_CODEC_H264,
    DAEDALUS_CODEC_AV1,
    ...
};

enum daedalus_pixfmt {
    DAEDALUS_PIXFMT_NV12,
    DAEDALUS_PIXFMT_P010,
    ...
};

#define DAEDALUS_DECODE_FLUSH ...
#define DAEDALUS_DECODE_RESET ...

struct daedalus_decode_req {
    __u64 stream_id;
    __u64 timestamp;
    __u32 codec;
    __u32 flags;
    __u32 bitstream_len;
    __u32 reserved[5];
};

#define DAEDALUS_MAX_FRAMES ...
#define DAEDALUS_MAX_MSG ...
#define DAEDALUS_DECODE_OK ...
#define DAEDALUS_DECODE_ERROR ...
#define DAEDALUS_FRAME_KEY ...

struct daedalus_frame_info {
    __u32 width;
    __u32 height;
    __u32 pixfmt;
    __u32 flags;
    __u64 digest;
    __u64 timestamp;
    __u32 reserved[2];
};

struct daedalus_frame_resp {
    __u32 status;
    __u32 error;
    __u32 nr_frames;
    __u32 msg_len;
    __u32 reserved[4];
};

struct daedalus_stream {
    __u64 stream_id;
    __u32 reserved[2];
};

#define DAEDALUS_FETCH_DISCARD ...

struct daedalus_fetch_req {
    __u64 stream_id;
    __u64 timestamp;
    __u64 digest;
    __u32 flags;
    __u32 bytesperline;
    __u32 height;
    __u32 max_bytes;
    __u32 reserved[2];
};

struct daedalus_fetch_resp {
    struct daedalus_frame_info frame;
    __u32 bytes;
    __u32 reserved[3];
};

/* Not in the header: _build.py's C source. FNV-1a 64 over n bytes at p,
 * continuing from h (start with DAEDALUS_FNV1A64_OFFSET_BASIS). Called
 * without the GIL. */
#define DAEDALUS_FNV1A64_OFFSET_BASIS ...
#define DAEDALUS_FNV1A64_PRIME ...
uint64_t daedalus_fnv1a64(uint64_t h, const uint8_t *p, size_t n);

/* Not in the header: set by _build.py, the SHA-256 of the header compiled in
 * and of this cdef and _build.py's C source. */
static const char *const daedalus_py_header_sha256;
static const char *const daedalus_py_source_sha256;
"""
