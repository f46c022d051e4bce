"""`persec experiment` end to end on a tiny grid: every cell runs, the reports hold one
row per model and test set, and a second run skips every cell (cache by config hash)."""

from __future__ import annotations

import csv

import pytest
import yaml

from persec.errors import ConfigError
from persec.experiment import ExperimentConfig, config_hash, plan, run_experiment

PRETRAIN_YAML = """
model: {name: resnet, size: tiny, stroke_aggregator: {dim: 32}, semantic_aggregator: {dim: 32}}
image: {height: 32, width: 64, channels: 3}
persec:
  stroke: {quantizer: {entries: 16}}
  semantic: {quantizer: {entries: 16}}
seqclr: {projection_dim: 16, instances: 2}
data: {synth_train: 32, batch_size: 8, workers: 0}
trainer: {max_steps: 2, val_every: 0, log_every: 1, progress: false}
"""

FINETUNE_YAML = """
model:
  image: {height: 32, width: 64, channels: 3}
  decoder: {name: ctc, lstm_layers: 0}
data: {synth_train: 40, synth_val: 8, batch_size: 8, workers: 0}
optim: {name: adamw, lr: 1.0e-3}
trainer: {max_steps: 2, val_every: 2, log_every: 1, progress: false}
"""


@pytest.fixture
def grid(tmp_path) -> ExperimentConfig:
    (tmp_path / "pt.yaml").write_text(PRETRAIN_YAML)
    (tmp_path / "ft.yaml").write_text(FINETUNE_YAML)
    return ExperimentConfig(
        name="tiny",
        output_dir=str(tmp_path / "exp"),
        pretrain_config=str(tmp_path / "pt.yaml"),
        methods={"scratch": [], "seqclr": ["objective=seqclr"], "persec": []},
        finetune_configs={"ctc": str(tmp_path / "ft.yaml")},
        decoders=["ctc"],
        protocols=["frozen", "semi"],
        fractions=[0.5],
        test=[str(tmp_path / "no-such-set")],
        synth_test=8,
    )


def test_tiny_grid_runs_reports_and_caches(grid, tmp_path) -> None:
    first = run_experiment(grid)
    # 2 pretrainings + 3 methods × 2 protocols × 1 fraction.
    assert len(first.ran) == 8
    assert first.cached == []
    out = tmp_path / "exp"
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6  # one test set (the missing real set is skipped)
    assert {r["method"] for r in rows} == {"scratch", "seqclr", "persec"}
    assert {r["protocol"] for r in rows} == {"frozen", "semi"}
    assert {r["test_set"] for r in rows} == {"synth_heldout_test"}
    assert {r["decoder"] for r in rows} == {"ctc"}
    for r in rows:
        assert float(r["fraction"]) == 0.5
        assert int(r["labels"]) == 20
        assert int(r["samples"]) == 8
        assert 0.0 <= float(r["word_acc"]) <= 100.0
        assert int(r["finetune_steps"]) == 2
        assert int(r["pretrain_steps"]) == (0 if r["method"] == "scratch" else 2)
    table = (out / "results.md").read_text()
    assert "| persec | ctc | semi |" in table
    assert "synth_heldout_test @0.5 (20 labels)" in table
    assert (out / "accuracy-vs-fraction.png").stat().st_size > 0
    assert (out / "pretrain-curves.png").stat().st_size > 0

    second = run_experiment(grid)
    assert second.ran == []
    assert len(second.cached) == 8
    with open(out / "results.csv") as f:
        assert list(csv.DictReader(f)) == rows

    # A cell killed before it finished (no done.json) is the only one run again.
    (next((out / "finetune").glob("persec-ctc-semi-*")) / "done.json").unlink()
    # --report runs nothing and reports the finished cells only.
    report = run_experiment(grid, report_only=True)
    assert report.ran == [] and len(report.cached) == 7
    with open(out / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 5
    third = run_experiment(grid)
    assert third.ran == ["finetune persec ctc semi 0.5 seed 0"]

    # An encoder pretrained elsewhere joins as a method: only its fine-tunes run.
    persec_dir = next((out / "pretrain").glob("persec-*"))
    ext = ExperimentConfig(
        **{
            **grid.__dict__,
            "methods": {"scratch": []},
            "encoders": {"ext": str(persec_dir)},
            "report_dir": str(tmp_path / "ext-report"),
        }
    )
    fourth = run_experiment(ext)
    assert sorted(fourth.ran) == [
        "finetune ext ctc frozen 0.5 seed 0",
        "finetune ext ctc semi 0.5 seed 0",
    ]
    assert len(fourth.cached) == 2  # the scratch cells
    with open(tmp_path / "ext-report" / "results.csv") as f:
        ext_rows = list(csv.DictReader(f))
    assert {r["method"] for r in ext_rows} == {"scratch", "ext"}
    assert {int(r["pretrain_steps"]) for r in ext_rows if r["method"] == "ext"} == {2}
    assert (out / "results.csv").is_file()  # the first grid's report is left alone


def test_seeds_snapshots_curve_and_probe(grid, tmp_path) -> None:
    """Two seeds per cell, a snapshot at step 1 of the 2-step pretrainings, a
    1-label-fraction curve and the linear probe of every encoder: the rows say which
    run each is, the table gives mean ± std, and the curve has steps 0, 1 and 2."""
    from persec.training.probe import ProbeConfig

    config = ExperimentConfig(
        **{
            **grid.__dict__,
            "methods": {"scratch": [], "persec": []},
            "protocols": ["semi"],
            "seeds": [0, 1],
            "snapshots": [1, 5],  # 5 is past the pretraining's end: ignored
            "curve_fractions": [0.5],
            "probe": ProbeConfig(train_images=16, test_images=8, steps=3, batch_size=8, leak=False),
        }
    )
    cells = plan(config)
    kinds = [c.kind for c in cells]
    # 1 pretraining; probes of random, final and step-1 encoders; 2 methods × 2 seeds
    # semi, plus the step-1 snapshot's curve fine-tune (the others are grid cells).
    assert kinds == ["pretrain", "probe", "probe", "probe", *["finetune"] * 5]
    assert cells[0].config.snapshots == [1]
    with pytest.raises(ConfigError, match="--only seqclr: not a method of this grid"):
        run_experiment(config, only=["seqclr"])
    first = run_experiment(config, only=["scratch"])
    assert [c.split(" seed")[0] for c in first.ran] == [
        "probe scratch",
        "finetune scratch ctc semi 0.5",
        "finetune scratch ctc semi 0.5",
    ]
    result = run_experiment(config)
    assert len(result.ran) == 6 and len(result.cached) == 3
    out = tmp_path / "exp"
    assert len(list((out / "pretrain").glob("persec-*/snapshots/step-1/encoder.safetensors"))) == 1
    assert not list((out / "pretrain").glob("persec-*/snapshots/step-5"))
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    semi = [r for r in rows if r["protocol"] == "semi" and r["encoder"] != "snapshot"]
    assert sorted((r["method"], r["seed"]) for r in semi) == [
        ("persec", "0"),
        ("persec", "1"),
        ("scratch", "0"),
        ("scratch", "1"),
    ]
    probes = [r for r in rows if r["protocol"] == "probe"]
    assert sorted((r["encoder"], r["pretrain_steps"]) for r in probes) == [
        ("pretrained", "2"),
        ("random", "0"),
        ("snapshot", "1"),
    ]
    for r in probes:
        assert r["test_set"] == "probe_heldout_fonts" and int(r["samples"]) == 8
        assert 0.0 <= float(r["cer"]) and int(r["labels"]) == 16
    # Every probe records its settings, which a later run checks (check_cached).
    probe_records = [c.directory / "config.yaml" for c in cells if c.kind == "probe"]
    assert all(yaml.safe_load(p.read_text())["train_images"] == 16 for p in probe_records)
    snap = [r for r in rows if r["encoder"] == "snapshot" and r["protocol"] == "semi"]
    assert [(r["pretrain_steps"], r["seed"]) for r in snap] == [("1", "0")]
    table = (out / "results.md").read_text()
    values = [float(r["word_acc"]) for r in semi if r["method"] == "scratch"]
    import statistics

    expected = f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} (2)"
    assert f"| scratch | ctc | semi | {expected} |" in table
    assert "## Pretraining-length curve" in table
    assert "| 0 steps | 1 steps | 2 steps |" in table.replace(",", "")
    assert (out / "pretraining-length.png").stat().st_size > 0


def test_plan_links_finetunes_to_their_pretraining(grid) -> None:
    cells = plan(grid)
    pre = {c.method: c for c in cells if c.kind == "pretrain"}
    assert set(pre) == {"seqclr", "persec"}
    for cell in cells:
        if cell.kind != "finetune":
            continue
        assert cell.config.freeze_encoder == (cell.protocol == "frozen")
        if cell.method == "scratch":
            assert cell.pretrain is None and cell.config.init_encoder == ""
        else:
            assert cell.config.init_encoder.startswith(str(pre[cell.method].directory))
        # Every method, random init included, fine-tunes the pretrained architecture.
        assert cell.config.model.encoder.size == "tiny"
        assert cell.config.model.encoder.stroke_aggregator.dim == 32
    # A changed pretraining budget changes the pretraining cells and their fine-tunes,
    # but not the random-init ones.
    grid2 = ExperimentConfig(**{**grid.__dict__, "pretrain": ["trainer.max_steps=3"]})
    dirs = {c.label: c.directory for c in cells}
    for cell in plan(grid2):
        same = dirs[cell.label] == cell.directory
        assert same == (cell.method == "scratch"), cell.label


def test_hash_ignores_output_dir(grid) -> None:
    a, b = plan(grid)[0].config, plan(grid)[0].config
    b.output_dir = "elsewhere"
    assert config_hash(a) == config_hash(b)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"decoders": ["attn"]}, "decoder 'attn' has no entry"),
        ({"protocols": ["linear"]}, "protocol 'linear'"),
        ({"fractions": [0.0]}, "label fraction"),
        ({"encoders": {"ext": "/no/such/run"}}, "encoders.ext: /no/such/run holds no"),
        ({"encoders": {"persec": "/x"}}, "persec in both methods and encoders"),
        ({"methods": {"persec": ["persec.stroke.mask_probability=0.3"]}}, "method persec"),
        ({"methods": {"x": ["objective=simclr"]}}, "objective must be one of persec, seqclr"),
    ],
)
def test_bad_grids_fail_before_training(grid, change, message) -> None:
    bad = ExperimentConfig(**{**grid.__dict__, **change})
    with pytest.raises(ConfigError, match=message):
        plan(bad)


def test_archive_carries_finished_cells_to_a_fresh_machine(grid, tmp_path, capsys) -> None:
    """With ``archive_dir``, a run whose ``output_dir`` is gone (a fresh checkout)
    restores every finished fine-tune, runs no pretraining whose cells are all done,
    and reports the same rows; a cell missing from the archive runs again with the
    pretraining it needs."""
    import shutil

    archive = tmp_path / "archive"
    config = ExperimentConfig(
        **{
            **grid.__dict__,
            "methods": {"scratch": [], "persec": []},
            "protocols": ["semi"],
            "archive_dir": str(archive),
        }
    )
    first = run_experiment(config)
    assert len(first.ran) == 3  # the pretraining and two fine-tunes
    out = tmp_path / "exp"
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert all(r["machine"] and "threads" in r["machine"] for r in rows)
    archived = sorted(p.relative_to(archive).as_posix() for p in archive.rglob("done.json"))
    assert len(archived) == 3 and archived[0].startswith("finetune/")
    assert not list(archive.rglob("*.safetensors")) and not list(archive.rglob("*.ckpt"))

    shutil.rmtree(out)  # a fresh machine: nothing under output_dir
    second = run_experiment(config)
    assert second.ran == []
    assert "not needed" in capsys.readouterr().err
    with open(out / "results.csv") as f:
        assert list(csv.DictReader(f)) == rows

    shutil.rmtree(out)
    persec_cell = next(archive.glob("finetune/persec-*"))
    shutil.rmtree(persec_cell)
    third = run_experiment(config)
    assert third.ran == ["pretrain persec", "finetune persec ctc semi 0.5 seed 0"]
    assert (persec_cell / "done.json").is_file()  # archived again

    # Cells finished before an archive was named are archived by the next run.
    later = ExperimentConfig(**{**config.__dict__, "archive_dir": str(tmp_path / "later")})
    assert run_experiment(later).ran == []
    assert len(list((tmp_path / "later").rglob("done.json"))) == 3

    # A finished cell whose recorded settings the grid no longer gives it (e.g. a
    # default changed in code, which leaves its key alone) is named, never reused.
    def double_lr(recorded):
        settings = yaml.safe_load(recorded.read_text())
        settings["optim"]["lr"] *= 2
        recorded.write_text(yaml.safe_dump(settings))

    finetune_record = next(archive.glob("finetune/scratch-*")) / "config.yaml"
    kept = finetune_record.read_text()
    double_lr(finetune_record)
    shutil.rmtree(out)
    with pytest.raises(ConfigError, match=r"finetune scratch ctc semi 0.5 seed 0 .*optim\.lr"):
        run_experiment(config)
    # So is a pretraining whose fine-tunes a fresh machine restored: it does not run
    # there, so its archived record is what is checked.
    finetune_record.write_text(kept)
    double_lr(next(archive.glob("pretrain/persec-*")) / "config.yaml")
    shutil.rmtree(out)
    with pytest.raises(ConfigError, match=r"pretrain persec .*optim\.lr"):
        run_experiment(config)
