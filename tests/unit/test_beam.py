"""The beam search's shortcut over frames that offer no character: the same readings and
the same probabilities, to the last bit, as the full extend-merge-prune step."""

from __future__ import annotations

import functools

import pytest
import torch

from persec.charset import Charset, CTCTokenizer
from persec.decoding import beam
from persec.decoding.lm import CharNgramLM

CHARSET = Charset("abcde")
TOKENIZER = CTCTokenizer(CHARSET)  # classes: 0 blank, 1-5 a-e


def _peaked_logits(seed: int, batch: int = 24, frames: int = 16) -> torch.Tensor:
    """(B, T, 6) logits like a trained model's: most frames near-certain blank, some
    a confident or a doubtful character."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, frames, 6, generator=g)
    kind = torch.rand(batch, frames, generator=g)
    logits[..., 0] += torch.where(kind < 0.6, 14.0, 0.0)  # blank frames: others < e^-8
    peak = torch.randint(1, 6, (batch, frames), generator=g)
    boost = torch.where(kind >= 0.8, 12.0, 3.0).unsqueeze(-1)  # sure or doubtful
    return logits.scatter_add(-1, peak.unsqueeze(-1), boost)


@pytest.mark.parametrize("use_lm", [False, True])
@pytest.mark.parametrize("beam_width", [1, 3, 8])
def test_frames_without_candidates_take_the_shortcut_exactly(monkeypatch, use_lm, beam_width):
    logits = _peaked_logits(seed=beam_width)
    log_probs = logits.log_softmax(-1)
    chars_possible = (log_probs[..., 1:] >= -8.0).any(-1)  # (B, T)
    assert 0.3 < (~chars_possible).float().mean() < 0.9  # both kinds of frame occur
    lm = CharNgramLM(["abc", "bad", "cab", "dead", "bead", "ace"], order=3, alphabet="abcde")
    args = (TOKENIZER, beam_width, lm if use_lm else None, 0.5 if use_lm else 0.0, 0.3)

    fast = beam.ctc_beam_search(logits, *args, top_k=beam_width)
    full_step = functools.partial(beam._search_image, shortcut=False)
    monkeypatch.setattr(beam, "_search_image", full_step)
    full = beam.ctc_beam_search(logits, *args, top_k=beam_width)

    assert fast == full  # texts, order and float probabilities identical
    assert max(len(text) for readings in fast for text, _ in readings) >= 3
    assert all(0.0 < p <= 1.0 for readings in fast for _, p in readings)


def test_a_frame_without_candidates_keeps_repeats_and_blanks():
    # Frame 1 offers "a" (0.9); frames 2 and 3 offer nothing new, since "a" (0.5) falls
    # below min_log_prob there. The prefix "a" keeps its alignments through them, a a a,
    # a a -, a - - (0.9 * (0.25 + 0.25 + 0.25)); a - a would be "aa", a new character,
    # so it is pruned; "" keeps - - - (0.1 * 0.25).
    rows = [[0.1, 0.9, 0.0], [0.5, 0.5, 0.0], [0.5, 0.5, 0.0]]
    logits = torch.tensor([rows], dtype=torch.float64).log()
    ab = CTCTokenizer(Charset("ab"))
    found = beam.ctc_beam_search(logits, ab, beam_width=4, min_log_prob=-0.5, top_k=4)
    assert [text for text, _ in found[0]] == ["a", ""]
    assert [p for _, p in found[0]] == pytest.approx([0.9 * 0.75, 0.1 * 0.25])
