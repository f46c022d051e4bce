"""Recognizer: save/load round trips, refusal of bad or unsafe files, encoder transfer,
and ``read`` on every accepted input type."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import images, tiny_recognizer

from persec.charset import PRESETS
from persec.errors import PersecError
from persec.models.recognizer import CONFIG, ENCODER_CONFIG, ENCODER_WEIGHTS, WEIGHTS, Recognizer


def grey_array(seed: int = 0) -> np.ndarray:
    """(20, 60) uint8: stripes plus noise, so the image is not uniform."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 60, (20, 60), dtype=np.uint8)
    x[:, 10:25] += 180
    return x


# ---------------------------------------------------------------- round trip
@pytest.mark.parametrize("decoder", ["ctc", "attn"])
@pytest.mark.parametrize("encoder", ["resnet", "vit"])
def test_save_load_round_trip_is_exact(tmp_path, encoder, decoder):
    model = tiny_recognizer(encoder, decoder)
    x = images()
    with torch.no_grad():
        before = model(x)
    pil = [Image.fromarray(grey_array(i)) for i in range(3)]
    read_before = model.read(pil)

    model.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == sorted([WEIGHTS, CONFIG])
    loaded = Recognizer.load(tmp_path / "m")

    assert not loaded.training
    assert loaded.config.encoder.name == encoder and loaded.config.decoder.name == decoder
    with torch.no_grad():
        after = loaded(x)
    assert before.shape == after.shape
    assert torch.equal(before, after)
    assert loaded.read(pil) == read_before
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


def test_config_json_spells_out_the_charset(tmp_path):
    # A charset from a file, with non-ASCII characters: the saved model must not need it.
    charset_file = tmp_path / "chars.txt"
    charset_file.write_text("a\nb\nc\né\n€\n1\n", encoding="utf-8")
    model = tiny_recognizer(charset=str(charset_file))
    model.save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / CONFIG).read_text())
    assert config["charset"] == "chars:abcé€1"
    assert config["encoder"]["size"] == "tiny" and config["decoder"]["name"] == "ctc"

    charset_file.unlink()
    loaded = Recognizer.load(tmp_path / "m")
    assert loaded.charset.chars == ("a", "b", "c", "é", "€", "1")
    # The preset case too: the characters, not the preset name, are stored.
    tiny_recognizer(charset="62_mixed").save(tmp_path / "m62")
    saved = json.loads((tmp_path / "m62" / CONFIG).read_text())["charset"]
    assert saved == "chars:" + PRESETS["62_mixed"]


# ---------------------------------------------------------------- refusing bad files
@pytest.fixture
def saved(tmp_path) -> Path:
    return tiny_recognizer().save(tmp_path / "m")


def _edit_config(directory: Path, edit) -> None:
    config = json.loads((directory / CONFIG).read_text())
    edit(config)
    (directory / CONFIG).write_text(json.dumps(config))


def _swap_in_vit_weights(directory: Path) -> None:
    """ViT weights under a ResNet config."""
    tiny_recognizer("vit").save(directory)
    _edit_config(directory, lambda c: c["encoder"].update(name="resnet"))


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda d: (d / CONFIG).unlink(), ["config.json not found", WEIGHTS]),
        (lambda d: (d / WEIGHTS).unlink(), ["model.safetensors", "not found"]),
        (lambda d: (d / WEIGHTS).write_bytes(b"\x00" * 100), ["not a valid safetensors file"]),
        (
            lambda d: (d / WEIGHTS).write_bytes((d / WEIGHTS).read_bytes()[:-500]),
            ["not a valid safetensors file"],
        ),
        (lambda d: (d / CONFIG).write_text("{not json"), ["cannot read", "config.json"]),
        (lambda d: _edit_config(d, lambda c: c.update(bogus=1)), ["bogus"]),
        (
            lambda d: _edit_config(d, lambda c: c["encoder"].update(depthz=[1])),
            ["encoder.depthz"],
        ),
        (
            lambda d: _edit_config(d, lambda c: c["encoder"].update(name="lstm")),
            ["bad config", "unknown encoder 'lstm'"],
        ),
        (_swap_in_vit_weights, ["do not fit the architecture", "missing"]),
    ],
    ids=[
        "no-config",
        "no-weights",
        "garbage-weights",
        "truncated-weights",
        "bad-json",
        "unknown-key",
        "unknown-nested-key",
        "unknown-encoder",
        "wrong-architecture",
    ],
)
def test_load_refuses_bad_model_dirs(saved, damage, expected):
    damage(saved)
    with pytest.raises(PersecError) as info:
        Recognizer.load(saved)
    message = str(info.value)
    assert "\n" not in message
    for fragment in expected:
        assert fragment in message


class _Payload:
    """Unpickling this creates a directory: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_pickle_renamed_to_safetensors_is_never_unpickled(tmp_path, saved, writer):
    marker = tmp_path / "pwned"
    if writer == "pickle":
        (saved / WEIGHTS).write_bytes(pickle.dumps({"w": _Payload(marker)}))
    else:
        torch.save({"w": _Payload(marker)}, saved / WEIGHTS)
    with pytest.raises(PersecError, match="not a valid safetensors file"):
        Recognizer.load(saved)
    assert not marker.exists()

    # The payload is live: an unsafe loader would have created the marker.
    if writer == "pickle":
        pickle.loads((saved / WEIGHTS).read_bytes())
    else:  # torch.load hands a *.safetensors name to safetensors: load a copy
        copy = tmp_path / "payload.pt"
        copy.write_bytes((saved / WEIGHTS).read_bytes())
        torch.load(copy, weights_only=False)
    assert marker.is_dir()


# ---------------------------------------------------------------- encoder transfer
def test_load_encoder_copies_the_encoder_only(tmp_path):
    source = tiny_recognizer(seed=1)
    path = source.save_encoder(tmp_path / "enc")
    assert path == tmp_path / "enc" / ENCODER_WEIGHTS
    assert (tmp_path / "enc" / ENCODER_CONFIG).is_file()

    target = tiny_recognizer(seed=2)
    decoder_before = {k: v.clone() for k, v in target.decoder.state_dict().items()}
    pairs = zip(target.encoder.parameters(), source.encoder.parameters(), strict=True)
    assert not all(torch.equal(a, b) for a, b in pairs)  # different seeds: different weights
    target.load_encoder(tmp_path / "enc")  # the directory form
    for key, value in source.encoder.state_dict().items():
        assert torch.equal(target.encoder.state_dict()[key], value), key
    for key, value in target.decoder.state_dict().items():
        assert torch.equal(value, decoder_before[key]), key
    x = images(2)
    with torch.no_grad():
        assert torch.equal(target.encoder(x).high, source.encoder(x).high)

    tiny_recognizer(seed=3).load_encoder(path)  # the file form


@pytest.mark.parametrize(
    "encoder, size, expected",
    [
        ("vit", "tiny", "name: checkpoint 'resnet' vs model 'vit'"),
        ("resnet", "small", "size: checkpoint 'tiny' vs model 'small'"),
    ],
)
def test_load_encoder_names_the_mismatch(tmp_path, encoder, size, expected):
    path = tiny_recognizer("resnet", size="tiny").save_encoder(tmp_path / "enc")
    target = tiny_recognizer(encoder, size=size)
    before = {k: v.clone() for k, v in target.encoder.state_dict().items()}
    with pytest.raises(PersecError) as info:
        target.load_encoder(path)
    assert expected in str(info.value)
    assert str(path) in str(info.value)
    for key, value in target.encoder.state_dict().items():  # left untouched
        assert torch.equal(value, before[key]), key


def test_load_encoder_without_its_config_checks_tensors(tmp_path):
    path = tiny_recognizer("resnet", size="tiny").save_encoder(tmp_path / "enc")
    (tmp_path / "enc" / ENCODER_CONFIG).unlink()
    with pytest.raises(PersecError, match="do not fit the architecture.*shape mismatch"):
        tiny_recognizer("resnet", size="small").load_encoder(path)
    with pytest.raises(PersecError, match="do not fit the architecture"):
        tiny_recognizer("vit").load_encoder(path)
    with pytest.raises(PersecError, match="not found"):
        tiny_recognizer().load_encoder(tmp_path / "nowhere" / ENCODER_WEIGHTS)


# ---------------------------------------------------------------- read
def test_read_accepts_paths_pil_and_arrays_alike(tmp_path):
    model = tiny_recognizer()
    grey = grey_array()
    png = tmp_path / "word.png"
    Image.fromarray(grey).save(png)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)  # (H, W, 3) uint8

    inputs = [
        str(png),
        png,
        Image.open(png),
        Image.fromarray(grey),
        Image.fromarray(rgb),
        grey,
        rgb,
    ]
    tensors = [model.preprocess(x) for x in inputs]
    for t in tensors:
        assert t.shape == (3, 32, 128) and t.dtype == torch.float32
        assert torch.equal(t, tensors[0])
        assert -1.0 <= t.min() and t.max() <= 1.0
    results = model.read(inputs)
    assert len(results) == len(inputs)
    assert all(r == results[0] for r in results)
    text, conf = results[0]
    assert isinstance(text, str) and 0.0 <= conf <= 1.0
    # Batching does not change what is read.
    assert model.read(inputs, batch_size=2) == results
    assert model.training is False


def test_read_restores_training_mode():
    model = tiny_recognizer().train()
    model.read([grey_array()])
    assert model.training


@pytest.mark.parametrize(
    "bad, expected",
    [
        (np.zeros((8, 8), dtype=np.float32), "must be uint8"),
        (b"\x89PNG", "cannot read an image from a bytes"),
        ("does/not/exist.png", "cannot read image does/not/exist.png"),
    ],
    ids=["float-array", "bytes", "missing-path"],
)
def test_read_refuses_bad_inputs_with_one_line(bad, expected):
    with pytest.raises(PersecError) as info:
        tiny_recognizer().read([bad])
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_read_refuses_a_corrupt_file(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(PersecError, match="cannot decode image"):
        tiny_recognizer().read([bad])
