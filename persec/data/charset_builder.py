"""Charsets from data: every character the training labels use (``persec data charset``).

Labels are read as written (no charset filter), put in Unicode NFC, and counted; the
charset file lists the characters in code-point order, one per line, a space as the
line ``<space>`` (:meth:`persec.charset.Charset.from_file` reads it back). Characters seen
fewer than ``min_count`` times are left out and reported, so one stray symbol does not
become an output class; a model still meets them as errors under the HTR protocol.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from persec.charset import SPACE_LINE
from persec.data.layouts import open_dataset
from persec.errors import DataError, PersecError


@dataclass
class CharsetCount:
    """The characters of some labels and how often each occurs."""

    counts: Counter[str] = field(default_factory=Counter)
    labels: int = 0

    def chars(self, min_count: int = 1) -> list[str]:
        """The characters seen at least ``min_count`` times, in code-point order."""
        return sorted(c for c, n in self.counts.items() if n >= min_count)


def count_label_chars(paths: Sequence[str | Path]) -> CharsetCount:
    """Count the characters of the labels of every dataset in ``paths`` (any layout
    :func:`~persec.data.layouts.open_dataset` reads; ``DIR:PART`` for one part of a split
    set). Whitespace inside a label counts as one space; at its ends, not at all.

    Raises:
        DataError: a path that is not a labelled dataset.
    """
    out = CharsetCount()
    for path in paths:
        dataset = open_dataset(path, charset=None, max_label_length=None)
        for i in range(len(dataset)):
            label = dataset.label(i)
            if label is None:
                raise DataError(f"{path} holds no labels")
            text = " ".join(unicodedata.normalize("NFC", label).split())
            out.counts.update(text)
            out.labels += 1
    return out


def write_charset_file(chars: Sequence[str], path: str | Path) -> Path:
    """Write ``chars`` one per line (a space as ``<space>``).

    Raises:
        PersecError: no character, or the file cannot be written.
    """
    if not chars:
        raise PersecError("no character to write: the labels are empty or all below --min-count")
    path = Path(path)
    lines = [SPACE_LINE if c == " " else c for c in chars]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    except OSError as e:
        raise PersecError(f"cannot write {path}: {e.strerror}") from e
    return path
