"""`persec data stats` and `persec data convert` end to end on planted data."""

from __future__ import annotations

import re

import pytest
from factories import PLANTED, parseq_entries, png, write_gt_folder, write_raw_lmdb

from persec.data.lmdb import LmdbDataset

# PLANTED (see data_factory) + one missing file, under 36_lowercase / max length 25:
# at init 2 empty, 1 outside charset, 1 too long, 1 missing file; 5 undecodable images.
# The 11 good labels are word0..word10: ten of length 5, one of length 6, using the
# characters 0-9, d, o, r, w. Good images: six JPEGs (30..40)x20, five PNGs 48x16.
EXPECTED_DECODED = """\
dataset   planted (gt.txt folder)
charset   36_lowercase (36 characters), max length 25
samples   21
kept      11
skipped   10
  empty label            2   e.g. {root}/images/005.png
  label outside charset  1   e.g. {root}/images/007.png
  label too long         1   e.g. {root}/images/008.png
  missing file           1   e.g. {root}/images/gone.png
  undecodable image      5   e.g. {root}/images/000.png

label length (kept samples)
    5 | ######################################## 10
    6 | ####                                     1
  mean length 5.09

charset coverage: 14 of 36 characters appear (14 distinct in kept labels)
  present: 0123456789dorw
  missing: abcefghijklmnpqstuvxyz

image size (11 decoded images)
  width   min      30  median      40  max      48
  height  min      16  median      20  max      20
  aspect  min    1.50  median    2.00  max    3.00
  (aspect = width / height)
"""


@pytest.fixture
def planted_folder(tmp_path):
    root = tmp_path / "planted"
    write_gt_folder(root, PLANTED, missing=("images/gone.png",))
    return root


def test_stats_on_folder_exact_output(run_cli, planted_folder):
    code, out, err = run_cli(["data", "stats", str(planted_folder)])
    assert code == 0, err
    assert out == EXPECTED_DECODED.format(root=planted_folder)


def test_stats_without_decoding_counts_only_init_skips(run_cli, planted_folder):
    code, out, _ = run_cli(["data", "stats", str(planted_folder), "--no-decode"])
    assert code == 0
    assert "kept      16\nskipped   5\n" in out
    assert "undecodable image" not in out
    assert "image size: not measured (--no-decode)" in out
    # Lengths of the 16 labels kept at init: trunc cated zero text bomb + word0..word10.
    assert "    4 | " in out and re.search(r"^\s+5 \| #+\s+12$", out, re.M)


def test_stats_on_lmdb_tree_and_max_length(run_cli, tmp_path):
    write_raw_lmdb(tmp_path / "tree" / "a", parseq_entries(PLANTED[:10]))
    write_raw_lmdb(tmp_path / "tree" / "b", parseq_entries(PLANTED[10:]))
    code, out, _ = run_cli(["data", "stats", str(tmp_path / "tree"), "--max-length", "0"])
    assert code == 0
    # No length limit: the 30-character label is kept and its image (seed 6) is fine.
    assert out.startswith(
        "dataset   tree (LMDB)\ncharset   36_lowercase (36 characters), max length none\n"
    )
    assert "samples   20\nkept      12\nskipped   8\n" in out
    assert re.search(r"^  undecodable image\s+5   e\.g\. .*a:image-000000001$", out, re.M)
    assert "label too long" not in out


def test_convert_round_trip_then_stats(run_cli, planted_folder, tmp_path):
    out_dir = tmp_path / "converted"
    code, out, err = run_cli(
        [
            "data",
            "convert",
            str(planted_folder),
            str(out_dir),
            "--charset",
            "36_lowercase",
            "--max-length",
            "25",
        ]
    )
    assert code == 0, err
    assert out.splitlines() == [
        "planted: 21 samples, 11 kept, 10 skipped (empty label: 2, label outside charset: 1, "
        "label too long: 1, missing file: 1, undecodable image: 5)",
        f"wrote 11 samples to {out_dir}",
    ]
    ds = LmdbDataset(out_dir)
    good = PLANTED[9:]
    assert [ds.read_bytes(i) for i in range(len(ds))] == [data for data, _ in good]
    assert [ds.label(i) for i in range(len(ds))] == [label for _, label in good]
    code, out, _ = run_cli(["data", "stats", str(out_dir)])
    assert code == 0 and "samples   11\nkept      11\nskipped   0\n" in out


def test_errors_are_one_line(run_cli, tmp_path):
    code, out, err = run_cli(["data", "stats", str(tmp_path / "nope")])
    assert code == 2 and out == ""
    assert err == f"persec data: error: dataset path {tmp_path / 'nope'} does not exist\n"

    entries = parseq_entries([(png(), "x")])
    del entries[b"num-samples"]
    write_raw_lmdb(tmp_path / "bad", entries)
    code, _, err = run_cli(["data", "stats", str(tmp_path / "bad")])
    assert code == 2 and len(err.splitlines()) == 1
    assert f"LMDB {tmp_path / 'bad'} has no 'num-samples' key" in err

    (tmp_path / "plain").mkdir()
    code, _, err = run_cli(["data", "convert", str(tmp_path / "plain"), str(tmp_path / "o")])
    assert code == 2 and len(err.splitlines()) == 1 and "no ground-truth file gt.txt" in err

    code, _, err = run_cli(["data", "stats", str(tmp_path / "plain")])  # no images at all
    assert code == 2 and len(err.splitlines()) == 1 and "no image files" in err

    code, _, err = run_cli(["data"])
    assert code == 2 and len(err.splitlines()) == 1
