"""`persec eval` and `persec read` end to end on a tiny model and tiny datasets.

The ground truth is built from the model's own readings: half of the labels are what
the model reads, half are not, so every dataset scores exactly 50 %.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import parseq_entries, truncated_png, write_gt_folder, write_raw_lmdb
from PIL import Image

from persec.data.gtfile import read_pred_file
from persec.data.layouts import find_datasets
from persec.errors import DataError
from persec.evaluation.evaluate import evaluate, write_results
from persec.image import to_tensor
from persec.inference.model import load_model
from persec.inference.read import list_images, read_images
from persec.models.decoders.base import DecoderConfig
from persec.models.encoders.base import EncoderConfig
from persec.models.recognizer import Recognizer, RecognizerConfig


def stripes(i: int) -> Image.Image:
    """A 32x128 image with a white band whose place and width depend on ``i``."""
    x = np.zeros((32, 128, 3), np.uint8)
    start = (i * 13) % 100
    x[:, start : start + 20 + 3 * i] = 255
    x[..., i % 3] += 60
    return Image.fromarray(x)


def encoded(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def wrong(text: str) -> str:
    return "q" if text != "q" else "z"


class Bench:
    """Paths and expected numbers of the tiny benchmark folder."""

    def __init__(self, root: Path):
        self.root = root
        self.model = root / "model"
        self.test = root / "test"
        self.iiit = self.test / "IIIT5k"  # gt.txt folder: 8 scored + 2 label skips
        self.svt = self.test / "SVT"  # LMDB: 6 scored + 1 undecodable image


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Bench:
    b = Bench(tmp_path_factory.mktemp("bench"))
    torch.manual_seed(1)  # a seed whose random net reads the stripes differently
    model = Recognizer(
        RecognizerConfig(
            encoder=EncoderConfig(size="tiny"),
            decoder=DecoderConfig(name="ctc", lstm_layers=1, hidden=16),
        )
    )
    # A freshly initialised net reads every image alike; a few training-mode passes set
    # the BatchNorm statistics so that its readings depend on the image.
    images = [stripes(i) for i in range(14)]
    batch = torch.stack([to_tensor(x, model.config.image) for x in images])  # (14, 3, 32, 128)
    model.train()
    with torch.no_grad():
        for _ in range(20):
            model(batch)
    model.eval().save(b.model)

    texts = [text for text, _ in model.read(images)]
    for t in texts:
        assert 1 <= len(t) <= 25, f"the test needs readings of 1-25 characters, got {texts}"
    assert len(set(texts)) > 3, f"the test needs readings that depend on the image: {texts}"
    labels = [t if i % 2 == 0 else wrong(t) for i, t in enumerate(texts)]

    # IIIT5k: images 0-7, then a label that maps to nothing and one that is too long.
    samples = [(encoded(images[i]), labels[i]) for i in range(8)]
    samples += [(encoded(stripes(20)), "!?!"), (encoded(stripes(21)), "a" * 26)]
    write_gt_folder(b.iiit, samples)
    # SVT: images 8-13 and a truncated PNG with a fine label.
    lmdb_samples = [(encoded(images[i]), labels[i]) for i in range(8, 14)]
    lmdb_samples.insert(3, (truncated_png(), "broken"))
    write_raw_lmdb(b.svt, parseq_entries(lmdb_samples))
    # Not datasets: left out when the parent folder is expanded.
    (b.test / "notes").mkdir()
    (b.test / "notes" / "README.txt").write_text("not a dataset\n")
    (b.test / "README.md").write_text("benchmarks\n")
    return b


def table_row(out: str, name: str) -> list[str]:
    lines = [line for line in out.splitlines() if line.startswith(f"| {name} ")]
    assert len(lines) == 1, out
    return [cell.strip() for cell in lines[0].strip("|").split("|")]


def table_names(out: str) -> list[str]:
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    return [row.strip("|").split("|")[0].strip() for row in rows[1:]]  # after the header


# ---------------------------------------------------------------- eval
def test_eval_table_csv_and_json(run_cli, bench, tmp_path):
    out_dir = tmp_path / "results"
    code, out, err = run_cli(
        [
            "eval",
            "--model",
            str(bench.model),
            "--data",
            str(bench.iiit),
            str(bench.svt),
            "--out",
            str(out_dir),
            "--batch-size",
            "4",
        ]
    )
    assert code == 0, err
    assert "eval charset: 36_lowercase" in out
    assert table_names(out) == ["IIIT5k", "SVT", "Combined"]
    assert table_row(out, "IIIT5k")[:3] == ["IIIT5k", "8", "50.00"]
    assert table_row(out, "SVT")[:3] == ["SVT", "6", "50.00"]
    assert table_row(out, "Combined")[:3] == ["Combined", "14", "50.00"]
    assert (
        "skipped: IIIT5k: 10 samples, 8 kept, 2 skipped (empty label: 1, label too long: 1)" in out
    )
    assert "skipped: SVT: 7 samples, 6 kept, 1 skipped (undecodable image: 1)" in out
    # Each summary once, whole (label skips and unreadable images together).
    assert (out + err).count("IIIT5k: 10 samples") == (out + err).count("SVT: 7 samples") == 1
    assert "skipped when read" not in out + err

    with (out_dir / "results.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["dataset"] for r in rows] == ["IIIT5k", "SVT", "Combined"]
    assert [int(r["samples"]) for r in rows] == [8, 6, 14]
    assert [int(r["correct"]) for r in rows] == [4, 3, 7]
    assert [int(r["skipped"]) for r in rows] == [2, 1, 3]
    assert float(rows[2]["word_acc"]) == pytest.approx(50.0)

    doc = json.loads((out_dir / "results.json").read_text())
    assert doc["model"] == str(bench.model) and doc["charset"] == "36_lowercase"
    assert [d["samples"] for d in doc["datasets"]] == [8, 6]
    assert doc["combined"]["samples"] == 14 and doc["combined"]["dataset"] == "Combined"
    assert doc["datasets"][0]["skipped_by_reason"] == {"empty label": 1, "label too long": 1}
    assert doc["datasets"][1]["skipped_by_reason"] == {"undecodable image": 1}
    assert 0.0 < doc["datasets"][0]["confidence"] <= 100.0


def test_eval_expands_a_folder_of_benchmarks(run_cli, bench, tmp_path):
    # Default --out is MODEL/eval/: use a copy of the model.
    model = tmp_path / "model"
    shutil.copytree(bench.model, model)
    code, out, err = run_cli(["eval", "--model", str(model), "--data", str(bench.test)])
    assert code == 0, err
    assert table_names(out) == ["IIIT5k", "SVT", "Combined"]
    assert table_row(out, "Combined")[:3] == ["Combined", "14", "50.00"]
    assert (model / "eval" / "results.csv").is_file()
    assert f"wrote {model / 'eval' / 'results.csv'}" in out

    # A benchmark linked in from elsewhere is named by its link.
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "CUTE80").symlink_to(bench.iiit, target_is_directory=True)
    code, out, err = run_cli(["eval", "--model", str(model), "--data", str(linked)])
    assert code == 0, err
    assert table_names(out) == ["CUTE80"]


def test_find_datasets_rule(bench, tmp_path):
    assert find_datasets([bench.test]) == [bench.iiit, bench.svt]
    assert find_datasets([bench.iiit, bench.svt]) == [bench.iiit, bench.svt]
    # An LMDB tree below a child is one dataset, named by the child.
    tree = tmp_path / "tree"
    shutil.copytree(bench.svt, tree / "real" / "part1")
    shutil.copytree(bench.svt, tree / "real" / "part2")
    assert find_datasets([tree]) == [tree / "real"]
    with pytest.raises(DataError, match="neither a dataset nor a folder of datasets"):
        find_datasets([bench.test / "notes"])
    with pytest.raises(DataError, match="given twice"):
        find_datasets([bench.test, bench.iiit])


def test_evaluate_api_and_write_results_prefix(bench, tmp_path, caplog):
    model = load_model(bench.model)
    reports = []
    with caplog.at_level(logging.WARNING, logger="persec"):
        scores = evaluate(model, [bench.test], batch_size=3, progress=False, reports=reports)
    assert [(s.name, s.samples, s.correct) for s in scores] == [("IIIT5k", 8, 4), ("SVT", 6, 3)]
    assert [r.skipped for r in reports] == [2, 1]
    assert not caplog.records  # reports asked for: the caller reports them
    with caplog.at_level(logging.WARNING, logger="persec"):
        evaluate(model, [bench.test], batch_size=3, progress=False)
    assert [r.getMessage() for r in caplog.records] == [
        "skipped, not scored: IIIT5k: 10 samples, 8 kept, 2 skipped "
        "(empty label: 1, label too long: 1)",
        "skipped, not scored: SVT: 7 samples, 6 kept, 1 skipped (undecodable image: 1)",
    ]

    csv_path, json_path = write_results(scores, tmp_path / "runs" / "tiny.json")
    assert (csv_path.name, json_path.name) == ("tiny.csv", "tiny.json")
    doc = json.loads(json_path.read_text())
    assert doc["combined"]["correct"] == 7 and "skipped" not in doc["combined"]

    # A cased charset changes nothing here (labels are lower case), but is honoured.
    scores = evaluate(model, [bench.iiit], cased=True, progress=False)
    assert scores[0].samples == 8


def test_eval_unwritable_default_out_warns(run_cli, bench, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(bench.model, model)
    (model / "eval").write_text("a file where the results folder would go\n")
    code, out, err = run_cli(["eval", "--model", str(model), "--data", str(bench.iiit)])
    assert code == 0
    assert "| IIIT5k " in out
    assert "warning: cannot write results" in err and "--out DIR" in err
    # An explicit --out that cannot be written is an error.
    code, out, err = run_cli(
        ["eval", "--model", str(model), "--data", str(bench.iiit), "--out", str(model / "eval")]
    )
    assert code == 2
    assert err.count("\n") == 1 and "cannot write results" in err


@pytest.mark.parametrize("command", ["eval", "read"])
def test_missing_model_is_one_line_error(run_cli, bench, tmp_path, command, monkeypatch):
    if command == "eval":
        data = ["--data", str(bench.iiit), "--out", str(tmp_path / "out")]
    else:
        data = [str(bench.iiit)]
    code, out, err = run_cli([command, "--model", str(tmp_path / "nope"), *data])
    assert code == 2
    assert err == f"persec {command}: error: model directory {tmp_path / 'nope'} does not exist\n"

    shipped = tmp_path / "elsewhere" / "persec-small"
    monkeypatch.setenv("PERSEC_MODEL", str(shipped))  # the documented override
    code, out, err = run_cli([command, *data])
    assert code == 2
    assert err.count("\n") == 1
    assert f"no --model given and no shipped model found at {shipped}" in err

    shutil.copytree(bench.model, shipped)  # now there is one
    code, out, err = run_cli([command, *data])
    assert code == 0, err
    assert "| IIIT5k " in out if command == "eval" else len(out.splitlines()) == 10
    if command == "eval":  # without --out the results go to ./eval-persec-small/
        monkeypatch.chdir(tmp_path)
        code, out, err = run_cli(["eval", "--data", str(bench.iiit)])
        assert code == 0, err
        assert (tmp_path / "eval-persec-small" / "results.json").is_file()
        assert not (shipped / "eval").exists()


def test_eval_bad_data_is_one_line_error(run_cli, bench, tmp_path):
    for data, message in [
        (tmp_path / "absent", "does not exist"),
        (bench.test / "notes", "neither a dataset nor a folder of datasets"),
    ]:
        code, out, err = run_cli(["eval", "--model", str(bench.model), "--data", str(data)])
        assert code == 2
        assert err.count("\n") == 1 and message in err


# ---------------------------------------------------------------- read
LINE = re.compile(r"^[^\t]+\t[0-9a-z]*\t[01]\.\d{4}$")


def test_read_prints_prediction_lines(run_cli, bench, tmp_path):
    code, out, err = run_cli(
        ["read", "--model", str(bench.model), str(bench.iiit), "--batch-size", "3"]
    )
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 10
    assert all(LINE.match(line) for line in lines), lines
    pred_file = tmp_path / "pred.txt"
    pred_file.write_text(out)
    preds = read_pred_file(pred_file, unique=True)
    paths = [p for p, _, _ in preds]
    # folder contents, sorted, joined onto the folder as given
    assert paths == [str(bench.iiit / "images" / f"{i:03d}.png") for i in range(10)]
    model = Recognizer.load(bench.model)
    expected = model.read(paths)
    assert [t for _, t, _ in preds] == [t for t, _ in expected]
    assert [c for _, _, c in preds] == pytest.approx([c for _, c in expected], abs=5e-5)


def test_read_then_score_matches_eval(run_cli, bench, tmp_path):
    code, out, err = run_cli(["read", "--model", str(bench.model), str(bench.iiit)])
    assert code == 0, err
    pred_file = tmp_path / "pred.txt"
    pred_file.write_text(out)
    code, score_out, err = run_cli(
        ["score", "--pred", str(pred_file), "--gt", str(bench.iiit / "gt.txt")]
    )
    assert code == 0, err
    code, eval_out, err = run_cli(
        ["eval", "--model", str(bench.model), "--data", str(bench.iiit), "--out", str(tmp_path)]
    )
    assert code == 0, err
    scored, evaluated = table_row(score_out, "IIIT5k"), table_row(eval_out, "IIIT5k")
    assert scored[:5] == evaluated[:5] == scored[:2] + ["50.00"] + evaluated[3:5]
    assert scored[1] == "8"  # the same two labels were skipped
    assert "skipped: IIIT5k: 10 samples, 8 kept, 2 skipped" in score_out
    assert "missing predictions: 0 of 8" in score_out


def test_read_skips_unreadable_images_with_a_warning(run_cli, bench, tmp_path):
    good = bench.iiit / "images" / "000.png"
    bad = tmp_path / "bad.png"
    bad.write_bytes(truncated_png())
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    argv = ["read", "--model", str(bench.model), str(bad), str(good), str(empty)]
    code, out, err = run_cli(argv)
    assert code == 0
    assert [line.split("\t")[0] for line in out.splitlines()] == [str(good)]
    assert f"warning: skipped '{bad}': undecodable image" in err
    assert f"warning: skipped '{empty}'" in err
    assert "warning: 2 of 3 image(s) could not be read" in err
    assert "Traceback" not in err

    code, out, err = run_cli(["read", "--model", str(bench.model), str(bad)])
    assert code == 2 and out == ""
    assert err.endswith("persec read: error: none of the 1 image(s) could be read\n")

    code, out, err = run_cli(["read", "--model", str(bench.model), str(tmp_path / "absent.png")])
    assert code == 2 and err.count("\n") == 1 and "no such file or directory" in err


def test_read_images_streams_in_input_order(bench, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(truncated_png())
    good = list_images([bench.iiit])[:3]
    late = tmp_path / "late.png"  # created only after the first batch was read
    paths = [good[0], str(bad), good[1], str(tmp_path / "gone.png"), good[2], str(late)]
    model = load_model(bench.model)
    stream = read_images(model, paths, batch_size=2)
    first = next(stream)
    shutil.copy(good[0], late)
    readings = [first, *stream]
    assert [r.path for r in readings] == paths
    assert [r.error is None for r in readings] == [True, False, True, False, True, True]
    assert readings[1].error.startswith("undecodable image")
    assert readings[3].error.startswith("missing file")
    expected = [t for t, _ in model.read([*good, late])]
    assert [r.text for r in readings if r.error is None] == expected


# ---------------------------------------------------------------- tune-decoding
def test_tune_decoding_saves_the_best_setting_and_eval_uses_it(run_cli, bench, tmp_path):
    # Labels = the readings of one beam + LM setting, so that setting scores 100 %.
    model = Recognizer.load(bench.model)
    images = [stripes(i) for i in range(8)]
    target = DecoderConfig(**{**vars(model.config.decoder), "beam_width": 4, "lm_weight": 0.5})
    model.config.decoder = target
    model.decoder.decoding = target
    labels = [text for text, _ in model.read(images)]
    model.use_greedy_decoding()
    greedy = [text for text, _ in model.read(images)]
    assert labels != greedy and all(labels), "the test needs the LM to change some readings"
    val = tmp_path / "val"
    write_gt_folder(val, [(encoded(x), t) for x, t in zip(images, labels, strict=True)])
    tuned = tmp_path / "tuned"
    argv = ["tune-decoding", "--model", str(bench.model), "--data", str(val), "--out", str(tuned)]
    grid = ["--beam-width", "4", "--lm-weights", "0", "0.5", "--length-bonuses", "0", "1"]

    code, out, err = run_cli([*argv, *grid, "--dry-run"])
    assert code == 0, err
    assert not tuned.exists()
    rows = [line for line in out.splitlines() if line.startswith(("| greedy", "| beam"))]
    assert len(rows) == 5  # greedy + 2 x 2
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    greedy_acc = 100 * sum(a == b for a, b in zip(labels, greedy, strict=True)) / 8
    assert cells[0][0] == "greedy" and float(cells[0][3]) == pytest.approx(greedy_acc)
    chosen = [c for c in cells if c[0].endswith("**chosen**")]
    assert len(chosen) == 1 and chosen[0][3] == "100.00"

    code, out, err = run_cli([*argv, *grid])
    assert code == 0, err
    saved = json.loads((tuned / "config.json").read_text())["decoder"]
    assert saved["beam_width"] == 4
    assert saved["lm_weight"] == float(chosen[0][1])
    assert saved["length_bonus"] == float(chosen[0][2])
    assert (tuned / "model.safetensors").read_bytes() == (
        bench.model / "model.safetensors"
    ).read_bytes()

    ev = ["eval", "--model", str(tuned), "--data", str(val), "--out", str(tmp_path / "ev")]
    code, out, err = run_cli(ev)
    assert code == 0, err
    assert "decoding: beam search (4 beams)" in out
    assert table_row(out, "val")[2] == "100.00"
    code, out, err = run_cli([*ev, "--greedy"])
    assert code == 0, err
    assert "decoding: greedy" in out
    assert float(table_row(out, "val")[2]) == pytest.approx(greedy_acc)
    code, out, err = run_cli(["read", "--model", str(tuned), "--greedy", str(val)])
    assert [line.split("\t")[1] for line in out.splitlines()] == greedy

    # A second run into the same --out needs --force; the model's own folder does not.
    code, _, err = run_cli([*argv, *grid])
    assert code == 2 and "already holds a model" in err
    code, _, err = run_cli([*argv, *grid, "--force"])
    assert code == 0, err


def test_eval_htr_protocol_reports_wer_and_keeps_labels_as_written(bench, run_cli, tmp_path):
    code, out, err = run_cli(
        ["eval", "--model", str(bench.model), "--data", str(bench.test), "--protocol", "htr",
         "--out", str(tmp_path / "htr")]
    )  # fmt: skip
    assert code == 0, err
    assert "protocol: htr" in out and " WER " in out
    doc = json.loads((tmp_path / "htr" / "results.json").read_text())
    assert doc["protocol"] == "htr" and doc["max_label_length"] is None
    # Labels are no longer cut to the 36-character charset, so nothing is longer than
    # 25 characters or empty by that mapping: more samples are scored than by default.
    assert doc["combined"]["samples"] >= 14 and doc["combined"]["gt_words"] > 0


def test_read_gives_a_page_a_hint_not_a_reading(run_cli, bench, tmp_path):
    from PIL import Image

    page = tmp_path / "letter.png"
    Image.new("L", (1700, 2200), 255).save(page)  # a scanned page
    line = tmp_path / "line.png"
    Image.new("L", (2400, 120), 255).save(line)  # a long text line is not a page
    code, out, err = run_cli(["read", "--model", str(bench.model), str(page), str(line)])
    assert code == 0
    assert [row.split("\t")[0] for row in out.splitlines()] == [str(line)]
    assert "page-sized image (1700x2200)" in err and "cut the page into lines" in err
