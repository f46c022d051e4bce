"""Per-character confidences of a CTC reading, by forced alignment.

The reading (whichever search chose it) is aligned to the frames by Viterbi over the
usual blank-interleaved label sequence ``_ c1 _ c2 _ ... cL _``; a character's
confidence is the highest probability it has on a frame the best alignment gives it.
For a greedy reading that is exactly the per-run maximum
:func:`~persec.decoding.greedy.ctc_greedy_decode` multiplies into the word confidence.
"""

from __future__ import annotations

import numpy as np
import torch

from persec.charset import CTCTokenizer


def ctc_char_confidences(
    logits: torch.Tensor, text: str, tokenizer: CTCTokenizer
) -> list[float] | None:
    """One probability per character of ``text`` (as the tokenizer spells it).

    Args:
        logits: (T, N+1) of one image, class 0 the blank.
        text: a reading of it.
        tokenizer: the charset's CTC tokenizer.

    Returns:
        ``len(text)`` probabilities, or None when ``text`` cannot be aligned (a
        character outside the charset, or more frames needed than there are).
    """
    chars = tokenizer.charset.chars
    index = {c: i + 1 for i, c in enumerate(chars)}
    if any(c not in index for c in text):
        return None
    if not text:
        return []
    log_probs = logits.detach().float().log_softmax(-1).cpu().numpy()  # (T, N+1)
    labels = [index[c] for c in text]
    ext = np.zeros(2 * len(labels) + 1, dtype=np.int64)  # blank-interleaved, (S,)
    ext[1::2] = labels
    s, t = len(ext), log_probs.shape[0]
    repeats = sum(a == b for a, b in zip(labels, labels[1:], strict=False))
    if len(labels) + repeats > t:
        return None
    emit = log_probs[:, ext]  # (T, S)
    # A state may come from itself, the one before, or (a character that differs from
    # the character two back) skip the blank between them.
    skip = np.zeros(s, dtype=bool)
    skip[3::2] = ext[3::2] != ext[1:-2:2]
    score = np.full(s, -np.inf)
    score[:2] = emit[0, :2]
    back = np.zeros((t, s), dtype=np.int8)  # 0: stay, 1: from s-1, 2: from s-2
    for frame in range(1, t):
        stay = score
        step = np.concatenate([[-np.inf], score[:-1]])
        jump = np.where(skip, np.concatenate([[-np.inf, -np.inf], score[:-2]]), -np.inf)
        moves = np.stack([stay, step, jump])  # (3, S)
        back[frame] = moves.argmax(0)
        score = moves.max(0) + emit[frame]
    state = s - 1 if score[s - 1] >= score[s - 2] else s - 2
    if not np.isfinite(score[state]):
        return None
    best = np.zeros(len(labels))
    for frame in range(t - 1, -1, -1):
        if state % 2:  # a character state
            best[state // 2] = max(best[state // 2], np.exp(emit[frame, state]))
        state -= int(back[frame, state])
    return best.tolist()
