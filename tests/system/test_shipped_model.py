"""The shipped model reads the first 500 IIIT5K_train crops exactly as it did before the
package was reorganised: ``shipped_iiit5k_first500.tsv`` holds the readings (text and
confidence, as ``persec read`` prints them) made by the code of commit 5c68e63."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny import REPO

import persec

IIIT5K = REPO.parent / "shared" / "data" / "IIIT5K_train"
EXPECTED = Path(__file__).with_name("shipped_iiit5k_first500.tsv")


@pytest.mark.skipif(not IIIT5K.is_dir(), reason="needs ../shared/data/IIIT5K_train")
def test_shipped_model_reads_as_before(monkeypatch):
    monkeypatch.delenv("PERSEC_MODEL", raising=False)
    expected = [line.split("\t") for line in EXPECTED.read_text().splitlines()]
    assert len(expected) == 500
    first = [line.split("\t")[0] for line in (IIIT5K / "gt.txt").read_text().splitlines()[:500]]
    assert first == [path for path, _, _ in expected]  # the same crops, in order

    model = persec.load_model()
    readings = persec.read(model, [IIIT5K / path for path in first])  # orient "tall", as read
    got = [(r.text, f"{r.confidence:.4f}") for r in readings]
    assert got == [(text, conf) for _, text, conf in expected]
