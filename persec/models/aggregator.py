"""The W-MHSA context aggregator: windowed transformer blocks over a 2-D map (stroke
level) or a sequence (semantic level), in the encoder's layouts (B, C, H, W) and
(B, T, C)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from persec.models.attention import WindowAttention1d, WindowAttention2d

SEMANTIC_WINDOW = 10  # [paper] ω of the semantic perceiver


@dataclass
class AggregatorConfig:
    """One context aggregator (W-MHSA transformer between two projections).

    Attributes:
        dim: width of every linear layer inside [paper: 128].
        heads: attention heads [paper: 8].
        blocks: transformer blocks [ours: 2].
        window: window size ω; 0 = automatic: half the feature height for 2-D maps,
            10 for 1-D sequences [paper].
        shift: shift the windows by ω/2 in every second block (Swin) [ours].
        mlp_ratio: MLP hidden width / dim [ours: 1.0, reading "all linear layers 128
            wide" literally; Swin uses 4.0].
        dropout: on attention weights, attention output and MLP output [ours].
        global_attention: ablation: attend over the whole map / sequence instead of
            windows (ω then only bounds the relative position bias).
        identity_init: zero the output projection so the aggregator starts as the
            identity and does not disturb the encoder it is dropped into [ours].
    """

    dim: int = 128
    heads: int = 8
    blocks: int = 2
    window: int = 0
    shift: bool = True
    mlp_ratio: float = 1.0
    dropout: float = 0.0
    global_attention: bool = False
    identity_init: bool = True


def resolve_window(cfg: AggregatorConfig, ndim: int, feature_height: int = 0) -> int:
    """ω for a ``ndim``-D aggregator: ``cfg.window``, or the paper's rule when it is 0.

    Raises:
        ValueError: automatic 2-D window without a ``feature_height``.
    """
    if cfg.window > 0:
        return cfg.window
    if ndim == 1:
        return SEMANTIC_WINDOW
    if feature_height < 1:
        raise ValueError("window=0 (half the feature height) needs feature_height for 2-D maps")
    return max(1, feature_height // 2)


class WindowTransformerBlock(nn.Module):
    """Pre-norm block: x + W-MHSA(LN(x)), then x + MLP(LN(x)).

    Works channel-last: (B, H, W, C) maps when ``ndim`` is 2, (B, T, C) sequences when 1.

    Args:
        dim, heads, window, shift, dropout, global_attention: of the attention layer.
        ndim: 2 for maps (ω×ω windows), 1 for sequences.
        mlp_ratio: MLP hidden width / dim.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        window: int,
        ndim: int = 2,
        shift: bool = False,
        mlp_ratio: float = 1.0,
        dropout: float = 0.0,
        global_attention: bool = False,
    ):
        super().__init__()
        if ndim not in (1, 2):
            raise ValueError(f"ndim must be 1 or 2, got {ndim}")
        attn_cls = WindowAttention2d if ndim == 2 else WindowAttention1d
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attn_cls(
            dim, heads, window, shift=shift, dropout=dropout, global_attention=global_attention
        )
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) or (B, T, C) -> same."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ContextAggregator(nn.Module):
    """Encoder-slot aggregator: x + proj_out(LN(blocks(proj_in(x)))), shape preserved.

    Blocks alternate unshifted / shifted windows (when ``cfg.shift``). Drops into
    ``TextEncoder.stroke_aggregator`` (``ndim=2``, (B, C, H, W)) and
    ``semantic_aggregator`` (``ndim=1``, (B, T, C)).

    Args:
        channels: C of the features it aggregates.
        ndim: 2 for stroke maps, 1 for semantic sequences.
        cfg: hyper-parameters; defaults are the paper's.
        feature_height: height of the maps it is built for; needed by the automatic
            2-D window (ω = feature_height / 2).
    """

    def __init__(
        self,
        channels: int,
        ndim: int,
        cfg: AggregatorConfig | None = None,
        feature_height: int = 0,
    ):
        super().__init__()
        cfg = cfg or AggregatorConfig()
        if ndim not in (1, 2):
            raise ValueError(f"ndim must be 1 or 2, got {ndim}")
        self.channels, self.ndim = channels, ndim
        self.window = resolve_window(cfg, ndim, feature_height)
        self.proj_in = nn.Linear(channels, cfg.dim)
        self.blocks = nn.ModuleList(
            WindowTransformerBlock(
                cfg.dim,
                cfg.heads,
                self.window,
                ndim,
                shift=cfg.shift and i % 2 == 1,
                mlp_ratio=cfg.mlp_ratio,
                dropout=cfg.dropout,
                global_attention=cfg.global_attention,
            )
            for i in range(cfg.blocks)
        )
        self.norm = nn.LayerNorm(cfg.dim)
        self.proj_out = nn.Linear(cfg.dim, channels)
        if cfg.identity_init:
            nn.init.zeros_(self.proj_out.weight)
            nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W) when ndim is 2; (B, T, C) -> (B, T, C) when 1."""
        if self.ndim == 2:
            if x.dim() != 4 or x.size(1) != self.channels:
                raise ValueError(f"expected (B, {self.channels}, H, W), got {tuple(x.shape)}")
            t = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        else:
            if x.dim() != 3 or x.size(2) != self.channels:
                raise ValueError(f"expected (B, T, {self.channels}), got {tuple(x.shape)}")
            t = x
        y = self.proj_in(t)
        for block in self.blocks:
            y = block(y)
        y = self.proj_out(self.norm(y))
        return x + (y.permute(0, 3, 1, 2) if self.ndim == 2 else y)
