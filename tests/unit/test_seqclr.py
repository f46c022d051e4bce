"""SeqCLR baseline: instance mapping, NT-Xent by hand, augmentation invariants, objective."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from persec.data.augment import AugmentConfig, augment
from persec.models.encoders.base import EncoderConfig, build_encoder
from persec.objectives.seqclr import SeqCLRConfig, SeqCLRObjective, instance_map, nt_xent

OFF = AugmentConfig(
    contrast_prob=0.0,
    blur_prob=0.0,
    sharpen_prob=0.0,
    crop_prob=0.0,
    perspective_prob=0.0,
    warp_prob=0.0,
)
ALL_ON = replace(
    OFF,
    contrast_prob=1.0,
    blur_prob=1.0,
    sharpen_prob=1.0,
    crop_prob=1.0,
    perspective_prob=1.0,
    warp_prob=1.0,
)


def _images(b: int = 4, w: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.rand(b, 3, 32, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- instance_map
@pytest.mark.parametrize(("instances", "k"), [(0, 12), (1, 1), (5, 5)])
def test_instance_map_shapes(instances: int, k: int) -> None:
    frames = torch.randn(2, 12, 7)
    assert instance_map(frames, instances).shape == (2, k, 7)


def test_instance_map_values() -> None:
    frames = torch.randn(3, 10, 4)
    torch.testing.assert_close(instance_map(frames, 1)[:, 0], frames.mean(1))
    assert torch.equal(instance_map(frames, 0), frames)  # frame-to-instance
    # T divisible by K: plain non-overlapping windows.
    torch.testing.assert_close(instance_map(frames, 5), frames.view(3, 5, 2, 4).mean(2))


def test_instance_map_rejects_more_instances_than_frames() -> None:
    with pytest.raises(ValueError, match="instances"):
        instance_map(torch.randn(1, 4, 2), 5)


# --------------------------------------------------------------------------- nt_xent
def test_nt_xent_by_hand() -> None:
    # Unit directions a0=(1,0), a1=(0,1), b0=(0.6,0.8), b1=(-1,0); norms must not matter.
    a = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    b = torch.tensor([[3.0, 4.0], [-0.5, 0.0]])
    tau = 0.5
    # anchor: (cosine with its positive, cosines with the two negatives)
    rows = {
        "a0": (0.6, [0.0, -1.0]),  # vs b0; a1, b1
        "a1": (0.0, [0.0, 0.8]),  # vs b1; a0, b0
        "b0": (0.6, [0.8, -0.6]),  # vs a0; a1, b1
        "b1": (0.0, [-1.0, -0.6]),  # vs a1; a0, b0
    }
    expected = 0.0
    for pos, negs in rows.values():
        denom = math.exp(pos / tau) + sum(math.exp(s / tau) for s in negs)
        expected += -math.log(math.exp(pos / tau) / denom)
    expected /= 4
    loss, acc = nt_xent(a, b, tau)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert acc.item() == pytest.approx(0.5)  # a0 and b1 rank their positive first


def test_nt_xent_identical_pairs_beat_shuffled() -> None:
    g = _gen(0)
    a = torch.randn(8, 16, generator=g)
    b = a + 0.05 * torch.randn(8, 16, generator=g)
    matched, _ = nt_xent(a, b, 0.1)
    shuffled, _ = nt_xent(a, b.roll(1, 0), 0.1)  # every pair broken
    assert matched < shuffled


def test_nt_xent_separated_pairs_are_all_correct() -> None:
    a = torch.eye(6, 8)
    loss, acc = nt_xent(a, a.clone(), 0.1)
    assert acc.item() == 1.0
    # 1 positive at cos 1, 2N - 2 = 10 negatives at cos 0 (abs: float32 log-sum-exp at 10).
    assert loss.item() == pytest.approx(math.log(1 + 10 * math.exp(-10)), abs=1e-5)


def test_nt_xent_needs_two_pairs() -> None:
    with pytest.raises(ValueError):
        nt_xent(torch.randn(1, 4), torch.randn(1, 4), 0.1)


# --------------------------------------------------------------------------- augment
@pytest.mark.parametrize("cfg", [AugmentConfig(), ALL_ON], ids=["default", "all_on"])
def test_augment_keeps_shape_dtype_range(cfg: AugmentConfig) -> None:
    x = _images()
    y = augment(x, cfg, _gen(0))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert y.min() >= -1 and y.max() <= 1
    assert torch.isfinite(y).all()
    assert not torch.equal(y, x)


def test_augment_is_reproducible_and_seed_dependent() -> None:
    x = _images()
    assert torch.equal(augment(x, ALL_ON, _gen(3)), augment(x, ALL_ON, _gen(3)))
    assert not torch.allclose(augment(x, ALL_ON, _gen(3)), augment(x, ALL_ON, _gen(4)))
    g = _gen(3)
    assert not torch.equal(augment(x, ALL_ON, g), augment(x, ALL_ON, g))  # two views differ


def test_augment_with_every_probability_zero_is_identity() -> None:
    x = _images()
    assert torch.equal(augment(x, OFF, _gen(0)), x)


def test_augment_runs_in_float32_under_autocast() -> None:
    x = _images()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = augment(x, ALL_ON, _gen(0))
    assert torch.equal(y, augment(x, ALL_ON, _gen(0)))


def test_augment_zero_strength_geometry_is_identity() -> None:
    # Crop to the full width, no corner jitter, no warp: the composed grid must hit
    # the pixel centres (catches align_corners / homography mistakes).
    cfg = replace(
        OFF,
        crop_prob=1.0,
        crop_min_width=1.0,
        perspective_prob=1.0,
        perspective_scale=(0.0, 0.0),
        warp_prob=1.0,
        warp_scale=(0.0, 0.0),
    )
    x = _images()
    torch.testing.assert_close(augment(x, cfg, _gen(0)), x, atol=1e-5, rtol=0)


def test_augment_contrast_keeps_mean_and_shrinks_spread() -> None:
    x = _images() * 0.5  # stays inside [-1, 1] after any contrast
    y = augment(x, replace(OFF, contrast_prob=1.0), _gen(0))
    torch.testing.assert_close(y.mean((1, 2, 3)), x.mean((1, 2, 3)), atol=1e-5, rtol=0)
    assert (y.std((1, 2, 3)) <= x.std((1, 2, 3)) + 1e-6).all()


def test_augment_blur_keeps_constant_images() -> None:
    x = torch.full((2, 3, 32, 16), 0.3)
    y = augment(x, replace(OFF, blur_prob=1.0, sharpen_prob=1.0), _gen(0))
    torch.testing.assert_close(y, x)


# --------------------------------------------------------------------------- objective
@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return build_encoder(EncoderConfig(name="resnet", size="tiny"))


@pytest.mark.parametrize(("projection", "instances"), [("mlp", 5), ("linear", 0), ("none", 1)])
def test_objective_loss_grads_logs(encoder, projection: str, instances: int) -> None:
    cfg = SeqCLRConfig(projection=projection, instances=instances)
    objective = SeqCLRObjective(encoder, cfg)
    objective.set_step(10)  # no-op, same interface as PersecObjective
    encoder.zero_grad(set_to_none=True)
    out = objective(encoder, _images(4, 64), generator=_gen(0))
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    grads = [p.grad for p in encoder.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    k = instances or 64 // 4  # frame-to-instance: T = W/4
    assert set(out.logs) == {
        "seqclr/contrastive",
        "seqclr/acc",
        "seqclr/chance",
        "seqclr/instances",
    }
    assert out.logs["seqclr/instances"] == float(k)
    assert out.logs["seqclr/chance"] == pytest.approx(1 / (2 * 4 * k - 1))
    assert 0.0 <= float(out.logs["seqclr/acc"]) <= 1.0
    assert float(out.logs["seqclr/contrastive"]) == pytest.approx(out.loss.item())


def test_objective_rejects_unknown_projection(encoder) -> None:
    with pytest.raises(ValueError, match="mlp, linear, none"):
        SeqCLRObjective(encoder, SeqCLRConfig(projection="bilstm"))
