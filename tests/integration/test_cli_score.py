"""`persec score` end to end on a small hand-scored prediction file."""

from __future__ import annotations

import json

import pytest

GT = (
    "images/a.png\tHello\n"
    "images/b.png\tWorld\n"
    "images/c.png\tdon't\n"
    "images/d.png\tabc\n"
    "images/e.png\ttwo words\n"
)
PRED = (
    "images/a.png\thello\t0.9\n"
    "/data/set/images/b.png\tWor1d\t0.5\n"  # absolute path: matched by directory prefix
    "images/c.png\tDONT\t1.0\n"
    "images/x.png\tzzz\t0.1\n"  # not in GT: ignored with a warning
    "images/e.png\ttwowords\n"  # no confidence column
)  # images/d.png has no prediction: scored as empty
# Under 36_lowercase, gt → hello world dont abc twowords (25 chars) and
# pred → hello wor1d dont "" twowords:
#   correct a, c, e → 3/5 = 60%
#   edits 0 + 1 + 0 + 3 + 0 = 4 → CER 4/25 = 16%
#   1-NED (1 + 4/5 + 1 + 0 + 1) / 5 = 76%
#   confidence (0.9 + 0.5 + 1.0) / 3 = 80%; label length 25/5 = 5


@pytest.fixture
def files(tmp_path):
    gt = tmp_path / "demo" / "gt.txt"
    gt.parent.mkdir()
    gt.write_text(GT, encoding="utf-8")
    pred = tmp_path / "pred.txt"
    pred.write_text(PRED, encoding="utf-8")
    return gt, pred


def _row(out: str, name: str) -> list[str]:
    line = next(line for line in out.splitlines() if line.startswith(f"| {name} "))
    return [c.strip() for c in line.strip("|").split("|")]


def test_score_table_and_json(run_cli, files, tmp_path):
    gt, pred = files
    out_json = tmp_path / "out" / "score.json"
    code, out, err = run_cli(
        ["score", "--pred", str(pred), "--gt", str(gt), "--out", str(out_json)]
    )
    assert code == 0, err
    # dataset named after the folder holding gt.txt
    assert _row(out, "demo") == ["demo", "5", "60.00", "76.00", "16.00", "80.00", "5.00"]
    assert "missing predictions: 1 of 5" in out
    assert "images/d.png" in out
    assert "matched by directory prefix: 1" in out
    assert "1 prediction(s)" in err and "images/x.png" in err

    result = json.loads(out_json.read_text())
    assert result["samples"] == 5 and result["correct"] == 3
    assert result["word_acc"] == pytest.approx(60.0)
    assert result["one_minus_ned"] == pytest.approx(76.0)
    assert result["cer"] == pytest.approx(16.0)
    assert result["confidence"] == pytest.approx(80.0)
    assert (result["edits"], result["gt_chars"]) == (4, 25)
    assert (result["missing"], result["ignored"], result["matched_by_prefix"]) == (1, 1, 1)
    assert result["charset"] == "36_lowercase"


def test_score_cased(run_cli, files):
    gt, pred = files
    code, out, _ = run_cli(["score", "--pred", str(pred), "--gt", str(gt), "--cased"])
    assert code == 0
    # Only "two words" vs "twowords" survives case: 1/5.
    assert _row(out, "demo")[2] == "20.00"
    assert "62_mixed" in out


def test_missing_file_is_one_line_error(run_cli, files, tmp_path):
    gt, _ = files
    code, out, err = run_cli(["score", "--pred", str(tmp_path / "nope.txt"), "--gt", str(gt)])
    assert code == 2
    assert err.count("\n") == 1 and "nope.txt" in err and "no such file" in err
    assert "Traceback" not in err


def test_malformed_gt_line(run_cli, files):
    gt, pred = files
    gt.write_text("images/a.png\tHello\nimages/b.png\n", encoding="utf-8")
    code, _, err = run_cli(["score", "--pred", str(pred), "--gt", str(gt)])
    assert code == 2
    assert err.count("\n") == 1 and f"{gt}:2:" in err


def test_duplicate_gt_path(run_cli, files):
    gt, pred = files
    gt.write_text("images/a.png\tHello\n\nimages/a.png\tHullo\n", encoding="utf-8")
    code, _, err = run_cli(["score", "--pred", str(pred), "--gt", str(gt)])
    assert code == 2
    assert f"{gt}:3:" in err and "first on line 1" in err


def test_bad_confidence(run_cli, files):
    gt, pred = files
    pred.write_text("images/a.png\thello\t97\n", encoding="utf-8")
    code, _, err = run_cli(["score", "--pred", str(pred), "--gt", str(gt)])
    assert code == 2
    assert f"{pred}:1:" in err and "[0, 1]" in err


def test_missing_required_option(run_cli, files):
    gt, _ = files
    code, _, err = run_cli(["score", "--gt", str(gt)])
    assert code == 2 and "--pred" in err


def test_unreadable_inputs_told_apart_from_missing_predictions(run_cli, tmp_path):
    # persec read skips an image it cannot decode, so its ground truth has no
    # prediction: score says why instead of calling it a missing prediction.
    from PIL import Image

    root = tmp_path / "set"
    (root / "images").mkdir(parents=True)
    for name in ("ok", "unread"):
        Image.new("RGB", (64, 16), "white").save(root / "images" / f"{name}.png")
    (root / "images" / "broken.png").write_bytes(b"not an image")
    (root / "gt.txt").write_text(
        "images/ok.png\tok\nimages/unread.png\tunread\n"
        "images/broken.png\tbroken\nimages/gone.png\tgone\n",
        encoding="utf-8",
    )
    pred = tmp_path / "pred.txt"
    pred.write_text("images/ok.png\tok\t0.9\n", encoding="utf-8")
    out_json = tmp_path / "score.json"
    code, out, err = run_cli(
        ["score", "--pred", str(pred), "--gt", str(root / "gt.txt"), "--out", str(out_json)]
    )
    assert code == 0, err
    assert _row(out, "set")[:3] == ["set", "4", "25.00"]  # every crop counted
    assert "(undecodable image): 1 (scored as empty), first: images/broken.png" in out
    assert "(missing file): 1 (scored as empty), first: images/gone.png" in out
    assert "missing predictions: 1 of 4" in out and "images/unread.png" in out
    row = json.loads(out_json.read_text())
    assert row["missing"] == 1 and row["unreadable"] == 2
    assert row["unreadable_by_reason"] == {"missing file": 1, "undecodable image": 1}


def test_a_missing_image_beside_readable_ones_is_reported_as_missing_file(run_cli, tmp_path):
    from PIL import Image

    root = tmp_path / "set"
    (root / "images").mkdir(parents=True)
    Image.new("RGB", (64, 16), "white").save(root / "images" / "ok.png")
    (root / "gt.txt").write_text("images/ok.png\tok\nimages/gone.png\tgone\n", encoding="utf-8")
    pred = tmp_path / "pred.txt"
    pred.write_text("images/ok.png\tok\n", encoding="utf-8")
    code, out, err = run_cli(["score", "--pred", str(pred), "--gt", str(root / "gt.txt")])
    assert code == 0, err
    assert "(missing file): 1 (scored as empty), first: images/gone.png" in out
    assert "missing predictions: 0 of 2" in out


# The HTR protocol by hand: NFC, case and punctuation kept, whitespace runs collapsed.
#   "Dear Sir," vs "dear Sir,"   : 1 char edit of 9; words: "Dear" vs "dear" -> 1 of 2
#   "of the  £5." vs "of the £5" : gt -> "of the £5." (10 chars); 1 edit (missing ".");
#                                  words "£5." vs "£5" -> 1 of 3
#   "Café" (NFD in gt) vs "Café"  : NFC makes them equal: 0 of 4, 0 of 1
#   "yours truly" vs "yourstruly": 1 edit of 11; words 2 vs 1 -> 2 edits of 2
# CER 3 / 34 = 8.8235%, WER 4 / 8 = 50%, word accuracy 1 / 4 = 25%.
HTR_GT = "l/a.png\tDear Sir,\nl/b.png\tof the  £5.\nl/c.png\tCafe\u0301\nl/d.png\tyours truly\n"
HTR_PRED = "l/a.png\tdear Sir,\nl/b.png\tof the £5\nl/c.png\tCaf\u00e9\nl/d.png\tyourstruly\n"


def test_htr_protocol_cer_and_wer_by_hand(run_cli, tmp_path):
    gt, pred, out_json = tmp_path / "gt.txt", tmp_path / "pred.txt", tmp_path / "s.json"
    gt.write_text(HTR_GT, encoding="utf-8")
    pred.write_text(HTR_PRED, encoding="utf-8")
    code, out, err = run_cli(
        ["score", "--pred", str(pred), "--gt", str(gt), "--protocol", "htr", "--out", str(out_json)]
    )
    assert code == 0, err
    assert "protocol: htr" in out and " WER " in out.splitlines()[1]
    row = json.loads(out_json.read_text())
    assert (row["edits"], row["gt_chars"], row["word_edits"], row["gt_words"]) == (3, 34, 4, 8)
    assert row["cer"] == pytest.approx(100 * 3 / 34)
    assert row["wer"] == pytest.approx(50.0)
    assert row["word_acc"] == pytest.approx(25.0)
    assert row["protocol"] == "htr" and row["charset"] is None
    # The standard protocol on the same files: case, punctuation, spaces and £ dropped.
    code, out, _ = run_cli(["score", "--pred", str(pred), "--gt", str(gt), "--name", "std"])
    assert "WER" not in out and _row(out, "std")[2] == "100.00"
