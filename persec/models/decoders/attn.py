"""The autoregressive transformer head (``attn``): cross-attention over the encoder sequence."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from persec.charset import AttentionTokenizer, Charset
from persec.decoding.greedy import attention_greedy_decode
from persec.models.attention import sdpa
from persec.models.decoders.base import DecoderConfig, DecoderSpec, register_decoder


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

    def export_forward(self, memory: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> logits (B, max_length + 1, N+1): greedy decoding over every step,
        a graph of fixed shape that ONNX can hold."""
        return self(memory, fixed_length=True)

    def export_info(self) -> dict:
        """The sidecar's ``max_length``."""
        return {"max_length": self.max_length}

    def set_decoding(self, cfg: DecoderConfig) -> None:
        """Nothing to set: this head always decodes greedily."""

    def decode(self, logits: torch.Tensor) -> list[tuple[str, float]]:
        """Argmax tokens up to the first EOS, :func:`attention_greedy_decode`.

        Args:
            logits: (B, L, N+1).
        """
        return attention_greedy_decode(logits, self.tokenizer)


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


def _build(cfg: DecoderConfig, in_dim: int, charset: Charset) -> AttentionDecoder:
    return AttentionDecoder(
        in_dim, charset, cfg.d_model, cfg.heads, cfg.layers, cfg.max_length, cfg.dropout,
        cfg.mlp_ratio,
    )  # fmt: skip


register_decoder(DecoderSpec("attn", _build, AttentionTokenizer, attention_greedy_decode))
