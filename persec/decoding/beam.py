"""CTC prefix beam search, optionally fused with a character language model.

Shallow fusion, as in Hannun et al. 2014, ranks a prefix ``y`` by::

    log p_ctc(y | x) + lm_weight * log p_lm(y) + length_bonus * |y|

and adds ``lm_weight * log p_lm($ | y)`` (the word ends here) when the final reading is
chosen. The confidence reported is ``p_ctc(y | x)``, summed over its alignments, so it
stays comparable between decodings with and without the language model.

A trained recognizer's frames are mostly blank: on the shipped model's IIIT5K crops a
frame offers on average 0.35 characters above the pruning threshold. A frame that offers
none cannot create or merge a prefix, so it only moves each beam's probability mass, and
the search does that in one short pass instead of the full extend-merge-prune step; the
result is the same to the last bit (tested against the full step). Pure functions of the
logits: the ONNX runtime wrapper decodes with the same code.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from persec.charset import CTCTokenizer

if TYPE_CHECKING:
    from persec.decoding.lm import CharNgramLM

NEG_INF = -math.inf


def _logaddexp(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
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


class _Scorer:
    """What an extension adds to a prefix's fused score: the length bonus and the LM's
    weighted log-probability of the new character after the prefix's LM history.

    Characters the LM does not know (e.g. punctuation, for a 36-character LM) are scored
    by their lowercase form, or else as uniform over the LM's symbols; in an LM history
    such a character is spelled as itself, which the LM never saw, so it backs off past it.
    """

    def __init__(self, chars: str, lm: CharNgramLM | None, lm_weight: float, length_bonus: float):
        self.lm = lm if lm is not None and lm_weight != 0.0 else None
        self.lm_weight = lm_weight
        self.length_bonus = length_bonus
        self.lm_ids: list[int | None] = [None] * (len(chars) + 1)  # per class id
        self.lm_chars = ["", *chars]
        self.uniform = 0.0
        if self.lm is not None:
            self.uniform = -math.log(len(self.lm.symbols))
            lookup = {c: i for i, c in enumerate(self.lm.symbols[:-1])}
            for i, c in enumerate(chars, start=1):
                self.lm_ids[i] = lookup.get(c, lookup.get(c.lower()))
                if self.lm_ids[i] is not None:
                    self.lm_chars[i] = self.lm.symbols[self.lm_ids[i]]

    def extension(self, history: list[float] | None, c: int) -> float:
        """The added score of class ``c`` given the LM's ``history`` distribution."""
        if self.lm is None or history is None:
            return self.length_bonus
        j = self.lm_ids[c]
        return self.length_bonus + self.lm_weight * (history[j] if j is not None else self.uniform)

    def end(self, text: str) -> float:
        """The weighted log-probability that the word ends after ``text``."""
        return self.lm_weight * self.lm.log_probs(text)[-1] if self.lm is not None else 0.0


def _search_image(
    rows: list[list[float]],
    frame_cands: list[list[tuple[int, float]]],
    beam_width: int,
    scorer: _Scorer,
    top_k: int,
    shortcut: bool = True,
) -> list[tuple[tuple[int, ...], float]]:
    """The prefix beam search over one image: ``rows`` (T, N+1) log-probabilities,
    ``frame_cands`` per frame the (class, log-prob) pairs allowed to extend a prefix.
    Returns the ``top_k`` final prefixes (class ids) with ``log p_ctc``, best first.
    ``shortcut=False`` takes the full step on frames without candidates too (tests)."""
    blank = CTCTokenizer.blank_id
    lm = scorer.lm
    lae = _logaddexp
    # prefix -> [log p(prefix, ends in blank), log p(.., ends in a char),
    #            fused extra score (LM + length bonus so far), LM history]
    beams: dict[tuple[int, ...], list] = {(): [0.0, NEG_INF, 0.0, ""]}
    for row, cands in zip(rows, frame_cands, strict=True):
        b = row[blank]
        if shortcut and not cands:  # no new prefix: blank or repeat keep each one, nothing merges
            beams = {
                p: [lae(pb, pnb) + b, pnb + row[p[-1]] if p else NEG_INF, extra, text]
                for p, (pb, pnb, extra, text) in beams.items()
            }
            continue
        nxt: dict[tuple[int, ...], list] = {}
        for prefix, (pb, pnb, extra, text) in beams.items():
            total = lae(pb, pnb)
            stay = nxt.get(prefix)
            if stay is None:
                stay = nxt[prefix] = [NEG_INF, NEG_INF, extra, text]
            stay[0] = lae(stay[0], total + b)
            if prefix:  # repeating the last character without a blank keeps the prefix
                stay[1] = lae(stay[1], pnb + row[prefix[-1]])
            history = None
            for c, lp in cands:
                key = (*prefix, c)
                ext = nxt.get(key)
                if ext is None:
                    if lm is not None and history is None:
                        history = lm.log_probs(text)
                    add = scorer.extension(history, c)
                    ext = nxt[key] = [NEG_INF, NEG_INF, extra + add, text + scorer.lm_chars[c]]
                # after the same character, only a blank-separated repeat is a new one
                src = pb if prefix and prefix[-1] == c else total
                ext[1] = lae(ext[1], src + lp)
        if len(nxt) > beam_width:
            ranked = sorted(nxt.items(), key=lambda kv: lae(kv[1][0], kv[1][1]) + kv[1][2])
            nxt = dict(ranked[-beam_width:])
        beams = nxt

    def final(item: tuple[tuple[int, ...], list]) -> float:
        _, (pb, pnb, extra, text) = item
        return lae(pb, pnb) + extra + scorer.end(text)

    ranked = sorted(beams.items(), key=final, reverse=True)[:top_k]
    return [(prefix, lae(pb, pnb)) for prefix, (pb, pnb, _, _) in ranked]


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
    well under a millisecond per crop for a trained model).

    Args:
        logits: (B, T, N+1), class 0 the blank.
        tokenizer: the charset's CTC tokenizer.
        beam_width: prefixes kept per frame.
        lm: the character LM (:class:`~persec.decoding.lm.CharNgramLM`), or None for
            plain prefix beam search.
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
    scorer = _Scorer(chars, lm, lm_weight, length_bonus)
    log_probs = logits.detach().float().log_softmax(-1).cpu()  # (B, T, N+1)
    k = min(beam_width, log_probs.size(-1))
    top_lp, top_id = log_probs.topk(k, dim=-1)  # (B, T, k), most likely first
    allowed = (top_id != CTCTokenizer.blank_id) & (top_lp >= min_log_prob)  # (B, T, k)
    cands: list[list[list[tuple[int, float]]]] = [
        [[] for _ in range(log_probs.size(1))] for _ in range(log_probs.size(0))
    ]  # per image, per frame: (class, log-prob), most likely first
    where = allowed.nonzero().tolist()  # row-major, as boolean indexing orders values
    for (image, t, _), c, lp in zip(
        where, top_id[allowed].tolist(), top_lp[allowed].tolist(), strict=True
    ):
        cands[image][t].append((c, lp))
    out = []
    for rows, frame_cands in zip(log_probs.tolist(), cands, strict=True):
        found = _search_image(rows, frame_cands, beam_width, scorer, top_k)
        out.append([("".join(chars[i - 1] for i in prefix), math.exp(lp)) for prefix, lp in found])
    return out
