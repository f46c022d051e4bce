"""The CVL Database word images (Kleber et al. 2013): the label is in the file name.

::

    cvl-database-1-1/trainset/words/0001/0001-1-0-0-Imagine.tif
                                         writer-page-line-word-LABEL.ext

A folder most of whose first image files (searched recursively) are named that way is a
CVL set; files that are not are left out and counted. Lines (labelled in the database's XML) are
not read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from persec.charset import Charset, resolve_charset
from persec.data.dataset import SkipReport, dataset_name
from persec.data.folder import IMAGE_EXTENSIONS, _FileDataset
from persec.data.layout_registry import Layout, register_layout
from persec.errors import DataError

NAME = re.compile(r"^(\d+)-(\d+)-(\d+)-(\d+)-(.+)$")
NOT_CVL_NAME = "file name not writer-page-line-word-label"
_SAMPLE = 20  # image files looked at to recognise the layout


def _image_files(root: Path):
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if Path(f).suffix.lower() in IMAGE_EXTENSIONS and not f.startswith("."):
                yield Path(folder) / f


def is_cvl(root: Path) -> bool:
    """Whether most (at least half) of the first image files under ``root`` are named
    the CVL way (a stray file does not hide the layout; it is skipped and counted)."""
    sample = []
    for path in _image_files(root):
        sample.append(path)
        if len(sample) == _SAMPLE:
            break
    return bool(sample) and 2 * sum(bool(NAME.match(p.stem)) for p in sample) >= len(sample)


class CvlDataset(_FileDataset):
    """CVL word images, labels from their file names (arguments as :class:`IamDataset`;
    ``only``: writer ids to keep, e.g. a writer-independent split).

    Raises:
        DataError: no CVL-named image under ``root``.
    """

    def __init__(
        self,
        root: str | Path,
        charset: Charset | str | None = None,
        max_label_length: int | None = None,
        remove_unsupported: bool = False,
        unlabelled: bool = False,
        transform: Callable[[Any], Any] | None = None,
        name: str | None = None,
        only: Collection[str] | None = None,
    ):
        self.root = Path(root)
        self.charset = resolve_charset(charset)
        self.transform = transform
        self.name = name or dataset_name(self.root)
        self.report = SkipReport(self.name)
        writers = set(only) if only is not None else None
        items = []
        for path in _image_files(self.root):
            match = NAME.match(path.stem)
            if match is None:
                self.report.skip(NOT_CVL_NAME, str(path))
                continue
            if writers is None or match.group(1) in writers:
                items.append((path, match.group(5)))
        if not items and not self.report.skipped:
            raise DataError(
                f"no CVL word image (writer-page-line-word-label.ext) under {self.root}"
            )
        self._take(items, max_label_length, remove_unsupported, unlabelled)


def _open_cvl(path, charset=None, unlabelled=False, transform=None, **kwargs) -> CvlDataset:
    kwargs.setdefault("max_label_length", None)
    return CvlDataset(path, charset=charset, unlabelled=unlabelled, transform=transform, **kwargs)


register_layout(
    Layout(
        "cvl",
        "a CVL word folder (images named writer-page-line-word-label.ext)",
        holds=is_cvl,
        is_root=is_cvl,
        open=_open_cvl,
        order=3,
        parts="writer ids",
    )
)
