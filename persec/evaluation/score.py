"""Scoring a prediction file against a ground-truth file (``persec score``): the eval
protocol applied to text files, so any recognizer's output is scored as ``persec eval``
scores ours."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from persec.charset import Charset
from persec.data.dataset import MISSING_FILE, UNDECODABLE, SkipReport, filter_label
from persec.data.gtfile import match_predictions, read_gt_file, read_pred_file
from persec.errors import PersecError
from persec.image import ImageDecodeError, decode_image
from persec.metrics import (
    HTR,
    STANDARD,
    DatasetScore,
    ScoreAccumulator,
    htr_normalize,
    scores_to_rows,
)


@dataclass
class FileScore:
    """The score of one prediction file and what was left out of it.

    A scored ground-truth image without a prediction is scored as an empty reading
    (the protocol counts every crop) and listed once: in ``unreadable`` when the image
    beside the ground-truth file is missing or cannot be decoded (``persec read``
    skips those), else in ``missing``.
    """

    score: DatasetScore
    report: SkipReport  # ground-truth lines skipped by the label filter, by reason
    missing: list[str]  # readable ground-truth images without a prediction
    unreadable: dict[str, list[str]]  # reason -> ground-truth images that cannot be read
    ignored: list[str]  # predictions for paths not in the ground truth
    by_prefix: int  # predictions matched by a unique path suffix, not the whole path


def unreadable_reason(image: Path) -> str | None:
    """Why ``image`` cannot be read (missing file, undecodable image), or None."""
    try:
        data = image.read_bytes()
    except OSError:
        return MISSING_FILE
    try:
        decode_image(data)
    except ImageDecodeError:
        return UNDECODABLE
    return None


def _sort_unmatched(
    root: Path, paths: list[str], scored: list[str]
) -> tuple[list[str], dict[str, list[str]]]:
    """Split ground-truth ``paths`` without a prediction into (readable, unreadable by
    reason). Paths are relative to ``root``, the ground-truth file's folder; when none
    of the ``scored`` ground-truth images is found there, the images are simply not
    beside it and nothing is told apart."""
    if not paths or not any((root / p).is_file() for p in scored):
        return paths, {}
    missing, unreadable = [], {}
    for path in paths:
        reason = unreadable_reason(root / path)
        if reason is None:
            missing.append(path)
        else:
            unreadable.setdefault(reason, []).append(path)
    return missing, unreadable


def _dataset_name(gt: Path) -> str:
    # `IIIT5K/gt.txt` is named after its folder; `iiit5k_test.txt` after itself.
    if gt.stem.lower() in ("gt", "labels", "label") and gt.resolve().parent.name:
        return gt.resolve().parent.name
    return gt.stem


def score_files(
    gt_path: str | Path,
    pred_path: str | Path,
    charset: Charset,
    max_length: int | None = 25,
    name: str | None = None,
    protocol: str = STANDARD,
) -> FileScore:
    """Score ``pred_path`` against ``gt_path`` under the eval protocol: labels through
    ``charset`` (``remove_unsupported``), empty or over-long labels skipped and
    reported, a missing prediction scored as an empty one (and told apart from an
    unreadable image, see :class:`FileScore`).

    Raises:
        DataError: an unreadable or malformed file.
        PersecError: a ground-truth file without lines.
    """
    gt_path, pred_path = Path(gt_path), Path(pred_path)
    gt = read_gt_file(gt_path, unique=True)
    preds = read_pred_file(pred_path, unique=True)
    if not gt:
        raise PersecError(f"{gt_path} holds no ground-truth lines")
    matched = match_predictions(gt, preds)
    report, keep = SkipReport(name or _dataset_name(gt_path)), []
    htr = protocol == HTR
    for i, (path, label) in enumerate(zip(matched.paths, matched.labels, strict=True)):
        if htr:  # labels as written, only empty (or over-long) ones left out
            _, reason = filter_label(htr_normalize(label), None, max_length)
        else:
            _, reason = filter_label(label, charset, max_length, remove_unsupported=True)
        if reason is None:
            keep.append(i)
        else:
            report.skip(reason, path)
    report.keep(len(keep))
    acc = ScoreAccumulator(report.name, charset, protocol)
    acc.update(
        [matched.preds[i] for i in keep],
        [matched.labels[i] for i in keep],
        [matched.confidences[i] for i in keep],
    )
    unmatched = set(matched.missing)
    missing = [matched.paths[i] for i in keep if matched.paths[i] in unmatched]
    scored = [matched.paths[i] for i in keep]
    missing, unreadable = _sort_unmatched(gt_path.parent, missing, scored)
    return FileScore(
        acc.compute(), report, missing, unreadable, list(matched.ignored), matched.by_prefix
    )


def file_score_row(result: FileScore, charset: Charset, protocol: str = STANDARD) -> dict[str, Any]:
    """The JSON record ``persec score --out`` writes."""
    return {
        "protocol": protocol,
        **scores_to_rows([result.score])[0],
        "missing": len(result.missing),
        "unreadable": sum(len(v) for v in result.unreadable.values()),
        "unreadable_by_reason": {k: len(v) for k, v in sorted(result.unreadable.items())},
        "skipped": result.report.skipped,
        "skipped_by_reason": dict(sorted(result.report.counts.items())),
        "ignored": len(result.ignored),
        "matched_by_prefix": result.by_prefix,
        "charset": None if protocol == HTR else charset.name,
    }
