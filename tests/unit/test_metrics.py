"""Metrics against hand-computed values."""

from __future__ import annotations

import pytest

from persec.metrics import (
    DatasetScore,
    ScoreAccumulator,
    combine,
    edit_distance,
    eval_charset,
    format_table,
    one_minus_ned,
    scores_to_rows,
)


def _score(preds, gts, charset="36_lowercase", confidences=None, name="d"):
    acc = ScoreAccumulator(name, charset)
    acc.update(preds, gts, confidences)
    return acc.compute()


def test_eval_charset_choices():
    assert eval_charset().name == "36_lowercase"
    assert eval_charset(cased=True).name == "62_mixed"
    assert eval_charset(cased=True, punctuation=True).name == "94_full"
    punct = eval_charset(punctuation=True)
    assert len(punct) == 36 + 32 and "'" in punct and "A" not in punct
    assert punct.fold == "lower"
    assert eval_charset(cased=True, charset="36_lowercase").name == "36_lowercase"


def test_edit_distance_and_ned():
    assert edit_distance("kitten", "sitting") == 3
    assert one_minus_ned("abd", "abc") == pytest.approx(2 / 3)
    assert one_minus_ned("", "") == 1.0
    assert one_minus_ned("", "abc") == 0.0
    # dist("ab", "abcd") = 2, longest = 4 → 1 - 2/4
    assert one_minus_ned("ab", "abcd") == 0.5


def test_case_folding():
    assert _score(["Hello"], ["hello"]).word_acc == 100.0
    assert _score(["Hello"], ["hello"], eval_charset(cased=True)).word_acc == 0.0
    assert _score(["HELLO"], ["Hello"], "62_mixed").correct == 0


def test_punctuation_and_whitespace_stripped_by_default():
    assert _score(["don't"], ["dont"]).word_acc == 100.0
    assert _score(["New York!"], ["newyork"]).word_acc == 100.0
    assert _score(["café"], ["CAFE"]).word_acc == 100.0
    assert _score(["don't"], ["dont"], eval_charset(punctuation=True)).word_acc == 0.0


def test_single_sample_numbers():
    score = _score(["abd"], ["abc"])
    assert score.samples == 1 and score.correct == 0
    assert score.word_acc == 0.0
    assert score.one_minus_ned == pytest.approx(100 * 2 / 3)
    assert score.cer == pytest.approx(100 / 3)  # 1 edit / 3 gt chars
    assert score.label_length == 3.0
    assert score.confidence is None


def test_empty_predictions():
    # gt "abc" vs "": 3 edits; gt "ab" vs "ab": 0. 5 gt chars.
    score = _score(["", "ab"], ["abc", "ab"])
    assert score.word_acc == 50.0
    assert score.one_minus_ned == 50.0  # (0 + 1) / 2
    assert score.cer == 60.0  # 3 / 5
    assert score.label_length == 2.5
    # A prediction made only of unsupported characters is empty after mapping too.
    assert _score(["!!"], [""]).word_acc == 100.0


def test_cer_is_corpus_level():
    # Sample CERs 1/1 and 0/9 would average 50%; the corpus CER is 1 / 10 = 10%.
    score = _score(["x", "abcdefghi"], ["a", "abcdefghi"])
    assert score.cer == pytest.approx(10.0)
    assert score.one_minus_ned == 50.0


def test_cer_without_gt_characters():
    assert _score([""], [""]).cer == 0.0
    assert _score(["abc"], [""]).cer is None  # undefined, not a division by zero
    empty = ScoreAccumulator("e").compute()
    assert (empty.samples, empty.word_acc, empty.cer) == (0, 0.0, 0.0)


def test_confidence_mean_skips_missing():
    score = _score(["a", "b", "c"], ["a", "b", "x"], confidences=[0.9, None, 0.5])
    assert score.confidence == pytest.approx(70.0)  # (0.9 + 0.5) / 2 in percent
    assert score.confidence_count == 2


def test_accumulates_over_batches_and_resets():
    acc = ScoreAccumulator("d")
    acc.update(["a"], ["a"])
    acc.update(["b", "c"], ["x", "c"])
    assert acc.compute().correct == 2 and acc.compute().samples == 3
    acc.reset()
    assert acc.compute().samples == 0
    with pytest.raises(ValueError, match="2 predictions for 1"):
        acc.update(["a", "b"], ["a"])


def test_combined_is_sample_weighted():
    a = _score(["abc"], ["abc"], name="A")  # 100%
    b = _score(["x", "y", "z"], ["aa", "bb", "cc"], name="B")  # 0%, 6 edits over 6 chars
    both = combine([a, b])
    assert both.name == "Combined"
    assert both.samples == 4
    assert both.word_acc == 25.0  # not the 50% mean of the two datasets
    assert both.one_minus_ned == 25.0  # (1 + 0 + 0 + 0) / 4
    assert both.cer == pytest.approx(100 * 6 / 9)  # (0 + 6) edits / (3 + 6) chars
    assert combine([]).samples == 0


def test_scores_to_rows():
    (row,) = scores_to_rows([_score(["abd"], ["abc"], name="IIIT5K")])
    assert row["dataset"] == "IIIT5K"
    assert row["samples"] == 1 and row["edits"] == 1 and row["gt_chars"] == 3
    assert row["word_acc"] == 0.0 and row["confidence"] is None
    assert row["cer"] == pytest.approx(100 / 3)


def test_format_table():
    a = _score(["abc"], ["abc"], name="A", confidences=[0.5])
    b = _score(["x", "y", "z"], ["aa", "bb", "cc"], name="Benchmark")
    lines = format_table([a, b]).splitlines()
    assert len(lines) == 5  # header, rule, A, Benchmark, Combined
    assert [c.strip() for c in lines[0].strip("|").split("|")] == [
        "Dataset",
        "# samples",
        "Accuracy",
        "1 - NED",
        "CER",
        "Confidence",
        "Label length",
    ]
    assert lines[1].startswith("|:") and lines[1].endswith(":|")
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells == ["A", "1", "100.00", "100.00", "0.00", "50.00", "3.00"]
    cells = [c.strip() for c in lines[4].strip("|").split("|")]
    assert cells == ["Combined", "4", "25.00", "25.00", "66.67", "50.00", "2.25"]
    assert len({len(line) for line in lines}) == 1  # columns aligned
    assert len(format_table([a]).splitlines()) == 3  # no combined row for one dataset
    assert len(format_table([a, b], combined=False).splitlines()) == 4


def test_dataset_score_is_plain_totals():
    score = DatasetScore("d", samples=4, correct=1, ned_sum=2.0, edits=3, gt_chars=12)
    assert (score.word_acc, score.one_minus_ned, score.cer, score.label_length) == (
        25.0,
        50.0,
        25.0,
        3.0,
    )
