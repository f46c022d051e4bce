"""The dataset layouts: which reader a path needs, and which datasets a path names.

A dataset on disk is a folder with ``gt.txt`` (:mod:`persec.data.folder`), a directory
tree of clovaai/parseq LMDBs (:mod:`persec.data.lmdb`), or, unlabelled, a plain image
folder; :func:`open_dataset` picks the reader and reads ``DIR:PART`` as one part of a
split set (:mod:`persec.data.splits`).

Dataset arguments (:func:`find_datasets`): a folder that is itself a dataset (``gt.txt``
or ``data.mdb`` directly inside) is one dataset; any other folder stands for its
immediate children that are datasets (a child with an LMDB anywhere under it is one
dataset), so ``data/test`` expands to ``IIIT5k``, ``SVT``, ``IC13_857``, ... named by
folder; ``DIR:PART`` is one part of a split ``gt.txt`` set, named ``SET:PART``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from persec.charset import Charset
from persec.data.layout_registry import LAYOUTS, Layout
from persec.data.splits import parse_part, part_list, part_name, read_list
from persec.errors import DataError

# The readers, each registering its layout (a new layout: its module, one line here).
import persec.data.folder  # noqa: E402, F401  isort: skip
import persec.data.lmdb  # noqa: E402, F401  isort: skip
import persec.data.iam  # noqa: E402, F401  isort: skip
import persec.data.cvl  # noqa: E402, F401  isort: skip


def _in_detection_order() -> list[Layout]:
    return sorted(LAYOUTS.values(), key=lambda x: x.order)


def _layouts_help() -> str:
    labelled = [x.description for x in _in_detection_order() if x.labelled]
    unlabelled = [x.description for x in _in_detection_order() if not x.labelled]
    text = "accepted layouts: " + ", ".join(labelled)
    return text + (
        f", or, for unlabelled data only, {' or '.join(unlabelled)}" if unlabelled else ""
    )


LAYOUTS_HELP = _layouts_help()


def detect_layout(path: str | Path) -> str:
    """Which reader fits ``path``: the first layout, by ``order``, that holds it
    (``folder``: has gt.txt; ``lmdb``: a data.mdb under it; ``images``: any other
    folder).

    Raises:
        DataError: ``path`` does not exist or is not a directory.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"dataset path {path} does not exist")
    if not path.is_dir():
        raise DataError(f"dataset path {path} is not a directory; {LAYOUTS_HELP}")
    return next(x.name for x in _in_detection_order() if x.holds(path))


def open_dataset(
    path: str | Path,
    charset: Charset | str | None = None,
    unlabelled: bool = False,
    transform: Callable | None = None,
    **kwargs: Any,
):
    """Open a dataset by looking at what is on disk.

    * a directory with ``gt.txt`` → :class:`~persec.data.folder.FolderDataset`
      (``unlabelled``: the gt list still selects the images, labels are ignored);
    * a directory with ``data.mdb`` anywhere under it → one
      :class:`~persec.data.lmdb.LmdbDataset` over all LMDBs found;
    * otherwise, for unlabelled data only, a folder of images
      (:class:`~persec.data.folder.ImageFolderDataset`);
    * ``DIR:PART`` → the images of one part of a split of the ``gt.txt`` folder
      ``DIR`` (:func:`~persec.data.splits.part_list`), e.g. ``IC15_train:report``.

    Args:
        path: the dataset directory, or ``DIR:PART``.
        charset: label filter (preset name, file path or Charset); ignored when unlabelled.
        unlabelled: items get label ``None`` and labels are not checked.
        transform: applied to each RGB PIL image.
        **kwargs: ``max_label_length``, ``remove_unsupported`` for labelled readers.

    Raises:
        DataError: missing path, or a layout that does not fit (the message lists
            the accepted ones).
    """
    folder, part = parse_part(path)
    if part is not None:
        _check_parts(path, folder)
        kwargs.setdefault("name", part_name(path))
        kwargs["only"] = read_list(part_list(folder, part))
        path = folder
    layout = LAYOUTS[detect_layout(path)]
    if not layout.labelled and not unlabelled:
        raise DataError(f"{path} holds no labelled dataset; {LAYOUTS_HELP}")
    return layout.open(path, charset=charset, unlabelled=unlabelled, transform=transform, **kwargs)


def _check_parts(spec, folder: Path) -> None:
    """Raise :class:`DataError` unless ``folder`` is a dataset whose layout has parts."""
    if not folder.is_dir():
        raise DataError(f"{spec}: {folder} is not a dataset folder")
    layout = LAYOUTS[detect_layout(folder)]
    if not layout.parts:
        with_parts = ", ".join(x.name for x in _in_detection_order() if x.parts)
        raise DataError(
            f"{spec}: a {layout.name} dataset has no parts (DIR:PART reads the layouts "
            f"{with_parts}, whose split lists name their samples)"
        )


# ---------------------------------------------------------------- evaluation
def is_dataset(path: Path) -> bool:
    """Whether ``path`` itself is one labelled dataset (``gt.txt`` or ``data.mdb``
    directly inside)."""
    return any(x.is_root(path) for x in LAYOUTS.values() if x.labelled)


def find_datasets(paths: Sequence[str | Path]) -> list[Path]:
    """Expand dataset arguments into dataset folders (rule in the module docstring).

    Children are taken in sorted name order; hidden ones and children that are not
    datasets (e.g. a ``README`` or a plain image folder) are left out.

    Raises:
        DataError: a path that does not exist, is not a directory, or is neither a
            dataset nor a folder of datasets; a dataset reached twice.
    """
    found: list[Path] = []
    seen: dict[str, Path] = {}
    for path in map(Path, paths):
        folder, part = parse_part(path)
        if part is not None:  # one part of a split set: DIR:PART
            _check_parts(path, folder)
            part_list(folder, part)  # a mistyped part fails before any set is scored
            found.append(path)
            continue
        if not path.exists():
            raise DataError(f"dataset path {path} does not exist")
        if not path.is_dir():
            raise DataError(f"dataset path {path} is not a directory; {LAYOUTS_HELP}")
        if is_dataset(path):
            found.append(path)
            continue
        children = sorted(
            child
            for child in path.iterdir()
            if child.is_dir()
            and not child.name.startswith(".")
            and any(x.holds(child) for x in LAYOUTS.values() if x.labelled)
        )
        if not children:
            raise DataError(f"{path} is neither a dataset nor a folder of datasets; {LAYOUTS_HELP}")
        found.extend(children)
    for path in found:
        # The same data twice would silently double its weight in the combined row.
        first = seen.setdefault(os.path.realpath(path), path)
        if first is not path:
            raise DataError(f"dataset {path} given twice (also as {first})")
    return found
