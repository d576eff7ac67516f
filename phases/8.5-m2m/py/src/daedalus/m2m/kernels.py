"""The daemon's per-frame kernels and the table that picks their implementations.

A per-frame kernel is a step daedalusd runs on every decoded frame. Phase 8.5
defines them with a plain reference implementation each; a later phase's
distribution adds faster ones through the ``daedalus.kernels`` entry-point
group (phase 8.8: ``daedalus.perf.kernels``), each an ``Implementation``. The
first use of a kernel picks, for every kernel, the registered implementation
with the highest ``rank`` (the reference's is 0), unless the environment says
otherwise:

- ``DAEDALUS_DISPATCH=reference``: every kernel's reference;
- ``DAEDALUS_DISPATCH=place=direct,...``: the named implementation of each
  named kernel (the others as by default); an unknown kernel or
  implementation is an error naming what there is.

A fast implementation must give the reference's output byte for byte on
every input it accepts; one that does not handle an input returns
``NotImplemented`` and the reference runs instead (phase 8.8's tests prove
both on random frames and on every corpus frame).

Kernels:

- ``place(frame, pixfmt, bytesperline, height, out, zeroed)``: the decoded
  picture *frame* (PyAV's, as FFmpeg returned it) laid out as *pixfmt*
  (NV12, P010, NV16 or NV24) in the CAPTURE layout of
  ``daedalus.m2m.layout`` into *out* (``buffer_size(bytesperline, height,
  pixfmt)`` bytes): rows padded with zeros, rows past the picture zero;
  with *zeroed* (*out* is zero already) only the picture is written. The
  caller checked ``fits``. The reference is the tightly packed planes
  (``daedalus.m2m.layout.pack``: phase 8.4's ``frames.pack`` for NV12 and
  P010) then ``lay_out``: two copies of every byte.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from daedalus.dispatch.entrypoints import entry_points
from daedalus.m2m.layout import lay_out, pack
from daedalus.proto import PixFmt

log = logging.getLogger("daedalus.m2m")

GROUP = "daedalus.kernels"
ENV = "DAEDALUS_DISPATCH"
REFERENCE = "reference"

Place = Callable[[av.VideoFrame, PixFmt, int, int, npt.NDArray[np.uint8], bool], Any]


class DispatchError(ValueError):
    """DAEDALUS_DISPATCH names a kernel or an implementation that does not exist."""


@dataclass(frozen=True)
class Implementation:
    """One implementation of kernel *kernel*, called *name*; the table prefers
    a higher *rank*. *function* has the kernel's signature."""

    kernel: str
    name: str
    function: Callable[..., Any]
    rank: int = 1
    about: str = ""


def place_reference(frame: av.VideoFrame, pixfmt: PixFmt, bytesperline: int, height: int,
                    out: npt.NDArray[np.uint8], zeroed: bool) -> None:
    """``place``'s reference: pack tightly (phase 8.4's rules), then lay out."""
    luma, chroma = pack(frame, pixfmt)
    lay_out(luma, chroma, bytesperline, height, out=out, zeroed=zeroed, pixfmt=pixfmt)


REFERENCES = {
    "place": Implementation("place", REFERENCE, place_reference, rank=0,
                            about="pack tightly (8.4's frames.pack), then lay_out: two copies"),
}


class Table:
    """The implementations chosen for this process, kernel -> Implementation."""

    def __init__(self, chosen: dict[str, Implementation]) -> None:
        self.chosen = chosen
        place = chosen["place"]
        self._place = place.function if place.name != REFERENCE else None

    def place(self, frame: av.VideoFrame, pixfmt: PixFmt, bytesperline: int, height: int,
              out: npt.NDArray[np.uint8], zeroed: bool) -> None:
        if self._place is not None and self._place(frame, pixfmt, bytesperline, height, out,
                                                   zeroed) is not NotImplemented:
            return
        place_reference(frame, pixfmt, bytesperline, height, out, zeroed)

    def describe(self) -> str:
        return ", ".join(f"{kernel}={impl.name}" for kernel, impl in sorted(self.chosen.items()))


def registered() -> dict[str, list[Implementation]]:
    """Every implementation of every kernel: the references, then the
    ``daedalus.kernels`` entry points (one that does not load is logged and
    left out)."""
    found: dict[str, list[Implementation]] = {k: [ref] for k, ref in REFERENCES.items()}
    for entry in entry_points(GROUP):
        try:
            impl = entry.load()
            if not isinstance(impl, Implementation) or impl.kernel not in found:
                raise TypeError(f"not an Implementation of one of {sorted(found)}: {impl!r}")
        except Exception as exc:  # a broken plugin must not stop the daemon
            log.error("per-frame kernel %s (%s) not loaded: %r", entry.name, entry.value, exc)
            continue
        found[impl.kernel].append(impl)
    return found


def choose(found: dict[str, list[Implementation]], setting: str | None) -> Table:
    """The table for DAEDALUS_DISPATCH *setting* (None or empty: the default)."""
    chosen = {kernel: max(impls, key=lambda i: i.rank) for kernel, impls in found.items()}
    setting = (setting or "").strip()
    if setting == REFERENCE:
        return Table({kernel: REFERENCES[kernel] for kernel in found})
    for part in filter(None, (p.strip() for p in setting.split(","))):
        kernel, sep, name = part.partition("=")
        if not sep or kernel not in found:
            raise DispatchError(f"{ENV}: {part!r} is not KERNEL=IMPLEMENTATION with a kernel "
                                f"of {sorted(found)} (or the word {REFERENCE!r})")
        impls = {i.name: i for i in found[kernel]}
        if name not in impls:
            raise DispatchError(f"{ENV}: kernel {kernel!r} has no implementation {name!r} "
                                f"(it has {sorted(impls)})")
        chosen[kernel] = impls[name]
    return Table(chosen)


_lock = threading.Lock()  # protects _table
_table: Table | None = None


def table() -> Table:
    """This process's table, chosen at the first call (from the environment)."""
    global _table
    chosen = _table  # every frame asks: no lock once chosen
    if chosen is not None:
        return chosen
    with _lock:
        if _table is None:
            _table = choose(registered(), os.environ.get(ENV))
            log.info("per-frame kernels: %s", _table.describe())
        return _table


def use(new: Table | None) -> None:
    """Replace this process's table (tests, the bench); None: choose again at next use."""
    global _table
    with _lock:
        _table = new
