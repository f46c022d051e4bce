"""The pyramid vision transformer encoder (PerSec-ViT): stages of windowed attention joined by patch merging."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from persec.models.attention import sdpa
from persec.models.encoders.base import EncoderConfig, EncoderSpec, TextEncoder, register_encoder

VIT_PRESETS: dict[str, dict] = {
    "tiny": {"widths": [16, 32, 32], "depths": [1, 1, 1], "heads": [1, 2, 2]},
    "small": {"widths": [64, 128, 256], "depths": [2, 2, 4], "heads": [2, 4, 8]},
    "base": {"widths": [128, 256, 512], "depths": [2, 2, 6], "heads": [2, 4, 8]},
}


# --------------------------------------------------------------------------- ViT
class TransformerBlock(nn.Module):
    """Pre-norm global self-attention + MLP over tokens. (B, N, C) -> (B, N, C)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, N, C)."""
        b, n, c = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, N, C/heads)
        a = sdpa(q, k, v)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, n, c)))
        return x + self.drop(self.mlp(self.norm2(x)))


class ViTStage(nn.Module):
    """Transformer blocks on a (B, C, h, w) map, with a conditional position encoding.

    Position comes from a depthwise conv on the token map after the first block
    (CPVT's PEG): it depends only on neighbours, so the same weights serve W = 128
    and W = 384 with no interpolation.
    """

    def __init__(
        self, dim: int, depth: int, heads: int, height: int, mlp_ratio: float, dropout: float
    ):
        super().__init__()
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, heads, mlp_ratio, dropout) for _ in range(depth)
        )
        kh = 3 if height > 1 else 1  # a 1-row map needs only a horizontal kernel
        self.pos = nn.Conv2d(dim, dim, (kh, 3), padding=(kh // 2, 1), groups=dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, C, h, w)."""
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)  # (B, h*w, C)
        for i, block in enumerate(self.blocks):
            t = block(t)
            if i == 0:
                grid = t.transpose(1, 2).reshape(b, c, h, w)
                t = t + self.pos(grid).flatten(2).transpose(1, 2)
        return self.norm(t).transpose(1, 2).reshape(b, c, h, w)


class PatchMerge(nn.Module):
    """Merge ``factor`` vertically adjacent tokens into one; width untouched.

    (B, C_in, h, w) -> (B, C_out, h/factor, w): a (factor, 1) conv with equal stride,
    i.e. a linear map of the stacked tokens, then LayerNorm.
    """

    def __init__(self, c_in: int, c_out: int, factor: int):
        super().__init__()
        self.factor = factor
        self.proj = nn.Conv2d(c_in, c_out, (factor, 1), stride=(factor, 1))
        self.norm = nn.LayerNorm(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, h, w) -> (B, C_out, h/factor, w)."""
        y = self.proj(x)
        return self.norm(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class PyramidViTEncoder(TextEncoder):
    """Multi-stage vision transformer (PerSec-ViT).

    Stage 1: 4×4 patches at stride 4 -> an (H/4, W/4) token map + blocks. Stages
    2..n-1 halve the height with a :class:`PatchMerge`; the last stage merges all
    remaining rows, so its blocks run on the 1-D sequence of W/4 tokens.

    Args:
        in_channels: image channels.
        widths, depths, heads: per stage.
        input_height: the only image height accepted (32 by default).
        mlp_ratio, dropout: of every transformer block.
    """

    def __init__(
        self,
        in_channels: int = 3,
        widths: Sequence[int] = (64, 128, 256),
        depths: Sequence[int] = (2, 2, 4),
        heads: Sequence[int] = (2, 4, 8),
        input_height: int = 32,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
    ):
        super().__init__(in_channels)
        self.low_channels, self.out_channels = widths[0], widths[-1]
        self.input_height = input_height
        h = self.low_height(input_height)
        self.patch_embed = nn.Conv2d(in_channels, widths[0], 4, stride=4)
        self.embed_norm = nn.LayerNorm(widths[0])
        self.stage1 = ViTStage(widths[0], depths[0], heads[0], h, mlp_ratio, dropout)
        merges, stages = [], []
        for i in range(1, len(widths)):
            f = h if i == len(widths) - 1 else min(2, h)
            h //= f
            merges.append(PatchMerge(widths[i - 1], widths[i], f))
            stages.append(ViTStage(widths[i], depths[i], heads[i], h, mlp_ratio, dropout))
        self.merges = nn.ModuleList(merges)
        self.stages = nn.ModuleList(stages)
        self.apply(_init_vit)

    def _low(self, x: torch.Tensor) -> torch.Tensor:
        if x.size(2) != self.input_height:
            raise ValueError(
                f"this ViT encoder was built for height {self.input_height}, got {x.size(2)} "
                "(set EncoderConfig.input_height)"
            )
        y = self.patch_embed(x)  # (B, C_l, H/4, W/4)
        y = self.embed_norm(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.stage1(y)

    def _high(self, low: torch.Tensor) -> torch.Tensor:
        y = low
        for merge, stage in zip(self.merges, self.stages, strict=True):
            y = stage(merge(y))
        return y.squeeze(2).transpose(1, 2)  # (B, W/4, C_h)


def _init_vit(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        nn.init.zeros_(m.bias)


def _build(cfg: EncoderConfig, lists: dict[str, list[int]], preset: dict) -> PyramidViTEncoder:
    return PyramidViTEncoder(
        cfg.in_channels, lists["widths"], lists["depths"], lists["heads"], cfg.input_height,
        cfg.mlp_ratio, cfg.dropout,
    )  # fmt: skip


register_encoder(EncoderSpec("vit", VIT_PRESETS, ("widths", "depths", "heads"), _build))
