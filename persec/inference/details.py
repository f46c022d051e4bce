"""Readings with their details: per-character confidences and the runner-up readings,
for people looking at one image at a time (``persec serve``'s page and API)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from persec.decoding.align import ctc_char_confidences
from persec.decoding.beam import ctc_beam_search
from persec.decoding.settings import decoding_lm
from persec.models.recognizer import Recognizer

PLAIN_BEAM = 10  # the beam width of the alternatives of a greedy CTC model


@dataclass
class DetailedReading:
    """One image's reading.

    Attributes:
        text: what ``persec read`` reads (the model's configured decoding).
        confidence: its confidence, as ``persec read`` prints it.
        char_confidences: one probability per character of ``text``: for CTC the best
            frame of the character in the forced alignment of ``text``
            (:mod:`persec.decoding.align`), for the attention decoder the probability
            of the step that wrote it.
        alternatives: up to ``top_k`` readings ``[text, p(text)]`` of the CTC beam search,
            best first (the model's own beam and language model; a greedy model's from a
            plain 10-beam search, so its first may differ from ``text``); none for the
            attention decoder, which decodes greedily.
    """

    text: str
    confidence: float
    char_confidences: list[float]
    alternatives: list[tuple[str, float]]

    def as_dict(self) -> dict:
        """The JSON form: alternatives as ``{"text", "confidence"}`` objects."""
        out = asdict(self)
        out["alternatives"] = [{"text": t, "confidence": c} for t, c in self.alternatives]
        return out


@torch.inference_mode()
def read_detailed(model: Recognizer, images: torch.Tensor, top_k: int = 5) -> list[DetailedReading]:
    """Read a preprocessed batch (B, C, H, W) with details (model in eval mode)."""
    device = next(model.parameters()).device
    logits = model(images.to(device)).float().cpu()  # (B, T or L, V)
    cfg = model.config.decoder
    tokenizer = model.decoder.tokenizer
    if cfg.name != "ctc":
        probs = logits.softmax(-1).max(-1).values  # (B, L)
        return [
            DetailedReading(text, conf, probs[i, : len(text)].tolist(), [])
            for i, (text, conf) in enumerate(model.decode(logits))
        ]
    if cfg.beam_width > 0:  # one search gives the reading and its runners-up
        found = ctc_beam_search(
            logits,
            tokenizer,
            cfg.beam_width,
            decoding_lm(cfg),
            cfg.lm_weight,
            cfg.length_bonus,
            top_k=min(top_k, cfg.beam_width),
        )
        readings = [alternatives[0] for alternatives in found]
    else:
        readings = model.decode(logits)
        found = ctc_beam_search(logits, tokenizer, max(PLAIN_BEAM, top_k), top_k=top_k)
    out = []
    for row, (text, conf), alternatives in zip(logits, readings, found, strict=True):
        chars = ctc_char_confidences(row, text, tokenizer)
        out.append(DetailedReading(text, conf, chars or [conf] * len(text), alternatives))
    return out
