"""Entry points of the installed distributions, read without importlib.metadata.

``importlib.metadata`` imports email, zipfile, csv and more before it reads a
single file: about 80 ms on the host, but 2.5-4 s in a TCG guest reading the
host's files over 9p, a sixth of daedalusd's start there. The daemon needs
only the ``entry_points.txt`` of each ``*.dist-info`` directory on
``sys.path``, which this module reads with nothing but ``os`` and ``re``.

Same answers as ``importlib.metadata.entry_points(group=...)`` for
directory installs (what pip, uv and hatch make, editable ones included): a
distribution found in several ``sys.path`` entries counts once, from the
first; names and values are taken as written. Eggs, zip files and
``.egg-info`` metadata are not read (a host test compares both readers on
the installed environment).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# importlib.metadata.EntryPoint.pattern
_VALUE = re.compile(r"(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+)\s*)?((?P<extras>\[.*\])\s*)?$")


@dataclass(frozen=True)
class Distribution:
    name: str  # as its METADATA writes it


@dataclass(frozen=True)
class EntryPoint:
    """What daedalus needs of importlib.metadata.EntryPoint."""

    name: str
    value: str
    group: str
    dist: Distribution | None

    def load(self) -> Any:
        """Import the module and walk to the attribute, as importlib.metadata does."""
        match = _VALUE.match(self.value)
        if match is None:
            raise ValueError(f"entry point {self.name!r}: malformed value {self.value!r}")
        obj: Any = importlib.import_module(match["module"])
        for attr in (match["attr"] or "").split("."):
            if attr:
                obj = getattr(obj, attr)
        return obj


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _dist_name(info: str, fallback: str) -> str:
    try:
        with open(os.path.join(info, "METADATA"), encoding="utf-8") as f:
            for line in f:
                if line.startswith("Name:"):
                    return line[5:].strip()
                if not line.strip():
                    break
    except OSError:
        pass
    return fallback


def _parse(text: str) -> Iterable[tuple[str, str, str]]:
    """(group, name, value) of an entry_points.txt (an INI file)."""
    group = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            group = line[1:-1].strip()
            continue
        name, sep, value = line.partition("=")
        if sep and group:
            yield group, name.strip(), value.strip()


def entry_points(group: str, path: Iterable[str] | None = None) -> list[EntryPoint]:
    """The entry points of *group* of every distribution on *path* (sys.path)."""
    seen: set[str] = set()
    found: list[EntryPoint] = []
    for entry in sys.path if path is None else path:
        try:
            names = sorted(os.listdir(entry or "."))
        except OSError:
            continue
        for name in names:
            if not name.endswith(".dist-info"):
                continue
            base = name.removesuffix(".dist-info").partition("-")[0]
            key = _normalized(base)
            if key in seen:
                continue
            seen.add(key)
            info = os.path.join(entry or ".", name)
            try:
                with open(os.path.join(info, "entry_points.txt"), encoding="utf-8") as f:
                    text = f.read()
            except OSError:
                continue
            dist: Distribution | None = None
            for ep_group, ep_name, value in _parse(text):
                if ep_group == group:
                    dist = dist or Distribution(_dist_name(info, base))
                    found.append(EntryPoint(ep_name, value, group, dist))
    return found
