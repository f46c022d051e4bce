"""The PerSec objective: stroke and semantic context perceivers trained jointly.

Eqn. (4) of the paper, with every term its own weight (method.md):

    L = w_c^sem·L_c^sem + w_c^str·L_c^str + α_sem·L_d^sem + α_str·L_d^str
        + β_sem·L_f^sem + β_str·L_f^str,      α = 0.2, β = 0.1, w_c = 1 [paper]

Forward pass through the encoder's split API::

    low = encode_low(x)                                   # (B, C_l, H/4, W/4)
    stroke:   perceiver(grad×0.2(low), stroke_aggregator)
    z_high = encode_high(low)  (clean low, aggregator on)  # (B, T, C_h)
    semantic: perceiver(z_high, semantic_aggregator)

The gradient that reaches the encoder through the stroke perceiver is scaled by 0.2
[paper]. The semantic level sees the *unmasked* stroke features (as in fine-tuning), so
its targets are not built from masked input [ours]; the stroke aggregator therefore
runs twice, once on the masked and once on the clean map.

``mask_at="input"`` [ours] masks the *image* instead: spans of frame columns (the
pixels under T = W/4 frames) are set to ``input_mask_value`` before the encoder, the
context of both levels comes from that masked pass, and the targets from a second,
unmasked pass of the same encoder. Features at a masked column then cannot have seen
its pixels through a neighbour's receptive field (the leak of feature masking).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from persec.models.encoders.base import FRAME_STRIDE, TextEncoder
from persec.objectives.masking import mask_columns, roll_columns
from persec.objectives.perceiver import (
    ContextPerceiver,
    PerceiverConfig,
    PerceiverOutput,
    grad_multiply,
)
from persec.objectives.pixels import PixelHead
from persec.objectives.registry import register_objective

LEVELS = ("both", "stroke", "semantic")
MASK_AT = ("features", "input")


@dataclass
class PersecConfig:
    """The objective's settings; defaults are the paper's.

    Attributes:
        levels: ``both`` (PerSec), or ``stroke`` / ``semantic`` alone (ablations).
        stroke: stroke perceiver [paper: p = 0.2, m = 1].
        semantic: semantic perceiver [paper: p = 0.15, m = 1].
        stroke_contrastive_weight, semantic_contrastive_weight: weights of L_c [paper: 1].
        stroke_diversity_weight, semantic_diversity_weight: α [paper: 0.2].
        stroke_penalty_weight, semantic_penalty_weight: β [paper: 0.1].
        stroke_grad_scale: gradient multiplier from the stroke perceiver into the
            encoder [paper: 0.2].
        mask_at: ``features`` (the learned mask vector on encoder features, per level)
            [paper], or ``input`` (column spans of the image, both levels) [ours].
        input_mask_prob: share of frames masked with ``mask_at=input`` [ours].
        input_mask_span: frames per masked span with ``mask_at=input`` [ours].
        input_mask_value: what masked pixels become (images are in [-1, 1]) [ours].
        target_shift: ``mask_at=input`` only: the target pass sees the image rolled
            circularly by a random whole number of frames (uniform over all T per
            image), and its features are rolled back before they are compared, so
            where a target sits in the image it came from says nothing about where it
            sits in the context's. Without it the encoder learns to encode a frame's
            absolute position, which picks the target among the other positions of
            the same image without reading it (docs/pretraining-diagnostics.md,
            ``probe/position_acc``) [ours].
        detach_targets: targets from a no-gradient pass (``mask_at=input`` only):
            the encoder then learns through the context alone, and the feature
            penalty β has no effect [ours]. Either way BatchNorm's running statistics
            see both passes (the masked one too).
        pixel_weight: weight of a pixel-reconstruction term (``mask_at=input`` and the
            semantic level only): a linear head on the semantic context predicts the
            hidden pixels of each masked frame (:mod:`persec.objectives.pixels`)
            [ours: 0, off].
        pixel_rows: the height the images are pooled to for that target [ours].
        pixel_norm: standardise each frame's target pixels (MAE's norm_pix_loss) [ours].
    """

    levels: str = "both"
    stroke: PerceiverConfig = field(default_factory=lambda: PerceiverConfig(mask_prob=0.2))
    semantic: PerceiverConfig = field(default_factory=lambda: PerceiverConfig(mask_prob=0.15))
    stroke_contrastive_weight: float = 1.0
    semantic_contrastive_weight: float = 1.0
    stroke_diversity_weight: float = 0.2
    semantic_diversity_weight: float = 0.2
    stroke_penalty_weight: float = 0.1
    semantic_penalty_weight: float = 0.1
    stroke_grad_scale: float = 0.2
    mask_at: str = "features"
    input_mask_prob: float = 0.4
    input_mask_span: int = 3
    input_mask_value: float = 0.0
    target_shift: bool = False
    detach_targets: bool = False
    pixel_weight: float = 0.0
    pixel_rows: int = 32
    pixel_norm: bool = True


@dataclass
class PersecOutput:
    """Total loss and the per-level terms to log.

    Attributes:
        loss: Eqn. (4). # ()
        logs: ``{"stroke/contrastive": ..., "stroke/acc": ..., "semantic/prob_ppl": ...}``
            for each active level: contrastive, acc, chance, diversity, feature_penalty,
            code_ppl, prob_ppl, temperature, negatives, and in training code_agreement.
    """

    loss: torch.Tensor
    logs: dict[str, torch.Tensor | float]


class PersecObjective(nn.Module):
    """Holds the two perceivers (mask vectors, quantizers, projections); the encoder,
    with its aggregators, is passed to :meth:`forward`.

    Args:
        encoder: the encoder to pretrain (read for its widths and aggregators).
        cfg: the objective's settings.

    Raises:
        ValueError: unknown ``levels``, or an encoder without aggregators.
    """

    def __init__(self, encoder: TextEncoder, cfg: PersecConfig | None = None):
        super().__init__()
        cfg = cfg or PersecConfig()
        if cfg.levels not in LEVELS:
            raise ValueError(f"levels must be one of {', '.join(LEVELS)}, got {cfg.levels!r}")
        if cfg.mask_at not in MASK_AT:
            raise ValueError(f"mask_at must be one of {', '.join(MASK_AT)}, got {cfg.mask_at!r}")
        if isinstance(encoder.stroke_aggregator, nn.Identity) or isinstance(
            encoder.semantic_aggregator, nn.Identity
        ):
            raise ValueError(
                "PerSec pretraining needs an encoder with aggregators "
                "(model.encoder.aggregators=true)"
            )
        self.cfg = cfg
        self.stroke = (
            ContextPerceiver(encoder.low_channels, 2, cfg.stroke)
            if cfg.levels in ("both", "stroke")
            else None
        )
        self.semantic = (
            ContextPerceiver(encoder.out_channels, 1, cfg.semantic)
            if cfg.levels in ("both", "semantic")
            else None
        )
        self.pixels = None
        if cfg.pixel_weight != 0.0:
            if cfg.pixel_weight < 0 or cfg.pixel_rows < 1:
                raise ValueError("persec.pixel_weight must be >= 0 and pixel_rows >= 1")
            if cfg.mask_at != "input" or self.semantic is None:
                raise ValueError(
                    "persec.pixel_weight needs persec.mask_at=input and the semantic level "
                    "(a masked feature's neighbours have seen its pixels)"
                )
            self.pixels = PixelHead(
                encoder.out_channels, encoder.in_channels * cfg.pixel_rows * FRAME_STRIDE
            )
        if cfg.mask_at == "input":  # the mask vectors go unused; DDP needs no such params
            for _, perceiver in self.perceivers():
                perceiver.mask_embedding.requires_grad_(False)

    def perceivers(self) -> list[tuple[str, ContextPerceiver]]:
        """The active levels, by name."""
        return [(n, p) for n, p in (("stroke", self.stroke), ("semantic", self.semantic)) if p]

    def set_step(self, step: int) -> None:
        """Set the training step of both quantizers (temperature schedule)."""
        for _, p in self.perceivers():
            p.quantizer.set_step(step)

    def forward(
        self,
        encoder: TextEncoder,
        images: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> PersecOutput:
        """Eqn. (4) on a batch of images ``(B, C, H, W)`` in [-1, 1]."""
        c = self.cfg
        extra: dict[str, torch.Tensor] = {}
        outputs = (
            self._input_masked(encoder, images, generator, extra)
            if c.mask_at == "input"
            else self._feature_masked(encoder, images, generator)
        )
        total = self._total(outputs)
        if "pixel" in extra:
            total.loss = total.loss + c.pixel_weight * extra["pixel"]
            total.logs["pixel/mse"] = extra["pixel"].detach()
        return total

    def _feature_masked(self, encoder, images, generator) -> dict[str, PerceiverOutput]:
        """Per level: mask the level's features, aggregate, contrast [paper]."""
        low = encoder.encode_low(images)  # (B, C_l, H/4, W/4)
        outputs = {}
        for name, perceiver in self.perceivers():
            if name == "stroke":
                z = grad_multiply(low, self.cfg.stroke_grad_scale)
                outputs[name] = perceiver(z, encoder.stroke_aggregator, generator=generator)
            else:
                z = encoder.encode_high(low)  # (B, T, C_h)
                outputs[name] = perceiver(z, encoder.semantic_aggregator, generator=generator)
        return outputs

    def _input_masked(self, encoder, images, generator, extra) -> dict[str, PerceiverOutput]:
        """Mask column spans of the image; context from the masked pass, targets from an
        unmasked pass of the same encoder [ours]. The pixel term, if on, goes into
        ``extra["pixel"]``."""
        c = self.cfg
        frames = images.size(3) // FRAME_STRIDE  # T
        masked, mask = mask_columns(
            images, frames, c.input_mask_prob, c.input_mask_span, c.input_mask_value, generator
        )  # (B, C, H, W), (B, T)
        clean, shift = images, None
        if c.target_shift:  # frames, per image; the pixels move by shift·(W/T)
            where = generator.device if generator is not None else images.device
            shift = torch.randint(frames, (images.size(0),), generator=generator, device=where)
            images = roll_columns(images, shift * (images.size(3) // frames))
        with torch.set_grad_enabled(torch.is_grad_enabled() and not c.detach_targets):
            low = encoder.encode_low(images)  # (B, C_l, h, w) targets' source
            high = encoder.encode_high(low) if self.semantic is not None else None  # (B, T, C_h)
        if shift is not None:  # back to the context's frame positions
            low = roll_columns(low, -shift * (low.size(3) // frames))
            if high is not None:
                high = roll_columns(high.transpose(1, 2), -shift).transpose(1, 2)
        low_m = encoder.encode_low(masked)
        outputs = {}
        if self.stroke is not None:
            # The stroke path into the encoder is scaled as in feature masking [paper].
            context = encoder.stroke_aggregator(grad_multiply(low_m, c.stroke_grad_scale))
            h = low.size(2)
            cells = mask.repeat_interleave(low.size(3) // frames, dim=1)  # (B, w)
            stroke_mask = cells[:, None, :].expand(-1, h, -1)  # (B, h, w)
            z = grad_multiply(low, c.stroke_grad_scale)
            outputs["stroke"] = self.stroke.score(
                self.stroke.positions(z), self.stroke.positions(context), stroke_mask, generator
            )
        if self.semantic is not None:
            context = encoder.semantic_aggregator(encoder.encode_high(low_m))  # (B, T, C_h)
            outputs["semantic"] = self.semantic.score(high, context, mask, generator)
            if self.pixels is not None:
                extra["pixel"] = self.pixels.loss(context, clean, mask, c.pixel_rows, c.pixel_norm)
        return outputs

    def _total(self, outputs: dict[str, PerceiverOutput]) -> PersecOutput:
        """Eqn. (4) and the logs from the levels' outputs."""
        c = self.cfg
        loss = torch.zeros(
            (), dtype=torch.float32, device=next(iter(outputs.values())).contrastive.device
        )
        logs: dict[str, torch.Tensor | float] = {}
        weights = {
            "stroke": (
                c.stroke_contrastive_weight,
                c.stroke_diversity_weight,
                c.stroke_penalty_weight,
            ),
            "semantic": (
                c.semantic_contrastive_weight,
                c.semantic_diversity_weight,
                c.semantic_penalty_weight,
            ),
        }
        for name, out in outputs.items():
            w_c, w_d, w_f = weights[name]
            loss = (
                loss
                + w_c * out.contrastive
                + w_d * out.diversity
                + w_f * out.feature_penalty.to(loss.dtype)
            )
            logs.update(
                {
                    f"{name}/contrastive": out.contrastive.detach(),
                    f"{name}/acc": out.accuracy.detach(),
                    f"{name}/chance": out.chance.detach(),
                    f"{name}/diversity": out.diversity.detach(),
                    f"{name}/feature_penalty": out.feature_penalty.detach(),
                    f"{name}/code_ppl": out.code_ppl.detach(),
                    f"{name}/prob_ppl": out.prob_ppl.detach(),
                    f"{name}/temperature": out.temperature,
                    f"{name}/negatives": float(out.num_negatives),
                }
            )
            if self.training:  # always 1 in eval, where codes are the argmax
                logs[f"{name}/code_agreement"] = out.code_agreement.detach()
        return PersecOutput(loss=loss, logs=logs)


register_objective("persec", PersecObjective)
