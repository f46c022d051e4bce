"""Text-image encoders: a ResNet (PerSec-CNN) and a pyramid vision transformer (PerSec-ViT).

Both map images ``(B, C_in, H, W)`` (H = 32, W a multiple of 4, values in [-1, 1]) to
:class:`~persec.models.features.Features` and share one split forward, so pretraining
can reach in between the levels::

    encode_low:  stem + stage 1 (stride 4 both ways)           -> low  (B, C_l, H/4, W/4)
    encode_high: stroke_aggregator -> stages 2..n (height only)
                 -> height collapsed to 1                       -> seq  (B, T=W/4, C_h)
    forward:     Features(low, semantic_aggregator(seq))

The aggregator slots hold windowed-attention :class:`~persec.models.aggregator.ContextAggregator`
modules (``EncoderConfig.aggregators``, on by default, so a pretrained encoder and a
recognizer built from the same config match); they stay on the forward path when
fine-tuning (method.md). With ``aggregators=false`` the slots are ``nn.Identity``.
Stage widths and depths are our choice; the paper does not give them.

A family registers itself with :func:`register_encoder` (its presets and builder);
adding one is a module in this package and its name in
``persec/models/encoders/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from persec.models.aggregator import AggregatorConfig, ContextAggregator
from persec.models.features import Features
from persec.registry import Registry

# Every encoder halves height and width twice before the aggregators and keeps the
# width stride at 4 from then on: one output frame per FRAME_STRIDE image columns.
FRAME_STRIDE = 4


@dataclass
class EncoderConfig:
    """Which encoder to build; list/zero fields left empty take the size preset.

    Attributes:
        name: ``resnet`` (CNN of the deep-text-recognition-benchmark / SeqCLR family)
            or ``vit`` (multi-stage pyramid transformer).
        size: ``tiny`` (tests), ``small`` (CPU runs) or ``base`` (GPU runs).
        in_channels: image channels (3 for RGB, 1 for grey).
        input_height: image height the encoder is built for. The ViT's last stage merges
            all remaining rows into one, so it accepts only this height; the ResNet
            uses it to stop halving the height at 1 and accepts any height.
        widths: channels per stage; ``widths[0]`` is C_l, ``widths[-1]`` is C_h.
        depths: blocks per stage, same length as ``widths``.
        heads: ViT attention heads per stage (each must divide its width).
        stem_channels: ResNet stem width (0 = preset).
        mlp_ratio: ViT MLP hidden size / width.
        dropout: ViT dropout on attention and MLP outputs.
        aggregators: put W-MHSA context aggregators in the two slots [ours: the
            perceivers' aggregators stay on the forward path, method.md].
        stroke_aggregator: the aggregator on the ``low`` map (ω = half its height).
        semantic_aggregator: the aggregator on the sequence (ω = 10).
    """

    name: str = "resnet"
    size: str = "small"
    in_channels: int = 3
    input_height: int = 32
    widths: list[int] = field(default_factory=list)
    depths: list[int] = field(default_factory=list)
    heads: list[int] = field(default_factory=list)
    stem_channels: int = 0
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    aggregators: bool = True
    stroke_aggregator: AggregatorConfig = field(default_factory=AggregatorConfig)
    semantic_aggregator: AggregatorConfig = field(default_factory=AggregatorConfig)


class TextEncoder(nn.Module):
    """Base of both families: the split forward and the aggregator slots.

    Subclasses set ``low_channels`` (C_l) and ``out_channels`` (C_h) and implement
    ``_low`` (stem + stage 1) and ``_high`` (stages 2..n + height collapse).
    """

    low_channels: int
    out_channels: int

    def __init__(self, in_channels: int):
        super().__init__()
        self.in_channels = in_channels
        # Slots: (B, C_l, H_l, W_l) -> same and (B, T, C_h) -> same.
        self.stroke_aggregator: nn.Module = nn.Identity()
        self.semantic_aggregator: nn.Module = nn.Identity()

    @staticmethod
    def low_height(input_height: int) -> int:
        """Height of the ``low`` map for images of height ``input_height``."""
        return input_height // FRAME_STRIDE

    def encode_low(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and stage 1. ``x`` (B, C_in, H, W) -> (B, C_l, H/4, W/4)."""
        if x.dim() != 4 or x.size(1) != self.in_channels:
            raise ValueError(f"expected images (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if x.size(2) % FRAME_STRIDE or x.size(3) % FRAME_STRIDE:
            raise ValueError(
                f"image height and width must be multiples of {FRAME_STRIDE}, "
                f"got {tuple(x.shape[2:])}"
            )
        return self._low(x)

    def encode_high(self, low: torch.Tensor) -> torch.Tensor:
        """Stroke aggregator, stages 2..n, height collapse. (B, C_l, h, w) -> (B, T=w, C_h)."""
        return self._high(self.stroke_aggregator(low))

    def forward(self, x: torch.Tensor) -> Features:
        """(B, C_in, H, W) -> Features(low (B, C_l, H/4, W/4), high (B, W/4, C_h))."""
        low = self.encode_low(x)
        return Features(low=low, high=self.semantic_aggregator(self.encode_high(low)))

    def _low(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _high(self, low: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class EncoderSpec:
    """A registered encoder family.

    Attributes:
        name: its ``model.encoder.name``.
        presets: size → the defaults of its per-stage lists (``widths``, ``depths``,
            and ``heads`` where ``stage_lists`` has it) and any other preset value.
        stage_lists: the :class:`EncoderConfig` list fields it needs, one entry per stage.
        build: ``(cfg, lists, preset) -> TextEncoder`` with ``lists`` resolved (the
            config's own or the preset's) and checked.
    """

    name: str
    presets: dict[str, dict]
    stage_lists: tuple[str, ...]
    build: Callable[[EncoderConfig, dict[str, list[int]], dict], TextEncoder]


ENCODERS: Registry[EncoderSpec] = Registry("encoder")


def register_encoder(spec: EncoderSpec) -> EncoderSpec:
    """Add a family to :data:`ENCODERS` (a module of this package calls it on import)."""
    return ENCODERS.register(spec.name, spec)


def build_encoder(cfg: EncoderConfig) -> TextEncoder:
    """An encoder from its config; presets fill the fields left empty.

    Raises:
        ValueError: unknown name or size, or per-stage lists of different lengths.
    """
    spec = ENCODERS.get(cfg.name)
    if cfg.size not in spec.presets:
        raise ValueError(f"unknown encoder size {cfg.size!r}: use one of {', '.join(spec.presets)}")
    if cfg.input_height % 4:
        raise ValueError(f"input_height must be a multiple of 4, got {cfg.input_height}")
    preset = spec.presets[cfg.size]
    lists = {key: list(getattr(cfg, key) or preset[key]) for key in spec.stage_lists}
    widths, depths = lists["widths"], lists["depths"]
    if len({len(v) for v in lists.values()}) != 1 or len(widths) < 2:
        raise ValueError(f"need at least 2 stages and equal-length per-stage lists, got {lists}")
    if min(widths + depths) < 1:
        raise ValueError(f"widths and depths must be positive, got {lists}")
    encoder = spec.build(cfg, lists, preset)
    if cfg.aggregators:
        low_h = encoder.low_height(cfg.input_height)
        encoder.stroke_aggregator = ContextAggregator(
            encoder.low_channels, 2, cfg.stroke_aggregator, feature_height=low_h
        )
        encoder.semantic_aggregator = ContextAggregator(
            encoder.out_channels, 1, cfg.semantic_aggregator
        )
    return encoder
