"""Span masking of feature positions (method.md, step 2).

:func:`span_mask` chooses which positions a perceiver hides; :func:`apply_mask` puts
the learned mask vector there. Masking probability p and span m are the paper's
(p = 0.2 stroke, 0.15 semantic, m = 1); the same number of masked positions in every
image, round(p·N) kept within [1, N − 1], is our choice: the contrastive loss then
sees equal-sized distractor pools without padding, and no image is fully masked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def mask_count(num_positions: int, p: float, min_masks: int = 1) -> int:
    """Masked positions per image: round(p·N) (halves up), at least ``min_masks``,
    at most N − 1."""
    n = math.floor(p * num_positions + 0.5)
    return max(0, min(max(n, min_masks), num_positions - 1))


def span_mask(
    shape: Sequence[int],
    p: float,
    span: int = 1,
    generator: torch.Generator | None = None,
    min_masks: int = 1,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Random span mask with exactly :func:`mask_count` masked positions per row.

    Each row gets ⌈n/m⌉ non-overlapping spans: all of length m except one, at a random
    rank, of length n − (⌈n/m⌉ − 1)·m, so the count is exact. Spans may touch and then
    read as one longer run. Placements are uniform over all such arrangements (see the
    stars-and-bars comment below). With m = 1 this is n positions drawn uniformly
    without replacement.

    2-D maps are read in raster order (row by row), so a span runs along the width,
    the reading direction, and one that reaches the end of a row continues at the
    start of the next. We chose this over m×m squares because it keeps the count
    exact; with the paper's m = 1 the two are the same.

    Args:
        shape: (B, T) for sequences or (B, H, W) for maps.
        p: masking probability.
        span: span length m.
        generator: source of randomness; the mask is made on its device. Same seed,
            same mask.
        min_masks: lower bound on the count (the upper bound is N − 1).
        device: move the result there (default: the generator's device, else CPU).

    Returns:
        bool mask, True = masked. # shape

    Raises:
        ValueError: bad shape, p outside [0, 1], span < 1, or fewer than 2 positions.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"shape must be (B, T) or (B, H, W), got {shape}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    if span < 1:
        raise ValueError(f"span must be >= 1, got {span}")
    b, n_pos = shape[0], math.prod(shape[1:])
    if n_pos < 2:
        raise ValueError(f"need at least 2 positions per row to mask, got {n_pos}")
    dev = generator.device if generator is not None else torch.device("cpu")
    n = mask_count(n_pos, p, min_masks)
    mask = torch.zeros(b, n_pos, dtype=torch.bool, device=dev)
    if n > 0:
        k = -(-n // span)  # spans per row
        short = n - (k - 1) * span  # length of the one possibly shorter span
        # Stars and bars: k non-overlapping spans of total length n in N positions
        # correspond one-to-one to k of the N − n + k slots left when each span is
        # shrunk to one position. Choose k slots uniformly, sort, expand back.
        slots = n_pos - n + k
        chosen = torch.rand(b, slots, generator=generator, device=dev).argsort(dim=1)[:, :k]
        chosen = chosen.sort(dim=1).values  # (B, k)
        short_rank = torch.randint(k, (b, 1), generator=generator, device=dev)
        lengths = torch.full((b, k), span, device=dev)
        lengths[torch.arange(k, device=dev) == short_rank] = short  # (B, k)
        # Each earlier span pushes the next start right by its length − 1.
        grow = lengths - 1
        starts = chosen + grow.cumsum(1) - grow  # (B, k)
        offsets = torch.arange(span, device=dev)
        pos = starts[:, :, None] + offsets  # (B, k, m)
        inside = (offsets < lengths[:, :, None]).long()
        # scatter_add, not scatter: the clamped positions past a short span's end add 0
        # instead of overwriting a masked position.
        hits = torch.zeros(b, n_pos, dtype=torch.long, device=dev)
        hits.scatter_add_(1, pos.clamp(max=n_pos - 1).flatten(1), inside.flatten(1))
        mask = hits > 0
    mask = mask.view(shape)
    return mask if device is None else mask.to(device)


def apply_mask(
    features: torch.Tensor, mask: torch.Tensor, mask_embedding: torch.Tensor
) -> torch.Tensor:
    """Replace the masked positions of ``features`` with ``mask_embedding``.

    Unmasked positions are copied bit for bit; gradients reach both ``features`` (at
    unmasked positions) and ``mask_embedding`` (an ``nn.Parameter`` of the caller).

    Args:
        features: a map (B, C, H, W) or a sequence (B, T, C).
        mask: True = masked. # (B, H, W) or (B, T), bool
        mask_embedding: the learned vector. # (C,)

    Returns:
        features with masked positions replaced. # same shape as ``features``
    """
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool, got {mask.dtype}")
    if features.dim() == 4:
        b, c, h, w = features.shape
        expected, where, vec = (b, h, w), mask[:, None], mask_embedding.view(1, -1, 1, 1)
    elif features.dim() == 3:
        b, t, c = features.shape
        expected, where, vec = (b, t), mask[..., None], mask_embedding
    else:
        raise ValueError(f"features must be (B, C, H, W) or (B, T, C), got {features.dim()}-D")
    if tuple(mask.shape) != expected:
        raise ValueError(f"mask {tuple(mask.shape)} does not match features {expected}")
    if tuple(mask_embedding.shape) != (c,):
        raise ValueError(f"mask_embedding must be ({c},), got {tuple(mask_embedding.shape)}")
    return torch.where(where, vec.to(features.dtype), features)


def mask_columns(
    images: torch.Tensor,
    frames: int,
    p: float,
    span: int,
    value: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hide whole frames of an image [ours]: the W/``frames`` pixel columns under each
    masked frame (a :func:`span_mask` over the frames) are set to ``value``.

    Args:
        images: (B, C, H, W), W a multiple of ``frames``.
        frames: T, the encoder's output length.
        p: masked share of the frames: round(p·T) of them (:func:`mask_count`, at least
            1, at most T − 1).
        span: span length, in frames.
        value: what masked pixels become.
        generator: randomness of the mask.

    Returns:
        the masked images (B, C, H, W) and the frame mask (B, T), bool.
    """
    b, _, _, width = images.shape
    if frames < 2 or width % frames:
        raise ValueError(f"image width {width} must be a multiple of {frames} frames (>= 2)")
    mask = span_mask((b, frames), p, span, generator).to(images.device)  # (B, T)
    columns = mask.repeat_interleave(width // frames, dim=1)[:, None, None, :]  # (B, 1, 1, W)
    return images.masked_fill(columns, value), mask


def roll_columns(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Roll each image (or feature map) of ``x`` along its last axis by its own number
    of columns, circularly: column j of the result is column (j − shift) mod W.

    Args:
        x: (B, ..., W).
        shifts: columns per image, any integers. # (B,), int64

    Returns:
        the rolled tensor. # same shape as ``x``
    """
    if shifts.shape != (x.size(0),):
        raise ValueError(f"need one shift per image ({x.size(0)}), got shape {tuple(shifts.shape)}")
    width = x.size(-1)
    cols = torch.arange(width, device=x.device)
    index = (cols[None, :] - shifts.to(x.device)[:, None]) % width  # (B, W)
    index = index.view(x.size(0), *([1] * (x.dim() - 2)), width).expand_as(x)
    return x.gather(-1, index)
