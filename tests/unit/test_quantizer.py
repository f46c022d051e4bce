"""Gumbel product quantizer: one-hot codes, straight-through gradients, perplexities."""

from __future__ import annotations

import math

import pytest
import torch

from persec.objectives.quantizer import GumbelProductQuantizer, QuantizerConfig, gumbel_temperature

G, V, IN, CODE = 2, 16, 12, 8


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _quantizer(seed: int = 0, **kwargs) -> GumbelProductQuantizer:
    torch.manual_seed(seed)  # parameter init
    return GumbelProductQuantizer(IN, groups=G, entries=V, code_dim=CODE, **kwargs)


def _selected_rows(q: GumbelProductQuantizer, indices: torch.Tensor) -> torch.Tensor:
    """Concatenation of the chosen codebook rows. indices (..., G) -> (..., code_dim)."""
    rows = [q.codebook[g][indices[..., g]] for g in range(q.groups)]
    return torch.cat(rows, dim=-1)


@pytest.mark.parametrize("training", [True, False])
def test_output_is_the_chosen_codebook_rows(training: bool) -> None:
    q = _quantizer().train(training)
    x = torch.randn(3, 7, IN, generator=_gen())
    out = q(x, generator=_gen(1))
    assert out.quantized.shape == (3, 7, CODE)
    assert out.indices.shape == (3, 7, G) and out.indices.dtype == torch.long
    assert out.indices.min() >= 0 and out.indices.max() < V
    # Exactly one entry per group: the output equals the selected rows bit for bit
    # (the straight-through term adds an exact zero).
    torch.testing.assert_close(out.quantized, _selected_rows(q, out.indices), atol=0, rtol=0)


def test_eval_picks_the_argmax_and_train_is_noisy() -> None:
    q = _quantizer()
    x = torch.randn(64, IN, generator=_gen())
    argmax = q.proj(x).view(64, G, V).argmax(-1)
    assert torch.equal(q.eval()(x).indices, argmax)
    assert float(q.eval()(x).agreement) == 1.0
    out = q.train()(x, generator=_gen(1))
    assert not torch.equal(out.indices, argmax)  # Gumbel noise at τ = 2 changes some codes
    # agreement: the share of (position, group) codes the noise left alone.
    assert float(out.agreement) == pytest.approx(float((out.indices == argmax).float().mean()))
    mask = torch.arange(64) < 10  # over the masked positions only
    part = q(x, mask=mask, generator=_gen(1))
    expected = (part.indices[:10] == argmax[:10]).float().mean()
    assert float(part.agreement) == pytest.approx(float(expected))


def test_noise_free_training_picks_the_argmax_with_the_softmax_gradient() -> None:
    q = _quantizer(noise=False).train()
    x = torch.randn(64, IN, generator=_gen())
    logits = q.proj(x).view(64, G, V)
    out = q(x, generator=_gen(1))
    assert torch.equal(out.indices, logits.argmax(-1)) and float(out.agreement) == 1.0
    # Straight through: d(quantized)/d(logits) is that of softmax(logits / τ) times the
    # codebook, as with noise, only without the noise.
    weights = torch.randn(out.quantized.shape, generator=_gen(2))
    (out.quantized * weights).sum().backward()
    grad = q.proj.weight.grad.clone()
    q.zero_grad()
    soft = (q.proj(x).view(64, G, V) / q.temperature).softmax(-1)
    expected = torch.einsum("mgv,gvd->mgd", soft, q.codebook).reshape(64, CODE)
    (expected * weights).sum().backward()
    torch.testing.assert_close(grad, q.proj.weight.grad)


def test_gumbel_noise_is_deterministic_under_a_seed() -> None:
    q = _quantizer().train()
    x = torch.randn(5, 9, IN, generator=_gen())
    a = q(x, generator=_gen(3)).indices
    assert torch.equal(a, q(x, generator=_gen(3)).indices)
    assert not torch.equal(a, q(x, generator=_gen(4)).indices)


def test_straight_through_gradients() -> None:
    q = _quantizer().train()
    x = torch.randn(4, 6, IN, generator=_gen())
    out = q(x, generator=_gen(1))
    weights = torch.randn(out.quantized.shape, generator=_gen(2))
    (out.quantized * weights).sum().backward()
    assert q.proj.weight.grad is not None and q.proj.weight.grad.abs().sum() > 0
    # The codebook gets gradient exactly at the rows that were chosen.
    used = torch.zeros(G, V, dtype=torch.bool)
    for g in range(G):
        used[g, out.indices[..., g].flatten()] = True
    row_grad = q.codebook.grad.abs().sum(-1) > 0  # (G, V)
    assert torch.equal(row_grad, used)


@pytest.mark.parametrize("training", [True, False])
def test_perplexities_are_bounded(training: bool) -> None:
    q = _quantizer().train(training)
    out = q(torch.randn(256, IN, generator=_gen()), generator=_gen(1))
    for ppl in (out.code_ppl, out.prob_ppl):
        assert ppl.shape == ()
        assert G - 1e-4 <= ppl.item() <= G * V + 1e-4
    assert q.num_codes == G * V


@pytest.mark.parametrize("training", [True, False])
def test_collapsed_input_has_perplexity_g(training: bool) -> None:
    q = _quantizer().train(training)
    with torch.no_grad():
        q.proj.weight.mul_(1000.0)  # softmax ≈ one-hot, so prob_ppl ≈ G as well
    x = torch.randn(IN, generator=_gen()).expand(50, IN)
    out = q(x, generator=_gen(1))
    assert out.code_ppl.item() == G  # exactly: every position has the same code
    assert out.prob_ppl.item() == pytest.approx(G, abs=1e-3)


def test_uniform_logits_have_prob_perplexity_gv() -> None:
    q = _quantizer()
    with torch.no_grad():
        q.proj.weight.zero_()
        q.proj.bias.zero_()
    out = q(torch.randn(20, IN, generator=_gen()), generator=_gen(1))
    assert out.prob_ppl.item() == pytest.approx(G * V, rel=1e-5)


def test_mask_restricts_the_perplexities() -> None:
    q = _quantizer().eval()
    x = torch.randn(4, 30, IN, generator=_gen())
    mask = torch.zeros(4, 30, dtype=torch.bool)
    mask[:, ::3] = True
    x[mask] = torch.randn(IN, generator=_gen(5))  # masked positions collapsed to one vector
    masked = q(x, mask=mask)
    assert masked.code_ppl.item() == G
    assert q(x).code_ppl.item() > G  # over all positions the codes differ
    # Same perplexities as quantizing only the selected positions.
    alone = q(x[mask])
    torch.testing.assert_close(masked.prob_ppl, alone.prob_ppl)
    with pytest.raises(ValueError, match="mask"):
        q(x, mask=mask[:, :10])


def test_temperature_schedule() -> None:
    q = _quantizer()
    # max(2·0.999995^step, 0.5), computed by hand.
    expected = {0: 2.0, 100_000: 1.2130598, 1_000_000: 0.5}
    for step, tau in expected.items():
        q.set_step(step)
        assert q.temperature == pytest.approx(tau, abs=1e-6)
        assert gumbel_temperature(step) == pytest.approx(tau, abs=1e-6)
    assert q(torch.randn(3, IN)).temperature == 0.5
    q.set_num_updates(1)  # fairseq's hook name
    assert q.temperature == pytest.approx(2 * 0.999995)
    # 2·0.999995^s reaches 0.5 at s = ln 4 / −ln 0.999995 ≈ 277,258.
    floor_step = math.ceil(math.log(4) / -math.log(0.999995))
    assert gumbel_temperature(floor_step - 1) > 0.5 == gumbel_temperature(floor_step)


def test_config_defaults_and_from_config() -> None:
    cfg = QuantizerConfig()
    assert (cfg.groups, cfg.entries, cfg.code_dim) == (2, 256, 0)
    assert (cfg.temp_start, cfg.temp_end, cfg.temp_decay) == (2.0, 0.5, 0.999995)
    q = GumbelProductQuantizer.from_config(64, cfg)
    assert q.codebook.shape == (2, 256, 32) and q.code_dim == 64
    assert q(torch.randn(2, 5, 64)).quantized.shape == (2, 5, 64)
    with pytest.raises(ValueError, match="divisible"):
        GumbelProductQuantizer(64, groups=3)


@pytest.mark.parametrize("training", [True, False])
def test_fp32_outputs_under_bf16_autocast(training: bool) -> None:
    q = _quantizer().train(training)
    x = torch.randn(40, IN, generator=_gen())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = q(x, generator=_gen(1))
    assert out.quantized.dtype == out.prob_ppl.dtype == out.code_ppl.dtype == torch.float32
    torch.testing.assert_close(out.quantized, _selected_rows(q, out.indices), atol=0, rtol=0)


def test_gumbel_noise_has_the_gumbel_distribution() -> None:
    from persec.objectives.quantizer import _gumbel_noise

    noise = _gumbel_noise(torch.empty(200_000, 3), _gen(5))
    assert torch.isfinite(noise).all()
    assert noise.mean().item() == pytest.approx(0.5772, abs=0.01)  # Euler-Mascheroni
    assert noise.var().item() == pytest.approx(torch.pi**2 / 6, abs=0.03)
    # Gumbel-max: argmax(logits + noise) samples softmax(logits).
    logits = torch.tensor([0.0, 1.0, 2.0])
    freq = torch.bincount((logits + noise).argmax(-1), minlength=3) / noise.size(0)
    torch.testing.assert_close(freq, logits.softmax(-1), atol=0.005, rtol=0)
