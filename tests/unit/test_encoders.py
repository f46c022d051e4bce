"""Encoders: the Features contract, the split forward and the aggregator slots."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from persec.models.aggregator import ContextAggregator
from persec.models.encoders.base import EncoderConfig, build_encoder
from persec.models.features import Features

FAMILIES = ("resnet", "vit")


def _images(b: int = 2, w: int = 128, c: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(b, c, 32, w, generator=g) * 2 - 1  # (B, C, H, W) in [-1, 1]


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("size", ["tiny", "small"])
@pytest.mark.parametrize("width", [128, 384, 100])
def test_feature_shapes(name: str, size: str, width: int) -> None:
    enc = build_encoder(EncoderConfig(name=name, size=size)).eval()
    with torch.no_grad():
        feats = enc(_images(2, width))
    assert isinstance(feats, Features)
    assert feats.low.shape == (2, enc.low_channels, enc.low_height(32), width // 4)
    assert feats.high.shape == (2, width // 4, enc.out_channels)
    assert torch.isfinite(feats.low).all() and torch.isfinite(feats.high).all()


def test_sizes_set_channels() -> None:
    small = build_encoder(EncoderConfig(name="resnet", size="small"))
    assert (small.low_channels, small.out_channels) == (64, 256)
    base = build_encoder(EncoderConfig(name="vit", size="base"))
    assert (base.low_channels, base.out_channels) == (128, 512)
    assert base.low_height(32) == 8


@pytest.mark.parametrize("name", FAMILIES)
def test_split_forward_composes(name: str) -> None:
    enc = build_encoder(EncoderConfig(name=name, size="tiny")).eval()
    x = _images()
    with torch.no_grad():
        feats = enc(x)
        low = enc.encode_low(x)
        high = enc.semantic_aggregator(enc.encode_high(low))
    torch.testing.assert_close(feats.low, low)
    torch.testing.assert_close(feats.high, high)


class _Recorder(nn.Module):
    """Records input shapes and adds a constant, so its effect on the output shows."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return x + 1.0


@pytest.mark.parametrize("name", FAMILIES)
def test_aggregator_slots_are_on_the_forward_path(name: str) -> None:
    enc = build_encoder(EncoderConfig(name=name, size="tiny", aggregators=False)).eval()
    assert isinstance(enc.stroke_aggregator, nn.Identity)
    assert isinstance(enc.semantic_aggregator, nn.Identity)
    x = _images(2, 64)
    with torch.no_grad():
        plain = enc(x)
        enc.stroke_aggregator, enc.semantic_aggregator = _Recorder(), _Recorder()
        hooked = enc(x)
    assert enc.stroke_aggregator.shapes == [(2, enc.low_channels, 8, 16)]
    assert enc.semantic_aggregator.shapes == [(2, 16, enc.out_channels)]
    # `low` is taken before the stroke aggregator; `high` depends on both slots.
    torch.testing.assert_close(hooked.low, plain.low)
    assert not torch.allclose(hooked.high, plain.high)
    # encode_high applies the stroke aggregator itself.
    with torch.no_grad():
        enc.encode_high(plain.low)
    assert len(enc.stroke_aggregator.shapes) == 2


@pytest.mark.parametrize("name", FAMILIES)
def test_grey_input_and_gradients(name: str) -> None:
    enc = build_encoder(EncoderConfig(name=name, size="tiny", in_channels=1))
    feats = enc(_images(2, 64, c=1))
    (feats.low.mean() + feats.high.pow(2).mean()).backward()
    missing = [n for n, p in enc.named_parameters() if p.grad is None]
    assert not missing


def test_overrides_and_plain_config_types() -> None:
    cfg = OmegaConf.to_object(
        OmegaConf.merge(
            OmegaConf.structured(EncoderConfig),
            OmegaConf.from_dotlist(["name=vit", "widths=[8,16]", "depths=[1,1]", "heads=[1,2]"]),
        )
    )
    enc = build_encoder(cfg)
    assert (enc.low_channels, enc.out_channels) == (8, 16)
    assert enc(_images(1, 32)).high.shape == (1, 8, 16)
    res = build_encoder(EncoderConfig(size="tiny", widths=[8, 8, 8, 8, 8, 8], depths=[1] * 6))
    assert res(_images(1, 32)).high.shape == (1, 8, 8)  # stages past height 1 keep it at 1


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        (EncoderConfig(name="swin"), "resnet, vit"),
        (EncoderConfig(size="huge"), "tiny, small, base"),
        (EncoderConfig(size="tiny", widths=[8, 8]), "equal-length"),
        (EncoderConfig(name="vit", size="tiny", heads=[3, 2, 2]), "divisible"),
    ],
)
def test_bad_config(cfg: EncoderConfig, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_encoder(cfg)


@pytest.mark.parametrize("name", FAMILIES)
def test_bad_input(name: str) -> None:
    enc = build_encoder(EncoderConfig(name=name, size="tiny"))
    with pytest.raises(ValueError, match="multiples of 4"):
        enc(torch.zeros(1, 3, 32, 30))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        enc(torch.zeros(1, 1, 32, 32))


def test_vit_checks_height_resnet_accepts_any() -> None:
    with pytest.raises(ValueError, match="built for height 32"):
        build_encoder(EncoderConfig(name="vit", size="tiny"))(torch.zeros(1, 3, 64, 32))
    res = build_encoder(EncoderConfig(size="tiny")).eval()
    assert res(torch.zeros(1, 3, 64, 32)).high.shape == (1, 8, 32)


@pytest.mark.parametrize("name", FAMILIES)
def test_aggregators_by_default_with_the_papers_windows(name: str) -> None:
    enc = build_encoder(EncoderConfig(name=name, size="tiny"))
    assert isinstance(enc.stroke_aggregator, ContextAggregator)
    assert isinstance(enc.semantic_aggregator, ContextAggregator)
    assert enc.stroke_aggregator.window == 4  # half the 8-row low map (32-pixel images)
    assert enc.semantic_aggregator.window == 10
    # Identity at initialisation: the slots do not change a fresh encoder's output.
    x = _images(2, 64)
    plain = build_encoder(EncoderConfig(name=name, size="tiny", aggregators=False))
    missing, _ = plain.load_state_dict(enc.state_dict(), strict=False)
    assert not missing
    enc.eval(), plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(enc(x).high, plain(x).high)


@pytest.mark.parametrize("train", [False, True])
def test_resnet_channels_last_computes_the_nchw_function(train: bool) -> None:
    """The ResNet runs its convolutions channels-last for speed: the same function as
    the modules applied to standard-layout tensors, up to summation order, and its
    outputs come back in the standard layout (the perceivers reshape them)."""
    torch.manual_seed(0)
    enc = build_encoder(EncoderConfig(name="resnet", size="tiny")).train(train)
    x = torch.randn(4, 3, 32, 64)
    feats = enc(x)
    with torch.no_grad():
        low = enc.stroke_aggregator(enc.stage1(enc.stem(x)))  # standard layout throughout
        high = enc.semantic_aggregator(enc.stages(low).mean(dim=2).transpose(1, 2))
    assert feats.low.is_contiguous() and feats.low.shape == low.shape
    tol = 1e-3 if train else 1e-5  # training-mode BatchNorm compounds the order effects
    torch.testing.assert_close(
        feats.low.detach(), enc.stage1(enc.stem(x)).detach(), atol=tol, rtol=tol
    )
    torch.testing.assert_close(feats.high.detach(), high, atol=tol, rtol=tol)
