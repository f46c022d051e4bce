"""The decoder registry, the config every head is built from, and decoding settings.

Every head takes ``memory`` (B, T, C) = ``Features.high`` and has one interface::

    logits = decoder(memory[, labels])       # (B, L, V)
    loss = decoder.loss(logits, labels)      # scalar, computed in fp32
    decoder.decode(logits)                   # [(text, confidence), ...]
    decoder.export_forward(memory)           # (B, L, V), a graph ONNX can hold
    decoder.export_info()                    # what the ONNX sidecar records
    decoder.set_decoding(cfg)                # how decode() decodes from now on

A head registers itself with :func:`register_decoder` (name, builder, tokenizer and
the greedy decoding an exported model uses); adding one is a module in this package
and its name in ``persec/models/decoders/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from persec.charset import Charset
from persec.decoding.settings import check_decoding
from persec.registry import Registry


@dataclass
class DecoderConfig:
    """Which recognition head to build.

    Attributes:
        name: ``ctc`` (BiLSTM + linear, CTC loss) or ``attn`` (autoregressive transformer).
        lstm_layers: CTC only; BiLSTM layers before the classifier (0 = linear only).
        hidden: CTC only; LSTM hidden size per direction.
        d_model: attention only; decoder width.
        heads: attention only; heads of self- and cross-attention.
        layers: attention only; decoder layers.
        mlp_ratio: attention only; MLP hidden size / d_model.
        dropout: attention only; dropout on residual branches.
        max_length: longest label (characters, EOS excluded) the attention decoder
            reads or writes; CTC reads up to T = W/4 frames.
        beam_width: CTC only; 0 decodes greedily (best path), N >= 1 runs a prefix
            beam search keeping N prefixes (:func:`~persec.decoding.beam.ctc_beam_decode`).
        lm_weight: CTC beam search only; weight of the character language model of
            English words fused into the search (0: no language model).
        length_bonus: CTC beam search only; added to a prefix's score per character.
        lm_words: CTC with ``lm_weight`` > 0; the language model is estimated from
            the ``lm_words`` most frequent ``wordfreq`` English words.
        lm_order: CTC with ``lm_weight`` > 0; the language model's n (``lm_order - 1``
            characters of history).
    """

    name: str = "ctc"
    lstm_layers: int = 2
    hidden: int = 256
    d_model: int = 256
    heads: int = 8
    layers: int = 2
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    max_length: int = 25
    beam_width: int = 0
    lm_weight: float = 0.0
    length_bonus: float = 0.0
    lm_words: int = 50_000
    lm_order: int = 6


@dataclass(frozen=True)
class DecoderSpec:
    """A registered head.

    Attributes:
        name: its ``model.decoder.name``.
        build: ``(cfg, in_dim, charset) -> nn.Module``.
        tokenizer: the tokenizer class of its classes (``tokenizer(charset)``).
        greedy_decode: ``(logits, tokenizer) -> [(text, confidence)]``, a pure function
            of the logits, so an exported model decodes as the PyTorch one does.
    """

    name: str
    build: Callable[[DecoderConfig, int, Charset], nn.Module]
    tokenizer: type
    greedy_decode: Callable[[torch.Tensor, object], list[tuple[str, float]]]


DECODERS: Registry[DecoderSpec] = Registry("decoder")


def register_decoder(spec: DecoderSpec) -> DecoderSpec:
    """Add a head to :data:`DECODERS` (a module of this package calls it on import)."""
    return DECODERS.register(spec.name, spec)


def decoder_spec(name: str) -> DecoderSpec:
    """The registered head called ``name``. Raises ValueError for an unknown one."""
    return DECODERS.get(name)


def build_decoder(cfg: DecoderConfig, in_dim: int, charset: Charset) -> nn.Module:
    """A decoder over memory of width ``in_dim``. Raises ValueError for an unknown name
    or decoding settings that cannot work."""
    spec = decoder_spec(cfg.name)
    check_decoding(cfg)
    return spec.build(cfg, in_dim, charset)
