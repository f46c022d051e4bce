"""The PerSec objective: Eqn. (4), the levels switch and the 0.2 stroke gradient scale."""

from __future__ import annotations

import pytest
import torch

from persec.models.encoders.base import EncoderConfig, build_encoder
from persec.objectives.perceiver import PerceiverConfig
from persec.objectives.persec import PersecConfig, PersecObjective
from persec.objectives.quantizer import QuantizerConfig


def _setup(levels: str = "both", **kw) -> tuple:
    torch.manual_seed(0)
    enc = build_encoder(EncoderConfig(name="resnet", size="tiny"))
    small_q = QuantizerConfig(entries=32)
    cfg = PersecConfig(
        levels=levels,
        stroke=PerceiverConfig(mask_prob=0.2, quantizer=small_q),
        semantic=PerceiverConfig(mask_prob=0.15, quantizer=small_q),
        **kw,
    )
    return enc, PersecObjective(enc, cfg)


def _images(b: int = 4, w: int = 128) -> torch.Tensor:
    return torch.rand(b, 3, 32, w, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_defaults_are_the_papers() -> None:
    cfg = PersecConfig()
    assert (cfg.stroke.mask_prob, cfg.semantic.mask_prob) == (0.2, 0.15)
    assert cfg.stroke.mask_span == cfg.semantic.mask_span == 1
    assert cfg.stroke.logit_temp == cfg.semantic.logit_temp == 0.1
    assert (cfg.stroke.quantizer.groups, cfg.stroke.quantizer.entries) == (2, 256)
    assert cfg.stroke_diversity_weight == cfg.semantic_diversity_weight == 0.2
    assert cfg.stroke_penalty_weight == cfg.semantic_penalty_weight == 0.1
    assert cfg.stroke_grad_scale == 0.2
    assert cfg.stroke.num_negatives == cfg.semantic.num_negatives == 100


def test_total_loss_is_eqn_4_with_separate_weights() -> None:
    weights = {
        "stroke_contrastive_weight": 0.7,
        "semantic_contrastive_weight": 1.3,
        "stroke_diversity_weight": 0.2,
        "semantic_diversity_weight": 0.5,
        "stroke_penalty_weight": 0.1,
        "semantic_penalty_weight": 0.05,
    }
    enc, obj = _setup(**weights)
    out = obj(enc, _images(), generator=torch.Generator().manual_seed(0))
    logs = out.logs
    expected = sum(
        weights[f"{level}_contrastive_weight"] * logs[f"{level}/contrastive"]
        + weights[f"{level}_diversity_weight"] * logs[f"{level}/diversity"]
        + weights[f"{level}_penalty_weight"] * logs[f"{level}/feature_penalty"]
        for level in ("stroke", "semantic")
    )
    assert out.loss.item() == pytest.approx(float(expected), rel=1e-5)
    # 32×128 images: stroke map 8×32 → round(0.2·256) = 51 masked, K = 50;
    # sequence of 32 → round(0.15·32) = 5 masked, K = 4.
    assert logs["stroke/negatives"] == 50 and logs["semantic/negatives"] == 4
    for key in ("acc", "chance", "code_ppl", "prob_ppl", "temperature"):
        assert f"stroke/{key}" in logs and f"semantic/{key}" in logs


@pytest.mark.parametrize(
    ("levels", "present", "absent"),
    [("stroke", "stroke", "semantic"), ("semantic", "semantic", "stroke")],
)
def test_single_level_ablations(levels: str, present: str, absent: str) -> None:
    enc, obj = _setup(levels)
    assert [name for name, _ in obj.perceivers()] == [present]
    out = obj(enc, _images())
    assert f"{present}/contrastive" in out.logs
    assert not any(k.startswith(absent) for k in out.logs)
    out.loss.backward()


def _stage1_grad(scale: float) -> list[torch.Tensor]:
    enc, obj = _setup("stroke", stroke_grad_scale=scale)
    obj(enc, _images(), generator=torch.Generator().manual_seed(5)).loss.backward()
    return [p.grad.clone() for p in enc.stage1.parameters() if p.grad is not None]


def test_stroke_gradient_into_the_encoder_is_scaled_by_0_2() -> None:
    full, scaled = _stage1_grad(1.0), _stage1_grad(0.2)
    assert len(full) == len(scaled)
    # (blocks start as the identity, so some of their weights get no gradient yet)
    assert sum(int(a.abs().sum() > 0) for a in full) >= len(full) // 2
    for a, b in zip(full, scaled, strict=True):
        torch.testing.assert_close(b, 0.2 * a, rtol=1e-5, atol=1e-6 * float(a.abs().max()))
    # A power of two scales exactly, bit for bit.
    quarter = _stage1_grad(0.25)
    for a, b in zip(full, quarter, strict=True):
        assert torch.equal(b, 0.25 * a)


def test_stroke_scale_leaves_the_perceivers_own_gradients_alone() -> None:
    grads = []
    for scale in (1.0, 0.2):
        enc, obj = _setup("stroke", stroke_grad_scale=scale)
        obj(enc, _images(), generator=torch.Generator().manual_seed(5)).loss.backward()
        grads.append(enc.stroke_aggregator.proj_out.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_set_step_anneals_both_temperatures() -> None:
    enc, obj = _setup()
    obj.set_step(10_000)
    out = obj(enc, _images())
    assert out.logs["stroke/temperature"] == pytest.approx(2 * 0.999995**10_000)
    assert out.logs["semantic/temperature"] == out.logs["stroke/temperature"]


def test_needs_an_encoder_with_aggregators() -> None:
    enc = build_encoder(EncoderConfig(size="tiny", aggregators=False))
    with pytest.raises(ValueError, match="aggregators=true"):
        PersecObjective(enc)


def test_unknown_levels_is_named() -> None:
    enc = build_encoder(EncoderConfig(size="tiny"))
    with pytest.raises(ValueError, match="'strokes'"):
        PersecObjective(enc, PersecConfig(levels="strokes"))


def test_vit_encoder_pretrains_too() -> None:
    torch.manual_seed(0)
    enc = build_encoder(EncoderConfig(name="vit", size="tiny"))
    obj = PersecObjective(enc, PersecConfig())
    out = obj(enc, _images(2))
    out.loss.backward()
    assert enc.patch_embed.weight.grad.abs().sum() > 0


def test_mask_columns_hides_whole_frames_and_nothing_else() -> None:
    from persec.objectives.masking import mask_columns

    images = _images(b=3)
    masked, mask = mask_columns(images, 32, 0.4, 3, value=0.0,
                                generator=torch.Generator().manual_seed(5))  # fmt: skip
    assert mask.shape == (3, 32) and (mask.sum(1) == 13).all()  # round(0.4 · 32)
    columns = mask.repeat_interleave(4, dim=1)  # (B, W)
    for i in range(3):
        assert (masked[i][:, :, columns[i]] == 0).all()
        assert torch.equal(masked[i][:, :, ~columns[i]], images[i][:, :, ~columns[i]])
    with pytest.raises(ValueError, match="multiple of"):
        mask_columns(images[:, :, :, :126], 32, 0.4, 3)


@pytest.mark.parametrize("detach", [False, True])
def test_input_masking_trains_both_levels_and_reaches_the_encoder(detach: bool) -> None:
    enc, obj = _setup(mask_at="input", input_mask_prob=0.4, input_mask_span=3,
                      detach_targets=detach)  # fmt: skip
    out = obj(enc, _images(), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss)
    for level in ("stroke", "semantic"):
        assert 0.0 <= float(out.logs[f"{level}/acc"]) <= 1.0
    out.loss.backward()
    first = next(p for p in enc.parameters() if p.dim() == 4)  # the stem's first conv
    assert first.grad is not None and first.grad.abs().sum() > 0


def test_unknown_mask_at_is_named() -> None:
    with pytest.raises(ValueError, match="mask_at"):
        _setup(mask_at="pixels")


def test_roll_columns_rolls_each_image_by_its_own_shift() -> None:
    from persec.objectives.masking import roll_columns

    x = torch.arange(2 * 5).view(2, 1, 5).float()  # two rows 0..4 and 5..9
    rolled = roll_columns(x, torch.tensor([1, -2]))
    assert rolled[0, 0].tolist() == [4, 0, 1, 2, 3]
    assert rolled[1, 0].tolist() == [7, 8, 9, 5, 6]
    assert torch.equal(roll_columns(rolled, torch.tensor([-1, 2])), x)
    with pytest.raises(ValueError, match="one shift per image"):
        roll_columns(x, torch.tensor([1]))


def test_target_shift_moves_the_target_pass_and_aligns_it_back() -> None:
    """With column-wise stand-ins for the encoder (rolling the image rolls their output
    exactly), the targets the semantic level scores are the same with and without the
    shift, while the target pass did see rolled images."""
    seen: dict[bool, list] = {}
    for shift in (False, True):
        enc, obj = _setup(mask_at="input", target_shift=shift)
        torch.manual_seed(3)
        conv = torch.nn.Conv2d(3, enc.low_channels, 1)
        lin = torch.nn.Linear(enc.low_channels, enc.out_channels)
        inputs, targets = [], []

        def low(x, conv=conv, inputs=inputs):
            inputs.append(x)
            return conv(x)[:, :, ::4, ::4]  # (B, C_l, 8, 32)

        enc.encode_low = low
        enc.encode_high = lambda z, lin=lin: lin(z.mean(2).transpose(1, 2))  # (B, 32, C_h)
        score = obj.semantic.score

        def record(zl, *args, score=score, targets=targets, **kw):
            targets.append(zl)
            return score(zl, *args, **kw)

        obj.semantic.score = record
        obj(enc, _images(b=6), generator=torch.Generator().manual_seed(0))
        seen[shift] = [inputs[0], targets[0]]
    assert torch.allclose(seen[True][1], seen[False][1], atol=1e-5)
    assert torch.equal(seen[False][0], _images(b=6))
    assert not torch.equal(seen[True][0], _images(b=6))  # the target pass saw rolled images
