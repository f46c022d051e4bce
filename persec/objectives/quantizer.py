"""Gumbel-softmax product quantizer: the perceivers' targets (method.md, step 4).

Each feature is projected to G groups of V logits; one entry per group is chosen and
the chosen entries are concatenated. Training chooses with a hard Gumbel-softmax
(straight-through: one-hot forward, softmax gradient backward), eval with the argmax
(``noise=False``, ours: training with the argmax too).
The temperature anneals with the training step, τ = max(τ_0·decay^step, τ_min). The
design follows wav2vec 2.0's quantizer; G = 2, V = 256 are the paper's values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class QuantizerConfig:
    """Hyper-parameters of a :class:`GumbelProductQuantizer` (the input width comes
    from the features it quantizes).

    Attributes:
        groups: codebooks G [paper: 2].
        entries: entries per codebook V [paper: 256].
        code_dim: width of the quantized vector, i.e. of the G concatenated entries
            (divisible by G); 0 = the input width [ours].
        temp_start: Gumbel temperature at step 0 [ours, wav2vec 2.0: 2.0].
        temp_end: lowest temperature [ours, wav2vec 2.0: 0.5].
        temp_decay: factor per training step [ours, wav2vec 2.0: 0.999995].
        init_std: std of the logit projection's initial weights [ours, wav2vec 2.0:
            1.0]. Logits then start far larger than the Gumbel noise, so the first
            targets are mostly a function of the features, not of the noise; with
            unit-variance logits (std C^-0.5) the targets start random and the
            contrastive task sits at its trivial minimum, loss log(n).
        noise: training draws each code from the Gumbel-perturbed logits [paper,
            wav2vec 2.0]; False = the noise-free argmax, forward and eval alike, with the
            same straight-through softmax(logits/τ) gradient [ours]. When the logits'
            gaps are not far above the noise's scale (~1), sampled targets are mostly
            noise: after 500 CPU steps a sampled code equalled the argmax at 16%
            (stroke) and 30% (semantic) of positions; argmax targets did not help
            there (docs/pretraining-diagnostics.md).
    """

    groups: int = 2
    entries: int = 256
    code_dim: int = 0
    temp_start: float = 2.0
    temp_end: float = 0.5
    temp_decay: float = 0.999995
    init_std: float = 1.0
    noise: bool = True


@dataclass
class QuantizerOutput:
    """What :meth:`GumbelProductQuantizer.forward` returns.

    Attributes:
        quantized: concatenated codebook entries, in the codebook's dtype (fp32 under
            autocast too). # (..., code_dim)
        indices: chosen entry per group. # (..., G), int64
        code_ppl: perplexity of the argmax codes (noise-free), summed over groups;
            in [G, G·V]. # ()
        prob_ppl: perplexity of the mean softmax, summed over groups; in [G, G·V].
            The diversity loss is (G·V − prob_ppl)/(G·V). # ()
        temperature: the Gumbel temperature used.
        agreement: share of codes (over the perplexities' positions and the groups)
            equal to the noise-free argmax: how much of a training target is the
            features' and how much the Gumbel noise's (1 in eval or without noise). # ()
    """

    quantized: torch.Tensor
    indices: torch.Tensor
    code_ppl: torch.Tensor
    prob_ppl: torch.Tensor
    temperature: float
    agreement: torch.Tensor


def _gumbel_noise(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard Gumbel noise shaped like ``like``: −log(−log u), u ~ U[0, 1).

    On CPU, torch draws random numbers on one thread: ``exponential_`` (what
    ``F.gumbel_softmax`` uses) took ~4× as long as ``uniform_`` here, and the
    stroke level draws one number per position, group and entry (8.4M per step of the
    CPU pretraining config), so u is drawn uniform and the two logarithms run on
    every core. u is clamped away from 0, so the noise is always finite (u < 1
    already holds).
    """
    u = torch.empty_like(like, dtype=torch.float32).uniform_(generator=generator)
    return u.clamp_(min=torch.finfo(torch.float32).tiny).log_().neg_().log_().neg_()


def gumbel_temperature(
    step: int, start: float = 2.0, end: float = 0.5, decay: float = 0.999995
) -> float:
    """τ at a training step: max(start·decay^step, end)."""
    return max(start * decay**step, end)


def _perplexity(mean_probs: torch.Tensor) -> torch.Tensor:
    """Σ_g exp(H(p̄_g)) of per-group distributions. (G, V) -> ()."""
    # clamp: 0·log 0 counts as 0, without a NaN in the backward pass.
    entropy = -(mean_probs * mean_probs.clamp_min(1e-12).log()).sum(-1)  # (G,)
    return entropy.exp().sum()


class GumbelProductQuantizer(nn.Module):
    """G codebooks of V entries; output = the G chosen entries, concatenated.

    Args:
        in_dim: width of the features to quantize.
        groups: codebooks G.
        entries: entries per codebook V.
        code_dim: output width (divisible by ``groups``); 0 = ``in_dim``.
        temp_start, temp_end, temp_decay: the temperature schedule.
        init_std: std of the initial logit-projection weights.
        noise: draw training codes from Gumbel-perturbed logits (False: the argmax).

    The trainer calls :meth:`set_step` with the global step before each forward, so the
    temperature is a pure function of the step and a resumed run reproduces it.
    """

    def __init__(
        self,
        in_dim: int,
        groups: int = 2,
        entries: int = 256,
        code_dim: int = 0,
        temp_start: float = 2.0,
        temp_end: float = 0.5,
        temp_decay: float = 0.999995,
        init_std: float = 1.0,
        noise: bool = True,
    ):
        super().__init__()
        code_dim = code_dim or in_dim
        if code_dim % groups:
            raise ValueError(f"code_dim {code_dim} is not divisible by {groups} groups")
        if entries < 2:
            raise ValueError(f"need at least 2 entries per codebook, got {entries}")
        self.groups, self.entries, self.code_dim = groups, entries, code_dim
        self.temp_start, self.temp_end, self.temp_decay = temp_start, temp_end, temp_decay
        self.step, self.noise = 0, noise
        self.proj = nn.Linear(in_dim, groups * entries)
        nn.init.normal_(self.proj.weight, std=init_std)
        nn.init.zeros_(self.proj.bias)
        # Zero-mean entries start near-orthogonal, so the cosine similarity between
        # different codes starts near 0 (wav2vec 2.0's uniform [0, 1) starts near 0.75).
        self.codebook = nn.Parameter(torch.randn(groups, entries, code_dim // groups))

    @classmethod
    def from_config(cls, in_dim: int, cfg: QuantizerConfig) -> GumbelProductQuantizer:
        """A quantizer for ``in_dim``-wide features from its config."""
        return cls(
            in_dim,
            cfg.groups,
            cfg.entries,
            cfg.code_dim,
            cfg.temp_start,
            cfg.temp_end,
            cfg.temp_decay,
            cfg.init_std,
            cfg.noise,
        )

    @property
    def num_codes(self) -> int:
        """G·V, the largest possible perplexity."""
        return self.groups * self.entries

    @property
    def temperature(self) -> float:
        """τ at the current step."""
        return gumbel_temperature(self.step, self.temp_start, self.temp_end, self.temp_decay)

    def set_step(self, step: int) -> None:
        """Set the training step the temperature is computed from."""
        self.step = int(step)

    set_num_updates = set_step  # fairseq's name for the same hook

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> QuantizerOutput:
        """Quantize every position of ``x``.

        Args:
            x: features. # (..., in_dim)
            mask: positions the perplexities are computed over (e.g. the masked ones);
                None = all. # (...), bool
            generator: for the Gumbel noise (training only); on ``x``'s device.

        Returns:
            :class:`QuantizerOutput`; ``quantized`` is (..., code_dim).
        """
        lead = x.shape[:-1]
        if mask is not None and mask.shape != lead:
            raise ValueError(f"mask {tuple(mask.shape)} does not match {tuple(lead)}")
        logits = self.proj(x).float().reshape(-1, self.groups, self.entries)  # (M, G, V)
        # No autocast past the projection: softmax, entropies and the codebook lookup
        # stay in fp32 under bf16 training.
        with torch.autocast(x.device.type, enabled=False):
            quantized, indices, code_ppl, prob_ppl, agreement = self._quantize(
                logits, mask, generator
            )
        return QuantizerOutput(
            quantized=quantized.reshape(*lead, self.code_dim),
            indices=indices.reshape(*lead, self.groups),
            code_ppl=code_ppl,
            prob_ppl=prob_ppl,
            temperature=self.temperature,
            agreement=agreement,
        )

    def _quantize(
        self, logits: torch.Tensor, mask: torch.Tensor | None, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, ...]:
        """Quantize logits (M, G, V) -> quantized (M, G, d), indices (M, G), code_ppl,
        prob_ppl, agreement."""
        g, v = self.groups, self.entries
        if mask is None:
            weights = torch.ones(logits.size(0), device=logits.device)  # (M,)
        else:
            weights = mask.reshape(-1).float()  # (M,)
        # Sum 0/1 weights, divide once: a collapsed code histogram is then exactly one-hot.
        total = weights.sum().clamp_min(1.0)
        probs = logits.softmax(-1)
        prob_ppl = _perplexity(torch.einsum("m,mgv->gv", weights, probs) / total)
        codes = logits.argmax(-1)  # (M, G)
        counts = torch.zeros(g, v, device=logits.device).scatter_add_(
            1, codes.T, weights.expand(g, -1)
        )  # (G, V): code histogram without an (M, G, V) one-hot
        code_ppl = _perplexity(counts / total)

        if not self.training:
            quantized = self.codebook[torch.arange(g, device=logits.device), codes]  # (M, G, d)
            return quantized, codes, code_ppl, prob_ppl, torch.ones(())
        if self.noise:
            logits = logits + _gumbel_noise(logits, generator)  # (M, G, V)
        soft = (logits / self.temperature).softmax(-1)  # (M, G, V)
        indices = soft.argmax(-1)
        # hard + (soft − soft): exactly one-hot forward, softmax gradient backward.
        onehot = F.one_hot(indices, v).to(soft.dtype) + (soft - soft.detach())
        quantized = torch.einsum("mgv,gvd->mgd", onehot, self.codebook.float())
        agreement = (weights[:, None] * (indices == codes)).sum() / (total * g)
        return quantized, indices, code_ppl, prob_ppl, agreement
