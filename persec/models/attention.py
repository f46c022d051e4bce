"""Windowed multi-head self-attention: the context perceivers' aggregators.

Stroke level: ω×ω windows over the (B, C_l, H_l, W_l) map, ω = H_l / 2 [paper].
Semantic level: windows of ω = 10 tokens over the (B, T, C_h) sequence [paper].
8 heads and 128-wide linear layers [paper]. Pre-norm blocks, shifted windows in every
second block, a learned relative position bias, the projections C → 128 → C and the
residual around the whole aggregator are our choices (method.md).

A sequence is treated as a map of height 1 with 1×ω windows, so one implementation
serves both levels. The attention layers work channel-last: (B, H, W, C) for maps,
(B, T, C) for sequences. The blocks and the aggregator built from them are in
:mod:`persec.models.aggregator`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, is_causal: bool = False
) -> torch.Tensor:
    """Softmax attention without a mask. q (B, heads, N, d), k/v (B, heads, S, d)
    -> (B, heads, N, d).

    bf16 training on CPU runs it in fp32: at the sizes of persec's models (N, S <= 256,
    d <= 64) torch 2.13's CPU flash attention takes 1.3-8x as long for forward +
    backward in bf16 as in fp32, which slowed bf16 ViT training by ~1.2x and
    attention-decoder training by ~1.2x (docs/throughput.md); fp32 is also the more
    precise. Without gradients (the bf16 forward is the faster one), in other dtypes
    and on other devices it is plain SDPA.
    """
    if q.dtype == torch.bfloat16 and q.device.type == "cpu" and q.requires_grad:
        with torch.autocast("cpu", enabled=False):
            a = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=is_causal)
        return a.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)


def _partition(x: torch.Tensor, wh: int, ww: int) -> torch.Tensor:
    """(B, Hp, Wp, C) -> (B, nWin, wh*ww, C), windows in raster order."""
    b, hp, wp, c = x.shape
    x = x.reshape(b, hp // wh, wh, wp // ww, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, -1, wh * ww, c)


def _axis_windows(size: int, padded: int, window: int, shift: int, device) -> tuple:
    """Per position of one rolled, padded axis: its true window id and whether it is real.

    With the grid offset by ``shift``, position y lies in window ⌊(y − shift)/ω⌋ (−1 for
    the first ``shift`` positions). Rolling by −shift puts the last window and those
    first positions into one rolled window; different ids keep them apart.
    """
    pos = torch.arange(padded, device=device)
    ids = torch.div(pos - shift, window, rounding_mode="floor")
    return ids.roll(-shift), (pos < size).roll(-shift)  # (padded,), (padded,)


def _wrapped(size: int, shift: int, device) -> torch.Tensor:
    """``(arange(size) + shift) % size`` for ``0 <= shift < size``, written without a
    remainder by ``size`` (which may be symbolic under export). -> (size,) long."""
    pos = torch.arange(size, device=device) + shift
    return torch.where(pos >= size, pos - size, pos)


@dataclass(frozen=True)
class _Layout:
    """Where every token of an h×w map goes in the windows of one attention layer.

    ``slots[s]`` is the map position (y·w + x) read into window slot s (windows in
    raster order, each wh·ww slots): the zero-padding, the cyclic shift and the window
    partition of Swin in one index. A padded slot reads position 0; its value never
    matters (no real query sees it, and its own output is dropped). ``positions[p]``
    is the slot of map position p, so gathering by it merges and crops in one step.
    ``allowed`` (nWin, 1, N, N) says which keys each query may see, or is None when
    every window is whole and unshifted.
    """

    wh: int
    ww: int
    n_win: int
    slots: torch.Tensor  # (nWin * N,) long
    positions: torch.Tensor  # (h * w,) long
    allowed: torch.Tensor | None


class _WindowGather(torch.autograd.Function):
    """``x[:, forward_index]`` of (B, P, C) -> (B, S, C) whose gradient is the gather
    ``grad[:, backward_index]``: the two indices of a :class:`_Layout` are each other's
    inverse on the real tokens, and padded slots carry no gradient to real ones (see
    :class:`_Layout`), so the exact gradient is a copy, not torch's zero-fill plus
    ``index_add`` for ``index_select``. Rows are gathered as one flat (B·P, C) index,
    which runs at memory-copy speed on CPU.
    """

    @staticmethod
    def forward(ctx, x, forward_index, backward_index):
        ctx.save_for_backward(backward_index)
        return _gather_rows(x, forward_index)

    @staticmethod
    def backward(ctx, grad):
        (backward_index,) = ctx.saved_tensors
        return _gather_rows(grad.contiguous(), backward_index), None, None


def _gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Gather rows of x (B, P, C) at index (S,) into P -> (B, S, C), through one flat
    row index."""
    b, rows, c = x.shape
    flat = (torch.arange(b, device=x.device) * rows)[:, None] + index[None, :]  # (B, S)
    return x.reshape(b * rows, c).index_select(0, flat.reshape(-1)).reshape(b, -1, c)


def _regather(x: torch.Tensor, index: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """(B, P, C) -> (B, len(index), C): rows of ``x`` in the order of ``index``."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _WindowGather.apply(x, index, inverse)
    # Plain gather without gradients: independent of the batch size (ONNX export).
    return x.index_select(1, index)


def _window_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, dropout_p: float
) -> torch.Tensor:
    """softmax(q kᵀ/√d + bias) v per window. q/k/v (B, nWin, heads, N, d), bias
    broadcastable to (B, nWin, heads, N, N) -> (B, nWin, heads, N, d).

    On CPU written out: the bias needs a gradient, so SDPA would take its math path
    anyway, which adds a fully-masked-row check (``all`` + ``where`` over the scores)
    that no window here needs; the result is bit-identical. Elsewhere SDPA, whose GPU
    kernels take a bias.
    """
    if q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p)
    scores = (q * q.size(-1) ** -0.5) @ k.transpose(-2, -1) + bias  # (B, nWin, heads, N, N)
    weights = scores.softmax(-1)
    if dropout_p:
        weights = F.dropout(weights, dropout_p)
    return weights @ v


class WindowAttention2d(nn.Module):
    """Multi-head self-attention inside non-overlapping windows of a channel-last map.

    Sizes that are not multiples of the window are zero-padded at the bottom and right;
    padded positions are masked out as keys and cropped from the output. With
    ``shift=True`` the window grid is offset by half a window along every axis that has
    more than one window (Swin's cyclic shift); a mask keeps each token inside its own
    shifted window. All windows of all images go through one attention call.

    Args:
        dim: token width (divisible by ``heads``).
        heads: attention heads.
        window: window size, an int (square) or (height, width).
        shift: offset the window grid by half a window.
        dropout: on attention weights and the output projection (training only).
        global_attention: one window covering the whole map; ``window`` then only sets
            the range of the relative position bias (larger offsets share the edge entry).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        window: int | tuple[int, int],
        shift: bool = False,
        dropout: float = 0.0,
        global_attention: bool = False,
    ):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.window = (window, window) if isinstance(window, int) else tuple(window)
        if len(self.window) != 2 or min(self.window) < 1:
            raise ValueError(f"window must be positive, got {window}")
        self.heads, self.shift, self.global_attention = heads, shift, global_attention
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)
        rh, rw = self.window
        # One learned bias per head and relative offset (dy, dx), |dy| < rh, |dx| < rw.
        self.rel_bias = nn.Parameter(torch.empty((2 * rh - 1) * (2 * rw - 1), heads))
        nn.init.trunc_normal_(self.rel_bias, std=0.02)
        self._layouts: dict[tuple, _Layout] = {}  # per (h, w, device); not state

    def relative_bias(self, wh: int, ww: int) -> torch.Tensor:
        """Bias of every query/key pair of a wh×ww window. -> (heads, N, N), N = wh*ww."""
        rh, rw = self.window
        dev = self.rel_bias.device
        ys, xs = torch.meshgrid(
            torch.arange(wh, device=dev), torch.arange(ww, device=dev), indexing="ij"
        )
        ys, xs = ys.flatten(), xs.flatten()
        # Clamping only matters in global mode, where the map can exceed the table.
        dy = (ys[:, None] - ys[None, :]).clamp(1 - rh, rh - 1) + rh - 1
        dx = (xs[:, None] - xs[None, :]).clamp(1 - rw, rw - 1) + rw - 1
        return self.rel_bias[dy * (2 * rw - 1) + dx].permute(2, 0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C)."""
        b, h, w, c = x.shape
        lay = self._layout(h, w, x.device)
        n = lay.wh * lay.ww
        # Windows are gathered after the projection: padded slots are masked as keys and
        # dropped as queries, so their values never matter.
        qkv = self.qkv(x).reshape(b, h * w, 3 * c)
        qkv = _regather(qkv, lay.slots, lay.positions)  # (B, nWin * N, 3C)
        qkv = qkv.reshape(b, lay.n_win, n, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)  # each (B, nWin, heads, N, d)

        bias = self.relative_bias(lay.wh, lay.ww).to(q.dtype)  # (heads, N, N)
        if lay.allowed is not None:
            bias = torch.where(lay.allowed, bias, float("-inf"))  # (nWin, heads, N, N)
        y = _window_attention(q, k, v, bias, self.dropout if self.training else 0.0)
        y = y.transpose(2, 3).reshape(b, lay.n_win * n, c)  # (B, nWin * N, C)
        y = _regather(y, lay.positions, lay.slots).reshape(b, h, w, c)
        return self.proj_drop(self.proj(y))

    def _layout(self, h: int, w: int, device: torch.device) -> _Layout:
        """The window layout of an h×w map (cached per size and device)."""
        if torch.compiler.is_exporting():  # symbolic sizes (a dynamic width): no cache
            return self._build_layout(h, w, device)
        key = (h, w, str(device))
        if key not in self._layouts:
            self._layouts[key] = self._build_layout(h, w, device)
        return self._layouts[key]

    def _build_layout(self, h: int, w: int, device: torch.device) -> _Layout:
        wh, ww = (h, w) if self.global_attention else self.window
        # Ceil-division on non-negative operands only: under export the width is
        # symbolic, and ONNX's integer Div truncates a negative quotient towards zero.
        hp, wp = (h + wh - 1) // wh * wh, (w + ww - 1) // ww * ww
        # With a single window along an axis a roll would only cut that window in two.
        sh = wh // 2 if self.shift and hp > wh else 0
        sw = ww // 2 if self.shift and wp > ww else 0
        # Slot (Y, X) of the rolled, padded grid holds map position ((Y+sh) % hp,
        # (X+sw) % wp), when that lies inside the map.
        ys, xs = _wrapped(hp, sh, device), _wrapped(wp, sw, device)
        real = (ys[:, None] < h) & (xs[None, :] < w)  # (Hp, Wp)
        source = torch.where(real, ys[:, None] * w + xs[None, :], 0)  # (Hp, Wp)
        slots = _partition(source[None, :, :, None], wh, ww).reshape(-1)  # (nWin * N,)
        real = _partition(real[None, :, :, None], wh, ww).reshape(-1)
        # positions[slots[real]] = slot numbers, written as a scatter (padded slots go
        # to a dropped extra entry) so that no shape depends on the data (export).
        target = torch.where(real, slots, h * w)
        slot_ids = torch.arange(slots.numel(), device=device)
        positions = torch.zeros(h * w + 1, dtype=torch.long, device=device)
        positions = positions.scatter(0, target, slot_ids)[: h * w]
        # Under export the width may be symbolic: the mask is always built.
        padded_or_shifted = torch.compiler.is_exporting() or hp > h or wp > w or sh or sw
        allowed = self._allowed(h, w, hp, wp, wh, ww, sh, sw) if padded_or_shifted else None
        return _Layout(wh, ww, (hp // wh) * (wp // ww), slots, positions, allowed)

    def _allowed(self, h, w, hp, wp, wh, ww, sh, sw) -> torch.Tensor:
        """Which keys each query may see, per window. -> (nWin, 1, N, N) bool."""
        dev = self.rel_bias.device
        idy, realy = _axis_windows(h, hp, wh, sh, dev)
        idx, realx = _axis_windows(w, wp, ww, sw, dev)
        # ids run from -1, so +1 makes them non-negative before combining the axes.
        gid = (idy[:, None] + 1) * (wp // ww + 2) + (idx[None, :] + 1)  # (Hp, Wp)
        real = realy[:, None] & realx[None, :]
        gid = _partition(gid[None, :, :, None], wh, ww)[0, :, :, 0]  # (nWin, N)
        real = _partition(real[None, :, :, None], wh, ww)[0, :, :, 0]
        both_real = real[:, :, None] & real[:, None, :]
        allowed = (gid[:, :, None] == gid[:, None, :]) & both_real
        # A padded query sees only itself: no row is fully masked (no NaN), its output
        # is dropped anyway, and no gradient reaches a real token through it
        # (what _WindowGather's backward relies on).
        allowed |= torch.eye(wh * ww, dtype=torch.bool, device=dev)
        return allowed[:, None]


class WindowAttention1d(WindowAttention2d):
    """:class:`WindowAttention2d` over a (B, T, C) sequence: windows of ω consecutive tokens.

    Args: as :class:`WindowAttention2d` (``shift``, ``dropout``, ``global_attention``
    by keyword), with ``window`` the int ω.
    """

    def __init__(self, dim: int, heads: int, window: int, **kwargs):
        super().__init__(dim, heads, (1, window), **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, T, C)."""
        return super().forward(x.unsqueeze(1)).squeeze(1)
