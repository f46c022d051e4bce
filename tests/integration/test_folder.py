"""gt.txt folders, plain image folders and the folder → LMDB converter."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from factories import (
    PLANTED,
    PLANTED_GOOD,
    PLANTED_INIT,
    PLANTED_KEPT,
    PLANTED_UNDECODABLE,
    TEXT,
    jpeg,
    png,
    write_gt_folder,
)
from torch.utils.data import DataLoader

from persec.data.dataset import MISSING_FILE, UNDECODABLE, Skipped, SkipReport, collate_samples
from persec.data.folder import FolderDataset, ImageFolderDataset, folder_to_lmdb
from persec.data.layouts import open_dataset
from persec.data.lmdb import LmdbDataset
from persec.errors import DataError


def test_folder_reads_labels_relative_to_gt_file(tmp_path):
    paths = write_gt_folder(tmp_path / "SVT", [(png(seed=1), "Hello"), (jpeg(), "wörld")])
    ds = FolderDataset(tmp_path / "SVT", charset="36_lowercase")
    assert ds.name == "SVT" and len(ds) == 2
    image, label = ds[0]
    assert label == "hello" and image.size == (48, 16) and image.mode == "RGB"
    assert ds[1][1] == "world" and ds[1][0].size == (40, 20)
    assert ds.source(1) == str(tmp_path / "SVT" / paths[1])
    assert ds.raw_labels == ["Hello", "wörld"]


def test_planted_corrupt_samples_and_missing_file_exact_counts(tmp_path, caplog):
    write_gt_folder(tmp_path / "planted", PLANTED, missing=("images/gone.png",))
    with caplog.at_level("WARNING", logger="persec.data"):
        ds = FolderDataset(tmp_path / "planted", charset="36_lowercase", max_label_length=25)
    assert dict(ds.report.counts) == {**PLANTED_INIT, MISSING_FILE: 1}
    assert ds.report.kept == len(ds) == PLANTED_KEPT and ds.report.total == 21
    # Counted, not logged: whoever opened the dataset reports it, once.
    assert not caplog.records and "21 samples, 16 kept, 5 skipped" in ds.report.summary()
    assert ds.report.examples[MISSING_FILE] == [str(tmp_path / "planted" / "images/gone.png")]

    loader = DataLoader(ds, batch_size=5, collate_fn=collate_samples)
    labels, skipped = [], Counter()
    for _, batch_labels, batch_skipped in loader:
        labels += batch_labels
        skipped += batch_skipped
    assert skipped == Counter({UNDECODABLE: PLANTED_UNDECODABLE})
    assert labels == PLANTED_GOOD


def test_file_deleted_after_init_is_skipped_not_raised(tmp_path):
    write_gt_folder(tmp_path / "d", [(png(), "one"), (png(), "two")])
    ds = FolderDataset(tmp_path / "d")
    (tmp_path / "d" / "images" / "001.png").unlink()
    assert ds[1] == Skipped(MISSING_FILE, str(tmp_path / "d" / "images" / "001.png"))


def test_malformed_gt_and_missing_gt_are_clear_errors(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "gt.txt").write_text("images/a.png\tok\nno-separator\n")
    with pytest.raises(DataError, match=r"gt.txt:2"):
        FolderDataset(tmp_path / "bad")
    (tmp_path / "none").mkdir()
    with pytest.raises(DataError, match="no ground-truth file gt.txt"):
        FolderDataset(tmp_path / "none")


def test_unlabelled_folder_keeps_gt_selection_and_ignores_labels(tmp_path):
    write_gt_folder(tmp_path / "f", [(png(), ""), (png(), "x" * 40)], missing=("images/z.png",))
    ds = open_dataset(tmp_path / "f", charset="36_lowercase", unlabelled=True)
    assert isinstance(ds, FolderDataset) and len(ds) == 2
    assert ds[0][1] is None and dict(ds.report.counts) == {MISSING_FILE: 1}


def test_image_folder_is_recursive_sorted_and_filters_extensions(tmp_path):
    root = tmp_path / "raw"
    (root / "b").mkdir(parents=True)
    (root / ".hidden").mkdir()
    (root / "b" / "2.PNG").write_bytes(png(seed=2))
    (root / "a.jpeg").write_bytes(jpeg())
    (root / "c.webp").write_bytes(TEXT)  # right extension, not an image
    (root / "notes.txt").write_text("x")
    (root / "._a.png").write_bytes(b"\0" * 10)  # macOS resource fork
    (root / ".hidden" / "h.png").write_bytes(png())
    ds = ImageFolderDataset(root)
    assert [ds.source(i) for i in range(len(ds))] == [
        str(root / "a.jpeg"),
        str(root / "b" / "2.PNG"),
        str(root / "c.webp"),
    ]
    assert ds[0][1] is None and ds[1][0].size == (48, 16)
    assert ds[2] == Skipped(UNDECODABLE, str(root / "c.webp"))
    assert isinstance(open_dataset(root, unlabelled=True), ImageFolderDataset)
    with pytest.raises(DataError, match="accepted layouts"):
        open_dataset(root, charset="36_lowercase")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        ImageFolderDataset(tmp_path / "empty")


def test_folder_to_lmdb_round_trip_keeps_bytes_and_raw_labels(tmp_path):
    samples = [(png(seed=1), "Hello"), (jpeg(), "wörld"), (TEXT, "broken"), (png(), "a!")]
    paths = write_gt_folder(tmp_path / "src", samples, missing=("images/gone.png",))
    written, report = folder_to_lmdb(tmp_path / "src", tmp_path / "out", charset="62_mixed")
    # "a!" is outside 62_mixed, the text file is undecodable, one file is missing.
    assert written == 2 and report.kept == 2
    assert dict(report.counts) == {
        "label outside charset": 1,
        UNDECODABLE: 1,
        MISSING_FILE: 1,
    }
    ds = LmdbDataset(tmp_path / "out")
    assert [ds.read_bytes(i) for i in range(2)] == [samples[0][0], samples[1][0]]
    assert [ds.label(i) for i in range(2)] == ["Hello", "wörld"]  # stored as written
    assert (tmp_path / "src" / paths[0]).read_bytes() == ds.read_bytes(0)
    with pytest.raises(DataError, match="already holds an LMDB"):
        folder_to_lmdb(tmp_path / "src", tmp_path / "out")


def test_skip_report_merges_folder_and_lmdb_reports(tmp_path):
    write_gt_folder(tmp_path / "a", [(png(), "ok"), (png(), "")])
    folder_to_lmdb(tmp_path / "a", tmp_path / "b")
    total = SkipReport("all")
    total.merge(FolderDataset(tmp_path / "a").report).merge(LmdbDataset(tmp_path / "b").report)
    assert total.summary() == "all: 3 samples, 2 kept, 1 skipped (empty label: 1)"


def test_split_is_disjoint_complete_seeded_and_refuses_reuse(tmp_path, run_cli):
    samples = [(png(seed=i), f"word{i}") for i in range(12)]
    write_gt_folder(tmp_path / "src", samples)
    code, out, err = run_cli(
        ["data", "split", str(tmp_path / "src"), "--out", str(tmp_path / "a"), "--holdout", "4"]
    )
    assert code == 0, err
    train = FolderDataset(tmp_path / "a" / "train")
    held = FolderDataset(tmp_path / "a" / "heldout")
    labels = {train.label(i) for i in range(len(train))}, {held.label(i) for i in range(len(held))}
    assert (len(labels[0]), len(labels[1])) == (8, 4) and not labels[0] & labels[1]
    assert labels[0] | labels[1] == {label for _, label in samples}
    rel = Path(held.source(0)).relative_to(tmp_path / "a" / "heldout")
    assert held.read_bytes(0) == (tmp_path / "src" / rel).read_bytes()  # copied unchanged
    again = tmp_path / "b"
    run_cli(["data", "split", str(tmp_path / "src"), "--out", str(again), "--holdout", "4"])
    assert (again / "heldout" / "gt.txt").read_text() == (
        tmp_path / "a" / "heldout" / "gt.txt"
    ).read_text()
    code, _, err = run_cli(
        ["data", "split", str(tmp_path / "src"), "--out", str(again), "--holdout", "4"]
    )
    assert code == 2 and "already holds a split" in err
    code, _, err = run_cli(
        ["data", "split", str(tmp_path / "src"), "--out", str(tmp_path / "c"), "--holdout", "12"]
    )
    assert code == 2 and "holdout must be in [1, 11]" in err
