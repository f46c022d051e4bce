"""Span masking: exact per-row counts, contiguous spans, determinism, apply_mask."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from persec.objectives.masking import apply_mask, mask_count, span_mask


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _runs(row: torch.Tensor) -> list[int]:
    """Lengths of the maximal runs of True in a 1-D bool tensor."""
    runs, n = [], 0
    for v in row.tolist():
        if v:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    return runs + ([n] if n else [])


# (shape, p, round(p·N) worked out by hand)
CASES = [
    ((8, 32), 0.15, 5),  # 4.8 -> 5: semantic level, W = 128
    ((8, 96), 0.15, 14),  # 14.4 -> 14: semantic level, W = 384
    ((8, 25), 0.15, 4),  # 3.75 -> 4
    ((4, 8, 32), 0.2, 51),  # 51.2 -> 51: stroke level, 8×32 map
    ((4, 8, 96), 0.2, 154),  # 153.6 -> 154
    ((4, 6, 33), 0.2, 40),  # 39.6 -> 40
]


@pytest.mark.parametrize("span", [1, 3])
@pytest.mark.parametrize(("shape", "p", "count"), CASES)
def test_exact_equal_count_per_row(shape, p: float, count: int, span: int) -> None:
    mask = span_mask(shape, p, span, _gen())
    assert mask.shape == shape and mask.dtype == torch.bool
    n_pos = mask[0].numel()
    per_row = mask.flatten(1).sum(1)
    assert mask_count(n_pos, p) == count
    assert (per_row == count).all()  # same count in every row
    assert abs(count / n_pos - p) <= 0.5 / n_pos  # within rounding of p


def test_count_bounds() -> None:
    assert mask_count(10, 0.0) == 1  # at least one
    assert mask_count(10, 0.0, min_masks=0) == 0
    assert mask_count(10, 1.0) == 9  # at most N - 1
    assert mask_count(10, 0.25) == 3  # 2.5 rounds half up
    assert span_mask((3, 10), 0.0, generator=_gen()).sum(1).tolist() == [1, 1, 1]
    assert span_mask((3, 10), 1.0, span=4, generator=_gen()).sum(1).tolist() == [9, 9, 9]
    assert not span_mask((3, 10), 0.0, generator=_gen(), min_masks=0).any()


@pytest.mark.parametrize("shape", [(4, 32), (4, 8, 32)])
@pytest.mark.parametrize("span", [1, 4])
def test_deterministic_under_a_seed(shape, span: int) -> None:
    a = span_mask(shape, 0.2, span, _gen(7))
    assert torch.equal(a, span_mask(shape, 0.2, span, _gen(7)))
    assert not torch.equal(a, span_mask(shape, 0.2, span, _gen(8)))
    # rows of one batch differ too
    assert not all(torch.equal(a[0], a[i]) for i in range(1, shape[0]))


@pytest.mark.parametrize("shape", [(16, 40), (16, 4, 10)])
def test_spans_are_contiguous_runs(shape) -> None:
    # 0.3·40 = 12 masked = 4 spans of 3; touching spans merge into longer runs,
    # so every run is a multiple of 3 and there are at most 4 runs (raster order in 2-D).
    mask = span_mask(shape, 0.3, span=3, generator=_gen()).flatten(1)
    for row in mask:
        runs = _runs(row)
        assert sum(runs) == 12 and len(runs) <= 4
        assert all(r % 3 == 0 for r in runs), runs


def test_short_span_when_span_does_not_divide_count() -> None:
    # 0.25·40 = 10 masked, span 4: spans 4, 4, 2 (the 2 at a random rank).
    mask = span_mask((64, 40), 0.25, span=4, generator=_gen())
    assert (mask.sum(1) == 10).all()
    for row in mask:
        assert all(r >= 2 for r in _runs(row))


def test_span_one_is_uniform_over_positions() -> None:
    mask = span_mask((4000, 20), 0.25, generator=_gen())
    freq = mask.float().mean(0)
    assert torch.allclose(freq, torch.full((20,), 0.25), atol=0.04), freq


def test_bad_arguments() -> None:
    for kwargs in (
        {"shape": (4,), "p": 0.2},
        {"shape": (4, 1), "p": 0.2},
        {"shape": (4, 10), "p": 1.5},
        {"shape": (4, 10), "p": 0.2, "span": 0},
    ):
        with pytest.raises(ValueError):
            span_mask(**kwargs)


@pytest.mark.parametrize("layout", ["map", "sequence"])
def test_apply_mask(layout: str) -> None:
    g = _gen()
    if layout == "map":
        feats = torch.randn(2, 6, 8, 32, generator=g, requires_grad=True)  # (B, C, H, W)
        mask = span_mask((2, 8, 32), 0.2, generator=g)
        picked = feats.permute(0, 2, 3, 1)  # (B, H, W, C)
    else:
        feats = torch.randn(2, 32, 6, generator=g, requires_grad=True)  # (B, T, C)
        mask = span_mask((2, 32), 0.15, generator=g)
        picked = feats
    emb = nn.Parameter(torch.randn(6, generator=g))
    out = apply_mask(feats, mask, emb)
    assert out.shape == feats.shape
    out_picked = out.permute(0, 2, 3, 1) if layout == "map" else out
    assert torch.equal(out_picked[~mask], picked[~mask])  # bitwise unchanged
    assert torch.equal(out_picked[mask], emb.detach().expand(int(mask.sum()), 6))
    out.sum().backward()
    assert torch.equal(emb.grad, torch.full((6,), float(mask.sum())))
    grad = feats.grad.permute(0, 2, 3, 1) if layout == "map" else feats.grad
    assert (grad[mask] == 0).all() and (grad[~mask] == 1).all()


def test_apply_mask_rejects_mismatches() -> None:
    feats = torch.randn(2, 10, 4)
    with pytest.raises(ValueError, match="does not match"):
        apply_mask(feats, torch.zeros(2, 9, dtype=torch.bool), torch.zeros(4))
    with pytest.raises(ValueError, match="mask_embedding"):
        apply_mask(feats, torch.zeros(2, 10, dtype=torch.bool), torch.zeros(5))
    with pytest.raises(ValueError, match="bool"):
        apply_mask(feats, torch.zeros(2, 10), torch.zeros(4))
