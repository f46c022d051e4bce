"""CTC prefix beam search, optionally fused with a character n-gram language model.

The language model is a word-level character n-gram: it scores a whole reading as one
word, ``^ r e a d i n g $``, so it knows how English words start, continue and end.
It is estimated from the most frequent ``wordfreq`` words (the list the renderer draws
from, inside the wheel, so nothing is downloaded) by interpolated absolute discounting
(Ney, Essen and Kneser 1994). Shallow fusion, as in Hannun et al. 2014, ranks a prefix
``y`` by::

    log p_ctc(y | x) + lm_weight * log p_lm(y) + length_bonus * |y|

and adds ``lm_weight * log p_lm($ | y)`` (the word ends here) when the final reading is
chosen. The confidence reported is ``p_ctc(y | x)``, summed over its alignments, so it
stays comparable between decodings with and without the language model.

Pure functions of the logits: the ONNX runtime wrapper decodes with the same code.
"""

from __future__ import annotations

import functools
import math
from collections import Counter, defaultdict
from collections.abc import Iterable

import torch

from persec.charset import STANDARD_CHARSET, Charset, CTCTokenizer

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


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    return max(a, b) + math.log1p(math.exp(-abs(a - b)))


def ctc_beam_decode(
    logits: torch.Tensor,
    tokenizer: CTCTokenizer,
    beam_width: int = 10,
    lm: CharNgramLM | None = None,
    lm_weight: float = 0.0,
    length_bonus: float = 0.0,
    min_log_prob: float = -8.0,
) -> list[tuple[str, float]]:
    """The best reading of each image by :func:`ctc_beam_search` (same arguments):
    ``[(text, p_ctc(text))]``."""
    found = ctc_beam_search(
        logits, tokenizer, beam_width, lm, lm_weight, length_bonus, min_log_prob, top_k=1
    )
    return [readings[0] for readings in found]


def ctc_beam_search(
    logits: torch.Tensor,
    tokenizer: CTCTokenizer,
    beam_width: int = 10,
    lm: CharNgramLM | None = None,
    lm_weight: float = 0.0,
    length_bonus: float = 0.0,
    min_log_prob: float = -8.0,
    top_k: int = 1,
) -> list[list[tuple[str, float]]]:
    """CTC prefix beam search with optional shallow fusion of a character LM.

    Each frame extends every beam with the ``beam_width`` most likely characters whose
    log-probability there is at least ``min_log_prob`` (a character that unlikely in a
    frame practically never wins a beam, and skipping it keeps this pure-Python search
    to 1-3 ms per crop).
    Characters the LM does not know (e.g. punctuation, for a 36-character LM) are
    scored by their lowercase form, or else as uniform over the LM's symbols.

    Args:
        logits: (B, T, N+1), class 0 the blank.
        tokenizer: the charset's CTC tokenizer.
        beam_width: prefixes kept per frame.
        lm: the character LM, or None for plain prefix beam search.
        lm_weight: the LM's weight in the ranking (0: LM unused).
        length_bonus: added per character, against the LM's bias to short readings.
        min_log_prob: per-frame pruning of characters (-8: p < 3.4e-4).
        top_k: readings returned per image, best first (at most ``beam_width``).

    Returns:
        per image, its ``top_k`` best final beams as ``[(text, p_ctc(text))]``, ranked
        by the fused score (the first is what :func:`ctc_beam_decode` returns).
    """
    if beam_width < 1 or top_k < 1:
        raise ValueError(f"beam width and top_k must be >= 1, got {beam_width} and {top_k}")
    chars = tokenizer.charset.chars
    use_lm = lm is not None and lm_weight != 0.0
    # Per class id: lm_ids, the LM symbol it is scored as (None: uniform), and lm_chars,
    # its spelling in an LM history (that symbol, or else the character itself, which
    # the LM never saw, so it backs off past it).
    lm_ids: list[int | None] = [None] * (len(chars) + 1)
    lm_chars = ["", *chars]
    uniform = 0.0
    if use_lm:
        assert lm is not None
        uniform = -math.log(len(lm.symbols))
        lookup = {c: i for i, c in enumerate(lm.symbols[:-1])}
        for i, c in enumerate(chars, start=1):
            lm_ids[i] = lookup.get(c, lookup.get(c.lower()))
            if lm_ids[i] is not None:
                lm_chars[i] = lm.symbols[lm_ids[i]]
    blank = CTCTokenizer.blank_id
    log_probs = logits.detach().float().log_softmax(-1).cpu()
    k = min(beam_width, log_probs.size(-1))
    top_lp, top_id = log_probs.topk(k, dim=-1)
    out = []
    for lp_rows, cand_lps, cand_ids in zip(
        log_probs.tolist(), top_lp.tolist(), top_id.tolist(), strict=True
    ):
        # prefix (class ids) -> [log p(prefix, ends in blank), log p(.., ends in a char),
        #                        fused extra score (LM + length bonus so far), LM history]
        beams: dict[tuple[int, ...], list] = {(): [0.0, -math.inf, 0.0, ""]}
        for row, lps, ids in zip(lp_rows, cand_lps, cand_ids, strict=True):
            cands = [
                (c, lp) for c, lp in zip(ids, lps, strict=True) if c != blank and lp >= min_log_prob
            ]
            nxt: dict[tuple[int, ...], list] = {}
            for prefix, (pb, pnb, extra, text) in beams.items():
                total = _logaddexp(pb, pnb)
                stay = nxt.get(prefix)
                if stay is None:
                    stay = nxt[prefix] = [-math.inf, -math.inf, extra, text]
                stay[0] = _logaddexp(stay[0], total + row[blank])
                if prefix:  # repeating the last character without a blank keeps the prefix
                    stay[1] = _logaddexp(stay[1], pnb + row[prefix[-1]])
                history = None
                for c, lp in cands:
                    key = (*prefix, c)
                    ext = nxt.get(key)
                    if ext is None:
                        add = length_bonus
                        if use_lm:
                            assert lm is not None
                            if history is None:
                                history = lm.log_probs(text)
                            j = lm_ids[c]
                            add += lm_weight * (history[j] if j is not None else uniform)
                        ext = nxt[key] = [-math.inf, -math.inf, extra + add, text + lm_chars[c]]
                    # after the same character, only a blank-separated repeat is a new one
                    src = pb if prefix and prefix[-1] == c else total
                    ext[1] = _logaddexp(ext[1], src + lp)
            if len(nxt) > beam_width:
                ranked = sorted(
                    nxt.items(), key=lambda kv: _logaddexp(kv[1][0], kv[1][1]) + kv[1][2]
                )
                nxt = dict(ranked[-beam_width:])
            beams = nxt

        def final(item: tuple[tuple[int, ...], list]) -> float:
            _, (pb, pnb, extra, text) = item
            score = _logaddexp(pb, pnb) + extra
            if use_lm:
                assert lm is not None
                score += lm_weight * lm.log_probs(text)[-1]  # the word ends here
            return score

        ranked = sorted(beams.items(), key=final, reverse=True)[:top_k]
        out.append(
            [
                ("".join(chars[i - 1] for i in prefix), math.exp(_logaddexp(pb, pnb)))
                for prefix, (pb, pnb, _, _) in ranked
            ]
        )
    return out
