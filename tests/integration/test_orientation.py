"""Vertical crops (``orient="tall"``): which versions are read, which reading wins, and
that batching keeps every image's versions together (library, ``read_images``, CLI)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from persec.evaluation.evaluate import evaluate
from persec.image import ImageConfig
from persec.inference.read import read_images
from persec.models.decoders.base import DecoderConfig
from persec.models.encoders.base import EncoderConfig
from persec.models.recognizer import Recognizer, RecognizerConfig
from persec.orientation import (
    KEEP_UPRIGHT,
    TALL_RATIO,
    best_reading,
    best_readings,
    orientation_variants,
)


def marked(width: int, height: int) -> Image.Image:
    """Black image with a white band along its top edge (a quarter of the height)."""
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[: height // 4] = 255
    return Image.fromarray(array)


def test_wide_and_square_crops_are_read_as_given():
    for size in [(128, 32), (40, 40), (40, int(40 * TALL_RATIO) - 1)]:
        image = marked(*size)
        assert orientation_variants(image, "tall") == [image]
    assert orientation_variants(marked(20, 100), "none") == [marked(20, 100)]


def test_tall_crop_is_turned_both_ways():
    image = marked(20, int(20 * TALL_RATIO))  # exactly the ratio counts as tall
    upright, clockwise, anticlockwise = orientation_variants(image, "tall")
    assert upright is image
    assert clockwise.size == anticlockwise.size == (30, 20)
    # Turned clockwise, the top edge is on the right; anticlockwise, on the left.
    cw, acw = np.asarray(clockwise)[..., 0], np.asarray(anticlockwise)[..., 0]
    assert cw[:, -1].min() == 255 and cw[:, 0].max() == 0
    assert acw[:, 0].min() == 255 and acw[:, -1].max() == 0


def test_unknown_mode_is_named():
    with pytest.raises(ValueError, match="orient must be one of none, tall, not 'sideways'"):
        orientation_variants(marked(10, 10), "sideways")


@pytest.mark.parametrize(
    "candidates, expected",
    [
        # Upright and confident: kept, even if a turned version is longer or more
        # confident.
        ([("in", 0.9), ("5", 0.99), ("sss", 0.95)], ("in", 0.9)),
        ([("in", KEEP_UPRIGHT), ("hotel", 0.99)], ("in", KEEP_UPRIGHT)),
        # Upright empty, however confident: the most confident turned text.
        ([("", 0.999), ("3rdave", 0.7), ("ev", 0.8)], ("ev", 0.8)),
        # Upright doubtful: the most confident turned reading that is longer.
        ([("ash", 0.13), ("salmon", 0.51), ("sal", 0.9)], ("salmon", 0.51)),
        ([("st", 0.2), ("hotel", 0.3), ("hotels", 0.3)], ("hotel", 0.3)),  # tie: first
        # ... and none longer: the upright one (a "1" turned reads "9", confidently).
        ([("1", 0.45), ("9", 0.996), ("o", 0.62)], ("1", 0.45)),
        ([("ash", 0.4), ("", 0.9), ("x", 0.2)], ("ash", 0.4)),
        # Nothing but empty readings: the upright one.
        ([("", 0.9), ("", 0.99), ("", 0.95)], ("", 0.9)),
        # One version (not tall): itself, whatever its confidence.
        ([("ok", 0.01)], ("ok", 0.01)),
        ([("", 0.5)], ("", 0.5)),
    ],
)
def test_best_reading(candidates, expected):
    assert best_reading(candidates) == expected


def test_best_readings_groups_consecutive_versions():
    decoded = [
        ("", 0.99),
        ("3rdave", 0.7),
        ("ev", 0.2),
        ("wide", 0.1),
        ("1", 0.45),
        ("9", 0.99),
        ("o", 0.6),
    ]
    assert best_readings(decoded, [3, 1, 3]) == [("3rdave", 0.7), ("wide", 0.1), ("1", 0.45)]
    assert best_readings([], []) == []


class EdgeReader(nn.Module):
    """A stand-in recognizer that reads which edge of its input is bright: the left
    edge reads "left" (confidence 0.9), the right edge "right" (0.6), anything else
    (the top band of an upright marked crop, a dark image) reads empty (0.99)."""

    def __init__(self):
        super().__init__()
        self.config = RecognizerConfig(image=ImageConfig(32, 128, 3))
        self.anchor = nn.Parameter(torch.zeros(1))  # read_images takes the device from it
        self.batches: list[int] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, 2)
        self.batches.append(len(images))
        return torch.stack(
            [images[:, :, :, :8].mean((1, 2, 3)), images[:, :, :, -8:].mean((1, 2, 3))], 1
        )

    def decode(self, edges: torch.Tensor) -> list[tuple[str, float]]:
        out = []
        for left, right in edges.tolist():
            if left > 0:
                out.append(("left", 0.9))
            elif right > 0:
                out.append(("right", 0.6))
            else:
                out.append(("", 0.99))
        return out


def test_read_images_keeps_each_images_versions_together(tmp_path):
    tall, wide = tmp_path / "tall.png", tmp_path / "wide.png"
    marked(20, 60).save(tall)  # upright: empty; anticlockwise: the band on the left
    Image.fromarray(np.zeros((32, 100, 3), np.uint8)).save(wide)  # dark: empty
    (tmp_path / "bad.png").write_bytes(b"not an image")
    paths = [str(tall), str(wide), str(tmp_path / "bad.png"), str(tall), str(wide), str(tall)]
    model = EdgeReader()

    readings = list(read_images(model, paths, batch_size=2, orient="tall"))
    assert [r.path for r in readings] == paths
    assert [(r.text, r.confidence) for r in readings if r.error is None] == [
        ("left", 0.9),
        ("", 0.99),
        ("left", 0.9),
        ("", 0.99),
        ("left", 0.9),
    ]
    assert readings[2].error.startswith("undecodable image")
    # Batches of 2 images: each tall crop brings 3 versions, a wide one 1.
    assert model.batches == [4, 3, 4]

    plain = list(read_images(model, paths, batch_size=2))  # orient="none" by default
    assert [r.text for r in plain if r.error is None] == [""] * 5

    with pytest.raises(ValueError, match="orient must be one of"):
        next(read_images(model, paths, orient="upside-down"))


def test_recognizer_read_matches_reading_each_version():
    torch.manual_seed(0)
    model = Recognizer(
        RecognizerConfig(
            encoder=EncoderConfig(size="tiny"),
            decoder=DecoderConfig(name="ctc", lstm_layers=0),
        )
    ).eval()
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for w, h in [(30, 90), (90, 30), (16, 40), (50, 60)]
    ]
    turned = model.read(images, batch_size=3, orient="tall")
    plain = model.read(images)
    for image, reading in zip(images, turned, strict=True):
        text, confidence = best_reading(model.read(orientation_variants(image, "tall")))
        assert reading[0] == text and reading[1] == pytest.approx(confidence, abs=1e-5)
    for i in (1, 3):  # wide, and not tall enough: read as given
        assert turned[i][0] == plain[i][0]


def test_read_cli_orient_option(run_cli, tmp_path, monkeypatch):
    import persec.commands.read as read_command

    tall = tmp_path / "tall.png"
    marked(20, 60).save(tall)
    monkeypatch.setattr(read_command, "load_reader", lambda model, device, greedy: EdgeReader())
    code, out, _ = run_cli(["read", str(tall)])
    assert code == 0 and out == f"{tall}\tleft\t0.9000\n"
    code, out, _ = run_cli(["read", "--orient", "none", str(tall)])
    assert code == 0 and out == f"{tall}\t\t0.9900\n"
    code, _, err = run_cli(["read", "--orient", "sideways", str(tall)])
    assert code == 2 and "invalid choice: 'sideways'" in err


def test_evaluate_orient_scores_the_reading_persec_read_prints(tmp_path, run_cli, monkeypatch):
    import persec.commands.eval as eval_command

    data = tmp_path / "set"
    (data / "images").mkdir(parents=True)
    marked(20, 60).save(data / "images" / "tall.png")  # turned anticlockwise: "left"
    marked(60, 20).save(data / "images" / "wide.png")  # read as given: empty
    (data / "images" / "bad.png").write_bytes(b"not an image")
    (data / "gt.txt").write_text(
        "images/tall.png\tleft\nimages/wide.png\tleft\nimages/bad.png\tleft\n"
        "images/tall.png\tLEFT\n"
    )
    model = EdgeReader()
    plain = evaluate(model, [data], batch_size=3, progress=False)[0]
    turned = evaluate(model, [data], batch_size=3, progress=False, orient="tall")[0]
    assert (plain.samples, plain.correct) == (3, 0)
    assert (turned.samples, turned.correct) == (3, 2)  # both tall crops, case folded
    # Batches of 3 items, the bad one dropped: (tall, wide) then (tall,) -> 3 + 1, 3.
    assert model.batches[-2:] == [4, 3]
    with pytest.raises(ValueError, match="orient must be one of"):
        evaluate(model, [data], orient="sideways")

    monkeypatch.setattr(eval_command, "load_reader", lambda model, device, greedy: EdgeReader())
    code, out, _ = run_cli(
        ["eval", "--data", str(data), "--orient", "tall", "--out", str(tmp_path)]
    )
    assert code == 0 and "orient: tall" in out
    assert json.loads((tmp_path / "results.json").read_text())["orient"] == "tall"
