"""Text sources for the word renderer: dictionary words, random strings and numbers.

Dictionary words come from ``wordfreq``'s English list (shipped inside the wheel),
the system word list (``/usr/share/dict/words``) or a user file. Real signage is not
running text, so sampling is *rank-flattened*: a word of frequency rank ``r`` (1-based)
is drawn with weight ``r ** -zipf_power``. With Zipf's law (frequency ~ 1/r),
``zipf_power=1`` reproduces corpus frequencies (``the`` ~5% of draws) and ``0`` is
uniform over the list; the default ``0.5`` keeps common words common while the tail
of the list still gets a fair share. Lists from files carry no ranks: uniform.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from persec.charset import Charset
from persec.data.render.blocklist import is_blocked
from persec.errors import PersecError

SYSTEM_WORDS = Path("/usr/share/dict/words")
# Punctuation that sticks to words on signs; used only when the charset holds it.
_AFFIXES = ".,!?:;'\"-"
_BRACKETS = ("()", "[]", '""', "''")
# Integers of 1..7 digits: short ones most common.
_DIGIT_CDF = np.cumsum([0.2, 0.25, 0.2, 0.15, 0.1, 0.05, 0.05])


@dataclass
class WordConfig:
    """Where rendered text comes from. Source and case weights need not sum to 1.

    Attributes:
        word_list: ``"wordfreq"`` (English, frequency-ranked), ``"system"``
            (``/usr/share/dict/words``) or a path to a UTF-8 file, one word per line.
        vocab_size: how many of the most frequent ``wordfreq`` words to use.
        zipf_power: rank-flattening exponent for ``wordfreq`` (1 = corpus frequency,
            0 = uniform).
        p_word: weight of dictionary words.
        p_random: weight of random strings over the charset.
        p_number: weight of numbers (integers, years, prices, times, units...).
        random_length: inclusive length range of random strings.
        p_lower: weight of ``lowercase`` words.
        p_upper: weight of ``UPPERCASE`` words (common on signs).
        p_title: weight of ``Titlecase`` words.
        p_mixed: weight of ``rAnDoM`` case.
        p_punctuation: chance to attach punctuation to a word (only characters the
            charset holds, e.g. with ``94_full``).
        line_words: inclusive range of strings per sample, joined by one space: (1, 1)
            renders single words; more renders text lines (the charset must hold the
            space, and ``max_length`` cuts a line at a word boundary).
        filter_profanity: [ours] never render a slur or explicit profanity
            (:mod:`persec.data.render.blocklist`): such words leave the word list, and a
            random string that spells one is drawn again.
    """

    word_list: str = "wordfreq"
    vocab_size: int = 50000
    zipf_power: float = 0.5
    p_word: float = 0.75
    p_random: float = 0.1
    p_number: float = 0.15
    random_length: tuple[int, int] = (1, 12)
    p_lower: float = 0.35
    p_upper: float = 0.4
    p_title: float = 0.2
    p_mixed: float = 0.05
    p_punctuation: float = 0.1
    line_words: tuple[int, int] = (1, 1)
    filter_profanity: bool = True


def _normalized_weights(values: list[float], what: str) -> np.ndarray:
    w = np.asarray(values, dtype=np.float64)
    if (w < 0).any() or w.sum() <= 0:
        raise PersecError(f"{what} weights must be >= 0 and not all 0, got {values}")
    return np.cumsum(w / w.sum())


@functools.lru_cache(maxsize=8)
def load_vocabulary(
    word_list: str,
    vocab_size: int,
    zipf_power: float,
    charset: Charset,
    max_length: int,
    filter_profanity: bool = True,
) -> tuple[tuple[str, ...], np.ndarray]:
    """The usable words of a list and their cumulative sampling weights.

    Words are NFKD-folded to ASCII (for ASCII charsets) and case-folded for
    single-case charsets; a word that still holds a character outside the charset,
    or is longer than ``max_length``, is dropped, and so, with ``filter_profanity``,
    is a blocked word (:func:`~persec.data.render.blocklist.is_blocked`).
    Cached per process, so each worker builds it once.

    Returns:
        ``(words, cdf)`` with ``cdf[-1] == 1``.
    """
    ranked = word_list == "wordfreq"
    if ranked:
        import wordfreq

        raw = wordfreq.top_n_list("en", vocab_size)
    else:
        path = SYSTEM_WORDS if word_list == "system" else Path(word_list)
        try:
            raw = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError as e:
            raise PersecError(f"cannot read word list {path}: {e}") from e
    words: list[str] = []
    seen: set[str] = set()
    for w in raw:
        w = w.strip()
        if not w or any(c.isspace() for c in w):
            continue
        w = charset.normalize(w)
        if filter_profanity and is_blocked(w):
            continue
        if w and w not in seen and len(w) <= max_length and all(c in charset for c in w):
            seen.add(w)
            words.append(w)
    if not words:
        raise PersecError(f"word list {word_list!r} holds no word within charset {charset.name}")
    if ranked:
        weights = np.arange(1, len(words) + 1, dtype=np.float64) ** -zipf_power
    else:
        weights = np.ones(len(words))
    return tuple(words), np.cumsum(weights / weights.sum())


class WordSampler:
    """Draws the text to render; deterministic given the ``np.random.Generator`` passed in.

    Every string has length ``1..max_length`` and its label,
    ``charset.normalize(text)``, holds only charset characters. For a mixed-case
    charset the label is the text itself; a single-case charset (``36_lowercase``)
    still gets UPPER and Title case text, labelled in its own case.

    Args:
        config: source and case proportions.
        charset: a preset name, charset file or :class:`Charset` (default ``62_mixed``).
        max_length: longest string produced.
    """

    def __init__(
        self,
        config: WordConfig | None = None,
        charset: str | Charset = "62_mixed",
        max_length: int = 25,
    ):
        self.config = config or WordConfig()
        self.charset = Charset.from_spec(charset)
        if max_length < 1:
            raise PersecError(f"max_length must be >= 1, got {max_length}")
        self.max_length = max_length
        c = self.config
        self._source_cdf = _normalized_weights([c.p_word, c.p_random, c.p_number], "source")
        self._case_cdf = _normalized_weights([c.p_lower, c.p_upper, c.p_title, c.p_mixed], "case")
        lo, hi = c.random_length
        if not 1 <= lo <= hi:
            raise PersecError(f"random_length must satisfy 1 <= lo <= hi, got {c.random_length}")
        self._alphabet = [ch for ch in self.charset.chars if ch.isalnum()] or list(
            self.charset.chars
        )
        # What may be drawn: characters whose normalised form is in the charset.
        cased = {v for ch in self.charset.chars for v in (ch, ch.lower(), ch.upper())}
        self.drawable = frozenset(
            ch for ch in cased if len(ch) == 1 and self.charset.normalize(ch) in self.charset
        ) | ({" "} if self.charset.has_space else set())
        lo, hi = c.line_words
        if not 1 <= lo <= hi:
            raise PersecError(f"line_words must satisfy 1 <= lo <= hi, got {c.line_words}")
        if hi > 1 and " " not in self.drawable:
            raise PersecError(
                "line_words renders text lines, whose words are separated by spaces, but "
                "the charset has no space: use a charset file with a <space> line"
            )
        self._affixes = [ch for ch in _AFFIXES if ch in self.drawable]
        self._brackets = [b for b in _BRACKETS if all(ch in self.drawable for ch in b)]

    @property
    def vocabulary(self) -> tuple[str, ...]:
        """The dictionary words in use (loaded on first access)."""
        return self._vocab()[0]

    def _vocab(self) -> tuple[tuple[str, ...], np.ndarray]:
        c = self.config
        return load_vocabulary(
            c.word_list,
            c.vocab_size,
            c.zipf_power,
            self.charset,
            self.max_length,
            c.filter_profanity,
        )

    def sample(self, rng: np.random.Generator) -> str:
        """One string: a cased word, a random string or a number (drawn again while
        it spells a blocked word, with ``filter_profanity``); with ``line_words``,
        several of them joined by spaces."""
        lo, hi = self.config.line_words
        if hi == 1:
            return self._word(rng)
        line = self._word(rng)
        for _ in range(int(rng.integers(lo, hi + 1)) - 1):
            word = self._word(rng)
            if len(line) + 1 + len(word) > self.max_length:
                break
            line = f"{line} {word}"
        return line

    def _word(self, rng: np.random.Generator) -> str:
        while True:
            text = self._draw(rng)
            if not (self.config.filter_profanity and is_blocked(text)):
                return text

    def _draw(self, rng: np.random.Generator) -> str:
        source = int(np.searchsorted(self._source_cdf, rng.random(), side="right"))
        if source == 0 and self.config.p_word > 0:
            words, cdf = self._vocab()
            word = words[min(int(np.searchsorted(cdf, rng.random(), side="right")), len(words) - 1)]
            text = self._punctuate(self._case(word, rng), rng)
        elif source == 1:
            lo, hi = self.config.random_length
            n = int(rng.integers(lo, hi + 1))
            text = "".join(self._alphabet[i] for i in rng.integers(0, len(self._alphabet), n))
        else:
            text = self._number(rng)
        text = "".join(ch for ch in text if ch in self.drawable)
        # Filtering can only shorten; an emptied string falls back to one digit/letter.
        return text[: self.max_length] or self._alphabet[int(rng.integers(len(self._alphabet)))]

    __call__ = sample

    def _case(self, word: str, rng: np.random.Generator) -> str:
        kind = int(np.searchsorted(self._case_cdf, rng.random(), side="right"))
        if kind == 0:
            return word.lower()
        if kind == 1:
            return word.upper()
        if kind == 2:
            return word[:1].upper() + word[1:].lower()
        flips = rng.random(len(word)) < 0.5
        return "".join(ch.upper() if f else ch.lower() for ch, f in zip(word, flips, strict=True))

    def _punctuate(self, word: str, rng: np.random.Generator) -> str:
        if not self._affixes or rng.random() >= self.config.p_punctuation:
            return word
        if self._brackets and rng.random() < 0.2:
            left, right = self._brackets[int(rng.integers(len(self._brackets)))]
            return left + word + right
        mark = self._affixes[int(rng.integers(len(self._affixes)))]
        return mark + word if mark in "'\"" and rng.random() < 0.5 else word + mark

    def _number(self, rng: np.random.Generator) -> str:
        kind = int(rng.integers(0, 8))
        if kind <= 2:  # plain integer
            digits = 1 + int(np.searchsorted(_DIGIT_CDF, rng.random(), side="right"))
            first = str(int(rng.integers(1, 10)))
            return first + "".join(str(d) for d in rng.integers(0, 10, digits - 1))
        if kind == 3:  # year
            return str(int(rng.integers(1900, 2036)))
        if kind == 4:  # price
            whole = int(rng.integers(0, 1000))
            cents = f".{int(rng.integers(0, 100)):02d}" if rng.random() < 0.6 else ""
            return ("$" if rng.random() < 0.5 else "") + f"{whole}{cents}"
        if kind == 5:  # time, date (when the charset draws "/") or phone-like
            r = rng.random()
            if r < 0.5:
                return f"{int(rng.integers(0, 24))}:{int(rng.integers(0, 60)):02d}"
            if r < 0.75 and "/" in self.drawable:
                day, month = int(rng.integers(1, 29)), int(rng.integers(1, 13))
                year = int(rng.integers(1950, 2036))
                sep = "/" if rng.random() < 0.6 else ".-"[int(rng.integers(2))]
                year_text = str(year) if rng.random() < 0.7 else f"{year % 100:02d}"
                return f"{day:02d}{sep}{month:02d}{sep}{year_text}"
            return f"{int(rng.integers(100, 1000))}-{int(rng.integers(0, 10000)):04d}"
        if kind == 6:  # ordinal
            n = int(rng.integers(1, 200))
            last = 0 if n % 100 in (11, 12, 13) else n % 10
            suffix = {1: "st", 2: "nd", 3: "rd"}.get(last, "th")
            return str(n) + (suffix.upper() if rng.random() < 0.3 else suffix)
        units = ["km", "kg", "mm", "cm", "m", "g", "ml", "mph", "%", "MB", "GB", "V", "W"]
        return str(int(rng.integers(1, 1000))) + units[int(rng.integers(len(units)))]
