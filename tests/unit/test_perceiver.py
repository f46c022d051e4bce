"""Context perceiver: distractor sampling, the contrastive loss on hand-computed cases,
gradient scaling and the full mask → aggregate → contrast pass."""

from __future__ import annotations

import math

import pytest
import torch

from persec.models.aggregator import AggregatorConfig, ContextAggregator
from persec.objectives.contrastive import contrastive_loss, sample_negatives
from persec.objectives.perceiver import ContextPerceiver, PerceiverConfig, grad_multiply
from persec.objectives.quantizer import QuantizerConfig


# --------------------------------------------------------------------------- sampling
@pytest.mark.parametrize(("n", "k"), [(2, 1), (5, 4), (30, 7), (51, 50)])
def test_negatives_are_other_positions_without_repeats(n: int, k: int) -> None:
    g = torch.Generator().manual_seed(0)
    idx = sample_negatives(16, n, k, g)
    assert idx.shape == (16, n, k)
    assert idx.min() >= 0 and idx.max() < n
    own = torch.arange(n)[None, :, None]
    assert not (idx == own).any()
    sorted_idx = idx.sort(-1).values
    assert (sorted_idx[..., 1:] != sorted_idx[..., :-1]).all()  # without replacement


def test_all_other_positions_when_k_is_n_minus_1() -> None:
    idx = sample_negatives(1, 3, 2)
    assert idx[0].tolist() == [[1, 2], [0, 2], [0, 1]]


def test_negative_draw_is_uniform_over_the_others() -> None:
    g = torch.Generator().manual_seed(1)
    idx = sample_negatives(4000, 6, 2, g)[:, 0]  # distractors of position 0
    counts = torch.bincount(idx.flatten(), minlength=6).float()
    assert counts[0] == 0
    share = counts[1:] / counts[1:].sum()
    assert torch.allclose(share, torch.full((5,), 0.2), atol=0.02)


def test_too_many_negatives_is_an_error() -> None:
    with pytest.raises(ValueError, match="k <= n - 1"):
        sample_negatives(1, 3, 3)


# --------------------------------------------------------------------------- loss
def _three_positions(scale_c: float = 1.0, scale_q: float = 1.0):
    # Targets q0 = (1, 0), q1 = (0, 1), q2 = (-1, 0); contexts c0 → q0, c1 → q0, c2 → q1.
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]]) * scale_q  # (1, 3, 2)
    c = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]]) * scale_c
    return c, q


def test_contrastive_loss_hand_computed_three_positions() -> None:
    c, q = _three_positions(scale_c=3.0, scale_q=0.5)  # cosine: scales must not matter
    out = contrastive_loss(c, q, num_negatives=100, kappa=0.1)  # K capped at 2
    # cos/κ per position, positive first, distractors in position order:
    #   t=0: pos cos(c0,q0)=1 → 10; negs q1 → 0, q2 → −10
    #   t=1: pos cos(c1,q1)=0 → 0;  negs q0 → 10, q2 → −10
    #   t=2: pos cos(c2,q2)=0 → 0;  negs q0 → 0,  q1 → 10
    expected_logits = torch.tensor([[[10.0, 0.0, -10.0], [0.0, 10.0, -10.0], [0.0, 0.0, 10.0]]])
    torch.testing.assert_close(out.logits, expected_logits)
    e = math.exp
    losses = [
        math.log(1 + e(-10) + e(-20)),  # −log e^10 / (e^10 + e^0 + e^−10)
        math.log(1 + e(10) + e(-10)),  # −log e^0 / (e^0 + e^10 + e^−10)
        math.log(2 + e(10)),  # −log e^0 / (e^0 + e^0 + e^10)
    ]
    assert out.loss.item() == pytest.approx(sum(losses) / 3, rel=1e-6)
    assert out.accuracy.item() == pytest.approx(1 / 3)  # only t=0 ranks its positive first
    assert out.chance.item() == pytest.approx(1 / 3)


def test_distractor_equal_to_the_positive_gets_minus_infinity() -> None:
    c, q = _three_positions()
    q[0, 2] = q[0, 0]  # q2 duplicates q0
    codes = torch.tensor([[[5, 1], [7, 2], [5, 1]]])  # and so do their codes
    out = contrastive_loss(c, q, codes=codes, kappa=0.1)
    assert out.logits[0, 0, 2] == float("-inf")  # q2 as a distractor of t=0
    assert out.logits[0, 2, 1] == float("-inf")  # q0 as a distractor of t=2
    assert torch.isfinite(out.logits[0, 1]).all()
    # t=0: only q1 is left: −log e^10 / (e^10 + e^0)
    per_pos = torch.nn.functional.cross_entropy(
        out.logits[0], torch.zeros(3, dtype=torch.long), reduction="none"
    )
    assert per_pos[0].item() == pytest.approx(math.log(1 + math.exp(-10)), abs=1e-6)
    assert out.chance.item() == pytest.approx((1 / 2 + 1 / 3 + 1 / 2) / 3)


def test_codes_decide_duplicates_not_vectors() -> None:
    c, q = _three_positions()
    same_codes = torch.zeros(1, 3, 2, dtype=torch.long)  # all one code: all duplicates
    out = contrastive_loss(c, q, codes=same_codes)
    assert torch.isinf(out.logits[..., 1:]).all()
    assert out.accuracy.item() == 1.0 and out.chance.item() == 1.0


def test_cross_image_negatives_come_from_other_images() -> None:
    g = torch.Generator().manual_seed(0)
    b, n, d = 4, 6, 8
    c, q = torch.randn(b, n, d), torch.randn(b, n, d)
    # One code per image: every within-image distractor is a duplicate, no distractor
    # from another image is.
    codes = torch.arange(b)[:, None, None].expand(b, n, 2)
    out = contrastive_loss(c, q, codes=codes, num_negatives=3, cross_negatives=5, generator=g)
    assert out.logits.shape == (b, n, 1 + 3 + 5)
    assert torch.isinf(out.logits[..., 1:4]).all()
    assert torch.isfinite(out.logits[..., 4:]).all()


def test_grad_multiply_is_identity_forward_and_scales_backward() -> None:
    x = torch.randn(5, requires_grad=True)
    y = grad_multiply(x, 0.2)
    torch.testing.assert_close(y, x)
    (y * torch.arange(5.0)).sum().backward()
    torch.testing.assert_close(x.grad, 0.2 * torch.arange(5.0))


# --------------------------------------------------------------------------- perceiver
def _perceiver(channels: int, ndim: int, **kw) -> tuple[ContextPerceiver, ContextAggregator]:
    cfg = PerceiverConfig(quantizer=QuantizerConfig(groups=2, entries=16), **kw)
    agg = ContextAggregator(channels, ndim, AggregatorConfig(dim=16, heads=2), feature_height=4)
    return ContextPerceiver(channels, ndim, cfg), agg


@pytest.mark.parametrize(
    ("shape", "ndim", "n_masked"), [((3, 8, 4, 16), 2, 13), ((3, 20, 8), 1, 3)]
)
def test_perceiver_masks_round_p_n_and_trains_every_part(shape, ndim, n_masked) -> None:
    torch.manual_seed(0)
    channels = shape[1] if ndim == 2 else shape[2]
    perceiver, agg = _perceiver(channels, ndim, mask_prob=0.2 if ndim == 2 else 0.15)
    perceiver.train()
    z = torch.randn(*shape, requires_grad=True)
    out = perceiver(z, agg, generator=torch.Generator().manual_seed(0))
    counts = out.mask.flatten(1).sum(1)
    assert (counts == n_masked).all()  # round(0.2·64) = 13, round(0.15·20) = 3
    assert out.num_negatives == n_masked - 1
    total = out.contrastive + 0.2 * out.diversity + 0.1 * out.feature_penalty
    assert torch.isfinite(total)
    total.backward()
    for name, p in [
        ("mask vector", perceiver.mask_embedding),
        ("quantizer projection", perceiver.quantizer.proj.weight),
        ("codebook", perceiver.quantizer.codebook),
        ("context projection", perceiver.project_context.weight),
        ("aggregator", agg.proj_out.weight),
        ("features", z),
    ]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert 2 <= out.prob_ppl.item() <= 32 and 2 <= out.code_ppl.item() <= 32


def test_masked_features_do_not_leak_into_their_context() -> None:
    # The context at a masked position must not depend on the feature it replaced.
    torch.manual_seed(0)
    perceiver, agg = _perceiver(8, 1, mask_prob=0.3)
    z = torch.randn(2, 20, 8)
    mask = torch.zeros(2, 20, dtype=torch.bool)
    mask[:, [3, 9, 15]] = True
    from persec.objectives.masking import apply_mask

    seen = agg(apply_mask(z, mask, perceiver.mask_embedding))
    z2 = z.clone()
    z2[mask] = torch.randn(6, 8) * 100
    torch.testing.assert_close(agg(apply_mask(z2, mask, perceiver.mask_embedding)), seen)


def test_same_generator_same_losses() -> None:
    torch.manual_seed(0)
    perceiver, agg = _perceiver(8, 1)
    z = torch.randn(4, 30, 8)
    a = perceiver(z, agg, generator=torch.Generator().manual_seed(3))
    b = perceiver(z, agg, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.mask, b.mask)
    assert a.contrastive.item() == b.contrastive.item()


def test_perceiver_rejects_wrong_layout() -> None:
    perceiver, agg = _perceiver(8, 2)
    with pytest.raises(ValueError, match=r"\(B, 8, H, W\)"):
        perceiver(torch.randn(2, 10, 8), agg)


def test_same_position_negatives_expose_positional_codes() -> None:
    # Four identical images: the target at (image b, position t) equals the target at
    # (b', t), so a same-position distractor always ties with the positive. Those are
    # kept (not −inf like within-image duplicates), so a code that says only "position
    # t" cannot win: accuracy 0 and loss ≥ log(1 + 3).
    torch.manual_seed(0)
    perceiver, agg = _perceiver(8, 1, mask_prob=0.2, same_position_negatives=3)
    perceiver.eval()  # argmax codes: equal features, equal targets (no Gumbel noise)
    z = torch.randn(1, 20, 8).expand(4, 20, 8).contiguous()
    out = perceiver(z, agg, generator=torch.Generator().manual_seed(0))
    assert out.num_negatives == (4 - 1) + 3  # round(0.2·20) = 4 masked
    assert out.accuracy.item() == 0.0
    assert out.contrastive.item() >= math.log(4) - 1e-5
    plain, _ = _perceiver(8, 1, mask_prob=0.2)
    plain.load_state_dict(perceiver.state_dict())
    assert plain(z, agg, generator=torch.Generator().manual_seed(0)).num_negatives == 3
