"""Can a pretraining shortcut be told from learning? Three measurements of a frozen
encoder, cheap enough to run at every pretraining validation [ours].

* **linear probe**: a linear CTC head trained for a few thousand steps on cached,
  standardised encoder outputs of rendered labelled words, scored (word accuracy and
  CER) on renders in held-out font families;
* **effective rank** of the encoder output (Roy & Vetterli 2007: exp of the entropy of
  the normalised singular values), of the stroke map too;
* **leak test** (PerSec): how well a masked position's code (the quantizer's argmax)
  is predicted by a linear classifier from the aggregator's input at its nearest
  unmasked neighbour on each side (same row) alone, beside the same classifier on the
  perceiver's context at that position, masked as the objective masks (``mask_at``:
  with input masking the aggregator's input is the masked image's features). When
  the neighbours do as well as the context, the task can be solved by copying what
  the neighbours' receptive fields already saw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from persec.charset import STANDARD_CHARSET, Charset, CTCTokenizer
from persec.data.render.config import SynthConfig
from persec.data.render.dataset import SynthDataset
from persec.image import ImageConfig, ToTensor
from persec.metrics import ScoreAccumulator
from persec.models.encoders.base import FRAME_STRIDE
from persec.objectives.masking import apply_mask, mask_columns
from persec.objectives.persec import PersecObjective


@dataclass
class ProbeConfig:
    """Settings of :func:`run_probe` [ours].

    Attributes:
        train_images: rendered labelled images (training fonts) the linear head learns
            from; 0 = no probe.
        test_images: rendered images in held-out font families it is scored on.
        train_seed, test_seed: renderer seeds (apart from the pretraining data's).
        steps: Adam steps of the linear head.
        batch_size: cached sequences per step.
        lr: Adam learning rate of the head.
        charset: what the head reads.
        leak: run the leak test (PerSec objectives only).
        leak_samples: masked positions per level the leak classifiers see at most.
        leak_steps: full-batch Adam steps of each leak classifier.
    """

    train_images: int = 0
    test_images: int = 500
    train_seed: int = 300
    test_seed: int = 301
    steps: int = 2000
    batch_size: int = 256
    lr: float = 3e-3
    charset: str = STANDARD_CHARSET
    leak: bool = True
    leak_samples: int = 5000
    leak_steps: int = 200


@dataclass
class ProbeSet:
    """Rendered images and labels, made once per run. images: (N, C, H, W)."""

    train_images: torch.Tensor
    train_labels: list[str]
    test_images: torch.Tensor
    test_labels: list[str]


@dataclass
class ProbeResult:
    """What :func:`run_probe` measured; ``leak`` maps a level to its
    ``neighbour_acc``, ``context_acc`` and ``majority`` (the most frequent code's share)."""

    word_acc: float
    cer: float
    char_loss: float
    rank: float
    low_rank: float
    position_acc: float
    leak: dict[str, dict[str, float]] = field(default_factory=dict)

    def logs(self) -> dict[str, float]:
        """Flat ``{"probe/word_acc": ..., "leak/semantic/neighbour_acc": ...}``."""
        out = {
            "probe/word_acc": self.word_acc,
            "probe/cer": self.cer,
            "probe/loss": self.char_loss,
            "probe/rank": self.rank,
            "probe/low_rank": self.low_rank,
            "probe/position_acc": self.position_acc,
        }
        for level, values in self.leak.items():
            out.update({f"leak/{level}/{k}": v for k, v in values.items()})
        return out


def _render(n: int, synth: SynthConfig, split: str, seed: int, image: ImageConfig, charset):
    data = SynthDataset(n, synth, split=split, seed=seed, transform=ToTensor(image))
    items = [data[i] for i in range(n)]
    labels = [charset.strip_unsupported(label) for _, label in items]
    return torch.stack([x for x, _ in items]), labels  # (N, C, H, W)


def make_probe_set(config: ProbeConfig, synth: SynthConfig, image: ImageConfig) -> ProbeSet:
    """Render the probe's training images (training fonts) and test images (held-out
    fonts), labels normalised to ``config.charset``."""
    charset = Charset.from_spec(config.charset)
    train = _render(config.train_images, synth, "train", config.train_seed, image, charset)
    test = _render(config.test_images, synth, "test", config.test_seed, image, charset)
    return ProbeSet(*train, *test)


def effective_rank(x: torch.Tensor) -> float:
    """exp(entropy of the normalised singular values) of the centred rows of ``x``
    (N, C): between 1 (one direction) and C (all directions used equally)."""
    x = x.float()
    s = torch.linalg.svdvals(x - x.mean(0, keepdim=True))
    p = s / s.sum().clamp_min(1e-12)
    return float(torch.exp(-(p * p.clamp_min(1e-12).log()).sum()))


def nearest_unmasked(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each position of each row of ``mask`` (R, W), True = masked: the column of
    the nearest unmasked position to its left and to its right, −1 where there is none.
    Returns two (R, W) int64 tensors."""
    w = mask.size(1)
    idx = torch.arange(w, device=mask.device).expand_as(mask)
    # Strictly left: the running maximum of unmasked columns, shifted by one.
    seen = torch.where(~mask, idx, -1).cummax(dim=1).values
    left = torch.cat([torch.full_like(seen[:, :1], -1), seen[:, :-1]], dim=1)
    seen_r = torch.where(~mask.flip(1), idx, -1).cummax(dim=1).values
    right_r = torch.cat([torch.full_like(seen_r[:, :1], -1), seen_r[:, :-1]], dim=1)
    right = torch.where(right_r >= 0, w - 1 - right_r, -1).flip(1)
    return left, right


def _leak_samples(seen, context, codes, mask) -> tuple[torch.Tensor, ...]:
    """Masked positions with an unmasked neighbour on both sides in their row: (the two
    neighbours' features in the aggregator's input, concatenated; the context there; the
    codes there). seen, context: (B, R, W, C); codes: (B, R, W, G); mask: (B, R, W)."""
    b, r, w = mask.shape
    left, right = (t.view(b, r, w) for t in nearest_unmasked(mask.reshape(b * r, w)))
    i, j, k = (mask & (left >= 0) & (right >= 0)).nonzero(as_tuple=True)
    neighbours = torch.cat([seen[i, j, left[i, j, k]], seen[i, j, right[i, j, k]]], dim=-1)
    return neighbours.float().cpu(), context[i, j, k].float().cpu(), codes[i, j, k].cpu()


def _leak_contexts(encoder, objective, x, low, pre, generator) -> dict[str, tuple]:
    """Per level, as the objective masks (the mask vector on features [paper] or image
    columns [ours]): (unmasked features, the codes' source; the aggregator's input, whose
    unmasked neighbours the leak classifier reads; context; mask), features as
    (B, R, W, C) rows, mask (B, R, W)."""
    cfg = objective.cfg
    out = {}
    if cfg.mask_at == "input":
        frames = x.size(3) // FRAME_STRIDE
        masked, fmask = mask_columns(
            x, frames, cfg.input_mask_prob, cfg.input_mask_span, cfg.input_mask_value, generator
        )  # (B, C, H, W), (B, T)
        low_m = encoder.encode_low(masked)
        if objective.stroke is not None:
            cells = fmask.repeat_interleave(low.size(3) // frames, dim=1)  # (B, w)
            mask = cells[:, None, :].expand(-1, low.size(2), -1)  # (B, h, w)
            out["stroke"] = (low, low_m, encoder.stroke_aggregator(low_m), mask)
        if objective.semantic is not None:
            pre_m = encoder.encode_high(low_m)  # (B, T, C_h)
            out["semantic"] = (pre, pre_m, encoder.semantic_aggregator(pre_m), fmask)
    else:
        for name, perceiver in objective.perceivers():
            z = low if name == "stroke" else pre
            agg = encoder.stroke_aggregator if name == "stroke" else encoder.semantic_aggregator
            mask = perceiver.make_mask(z, generator)  # (B, h, w) or (B, T)
            out[name] = (z, z, agg(apply_mask(z, mask, perceiver.mask_embedding)), mask)
    as_rows = {}
    for name, (z, seen, context, mask) in out.items():
        if name == "stroke":  # (B, C, h, w) maps -> (B, h, w, C) rows
            z, seen, context = (t.permute(0, 2, 3, 1) for t in (z, seen, context))
        else:  # (B, T, C) sequences -> one row
            z, seen, context, mask = z[:, None], seen[:, None], context[:, None], mask[:, None]
        as_rows[name] = (z, seen, context, mask)
    return as_rows


@torch.no_grad()  # not inference_mode: the heads train on these tensors
def _encode(encoder, objective, images, batch: int, leak: ProbeConfig | None, bf16: bool):
    """Encoder outputs (N, T, C_h) of ``images`` (on the CPU), a sample of the stroke
    map, and the leak test's inputs per level: (neighbours, context, codes)."""
    highs, lows = [], []
    leak_parts: dict[str, list[tuple]] = {}
    device = next(encoder.parameters()).device
    persec = isinstance(objective, PersecObjective) and leak is not None
    generator = torch.Generator(device).manual_seed(0)
    taken: dict[str, int] = {}
    for start in range(0, images.size(0), batch):
        x = images[start : start + batch].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            low = encoder.encode_low(x)  # (B, C_l, h, w)
            pre = encoder.encode_high(low)  # (B, T, C_h)
            high = encoder.semantic_aggregator(pre)  # (B, T, C_h)
            levels = _leak_contexts(encoder, objective, x, low, pre, generator) if persec else {}
        highs.append(high.float().cpu())
        lows.append(low.float().flatten(2).transpose(1, 2)[:, ::7].cpu())  # (B, ~N/7, C_l)
        for name, (z, seen, context, mask) in levels.items():
            if taken.get(name, 0) >= leak.leak_samples:
                continue
            quantizer = getattr(objective, name).quantizer
            codes = quantizer(z.float().flatten(1, 2)).indices  # (B, R·W, G)
            codes = codes.view(*mask.shape, -1)  # (B, R, W, G)
            part = _leak_samples(seen, context, codes, mask)
            leak_parts.setdefault(name, []).append(part)
            taken[name] = taken.get(name, 0) + len(part[2])
    leak_inputs = {
        name: tuple(torch.cat(t)[: leak.leak_samples] for t in zip(*parts, strict=True))
        for name, parts in leak_parts.items()
    }
    return torch.cat(highs), torch.cat(lows).flatten(0, 1), leak_inputs


def _standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    dims = tuple(range(train.dim() - 1))
    mean, std = train.mean(dims), train.std(dims).clamp_min(1e-5)
    return [(x - mean) / std for x in (train, *others)]


def _fit_linear_ctc(features, labels, charset, config: ProbeConfig, seed: int):
    """A linear CTC head on cached (N, T, C) features."""
    tokenizer = CTCTokenizer(charset)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = nn.Linear(features.size(-1), tokenizer.num_classes)
    optimizer = torch.optim.Adam(head.parameters(), lr=config.lr)
    targets, lengths = tokenizer.encode(labels)
    generator = torch.Generator().manual_seed(seed)
    n, t = features.size(0), features.size(1)
    loss = torch.zeros(())
    for step in range(config.steps):
        for group in optimizer.param_groups:  # cosine decay to 0
            group["lr"] = config.lr * 0.5 * (1 + math.cos(math.pi * step / config.steps))
        idx = torch.randint(n, (min(config.batch_size, n),), generator=generator)
        log_probs = head(features[idx]).log_softmax(-1).transpose(0, 1)  # (T, B, K)
        loss = F.ctc_loss(
            log_probs, targets[idx], torch.full((len(idx),), t), lengths[idx], zero_infinity=True
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return head, float(loss.detach())


def _score(head, features, labels, charset) -> tuple[float, float]:
    """(word accuracy, CER) of the greedy CTC readings of cached features (N, T, C),
    both as fractions; CER is edits over reference characters, all words."""
    tokenizer = CTCTokenizer(charset)
    with torch.no_grad():
        best = head(features).argmax(-1)  # (N, T)
    scores = ScoreAccumulator("probe", charset)
    scores.update([tokenizer.decode(row.tolist()) for row in best], labels)
    score = scores.compute()
    return score.correct / max(1, score.samples), score.edits / max(1, score.gt_chars)


def _code_accuracy(inputs: torch.Tensor, codes: torch.Tensor, steps: int, entries: int) -> float:
    """Linear classifier inputs (S, D) → codes (S, G): trained on the first half,
    accuracy (mean over groups) on the second."""
    half = inputs.size(0) // 2
    x_train, x_test = _standardise(inputs[:half], inputs[half:])
    g = codes.size(1)
    with torch.random.fork_rng(devices=[]):  # a fixed init, the global state untouched
        torch.manual_seed(0)
        head = nn.Linear(inputs.size(1), g * entries)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(steps):
        logits = head(x_train).view(-1, g, entries)
        loss = F.cross_entropy(logits.transpose(1, 2), codes[:half])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        pred = head(x_test).view(-1, g, entries).argmax(-1)
    return float((pred == codes[half:]).float().mean())


def position_accuracy(features: torch.Tensor, samples: int, steps: int) -> float:
    """How well a linear classifier tells a frame's index from its features alone
    (cached encoder outputs (N, T, C); ``samples`` frames drawn at random, trained on
    half, scored on the other half; chance 1/T). A high value next to a low probe word
    accuracy says the features carry where a frame is more than what it shows: the
    shortcut a contrast against other positions of the same image rewards."""
    n, t, _ = features.shape
    generator = torch.Generator().manual_seed(0)
    pick = torch.randperm(n * t, generator=generator)[:samples]
    frames = features.reshape(n * t, -1)[pick]  # (S, C)
    index = (pick % t)[:, None]  # (S, 1) frame index
    return _code_accuracy(frames, index, steps, t)


def leak_test(inputs: dict[str, tuple], objective: PersecObjective, steps: int) -> dict:
    """Per level: code accuracy from the neighbours, from the context, and the majority
    code's share on the test half (inputs from :func:`_encode`)."""
    out = {}
    for name, (neighbours, context, codes) in inputs.items():
        if codes.size(0) < 20:
            continue
        entries = getattr(objective, name).quantizer.entries
        half = codes.size(0) // 2
        counts = torch.stack([torch.bincount(c, minlength=entries) for c in codes[:half].T])
        majority = (codes[half:] == counts.argmax(1)).float().mean()
        out[name] = {
            "neighbour_acc": _code_accuracy(neighbours, codes, steps, entries),
            "context_acc": _code_accuracy(context, codes, steps, entries),
            "majority": float(majority),
        }
    return out


def run_probe(
    encoder: nn.Module,
    objective: nn.Module | None,
    data: ProbeSet,
    config: ProbeConfig,
    bf16: bool = False,
) -> ProbeResult:
    """Measure a frozen ``encoder`` (left in the train/eval mode it came in).

    Args:
        encoder: a :class:`~persec.models.encoders.base.TextEncoder`.
        objective: the pretraining objective; its perceivers give the leak test's
            masks, mask vectors and codes (None or SeqCLR: no leak test).
        data: from :func:`make_probe_set`.
        config: steps and sizes.
        bf16: encode under CPU bf16 autocast (the probe itself runs in fp32).
    """
    was_training = encoder.training
    encoder.eval()
    if objective is not None:
        objective.eval()
    try:
        leak_config = config if config.leak else None
        train, low, leak_inputs = _encode(
            encoder, objective, data.train_images, config.batch_size, leak_config, bf16
        )
        test, _, _ = _encode(encoder, None, data.test_images, config.batch_size, None, bf16)
    finally:
        encoder.train(was_training)
        if objective is not None:
            objective.train(was_training)
    charset = Charset.from_spec(config.charset)
    rank = effective_rank(train.flatten(0, 1))
    train, test = _standardise(train, test)
    with torch.enable_grad():
        head, loss = _fit_linear_ctc(train, data.train_labels, charset, config, config.train_seed)
        leak = leak_test(leak_inputs, objective, config.leak_steps) if leak_inputs else {}
        position = position_accuracy(train, config.leak_samples, config.leak_steps)
    word_acc, cer = _score(head, test, data.test_labels, charset)
    return ProbeResult(
        word_acc=word_acc,
        cer=cer,
        char_loss=loss,
        rank=rank,
        low_rank=effective_rank(low),
        position_acc=position,
        leak=leak,
    )
