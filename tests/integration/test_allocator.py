"""``persec.training.trainer.keep_freed_memory``: glibc keeps a freed 64 MB tensor's pages in
the process (in a fresh interpreter: the setting is process-wide)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from persec.training.trainer import TrainerConfig

PROBE = """
import os, torch
from persec.training.trainer import keep_freed_memory
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
def released_mb():
    x = torch.ones(16 * 2**20)  # 64 MB, written
    before = rss_mb()
    del x
    return before - rss_mb()
default = released_mb()
applied = keep_freed_memory()
print(default, applied, released_mb())
"""


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_freed_tensor_stays_mapped_only_with_keep_freed_memory():
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True
    ).stdout.split()
    assert float(out[0]) > 60  # by default glibc unmaps a freed 64 MB block
    assert out[1] == "True"
    assert float(out[2]) < 4  # kept for the next step's tensors


def test_training_keeps_freed_memory_by_default():
    assert TrainerConfig().keep_freed_memory is True
