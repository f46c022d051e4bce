"""Evaluation of a saved :class:`~persec.models.recognizer.Recognizer`.

The standard STR protocol, as code: ground-truth labels are read through the eval
charset with ``remove_unsupported=True`` (NFKD → ASCII, whitespace removed, case folded
for single-case charsets, unsupported characters dropped); samples whose label is then
empty or longer than ``max_label_length`` are skipped and reported, never scored.
Predictions are mapped through the same charset by
:class:`~persec.metrics.ScoreAccumulator`. Images get the model's own preprocessing
(:class:`~persec.image.ToTensor` of ``model.config.image``, or of an ONNX export's
sidecar), as in training and
:meth:`Recognizer.read`; every crop is read as given unless ``orient="tall"`` (then
tall crops are also read turned 90° both ways, as ``persec read`` does by default).

Dataset paths are expanded by :func:`persec.data.layouts.find_datasets` (a folder
of datasets stands for each of them; ``DIR:PART`` is one part of a split set).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from persec.charset import Charset
from persec.data.dataset import SkipReport, collate_samples
from persec.data.layouts import find_datasets, open_dataset
from persec.data.splits import part_name
from persec.errors import PersecError
from persec.image import ToTensor, pad_to_width
from persec.inference.read import ExportedReader, batch_reading, eval_mode, input_image
from persec.metrics import (
    HTR,
    STANDARD,
    DatasetScore,
    ScoreAccumulator,
    combine,
    eval_charset,
    scores_to_rows,
)
from persec.models.recognizer import Recognizer
from persec.orientation import OrientedTransform, best_readings, check_orient

logger = logging.getLogger("persec.evaluation.evaluate")

RESULTS_STEM = "results"


def open_eval_dataset(
    path: str | Path,
    model: Recognizer | ExportedReader,
    charset: Charset | None,
    max_label_length: int | None = 25,
    orient: str = "none",
) -> Dataset:
    """One labelled dataset read the eval way: labels mapped through ``charset`` with
    unsupported characters removed (``None``: as written, the HTR protocol), images
    preprocessed for ``model``.

    Items are ``(image (C, H, W), label)``, or with ``orient="tall"``
    ``(versions (K, C, H, W), label)`` (:class:`~persec.orientation.OrientedTransform`),
    or :class:`~persec.data.dataset.Skipped`.
    """
    # Named by the folder as given: a symlinked benchmark keeps its link's name.
    name = part_name(path) or Path(os.path.abspath(path)).name or str(path)
    transform = ToTensor(input_image(model))
    return open_dataset(
        path,
        charset=charset,
        transform=transform if orient == "none" else OrientedTransform(transform, orient),
        max_label_length=max_label_length,
        remove_unsupported=True,
        name=name,
    )


def evaluate_dataset(
    model: Recognizer | ExportedReader,
    dataset: Dataset,
    charset: Charset,
    batch_size: int = 64,
    workers: int = 0,
    progress: bool | None = True,
    protocol: str = STANDARD,
) -> tuple[DatasetScore, SkipReport]:
    """Score ``model`` on one opened dataset (see :func:`open_eval_dataset`).

    Images that cannot be decoded are dropped by
    :func:`~persec.data.dataset.collate_samples` and counted in the returned report.

    Args:
        model: a PyTorch recognizer (its device is used; it is put in eval mode for the
            run) or an exported one such as
            :class:`~persec.inference.onnx_runtime.OnnxRecognizer`.
        dataset: items ``(image (C, H, W), label)``, or ``(versions (K, C, H, W),
            label)`` whose :func:`~persec.orientation.best_reading` is scored (see
            :func:`open_eval_dataset`); needs ``.name`` and ``.report``.
        charset: the eval charset predictions and labels are mapped through.
        batch_size: images per forward pass.
        workers: DataLoader worker processes (0: read in this process).
        progress: show a progress bar (``None``: only on a terminal).
        protocol: ``standard`` or ``htr`` (:class:`~persec.metrics.ScoreAccumulator`).

    Returns:
        the dataset's score and its skip report (label skips at open + images skipped
        when read).
    """
    recognize = batch_reading(model)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_samples,
        pin_memory=isinstance(model, nn.Module) and next(model.parameters()).device.type == "cuda",
    )
    name = getattr(dataset, "name", "dataset")
    accumulator = ScoreAccumulator(name, charset, protocol)
    skipped: Counter[str] = Counter()
    bar = tqdm(
        total=len(dataset),
        desc=f"eval {name}",
        unit="img",
        disable=None if progress is None else not progress,
    )
    with eval_mode(model), bar:
        for images, labels, dropped in loader:
            skipped.update(dropped)
            bar.update(len(labels) + sum(dropped.values()))
            if not labels:
                continue
            if isinstance(images, torch.Tensor) and images.dim() == 4:  # (B, C, H, W)
                decoded = recognize(images)
            else:  # each image's versions (K, C, H, W), K varying
                versions = list(images)
                batch = pad_to_width([v for vs in versions for v in vs])  # (ΣK, C, H, W)
                decoded = best_readings(recognize(batch), [len(v) for v in versions])
            accumulator.update([text for text, _ in decoded], labels, [conf for _, conf in decoded])

    report = SkipReport(name).merge(getattr(dataset, "report", SkipReport(name)))
    for reason, n in skipped.items():
        for _ in range(n):
            report.skip_kept(reason)
    return accumulator.compute(), report


def evaluate(
    model: Recognizer | ExportedReader,
    paths: Sequence[str | Path],
    charset: str | Charset | None = None,
    cased: bool = False,
    punctuation: bool = False,
    batch_size: int = 64,
    workers: int = 0,
    max_label_length: int | None = 25,
    progress: bool | None = True,
    reports: list[SkipReport] | None = None,
    orient: str = "none",
    protocol: str = STANDARD,
) -> list[DatasetScore]:
    """Score ``model`` on each dataset under ``paths``, one :class:`DatasetScore` each.

    Every path is expanded with :func:`find_datasets` (and checked) before the first
    image is read. Combine the result with :func:`~persec.metrics.combine`.

    Args:
        model: the recognizer, PyTorch or exported (an
            :class:`~persec.inference.read.ExportedReader`).
        paths: dataset folders, or folders of dataset folders.
        charset: eval charset spec; when given it overrides ``cased``/``punctuation``
            (see :func:`~persec.metrics.eval_charset`).
        cased: compare case (``62_mixed``) instead of folding to lower case (default
            ``36_lowercase``); ignored when ``charset`` is given.
        punctuation: keep ASCII punctuation instead of dropping it (``94_full`` when
            also ``cased``); ignored when ``charset`` is given.
        batch_size: images per forward pass.
        workers: DataLoader worker processes.
        max_label_length: longer labels (after mapping) are skipped (``None``: no limit).
        progress: a progress bar per dataset (``None``: only on a terminal).
        reports: when a list is given, one :class:`SkipReport` per dataset is appended
            and the caller reports them; otherwise skips are logged here, once per set.
        orient: ``"none"`` (the standard protocol: every crop as given) or ``"tall"``
            (:mod:`persec.orientation`).
        protocol: ``standard`` or ``htr`` (labels as written, no charset filter, CER
            and WER; :mod:`persec.metrics`).

    Raises:
        DataError: a path that is not a dataset or a folder of datasets.
        ValueError: an unknown ``orient`` or ``protocol``.
    """
    check_orient(orient)
    eval_cs = eval_charset(cased, punctuation, charset)
    label_cs = None if protocol == HTR else eval_cs  # HTR: every character counts
    scores = []
    for path in find_datasets(paths):
        dataset = open_eval_dataset(path, model, label_cs, max_label_length, orient)
        score, report = evaluate_dataset(
            model, dataset, eval_cs, batch_size, workers, progress, protocol
        )
        scores.append(score)
        if reports is not None:  # the caller reports the skips
            reports.append(report)
        elif report.skipped:
            logger.warning("skipped, not scored: %s", report.summary())
    return scores


def result_rows(
    scores: Sequence[DatasetScore], reports: Sequence[SkipReport] | None = None
) -> list[dict[str, Any]]:
    """Rows of :func:`~persec.metrics.scores_to_rows` plus the combined row (last, always),
    with ``skipped`` counts when ``reports`` (parallel to ``scores``) are given."""
    rows = scores_to_rows([*scores, combine(scores)])
    if reports is not None:
        if len(reports) != len(scores):
            raise ValueError(f"{len(reports)} skip reports for {len(scores)} scores")
        for row, report in zip(rows, reports, strict=False):
            row["skipped"] = report.skipped
        rows[-1]["skipped"] = sum(r.skipped for r in reports)
    return rows


def write_results(
    scores: Sequence[DatasetScore],
    out: str | Path,
    reports: Sequence[SkipReport] | None = None,
    meta: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write the scores as CSV and JSON.

    Args:
        scores: one per dataset; a combined row is added (see :func:`result_rows`).
        out: a directory (created) that gets ``results.csv`` and ``results.json``, or,
            when it ends in ``.csv`` or ``.json``, a prefix: ``runs/x.json`` writes
            ``runs/x.csv`` and ``runs/x.json``.
        reports: skip reports parallel to ``scores``: adds a ``skipped`` column, and in
            the JSON the counts by reason.
        meta: extra top-level JSON entries (model, charset, ...).

    Returns:
        the CSV and JSON paths.

    Raises:
        PersecError: the files cannot be written.
    """
    out = Path(out)
    if out.suffix.lower() in (".csv", ".json"):
        csv_path, json_path = out.with_suffix(".csv"), out.with_suffix(".json")
    else:
        csv_path, json_path = out / f"{RESULTS_STEM}.csv", out / f"{RESULTS_STEM}.json"
    rows = result_rows(scores, reports)
    document: dict[str, Any] = dict(meta or {})
    document["datasets"] = [dict(row) for row in rows[:-1]]
    document["combined"] = rows[-1]
    if reports is not None:
        for row, report in zip(document["datasets"], reports, strict=True):
            row["skipped_by_reason"] = dict(sorted(report.counts.items()))
    try:
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        with csv_path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        json_path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    except OSError as e:
        raise PersecError(f"cannot write results to {csv_path.parent}: {e.strerror or e}") from e
    return csv_path, json_path
