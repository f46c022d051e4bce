"""Text-image encoders: a ResNet (PerSec-CNN) and a pyramid vision transformer (PerSec-ViT).

Both map images ``(B, C_in, H, W)`` (H = 32, W a multiple of 4, values in [-1, 1]) to
:class:`~persec.models.features.Features` and share one split forward, so pretraining
can reach in between the levels::

    encode_low:  stem + stage 1 (stride 4 both ways)           -> low  (B, C_l, H/4, W/4)
    encode_high: stroke_aggregator -> stages 2..n (height only)
                 -> height collapsed to 1                       -> seq  (B, T=W/4, C_h)
    forward:     Features(low, semantic_aggregator(seq))

The aggregator slots hold windowed-attention :class:`~persec.models.attention.ContextAggregator`
modules (``EncoderConfig.aggregators``, on by default, so a pretrained encoder and a
recognizer built from the same config match); they stay on the forward path when
fine-tuning (method.md). With ``aggregators=false`` the slots are ``nn.Identity``.
Stage widths and depths are our choice; the paper does not give them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from persec.models.attention import AggregatorConfig, ContextAggregator, sdpa
from persec.models.features import Features

ENCODER_NAMES = ("resnet", "vit")
ENCODER_SIZES = ("tiny", "small", "base")

# stem = ResNet stem width; heads = ViT heads per stage. "tiny" exists for tests.
RESNET_PRESETS: dict[str, dict] = {
    "tiny": {"stem": 16, "widths": [16, 32, 32, 32], "depths": [1, 1, 1, 1]},
    # ~ the CRNN backbone of field-notes.md (5.1M params without the LSTM).
    "small": {"stem": 32, "widths": [64, 128, 256, 256], "depths": [2, 2, 2, 2]},
    # deep-text-recognition-benchmark's block counts (1, 2, 5, 3) and 512-wide top.
    "base": {"stem": 64, "widths": [128, 256, 512, 512], "depths": [1, 2, 5, 3]},
}
VIT_PRESETS: dict[str, dict] = {
    "tiny": {"widths": [16, 32, 32], "depths": [1, 1, 1], "heads": [1, 2, 2]},
    "small": {"widths": [64, 128, 256], "depths": [2, 2, 4], "heads": [2, 4, 8]},
    "base": {"widths": [128, 256, 512], "depths": [2, 2, 6], "heads": [2, 4, 8]},
}


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
        return input_height // 4

    def encode_low(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and stage 1. ``x`` (B, C_in, H, W) -> (B, C_l, H/4, W/4)."""
        if x.dim() != 4 or x.size(1) != self.in_channels:
            raise ValueError(f"expected images (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if x.size(2) % 4 or x.size(3) % 4:
            raise ValueError(
                f"image height and width must be multiples of 4, got {tuple(x.shape[2:])}"
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


# --------------------------------------------------------------------------- ResNet
def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    """Two 3×3 convs plus a shortcut. (B, C_in, H, W) -> (B, C_out, ⌈H/s_h⌉, ⌈W/s_w⌉)."""

    def __init__(self, c_in: int, c_out: int, stride: tuple[int, int] = (1, 1)):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        # Zero-init the last BN so each block starts as the identity: deep stacks train
        # from the first step without warm-up.
        nn.init.zeros_(self.bn2.weight)
        self.shortcut: nn.Module = nn.Identity()
        if stride != (1, 1) or c_in != c_out:
            # Average-pool before the 1×1 projection (ResNet-D) so the shortcut sees every
            # pixel instead of one in four.
            pool = (
                nn.AvgPool2d(stride, stride, ceil_mode=True) if stride != (1, 1) else nn.Identity()
            )
            self.shortcut = nn.Sequential(
                pool, nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H', W')."""
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x), inplace=True)


def _res_stage(c_in: int, c_out: int, depth: int, stride: tuple[int, int]) -> nn.Sequential:
    blocks = [BasicBlock(c_in, c_out, stride)]
    blocks += [BasicBlock(c_out, c_out) for _ in range(depth - 1)]
    return nn.Sequential(*blocks)


class ResNetEncoder(TextEncoder):
    """ResNet with basic blocks (PerSec-CNN).

    Stem: two 3×3 convs at full resolution and a 2×2 max-pool. Stage 1 halves both
    sides again (stride 4 in all). Later stages halve the height only (stride (2, 1))
    until it reaches 1; any height left after the last stage is averaged away.

    Args:
        in_channels: image channels.
        stem_channels: width of the stem.
        widths: channels per stage.
        depths: basic blocks per stage.
        input_height: image height used to plan the height strides.
    """

    def __init__(
        self,
        in_channels: int = 3,
        stem_channels: int = 32,
        widths: Sequence[int] = (64, 128, 256, 256),
        depths: Sequence[int] = (2, 2, 2, 2),
        input_height: int = 32,
    ):
        super().__init__(in_channels)
        self.low_channels, self.out_channels = widths[0], widths[-1]
        self.stem = nn.Sequential(
            _conv_bn_relu(in_channels, stem_channels // 2),
            _conv_bn_relu(stem_channels // 2, stem_channels),
            nn.MaxPool2d(2),
        )
        self.stage1 = _res_stage(stem_channels, widths[0], depths[0], (2, 2))
        stages, h = [], self.low_height(input_height)
        for i in range(1, len(widths)):
            s = 2 if h > 1 else 1
            h = (h + s - 1) // s
            stages.append(_res_stage(widths[i - 1], widths[i], depths[i], (s, 1)))
        self.stages = nn.Sequential(*stages)

    # The convolutions run channels-last (NHWC): on CPU the stem's BatchNorm, ReLU and
    # max-pool over the widest maps are several times faster that way (docs/throughput.md).
    # The low map leaves in the standard layout, since the stroke aggregator and the
    # perceivers reshape it. Same function; results differ only by summation order.
    def _low(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stage1(self.stem(x.contiguous(memory_format=torch.channels_last)))
        return y.contiguous()  # (B, C_l, H/4, W/4)

    def _high(self, low: torch.Tensor) -> torch.Tensor:
        y = self.stages(low.contiguous(memory_format=torch.channels_last))
        # (B, C_h, h, W/4), h = 1 at the planned height
        return y.mean(dim=2).transpose(1, 2)  # (B, W/4, C_h)


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


# --------------------------------------------------------------------------- factory
def build_encoder(cfg: EncoderConfig) -> TextEncoder:
    """An encoder from its config; presets fill the fields left empty.

    Raises:
        ValueError: unknown name or size, or per-stage lists of different lengths.
    """
    if cfg.name not in ENCODER_NAMES:
        raise ValueError(f"unknown encoder {cfg.name!r}: use one of {', '.join(ENCODER_NAMES)}")
    if cfg.size not in ENCODER_SIZES:
        raise ValueError(
            f"unknown encoder size {cfg.size!r}: use one of {', '.join(ENCODER_SIZES)}"
        )
    if cfg.input_height % 4:
        raise ValueError(f"input_height must be a multiple of 4, got {cfg.input_height}")
    preset = (RESNET_PRESETS if cfg.name == "resnet" else VIT_PRESETS)[cfg.size]
    widths = list(cfg.widths or preset["widths"])
    depths = list(cfg.depths or preset["depths"])
    lists = {"widths": widths, "depths": depths}
    if cfg.name == "vit":
        lists["heads"] = list(cfg.heads or preset["heads"])
    if len({len(v) for v in lists.values()}) != 1 or len(widths) < 2:
        raise ValueError(f"need at least 2 stages and equal-length per-stage lists, got {lists}")
    if min(widths + depths) < 1:
        raise ValueError(f"widths and depths must be positive, got {lists}")
    encoder: TextEncoder
    if cfg.name == "resnet":
        encoder = ResNetEncoder(
            cfg.in_channels, cfg.stem_channels or preset["stem"], widths, depths, cfg.input_height
        )
    else:
        encoder = PyramidViTEncoder(
            cfg.in_channels,
            widths,
            depths,
            lists["heads"],
            cfg.input_height,
            cfg.mlp_ratio,
            cfg.dropout,
        )
    if cfg.aggregators:
        low_h = encoder.low_height(cfg.input_height)
        encoder.stroke_aggregator = ContextAggregator(
            encoder.low_channels, 2, cfg.stroke_aggregator, feature_height=low_h
        )
        encoder.semantic_aggregator = ContextAggregator(
            encoder.out_channels, 1, cfg.semantic_aggregator
        )
    return encoder
