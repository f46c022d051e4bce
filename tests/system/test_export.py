"""ONNX export: onnxruntime against PyTorch (logits and texts on rendered words) for a
CNN-CTC, a ViT-CTC and an attention recognizer; the sidecar and ``OnnxRecognizer``;
``persec export`` and its errors.

An export takes seconds (torch.export + ONNX translation), so each model is exported
once per module and the models stay tiny.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import persec
from persec import cli
from persec.charset import Charset
from persec.data.render.fonts import available_fonts
from persec.data.render.synth import WordRenderer
from persec.decoding.settings import decode_ctc
from persec.errors import PersecError
from persec.image import ImageConfig, to_tensor
from persec.inference.export import INPUT_NAME, OUTPUT_NAME, export_onnx, sidecar_path
from persec.inference.model import load_reader
from persec.inference.onnx_runtime import OnnxRecognizer, check_parity
from persec.models.decoders.attn import AttentionDecoder
from persec.models.decoders.base import DecoderConfig
from persec.models.encoders.base import EncoderConfig
from persec.models.recognizer import Recognizer, RecognizerConfig

ATOL = 1e-4
N_WORDS = 16

# name -> (encoder, decoder, aggregators, image width). The CNN-CTC model carries the
# parts most likely to break an export: a BiLSTM and both W-MHSA aggregators (shifted
# 4x4 windows on the 8x16 stroke map, 10-token windows padded to 20 on the sequence);
# its width is 64 because tracing unrolls the LSTM per frame. The others leave the
# aggregators out: each adds seconds to an export.
MODELS = {
    "cnn-ctc": ("resnet", DecoderConfig(name="ctc", lstm_layers=1, hidden=16), True, 64),
    "vit-ctc": ("vit", DecoderConfig(name="ctc", lstm_layers=0), False, 128),
    "cnn-attn": (
        "resnet",
        DecoderConfig(name="attn", d_model=32, heads=2, layers=1, max_length=4),
        False,
        128,
    ),
}


def _recognizer(name: str, seed: int = 0) -> Recognizer:
    """A tiny recognizer with every weight perturbed: the zero-initialised pieces
    (identity aggregators, each block's last BatchNorm) would hide export errors."""
    encoder, decoder, aggregators, width = MODELS[name]
    torch.manual_seed(seed)
    config = RecognizerConfig(
        image=ImageConfig(width=width),
        encoder=EncoderConfig(name=encoder, size="tiny", aggregators=aggregators),
        decoder=DecoderConfig(**vars(decoder)),
    )
    model = Recognizer(config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
        if decoder.name == "attn":  # some words stop early, so the EOS filling is exercised
            model.decoder.classifier.bias[model.decoder.tokenizer.eos_id] += 1.0
    return model.eval()


@pytest.fixture(scope="module")
def words(tmp_path_factory) -> list:
    """16 rendered word crops (PIL), from matplotlib's fonts with a private font cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PERSEC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        fonts = available_fonts(system=False)
    renderer = WordRenderer(split="test", seed=3, fonts=fonts)
    return [renderer.render(i)[0] for i in range(N_WORDS)]


@pytest.fixture(scope="module")
def cli_export(tmp_path_factory, words) -> dict:
    """``persec export --check FOLDER`` of the ViT-CTC model: its exit code, output and files."""
    root = tmp_path_factory.mktemp("cli")
    model = _recognizer("vit-ctc")
    model.save(root / "model")
    (root / "words").mkdir()
    for i, image in enumerate(words):
        image.save(root / "words" / f"{i:02d}.png")
    out, err = io.StringIO(), io.StringIO()
    argv = ["export", "--model", str(root / "model"), "--out", str(root / "vit.onnx")]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([*argv, "--check", str(root / "words")])
    return {"code": code, "out": out.getvalue(), "err": err.getvalue(), "path": root / "vit.onnx"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, cli_export):
    """name -> (PyTorch model, ONNX path); each model exported once, on first use."""
    cache: dict[str, tuple[Recognizer, Path]] = {}

    def get(name: str) -> tuple[Recognizer, Path]:
        if name not in cache:
            model = _recognizer(name)
            if name == "vit-ctc":  # exported through the CLI (same weights, same seed)
                path = cli_export["path"]
            else:
                path = export_onnx(model, tmp_path_factory.mktemp(name) / "model.onnx")
            cache[name] = (model, path)
        return cache[name]

    return get


def _batch(model: Recognizer, words: list) -> torch.Tensor:
    return torch.stack([to_tensor(w, model.config.image) for w in words])  # (16, C, H, W)


# ---------------------------------------------------------------- parity
@pytest.mark.parametrize("name", list(MODELS))
def test_onnxruntime_matches_pytorch(exported, words, name):
    model, path = exported(name)
    onnx = OnnxRecognizer(path, threads=1)
    x = _batch(model, words)
    with torch.no_grad():
        ref = model(x)
    got = onnx(x)
    assert got.shape == tuple(ref.shape)
    np.testing.assert_allclose(got, ref.numpy(), atol=ATOL, rtol=0)
    assert [t for t, _ in onnx.decode(got)] == [t for t, _ in model.decode(ref)]
    confidences = [c for _, c in onnx.decode(got)]
    assert confidences == pytest.approx([c for _, c in model.decode(ref)], abs=1e-4)

    report = check_parity(model, onnx, x)
    assert report.n == N_WORDS and report.same_text == N_WORDS and not report.mismatches
    assert report.max_abs_diff <= ATOL

    # The batch axis is dynamic (exported with 2), and rows do not depend on each other.
    np.testing.assert_allclose(onnx(x[:1]), got[:1], atol=ATOL, rtol=0)


def test_fixed_length_greedy_equals_early_stopping():
    """The graph-friendly loop (all steps, filling by tensor ops) gives the same logits."""
    filled = 0
    for seed in range(40):
        torch.manual_seed(seed)
        decoder = AttentionDecoder(8, Charset("abc"), d_model=16, heads=2, layers=1, max_length=6)
        decoder.eval()
        with torch.no_grad():
            memory = torch.randn(4, 7, 8)
            stopping, fixed = decoder(memory), decoder(memory, fixed_length=True)
        assert torch.equal(stopping, fixed)
        filled += bool((stopping[:, -1, 1:] == torch.finfo(stopping.dtype).min).all())
    assert 0 < filled < 40  # batches that stopped early and batches that did not


def test_attention_export_fills_steps_after_eos_like_pytorch(exported, words):
    """Alone in its batch, a word that stops early gets PyTorch's EOS-only filling."""
    model, path = exported("cnn-attn")
    onnx = OnnxRecognizer(path, threads=1)
    x = _batch(model, words)
    filled = 0
    for i in range(N_WORDS):
        with torch.no_grad():
            ref = model(x[i : i + 1])  # (1, max_length + 1, V)
        np.testing.assert_allclose(onnx(x[i : i + 1]), ref.numpy(), atol=ATOL, rtol=0)
        filled += bool((ref[0, -1, 1:] == torch.finfo(ref.dtype).min).all())
    assert 0 < filled < N_WORDS  # both branches seen


def test_sidecar_and_read_match_the_model(exported, words):
    model, path = exported("cnn-ctc")
    info = json.loads(sidecar_path(path).read_text())
    assert info["decoder"] == "ctc"
    assert info["charset"] == "".join(model.charset.chars)
    assert info["image"] == {"height": 32, "width": 64, "channels": 3, "keep_aspect": False}
    assert info["input"]["name"] == INPUT_NAME and info["output"]["name"] == OUTPUT_NAME
    assert info["decoding"] == {
        "beam_width": 0,
        "lm_weight": 0.0,
        "length_bonus": 0.0,
        "lm_words": 50_000,
        "lm_order": 6,
    }
    onnx = OnnxRecognizer(path)
    arrays = [np.asarray(w) for w in words[:4]]  # arrays take the same path as PIL images
    assert [t for t, _ in onnx.read(arrays, batch_size=3)] == [t for t, _ in model.read(arrays)]
    # Tall crops (words turned 90°) with orient="tall": both readers take the same path.
    tall = [np.asarray(w.rotate(90, expand=True)) for w in words[:3]]
    assert all(a.shape[0] >= 1.5 * a.shape[1] for a in tall)
    mixed = [*tall, *arrays[:2]]
    got = onnx.read(mixed, batch_size=2, orient="tall")
    want = model.read(mixed, batch_size=4, orient="tall")
    assert [t for t, _ in got] == [t for t, _ in want]
    np.testing.assert_allclose([c for _, c in got], [c for _, c in want], rtol=1e-3, atol=1e-4)


# ---------------------------------------------------------------- CLI
def test_cli_export_with_check(cli_export):
    assert cli_export["code"] == 0, cli_export["err"]
    wrote, check = cli_export["out"].strip().splitlines()
    assert wrote.startswith(f"wrote {cli_export['path']} (") and wrote.endswith(".onnx.json")
    assert check.startswith(f"check on {N_WORDS} given images: max |Δlogit|")
    assert check.endswith(f"text identical on {N_WORDS}/{N_WORDS} images")
    assert cli_export["path"].is_file() and sidecar_path(cli_export["path"]).is_file()


def test_cli_errors_are_one_line(run_cli, tmp_path):
    out = str(tmp_path / "x.onnx")
    code, _, err = run_cli(["export", "--model", str(tmp_path / "nope"), "--out", out])
    assert code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["export", "--model", str(tmp_path), "--format", "tflite", "--out", out])
    assert code == 2 and "unsupported export format 'tflite'" in err
    assert not (tmp_path / "x.onnx").exists()


# ---------------------------------------------------------------- errors
def test_library_errors(tmp_path, exported):
    with pytest.raises(PersecError, match="does not exist"):
        export_onnx(tmp_path / "nope", tmp_path / "m.onnx")
    with pytest.raises(PersecError, match="opset 17"):
        export_onnx(tmp_path / "nope", tmp_path / "m.onnx", opset=17)
    _, path = exported("cnn-ctc")
    shutil.copy(path, tmp_path / "lonely.onnx")
    with pytest.raises(PersecError, match="sidecar"):
        OnnxRecognizer(tmp_path / "lonely.onnx")


def test_onnx_reader_decodes_with_the_sidecars_beam_search_and_lm(tmp_path, exported, words):
    model, path = exported("cnn-ctc")
    shutil.copy(path, tmp_path / "m.onnx")
    info = json.loads(sidecar_path(path).read_text())
    tuned = DecoderConfig(**{**vars(model.config.decoder), "beam_width": 4, "lm_weight": 0.5})
    info["decoding"].update(beam_width=4, lm_weight=0.5)
    sidecar_path(tmp_path / "m.onnx").write_text(json.dumps(info))
    onnx = OnnxRecognizer(tmp_path / "m.onnx")
    logits = onnx(_batch(model, words))  # (16, L, V)
    want = decode_ctc(torch.as_tensor(logits), model.decoder.tokenizer, tuned)
    assert onnx.decode(logits) == want
    assert want != decode_ctc(torch.as_tensor(logits), model.decoder.tokenizer, DecoderConfig())
    # Settings that cannot work, or keys it does not know, are refused by name.
    info["decoding"]["lm_weight"] = -1.0
    sidecar_path(tmp_path / "m.onnx").write_text(json.dumps(info))
    with pytest.raises(PersecError, match="lm_weight must be >= 0"):
        OnnxRecognizer(tmp_path / "m.onnx")
    info["decoding"] = {"beam_width": 4, "temperature": 2}
    sidecar_path(tmp_path / "m.onnx").write_text(json.dumps(info))
    with pytest.raises(PersecError, match="temperature"):
        OnnxRecognizer(tmp_path / "m.onnx")


def test_cli_read_takes_an_onnx_file(run_cli, cli_export):
    root = cli_export["path"].parent  # model/, words/ and vit.onnx of the same weights
    code, by_torch, err = run_cli(["read", "--model", str(root / "model"), str(root / "words")])
    assert code == 0, err
    code, by_onnx, err = run_cli(["read", "--model", str(cli_export["path"]), str(root / "words")])
    assert code == 0, err
    want = [line.split("\t") for line in by_torch.splitlines()]
    got = [line.split("\t") for line in by_onnx.splitlines()]
    assert len(got) == N_WORDS and [g[:2] for g in got] == [w[:2] for w in want]
    np.testing.assert_allclose(
        [float(g[2]) for g in got], [float(w[2]) for w in want], rtol=1e-3, atol=1e-4
    )
    by_api = persec.read(OnnxRecognizer(cli_export["path"]), [root / "words"])
    assert [[r.path, r.text] for r in by_api] == [g[:2] for g in got]
    onnx_on_gpu = ["--model", str(cli_export["path"]), "--device", "cuda:0", str(root / "words")]
    code, _, err = run_cli(["read", *onnx_on_gpu])
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "CPU" in err or "CUDA" in err  # onnxruntime runs on the CPU; no CUDA here either


def test_cli_eval_takes_an_onnx_file(run_cli, cli_export, tmp_path):
    root = cli_export["path"].parent
    code, by_torch, err = run_cli(["read", "--model", str(root / "model"), str(root / "words")])
    assert code == 0, err
    # Labels: the PyTorch model's own reading of two crops in three (where it read a
    # letter or digit), a wrong word for the others, so neither accuracy nor CER is trivial.
    lines = []
    for i, line in enumerate(by_torch.splitlines()):
        path, text = line.split("\t")[:2]
        ok = i % 3 and any(c.isalnum() for c in text)
        lines.append(f"{Path(path).name}\t{text if ok else 'wrongword'}")
    words = tmp_path / "words"
    shutil.copytree(root / "words", words)
    (words / "gt.txt").write_text("\n".join(lines) + "\n")
    rows = {}
    for name, model in (("torch", root / "model"), ("onnx", cli_export["path"])):
        out = tmp_path / name
        argv = ["eval", "--model", str(model), "--data", str(words), "--out", str(out)]
        code, printed, err = run_cli(argv)
        assert code == 0, err
        assert "decoding: greedy" in printed  # as this model was saved
        rows[name] = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows["onnx"]) == len(rows["torch"]) >= 1
    assert 0 < float(rows["torch"][0]["word_acc"]) < 100
    for got, want in zip(rows["onnx"], rows["torch"], strict=True):
        assert got.keys() == want.keys()
        for key, value in want.items():
            try:
                assert float(got[key]) == pytest.approx(float(value), rel=1e-4, abs=1e-4), key
            except ValueError:  # a name, not a number
                assert got[key] == value, key
    # The sidecar's decoding is used and said, --greedy overrides it, and without --out
    # the results go beside the ONNX file.
    onnx = tmp_path / "beam.onnx"
    shutil.copy(cli_export["path"], onnx)
    info = json.loads(sidecar_path(cli_export["path"]).read_text())
    info["decoding"]["beam_width"] = 3
    sidecar_path(onnx).write_text(json.dumps(info))
    for flags, said in (
        ([], "decoding: beam search (3 beams)"),
        (["--greedy"], "decoding: greedy"),
    ):
        code, printed, err = run_cli(["eval", "--model", str(onnx), *flags, "--data", str(words)])
        assert code == 0, err
        assert said in printed
    assert (tmp_path / "beam-eval" / "results.csv").is_file()
    # An older export, whose sidecar has no decoding settings, decodes and says greedy.
    shutil.copy(cli_export["path"], tmp_path / "old.onnx")
    del info["decoding"]
    sidecar_path(tmp_path / "old.onnx").write_text(json.dumps(info))
    code, printed, err = run_cli(
        ["eval", "--model", str(tmp_path / "old.onnx"), "--data", str(words)]
    )
    assert code == 0, err
    assert "decoding: greedy" in printed


def test_load_reader_can_decode_an_onnx_file_greedily(tmp_path, exported, words):
    model, path = exported("cnn-ctc")
    shutil.copy(path, tmp_path / "m.onnx")
    info = json.loads(sidecar_path(path).read_text())
    info["decoding"].update(beam_width=4, lm_weight=2.0)  # a strong LM changes readings
    sidecar_path(tmp_path / "m.onnx").write_text(json.dumps(info))
    as_saved = load_reader(tmp_path / "m.onnx")
    greedy = load_reader(str(tmp_path / "m.onnx"), greedy=True)
    assert isinstance(greedy, OnnxRecognizer) and greedy.image == model.config.image
    logits = torch.as_tensor(greedy(_batch(model, words)))
    tokenizer = model.decoder.tokenizer
    assert greedy.decode(logits) == decode_ctc(logits, tokenizer, DecoderConfig())
    assert as_saved.decode(logits) != greedy.decode(logits)
    assert isinstance(load_reader(None), Recognizer)  # the shipped model, in PyTorch


class _Bessel(nn.Module):
    """An op without an ONNX translation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.bessel_j0(x)


def test_export_failure_names_layer_and_op(tmp_path):
    torch.manual_seed(0)
    config = RecognizerConfig(
        encoder=EncoderConfig(name="resnet", size="tiny", aggregators=False),
        decoder=DecoderConfig(name="ctc", lstm_layers=0),
    )
    model = Recognizer(config).train()
    model.encoder.semantic_aggregator = _Bessel()
    with pytest.raises(PersecError, match=r"layer encoder\.semantic_aggregator.*bessel_j0"):
        export_onnx(model, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
    assert model.training  # the caller's mode is restored
