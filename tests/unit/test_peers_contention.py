"""``benchmarks/peers.py`` flags its timings as contended from the CPU time other
processes used during the run, not from a load average that counts its own threads."""

from __future__ import annotations

import os
import sys

import pytest
from tiny import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
peers = pytest.importorskip("peers")


def meta(share, load_start=0.1, load_end=2.2, cores=2):
    return {
        "machine": {"cores": cores},
        "load_start": [load_start, 0, 0],
        "load_end": [load_end, 0, 0],
        "others_cpu_share": share,
    }


def test_others_share_subtracts_own_cpu_time():
    start = {"busy": 100.0, "own": 10.0, "wall": 50.0}
    end = {"busy": 120.0, "own": 26.0, "wall": 60.0}  # 20 s busy, 16 s of them ours
    assert peers.others_share(start, end, cores=2) == pytest.approx(4 / 20)
    alone = {"busy": 115.0, "own": 26.0, "wall": 60.0}  # clock ticks round below ours
    assert peers.others_share(start, alone, cores=2) == 0.0
    assert peers.others_share(None, end, cores=2) is None
    assert peers.others_share(end, end, cores=2) is None


def test_busy_uses_the_share_and_falls_back_to_the_load_average():
    # The run's own two threads raise the end load to 2.2: not contention by itself.
    assert not peers.busy(meta(0.05))
    assert peers.busy(meta(peers.CONTENDED_SHARE + 0.01))
    assert peers.busy(meta(None))  # no /proc/stat: load 2.2 > 1 core
    assert not peers.busy(meta(None, load_end=0.5))


def test_cpu_clock_reads_this_machine():
    clock = peers.cpu_clock()
    if clock is None:
        pytest.skip("no /proc/stat here")
    assert clock["busy"] > 0 and clock["own"] > 0
    sum(i * i for i in range(200_000))  # some CPU time of our own
    later = peers.cpu_clock()
    assert later["own"] >= clock["own"] and later["busy"] >= clock["busy"]
    share = peers.others_share(clock, later, cores=os.cpu_count())
    assert share is None or 0.0 <= share <= 1.05  # tick rounding
