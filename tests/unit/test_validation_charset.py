"""Fine-tuning validates under the model's own charset: a 36-character model by the
standard case-insensitive protocol, a cased model with case counted."""

from __future__ import annotations

import pytest
from tiny import tiny_recognizer

from persec.training.optim import OptimConfig
from persec.training.systems import RecognitionSystem


@pytest.mark.parametrize(
    "charset, expected", [("36_lowercase", 100.0), ("62_mixed", 50.0), ("94_full", 0.0)]
)
def test_validation_scores_under_the_models_charset(charset, expected):
    system = RecognitionSystem(tiny_recognizer(charset=charset), OptimConfig(), 10, ["val"])
    system.on_validation_epoch_start()
    score = system._scores[0]
    assert score.charset == tiny_recognizer(charset=charset).charset
    # "Paris" read for "paris" is right only without case; "it's" for "its" only without
    # punctuation.
    score.update(["Paris", "it's"], ["paris", "its"], [0.9, 0.9])
    assert score.compute().word_acc == expected
