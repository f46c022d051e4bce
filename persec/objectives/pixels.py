"""Reconstructing the hidden pixels of input-masked frames [ours].

With ``mask_at=input`` the pixels under each masked frame are known and fixed, unlike
the contrastive targets, which the encoder makes itself and which start as noise
(docs/pretraining-diagnostics.md, "Noisy targets"). A linear head on the semantic
context predicts each masked frame's pixel columns, as masked image modelling does for
text (DiG, Yang et al. 2022, pairs it with a contrastive loss; MAERec uses it alone).
Each frame's pixels are normalised by their own mean and variance (MAE's
``norm_pix_loss``), so the loss asks for strokes, not brightness.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def frame_pixels(images: torch.Tensor, frames: int, rows: int, norm: bool) -> torch.Tensor:
    """The pixels under each frame, flattened.

    Args:
        images: (B, C, H, W), W a multiple of ``frames``.
        frames: T, the encoder's output length.
        rows: the height the images are pooled to first (H itself keeps them).
        norm: standardise each frame's pixels by their own mean and variance.

    Returns:
        (B, T, C·rows·W/T)
    """
    b, c, _, w = images.shape
    if w % frames:
        raise ValueError(f"image width {w} must be a multiple of {frames} frames")
    x = F.adaptive_avg_pool2d(images.float(), (rows, w))  # (B, C, rows, W)
    x = x.view(b, c, rows, frames, w // frames).permute(0, 3, 1, 2, 4)  # (B, T, C, rows, W/T)
    x = x.reshape(b, frames, -1)  # (B, T, C·rows·W/T)
    if norm:
        x = (x - x.mean(-1, keepdim=True)) / (x.var(-1, keepdim=True) + 1e-6).sqrt()
    return x


class PixelHead(nn.Module):
    """A linear map from a frame's context to its pixel columns.

    Args:
        channels: C_h, the context width.
        pixels: C·rows·W/T values per frame.
    """

    def __init__(self, channels: int, pixels: int):
        super().__init__()
        self.proj = nn.Linear(channels, pixels)

    def loss(
        self, context: torch.Tensor, images: torch.Tensor, mask: torch.Tensor, rows: int, norm: bool
    ) -> torch.Tensor:
        """Mean squared error over the masked frames' pixels.

        Args:
            context: the semantic context of the masked image. # (B, T, C_h)
            images: the unmasked images, unrolled. # (B, C, H, W)
            mask: the masked frames. # (B, T), bool
            rows: the height the images are pooled to (:func:`frame_pixels`).
            norm: standardise each frame's target pixels.
        """
        target = frame_pixels(images, mask.size(1), rows, norm)[mask]  # (n, P)
        pred = self.proj(context[mask].float())  # (n, P)
        return F.mse_loss(pred, target)
