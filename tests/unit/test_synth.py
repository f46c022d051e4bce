"""Tests of the offline renderer: fonts, words, images, determinism, datasets."""

from __future__ import annotations

import dataclasses
import json
import pickle
import re
import string
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from torch.utils.data import DataLoader

from persec.charset import Charset
from persec.data.render import fonts as fonts_mod
from persec.data.render.config import HardSynthConfig, SynthConfig
from persec.data.render.dataset import SynthDataset
from persec.data.render.fonts import (
    FontFace,
    available_fonts,
    family_group,
    split_fonts,
    validate_font,
)
from persec.data.render.synth import WordRenderer
from persec.data.render.words import WordConfig, WordSampler
from persec.errors import PersecError

MPL_FONTS = Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@pytest.fixture(scope="module")
def fonts(tmp_path_factory) -> list[FontFace]:
    """Validated fonts, with the cache in a temporary folder (not the user's home)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PERSEC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        return available_fonts()


def _bytes(image) -> bytes:
    """Module-level (picklable) transform for the DataLoader test."""
    return image.tobytes()


# ---------------------------------------------------------------------- fonts
def test_validation_rejects_symbol_and_fallback_fonts():
    for name in ["LastResortHE-Regular.ttf", "cmex10.ttf", "cmsy10.ttf", "STIXSizOneSymReg.ttf"]:
        assert validate_font(MPL_FONTS / name) is None, name
    face = validate_font(MPL_FONTS / "DejaVuSans.ttf")
    assert face is not None and face.family == "DejaVu Sans" and face.case == "mixed"
    assert set(string.printable.strip()) - set(" \t\n\r\x0b\x0c") <= set(face.coverage)


def test_validation_is_deterministic():
    path = MPL_FONTS / "DejaVuSerif-Bold.ttf"
    assert validate_font(path) == validate_font(path)


def test_available_fonts_uses_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PERSEC_CACHE_DIR", str(tmp_path))
    first = available_fonts(system=False)
    assert first and all(Path(f.path).is_file() for f in first)
    assert len(list(tmp_path.glob("fonts-*.json"))) == 1

    def boom(path):
        raise AssertionError("validation ran although the cache was valid")

    monkeypatch.setattr(fonts_mod, "validate_font", boom)
    assert available_fonts(system=False) == first


def test_corrupt_cache_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("PERSEC_CACHE_DIR", str(tmp_path))
    first = available_fonts(system=False)
    (cache,) = tmp_path.glob("fonts-*.json")
    cache.write_text("{not json")
    assert available_fonts(system=False) == first
    assert isinstance(json.loads(cache.read_text()), list)


def test_family_group_merges_styles_and_clones():
    assert family_group("Open Sans Condensed") == family_group("Open Sans") == "open sans"
    assert family_group("Nimbus Sans Narrow") == family_group("Liberation Sans")
    assert family_group("cmr10") == family_group("cmtt10")
    assert family_group("DejaVu Sans Mono") != family_group("DejaVu Sans")


def _fake_fonts(n_families: int) -> list[FontFace]:
    return [
        FontFace(f"/f/{i}-{s}.ttf", f"Family{i:03d}", s)
        for i in range(n_families)
        for s in ("Regular", "Bold")
    ]


def test_split_is_disjoint_by_family_and_stable():
    fonts = _fake_fonts(60)
    train, test = split_fonts(fonts, "train"), split_fonts(fonts, "test")
    assert {f.group for f in train}.isdisjoint({f.group for f in test})
    assert len(train) + len(test) == len(fonts)
    assert 0.05 < len(test) / len(fonts) < 0.4
    # Installing or removing other fonts does not move a family across the split.
    subset = [f for f in fonts if int(f.family[-3:]) % 3]
    assert {f.group for f in split_fonts(subset, "test")} == {f.group for f in test if f in subset}
    assert split_fonts(fonts, "test", 0.5) != test  # the fraction matters


def test_split_keeps_one_family_each_side():
    for n in (2, 3):
        fonts = _fake_fonts(n)
        assert split_fonts(fonts, "train") and split_fonts(fonts, "test")
    one = _fake_fonts(1)
    assert split_fonts(one, "train") == one and split_fonts(one, "test") == []
    with pytest.raises(PersecError):
        split_fonts(one, "val")


def test_real_font_split(fonts):
    train, test = split_fonts(fonts, "train"), split_fonts(fonts, "test")
    assert train and test
    assert {f.group for f in train}.isdisjoint({f.group for f in test})


# ---------------------------------------------------------------------- words
@pytest.mark.parametrize("spec", ["36_lowercase", "62_mixed", "94_full"])
def test_words_stay_in_charset(spec):
    charset = Charset.from_spec(spec)
    sampler = WordSampler(charset=spec, max_length=12)
    rng = np.random.default_rng(0)
    words = [sampler.sample(rng) for _ in range(2000)]
    for w in words:
        label = charset.normalize(w)
        assert 1 <= len(w) <= 12 and len(label) == len(w) and all(c in charset for c in label), w
    assert any(c.isdigit() for w in words for c in w)
    if spec == "94_full":
        assert any(c in string.punctuation for w in words for c in w)
    # Case variants are drawn even when the labels fold case.
    assert any(w.isupper() for w in words) and any(w.islower() for w in words)


def test_words_deterministic_and_proportions():
    sampler = WordSampler(WordConfig(p_word=0, p_random=0, p_number=1))
    a = [sampler.sample(np.random.default_rng(5)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    rng = np.random.default_rng(1)
    assert all(any(c.isdigit() for c in sampler.sample(rng)) for _ in range(300))


def test_dates_only_when_the_charset_draws_a_slash():
    date = re.compile(r"^\d\d([/.-])\d\d\1(\d\d|\d{4})$")
    numbers = WordConfig(p_word=0, p_random=0, p_number=1)
    rng = np.random.default_rng(3)
    full = [WordSampler(numbers, "94_full").sample(rng) for _ in range(2000)]
    dates = [w for w in full if date.match(w)]
    assert len(dates) > 20 and any("/" in w for w in dates)
    rng = np.random.default_rng(3)
    mixed = WordSampler(numbers, "62_mixed")
    assert not any(date.match(mixed.sample(rng)) for _ in range(2000))


def test_user_word_list(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("alpha\nbeta\n\ncafé\nnot ok\ndon't\n")
    sampler = WordSampler(WordConfig(word_list=str(path), p_random=0, p_number=0))
    assert set(sampler.vocabulary) == {"alpha", "beta", "cafe"}
    rng = np.random.default_rng(0)
    assert {sampler.sample(rng).lower() for _ in range(200)} == {"alpha", "beta", "cafe"}
    with pytest.raises(PersecError, match="cannot read word list"):
        _ = WordSampler(WordConfig(word_list=str(tmp_path / "missing.txt"))).vocabulary


# ---------------------------------------------------------------------- renderer
@pytest.mark.parametrize("config", [SynthConfig(), HardSynthConfig()], ids=["default", "hard"])
def test_render_is_a_function_of_seed_and_index(fonts, config):
    a = WordRenderer(config, seed=7, fonts=fonts)
    b = WordRenderer(config, seed=7, fonts=fonts)
    for i in (0, 1, 57, 100_000):
        (ia, la), (ib, lb) = a.render(i), b.render(i)
        assert la == lb and ia.tobytes() == ib.tobytes()
    assert a.render(3)[0].tobytes() == a.render(3)[0].tobytes()  # no hidden state
    images = {a.render(i)[0].tobytes() for i in range(20)}
    assert len(images) == 20
    other_seed = WordRenderer(config, seed=8, fonts=fonts)
    assert other_seed.render(0)[0].tobytes() != a.render(0)[0].tobytes()


def test_labels_pass_charset_check(fonts):
    for spec, n in (("62_mixed", 300), ("94_full", 100), ("36_lowercase", 100)):
        config = HardSynthConfig(charset=spec, max_length=25)
        renderer = WordRenderer(config, fonts=fonts)
        charset = Charset.from_spec(spec)
        for i in range(n):
            _, label = renderer.render(i)
            assert charset.check(label, max_length=25) == (label, None), (spec, label)


def test_draw_charset_draws_more_than_the_label_holds(fonts):
    words = WordConfig(p_punctuation=0.5, p_number=0.5)
    config = HardSynthConfig(charset="36_lowercase", draw_charset="94_full", words=words)
    renderer = WordRenderer(config, fonts=fonts)
    charset = Charset.from_spec("36_lowercase")
    assert renderer.label("03/09/2009") == "03092009" and renderer.label("Ben's") == "bens"
    drawn = [renderer._pick_text(np.random.default_rng(i))[0] for i in range(200)]
    assert sum(any(c in string.punctuation for c in t) for t in drawn) > 20
    for text in drawn:
        assert renderer.label(text) == charset.strip_unsupported(text) != "", text
    for i in range(50):
        label = renderer.render(i)[1]
        assert charset.check(label, max_length=25) == (label, None), label
    # Without draw_charset nothing outside the label charset is drawn.
    plain = WordRenderer(dataclasses.replace(config, draw_charset=""), fonts=fonts)
    for i in range(100):
        text = plain._pick_text(np.random.default_rng(i))[0]
        assert plain.label(text) == text.lower() and all(c.isalnum() for c in text), text


def test_caps_fonts_get_uppercase_labels(fonts):
    caps = [f for f in fonts if f.case == "upper"]
    if not caps:
        caps = [dataclasses.replace(fonts[0], case="upper")]
    renderer = WordRenderer(SynthConfig(), fonts=caps * 2, split="train")
    for i in range(30):
        label = renderer.render(i)[1]
        assert label == label.upper()


def test_output_size(fonts):
    for config, size in (
        (SynthConfig(), (128, 32)),
        (SynthConfig(height=48, width=160), (160, 48)),
    ):
        renderer = WordRenderer(config, fonts=fonts)
        for i in range(20):
            image = renderer.render(i)[0]
            assert image.mode == "RGB" and image.size == size
    free = WordRenderer(SynthConfig(width=None), fonts=fonts)
    widths = {free.render(i)[0].size[0] for i in range(30)}
    assert {free.render(i)[0].size[1] for i in range(5)} == {32} and len(widths) > 5


def test_transforms_never_clip_ink(fonts):
    """Curves, shear, rotation and perspective keep the whole text inside the canvas."""
    config = HardSynthConfig(p_curve=1, p_shear=1, p_rotation=1, p_perspective=1)
    renderer = WordRenderer(config, fonts=fonts)
    for i in range(60):
        rng = np.random.default_rng(i)
        text, face = renderer._pick_text(rng)
        masks, ink_h = renderer._text_masks(rng, text, face, stroke=1, outline=True)
        masks = renderer._warp(rng, renderer._curve(rng, masks, ink_h), ink_h)
        w, h = masks[0].size
        x0, y0, x1, y1 = masks[0].getbbox()
        assert x0 > 0 and y0 > 0 and x1 < w and y1 < h, (text, face.path)


def test_padding_keeps_borders_free_of_text(fonts):
    config = SynthConfig(
        width=None, padding=(0.25, 0.3), contrast=(1.0, 1.0), p_dark_text=1.0, p_grey=1.0,
        bg_flat=1, bg_gradient=0, bg_noise=0, bg_texture=0, p_clutter=0, p_shadow=0,
        p_outline=0, p_text_gradient=0, p_blur=0, p_lowres=0, p_noise=0, p_jpeg=0, p_shading=0,
    )  # fmt: skip
    renderer = WordRenderer(config, fonts=fonts)
    for i in range(40):
        arr = np.asarray(renderer.render(i)[0])
        assert (arr[:, :7] == 255).all() and (arr[:, -7:] == 255).all()
        assert arr.min() < 128  # and the text is there


def test_bad_arguments(fonts):
    with pytest.raises(PersecError):
        WordRenderer(SynthConfig(), split="validation", fonts=fonts)
    with pytest.raises(PersecError):
        WordRenderer(SynthConfig(), seed=-1, fonts=fonts)
    with pytest.raises(PersecError):
        WordRenderer(SynthConfig(bg_flat=0, bg_gradient=0, bg_noise=0, bg_texture=0), fonts=fonts)
    for bad, name in (
        (SynthConfig(p_blur=1.5), "p_blur"),
        (SynthConfig(blur=(1.0, 0.5)), "blur"),
        (SynthConfig(max_stretch=0.5), "max_stretch"),
    ):
        with pytest.raises(PersecError, match=name):
            WordRenderer(bad, fonts=fonts)


# ---------------------------------------------------------------------- dataset
def test_dataset_same_in_workers_as_in_process(fonts):
    dataset = SynthDataset(
        24, HardSynthConfig(), split="test", seed=3, transform=_bytes, fonts=fonts
    )
    assert len(pickle.dumps(dataset)) < 200_000  # no fonts or word lists inside
    expected = [dataset[i] for i in range(len(dataset))]
    loader = DataLoader(dataset, batch_size=None, num_workers=2)
    assert [tuple(item) for item in loader] == expected  # the loader yields lists
    with pytest.raises(IndexError):
        dataset[24]
