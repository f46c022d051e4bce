"""Pieces every dataset reader shares: skip accounting, label filtering, naming and
collate (:func:`persec.data.layouts.open_dataset` picks the reader for a path).

Skips are never silent and never fatal. A sample that cannot be used is counted by
reason: label problems and missing keys/files at init (in ``dataset.report``, which
whoever opened the dataset reports once: the training data modules log it, ``eval``,
``data stats`` and ``shard`` print it with their results), undecodable images when read (``__getitem__`` returns a
:class:`Skipped` and :func:`collate_samples` counts it).
"""

from __future__ import annotations

import logging
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from persec.charset import CONTROL_CHARS, EMPTY, TOO_LONG, Charset
from persec.image import pad_to_width

logger = logging.getLogger("persec.data")

# Skip reasons beyond the label ones defined in persec.charset.
MISSING_KEY = "missing key"
MISSING_FILE = "missing file"
UNDECODABLE = "undecodable image"
LABEL_NOT_UTF8 = "label not UTF-8"

GT_FILE = "gt.txt"


@dataclass(frozen=True)
class Skipped:
    """Returned by ``__getitem__`` instead of a sample that cannot be used.

    Attributes:
        reason: one of the skip-reason constants, e.g. ``"undecodable image"``.
        source: where the sample lives (file path, or ``lmdb_dir:image-000000017``).
    """

    reason: str
    source: str


class SkipReport:
    """Counts of kept and skipped samples for one dataset, by skip reason.

    Args:
        name: the dataset's display name.
        max_examples: how many sources to remember per reason (to help find them).
    """

    def __init__(self, name: str = "", max_examples: int = 3):
        self.name = name
        self.kept = 0
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}
        self.max_examples = max_examples

    def keep(self, n: int = 1) -> None:
        """Count ``n`` usable samples."""
        self.kept += n

    def skip(self, reason: str, source: str | None = None) -> None:
        """Count one skipped sample (and remember where it is, for the first few)."""
        self.counts[reason] += 1
        if source is not None:
            examples = self.examples.setdefault(reason, [])
            if len(examples) < self.max_examples:
                examples.append(source)

    def skip_kept(self, reason: str, source: str | None = None) -> None:
        """Move one sample counted as kept to skipped (e.g. found undecodable later)."""
        self.kept -= 1
        self.skip(reason, source)

    @property
    def skipped(self) -> int:
        """Number of skipped samples, all reasons."""
        return sum(self.counts.values())

    @property
    def total(self) -> int:
        """Number of samples examined (kept + skipped)."""
        return self.kept + self.skipped

    def __getitem__(self, reason: str) -> int:
        return self.counts[reason]

    def merge(self, other: SkipReport | Counter[str]) -> SkipReport:
        """Add another report (or a reason counter from :func:`collate_samples`) in place.

        Returns:
            ``self``, so merges chain.
        """
        if isinstance(other, SkipReport):
            self.kept += other.kept
            for reason, sources in other.examples.items():
                for source in sources:
                    mine = self.examples.setdefault(reason, [])
                    if len(mine) < self.max_examples:
                        mine.append(source)
            other = other.counts
        self.counts.update(other)
        return self

    def summary(self) -> str:
        """One line, e.g. ``IIIT5K: 2000 samples, 1990 kept, 10 skipped (empty label: 10)``."""
        head = f"{self.name}: " if self.name else ""
        line = f"{head}{self.total} samples, {self.kept} kept, {self.skipped} skipped"
        if self.counts:
            parts = ", ".join(f"{r}: {n}" for r, n in sorted(self.counts.items()))
            line += f" ({parts})"
        return line

    def log(self) -> None:
        """Log the summary once: a warning when anything was skipped, else info."""
        level = logging.WARNING if self.skipped else logging.INFO
        logger.log(level, "%s", self.summary())

    def __repr__(self) -> str:
        return f"SkipReport({self.summary()!r})"


def filter_label(
    raw: str,
    charset: Charset | None,
    max_length: int | None = 25,
    remove_unsupported: bool = False,
) -> tuple[str | None, str | None]:
    """Normalise and validate one label, the same way for every dataset.

    With a charset, this is :meth:`Charset.check` (or, with ``remove_unsupported``,
    :meth:`Charset.strip_unsupported` followed by the empty / too-long checks).
    Without one, the label is kept as written, rejected only when it is blank, holds
    control characters or is longer than ``max_length``.

    Returns:
        ``(label, None)`` when usable, else ``(None, reason)``.
    """
    if charset is None:
        if any(unicodedata.category(c) in ("Cc", "Cf") and not c.isspace() for c in raw):
            return None, CONTROL_CHARS
        if not raw.strip():
            return None, EMPTY
        if max_length is not None and len(raw) > max_length:
            return None, TOO_LONG
        return raw, None
    if remove_unsupported:
        # Only charset characters are left, so check() can fail only on empty/too long.
        return charset.check(charset.strip_unsupported(raw), max_length)
    return charset.check(raw, max_length)


def collate_samples(
    batch: Sequence[tuple[Any, str | None] | Skipped],
) -> tuple[torch.Tensor | list, list[str | None], Counter[str]]:
    """DataLoader ``collate_fn`` that drops :class:`Skipped` items and counts them.

    Contract: the skip counter travels inside the batch because worker processes
    cannot update a report in the main process; the training loop adds each batch's
    counter into its own (``report.merge(counter)``) and logs the total. A batch may
    come back smaller than requested, or empty (then ``images == []`` and
    ``labels == []``): skip such a batch.

    Returns:
        images: ``(B, C, H, W)`` tensor when every image is a tensor of one channel
            count and height (narrower ones padded on the right to the widest, see
            :func:`persec.image.pad_to_width`: text lines), else a list (PIL images, or
            tensors of varying heights);
        labels: ``B`` strings (``None`` for unlabelled data);
        skipped: counts of dropped items by reason.
    """
    skipped: Counter[str] = Counter()
    images: list[Any] = []
    labels: list[str | None] = []
    for item in batch:
        if isinstance(item, Skipped):
            skipped[item.reason] += 1
            continue
        image, label = item
        images.append(image)
        labels.append(label)
    if images and all(isinstance(x, torch.Tensor) for x in images):
        shape = images[0].shape[:-1]
        if all(x.dim() == 3 and x.shape[:-1] == shape for x in images):
            return pad_to_width(images), labels, skipped  # (B, C, H, W)
    return images, labels, skipped


def dataset_name(path: str | Path) -> str:
    """Display name of a dataset: its folder's name (``IIIT5k``, ``SVT``, ...)."""
    return Path(path).resolve().name or str(path)
