"""The IAM and CVL layouts read fixtures written here in their layouts: the right labels,
`err` rows and bad names skipped and counted by reason, split lists applied."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from persec.data.cvl import NOT_CVL_NAME, CvlDataset
from persec.data.dataset import MISSING_FILE
from persec.data.iam import MALFORMED_ROW, SEGMENTATION_ERROR, IamDataset
from persec.data.layouts import detect_layout, open_dataset
from persec.errors import DataError

WORDS = """\
#--- words.txt (IAM): id result graylevel x y w h tag transcription
a01-000u-00-00 ok 154 408 768 27 51 AT A
a01-000u-00-01 ok 154 507 766 213 48 NN MOVE
a01-000u-00-02 err 154 796 764 70 50 TO to
a01-000u-00-03 ok 154 919 757 166 78 VB stop
a02-004-01-00 ok 170 360 1000 200 60 NP Gaitskell
a02-004-01-01 ok 170 600 1000 20 60 , ,
broken row
"""
LINES = """\
a01-000u-00 ok 154 19 408 746 1661 89 A|MOVE|to|stop|Mr.|Gaitskell
a01-000u-01 err 156 19 395 932 1850 105 from|nominating|any
"""


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (40, 20), 255).save(path)


@pytest.fixture
def iam(tmp_path):
    root = tmp_path / "IAM"
    (root / "ascii").mkdir(parents=True)
    (root / "ascii" / "words.txt").write_text(WORDS, encoding="utf-8")
    for sample in ("a01-000u-00-00", "a01-000u-00-01", "a02-004-01-00", "a02-004-01-01"):
        form = "-".join(sample.split("-")[:2])
        _png(root / "words" / sample[:3] / form / f"{sample}.png")
    # a01-000u-00-03 (stop) has no image: counted as a missing file
    return root


def test_iam_words_labels_and_skips(iam):
    assert detect_layout(iam) == "iam"
    data = open_dataset(iam)  # labels as written, no length cap
    assert [data.label(i) for i in range(len(data))] == ["A", "MOVE", "Gaitskell", ","]
    counts = data.report.counts
    assert (counts[SEGMENTATION_ERROR], counts[MISSING_FILE], counts[MALFORMED_ROW]) == (1, 1, 1)
    assert data.report.kept == 4
    image, label = data[0]
    assert image.size == (40, 20) and label == "A"


def test_iam_split_lists_by_form_line_or_word_id(iam):
    by_form = IamDataset(iam, only=["a02-004"])
    assert [by_form.label(i) for i in range(len(by_form))] == ["Gaitskell", ","]
    by_word = IamDataset(iam, only=["a01-000u-00-01"])
    assert [by_word.label(i) for i in range(len(by_word))] == ["MOVE"]
    # A 36-character charset filters as for any layout: the lone comma is empty.
    filtered = open_dataset(iam, charset="36_lowercase", remove_unsupported=True)
    assert [filtered.label(i) for i in range(len(filtered))] == ["a", "move", "gaitskell"]


def test_iam_lines_read_bars_as_spaces(tmp_path):
    root = tmp_path / "IAM-lines"
    root.mkdir()
    (root / "lines.txt").write_text(LINES, encoding="utf-8")
    _png(root / "lines" / "a01" / "a01-000u" / "a01-000u-00.png")
    data = IamDataset(root)
    assert data.kind == "lines" and len(data) == 1
    assert data.label(0) == "A MOVE to stop Mr. Gaitskell"
    assert data.report.counts[SEGMENTATION_ERROR] == 1
    with pytest.raises(DataError, match="not an IAM root"):
        IamDataset(tmp_path)


def test_cvl_labels_from_file_names(tmp_path):
    root = tmp_path / "cvl" / "trainset" / "words"
    for name in ("0001-1-0-0-Imagine.tif", "0001-1-0-1-Übermut.png", "0002-3-1-4-the.png"):
        _png(root / name.split("-")[0] / name)
    _png(root / "0002" / "notes.png")  # not a CVL name
    top = tmp_path / "cvl"
    assert detect_layout(top) == "cvl"
    data = open_dataset(top)
    labels = sorted(data.label(i) for i in range(len(data)))
    assert labels == ["Imagine", "the", "Übermut"]
    assert data.report.counts[NOT_CVL_NAME] == 1
    writer_two = CvlDataset(top, only=["0002"])
    assert [writer_two.label(i) for i in range(len(writer_two))] == ["the"]


def test_dir_part_reads_an_iam_split_list_file_and_refuses_layouts_without_parts(iam, tmp_path):
    split = tmp_path / "testset.txt"
    split.write_text("a02-004\n", encoding="utf-8")
    part = open_dataset(f"{iam}:{split}")
    assert [part.label(i) for i in range(len(part))] == ["Gaitskell", ","]
    assert part.name == "IAM:testset"
    lmdb = tmp_path / "db"
    from factories import parseq_entries, png, write_raw_lmdb

    write_raw_lmdb(lmdb, parseq_entries([(png(), "one")]))
    with pytest.raises(DataError, match="has no parts.*folder, iam, cvl"):
        open_dataset(f"{lmdb}:{split}")
