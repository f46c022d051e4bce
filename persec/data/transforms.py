"""Image preprocessing shared by training, evaluation and ``Recognizer.read``.

One function decides how a PIL image becomes a model input, so the same
preprocessing is applied everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image


@dataclass
class ImageConfig:
    """Model input geometry.

    Attributes:
        height: input height in pixels (32 in the paper).
        width: input width in pixels (128 for fine-tuning, 384 for pretraining [paper]).
        channels: 3 for RGB, 1 for grayscale.
    """

    height: int = 32
    width: int = 128
    channels: int = 3


def to_tensor(image: Image.Image, config: ImageConfig) -> torch.Tensor:
    """Resize (ignoring aspect, as in the STR benchmarks) and scale to [-1, 1].

    Returns:
        ``(C, H, W)`` float32 tensor.
    """
    mode = "L" if config.channels == 1 else "RGB"
    if image.mode != mode:
        image = image.convert(mode)
    if image.size != (config.width, config.height):
        image = image.resize((config.width, config.height), Image.Resampling.BICUBIC)
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1)  # (C, H, W) uint8
    return tensor.float().div_(127.5).sub_(1.0)


class ToTensor:
    """Picklable callable wrapper around :func:`to_tensor` for datasets."""

    def __init__(self, config: ImageConfig):
        self.config = config

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return to_tensor(image, self.config)  # (C, H, W)
