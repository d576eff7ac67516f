"""Compile ``daedalus.proto._proto``: cffi in API (out-of-line) mode.

The C compiler lays out the structs from shared/proto/include/daedalus_v4l2_proto.h
and cffi checks the declarations of cdef.py against that layout. cdef.py is
generated from the header by _gencdef.py (the header is the only hand-written
copy of the wire format); the extension's own declarations, which are not
wire format, are OWN_CDEF below, next to the C source they declare. Used three
ways, none of which may import the ``daedalus.proto`` package (it cannot be
imported before its extension exists):

- by shared/protocol/hatch_build.py, loaded by file path, on every wheel and
  editable build (hatch workspaces install editable);
- as a script, to rebuild an editable install's extension in place after the
  header changed: ``python shared/protocol/src/daedalus/proto/_build.py``;
- by the layout tests, to compile a deliberately drifted cdef.

The header is found in $DAEDALUS_PROTO_INCLUDE, else in the checkout
(shared/proto/include), else in an sdist's include/ directory.
"""

from __future__ import annotations

import hashlib
import os
import runpy
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import cffi

MODULE = "daedalus.proto._proto"
HEADER = "daedalus_v4l2_proto.h"
INCLUDE_ENV = "DAEDALUS_PROTO_INCLUDE"
HERE = Path(__file__).resolve().parent  # .../src/daedalus/proto

# A cdef whose declarations disagree with the header in type should not even
# compile; size and offset differences are caught when the extension loads.
EXTRA_COMPILE_ARGS = ["-Werror=incompatible-pointer-types"]

# The extension's own C code, compiled after the header (not wire format).
# daedalus_fnv1a64: FNV-1a 64 (Fowler/Noll/Vo; offset basis 0xcbf29ce484222325,
# prime 0x100000001b3): for each byte, h ^= byte, then h *= prime modulo 2^64.
# It continues from *h*, so a digest over several buffers is the digest of
# their concatenation. The frame digests of struct daedalus_frame_info use it.
C_SOURCE = r"""
#include <stddef.h>
#include <stdint.h>

#define DAEDALUS_FNV1A64_OFFSET_BASIS 0xcbf29ce484222325ULL
#define DAEDALUS_FNV1A64_PRIME 0x100000001b3ULL

static uint64_t daedalus_fnv1a64(uint64_t h, const uint8_t *p, size_t n)
{
    const uint8_t *end = p + n;

    while (p < end) {
        h ^= *p++;
        h *= DAEDALUS_FNV1A64_PRIME;
    }
    return h;
}
"""

# cdef of C_SOURCE and of the build stamps make_ffibuilder() adds (appended to
# cdef.py's declarations). daedalus_fnv1a64: FNV-1a 64 over n bytes at p,
# continuing from h (start with DAEDALUS_FNV1A64_OFFSET_BASIS); called without
# the GIL. The stamps: the SHA-256 of the header compiled in and of the cdef
# and C source (source_sha256()).
OWN_CDEF = """
#define DAEDALUS_FNV1A64_OFFSET_BASIS ...
#define DAEDALUS_FNV1A64_PRIME ...
uint64_t daedalus_fnv1a64(uint64_t h, const uint8_t *p, size_t n);

static const char *const daedalus_py_header_sha256;
static const char *const daedalus_py_source_sha256;
"""


class BuildError(RuntimeError):
    """The extension cannot be built (header missing, compiler missing or failing)."""


def include_candidates() -> list[Path]:
    env = os.environ.get(INCLUDE_ENV)
    if env:
        return [Path(env).resolve()]
    return [
        HERE.parents[3] / "proto" / "include",  # checkout: shared/protocol/src/daedalus/proto
        HERE.parents[2] / "include",  # sdist root: src/daedalus/proto
    ]


def find_include_dir() -> Path | None:
    """The directory holding the protocol header, or None (e.g. an installed wheel)."""
    for candidate in include_candidates():
        if (candidate / HEADER).is_file():
            return candidate
    return None


def include_dir() -> Path:
    found = find_include_dir()
    if found is None:
        tried = ", ".join(str(c) for c in include_candidates())
        raise BuildError(f"{HEADER} not found (tried {tried}; set {INCLUDE_ENV})")
    return found


def header_sha256(include: Path) -> str:
    return hashlib.sha256((include / HEADER).read_bytes()).hexdigest()


def source_sha256(cdef: str) -> str:
    """The stamp of what the extension is compiled from besides the header:
    the cdef, OWN_CDEF and C_SOURCE. An editable install compiled before any
    changed refuses to import (daedalus.proto._check_fresh)."""
    return hashlib.sha256(f"{cdef}\0{OWN_CDEF}\0{C_SOURCE}".encode()).hexdigest()


def load_cdef() -> str:
    """CDEF from cdef.py next to this file, read without importing the package."""
    cdef = runpy.run_path(str(HERE / "cdef.py")).get("CDEF")
    if not isinstance(cdef, str):
        raise BuildError(f"{HERE / 'cdef.py'} does not define CDEF as a string")
    return cdef


def make_ffibuilder(*, cdef: str | None = None, module: str = MODULE,
                    include: Path | None = None) -> cffi.FFI:
    """An FFI builder for *module*: the header compiled against *cdef*."""
    import cffi  # here, not at the top: the package imports this module for include_dir()

    include = include or include_dir()
    cdef = load_cdef() if cdef is None else cdef
    ffibuilder = cffi.FFI()
    ffibuilder.cdef(cdef + OWN_CDEF)
    ffibuilder.set_source(
        module,
        f'#include "{HEADER}"\n'
        f"{C_SOURCE}\n"
        f'static const char *const daedalus_py_header_sha256 = "{header_sha256(include)}";\n'
        f'static const char *const daedalus_py_source_sha256 = "{source_sha256(cdef)}";\n',
        include_dirs=[str(include)],
        extra_compile_args=EXTRA_COMPILE_ARGS,
    )
    return ffibuilder


def compile_extension(dest: Path, *, cdef: str | None = None, module: str = MODULE,
                      include: Path | None = None) -> Path:
    """Compile *module* and move only the shared object into *dest*; return its path.

    The C source and object files stay in a temporary directory; the move is
    an atomic rename onto the final name, so a process that has the old
    extension loaded keeps running and a concurrent build never leaves a
    half-written file.
    """
    include = include or include_dir()
    ffibuilder = make_ffibuilder(cdef=cdef, module=module, include=include)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="daedalus-proto-") as tmp:
        try:
            built = Path(ffibuilder.compile(tmpdir=tmp, verbose=False))
        except Exception as exc:
            raise BuildError(
                f"compiling {module} against {include / HEADER} failed: {exc}\n"
                "If the compiler ran, its errors above say where cdef.py disagrees with "
                "the header; without a C compiler or the Python headers, install them "
                "(Debian: apt-get install build-essential python3-dev).") from exc
        staged = dest / f".{built.name}.{os.getpid()}.tmp"
        shutil.copyfile(built, staged)
        final = dest / built.name
        os.replace(staged, final)
    return final


def build_in_place() -> Path:
    """Compile the extension into this package directory (editable installs)."""
    return compile_extension(HERE)


def main() -> int:
    try:
        built = build_in_place()
    except BuildError as exc:
        print(f"daedalus-protocol: {exc}", file=sys.stderr)
        return 1
    print(f"daedalus-protocol: built {built}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
