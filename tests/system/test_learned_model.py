"""The session's tiny trained model (``learned``, conftest) through every way of using a
model: ``persec eval``, ``persec read`` and the Python API agree with each other and
with the labels it learned; its ONNX export reads the same; averaging it with itself
changes nothing."""

from __future__ import annotations

import pytest

import persec
from persec.data.layouts import open_dataset
from persec.inference.export import export_onnx
from persec.inference.onnx_runtime import OnnxRecognizer


@pytest.fixture(scope="module")
def crops(learned, tmp_path_factory):
    """The 64 training words as PNG files and their labels (gt order)."""
    data = open_dataset(learned.words, charset="36_lowercase")
    folder = tmp_path_factory.mktemp("crops")
    paths, labels = [], []
    for i in range(len(data)):
        image, label = data[i]
        paths.append(folder / f"{i:02d}.png")
        image.save(paths[-1])
        labels.append(label)
    return paths, labels


def test_eval_read_and_api_agree_on_what_it_learned(learned, crops, run_cli, tmp_path):
    paths, labels = crops
    code, out, err = run_cli(["eval", "--model", str(learned.model), "--data", str(learned.words),
                              "--out", str(tmp_path / "eval")])  # fmt: skip
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.startswith("| words "))
    assert [c.strip() for c in row.split("|")[2:4]] == ["64", "100.00"], out  # all 64 read
    code, out, err = run_cli(["read", "--model", str(learned.model), *map(str, paths)])
    assert code == 0, err
    cli_texts = [line.split("\t")[1] for line in out.splitlines()]
    api_texts = [r.text for r in persec.read(persec.load_model(learned.model), paths)]
    assert cli_texts == api_texts == labels


def test_onnx_export_reads_what_pytorch_reads(learned, crops, tmp_path):
    paths, labels = crops
    onnx = export_onnx(learned.model, tmp_path / "learned.onnx")
    texts = [text for text, _ in OnnxRecognizer(onnx).read(paths)]
    assert texts == labels


def test_average_with_itself_is_the_same_model(learned, crops, run_cli, tmp_path):
    paths, labels = crops
    out = tmp_path / "soup"
    code, _, err = run_cli(["average", str(learned.model), str(learned.model), "--out", str(out)])
    assert code == 0, err
    assert [r.text for r in persec.read(persec.load_model(out), paths)] == labels
