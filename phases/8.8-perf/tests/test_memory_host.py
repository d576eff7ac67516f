"""bench-memory's pure parts: meminfo parsing and the figures from samples."""

from __future__ import annotations

import os
from pathlib import Path

from daedalus.m2m.campaign import rss_kib
from daedalus.perf.memory import Report, Sample, read_meminfo

MEMINFO = """MemTotal:        4026152 kB
MemFree:         3000000 kB
MemAvailable:    3716816 kB
Slab:              12536 kB
SReclaimable:       2348 kB
SUnreclaim:        10188 kB
VmallocUsed:        6864 kB
"""


def sample(t: float, decoding: bool, rss: int, slab: int) -> Sample:
    return Sample(t, decoding, rss, {"Slab": slab})


def test_meminfo_fields_are_read_in_kib(tmp_path: Path) -> None:
    path = tmp_path / "meminfo"
    path.write_text(MEMINFO)
    assert read_meminfo(path) == {"MemAvailable": 3716816, "Slab": 12536,
                                  "SUnreclaim": 10188, "VmallocUsed": 6864}


def test_rss_of_this_process_and_of_none() -> None:
    rss = rss_kib(os.getpid())
    assert rss is not None and rss > 0
    assert rss_kib(None) is None


def test_growth_compares_the_quarters_of_the_decoding_samples() -> None:
    samples = [sample(0.0, False, 100, 50)]
    samples += [sample(1.0 + i, True, 100 + 10 * i, 50) for i in range(8)]
    samples += [sample(10.0, False, 200, 49)]
    report = Report("clip", 2000, status=0, samples=samples)
    # first quarter: 100, 110 -> 105; last quarter: 160, 170 -> 165; 60 over 2,000 frames
    assert report.growth("rss") == (105.0, 165.0, 30.0)
    assert report.growth("Slab") == (50.0, 50.0, 0.0)
    assert report.idle_change("rss") == (100, 200)
    assert report.idle_change("Slab") == (50, 49)
    assert report.growth("VmallocUsed") is None
    table = report.table()
    assert "daedalusd RSS" in table and "+30.0" in table


def test_too_few_samples_give_no_figure() -> None:
    report = Report("clip", 30, samples=[sample(0.0, True, 1, 1), sample(1.0, True, 2, 1)])
    assert report.growth("rss") is None
    assert report.idle_change("rss") is None
