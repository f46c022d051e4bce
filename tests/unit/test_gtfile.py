"""gt.txt / prediction file parsing and path matching."""

from __future__ import annotations

import pytest

from persec.data.gtfile import match_predictions, normalize_path, read_gt_file, read_pred_file
from persec.errors import DataError


def test_gt_separators_bom_crlf_blank_lines(tmp_path):
    path = tmp_path / "gt.txt"
    text = "images/a.png\tNew York\r\n\r\nimages/b.png  two  words\r\n   \nimages/c.png\t\n"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert read_gt_file(path) == [
        ("images/a.png", "New York"),  # TAB: the label keeps its space
        ("images/b.png", "two  words"),  # no TAB: split at the first whitespace run
        ("images/c.png", ""),  # explicit empty label, rejected later as EMPTY
    ]


def test_gt_errors_name_file_and_line(tmp_path):
    path = tmp_path / "gt.txt"
    path.write_text("images/a.png\tA\n\nimages/b.png\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"gt\.txt:3: expected"):
        read_gt_file(path)
    path.write_text("\tA\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"gt\.txt:1:"):
        read_gt_file(path)
    path.write_bytes(b"images/a.png\t\xff\n")
    with pytest.raises(DataError, match="not UTF-8"):
        read_gt_file(path)
    with pytest.raises(DataError, match="no such file"):
        read_gt_file(tmp_path / "missing.txt")


def test_gt_duplicates(tmp_path):
    path = tmp_path / "gt.txt"
    path.write_text("images/a.png\tA\n./images/a.png\tB\n", encoding="utf-8")
    assert len(read_gt_file(path)) == 2
    with pytest.raises(DataError, match=r"gt\.txt:2: duplicate path .*\(first on line 1\)"):
        read_gt_file(path, unique=True)


def test_pred_columns(tmp_path):
    path = tmp_path / "pred.txt"
    path.write_text(
        "a.png\thello\t0.25\nb.png\tworld\nc.png\t\t0.0\nd.png\ne.png some text\n", encoding="utf-8"
    )
    assert read_pred_file(path) == [
        ("a.png", "hello", 0.25),
        ("b.png", "world", None),
        ("c.png", "", 0.0),
        ("d.png", "", None),  # a path alone is an empty prediction
        ("e.png", "some text", None),
    ]


@pytest.mark.parametrize("bad", ["a.png\tx\t1.5", "a.png\tx\tnan", "a.png\tx\thigh", "a\tb\tc\td"])
def test_pred_errors(tmp_path, bad):
    path = tmp_path / "pred.txt"
    path.write_text("ok.png\tfine\n" + bad + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"pred\.txt:2:"):
        read_pred_file(path)


def test_normalize_path():
    assert normalize_path("./images//x.png") == "images/x.png"
    assert normalize_path("images\\x.png") == "images/x.png"
    assert normalize_path(" /abs/x.png ") == "/abs/x.png"


def test_match_exact_prefix_missing_ignored():
    gt = [("images/a.png", "A"), ("images/b.png", "B"), ("c.png", "C"), ("images/d.png", "D")]
    preds = [
        ("./images/a.png", "a", 0.5),  # exact after normalisation
        ("/abs/data/images/b.png", "b", None),  # directory prefix added
        ("/abs/data/c.png", "c", 0.9),  # gt path is the bare file name
        ("/abs/other/z.png", "z", None),  # not in gt
    ]
    m = match_predictions(gt, preds)
    assert m.paths == ["images/a.png", "images/b.png", "c.png", "images/d.png"]
    assert m.labels == ["A", "B", "C", "D"]
    assert m.preds == ["a", "b", "c", ""]
    assert m.confidences == [0.5, None, 0.9, None]
    assert m.missing == ["images/d.png"]
    assert m.ignored == ["/abs/other/z.png"]
    assert m.by_prefix == 2


def test_match_needs_a_unique_pairing():
    # Same file name in two folders: the prediction "x.png" could be either → neither.
    gt = [("a/x.png", "A"), ("b/x.png", "B")]
    m = match_predictions(gt, [("x.png", "x", None)])
    assert m.missing == ["a/x.png", "b/x.png"] and m.ignored == ["x.png"]
    # With folders in the prediction paths each pairing is unique again.
    m = match_predictions(gt, [("/r/a/x.png", "1", None), ("/r/b/x.png", "2", None)])
    assert m.preds == ["1", "2"] and not m.missing
    # A different folder is not a prefix: no match.
    m = match_predictions([("images/x.png", "A")], [("/r/test/x.png", "1", None)])
    assert m.missing == ["images/x.png"]
