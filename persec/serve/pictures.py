"""Pictures for the page, as PNG data URLs."""

from __future__ import annotations

import base64
import io

import numpy as np
import torch
from PIL import Image


def png_data_url(pixels: np.ndarray) -> str:
    """A PNG data URL of an (H, W) or (H, W, 3) uint8 array."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def model_picture(image: torch.Tensor) -> str:
    """A preprocessed image (C, H, W) in [-1, 1], as the model sees it."""
    pixels = ((image.float().clamp(-1, 1) + 1) * 127.5).round().byte()  # (C, H, W)
    return png_data_url(pixels.permute(1, 2, 0).squeeze(-1).numpy())


def rgb_picture(rgb: np.ndarray) -> str:
    """An (H, W, 3) float image in [0, 1]."""
    return png_data_url((rgb.clip(0, 1) * 255).round().astype(np.uint8))
