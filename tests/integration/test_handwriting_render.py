"""The handwriting style of the renderer (issue 30, item 5): script families only, held
out by family for the test split, binarized black on white, lines at their own width,
and `persec render --style handwriting`."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from persec.cli import main
from persec.data.lmdb import LmdbDataset
from persec.data.render.config import HandwritingSynthConfig
from persec.data.render.fonts import FontFace, available_fonts
from persec.data.render.handwriting import (
    HANDWRITING_FAMILIES,
    binarize,
    handwriting_faces,
    pen_width,
)
from persec.data.render.synth import WordRenderer
from persec.errors import PersecError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CHARS = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,'-") + ["<space>"]


@pytest.fixture(scope="module")
def fonts(tmp_path_factory) -> list[FontFace]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PERSEC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        return available_fonts()


@pytest.fixture(scope="module")
def charset(tmp_path_factory):
    path = tmp_path_factory.mktemp("charset") / "hw.txt"
    path.write_text("\n".join(CHARS) + "\n")
    return str(path)


def _lines(charset: str, **changes) -> HandwritingSynthConfig:
    config = HandwritingSynthConfig(charset=charset, max_length=60, **changes)
    config.words = dataclasses.replace(config.words, line_words=(3, 6))
    return config


def test_handwriting_style_draws_script_families_and_holds_whole_families_out(fonts, charset):
    train = WordRenderer(_lines(charset), "train", seed=0, fonts=fonts)
    test = WordRenderer(_lines(charset), "test", seed=0, fonts=fonts)
    train_groups, test_groups = {f.group for f in train.fonts}, {f.group for f in test.fonts}
    assert train_groups and test_groups and not train_groups & test_groups
    assert train_groups | test_groups <= HANDWRITING_FAMILIES
    image, label = train.render(0)
    assert image.height == 32 and image.width > 4 * 32  # a line at its own width
    assert " " in label and label == train.text(0)
    assert train.render(0)[0].tobytes() == image.tobytes()  # a function of (seed, index)


def test_binarized_renders_are_black_on_white(fonts, charset):
    renderer = WordRenderer(_lines(charset, p_binarize=1.0), "train", seed=1, fonts=fonts)
    for i in range(4):
        values = np.unique(np.asarray(renderer.render(i)[0]))
        assert set(values.tolist()) <= {0, 255} and 0 in values and 255 in values


def test_binarize_keeps_the_darker_strokes_and_leaves_a_flat_image_alone():
    grey = np.full((10, 20), 200, np.uint8)
    grey[4:6, 5:15] = 40
    out = np.asarray(binarize(Image.fromarray(grey).convert("RGB")).convert("L"))
    assert (out[4:6, 5:15] == 0).all() and (out[:4] == 255).all()
    # Sparse ink on noisy paper: Otsu finds the strokes, not the noise.
    rng = np.random.default_rng(0)
    noisy = np.clip(rng.normal(210, 8, (40, 200)), 0, 255).astype(np.uint8)
    noisy[20, 10:40] = 30
    out = np.asarray(binarize(Image.fromarray(noisy).convert("RGB")).convert("L"))
    assert (out == 0).sum() == 30
    # Too little contrast to tell ink from paper: returned as it was, not blanked.
    flat = Image.fromarray(np.clip(rng.normal(120, 3, (8, 8)), 0, 255).astype(np.uint8)).convert(
        "RGB"
    )
    assert binarize(flat).tobytes() == flat.tobytes()


def test_pen_width_thickens_and_never_erases_thin_strokes():
    mask = Image.new("L", (20, 20))
    mask.paste(255, (5, 5, 15, 6))  # a one-pixel stroke
    rng = np.random.default_rng(0)
    thick = pen_width(rng, [mask], p_thin=0.0, p_thick=1.0)[0]
    assert np.asarray(thick).astype(bool).sum() > np.asarray(mask).astype(bool).sum()
    kept = pen_width(rng, [mask], p_thin=1.0, p_thick=0.0)[0]
    assert kept.tobytes() == mask.tobytes()  # erosion would remove it: not applied


def test_too_few_handwriting_families_is_a_clear_error(fonts):
    print_only = [f for f in fonts if f.group not in HANDWRITING_FAMILIES]
    with pytest.raises(PersecError, match="fonts-kristi"):
        handwriting_faces(print_only)


def test_cli_renders_handwriting_lines(tmp_path, charset):
    out = tmp_path / "hw"
    args = ["render", "--style", "handwriting", "--n", "6", "--workers", "0", "--out", str(out)]
    assert main([*args, f"charset={charset}", "max_length=60", "words.line_words=[3,6]"]) == 0
    data = LmdbDataset(out, charset=charset, max_label_length=None)
    assert len(data) == 6
    for i in range(6):
        image = Image.open(io.BytesIO(data.read_bytes(i)))
        assert image.height == 32 and image.width > 64
        assert " " in data.label(i)
    assert "style: handwriting" in (out / "render.yaml").read_text()


def test_the_line_config_spells_out_the_handwriting_preset():
    """configs/finetune/cpu-htr-lines.yaml trains on what `render --style handwriting`
    draws: every look setting equals the preset's."""
    from persec.config import load_config
    from persec.training.finetune import FinetuneConfig

    synth = load_config(FinetuneConfig, CONFIGS / "finetune" / "cpu-htr-lines.yaml").data.synth
    preset = HandwritingSynthConfig()
    own = {"charset", "max_length", "words"}  # the config's choices for GW lines
    for field in dataclasses.fields(preset):
        if field.name not in own:
            assert getattr(synth, field.name) == getattr(preset, field.name), field.name
    for name in ("p_word", "p_random", "p_number", "p_lower", "p_upper", "p_title", "p_mixed"):
        assert getattr(synth.words, name) == getattr(preset.words, name), name
