"""The contrastive loss over quantized targets with sampled distractors."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class ContrastiveResult:
    """What :func:`contrastive_loss` returns.

    Attributes:
        loss: mean cross-entropy over masked positions, positive at index 0. # ()
        accuracy: share of positions whose positive scores strictly above every
            distractor. # ()
        logits: cos/κ of the positive then the distractors; −inf for distractors equal
            to the positive. # (B, n, 1 + K)
        chance: the accuracy of random scores, mean of 1/(1 + distinct distractors):
            1/(K + 1) when no distractor duplicates its positive, higher when the codes
            are few (eval-mode argmax codes repeat often). # ()
    """

    loss: torch.Tensor
    accuracy: torch.Tensor
    logits: torch.Tensor
    chance: torch.Tensor


def _randint(
    high: int, size: tuple[int, ...], generator: torch.Generator | None, device
) -> torch.Tensor:
    """Uniform ints in [0, high), drawn on the generator's device, returned on ``device``."""
    dev = generator.device if generator is not None else device
    return torch.randint(high, size, generator=generator, device=dev).to(device)


def other_images(
    batch: int,
    size: tuple[int, ...],
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """For each entry, an image index other than its own, uniform over the other
    ``batch`` − 1 (with replacement); ``size[0]`` is the batch axis.

    Returns:
        int64 indices in [0, batch), never equal to the row's image. # size
    """
    r = _randint(batch - 1, size, generator, device)
    own = torch.arange(batch, device=r.device).view(-1, *([1] * (len(size) - 1)))
    return r + (r >= own).long()


def sample_negatives(
    batch: int,
    n: int,
    k: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """K distractor indices per position among the *other* n − 1 positions of its row.

    Drawn uniformly without replacement; with k = n − 1 every other position, in order.

    Returns:
        indices in [0, n) never equal to the position's own index. # (batch, n, k), int64
    """
    if not 0 <= k <= n - 1:
        raise ValueError(f"need 0 <= k <= n - 1 distractors, got k={k}, n={n}")
    dev = generator.device if generator is not None else device
    if k == n - 1:
        r = torch.arange(n - 1, device=dev).expand(batch, n, n - 1)
    else:
        noise = torch.rand(batch, n, n - 1, generator=generator, device=dev)
        r = noise.topk(k, dim=-1).indices  # k distinct ranks among the n − 1 others
    own = torch.arange(n, device=dev)[None, :, None]
    return (r + (r >= own).long()).to(device or dev)  # skip the position itself


def contrastive_loss(
    context: torch.Tensor,
    targets: torch.Tensor,
    codes: torch.Tensor | None = None,
    num_negatives: int = 100,
    cross_negatives: int = 0,
    kappa: float = 0.1,
    generator: torch.Generator | None = None,
    extra: torch.Tensor | None = None,
) -> ContrastiveResult:
    """InfoNCE over the masked positions of each image (method.md, step 5).

    Args:
        context: c at the masked positions. # (B, n, D)
        targets: q at the same positions. # (B, n, D)
        codes: the quantizer's indices of ``targets``; two targets are duplicates when
            their codes are equal. None = compare the vectors. # (B, n, G)
        num_negatives: K, capped at n − 1.
        cross_negatives: distractors per position from other images (drawn with
            replacement; 0 when B = 1).
        kappa: temperature κ.
        generator: randomness of the distractor draw.
        extra: more distractors per position, appended last and never treated as
            duplicates (e.g. same-position targets of other images). # (B, n, Ke, D)

    Returns:
        :class:`ContrastiveResult`.
    """
    b, n, _ = context.shape
    if n < 2:
        raise ValueError(f"need at least 2 masked positions per image, got {n}")
    c = F.normalize(context.float(), dim=-1)
    q = F.normalize(targets.float(), dim=-1)
    key = codes if codes is not None else targets
    k = min(num_negatives, n - 1)
    dev = context.device
    # Within-image distractors: score all n × n pairs once, then gather.
    sim = torch.bmm(c, q.transpose(1, 2))  # (B, n, n)
    same = (key[:, :, None] == key[:, None, :]).all(-1)  # (B, n, n)
    idx = sample_negatives(b, n, k, generator, dev)  # (B, n, K)
    neg = sim.gather(2, idx)  # (B, n, K)
    dup = same.gather(2, idx)
    pos = sim.diagonal(dim1=1, dim2=2)[..., None]  # (B, n, 1)
    if cross_negatives > 0 and b > 1:
        # Uniform over the masked positions of the other B − 1 images.
        size = (b, n, cross_negatives)
        slot = _randint(n, size, generator, dev)
        flat = other_images(b, size, generator, dev) * n + slot  # (B, n, Kc) into B·n
        q_other = q.reshape(b * n, -1)[flat]  # (B, n, Kc, D)
        neg = torch.cat([neg, torch.einsum("bnd,bnkd->bnk", c, q_other)], dim=2)
        key_flat = key.reshape(b * n, -1)
        dup = torch.cat([dup, (key_flat[flat] == key[:, :, None]).all(-1)], dim=2)
    neg = neg.masked_fill(dup, float("-inf"))
    if extra is not None:
        other = torch.einsum("bnd,bnkd->bnk", c, F.normalize(extra.float(), dim=-1))
        neg = torch.cat([neg, other], dim=2)
        dup = torch.cat([dup, torch.zeros_like(other, dtype=torch.bool)], dim=2)
    logits = torch.cat([pos, neg], dim=2) / kappa
    target = torch.zeros(b * n, dtype=torch.long, device=dev)
    loss = F.cross_entropy(logits.reshape(b * n, -1), target)
    correct = logits[..., 0] > logits[..., 1:].amax(-1) if logits.size(-1) > 1 else None
    accuracy = correct.float().mean() if correct is not None else torch.ones((), device=dev)
    chance = (1.0 / (1.0 + (~dup).sum(-1).float())).mean()
    return ContrastiveResult(loss=loss, accuracy=accuracy, logits=logits, chance=chance)
