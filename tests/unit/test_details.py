"""Readings with details: the same text and confidence as the model's decoding, one
confidence per character, and the beam's runners-up."""

from __future__ import annotations

import pytest
from tiny import images, tiny_recognizer

from persec.inference.details import read_detailed


@pytest.mark.parametrize(
    ("decoder", "beam"), [("ctc", 0), ("ctc", 6), ("attn", 0)], ids=["greedy", "beam", "attn"]
)
def test_details_agree_with_the_configured_decoding(decoder, beam):
    model = tiny_recognizer(decoder=decoder, seed=1)
    if beam:
        model.config.decoder.beam_width = beam
        model.decoder.set_decoding(model.config.decoder)
    batch = images(4, seed=2)
    plain = model.decode(model(batch))
    detailed = read_detailed(model, batch, top_k=3)
    assert [(d.text, d.confidence) for d in detailed] == [(t, pytest.approx(c)) for t, c in plain]
    for d in detailed:
        assert len(d.char_confidences) == len(d.text)
        assert all(0.0 <= c <= 1.0 for c in d.char_confidences)
        if decoder == "attn":
            assert d.alternatives == []
            continue
        texts = [t for t, _ in d.alternatives]
        assert 1 <= len(texts) <= 3 and len(set(texts)) == len(texts)
        if beam:  # the reading is the beam's best
            assert d.alternatives[0] == (d.text, pytest.approx(d.confidence))
    row = detailed[0].as_dict()
    assert set(row) == {"text", "confidence", "char_confidences", "alternatives"}
