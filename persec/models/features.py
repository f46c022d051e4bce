"""The encoder's output contract: the seam between pretraining and recognition."""

from __future__ import annotations

from typing import NamedTuple

import torch


class Features(NamedTuple):
    """What every encoder returns.

    A ``NamedTuple`` rather than a dataclass so that tracing, ONNX export and DDP treat
    it as a plain tuple of tensors.

    Attributes:
        low: stage-1 map at stride 4, before the stroke aggregator (the level the
            stroke perceiver masks and quantizes). # (B, C_l, H/4, W/4)
        high: final sequence, height collapsed to 1, after the semantic aggregator
            (the decoders' memory). # (B, T=W/4, C_h)
    """

    low: torch.Tensor
    high: torch.Tensor
