"""Window attention: equal to dense attention under an explicit window mask."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from persec.models.aggregator import (
    AggregatorConfig,
    ContextAggregator,
    WindowTransformerBlock,
    resolve_window,
)
from persec.models.attention import WindowAttention1d, WindowAttention2d
from persec.models.encoders.base import EncoderConfig, build_encoder

DIM, HEADS = 32, 4


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randomise_bias(attn: WindowAttention2d, seed: int = 1) -> None:
    # Large enough that a wrong offset or a wrong mask changes the output visibly.
    with torch.no_grad():
        attn.rel_bias.copy_(torch.randn(attn.rel_bias.shape, generator=_gen(seed)))


def _dense_reference(attn: WindowAttention2d, x: torch.Tensor, window, shift: bool):
    """Full attention over all H·W tokens with a block mask built from window ids.

    A token at (y, x) lies in window (⌊(y − s_h)/ω_h⌋, ⌊(x − s_w)/ω_w⌋) of the grid
    offset by s (s = ⌊ω/2⌋ along axes with more than one window when shifted);
    tokens attend iff their ids match. No padding and no rolling here.
    """
    b, h, w, c = x.shape
    wh, ww = window
    sh = wh // 2 if shift and -(-h // wh) > 1 else 0
    sw = ww // 2 if shift and -(-w // ww) > 1 else 0
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    ry, rx = (ys - sh).div(wh, rounding_mode="floor"), (xs - sw).div(ww, rounding_mode="floor")
    allowed = (ry[:, None] == ry[None]) & (rx[:, None] == rx[None])  # (HW, HW)
    rh, rw = attn.window
    dy = (ys[:, None] - ys[None]).clamp(1 - rh, rh - 1) + rh - 1
    dx = (xs[:, None] - xs[None]).clamp(1 - rw, rw - 1) + rw - 1
    bias = attn.rel_bias[dy * (2 * rw - 1) + dx].permute(2, 0, 1)  # (heads, HW, HW)
    bias = bias.masked_fill(~allowed, float("-inf"))
    d = c // attn.heads
    qkv = attn.qkv(x.reshape(b, h * w, c)).view(b, h * w, 3, attn.heads, d)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, heads, HW, d)
    return attn.proj(y.transpose(1, 2).reshape(b, h, w, c))


@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize(("h", "w"), [(8, 32), (8, 30), (6, 33), (3, 5)])
def test_2d_equals_dense_block_masked(h: int, w: int, shift: bool) -> None:
    attn = WindowAttention2d(DIM, HEADS, 4, shift=shift).eval()
    _randomise_bias(attn)
    x = torch.randn(2, h, w, DIM, generator=_gen())
    y = attn(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y, _dense_reference(attn, x, (4, 4), shift), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize(("h", "w"), [(8, 32), (6, 33), (3, 5)])
def test_2d_gradients_equal_dense_block_masked(h: int, w: int, shift: bool) -> None:
    """The window gather's hand-written backward (a gather by the inverse index, not
    zero-fill + index_add) gives autograd's gradients, padded and shifted maps too."""
    attn = WindowAttention2d(DIM, HEADS, 4, shift=shift).eval()
    _randomise_bias(attn)
    x = torch.randn(2, h, w, DIM, generator=_gen(), requires_grad=True)
    weight = torch.randn(2, h, w, DIM, generator=_gen(3))  # a loss that sees every output
    params = [x, *attn.parameters()]
    got = torch.autograd.grad((attn(x) * weight).sum(), params)
    want = torch.autograd.grad((_dense_reference(attn, x, (4, 4), shift) * weight).sum(), params)
    for g, r in zip(got, want, strict=True):
        torch.testing.assert_close(g, r, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize("t", [32, 96, 25, 7])
def test_1d_equals_dense_block_masked(t: int, shift: bool) -> None:
    attn = WindowAttention1d(DIM, HEADS, 10, shift=shift).eval()
    _randomise_bias(attn)
    x = torch.randn(2, t, DIM, generator=_gen())
    y = attn(x)
    assert y.shape == x.shape
    ref = _dense_reference(attn, x[:, None], (1, 10), shift)[:, 0]
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)


def test_rectangular_windows_and_no_nan_on_padding() -> None:
    attn = WindowAttention2d(DIM, HEADS, (2, 5), shift=True).eval()
    _randomise_bias(attn)
    x = torch.randn(1, 5, 13, DIM, generator=_gen())
    y = attn(x)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, _dense_reference(attn, x, (2, 5), True), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", [(2, 8, 12, DIM), (2, 1, 40, DIM)])
def test_global_equals_dense_unmasked(shape) -> None:
    attn = WindowAttention2d(DIM, HEADS, 4, shift=True, global_attention=True).eval()
    _randomise_bias(attn)
    x = torch.randn(*shape, generator=_gen())
    h, w = shape[1:3]
    # window = the whole map: every id is 0, nothing masked; offsets beyond ±3 clip.
    torch.testing.assert_close(
        attn(x), _dense_reference(attn, x, (h, w), False), atol=1e-5, rtol=1e-5
    )


def test_single_window_equals_global() -> None:
    win = WindowAttention2d(DIM, HEADS, 4).eval()
    glob = WindowAttention2d(DIM, HEADS, 4, global_attention=True).eval()
    glob.load_state_dict(win.state_dict())
    x = torch.randn(2, 4, 4, DIM, generator=_gen())
    torch.testing.assert_close(win(x), glob(x), atol=1e-6, rtol=1e-6)


def test_window_is_local() -> None:
    # Changing one token changes outputs only inside its window (unshifted).
    attn = WindowAttention2d(DIM, HEADS, 4).eval()
    x = torch.randn(1, 8, 16, DIM, generator=_gen())
    x2 = x.clone()
    x2[0, 1, 5] += 1.0  # window (0, 1): rows 0-3, columns 4-7
    changed = (attn(x) - attn(x2)).abs().amax(-1)[0] > 0  # (H, W)
    expected = torch.zeros(8, 16, dtype=torch.bool)
    expected[0:4, 4:8] = True
    assert torch.equal(changed, expected)


def test_shifted_differs_from_unshifted() -> None:
    plain = WindowAttention2d(DIM, HEADS, 4).eval()
    shifted = WindowAttention2d(DIM, HEADS, 4, shift=True).eval()
    shifted.load_state_dict(plain.state_dict())
    x = torch.randn(2, 8, 32, DIM, generator=_gen())
    assert (plain(x) - shifted(x)).abs().max() > 1e-3


def test_block_and_aggregator_alternate_shift() -> None:
    agg = ContextAggregator(16, 2, AggregatorConfig(blocks=4), feature_height=8)
    assert [b.attn.shift for b in agg.blocks] == [False, True, False, True]
    assert agg.window == 4 and agg.blocks[0].attn.window == (4, 4)
    agg1 = ContextAggregator(16, 1, AggregatorConfig(shift=False))
    assert [b.attn.shift for b in agg1.blocks] == [False, False]
    assert agg1.blocks[0].attn.window == (1, 10)
    block = WindowTransformerBlock(DIM, HEADS, 10, ndim=1, shift=True)
    assert block(torch.randn(2, 25, DIM)).shape == (2, 25, DIM)


def test_config_defaults_are_the_papers() -> None:
    cfg = AggregatorConfig()
    assert (cfg.dim, cfg.heads, cfg.blocks, cfg.shift, cfg.global_attention) == (
        128,
        8,
        2,
        True,
        False,
    )
    assert resolve_window(cfg, 2, feature_height=8) == 4
    assert resolve_window(cfg, 1) == 10
    assert resolve_window(AggregatorConfig(window=6), 2, feature_height=8) == 6
    with pytest.raises(ValueError, match="feature_height"):
        resolve_window(cfg, 2)
    agg = ContextAggregator(64, 2, feature_height=8)
    assert agg.proj_in.out_features == 128 and agg.blocks[0].attn.heads == 8


@pytest.mark.parametrize("global_attention", [False, True])
@pytest.mark.parametrize(("h", "w"), [(8, 32), (8, 30), (6, 33)])
def test_aggregator_2d_preserves_shape(h: int, w: int, global_attention: bool) -> None:
    cfg = AggregatorConfig(dim=32, heads=4, window=4, global_attention=global_attention)
    agg = ContextAggregator(24, 2, cfg)
    x = torch.randn(2, 24, h, w, generator=_gen())
    y = agg(x)
    assert y.shape == x.shape
    # Identity at initialisation: the zeroed output projection makes y == x.
    assert torch.equal(y, x)


@pytest.mark.parametrize("t", [32, 96, 25])
def test_aggregator_1d_preserves_shape(t: int) -> None:
    cfg = AggregatorConfig(dim=32, heads=4, identity_init=False)
    agg = ContextAggregator(40, 1, cfg).eval()
    x = torch.randn(3, t, 40, generator=_gen())
    y = agg(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert not torch.equal(y, x)


@pytest.mark.parametrize("ndim", [1, 2])
def test_gradients_reach_every_parameter(ndim: int) -> None:
    cfg = AggregatorConfig(dim=32, heads=4, window=4, identity_init=False)
    agg = ContextAggregator(16, ndim, cfg)
    shape = (2, 16, 6, 30) if ndim == 2 else (2, 25, 16)
    x = torch.randn(*shape, generator=_gen(), requires_grad=True)
    agg(x).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, param in agg.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_identity_init_still_trains_the_output_projection() -> None:
    agg = ContextAggregator(16, 1, AggregatorConfig(dim=32, heads=4))
    agg(torch.randn(2, 20, 16, generator=_gen())).square().sum().backward()
    assert agg.proj_out.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["resnet", "vit"])
def test_drops_into_encoder_slots(name: str) -> None:
    enc = build_encoder(EncoderConfig(name=name, size="tiny")).eval()
    images = torch.rand(2, 3, 32, 64, generator=_gen()) * 2 - 1
    with torch.no_grad():
        before = enc(images)
    cfg = AggregatorConfig(dim=32, heads=4, identity_init=False)
    enc.stroke_aggregator = ContextAggregator(
        enc.low_channels, 2, cfg, feature_height=enc.low_height(32)
    )
    enc.semantic_aggregator = ContextAggregator(enc.out_channels, 1, cfg)
    with torch.no_grad():
        after = enc(images)
    assert after.low.shape == before.low.shape and after.high.shape == before.high.shape
    assert not torch.allclose(after.high, before.high)


def test_bad_inputs_are_errors() -> None:
    with pytest.raises(ValueError, match="divisible"):
        WindowAttention2d(30, 4, 4)
    agg = ContextAggregator(16, 2, AggregatorConfig(dim=32, heads=4), feature_height=8)
    with pytest.raises(ValueError, match="expected"):
        agg(torch.randn(2, 8, 16))


def test_bf16_autocast_runs_and_stays_close() -> None:
    cfg = AggregatorConfig(dim=32, heads=4, identity_init=False)
    agg = ContextAggregator(16, 2, cfg, feature_height=6).eval()
    x = torch.randn(2, 16, 6, 33, generator=_gen())  # padded and shifted windows
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = agg(x)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), agg(x), atol=0.1, rtol=0.05)


@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_trains_bf16_in_fp32_on_cpu(causal: bool) -> None:
    """Under bf16 with gradients, `sdpa` computes in fp32 (the slow bf16 CPU backward is
    avoided) and returns bf16; without gradients it is plain SDPA; causality holds."""
    from persec.models.attention import sdpa

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 6, 8, generator=g).bfloat16() for _ in range(3))
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=causal)
    qg = q.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sdpa(qg, k, v, is_causal=causal)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, ref.bfloat16(), atol=0, rtol=0)
    out.float().sum().backward()
    assert qg.grad is not None and torch.isfinite(qg.grad).all()
    plain = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    assert torch.equal(sdpa(q, k, v, is_causal=causal), plain)
