"""``kept_metrics``: a resumed run's metrics.csv keeps the rows before the resume, and
only the process that stashed them merges them back (under DDP every rank sees the
stash; two merges into one file raced)."""

from __future__ import annotations

import csv
from pathlib import Path

from persec.training.trainer import kept_metrics


def _write(path: Path, steps: list[int]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["step", "loss"])
        writer.writeheader()
        writer.writerows({"step": s, "loss": s / 10} for s in steps)


def _steps(path: Path) -> list[int]:
    with open(path, newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def test_resume_merges_rows_before_the_first_new_step(tmp_path):
    _write(tmp_path / "metrics.csv", [1, 2, 3, 4])  # killed after its checkpoint at 2
    with kept_metrics(tmp_path, resume=True):
        assert (tmp_path / "metrics-before-resume.csv").is_file()
        _write(tmp_path / "metrics.csv", [3, 4, 5])  # the resumed run logs again from 3
    assert _steps(tmp_path / "metrics.csv") == [1, 2, 3, 4, 5]
    assert not (tmp_path / "metrics-before-resume.csv").exists()


def test_a_rank_that_did_not_stash_leaves_the_stash_to_rank_zero(tmp_path):
    _write(tmp_path / "metrics-before-resume.csv", [1, 2])  # rank 0's stash
    with kept_metrics(tmp_path, resume=True, owner=False):  # rank 1
        pass
    assert _steps(tmp_path / "metrics-before-resume.csv") == [1, 2]
    assert not (tmp_path / "metrics.csv").exists()
    assert not list(tmp_path.glob(".metrics.csv.tmp*"))


def test_a_fresh_run_drops_a_stash_left_by_a_killed_resume(tmp_path):
    _write(tmp_path / "metrics-before-resume.csv", [1, 2])
    with kept_metrics(tmp_path, resume=False):
        _write(tmp_path / "metrics.csv", [1])
    assert not (tmp_path / "metrics-before-resume.csv").exists()
    assert _steps(tmp_path / "metrics.csv") == [1]
