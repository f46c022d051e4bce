"""SeqCLR (Aberdam et al., CVPR 2021): contrast two augmented views, instance by instance.

The baseline PerSec compares with (method.md)::

    v1, v2 = augment(x), augment(x)                      # (B, C, H, W) each
    z = projection(encoder(cat[v1, v2]).high)            # (2B, T, D)
    instances = instance_map(z, K)                       # (2B, K, D)
    loss = nt_xent(instances of v1, instances of v2, τ)  # over 2·B·K instances

Every other instance in the batch, of either view and of the same image too, is a
negative. Values marked [SeqCLR] follow the paper; the augmentation ranges are those of
the imgaug recipe that public re-implementations attribute to its appendix (not checked
against the paper itself). Values marked [ours] are our choice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from persec.data.augment import AugmentConfig, augment
from persec.models.encoders.base import TextEncoder
from persec.objectives.persec import PersecOutput
from persec.objectives.registry import register_objective

PROJECTIONS = ("mlp", "linear", "none")


@dataclass
class SeqCLRConfig:
    """The objective's settings.

    Attributes:
        instances: K, windows the frame sequence is average-pooled into (window-to-instance
            [SeqCLR: 5]); 1 = all-to-instance, 0 = frame-to-instance (every frame).
        projection: head on each frame: ``mlp`` (Linear-ReLU-Linear, hidden width C_h),
            ``linear`` or ``none`` [SeqCLR compares none, MLP and BiLSTM heads; ours: mlp].
        projection_dim: D, output width of the head; ignored for ``none`` [ours: 128].
        temperature: τ of NT-Xent [ours: 0.1].
        augment: the augmentations of both views.
    """

    instances: int = 5
    projection: str = "mlp"
    projection_dim: int = 128
    temperature: float = 0.1
    augment: AugmentConfig = field(default_factory=AugmentConfig)


def instance_map(frames: torch.Tensor, instances: int) -> torch.Tensor:
    """Average-pool frames (B, T, C) into K = ``instances`` windows -> (B, K, C).

    K = 1 is all-to-instance; K = 0 keeps every frame (frame-to-instance, K = T).
    """
    t = frames.size(1)
    if not 0 <= instances <= t:
        raise ValueError(f"instances must be in [0, T={t}], got {instances}")
    if instances == 0:
        return frames
    return F.adaptive_avg_pool1d(frames.transpose(1, 2), instances).transpose(1, 2)


def nt_xent(
    a: torch.Tensor, b: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """NT-Xent (SimCLR's loss): each of the 2N instances against its pair (positive) and
    the other 2N − 2 (negatives); cosine / τ, self excluded, mean over all 2N anchors.

    Args:
        a: one view's instances; row i of ``a`` and row i of ``b`` are a positive
            pair. # (N, D)
        b: the other view's instances, in the same order. # (N, D)
        temperature: τ.

    Returns:
        (loss, accuracy): accuracy is the share of anchors whose positive has the
        highest logit. # (), ()
    """
    n = a.size(0)
    if n < 2 or b.shape != a.shape:
        raise ValueError(f"need two (N, D) sets, N >= 2; got {tuple(a.shape)}, {tuple(b.shape)}")
    z = F.normalize(torch.cat([a, b]).float(), dim=-1)  # (2N, D)
    logits = z @ z.T / temperature  # (2N, 2N)
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), -math.inf)
    target = torch.arange(2 * n, device=z.device).roll(n)  # i ↔ i + N
    loss = F.cross_entropy(logits, target)
    accuracy = (logits.argmax(1) == target).float().mean()
    return loss, accuracy


class SeqCLRObjective(nn.Module):
    """Holds the projection head; the encoder is passed to :meth:`forward`.

    Args:
        encoder: the encoder to pretrain (read for its output width C_h).
        cfg: the objective's settings.

    Raises:
        ValueError: unknown ``projection`` or a negative ``instances``.
    """

    def __init__(self, encoder: TextEncoder, cfg: SeqCLRConfig | None = None):
        super().__init__()
        cfg = cfg or SeqCLRConfig()
        if cfg.projection not in PROJECTIONS:
            raise ValueError(
                f"projection must be one of {', '.join(PROJECTIONS)}, got {cfg.projection!r}"
            )
        if cfg.instances < 0:
            raise ValueError(f"instances must be >= 0, got {cfg.instances}")
        self.cfg = cfg
        c, d = encoder.out_channels, cfg.projection_dim
        self.projection: nn.Module = {
            "mlp": lambda: nn.Sequential(nn.Linear(c, c), nn.ReLU(inplace=True), nn.Linear(c, d)),
            "linear": lambda: nn.Linear(c, d),
            "none": nn.Identity,
        }[cfg.projection]()

    def set_step(self, step: int) -> None:
        """No schedule to follow; the same interface as the PerSec objective."""

    def forward(
        self, encoder: TextEncoder, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> PersecOutput:
        """NT-Xent between the instances of two views of ``images`` (B, C, H, W) in [-1, 1]."""
        b = images.size(0)
        views = [augment(images, self.cfg.augment, generator) for _ in range(2)]
        frames = encoder(torch.cat(views)).high  # (2B, T, C_h)
        z = instance_map(self.projection(frames), self.cfg.instances)  # (2B, K, D)
        k = z.size(1)
        first, second = z[:b].reshape(b * k, -1), z[b:].reshape(b * k, -1)  # (B·K, D)
        loss, accuracy = nt_xent(first, second, self.cfg.temperature)
        logs: dict[str, torch.Tensor | float] = {
            "seqclr/contrastive": loss.detach(),
            "seqclr/acc": accuracy.detach(),
            "seqclr/chance": 1.0 / (2 * b * k - 1),
            "seqclr/instances": float(k),
        }
        return PersecOutput(loss=loss, logs=logs)


register_objective("seqclr", SeqCLRObjective)
