"""Greedy decoding of logits: pure functions, so an exported model decodes as the PyTorch one does."""

from __future__ import annotations

import math

import torch

from persec.charset import AttentionTokenizer, CTCTokenizer


def ctc_greedy_decode(logits: torch.Tensor, tokenizer: CTCTokenizer) -> list[tuple[str, float]]:
    """Greedy (best-path) CTC decoding with a confidence per word.

    Confidence: the product, over emitted characters, of the highest probability
    within that character's run of frames. An empty prediction gets the probability
    of the all-blank path (the product of the blank probabilities over all frames)
    rather than 1.0, so one doubtful frame lowers it (labels are never empty).
    A pure function of the logits, so exported models decode the same way.

    Args:
        logits: (B, T, N+1), class 0 the blank.
        tokenizer: the charset's CTC tokenizer.
    """
    probs = logits.detach().float().softmax(-1)
    best_p, best_id = probs.max(-1)  # (B, T)
    out = []
    for ids, ps in zip(best_id.tolist(), best_p.tolist(), strict=True):
        text, conf, prev, run_max = [], 1.0, CTCTokenizer.blank_id, 0.0
        for i, p in zip([*ids, CTCTokenizer.blank_id], [*ps, 0.0], strict=True):
            if i != prev and prev != CTCTokenizer.blank_id:  # a character run just ended
                text.append(tokenizer.charset.chars[prev - 1])
                conf *= run_max
            run_max = max(run_max, p) if i == prev else p
            prev = i
        if not text:
            conf = math.prod(ps)
        out.append(("".join(text), conf))
    return out


def attention_greedy_decode(
    logits: torch.Tensor, tokenizer: AttentionTokenizer
) -> list[tuple[str, float]]:
    """Argmax tokens up to the first EOS.

    Confidence: the product of the chosen tokens' probabilities, EOS included; a row
    with no EOS keeps every character and multiplies all its steps. A pure function
    of the logits, so exported models decode the same way.

    Args:
        logits: (B, L, N+1), class 0 EOS.
        tokenizer: the charset's attention tokenizer.
    """
    best_p, best_id = logits.detach().float().softmax(-1).max(-1)  # (B, L)
    out = []
    for ids, ps in zip(best_id.tolist(), best_p.tolist(), strict=True):
        n = ids.index(tokenizer.eos_id) + 1 if tokenizer.eos_id in ids else len(ids)
        out.append((tokenizer.decode(ids[:n]), math.prod(ps[:n])))
    return out
