"""Has the quantizer collapsed? Which codebook entries fire where (``persec inspect-codes``).

:func:`compute_codes` runs a pretrained encoder and its perceivers' quantizers (eval
mode: argmax codes, no masking) over images; :func:`plot_code_maps` draws the stroke
code map over each image and the semantic codes as a strip below it;
:func:`plot_code_usage` draws how often each entry of each codebook is chosen.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from persec.models.encoders.base import TextEncoder
from persec.objectives.persec import PersecObjective
from persec.plots import pyplot, save_figure


@dataclass
class LevelCodes:
    """Argmax codes of one level over a batch.

    Attributes:
        indices: chosen entry per group; (B, H_l, W_l, G) for stroke, (B, T, G) for
            semantic. int64
        entries: V, entries per codebook.
        usage: how often each entry was chosen. # (G, V), int64
        code_ppl: perplexity of the code histogram, summed over groups.
    """

    indices: torch.Tensor
    entries: int
    usage: torch.Tensor
    code_ppl: float

    @property
    def used(self) -> list[int]:
        """Entries chosen at least once, per group."""
        return (self.usage > 0).sum(1).tolist()


@torch.inference_mode()
def compute_codes(
    encoder: TextEncoder, objective: PersecObjective, images: torch.Tensor
) -> dict[str, LevelCodes]:
    """Codes of every active level for ``images`` (B, C, H, W) in [-1, 1]."""
    encoder.eval(), objective.eval()
    low = encoder.encode_low(images)  # (B, C_l, h, w)
    out: dict[str, LevelCodes] = {}
    for name, perceiver in objective.perceivers():
        z = low if name == "stroke" else encoder.encode_high(low)
        q = perceiver.quantizer(perceiver.positions(z))  # indices (B, N, G)
        shape = (low.size(0), low.size(2), low.size(3), -1) if name == "stroke" else None
        indices = q.indices.reshape(shape) if shape else q.indices
        g, v = perceiver.quantizer.groups, perceiver.quantizer.entries
        flat = q.indices.reshape(-1, g)
        usage = torch.stack([torch.bincount(flat[:, i], minlength=v) for i in range(g)])
        out[name] = LevelCodes(indices.cpu(), v, usage.cpu(), float(q.code_ppl))
    return out


def code_colors(codes: np.ndarray, entries: int) -> np.ndarray:
    """An RGB colour per code id: ids scattered around the hue circle so neighbours
    differ. (...) int -> (..., 3) float in [0, 1]."""
    import matplotlib

    hue = (codes * 0.618033988749895) % 1.0
    sat = 0.55 + 0.45 * ((codes * 7 // max(1, entries)) % 2)
    hsv = np.stack([hue, sat, np.full_like(hue, 0.95)], axis=-1)
    return matplotlib.colors.hsv_to_rgb(hsv)


def plot_code_maps(
    images: torch.Tensor, codes: dict[str, LevelCodes], out: str | Path, group: int = 0
) -> Path:
    """One row per image: the image with its stroke code map overlaid, then the
    semantic codes as coloured cells with their ids. Colours = codebook ``group``'s
    entries (same id, same colour, across images). ``codes`` may cover more images
    than ``images`` (row i belongs to image i), e.g. the usage batch."""
    import matplotlib

    plt = pyplot()
    n = images.size(0)
    pictures = ((images.permute(0, 2, 3, 1).float().cpu().numpy() + 1) / 2).clip(0, 1)
    fig, axes = plt.subplots(n, 1, figsize=(8, 1.25 * n + 0.4), squeeze=False)
    for i, ax in enumerate(axes[:, 0]):
        h, w = pictures.shape[1:3]
        ax.imshow(pictures[i], extent=(0, w, h, 0))
        if "stroke" in codes:
            c = codes["stroke"]
            grid = code_colors(c.indices[i, ..., group].numpy(), c.entries)
            ax.imshow(grid, extent=(0, w, h, 0), alpha=0.45, interpolation="nearest")
        if "semantic" in codes:
            c = codes["semantic"]
            ids = c.indices[i, :, group].numpy()
            cell = w / len(ids)
            colors = code_colors(ids, c.entries)
            for t, code in enumerate(ids):
                ax.add_patch(
                    matplotlib.patches.Rectangle(
                        (t * cell, h), cell, h * 0.35, color=colors[t], clip_on=False
                    )
                )
                ax.text((t + 0.5) * cell, h * 1.18, str(code), fontsize=4, ha="center", va="center")
            ax.set_ylim(h * 1.4, 0)
        ax.set_axis_off()
    fig.suptitle(f"codebook {group}: stroke codes over the image, semantic codes below", fontsize=8)
    return save_figure(fig, out, dpi=150)


def plot_code_usage(codes: dict[str, LevelCodes], out: str | Path) -> Path:
    """Per level and codebook, how often each entry fires (sorted, log scale)."""
    fig, axes = pyplot().subplots(1, len(codes), figsize=(5.5 * len(codes), 3.4), squeeze=False)
    for ax, (name, c) in zip(axes[0], codes.items(), strict=True):
        for g, counts in enumerate(c.usage.numpy()):
            ranked = np.sort(counts)[::-1]
            ax.bar(np.arange(c.entries), ranked, alpha=0.6, label=f"codebook {g}")
        ax.set_yscale("log")
        ax.set_xlabel(f"entries, most used first (of {c.entries})")
        ax.set_ylabel("positions")
        used = ", ".join(f"{u}/{c.entries}" for u in c.used)
        ax.set_title(f"{name}: code perplexity {c.code_ppl:.0f}, used {used}", fontsize=9)
        ax.legend(fontsize=7)
    return save_figure(fig, out)
