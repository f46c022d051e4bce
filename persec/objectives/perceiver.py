"""Context perceiver: mask → aggregate → pick the true quantized feature among distractors.

One perceiver serves one level of the encoder (method.md, steps 1–7):

1. targets q = Quantizer(z) at the masked positions, from the *unmasked* features z;
2. the masked positions of z are replaced with a learned vector;
3. the encoder's aggregator (a slot of :class:`~persec.models.encoders.base.TextEncoder`,
   passed in, not owned) turns the masked features into context c;
4. a contrastive loss asks c_t to be closer (cosine, temperature κ) to q_t than to K
   distractors drawn from the other masked positions of the same image;
5. a diversity loss keeps the codebooks in use and a feature penalty keeps z small.

Stroke maps (B, C, H, W) and semantic sequences (B, T, C) are both handled; positions
of a map are read in raster order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from persec.objectives.contrastive import contrastive_loss, other_images
from persec.objectives.masking import apply_mask, span_mask
from persec.objectives.quantizer import GumbelProductQuantizer, QuantizerConfig


@dataclass
class PerceiverConfig:
    """Hyper-parameters of one :class:`ContextPerceiver`.

    Attributes:
        mask_prob: masking probability p [paper: 0.2 stroke, 0.15 semantic].
        mask_span: span length m [paper: 1].
        num_negatives: distractors K per masked position, from the same image's other
            masked positions, capped at (masked − 1) [ours, wav2vec 2.0: 100].
        cross_image_negatives: extra distractors per position from the masked positions
            of the other images in the batch (for short sequences) [ours: 0].
        same_position_negatives: extra distractors per position: the targets at the
            *same* position in other images of the batch (drawn with replacement,
            at most B − 1), kept even when their code equals the positive's
            [ours: 0; configs/pretrain/cpu.yaml: 16]. Without them a target that encodes only
            its position (not the content there) wins the contrast for free, since
            every distractor comes from another position.
        logit_temp: κ of the contrastive softmax [paper: 0.1].
        final_dim: width c and q are compared in, after one linear projection each;
            0 = the quantizer's code width [ours].
        quantizer: the target quantizer [paper: G = 2, V = 256].
    """

    mask_prob: float = 0.2
    mask_span: int = 1
    num_negatives: int = 100
    cross_image_negatives: int = 0
    same_position_negatives: int = 0
    logit_temp: float = 0.1
    final_dim: int = 0
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)


class _GradMultiply(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


def grad_multiply(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity forward, gradient × ``scale`` backward (scale 1 is a no-op)."""
    return x if scale == 1.0 else _GradMultiply.apply(x, scale)


@dataclass
class PerceiverOutput:
    """One level's losses and diagnostics (all scalars but ``mask``).

    Attributes:
        contrastive: L_c.
        diversity: L_d = (G·V − prob_ppl)/(G·V).
        feature_penalty: L_f = mean(z²).
        accuracy: contrastive accuracy (positive ranked first).
        chance: accuracy of random scores given the distinct distractors.
        code_ppl, prob_ppl: quantizer perplexities over the masked positions.
        temperature: Gumbel τ used.
        code_agreement: share of target codes equal to the noise-free argmax.
        num_negatives: distractors per position (within + cross image).
        mask: the positions masked. # (B, H, W) or (B, T), bool
    """

    contrastive: torch.Tensor
    diversity: torch.Tensor
    feature_penalty: torch.Tensor
    accuracy: torch.Tensor
    chance: torch.Tensor
    code_ppl: torch.Tensor
    prob_ppl: torch.Tensor
    temperature: float
    code_agreement: torch.Tensor
    num_negatives: int
    mask: torch.Tensor


class ContextPerceiver(nn.Module):
    """Mask vector, quantizer and projections of one level; the aggregator comes from
    the encoder at call time, so the encoder keeps it for fine-tuning.

    Args:
        channels: C of the features (C_l for stroke, C_h for semantic).
        ndim: 2 for (B, C, H, W) maps, 1 for (B, T, C) sequences.
        cfg: hyper-parameters.
    """

    def __init__(self, channels: int, ndim: int, cfg: PerceiverConfig | None = None):
        super().__init__()
        cfg = cfg or PerceiverConfig()
        if ndim not in (1, 2):
            raise ValueError(f"ndim must be 1 or 2, got {ndim}")
        self.channels, self.ndim, self.cfg = channels, ndim, cfg
        self.mask_embedding = nn.Parameter(torch.empty(channels).uniform_())
        self.quantizer = GumbelProductQuantizer.from_config(channels, cfg.quantizer)
        final = cfg.final_dim or self.quantizer.code_dim
        self.project_context = nn.Linear(channels, final)
        self.project_target = nn.Linear(self.quantizer.code_dim, final)

    def positions(self, z: torch.Tensor) -> torch.Tensor:
        """Features as a channel-last list of positions. -> (B, N, C)."""
        if self.ndim == 2:
            if z.dim() != 4 or z.size(1) != self.channels:
                raise ValueError(f"expected (B, {self.channels}, H, W), got {tuple(z.shape)}")
            return z.flatten(2).transpose(1, 2)
        if z.dim() != 3 or z.size(2) != self.channels:
            raise ValueError(f"expected (B, T, {self.channels}), got {tuple(z.shape)}")
        return z

    def make_mask(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A span mask for ``z``: (B, H, W) for maps, (B, T) for sequences."""
        shape = (z.size(0), *z.shape[2:]) if self.ndim == 2 else z.shape[:2]
        return span_mask(shape, self.cfg.mask_prob, self.cfg.mask_span, generator, device=z.device)

    def forward(
        self,
        z: torch.Tensor,
        aggregator: Callable[[torch.Tensor], torch.Tensor],
        mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> PerceiverOutput:
        """Losses of one level.

        Args:
            z: unmasked features; (B, C, H, W) when ndim is 2, (B, T, C) when 1.
            aggregator: the encoder's aggregator for this level (shape-preserving).
            mask: positions to mask (default: a fresh span mask). # (B, H, W) / (B, T)
            generator: randomness of the mask, Gumbel noise and distractors.
        """
        zl = self.positions(z)  # (B, N, C); checks the layout first
        if mask is None:
            mask = self.make_mask(z, generator)
        context = self.positions(aggregator(apply_mask(z, mask, self.mask_embedding)))
        return self.score(zl, context, mask, generator)

    def score(
        self,
        zl: torch.Tensor,
        context: torch.Tensor,
        mask: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> PerceiverOutput:
        """Losses given the context already computed: ``forward`` masks features;
        input masking [ours] computes ``context`` from a masked image instead.

        Args:
            zl: unmasked features as positions, the targets' source. # (B, N, C)
            context: aggregated features of the masked input, same positions. # (B, N, C)
            mask: the positions to predict. # (B, H, W) / (B, T), bool
            generator: randomness of the Gumbel noise and distractors.
        """
        b = zl.size(0)
        flat = mask.reshape(b, -1)  # (B, N)
        n = int(flat[0].sum())
        if not bool((flat.sum(1) == n).all()):
            raise ValueError("every image must have the same number of masked positions")
        same_pos = min(self.cfg.same_position_negatives, b - 1)
        extra = None
        if same_pos > 0:
            # Targets everywhere (unmasked features); perplexities over masked positions.
            quant = self.quantizer(zl, mask=flat, generator=generator)  # (B, N, ·)
            every = self.project_target(quant.quantized.to(zl.dtype))  # (B, N, final)
            targets = every[flat].view(b, n, -1)
            codes = quant.indices[flat].view(b, n, -1)
            where = flat.nonzero()[:, 1].view(b, n)  # (B, n) position of each masked slot
            imgs = other_images(b, (b, n, same_pos), generator, zl.device)  # (B, n, Ks)
            extra = every[imgs, where[:, :, None]]  # (B, n, Ks, final)
        else:
            # Targets only where they are needed: the masked positions.
            quant = self.quantizer(zl[flat], generator=generator)  # (B·n, code_dim)
            targets = self.project_target(quant.quantized.to(zl.dtype)).view(b, n, -1)
            codes = quant.indices.view(b, n, -1)
        context = self.project_context(context[flat]).view(b, n, -1)  # (B, n, final)
        result = contrastive_loss(
            context,
            targets,
            codes=codes,
            num_negatives=self.cfg.num_negatives,
            cross_negatives=self.cfg.cross_image_negatives,
            kappa=self.cfg.logit_temp,
            generator=generator,
            extra=extra,
        )
        num_codes = self.quantizer.num_codes
        return PerceiverOutput(
            contrastive=result.loss,
            diversity=(num_codes - quant.prob_ppl) / num_codes,
            feature_penalty=zl.float().pow(2).mean(),
            accuracy=result.accuracy,
            chance=result.chance,
            code_ppl=quant.code_ppl,
            prob_ppl=quant.prob_ppl,
            temperature=quant.temperature,
            code_agreement=quant.agreement,
            num_negatives=result.logits.size(-1) - 1,
            mask=mask,
        )
