"""The public Python API, re-exported by :mod:`persec` (see its docstring for an example).

Each function is a thin layer over the library, as the CLI commands are:
:func:`load_model` over :mod:`persec.inference.model`, :func:`read` over
:mod:`persec.inference.read`, :func:`evaluate` over :mod:`persec.evaluation.evaluate`,
:func:`pretrain` and :func:`finetune` over :mod:`persec.training`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from persec.config import load_config
from persec.evaluation.evaluate import evaluate as _evaluate
from persec.inference.model import load_model as _load_model
from persec.inference.read import ExportedReader, Reading, list_images, read_images
from persec.metrics import DatasetScore
from persec.models.recognizer import Recognizer
from persec.training.finetune import FinetuneConfig, FinetuneResult
from persec.training.finetune import finetune as _finetune
from persec.training.pretrain import PretrainConfig, PretrainResult
from persec.training.pretrain import pretrain as _pretrain


def load_model(model: str | Path | None = None, device: str | torch.device = "cpu") -> Recognizer:
    """A saved recognizer in eval mode; ``None`` loads the shipped model (or
    ``$PERSEC_MODEL``, :mod:`persec.hub`).

    Raises:
        PersecError: no such model directory, or not a saved model.
    """
    return _load_model(model, device)


def read(
    model: Recognizer | ExportedReader,
    images: Sequence[str | Path],
    batch_size: int = 64,
    orient: str = "tall",
) -> list[Reading]:
    """Read image files (folders are searched recursively), one :class:`Reading` each,
    in order; an unreadable image gets ``error`` set instead of raising. ``model`` may
    also be an export read by onnxruntime,
    :class:`~persec.inference.onnx_runtime.OnnxRecognizer`.

    ``orient="tall"`` (as ``persec read``) also tries tall crops turned 90° both ways;
    ``"none"`` reads every image as given.
    """
    return list(read_images(model, list_images(images), batch_size=batch_size, orient=orient))


def evaluate(
    model: Recognizer | ExportedReader, datasets: Sequence[str | Path], **options: Any
) -> list[DatasetScore]:
    """Word accuracy, 1 - NED and CER of ``model`` on each dataset (any layout
    :mod:`persec.data.layouts` reads), under the standard 36-character protocol unless
    ``options`` (those of :func:`persec.evaluation.evaluate.evaluate`) say otherwise."""
    options.setdefault("progress", False)
    return _evaluate(model, datasets, **options)


def pretrain(config: str | Path | None = None, *overrides: str) -> PretrainResult:
    """Pretrain an encoder as ``persec pretrain --config CONFIG key=value ...`` does."""
    return _pretrain(load_config(PretrainConfig, config, overrides))


def finetune(config: str | Path | None = None, *overrides: str) -> FinetuneResult:
    """Fine-tune a recognizer as ``persec finetune --config CONFIG key=value ...`` does."""
    return _finetune(load_config(FinetuneConfig, config, overrides))
