"""Decoding settings, apart from the architecture: how a model turns logits into text.

The settings are the decoding fields of a decoder config (``beam_width``,
``lm_weight``, ``length_bonus``, ``lm_words``, ``lm_order`` and the head's ``name``);
any object with them will do (:class:`DecodingSettings`), so this layer needs nothing
from the models above it. A CTC model decodes greedily or by a prefix beam search fused
with a character language model; other heads decode greedily.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol, TypeVar

import torch

from persec.charset import CTCTokenizer
from persec.decoding.beam import ctc_beam_decode
from persec.decoding.greedy import ctc_greedy_decode
from persec.decoding.lm import CharNgramLM, english_word_lm


class DecodingSettings(Protocol):
    """The fields decoding reads (those of ``persec.models.decoders.base.DecoderConfig``)."""

    name: str
    beam_width: int
    lm_weight: float
    length_bonus: float
    lm_words: int
    lm_order: int


S = TypeVar("S", bound=DecodingSettings)


def decode_ctc(
    logits: torch.Tensor, tokenizer: CTCTokenizer, cfg: DecodingSettings
) -> list[tuple[str, float]]:
    """CTC logits (B, T, N+1) → ``[(text, confidence)]`` as ``cfg`` says: greedy
    (:func:`ctc_greedy_decode`) when ``cfg.beam_width`` is 0, else
    :func:`~persec.decoding.beam.ctc_beam_decode` with its language model, if any."""
    if cfg.beam_width == 0:
        return ctc_greedy_decode(logits, tokenizer)
    return ctc_beam_decode(
        logits, tokenizer, cfg.beam_width, decoding_lm(cfg), cfg.lm_weight, cfg.length_bonus
    )


# The decoder config fields that say how to decode, not what the weights are
DECODING_FIELDS = ("beam_width", "lm_weight", "length_bonus", "lm_words", "lm_order")


# --------------------------------------------------------------------------- factory
def check_decoding(cfg: DecodingSettings) -> None:
    """Raise ValueError, naming the field, for decoding settings that cannot work."""
    if cfg.beam_width < 0:
        raise ValueError(f"decoder.beam_width must be >= 0, got {cfg.beam_width}")
    uses_search = cfg.beam_width > 0 or cfg.lm_weight != 0.0 or cfg.length_bonus != 0.0
    if uses_search and cfg.name != "ctc":
        raise ValueError(
            "decoder.beam_width, lm_weight and length_bonus are for the ctc decoder; "
            f"the {cfg.name} decoder decodes greedily (set them to 0)"
        )
    if cfg.lm_weight > 0 and (cfg.lm_words < 1 or cfg.lm_order < 1):
        raise ValueError(
            f"decoder.lm_words and lm_order must be >= 1, got {cfg.lm_words} and {cfg.lm_order}"
        )
    if (cfg.lm_weight != 0.0 or cfg.length_bonus != 0.0) and cfg.beam_width == 0:
        raise ValueError("decoder.lm_weight and length_bonus need decoder.beam_width >= 1")
    if cfg.lm_weight < 0:
        raise ValueError(f"decoder.lm_weight must be >= 0, got {cfg.lm_weight}")


def greedy_decoding(cfg: S) -> S:
    """``cfg`` with its beam search, language model and length bonus turned off."""
    return replace(cfg, beam_width=0, lm_weight=0.0, length_bonus=0.0)


def decoding_lm(cfg: DecodingSettings) -> CharNgramLM | None:
    """The language model ``cfg`` fuses into its beam search, or None (built once per
    process and setting)."""
    return english_word_lm(cfg.lm_words, cfg.lm_order) if cfg.lm_weight > 0 else None


def describe_decoding(cfg: DecodingSettings) -> str:
    """How ``cfg`` decodes, in a few words (for reports and logs)."""
    if cfg.beam_width == 0:
        return "greedy"
    text = f"beam search ({cfg.beam_width} beams)"
    if cfg.lm_weight > 0:
        return text + (
            f" + character {cfg.lm_order}-gram LM of {cfg.lm_words:,} English words "
            f"(weight {cfg.lm_weight:g}, length bonus {cfg.length_bonus:g})"
        )
    return text + (f" (length bonus {cfg.length_bonus:g})" if cfg.length_bonus else "")
