"""Image-folder datasets: a labelled folder with ``gt.txt``, a plain folder of images,
and the ``gt.txt`` folder → LMDB converter.

Labelled layout::

    IIIT5K_train/
      gt.txt          # images/1009_2.png<TAB>You   (paths relative to gt.txt's folder)
      images/1009_2.png
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset
from tqdm import tqdm

from persec.charset import Charset, resolve_charset
from persec.data.dataset import (
    GT_FILE,
    MISSING_FILE,
    UNDECODABLE,
    Skipped,
    SkipReport,
    dataset_name,
    filter_label,
)
from persec.data.gtfile import read_gt_file
from persec.data.layout_registry import Layout, register_layout
from persec.data.lmdb import write_lmdb
from persec.errors import DataError
from persec.image import ImageDecodeError, decode_image

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif"})


class _FileDataset(Dataset):
    """Shared reading for datasets whose samples are image files."""

    name: str
    transform: Callable[[Any], Any] | None
    _paths: list[Path]
    _labels: list[str] | None

    def __len__(self) -> int:
        return len(self._paths)

    def label(self, index: int) -> str | None:
        """The (normalised) label of a sample without reading its image."""
        return None if self._labels is None else self._labels[index]

    def source(self, index: int) -> str:
        """The image file of a sample."""
        return str(self._paths[index])

    def read_bytes(self, index: int) -> bytes | None:
        """The encoded image bytes as stored (``None`` if the file is gone or unreadable)."""
        try:
            return self._paths[index].read_bytes()
        except OSError:
            return None

    def __getitem__(self, index: int) -> tuple[Any, str | None] | Skipped:
        """``(transform(image) or PIL image, label)``, or :class:`Skipped` for a bad image."""
        data = self.read_bytes(index)
        if data is None:
            return Skipped(MISSING_FILE, self.source(index))
        try:
            image = decode_image(data)
        except ImageDecodeError:
            return Skipped(UNDECODABLE, self.source(index))
        if self.transform is not None:
            image = self.transform(image)
        return image, self.label(index)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {len(self)} samples)"

    def _take(
        self,
        items: Iterable[tuple[Path, str]],
        max_label_length: int | None,
        remove_unsupported: bool,
        unlabelled: bool,
    ) -> list[str]:
        """Keep the ``(image path, raw label)`` items whose file exists and whose label
        passes :func:`filter_label` under ``self.charset`` (the others are counted in
        ``self.report``); returns the kept raw labels. Sets ``_paths`` and ``_labels``."""
        self._paths, labels, raws = [], [], []
        for path, raw in items:
            if not path.is_file():
                self.report.skip(MISSING_FILE, str(path))
                continue
            if not unlabelled:
                label, reason = filter_label(
                    raw, self.charset, max_label_length, remove_unsupported
                )
                if label is None:
                    self.report.skip(reason or "invalid label", str(path))
                    continue
                labels.append(label)
            self._paths.append(path)
            raws.append(raw)
        self._labels = None if unlabelled else labels
        self.report.keep(len(self._paths))
        return raws


class FolderDataset(_FileDataset):
    """A folder of images listed in a ground-truth file.

    Each ``gt.txt`` line is ``relative/path.png<TAB>label`` (paths relative to the
    gt file's folder). Listed files that do not exist and labels that fail the
    filter are skipped and counted in ``self.report``. When both apply,
    the missing file is the reason counted.

    Args:
        root: the dataset folder.
        gt_file: the ground-truth file, relative to ``root`` (or absolute).
        charset: label filter (preset name, charset file, Charset, or ``None`` for
            labels as written; see :func:`~persec.data.dataset.filter_label`).
        max_label_length: longer labels are skipped (``None``: no limit).
        remove_unsupported: drop characters outside the charset instead of skipping.
        unlabelled: use the gt list only to select images; labels are ``None``.
        transform: applied to the RGB PIL image.
        name: display name; defaults to the folder name of ``root``.
        only: read just these images (paths as written in the gt file, e.g. one part
            of a split, see :mod:`persec.data.splits`); the others are left out, not
            counted as skipped.

    Raises:
        DataError: missing folder or gt file, a malformed gt line (``file:line``), or
            an ``only`` path the gt file does not list.
    """

    def __init__(
        self,
        root: str | Path,
        gt_file: str | Path = GT_FILE,
        charset: Charset | str | None = None,
        max_label_length: int | None = 25,
        remove_unsupported: bool = False,
        unlabelled: bool = False,
        transform: Callable[[Any], Any] | None = None,
        name: str | None = None,
        only: Collection[str] | None = None,
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"dataset folder {self.root} does not exist")
        self.gt_path = self.root / gt_file
        if not self.gt_path.is_file():
            raise DataError(f"{self.root} has no ground-truth file {gt_file}")
        self.charset = resolve_charset(charset)
        self.max_label_length = max_label_length
        self.unlabelled = unlabelled
        self.transform = transform
        self.name = name or dataset_name(self.root)
        self.report = SkipReport(self.name)
        base = self.gt_path.parent
        entries = read_gt_file(self.gt_path)
        if only is not None:
            wanted = set(only)
            entries = [(rel, raw) for rel, raw in entries if rel in wanted]
            extra = sorted(wanted - {rel for rel, _ in entries})
            if extra:
                raise DataError(
                    f"{len(extra)} images of the part asked for are not in {self.gt_path} "
                    f"(first: {extra[0]}); was the list made for this set?"
                )
        #: labels as written in gt.txt, parallel to the kept samples (for the converter)
        self.raw_labels = self._take(
            ((base / rel, raw) for rel, raw in entries),
            max_label_length,
            remove_unsupported,
            unlabelled,
        )


class ImageFolderDataset(_FileDataset):
    """Every image file under a folder (recursive), unlabelled, in sorted path order.

    Files are picked by extension (png, jpg, jpeg, bmp, webp, tif, tiff, gif; any
    case). Hidden files and folders (``.name``, e.g. macOS ``._x.png`` resource
    forks) are left out. Items are ``(image, None)``.

    Raises:
        DataError: the folder does not exist or holds no image file.
    """

    def __init__(
        self,
        root: str | Path,
        transform: Callable[[Any], Any] | None = None,
        name: str | None = None,
        only: Collection[str] | None = None,
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"image folder {self.root} does not exist")
        self.transform = transform
        self.name = name or dataset_name(self.root)
        self._paths = sorted(_image_files(self.root), key=lambda p: p.relative_to(self.root).parts)
        self._labels = None
        if not self._paths:
            raise DataError(
                f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) under {self.root}"
            )
        self.report = SkipReport(self.name)
        self.report.keep(len(self._paths))


def _image_files(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, files in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for f in files:
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS:
                yield Path(dirpath) / f


def folder_to_lmdb(
    src_folder: str | Path,
    out_lmdb: str | Path,
    charset: Charset | str | None = None,
    max_label_length: int | None = None,
    gt_file: str | Path = GT_FILE,
    verify: bool = True,
    progress: bool | None = None,
) -> tuple[int, SkipReport]:
    """Convert a ``gt.txt`` folder into a clovaai/parseq-format LMDB.

    Image bytes are stored exactly as they are on disk (no re-encoding) and labels
    as written in ``gt.txt``; the charset only decides which samples are kept
    (readers normalise labels themselves).

    Args:
        src_folder: folder with ``gt.txt`` and the images.
        out_lmdb: output directory; must not already hold an LMDB.
        charset: skip labels this charset cannot express (``None``: keep all non-empty).
        max_label_length: skip longer labels (``None``: no limit).
        gt_file: the ground-truth file, relative to ``src_folder``.
        verify: decode every image and skip the undecodable ones.
        progress: show a progress bar (``None``: only on a terminal).

    Returns:
        ``(samples written, SkipReport)``.
    """
    if (Path(out_lmdb) / "data.mdb").exists():  # fail before the (possibly long) scan
        raise DataError(f"{out_lmdb} already holds an LMDB; choose a new output directory")
    source = FolderDataset(
        src_folder, gt_file=gt_file, charset=charset, max_label_length=max_label_length
    )
    report = SkipReport(source.name).merge(source.report)

    def samples() -> Iterator[tuple[bytes, str]]:
        bar = tqdm(
            range(len(source)),
            desc=f"converting {source.name}",
            unit="img",
            disable=None if progress is None else not progress,
        )
        for i in bar:
            data = source.read_bytes(i)
            if data is None:
                report.skip_kept(MISSING_FILE, source.source(i))
                continue
            if verify:
                try:
                    decode_image(data)
                except ImageDecodeError:
                    report.skip_kept(UNDECODABLE, source.source(i))
                    continue
            yield data, source.raw_labels[i]

    written = write_lmdb(out_lmdb, samples())
    return written, report


def holdout_indices(n: int, holdout: int, seed: int = 0) -> set[int]:
    """The indices (of ``n`` gt.txt entries) that :func:`split_folder` holds out."""
    return set(random.Random(seed).sample(range(n), holdout))


def split_folder(
    src_folder: str | Path,
    out: str | Path,
    holdout: int,
    seed: int = 0,
    gt_file: str | Path = GT_FILE,
) -> tuple[int, int]:
    """Split a ``gt.txt`` folder into ``out/train`` and ``out/heldout`` (``holdout``
    samples drawn with ``seed``), each a ``gt.txt`` folder with its images copied.

    For sets that are a train split and a validation split at once (e.g. IIIT5K's
    train split): fine-tune on ``train``, report on ``heldout`` only.

    Returns:
        ``(train samples, held-out samples)``.

    Raises:
        DataError: a bad ``holdout``, or ``out`` already holding a split.
    """
    entries = read_gt_file(Path(src_folder) / gt_file)
    if not 0 < holdout < len(entries):
        raise DataError(f"holdout must be in [1, {len(entries) - 1}], got {holdout}")
    out = Path(out)
    if (out / "train" / GT_FILE).exists() or (out / "heldout" / GT_FILE).exists():
        raise DataError(f"{out} already holds a split; choose a new output directory")
    held = holdout_indices(len(entries), holdout, seed)
    parts: dict[str, list[str]] = {"train": [], "heldout": []}
    for i, (rel, label) in enumerate(entries):
        part = "heldout" if i in held else "train"
        target = out / part / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(src_folder) / rel, target)
        parts[part].append(f"{rel}\t{label}\n")
    for part, lines in parts.items():
        (out / part / GT_FILE).write_text("".join(lines), encoding="utf-8")
    return len(parts["train"]), len(parts["heldout"])


def _open_folder(path, charset=None, unlabelled=False, transform=None, **kwargs) -> FolderDataset:
    return FolderDataset(
        path, charset=charset, unlabelled=unlabelled, transform=transform, **kwargs
    )


def _open_images(path, charset=None, unlabelled=False, transform=None, **kwargs):
    return ImageFolderDataset(path, transform=transform)


register_layout(
    Layout(
        "folder",
        "a folder with gt.txt (lines 'images/x.png<TAB>label')",
        holds=lambda path: (path / GT_FILE).is_file(),
        is_root=lambda path: (path / GT_FILE).is_file(),
        open=_open_folder,
        order=0,
        parts="image paths",
    )
)
register_layout(
    Layout(
        "images",
        "a folder of images",
        holds=lambda path: True,  # any folder, tried after the labelled layouts
        is_root=lambda path: False,  # never a dataset to score
        open=_open_images,
        order=100,  # the fallback
        labelled=False,
    )
)
