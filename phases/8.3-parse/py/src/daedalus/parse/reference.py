"""The independent reference: Debian's ``ffprobe`` (FFmpeg 5.1, a different build
from PyAV's bundled FFmpeg), for tests here and in later phases."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

FFPROBE = os.environ.get("DAEDALUS_FFPROBE", "/usr/bin/ffprobe")


def have_ffprobe() -> bool:
    return Path(FFPROBE).is_file()


def ffprobe(path: str | os.PathLike[str], *args: str, timeout: float = 120) -> dict[str, Any]:
    """``ffprobe -of json ARGS PATH``, parsed."""
    out = subprocess.run([FFPROBE, "-v", "error", "-of", "json", *args, os.fspath(path)],
                         capture_output=True, text=True, check=True, timeout=timeout)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def probe_frames(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """key_frame, pict_type, width, height of every decoded frame, in output order."""
    frames = ffprobe(path, "-show_frames", "-show_entries",
                     "frame=key_frame,pict_type,width,height")["frames"]
    return [{k: f[k] for k in ("key_frame", "pict_type", "width", "height")} for f in frames]


def probe_packets(path: str | os.PathLike[str]) -> list[tuple[int, int]]:
    """(byte position, size) of every packet the demuxer reads."""
    packets = ffprobe(path, "-show_packets", "-show_entries", "packet=size,pos")["packets"]
    return [(int(p["pos"]), int(p["size"])) for p in packets]
