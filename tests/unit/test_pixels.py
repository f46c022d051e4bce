"""The pixel-reconstruction term of input-masked PerSec pretraining [ours]."""

from __future__ import annotations

import pytest
import torch

from persec.models.encoders.base import EncoderConfig, build_encoder
from persec.objectives.perceiver import PerceiverConfig
from persec.objectives.persec import PersecConfig, PersecObjective
from persec.objectives.pixels import PixelHead, frame_pixels
from persec.objectives.quantizer import QuantizerConfig


def test_frame_pixels_are_each_frames_columns_in_channel_row_column_order() -> None:
    img = torch.arange(2 * 2 * 4).float().view(1, 2, 2, 4)  # (B=1, C=2, H=2, W=4)
    out = frame_pixels(img, frames=2, rows=2, norm=False)  # 2 frames of 2 columns
    assert out.shape == (1, 2, 8)
    # frame 0: channel 0 rows (0, 1) columns (0, 1), then channel 1
    assert out[0, 0].tolist() == [0, 1, 4, 5, 8, 9, 12, 13]
    assert out[0, 1].tolist() == [2, 3, 6, 7, 10, 11, 14, 15]
    # rows=1 pools the height: the mean of each column
    assert frame_pixels(img, 2, 1, False)[0, 0].tolist() == [2, 3, 10, 11]
    normed = frame_pixels(img, 2, 2, True)
    assert torch.allclose(normed.mean(-1), torch.zeros(1, 2), atol=1e-5)
    assert torch.allclose(normed.var(-1), torch.ones(1, 2), atol=1e-4)
    with pytest.raises(ValueError, match="multiple of"):
        frame_pixels(img[..., :3], 2, 2, False)


def test_pixel_loss_reads_only_the_masked_frames() -> None:
    head = PixelHead(channels=5, pixels=3 * 32 * 4)
    torch.nn.init.zeros_(head.proj.weight)
    torch.nn.init.zeros_(head.proj.bias)  # predicts 0 everywhere
    images = torch.rand(2, 3, 32, 16) * 2 - 1  # T = 4 frames
    mask = torch.tensor([[True, False, False, True], [False, True, False, False]])
    context = torch.randn(2, 4, 5)
    loss = head.loss(context, images, mask, rows=32, norm=False)
    expected = frame_pixels(images, 4, 32, False)[mask].pow(2).mean()
    assert torch.allclose(loss, expected)
    changed = images.clone()
    changed[0, :, :, 4:12] = 0.9  # frames 1 and 2 of image 0, both visible
    assert torch.allclose(head.loss(context, changed, mask, 32, False), loss)


def _objective(**kw) -> tuple:
    torch.manual_seed(0)
    enc = build_encoder(EncoderConfig(name="resnet", size="tiny"))
    q = QuantizerConfig(entries=32)
    cfg = PersecConfig(
        stroke=PerceiverConfig(mask_prob=0.2, quantizer=q),
        semantic=PerceiverConfig(mask_prob=0.15, quantizer=q),
        mask_at="input",
        **kw,
    )
    return enc, PersecObjective(enc, cfg)


@pytest.mark.parametrize("shift", [False, True])
def test_pixel_term_adds_its_weighted_loss_and_trains_the_encoder(shift: bool) -> None:
    images = torch.rand(4, 3, 32, 128, generator=torch.Generator().manual_seed(1)) * 2 - 1
    enc, plain = _objective(target_shift=shift)
    enc.eval()  # BatchNorm in eval: both runs see the same statistics
    base = plain(enc, images, generator=torch.Generator().manual_seed(0))
    assert "pixel/mse" not in base.logs and plain.pixels is None
    enc, obj = _objective(target_shift=shift, pixel_weight=0.5)
    enc.eval()
    seen = []
    loss_fn = obj.pixels.loss
    obj.pixels.loss = lambda context, target, *a: (
        seen.append(target) or loss_fn(context, target, *a)
    )
    out = obj(enc, images, generator=torch.Generator().manual_seed(0))
    assert torch.equal(seen[0], images)  # the pixels where the context sees them: unrolled
    mse = out.logs["pixel/mse"]
    assert float(mse) > 0
    assert torch.allclose(out.loss, base.loss + 0.5 * mse, atol=1e-5)
    enc.zero_grad()
    out.loss.backward()
    assert obj.pixels.proj.weight.grad.abs().sum() > 0
    first = next(p for p in enc.parameters() if p.dim() == 4)
    assert first.grad is not None and first.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "kw", [{"mask_at": "features"}, {"levels": "stroke"}], ids=["features", "stroke-only"]
)
def test_pixel_term_needs_input_masking_and_the_semantic_level(kw: dict) -> None:
    enc = build_encoder(EncoderConfig(name="resnet", size="tiny"))
    cfg = PersecConfig(**{"mask_at": "input", "pixel_weight": 1.0, **kw})
    with pytest.raises(ValueError, match="pixel_weight needs"):
        PersecObjective(enc, cfg)
    with pytest.raises(ValueError, match="must be >= 0"):
        PersecObjective(enc, PersecConfig(mask_at="input", pixel_weight=-1.0))
