"""Batch inference on image files (``persec read``): streaming, in input order, with
unreadable images reported instead of raised."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from persec.data.dataset import MISSING_FILE, UNDECODABLE, Skipped
from persec.data.folder import ImageFolderDataset
from persec.decoding.settings import DecodingSettings
from persec.errors import DataError
from persec.image import ImageConfig, ImageDecodeError, ToTensor, decode_image, pad_to_width
from persec.models.recognizer import Recognizer
from persec.orientation import OrientedTransform, best_readings, check_orient


def list_images(inputs: Sequence[str | Path]) -> list[str]:
    """Image files named by ``inputs``: files as given, folders searched recursively.

    Folder contents come in sorted order, filtered by
    :data:`~persec.data.folder.IMAGE_EXTENSIONS` (hidden files left out), and are
    joined onto the folder as given (not resolved). A file named explicitly is taken
    whatever its extension.

    Raises:
        DataError: an input that does not exist, or a folder without image files.
    """
    out: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            folder = ImageFolderDataset(path)
            out.extend(folder.source(i) for i in range(len(folder)))
        elif path.exists():
            out.append(str(item))
        else:
            raise DataError(f"{item}: no such file or directory")
    return out


PAGE_SIDE = 800  # both sides at least this many pixels ...
PAGE_ASPECT = 2.5  # ... and at most this much wider than tall: a page, not a crop
PAGE_SIZED = "page-sized image"


def page_hint(width: int, height: int) -> str | None:
    """Why an image of this size gets no reading: a scanned page or photo of a document
    (both sides large, not a wide strip) holds many words, which a recognizer of single
    crops would read as one meaningless string. None for a crop."""
    if min(width, height) >= PAGE_SIDE and width < PAGE_ASPECT * height:
        return (
            f"{PAGE_SIZED} ({width}x{height}): persec reads cropped words and text lines; "
            "cut the page into lines or words first (a text detector or layout analysis)"
        )
    return None


class ImagePathsDataset(Dataset):
    """Image files by path, for inference.

    Items are ``(versions (K, C, H, W), path)``, the K
    :func:`~persec.orientation.orientation_variants` of the image (K = 1 unless
    ``orient`` turns it), or a :class:`~persec.data.dataset.Skipped` whose ``reason``
    holds the error (missing file, undecodable image, a page-sized image: :func:`page_hint`).
    """

    def __init__(self, paths: Sequence[str], transform: ToTensor, orient: str = "none"):
        self.paths = list(paths)
        self.transform = OrientedTransform(transform, orient)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str] | Skipped:
        path = self.paths[index]
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            return Skipped(f"{MISSING_FILE}: {e.strerror or e}", path)
        try:
            image = decode_image(data)
        except ImageDecodeError as e:
            return Skipped(f"{UNDECODABLE}: {e}", path)
        hint = page_hint(*image.size)
        if hint:
            return Skipped(hint, path)
        return self.transform(image), path  # (K, C, H, W)


def _collate_paths(
    batch: Sequence[tuple[torch.Tensor, str] | Skipped],
) -> tuple[torch.Tensor | None, list[int | str]]:
    """Concatenate the versions of the decodable images; keep, per item in batch order,
    its number of versions or its error."""
    images = [item[0] for item in batch if not isinstance(item, Skipped)]
    counts = [item.reason if isinstance(item, Skipped) else len(item[0]) for item in batch]
    flat = [v for versions in images for v in versions]
    return (pad_to_width(flat) if flat else None), counts  # (sum K, C, H, W)


@dataclass(frozen=True)
class Reading:
    """The result for one image: text and confidence, or the error that prevented it."""

    path: str
    text: str | None = None
    confidence: float | None = None
    error: str | None = None


class ExportedReader(Protocol):
    """A recognizer outside PyTorch that :func:`read_images` can drive, such as
    :class:`~persec.inference.onnx_runtime.OnnxRecognizer`."""

    image: ImageConfig  # how its input images are prepared
    decoding: DecodingSettings  # how it decodes its logits

    def __call__(self, images: torch.Tensor) -> Any:
        """Images (B, C, H, W) in [-1, 1] -> logits (B, L, V), a tensor or array."""

    def decode(self, logits: Any) -> list[tuple[str, float]]:
        """Logits -> ``[(text, confidence)]``."""


def input_image(model: Recognizer | ExportedReader) -> ImageConfig:
    """How ``model`` wants its input images prepared (height, width, channels)."""
    return model.config.image if isinstance(model, nn.Module) else model.image


def decoding_of(model: Recognizer | ExportedReader) -> DecodingSettings:
    """How ``model`` decodes its logits (beam width, language model)."""
    return model.config.decoder if isinstance(model, nn.Module) else model.decoding


@contextlib.contextmanager
def eval_mode(model: Recognizer | ExportedReader) -> Iterator[None]:
    """A PyTorch recognizer in eval mode for the block, its mode restored after; an
    exported reader has no mode and is left alone."""
    if not isinstance(model, nn.Module):
        yield
        return
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def batch_reading(
    model: Recognizer | ExportedReader,
) -> Callable[[torch.Tensor], list[tuple[str, float]]]:
    """``model``'s batch (N, C, H, W) in [-1, 1] -> ``[(text, confidence)]`` function;
    a PyTorch recognizer gets the batch on its device, without autograd (its train/eval
    mode is the caller's business)."""
    if not isinstance(model, nn.Module):  # an ExportedReader
        return lambda images: model.decode(model(images))
    device = next(model.parameters()).device

    def recognize(images: torch.Tensor) -> list[tuple[str, float]]:
        with torch.inference_mode():
            return model.decode(model(images.to(device, non_blocking=True)))  # (N, L, V)

    return recognize


def read_images(
    model: Recognizer | ExportedReader,
    paths: Sequence[str],
    batch_size: int = 64,
    workers: int = 0,
    orient: str = "none",
) -> Iterator[Reading]:
    """Recognise image files in batches, streaming: memory holds one batch at a time.

    Yields one :class:`Reading` per path, in order; unreadable images yield a
    ``Reading`` with ``error`` set instead of raising. ``orient="tall"`` reads tall
    crops in three orientations and keeps the
    :func:`~persec.orientation.best_reading`. ``model`` is a PyTorch recognizer (put in
    eval mode while reading) or an :class:`ExportedReader`.
    """
    check_orient(orient)
    recognize = batch_reading(model)
    loader = DataLoader(
        ImagePathsDataset(paths, ToTensor(input_image(model)), orient),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate_paths,
    )
    index = 0
    with eval_mode(model):
        for images, counts in loader:
            decoded = recognize(images) if images is not None else []
            results = iter(best_readings(decoded, [c for c in counts if isinstance(c, int)]))
            for count in counts:
                path = paths[index]
                index += 1
                if isinstance(count, str):
                    yield Reading(path, error=count)
                else:
                    text, conf = next(results)
                    yield Reading(path, text, conf)
