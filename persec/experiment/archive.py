"""A grid's finished cells kept where the project keeps its results (``archive_dir``).

A CPU grid runs over many sittings, and a sitting may start on a fresh machine whose
``output_dir`` (under ``runs/``, never committed) is empty. Every finished cell's small
files (``done.json``, ``config.yaml``, ``metrics.csv``: no weights, no checkpoints)
are copied to ``archive_dir/<its path under output_dir>``, which can be committed.

On the next run a fine-tune or probe cell found in the archive is restored (its files
copied back) and counts as done. A pretraining cannot be restored (its weights are not
kept), so it runs again only while some cell that starts from it (directly or from one
of its snapshots) is still to run. Each ``done.json`` names the machine and precision
it ran on (``machine``), since a pretraining run again on another CPU gives another
encoder under the same config hash; the reports carry that column.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from persec.experiment.grid import DONE, Cell

KEPT = (DONE, "config.yaml", "metrics.csv")
RESTORABLE = ("finetune", "probe")


def _archived(cell: Cell, output_dir: Path, archive_dir: Path) -> Path:
    return archive_dir / cell.directory.relative_to(output_dir)


def _copy_kept(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in KEPT:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)


def archive_cell(cell: Cell, output_dir: str | Path, archive_dir: str | Path) -> Path:
    """Copy a finished cell's small files to the archive; returns the archived folder."""
    target = _archived(cell, Path(output_dir), Path(archive_dir))
    _copy_kept(cell.directory, target)
    return target


def is_archived(cell: Cell, output_dir: str | Path, archive_dir: str | Path) -> bool:
    """Whether a fine-tune or probe cell can be restored from the archive."""
    source = _archived(cell, Path(output_dir), Path(archive_dir))
    return cell.kind in RESTORABLE and (source / DONE).is_file()


def restore_cells(cells: list[Cell], output_dir: str | Path, archive_dir: str | Path) -> list[Cell]:
    """Copy archived fine-tune and probe cells that are not done here back into
    ``output_dir``; returns the cells restored."""
    restored = []
    for cell in cells:
        if cell.done or not is_archived(cell, output_dir, archive_dir):
            continue
        _copy_kept(_archived(cell, Path(output_dir), Path(archive_dir)), cell.directory)
        restored.append(cell)
    return restored


def feeds(pretraining: Cell, cell: Cell) -> bool:
    """Whether ``cell`` starts from ``pretraining``'s encoder or one of its snapshots."""
    source = cell.pretrain
    if source is None:
        return False
    return source is pretraining or (source.kind == "snapshot" and source.pretrain is pretraining)


def still_needed(pretraining: Cell, cells: list[Cell]) -> bool:
    """Whether a pretraining must run: some cell that starts from it is unfinished (or
    none starts from it: then it is the grid's only product)."""
    fed = [c for c in cells if feeds(pretraining, c)]
    return not fed or any(not c.done for c in fed)
