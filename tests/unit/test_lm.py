"""The character LM (hand-computed probabilities), the CTC beam search with and without
it (against brute-force path sums), the decoding settings of a recognizer, and the
decoding search behind ``persec tune-decoding``."""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import replace

import pytest
import torch

from persec.charset import Charset, CTCTokenizer
from persec.decoding.align import ctc_char_confidences
from persec.decoding.beam import ctc_beam_decode, ctc_beam_search
from persec.decoding.lm import CharNgramLM, english_word_lm
from persec.decoding.settings import check_decoding, decode_ctc, describe_decoding
from persec.errors import PersecError
from persec.evaluation.tune_decoding import search_decoding
from persec.models.decoders.base import DecoderConfig, build_decoder
from persec.models.encoders.base import EncoderConfig
from persec.models.recognizer import Recognizer, RecognizerConfig

AB = Charset("ab")
TOKENIZER = CTCTokenizer(AB)  # classes: 0 blank, 1 a, 2 b


def _logits(rows: list[list[float]]) -> torch.Tensor:
    """(1, T, 3) log-probabilities from rows of [blank, a, b] probabilities."""
    return torch.tensor([rows], dtype=torch.float64).log()


def _path_sums(rows: list[list[float]]) -> dict[str, float]:
    """p(text) for every text: the sum over all CTC paths that collapse to it."""
    sums: dict[str, float] = {}
    for path in itertools.product(range(3), repeat=len(rows)):
        p = math.prod(row[c] for row, c in zip(rows, path, strict=True))
        text = "".join("_ab"[c] for i, c in enumerate(path) if c and (i == 0 or path[i - 1] != c))
        sums[text] = sums.get(text, 0.0) + p
    return sums


# ---------------------------------------------------------------- the LM
def test_bigram_by_hand():
    # One word "ab", order 2, D = 0.5, symbols a b $. Counts: after "" (any history)
    # a, b, $ once each; after ^ a; after a b; after b $.
    lm = CharNgramLM(["ab"], order=2, discount=0.5, alphabet="ab")
    assert lm.symbols == "ab$"
    # unigram level: 0.5 * 1/3 (backoff to uniform) + (1 - 0.5) / 3 = 1/3 each
    # after ^: a = 0.5 * 1/3 + 0.5 = 2/3; b and $ = 0.5 * 1/3 = 1/6
    assert [math.exp(x) for x in lm.log_probs("")] == pytest.approx([2 / 3, 1 / 6, 1 / 6])
    assert [math.exp(x) for x in lm.log_probs("a")] == pytest.approx([1 / 6, 2 / 3, 1 / 6])
    assert lm.score("ab") == pytest.approx(3 * math.log(2 / 3))
    assert lm.score("aa") == pytest.approx(math.log(2 / 3) + 2 * math.log(1 / 6))
    with pytest.raises(ValueError, match="'c' is not in"):
        lm.score("ac")


@pytest.mark.parametrize("history", ["", "q", "th", "qqqqqqq", "attac", "12"])
def test_distributions_sum_to_one(history):
    lm = english_word_lm()
    assert len(lm.symbols) == 37
    assert sum(math.exp(x) for x in lm.log_probs(history)) == pytest.approx(1.0)


def test_english_lm_prefers_words():
    lm = english_word_lm()
    for word, typo in [("attack", "artack"), ("america", "arnerica"), ("hotel", "hotcl")]:
        assert lm.score(word) > lm.score(typo) + 2.0, (word, typo)


def test_lm_refuses_bad_settings():
    with pytest.raises(ValueError, match="order"):
        CharNgramLM(["ab"], order=0)
    with pytest.raises(ValueError, match="discount"):
        CharNgramLM(["ab"], discount=1.0)
    with pytest.raises(ValueError, match="no word"):
        CharNgramLM(["xyz"], alphabet="ab")


# ---------------------------------------------------------------- beam search
ROWS = [[0.05, 0.9, 0.05], [0.9, 0.05, 0.05], [0.05, 0.6, 0.35]]


def test_beam_search_without_lm_finds_the_most_probable_text():
    sums = _path_sums(ROWS)
    best = max(sums, key=sums.get)
    assert best == "aa"
    ((text, conf),) = ctc_beam_decode(_logits(ROWS), TOKENIZER, beam_width=8)
    assert text == best and conf == pytest.approx(sums[best])


def test_lm_fusion_flips_an_ambiguous_reading():
    # CTC prefers "aa" a little; the LM of the single word "ab" strongly prefers "ab".
    lm = CharNgramLM(["ab"], order=2, discount=0.5, alphabet="ab")
    sums = _path_sums(ROWS)
    gap = math.log(sums["aa"] / sums["ab"])
    lm_gap = lm.score("ab") - lm.score("aa")
    assert 0 < gap < lm_gap  # so a weight of 1 decides for "ab"
    ((text, conf),) = ctc_beam_decode(_logits(ROWS), TOKENIZER, 8, lm, lm_weight=1.0)
    assert text == "ab"
    assert conf == pytest.approx(sums["ab"])  # the confidence stays p_ctc(text)
    # A weight below gap / lm_gap leaves the CTC choice.
    low = 0.5 * gap / lm_gap
    assert ctc_beam_decode(_logits(ROWS), TOKENIZER, 8, lm, lm_weight=low)[0][0] == "aa"


def test_length_bonus_counts_per_character():
    rows = [[0.6, 0.4, 1e-9]] * 2  # "" (0.36) against "a" (0.64): "a" wins on its own
    assert ctc_beam_decode(_logits(rows), TOKENIZER, 4)[0][0] == "a"
    # A penalty of log(0.64 / 0.36) + a bit per character makes the empty reading win.
    penalty = -(math.log(0.64 / 0.36) + 0.01)
    assert ctc_beam_decode(_logits(rows), TOKENIZER, 4, length_bonus=penalty)[0][0] == ""


def test_unknown_characters_are_scored_uniformly():
    # A charset with '!' decoded with a lowercase LM: '!' gets log(1/|symbols|).
    charset = Charset("a!")
    lm = CharNgramLM(["a", "aa"], order=2, alphabet="a")
    rows = [[0.1, 0.1, 0.8]]  # blank, a, !
    ((text, _),) = ctc_beam_decode(
        torch.tensor([rows]).log(), CTCTokenizer(charset), 3, lm, lm_weight=1.0
    )
    assert text == "!"
    with pytest.raises(ValueError, match="beam width"):
        ctc_beam_decode(torch.tensor([rows]).log(), CTCTokenizer(charset), 0)


def test_pruned_characters_cannot_appear():
    # b has probability 1e-7 (log -16): only a heavy LM that loves "b" could choose it.
    rows = [[0.5, 0.5 - 1e-7, 1e-7]]
    lm = CharNgramLM(["b"], order=2, discount=0.5, alphabet="ab")
    search = functools.partial(ctc_beam_decode, _logits(rows), TOKENIZER, 3, lm, 30.0)
    assert search(min_log_prob=-math.inf)[0][0] == "b"
    assert search(min_log_prob=-12.0)[0][0] == ""


# ---------------------------------------------------------------- decoder settings
def test_decoder_config_checks_name_the_field():
    with pytest.raises(ValueError, match="beam_width must be >= 0"):
        check_decoding(DecoderConfig(beam_width=-1))
    with pytest.raises(ValueError, match="are for the ctc decoder"):
        check_decoding(DecoderConfig(name="attn", beam_width=5))
    with pytest.raises(ValueError, match="need decoder.beam_width >= 1"):
        check_decoding(DecoderConfig(lm_weight=0.3))
    with pytest.raises(ValueError, match="lm_weight must be >= 0"):
        check_decoding(DecoderConfig(beam_width=4, lm_weight=-1.0))
    with pytest.raises(ValueError, match="lm_words and lm_order"):
        check_decoding(DecoderConfig(beam_width=4, lm_weight=0.3, lm_order=0))
    assert describe_decoding(DecoderConfig()) == "greedy"
    assert describe_decoding(DecoderConfig(beam_width=5)) == "beam search (5 beams)"
    assert "weight 0.3, length bonus 2" in describe_decoding(
        DecoderConfig(beam_width=5, lm_weight=0.3, length_bonus=2.0)
    )


def test_recognizer_decodes_as_configured_and_can_go_greedy(tmp_path):
    torch.manual_seed(0)
    cfg = DecoderConfig(name="ctc", lstm_layers=0, beam_width=6, lm_weight=0.4, length_bonus=1.0)
    model = Recognizer(RecognizerConfig(encoder=EncoderConfig(size="tiny"), decoder=cfg)).eval()
    logits = torch.randn(5, 32, 37) * 3  # (B, T, V)
    want = ctc_beam_decode(logits, model.decoder.tokenizer, 6, english_word_lm(), 0.4, 1.0)
    assert model.decode(logits) == want
    model.save(tmp_path / "m")
    loaded = Recognizer.load(tmp_path / "m")
    assert loaded.config.decoder == cfg
    assert loaded.decode(logits) == want
    loaded.use_greedy_decoding()
    assert loaded.decode(logits) == decode_ctc(logits, loaded.decoder.tokenizer, DecoderConfig())
    assert loaded.config.decoder.beam_width == 0 and loaded.config.decoder.lm_weight == 0.0
    with pytest.raises(ValueError, match="are for the ctc decoder"):
        build_decoder(DecoderConfig(name="attn", beam_width=2), 16, AB)


def test_search_decoding_picks_the_best_and_keeps_greedy_on_ties():
    # Two crops whose CTC readings are "aa" (a little more likely than "ab") and "ab";
    # labels "ab" and "ab": greedy / plain beam read 1 of 2, the LM of "ab" reads both.
    logits = torch.cat(
        [_logits(ROWS), _logits([[0.05, 0.9, 0.05], [0.9, 0.05, 0.05], [0.05, 0.05, 0.9]])]
    )
    base = DecoderConfig(name="ctc", lm_order=2)
    lm = CharNgramLM(["ab"], order=2, discount=0.5, alphabet="ab")

    def fake_lm(cfg):  # the search builds its LM through decoding_lm
        return lm if cfg.lm_weight > 0 else None

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("persec.decoding.settings.decoding_lm", fake_lm)
        best, trials = search_decoding(
            logits, ["ab", "ab"], base, AB, AB, 4, [0.0, 1.0], [0.0], progress=False
        )
    assert [t.word_acc for t in trials] == [50.0, 50.0, 100.0]
    assert trials[0].decoding.beam_width == 0
    assert best is trials[2] and best.decoding == replace(base, beam_width=4, lm_weight=1.0)
    # Nothing beats greedy: greedy stays.
    best, _ = search_decoding(logits, ["aa", "ab"], base, AB, AB, 4, [0.0], [0.0], progress=False)
    assert best.decoding.beam_width == 0
    with pytest.raises(PersecError, match="only CTC"):
        search_decoding(logits, ["ab"], DecoderConfig(name="attn"), AB, AB, progress=False)


def test_history_cache_is_capped(monkeypatch):
    monkeypatch.setattr("persec.decoding.lm.CACHE_SIZE", 5)
    lm = CharNgramLM(["abba", "baab"], order=3, alphabet="ab")
    for history in ["", "a", "b", "aa", "ab", "ba", "bb", "aab", "abb"]:
        probs = lm.log_probs(history)
        assert len(lm._cache) <= 5
        assert sum(math.exp(x) for x in probs) == pytest.approx(1.0)
    assert lm.log_probs("ab") == lm.log_probs("bab")  # same last 2 characters, same answer


# --- the beam's k best and per-character confidences ----------------------------------


def test_beam_search_top_k_ranks_distinct_readings_best_first():
    rows = [[0.1, 0.6, 0.3], [0.5, 0.2, 0.3], [0.2, 0.3, 0.5]]
    sums = _path_sums(rows)
    found = ctc_beam_search(_logits(rows), TOKENIZER, beam_width=8, top_k=3)[0]
    assert [t for t, _ in found] == sorted(sums, key=sums.get, reverse=True)[:3]
    for text, p in found:
        assert p == pytest.approx(sums[text])
    assert found[0] == ctc_beam_decode(_logits(rows), TOKENIZER, beam_width=8)[0]


def test_char_confidences_are_the_aligned_frames_best_probabilities():
    # a a _ b b: "ab" takes frames 0-1 for a (best 0.9) and 3-4 for b (best 0.8).
    rows = [[0.05, 0.9, 0.05], [0.3, 0.6, 0.1], [0.8, 0.1, 0.1], [0.2, 0.1, 0.7], [0.1, 0.1, 0.8]]
    logits = _logits(rows)[0]
    assert ctc_char_confidences(logits, "ab", TOKENIZER) == pytest.approx([0.9, 0.8])
    # "aa" needs a blank between the two a's: frame 0 (0.9), blank, then the best b
    # frame cannot be an a, so the second a gets frame 3 or 4 (0.1).
    assert ctc_char_confidences(logits, "aa", TOKENIZER) == pytest.approx([0.9, 0.1])
    assert ctc_char_confidences(logits, "", TOKENIZER) == []
    assert ctc_char_confidences(logits, "abc", TOKENIZER) is None  # c not in the charset
    # a _ a _ a uses every frame: the a's get frames 0, 2 (0.1) and 4 (0.1)
    assert ctc_char_confidences(logits, "aaa", TOKENIZER) == pytest.approx([0.9, 0.1, 0.1])
    assert ctc_char_confidences(logits, "aaaa", TOKENIZER) is None  # needs 7 frames
