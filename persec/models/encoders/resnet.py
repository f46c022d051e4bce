"""The ResNet encoder (PerSec-CNN): the deep-text-recognition-benchmark / SeqCLR family."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from persec.models.encoders.base import EncoderConfig, EncoderSpec, TextEncoder, register_encoder

# stem = ResNet stem width; heads = ViT heads per stage. "tiny" exists for tests.
RESNET_PRESETS: dict[str, dict] = {
    "tiny": {"stem": 16, "widths": [16, 32, 32, 32], "depths": [1, 1, 1, 1]},
    # ~ the CRNN backbone of field-notes.md (5.1M params without the LSTM).
    "small": {"stem": 32, "widths": [64, 128, 256, 256], "depths": [2, 2, 2, 2]},
    # deep-text-recognition-benchmark's block counts (1, 2, 5, 3) and 512-wide top.
    "base": {"stem": 64, "widths": [128, 256, 512, 512], "depths": [1, 2, 5, 3]},
}


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


def _build(cfg: EncoderConfig, lists: dict[str, list[int]], preset: dict) -> ResNetEncoder:
    stem = cfg.stem_channels or preset["stem"]
    return ResNetEncoder(cfg.in_channels, stem, lists["widths"], lists["depths"], cfg.input_height)


register_encoder(EncoderSpec("resnet", RESNET_PRESETS, ("widths", "depths"), _build))
