"""The IAM Handwriting Database layout (Marti & Bunke 2002), words or text lines.

::

    IAM/
      ascii/words.txt      # or words.txt beside words/; lines.txt for lines
      words/a01/a01-000u/a01-000u-00-00.png
      lines/a01/a01-000u/a01-000u-00.png

A row of ``words.txt``: ``a01-000u-00-00 ok 154 408 768 27 51 AT A`` (id, segmentation
result, grey level, box, grammatical tag, transcription); of ``lines.txt``:
``a01-000u-00 ok 154 19 408 746 1661 89 A|MOVE|to|stop`` (``|`` separates words, read as
a space). Rows marked ``err`` (a segmentation the database's authors flag as wrong) are
skipped and counted; ``#`` lines are comments. The root holds word images when it has a
``words`` folder, else lines.

Splits are lists supplied by the user, one id per line (form ids such as
``a01-000u``, line ids or word ids; a sample is kept when its own id or the id of its
line or form is listed). The usual ones are the "IAM Aachen" split (train / validation
/ test lists of form ids) and the "Large Writer Independent Text Line Recognition Task"
lists (``trainset.txt``, ``validationset1.txt``, ``validationset2.txt``, ``testset.txt``:
line ids). Pass one as ``IAM_DIR:LIST.txt`` wherever a dataset path is taken, or as
``only`` (library).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from persec.charset import Charset, resolve_charset
from persec.data.dataset import SkipReport, dataset_name
from persec.data.folder import _FileDataset
from persec.data.layout_registry import Layout, register_layout
from persec.errors import DataError

SEGMENTATION_ERROR = "segmentation marked err"
MALFORMED_ROW = "malformed row"
# Fields before the transcription: words.txt 8, lines.txt 8.
_FIELDS = {"words": 8, "lines": 8}


def find_iam_index(root: Path, kind: str) -> Path | None:
    """``root/ascii/KIND.txt`` or ``root/KIND.txt``, whichever exists."""
    for path in (root / "ascii" / f"{kind}.txt", root / f"{kind}.txt"):
        if path.is_file():
            return path
    return None


def iam_kind(root: Path) -> str | None:
    """``words`` or ``lines``: what an IAM root holds (words first), or None."""
    for kind in ("words", "lines"):
        if (root / kind).is_dir() and find_iam_index(root, kind):
            return kind
    return None


def _image_path(root: Path, kind: str, sample_id: str) -> Path:
    parts = sample_id.split("-")
    return root / kind / parts[0] / f"{parts[0]}-{parts[1]}" / f"{sample_id}.png"


def _selected(sample_id: str, only: set[str] | None) -> bool:
    if only is None:
        return True
    parts = sample_id.split("-")
    ids = {"-".join(parts[:n]) for n in range(2, len(parts) + 1)}  # form, line, word
    return bool(ids & only)


class IamDataset(_FileDataset):
    """Word or line images of an IAM root with their transcriptions.

    Args:
        root: the IAM folder (see the module docstring).
        charset: label filter (``None``: labels as written, the HTR protocol's choice).
        max_label_length: longer labels are skipped (``None``: no limit).
        remove_unsupported: drop characters outside the charset instead of skipping.
        unlabelled: labels are ``None``.
        transform: applied to the RGB PIL image.
        name: display name (default: the folder's).
        only: ids to keep (a split list), see the module docstring.
        kind: ``words`` or ``lines`` (default: what the root holds, words first).

    Raises:
        DataError: not an IAM root, or an unknown ``kind``.
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
        kind: str | None = None,
    ):
        self.root = Path(root)
        kind = kind or iam_kind(self.root)
        if kind not in _FIELDS:
            raise DataError(
                f"{self.root} is not an IAM root (words.txt + words/, or lines.txt + lines/)"
            )
        index = find_iam_index(self.root, kind)
        if index is None:
            raise DataError(f"{self.root} has no {kind}.txt")
        self.kind = kind
        self.charset = resolve_charset(charset)
        self.transform = transform
        self.name = name or dataset_name(self.root)
        self.report = SkipReport(self.name)
        wanted = set(only) if only is not None else None
        items = []
        for number, line in enumerate(index.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            fields = line.split(" ")
            if len(fields) <= _FIELDS[kind] or fields[1] not in ("ok", "err"):
                self.report.skip(MALFORMED_ROW, f"{index}:{number}")
                continue
            if not _selected(fields[0], wanted):
                continue
            if fields[1] == "err":
                self.report.skip(SEGMENTATION_ERROR, fields[0])
                continue
            text = " ".join(fields[_FIELDS[kind] :]).replace("|", " ")
            items.append((_image_path(self.root, kind, fields[0]), text))
        self._take(items, max_label_length, remove_unsupported, unlabelled)


def _open_iam(path, charset=None, unlabelled=False, transform=None, **kwargs) -> IamDataset:
    kwargs.setdefault("max_label_length", None)
    return IamDataset(path, charset=charset, unlabelled=unlabelled, transform=transform, **kwargs)


register_layout(
    Layout(
        "iam",
        "an IAM Handwriting Database folder (words.txt + words/ or lines.txt + lines/)",
        holds=lambda path: iam_kind(path) is not None,
        is_root=lambda path: iam_kind(path) is not None,
        open=_open_iam,
        order=2,
        parts="form, line or word ids",
    )
)
