"""The word filter: slurs never render and the language model never learns them, while the
ordinary words of the profanity list stay."""

from __future__ import annotations

import numpy as np

from persec.charset import Charset
from persec.data.render.blocklist import allowed_words, blocked_words, is_blocked, listed_words
from persec.data.render.words import WordConfig, WordSampler, load_vocabulary
from persec.decoding.lm import CharNgramLM, english_word_lm

# A known slur, spelled in two pieces so that a search of the sources for it finds this
# file only where it is assembled.
SLUR = "nig" + "ger"
LOWER = Charset.from_spec("36_lowercase")


def test_slurs_blocked_ordinary_words_kept():
    assert is_blocked(SLUR) and is_blocked(SLUR.upper()) and is_blocked("f" + "uck")
    for word in ("stroke", "vodka", "gay", "dick", "god", "kill", "hello"):
        assert not is_blocked(word), word
    # Every allowed word is one the list holds: the allow-list has no stale entries.
    assert allowed_words() <= listed_words() and not blocked_words() & allowed_words()
    assert is_blocked("sonofabitch") and "son-of-a-bitch" in listed_words()


def test_wordfreq_vocabulary_filtered():
    raw, _ = load_vocabulary("wordfreq", 50_000, 0.5, LOWER, 25, filter_profanity=False)
    kept, cdf = load_vocabulary("wordfreq", 50_000, 0.5, LOWER, 25)
    assert SLUR in raw and SLUR not in kept
    assert not [w for w in kept if is_blocked(w)]
    assert {"stroke", "vodka"} <= set(kept)
    assert len(cdf) == len(kept) and abs(cdf[-1] - 1.0) < 1e-9
    assert 0 < len(raw) - len(kept) < 300  # slurs and profanity, not a tenth of English


def test_slur_never_renders(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text(f"hello\n{SLUR}\nworld\n", encoding="utf-8")
    config = WordConfig(word_list=str(words), p_word=1.0, p_random=0.0, p_number=0.0)
    rng = np.random.default_rng(0)
    drawn = {WordSampler(config, "36_lowercase")(rng).lower() for _ in range(300)}
    assert drawn == {"hello", "world"}
    config.filter_profanity = False
    rng = np.random.default_rng(0)
    assert SLUR in {WordSampler(config, "36_lowercase")(rng).lower() for _ in range(300)}


def test_random_string_spelling_a_slur_is_drawn_again():
    # Random strings of 3 letters over a 3-letter alphabet spell "fag" 1 time in 27.
    config = WordConfig(p_word=0.0, p_random=1.0, p_number=0.0, random_length=(3, 3))
    sampler = WordSampler(config, Charset("afg"))
    rng = np.random.default_rng(0)
    drawn = [sampler(rng) for _ in range(2000)]
    assert "fag" not in drawn and len(set(drawn)) == 26


def test_language_model_gives_slur_no_mass_from_its_words():
    lm = english_word_lm()
    vocab, _ = load_vocabulary("wordfreq", 50_000, 1.0, LOWER, 25)
    taught = CharNgramLM([*vocab, SLUR], alphabet=lm.alphabet)
    # The slur's whole-word path was never counted: it scores far below a model that
    # learnt it, and near the score of a string never seen (only back-off mass).
    assert lm.score(SLUR) < taught.score(SLUR) - 5.0
    assert lm.score("stroke") > lm.score(SLUR) + 5.0
