"""`persec pretrain` and `persec inspect-codes` end to end on tiny data: the files a run
writes, the logged columns, resume, unlabelled image folders, and fine-tuning from the
pretrained encoder."""

from __future__ import annotations

import csv

import pytest
from PIL import Image
from tiny import PRETRAIN_TINY, render_words

from persec.models.recognizer import Recognizer
from persec.training.pretrain import PretrainConfig, load_pretrained


@pytest.fixture(scope="module")
def words(tmp_path_factory):
    """24 rendered word images (an LMDB; their labels are ignored)."""
    return render_words(tmp_path_factory, n=24, seed=4)


@pytest.fixture(scope="module")
def pretrained(words, tmp_path_factory):
    """A 4-step tiny pretraining run on the LMDB, validated on it every 2 steps."""
    from persec.cli import main

    run = tmp_path_factory.mktemp("pt") / "run"
    argv = ["pretrain", *PRETRAIN_TINY, f"data.train=[{words}]", f"data.val=[{words}]"]
    argv += ["trainer.max_steps=4", "trainer.val_every=2", f"output_dir={run}"]
    argv += ["probe.train_images=16", "probe.test_images=8", "probe.steps=5"]
    argv += ["probe.leak_steps=5"]
    assert main(argv) == 0
    return run


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_pretrain_writes_encoder_logs_and_curves(pretrained) -> None:
    for name in ("encoder.safetensors", "encoder.json", "perceivers.safetensors"):
        assert (pretrained / name).is_file(), name
    for name in ("config.yaml", "metrics.csv", "curves.png", "checkpoints/last.ckpt"):
        assert (pretrained / name).is_file(), name
    rows = _rows(pretrained / "metrics.csv")
    columns = set(rows[0])
    for level in ("stroke", "semantic"):
        for term in ("acc", "prob_ppl", "code_ppl", "contrastive", "diversity", "chance"):
            assert f"train/{level}/{term}" in columns
            assert f"val/{level}/{term}" in columns
        assert f"train/{level}/temperature" in columns
    steps = [int(r["step"]) for r in rows if r.get("train/loss")]
    assert steps == [0, 1, 2, 3]
    vals = [r for r in rows if r.get("val/stroke/acc")]
    assert len(vals) == 2
    for r in vals:
        assert 0.0 <= float(r["val/stroke/acc"]) <= 1.0
        assert 2.0 <= float(r["val/stroke/prob_ppl"]) <= 64.0
    # The frozen-encoder diagnostics at each validation (probe.train_images > 0).
    probes = [r for r in rows if r.get("probe/word_acc")]
    assert [int(r["step"]) for r in probes] == [int(r["step"]) for r in vals]
    for r in probes:
        assert 0.0 <= float(r["probe/word_acc"]) <= 1.0
        assert 1.0 <= float(r["probe/rank"]) <= 64.0
        for level in ("stroke", "semantic"):
            for term in ("neighbour_acc", "context_acc", "majority"):
                assert 0.0 <= float(r[f"leak/{level}/{term}"]) <= 1.0


def test_pretrained_encoder_and_perceivers_reload(pretrained) -> None:
    encoder, objective, config = load_pretrained(pretrained)
    assert isinstance(config, PretrainConfig)
    assert config.model.size == "tiny"
    assert [name for name, _ in objective.perceivers()] == ["stroke", "semantic"]


def test_resume_continues_to_more_steps(words, tmp_path, run_cli) -> None:
    run = tmp_path / "run"
    base = [
        "pretrain",
        *PRETRAIN_TINY,
        f"data.train=[{words}]",
        f"output_dir={run}",
        "trainer.val_every=0",
    ]
    assert run_cli([*base, "trainer.max_steps=2"])[0] == 0
    code, out, err = run_cli([*base, "trainer.max_steps=4", "--resume"])
    assert code == 0, err
    assert "pretrained 4 steps" in out
    steps = [int(r["step"]) for r in _rows(run / "metrics.csv") if r.get("train/loss")]
    assert steps[-1] == 3


def test_a_run_shorter_than_log_every_still_logs_its_last_step(words, tmp_path, run_cli):
    run = tmp_path / "run"
    argv = ["pretrain", *PRETRAIN_TINY, f"data.train=[{words}]", f"output_dir={run}"]
    argv += ["trainer.val_every=0", "trainer.max_steps=3", "trainer.log_every=50"]
    code, _, err = run_cli(argv)
    assert code == 0, err
    assert "no curves plotted" not in err
    rows = [r for r in _rows(run / "metrics.csv") if r.get("train/loss")]
    assert [int(r["step"]) for r in rows] == [2]  # the last step only
    for level in ("stroke", "semantic"):
        assert 0.0 <= float(rows[0][f"train/{level}/acc"]) <= 1.0
        assert float(rows[0][f"train/{level}/prob_ppl"]) >= 1.0


def test_plain_image_folder_and_renderer_without_labels(tmp_path, run_cli) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(10):
        Image.new("RGB", (90 + i, 30), (i * 20, 100, 200 - i * 10)).save(folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    code, out, err = run_cli(
        [
            "pretrain",
            *PRETRAIN_TINY,
            f"data.train=[{folder}]",
            "data.synth_train=16",
            "trainer.max_steps=3",
            "trainer.val_every=0",
            f"output_dir={tmp_path / 'run'}",
        ]
    )
    assert code == 0, err
    assert "pretrained 3 steps" in out


def test_finetune_starts_from_the_pretrained_encoder(pretrained, words, tmp_path, run_cli):
    code, out, err = run_cli(
        [
            "finetune",
            "model.encoder.size=tiny",
            "model.encoder.stroke_aggregator.dim=32",
            "model.encoder.semantic_aggregator.dim=32",
            "model.decoder.lstm_layers=1",
            "model.decoder.hidden=32",
            f"data.train=[{words}]",
            "data.workers=0",
            "data.batch_size=8",
            "trainer.max_steps=2",
            "trainer.progress=false",
            f"output_dir={tmp_path / 'ft'}",
            "--init-encoder",
            str(pretrained),
        ]
    )
    assert code == 0, err
    model = Recognizer.load(tmp_path / "ft" / "model")
    assert model.config.encoder.aggregators


def test_finetune_with_a_different_encoder_names_the_field(pretrained, tmp_path, run_cli):
    code, _, err = run_cli(
        [
            "finetune",
            "model.encoder.size=tiny",
            "model.encoder.stroke_aggregator.dim=64",
            "model.encoder.semantic_aggregator.dim=32",
            "data.synth_train=8",
            f"output_dir={tmp_path / 'ft'}",
            f"--init-encoder={pretrained}",
        ]
    )
    assert code == 2
    assert "stroke_aggregator" in err and len(err.strip().splitlines()) == 1


def test_inspect_codes_writes_both_plots(pretrained, words, tmp_path, run_cli) -> None:
    out_dir = tmp_path / "inspect"
    code, out, err = run_cli(
        [
            "inspect-codes",
            "--model",
            str(pretrained),
            "--data",
            str(words),
            "--n",
            "3",
            "--out",
            str(out_dir),
        ]
    )
    assert code == 0, err
    assert (out_dir / "codes.png").is_file() and (out_dir / "usage.png").is_file()
    assert "stroke: code perplexity" in out and "semantic: code perplexity" in out
    assert "(24 images)" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["persec.levels=strokes"], "levels must be one of"),
        (["model.aggregators=false"], "aggregators=true"),
        (["persec.stroke.mask_probability=0.3"], "mask_probability"),
        (["data.synth_train=0"], "no training data"),
    ],
)
def test_bad_pretrain_settings_are_one_line_errors(args, message, tmp_path, run_cli) -> None:
    code, _, err = run_cli(["pretrain", *PRETRAIN_TINY, *args, f"output_dir={tmp_path / 'r'}"])
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_inspect_codes_on_a_finetune_dir_says_what_is_missing(tmp_path, run_cli) -> None:
    code, _, err = run_cli(["inspect-codes", "--model", str(tmp_path), "--data", str(tmp_path)])
    assert code == 2 and "perceivers.json not found" in err


def test_seqclr_objective_trains_logs_and_reloads(words, tmp_path, run_cli) -> None:
    run = tmp_path / "seqclr"
    code, out, err = run_cli(
        [
            "pretrain",
            *PRETRAIN_TINY,
            "objective=seqclr",
            "seqclr.projection_dim=16",
            f"data.train=[{words}]",
            f"data.val=[{words}]",
            "trainer.max_steps=2",
            "trainer.val_every=2",
            f"output_dir={run}",
        ]
    )
    assert code == 0, err
    assert "seqclr acc" in out
    columns = set(_rows(run / "metrics.csv")[0])
    for term in ("acc", "contrastive", "chance"):
        assert f"train/seqclr/{term}" in columns and f"val/seqclr/{term}" in columns
    assert not any(c.startswith("train/stroke") for c in columns)
    encoder, objective, config = load_pretrained(run)
    assert config.objective == "seqclr" and config.seqclr.projection_dim == 16
    code, _, err = run_cli(["inspect-codes", "--model", str(run), "--data", str(words)])
    assert code == 2 and "no codebooks" in err


def test_unknown_objective_is_a_one_line_error(tmp_path, run_cli) -> None:
    code, _, err = run_cli(
        ["pretrain", *PRETRAIN_TINY, "objective=simclr", f"output_dir={tmp_path}"]
    )
    assert code == 2 and "objective must be one of persec, seqclr" in err


def test_runs_written_before_seqclr_still_load(pretrained, tmp_path) -> None:
    import json
    import shutil

    old = tmp_path / "old"
    shutil.copytree(pretrained, old)
    meta = json.loads((old / "perceivers.json").read_text())
    meta["objective"] = meta.pop("persec")  # the layout before `objective: persec|seqclr`
    (old / "perceivers.json").write_text(json.dumps(meta))
    _, objective, config = load_pretrained(old)
    assert config.objective == "persec" and config.persec.stroke.quantizer.entries == 32
    assert [name for name, _ in objective.perceivers()] == ["stroke", "semantic"]


def test_a_killed_pretraining_resumes_from_its_last_validation(words, tmp_path) -> None:
    """Lightning writes last.ckpt at a validation only beside a top-k checkpoint, which
    pretraining (no monitored metric) never has; persec writes it anyway, and a fresh
    (not resumed) run drops the snapshots an earlier run left."""
    from lightning.pytorch.callbacks import Callback

    from persec.config import load_config
    from persec.training.pretrain import pretrain
    from persec.training.trainer import last_checkpoint, load_checkpoint_safely

    run = tmp_path / "run"
    stale = run / "snapshots" / "step-2"
    stale.mkdir(parents=True)
    (stale / "old").write_text("from an earlier run")
    seen = {}

    class Kill(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 3:
                seen["step"] = load_checkpoint_safely(last_checkpoint(run))["global_step"]
                raise RuntimeError("killed")

    overrides = [
        *PRETRAIN_TINY,
        f"data.train=[{words}]",
        f"data.val=[{words}]",
        f"output_dir={run}",
    ]
    overrides += ["trainer.max_steps=6", "trainer.val_every=2", "snapshots=[2]"]
    config = load_config(PretrainConfig, None, overrides)
    with pytest.raises(RuntimeError, match="killed"):
        pretrain(config, callbacks=[Kill()])
    assert seen["step"] == 2
    assert not (stale / "old").exists() and (stale / "encoder.safetensors").is_file()
    config.resume = True
    assert pretrain(config).steps == 6


def test_serve_draws_the_pretrained_codes_of_each_image(pretrained) -> None:
    import base64
    import io

    from fastapi.testclient import TestClient
    from PIL import Image
    from tiny import tiny_recognizer

    from persec.serve.app import create_app
    from persec.serve.config import ServeConfig

    crop = io.BytesIO()
    Image.new("RGB", (90, 30), "white").save(crop, format="PNG")
    app = create_app(tiny_recognizer(), ServeConfig(codes=str(pretrained)))
    with TestClient(app) as client:
        assert client.get("/v1/model").json()["codes"] is True
        files = [("images", ("w.png", crop.getvalue(), "image/png"))]
        row = client.post("/v1/read?pictures=true", files=files).json()[0]
        plain = client.post("/v1/read", files=files).json()[0]
    assert "stroke_codes" not in plain  # only with pictures
    stroke, semantic = (
        Image.open(io.BytesIO(base64.b64decode(row[key].split(",", 1)[1])))
        for key in ("stroke_codes", "semantic_codes")
    )
    assert stroke.width == semantic.width > 0 and stroke.height > semantic.height > 0
