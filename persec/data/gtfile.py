r"""Text files of ``path<TAB>text`` lines: ground truth (``gt.txt``) and predictions.

Ground truth: ``images/word_1.png<TAB>label``. The path is split from the label at the
first TAB when the line has one (the label may then hold spaces), else at the first
whitespace run. A line with a separator but no label gives an empty label (datasets
reject it later as ``EMPTY``); a line without a separator is malformed.

Predictions (``persec read`` writes them): ``path<TAB>text[<TAB>confidence]`` with the
confidence a probability in [0, 1], or ``path text`` without one. A path alone is an
empty prediction.

Both tolerate a UTF-8 BOM, CRLF line ends and blank lines. Errors are
:class:`~persec.errors.DataError` naming ``file:line``.

Matching predictions to ground truth (:func:`match_predictions`): paths are compared
after turning ``\`` into ``/`` and normalising ``./`` and ``//``. A prediction matches
a ground-truth line with the same path; failing that, it matches when one path is the
other with a directory prefix added (``/abs/IIIT5K/images/1.png`` matches
``images/1.png``, and so does ``1.png``), provided that pairing is unique on both sides.
"""

from __future__ import annotations

import math
import posixpath
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from persec.errors import DataError


def _lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` for the non-blank lines, ends stripped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from e
    # Split on "\n" only: str.splitlines would also split on \x1c, \u2028 ... in labels.
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if line.strip():
            yield number, line


def _split(line: str) -> tuple[str, str | None]:
    """Path and the rest (None when there is no separator)."""
    if "\t" in line:
        path, rest = line.split("\t", 1)
        return path.strip(), rest
    parts = line.strip().split(None, 1)
    return parts[0], (parts[1] if len(parts) == 2 else None)


def _check_unique(
    path: str | Path, number: int, key: str, seen: dict[str, int], unique: bool
) -> None:
    if not unique:
        return
    first = seen.setdefault(normalize_path(key), number)
    if first != number:
        raise DataError(f"{path}:{number}: duplicate path {key!r} (first on line {first})")


def read_gt_file(path: str | Path, unique: bool = False) -> list[tuple[str, str]]:
    """Read a ground-truth file into ``(image_path, label)`` pairs, in file order.

    Paths are returned as written (relative to the file's folder, usually). Labels
    are stripped of surrounding whitespace but not otherwise normalised.

    Args:
        path: the ``gt.txt`` file.
        unique: raise on a path that occurs twice (after :func:`normalize_path`).

    Raises:
        DataError: missing or undecodable file, a line without a label separator,
            or (with ``unique``) a duplicate path; the message names ``file:line``.
    """
    out: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for number, line in _lines(path):
        image, label = _split(line)
        if not image or label is None:
            raise DataError(f"{path}:{number}: expected 'image_path<TAB>label', got {line[:80]!r}")
        _check_unique(path, number, image, seen, unique)
        out.append((image, label.strip()))
    return out


def read_pred_file(path: str | Path, unique: bool = False) -> list[tuple[str, str, float | None]]:
    """Read a prediction file into ``(image_path, text, confidence or None)`` triples.

    Args:
        path: the prediction file.
        unique: raise on a path that occurs twice (after :func:`normalize_path`).

    Raises:
        DataError: missing or undecodable file, more than three TAB-separated fields,
            a confidence that is not a number in [0, 1], or (with ``unique``) a
            duplicate path; the message names ``file:line``.
    """
    out: list[tuple[str, str, float | None]] = []
    seen: dict[str, int] = {}
    for number, line in _lines(path):
        fields = line.split("\t")
        confidence = None
        if len(fields) > 3:
            raise DataError(
                f"{path}:{number}: expected 'image_path<TAB>text[<TAB>confidence]', "
                f"got {len(fields)} TAB-separated fields"
            )
        if len(fields) == 3:
            image, text, raw = fields[0].strip(), fields[1], fields[2].strip()
            try:
                confidence = float(raw)
            except ValueError:
                confidence = math.nan
            if not 0.0 <= confidence <= 1.0:  # also rejects nan
                raise DataError(
                    f"{path}:{number}: confidence {raw!r} is not a probability in [0, 1]"
                )
        else:
            image, text = _split(line)
        if not image:
            raise DataError(f"{path}:{number}: line starts with a separator, no image path")
        _check_unique(path, number, image, seen, unique)
        out.append((image, (text or "").strip(), confidence))
    return out


def normalize_path(path: str) -> str:
    """The form in which paths are compared: ``/`` separators, no ``./`` or ``//``."""
    return posixpath.normpath(path.strip().replace("\\", "/"))


def _is_prefixed(a: str, b: str) -> bool:
    """Whether one normalised path is the other with a directory prefix."""
    return a.endswith("/" + b) or b.endswith("/" + a)


@dataclass
class Matched:
    """Ground truth aligned with predictions, in ground-truth order.

    Attributes:
        paths: ground-truth image paths.
        labels: ground-truth labels.
        preds: predicted text, ``""`` where the prediction is missing.
        confidences: predicted confidence, None where missing or not given.
        missing: ground-truth paths without a prediction.
        ignored: prediction paths with no ground-truth line.
        by_prefix: how many pairs were matched by the directory-prefix rule.
    """

    paths: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    preds: list[str] = field(default_factory=list)
    confidences: list[float | None] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    by_prefix: int = 0


def match_predictions(
    gt: list[tuple[str, str]], preds: list[tuple[str, str, float | None]]
) -> Matched:
    """Pair each ground-truth line with its prediction (rule in the module docstring).

    Paths should be unique on each side (read with ``unique=True``); a later
    duplicate would shadow an earlier one.
    """
    pred_by_key = {normalize_path(p): (text, conf) for p, text, conf in preds}
    gt_keys = [normalize_path(p) for p, _ in gt]
    pred_for: dict[str, str] = {k: k for k in gt_keys if k in pred_by_key}

    # Prefix rule on what exact matching left over: candidates share the file name.
    loose_preds: dict[str, list[str]] = defaultdict(list)
    for key in pred_by_key.keys() - pred_for.keys():
        loose_preds[posixpath.basename(key)].append(key)
    candidates = {
        g: [p for p in loose_preds.get(posixpath.basename(g), []) if _is_prefixed(g, p)]
        for g in gt_keys
        if g not in pred_for
    }
    claims: dict[str, int] = defaultdict(int)
    for cands in candidates.values():
        for p in cands:
            claims[p] += 1
    by_prefix = 0
    for g, cands in candidates.items():
        if len(cands) == 1 and claims[cands[0]] == 1:
            pred_for[g] = cands[0]
            by_prefix += 1

    out = Matched(by_prefix=by_prefix)
    for (path, label), key in zip(gt, gt_keys, strict=True):
        if key in pred_for:
            text, conf = pred_by_key[pred_for[key]]
        else:
            text, conf = "", None
            out.missing.append(path)
        out.paths.append(path)
        out.labels.append(label)
        out.preds.append(text)
        out.confidences.append(conf)
    used = set(pred_for.values())
    out.ignored = [p for p, _, _ in preds if normalize_path(p) not in used]
    return out
