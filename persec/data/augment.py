"""Batched image augmentation on tensors (geometry, blur, noise, colour), seeded."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    """SeqCLR's augmentations, each applied to an image with its own probability.

    The paper applies a random subset of them; we switch each on independently with
    probability ``*_prob`` [ours: 0.5 each].

    Attributes:
        contrast_prob, contrast: linear contrast, x ↦ m + α(x − m) around the image
            mean m, α ~ U(contrast) [SeqCLR: (0.5, 1.0); ours: around the mean].
        blur_prob, blur_sigma: Gaussian blur, σ ~ U(blur_sigma) pixels [SeqCLR: (0.5, 1.5)].
        sharpen_prob, sharpen_alpha: unsharp mask x + 9α(x − box3×3(x)), α ~ U(sharpen_alpha)
            [SeqCLR: (0.0, 0.5); ours: lightness fixed at 1, so brightness is kept].
        crop_prob, crop_min_width: keep a random fraction ~ U(crop_min_width, 1) of the
            width at a random offset, stretched back [ours: 0.75].
        perspective_prob, perspective_scale: each corner moves inwards by |N(0, s²)| of
            the image size, s ~ U(perspective_scale) [SeqCLR: (0.01, 0.02)].
        warp_prob, warp_scale, warp_grid: piecewise-affine-like warp: control points on a
            (rows, cols) grid move by N(0, s²) of the image size, s ~ U(warp_scale),
            bicubically upsampled to a displacement field [SeqCLR: (0.02, 0.03), 4×4].
    """

    contrast_prob: float = 0.5
    contrast: tuple[float, float] = (0.5, 1.0)
    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.5, 1.5)
    sharpen_prob: float = 0.5
    sharpen_alpha: tuple[float, float] = (0.0, 0.5)
    crop_prob: float = 0.5
    crop_min_width: float = 0.75
    perspective_prob: float = 0.5
    perspective_scale: tuple[float, float] = (0.01, 0.02)
    warp_prob: float = 0.5
    warp_scale: tuple[float, float] = (0.02, 0.03)
    warp_grid: tuple[int, int] = (4, 4)


def _rand(size: tuple[int, ...], generator: torch.Generator | None, device, normal=False):
    """U(0, 1) (or N(0, 1)) draws on the generator's device, returned on ``device``."""
    dev = generator.device if generator is not None else device
    draw = torch.randn if normal else torch.rand
    return draw(size, generator=generator, device=dev).to(device)


def _uniform(lo_hi: tuple[float, float], n: int, generator, device) -> torch.Tensor:
    """Draw ``n`` values from U(lo, hi), returned on ``device`` as an (n,) tensor."""
    return lo_hi[0] + (lo_hi[1] - lo_hi[0]) * _rand((n,), generator, device)


def _homography(dst: torch.Tensor) -> torch.Tensor:
    """The 3×3 maps sending the corners (±1, ±1) to ``dst`` (B, 4, 2) -> (B, 3, 3)."""
    src = dst.new_tensor([[-1, -1], [1, -1], [1, 1], [-1, 1]]).expand_as(dst)
    u, v = src.unbind(-1)  # (B, 4) each
    x, y = dst.unbind(-1)
    one, zero = torch.ones_like(u), torch.zeros_like(u)
    rows_x = torch.stack([u, v, one, zero, zero, zero, -u * x, -v * x], -1)  # (B, 4, 8)
    rows_y = torch.stack([zero, zero, zero, u, v, one, -u * y, -v * y], -1)
    h = torch.linalg.solve(torch.cat([rows_x, rows_y], 1), torch.cat([x, y], 1))  # (B, 8)
    return torch.cat([h, torch.ones_like(h[:, :1])], 1).view(-1, 3, 3)


def _geometric(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator | None) -> torch.Tensor:
    """Crop, perspective and warp as one grid: source = crop(persp(output)) + warp.

    (B, C, H, W) -> (B, C, H, W); images with none of the three are returned as they were.
    """
    b, _, h, w = x.shape
    dev = x.device
    crop_on, persp_on, warp_on = (
        _rand((b,), g, dev) < p for p in (cfg.crop_prob, cfg.perspective_prob, cfg.warp_prob)
    )
    keep = torch.where(crop_on, _uniform((cfg.crop_min_width, 1.0), b, g, dev), 1.0)  # (B,)
    crop = torch.eye(3, device=dev).repeat(b, 1, 1)  # (B, 3, 3)
    crop[:, 0, 0], crop[:, 0, 2] = keep, (1 - keep) * (2 * _rand((b,), g, dev) - 1)
    corners = torch.tensor([[-1.0, -1], [1, -1], [1, 1], [-1, 1]], device=dev)  # (4, 2)
    jitter = _rand((b, 4, 2), g, dev, normal=True).abs() * 2  # the image spans 2
    jitter = jitter * (_uniform(cfg.perspective_scale, b, g, dev) * persp_on)[:, None, None]
    persp = _homography(corners - corners.sign() * jitter)  # corners move inwards
    base = F.affine_grid(torch.eye(2, 3, device=dev)[None], [1, 1, h, w], align_corners=False)
    base = torch.cat([base, torch.ones_like(base[..., :1])], -1).view(1, h * w, 3)
    src = base @ (crop @ persp).transpose(1, 2)  # (B, H·W, 3)
    grid = (src[..., :2] / src[..., 2:]).view(b, h, w, 2)
    control = _rand((b, 2, *cfg.warp_grid), g, dev, normal=True) * 2  # (B, 2, rows, cols)
    control = control * (_uniform(cfg.warp_scale, b, g, dev) * warp_on)[:, None, None, None]
    field_ = F.interpolate(control, size=(h, w), mode="bicubic", align_corners=True)
    grid = grid + field_.permute(0, 2, 3, 1)  # (B, H, W, 2)
    warped = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return torch.where((crop_on | persp_on | warp_on)[:, None, None, None], warped, x)


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable blur, one σ per image. x (B, C, H, W), sigma (B,) -> (B, C, H, W)."""
    b, c, h, w = x.shape
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * sigma[:, None] ** 2))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (B·C, 2r + 1)
    y = F.pad(x.reshape(1, b * c, h, w), (radius,) * 4, mode="replicate")
    y = F.conv2d(y, k[:, None, None, :], groups=b * c)  # along W
    y = F.conv2d(y, k[:, None, :, None], groups=b * c)  # along H
    return y.view(b, c, h, w)


def augment(
    images: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One random view of each image; a seeded ``generator`` reproduces it exactly.

    The geometric augmentations form one sampling grid and one ``grid_sample``; contrast,
    blur and sharpen follow, in that order [ours]. Every parameter is drawn whatever the
    probabilities, so the random stream does not depend on them; images an augmentation
    skips are left exactly as they were. Runs in float32 even under autocast (a bf16
    sampling grid would be off by up to half a pixel).

    Args:
        images: values in [-1, 1]. # (B, C, H, W)
        cfg: strengths and probabilities.
        generator: source of randomness (None = torch's global one).

    Returns:
        the augmented images, clamped to [-1, 1]. # (B, C, H, W), images' dtype
    """
    b, g, dev = images.size(0), generator, images.device
    with torch.autocast(dev.type, enabled=False):
        x = _geometric(images.float(), cfg, g)
        on = _rand((b,), g, dev) < cfg.contrast_prob
        alpha = _uniform(cfg.contrast, b, g, dev)[:, None, None, None]
        mean = x.mean((1, 2, 3), keepdim=True)
        x = torch.where(on[:, None, None, None], mean + alpha * (x - mean), x)
        on = _rand((b,), g, dev) < cfg.blur_prob
        sigma = _uniform(cfg.blur_sigma, b, g, dev).clamp_min(1e-3)
        radius = max(1, math.ceil(3 * cfg.blur_sigma[1]))
        x = torch.where(on[:, None, None, None], _gaussian_blur(x, sigma, radius), x)
        on = _rand((b,), g, dev) < cfg.sharpen_prob
        amount = 9 * _uniform(cfg.sharpen_alpha, b, g, dev)[:, None, None, None]
        box = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        x = torch.where(on[:, None, None, None], x + amount * (x - box), x)
    return x.clamp(-1, 1).to(images.dtype)
