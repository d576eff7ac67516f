"""What cffi is told about shared/proto/include/daedalus_v4l2_proto.h.

cffi's cdef parser cannot read the header itself (include guards, ``#include``),
so this restates its declarations for cffi. It is not a second definition of
the ABI: in API mode the C compiler compiles these declarations against the
real header, and cffi checks them against it.

- The two structs are declared field by field, without ``...;``: cffi then
  compares every field's offset and size, and each struct's size, with what
  the C compiler computed from the header, and a difference is an
  ``ffi.error`` when the extension is loaded (``daedalus.proto`` loads both
  structs at import). A renamed or removed field does not compile at all.
- Constants are ``#define NAME ...`` and the enum is ``{ NAME, ..., ... }``:
  their values come from the header through the compiler, never from here.
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
#define DAEDALUS_MSG_RESPONSE ...

enum daedalus_msg_type {
    DAEDALUS_MSG_HELLO,
    DAEDALUS_MSG_PING,
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

/* Not in the header: set by _build.py, the SHA-256 of the header compiled in. */
static const char *const daedalus_py_header_sha256;
"""
