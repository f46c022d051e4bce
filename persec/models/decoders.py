"""Recognition heads over the encoder sequence: CTC and autoregressive attention.

Both take ``memory`` (B, T, C) = ``Features.high`` and share one interface::

    logits = decoder(memory[, labels])       # (B, L, V)
    loss = decoder.loss(logits, labels)      # scalar, computed in fp32
    decoder.decode(logits)                   # [(text, confidence), ...]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from persec.charset import AttentionTokenizer, Charset, CTCTokenizer
from persec.models.attention import sdpa
from persec.models.lm import CharNgramLM, ctc_beam_decode, english_word_lm
from persec.precision import cpu_bf16_support

DECODER_NAMES = ("ctc", "attn")
# DecoderConfig fields that say how to decode, not what the weights are
DECODING_FIELDS = ("beam_width", "lm_weight", "length_bonus", "lm_words", "lm_order")


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
            beam search keeping N prefixes (:func:`~persec.models.lm.ctc_beam_decode`).
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


# --------------------------------------------------------------------------- CTC
class CTCDecoder(nn.Module):
    """Optional BiLSTM and a per-frame classifier over blank + characters.

    Args:
        in_dim: C of the memory.
        charset: the characters; class 0 is the CTC blank.
        lstm_layers: BiLSTM layers (0: a linear layer on the memory).
        hidden: LSTM hidden size per direction.
        decoding: how :meth:`decode` decodes: its ``beam_width``, ``lm_*`` and
            ``length_bonus`` fields (None: greedy). The language model, if any, is
            built here, so loading a model includes its cost.
    """

    def __init__(
        self,
        in_dim: int,
        charset: Charset,
        lstm_layers: int = 2,
        hidden: int = 256,
        decoding: DecoderConfig | None = None,
    ):
        super().__init__()
        self.tokenizer = CTCTokenizer(charset)
        self.decoding = decoding or DecoderConfig(name="ctc")
        decoding_lm(self.decoding)
        self.rnn: nn.LSTM | None = None
        if lstm_layers > 0:
            self.rnn = nn.LSTM(in_dim, hidden, lstm_layers, batch_first=True, bidirectional=True)
            in_dim = 2 * hidden
        self.classifier = nn.Linear(in_dim, self.tokenizer.num_classes)

    def forward(self, memory: torch.Tensor, labels: Sequence[str] | None = None) -> torch.Tensor:
        """(B, T, C) -> logits (B, T, N+1). ``labels`` is accepted for a uniform API and unused."""
        if self.rnn is not None:
            memory = self._run_rnn(memory)  # (B, T, 2*hidden)
        return self.classifier(memory)

    def _run_rnn(self, memory: torch.Tensor) -> torch.Tensor:
        """The BiLSTM; under CPU bf16 autocast on a CPU without native bf16 it runs in
        fp32, since oneDNN has no bf16 LSTM for such CPUs (it raises "could not create
        a primitive descriptor")."""
        if (
            memory.device.type == "cpu"
            and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16
            and not cpu_bf16_support().native
        ):
            with torch.autocast("cpu", enabled=False):
                return self.rnn(memory.float())[0]
        return self.rnn(memory)[0]

    def loss(self, logits: torch.Tensor, labels: Sequence[str]) -> torch.Tensor:
        """CTC loss: per image, -log p(label) divided by the label length, then the batch mean.

        Computed from fp32 log-probabilities whatever the autocast dtype; alignments that
        are impossible (label longer than T allows) give 0 rather than inf.
        """
        targets, lengths = self.tokenizer.encode(labels)
        log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # (T, B, V)
        t, b = log_probs.shape[:2]
        input_lengths = torch.full((b,), t, dtype=torch.long)
        return F.ctc_loss(
            log_probs,
            targets.to(logits.device),
            input_lengths.to(logits.device),
            lengths.to(logits.device),
            blank=CTCTokenizer.blank_id,
            reduction="mean",
            zero_infinity=True,
        )

    def decode(self, logits: torch.Tensor) -> list[tuple[str, float]]:
        """The configured decoding of ``logits`` (B, T, N+1): greedy
        (:func:`ctc_greedy_decode`) when ``beam_width`` is 0, else the beam search of
        :meth:`beam_decode` with the language model, if any."""
        return decode_ctc(logits, self.tokenizer, self.decoding)

    def beam_decode(self, logits: torch.Tensor, beam_width: int = 10) -> list[tuple[str, float]]:
        """CTC prefix beam search (with this decoder's language model, if any);
        confidence = p(text), summed over its alignments.

        Pure Python, a few ms per crop: meant for reading and evaluation, not for
        training loops. ``logits``: (B, T, N+1).
        """
        return ctc_beam_decode(
            logits,
            self.tokenizer,
            beam_width,
            decoding_lm(self.decoding),
            self.decoding.lm_weight,
            self.decoding.length_bonus,
        )


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


# --------------------------------------------------------------------------- attention
class _Attention(nn.Module):
    """Multi-head attention with keys/values projected separately, so they can be cached."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"d_model {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.heads, c // self.heads).transpose(1, 2)  # (B, h, n, c/h)

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S, C) -> keys, values, each (B, heads, S, C/heads)."""
        k, v = self.kv(x).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def forward(
        self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool
    ) -> torch.Tensor:
        """Queries (B, L, C) over keys/values (B, heads, S, C/heads) -> (B, L, C)."""
        a = sdpa(self._split(self.q(x)), k, v, is_causal=causal)  # (B, h, L, C/h)
        return self.out(a.transpose(1, 2).flatten(2))


class _DecoderLayer(nn.Module):
    """Pre-norm: causal self-attention, cross-attention over memory, MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.norm1, self.self_attn = nn.LayerNorm(dim), _Attention(dim, heads)
        self.norm2, self.cross_attn = nn.LayerNorm(dim), _Attention(dim, heads)
        self.norm3 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, memory_kv: tuple[torch.Tensor, torch.Tensor], cache: list | None
    ) -> torch.Tensor:
        """(B, L, C) -> (B, L, C). With ``cache`` (a list, empty at step 0), ``x`` holds
        only the newest position and the keys/values of earlier steps are reused."""
        h = self.norm1(x)
        k, v = self.self_attn.keys_values(h)
        if cache is not None:
            if cache:
                k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
            cache[:] = [k, v]
        # Incremental steps attend to every cached position: no mask needed.
        x = x + self.drop(self.self_attn(h, k, v, causal=cache is None))
        x = x + self.drop(self.cross_attn(self.norm2(x), *memory_kv, causal=False))
        return x + self.drop(self.mlp(self.norm3(x)))


class AttentionDecoder(nn.Module):
    """Autoregressive transformer decoder with cross-attention over the encoder sequence.

    Memory positions get a sinusoidal encoding (any T works); query positions a learned
    one (at most ``max_length + 1`` steps).

    Args:
        in_dim: C of the memory.
        charset: the characters (classes: EOS = 0, characters 1..N).
        d_model, heads, layers, mlp_ratio, dropout: transformer sizes.
        max_length: longest label in characters, EOS excluded.
    """

    def __init__(
        self,
        in_dim: int,
        charset: Charset,
        d_model: int = 256,
        heads: int = 8,
        layers: int = 2,
        max_length: int = 25,
        dropout: float = 0.1,
        mlp_ratio: float = 4.0,
    ):
        super().__init__()
        self.tokenizer = AttentionTokenizer(charset)
        self.max_length = max_length
        self.memory_proj = nn.Sequential(nn.Linear(in_dim, d_model), nn.LayerNorm(d_model))
        self.embed = nn.Embedding(self.tokenizer.vocab_size, d_model)
        self.pos = nn.Parameter(torch.zeros(1, max_length + 1, d_model))
        self.layers = nn.ModuleList(
            _DecoderLayer(d_model, heads, mlp_ratio, dropout) for _ in range(layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.classifier = nn.Linear(d_model, self.tokenizer.num_classes)
        self.apply(_init_weights)
        nn.init.trunc_normal_(self.pos, std=0.02)

    def forward(
        self, memory: torch.Tensor, labels: Sequence[str] | None = None, fixed_length: bool = False
    ) -> torch.Tensor:
        """Logits over EOS + characters.

        Args:
            memory: (B, T, C).
            labels: given -> teacher forcing on ``[BOS] c1..cn``, logits (B, L+1, N+1)
                with L the longest label; None -> greedy decoding, logits
                (B, max_length+1, N+1), steps after every row has emitted EOS filled
                with logits that put all the mass on EOS.
            fixed_length: greedy decoding always runs all max_length + 1 steps and
                fills the steps after every row's EOS with tensor ops instead of
                stopping early: the same logits, as a graph without data-dependent
                control flow (ONNX export).
        """
        mem = self.memory_proj(memory)
        mem = mem + _sinusoid(mem.size(1), mem.size(2), mem.device, mem.dtype)
        memory_kv = [layer.cross_attn.keys_values(mem) for layer in self.layers]
        if labels is not None:
            self._check_lengths(labels)
            tokens = self.tokenizer.encode(labels).to(memory.device)[:, :-1]  # (B, L+1)
            return self._step(tokens, memory_kv, 0, None)
        return self._greedy(memory_kv, memory.size(0), memory.device, fixed_length)

    def _step(
        self, tokens: torch.Tensor, memory_kv: list, start: int, caches: list | None
    ) -> torch.Tensor:
        x = self.embed(tokens) + self.pos[:, start : start + tokens.size(1)]
        for i, layer in enumerate(self.layers):
            x = layer(x, memory_kv[i], None if caches is None else caches[i])
        return self.classifier(self.norm(x))  # (B, L, N+1)

    def _greedy(
        self, memory_kv: list, batch: int, device: torch.device, fixed_length: bool = False
    ) -> torch.Tensor:
        steps = self.max_length + 1
        tokens = torch.full((batch, 1), self.tokenizer.bos_id, dtype=torch.long, device=device)
        caches: list[list] = [[] for _ in self.layers]
        done = torch.zeros(batch, dtype=torch.bool, device=device)
        out = []
        for t in range(steps):
            logits = self._step(tokens, memory_kv, t, caches)  # (B, 1, N+1)
            out.append(logits)
            tokens = logits.argmax(-1)
            if fixed_length:
                continue
            done |= tokens[:, 0] == self.tokenizer.eos_id
            # a host sync per step, but it saves up to max_length steps on short words
            if bool(done.all()):
                break
        logits = torch.cat(out, dim=1)  # (B, S, N+1), S <= steps
        eos_only = torch.full_like(logits[0, 0], torch.finfo(logits.dtype).min)
        eos_only[self.tokenizer.eos_id] = 0.0  # (N+1,)
        if fixed_length:
            # Step t is filled once every row has emitted EOS before t, as when stopping.
            emitted = (logits.argmax(-1) == self.tokenizer.eos_id).cumsum(1) > 0  # (B, steps)
            finished = F.pad(emitted.all(0)[:-1], (1, 0), value=False)  # (steps,)
            return torch.where(finished[None, :, None], eos_only, logits)
        if logits.size(1) < steps:
            pad = eos_only.expand(batch, steps - logits.size(1), -1)
            logits = torch.cat([logits, pad], dim=1)
        return logits

    def _check_lengths(self, labels: Sequence[str]) -> None:
        longest = max((len(s) for s in labels), default=0)
        if longest > self.max_length:
            raise ValueError(f"label of length {longest} exceeds max_length {self.max_length}")

    def loss(self, logits: torch.Tensor, labels: Sequence[str]) -> torch.Tensor:
        """Cross-entropy per token (targets ``c1..cn [EOS]``), PAD positions ignored, in fp32.

        Works on teacher-forced logits and on greedy ones (padded to max_length + 1).
        """
        targets = self.tokenizer.encode(labels)[:, 1:]  # (B, L+1)
        extra = logits.size(1) - targets.size(1)
        if extra < 0:
            raise ValueError(f"logits cover {logits.size(1)} steps, labels need {targets.size(1)}")
        targets = F.pad(targets, (0, extra), value=self.tokenizer.pad_id).to(logits.device)
        return F.cross_entropy(
            logits.float().flatten(0, 1), targets.flatten(), ignore_index=self.tokenizer.pad_id
        )

    def decode(self, logits: torch.Tensor) -> list[tuple[str, float]]:
        """Argmax tokens up to the first EOS, :func:`attention_greedy_decode`.

        Args:
            logits: (B, L, N+1).
        """
        return attention_greedy_decode(logits, self.tokenizer)


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


def _sinusoid(length: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Fixed sine/cosine position encoding. -> (1, length, dim)."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(
        torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(1e4) / dim)
    )
    enc = torch.zeros(length, dim, device=device)
    enc[:, 0::2] = torch.sin(pos * freq)
    enc[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return enc[None].to(dtype)


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Embedding):
        nn.init.trunc_normal_(m.weight, std=0.02)


# --------------------------------------------------------------------------- factory
def check_decoding(cfg: DecoderConfig) -> None:
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


def greedy_decoding(cfg: DecoderConfig) -> DecoderConfig:
    """``cfg`` with its beam search, language model and length bonus turned off."""
    return replace(cfg, beam_width=0, lm_weight=0.0, length_bonus=0.0)


def decoding_lm(cfg: DecoderConfig) -> CharNgramLM | None:
    """The language model ``cfg`` fuses into its beam search, or None (built once per
    process and setting)."""
    return english_word_lm(cfg.lm_words, cfg.lm_order) if cfg.lm_weight > 0 else None


def decode_ctc(
    logits: torch.Tensor, tokenizer: CTCTokenizer, cfg: DecoderConfig
) -> list[tuple[str, float]]:
    """CTC logits (B, T, N+1) → ``[(text, confidence)]`` as ``cfg`` says: greedy
    (:func:`ctc_greedy_decode`) when ``cfg.beam_width`` is 0, else
    :func:`~persec.models.lm.ctc_beam_decode` with its language model, if any."""
    if cfg.beam_width == 0:
        return ctc_greedy_decode(logits, tokenizer)
    return ctc_beam_decode(
        logits, tokenizer, cfg.beam_width, decoding_lm(cfg), cfg.lm_weight, cfg.length_bonus
    )


def describe_decoding(cfg: DecoderConfig) -> str:
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


def build_decoder(
    cfg: DecoderConfig, in_dim: int, charset: Charset
) -> CTCDecoder | AttentionDecoder:
    """A decoder over memory of width ``in_dim``. Raises ValueError for an unknown name."""
    check_decoding(cfg)
    if cfg.name == "ctc":
        return CTCDecoder(in_dim, charset, cfg.lstm_layers, cfg.hidden, cfg)
    if cfg.name == "attn":
        return AttentionDecoder(
            in_dim,
            charset,
            cfg.d_model,
            cfg.heads,
            cfg.layers,
            cfg.max_length,
            cfg.dropout,
            cfg.mlp_ratio,
        )
    raise ValueError(f"unknown decoder {cfg.name!r}: use one of {', '.join(DECODER_NAMES)}")
