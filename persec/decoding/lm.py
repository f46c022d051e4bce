"""The character n-gram language model that the CTC beam search
(:mod:`persec.decoding.beam`) fuses with the recognizer's output.

The language model is a word-level character n-gram: it scores a whole reading as one
word, ``^ r e a d i n g $``, so it knows how English words start, continue and end.
It is estimated from the most frequent ``wordfreq`` words (the list the renderer draws
from, inside the wheel, so nothing is downloaded) by interpolated absolute discounting
(Ney, Essen and Kneser 1994).
"""

from __future__ import annotations

import functools
import math
from collections import Counter, defaultdict
from collections.abc import Iterable

from persec.charset import STANDARD_CHARSET, Charset

BOS = "^"  # pads the context before a word's first character
EOS = "$"  # the word ends
CACHE_SIZE = 200_000  # histories whose distributions are kept (~60 MB at most)


class CharNgramLM:
    """Character n-gram model of single words, interpolated absolute discounting.

    ``p(c | h) = max(N(h, c) - D, 0) / N(h) + D * T(h) / N(h) * p(c | h')`` where ``h'``
    is ``h`` without its oldest character, ``N`` counts, ``T(h)`` is the number of
    distinct characters seen after ``h``, and the recursion ends in the uniform
    distribution over the alphabet and EOS. A history never seen falls back to ``h'``.

    Args:
        words: the training words (each counted once: a type model, so frequent
            function words do not dominate).
        order: n, the characters of history + 1 (``order=6``: 5 characters of history).
        discount: D in (0, 1).
        alphabet: the characters the model scores; words holding others are skipped.
    """

    def __init__(
        self, words: Iterable[str], order: int = 6, discount: float = 0.75, alphabet: str = ""
    ):
        if order < 1:
            raise ValueError(f"n-gram order must be >= 1, got {order}")
        if not 0.0 < discount < 1.0:
            raise ValueError(f"discount must be in (0, 1), got {discount}")
        words = list(words)
        self.alphabet = alphabet or "".join(sorted({c for w in words for c in w}))
        if BOS in self.alphabet or EOS in self.alphabet:
            raise ValueError(f"the alphabet may not hold {BOS!r} or {EOS!r}")
        self.order = order
        self.discount = discount
        self.symbols = self.alphabet + EOS
        self._index = {c: i for i, c in enumerate(self.symbols)}
        allowed = set(self.alphabet)
        grams: Counter[str] = Counter()
        pad = BOS * (order - 1)
        for w in words:
            if not w or not set(w) <= allowed:
                continue
            s = pad + w + EOS
            grams.update(s[i - n : i + 1] for i in range(order - 1, len(s)) for n in range(order))
        # history -> counts of the next symbol
        self._counts: dict[str, dict[str, int]] = defaultdict(dict)
        for gram, n in grams.items():
            self._counts[gram[:-1]][gram[-1]] = n
        self._counts = dict(self._counts)
        if not self._counts:
            raise ValueError("no word of the list is spelled in the alphabet")
        self._cache: dict[str, list[float]] = {}

    def log_probs(self, history: str) -> list[float]:
        """``log p(symbol | history)`` for each of :attr:`symbols` (the alphabet, then
        EOS). ``history`` is the word so far without padding; only its last
        ``order - 1`` characters matter."""
        h = (BOS * (self.order - 1) + history)[len(history) :] if self.order > 1 else ""
        cached = self._cache.get(h)
        if cached is not None:
            return cached
        probs = [1.0 / len(self.symbols)] * len(self.symbols)
        for n in range(self.order):  # shortest history first
            counts = self._counts.get(h[len(h) - n :] if n else "")
            if counts is None:  # a longer history holds this one, so it is unseen too
                break
            total = sum(counts.values())
            backoff = self.discount * len(counts) / total
            probs = [backoff * p for p in probs]
            for c, k in counts.items():
                probs[self._index[c]] += (k - self.discount) / total
        out = [math.log(p) for p in probs]
        if len(self._cache) >= CACHE_SIZE:  # a long-running reader must not grow forever
            self._cache.clear()
        self._cache[h] = out
        return out

    def score(self, word: str) -> float:
        """``log p(word $)``: the log-probability of the whole word, its end included."""
        total = 0.0
        for i, c in enumerate([*word, EOS]):
            if c != EOS and c not in self._index:
                raise ValueError(f"{c!r} is not in the model's alphabet")
            total += self.log_probs(word[:i])[self._index[c]]
        return total


@functools.lru_cache(maxsize=4)
def english_word_lm(words: int = 50_000, order: int = 6, discount: float = 0.75) -> CharNgramLM:
    """The character LM of the ``words`` most frequent ``wordfreq`` English words,
    case-folded to 36 lowercase alphanumerics, slurs and explicit profanity left out
    (:mod:`persec.data.render.blocklist`; built once per process, ~2 s)."""
    from persec.data.render.words import load_vocabulary

    charset = Charset.from_spec(STANDARD_CHARSET)
    vocab, _ = load_vocabulary("wordfreq", words, 1.0, charset, 25)
    return CharNgramLM(vocab, order=order, discount=discount, alphabet="".join(charset.chars))
