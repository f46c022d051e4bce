"""Training curves from a run's ``metrics.csv`` (Lightning's CSV log)."""

from __future__ import annotations

import csv
from pathlib import Path

from persec.errors import PersecError

LEVELS = ("stroke", "semantic", "seqclr")  # seqclr: one "level", the NT-Xent task


def pyplot():
    """The pyplot module of matplotlib, on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out: str | Path, dpi: int = 120) -> Path:
    """Lay out, write and close ``fig``; returns the path written."""
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=dpi)
    pyplot().close(fig)
    return out


def read_metrics(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every logged column of ``metrics.csv`` as ``{name: [(step, value), ...]}``."""
    path = Path(path)
    if not path.is_file():
        raise PersecError(f"{path} not found")
    series: dict[str, list[tuple[int, float]]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            step = int(float(row.get("step") or 0))
            for key, value in row.items():
                if key in ("step", "epoch") or value in (None, ""):
                    continue
                try:
                    series.setdefault(key, []).append((step, float(value)))
                except ValueError:
                    continue
    if not series:
        raise PersecError(f"{path} holds no metrics yet")
    return series


def plot_pretrain_curves(metrics_csv: str | Path, out: str | Path) -> Path:
    """Contrastive accuracy, contrastive loss and (PerSec only) prob perplexity per
    level, train and validation, as one PNG (the chance level dotted); then, when
    logged, the linear probe, the effective rank and the leak test (persec.training.probe)."""
    plt = pyplot()
    series = read_metrics(metrics_csv)
    panels = [("acc", "contrastive accuracy"), ("contrastive", "contrastive loss")]
    if any(key.endswith("/prob_ppl") for key in series):
        panels.append(("prob_ppl", "prob perplexity"))
    # The frozen-encoder diagnostics (persec.training.probe), when the run logged them.
    extra = [
        (title, keys)
        for title, keys in (
            ("linear probe, held-out fonts", ["probe/word_acc", "probe/cer", "probe/position_acc"]),
            ("effective rank", ["probe/rank", "probe/low_rank"]),
            ("leak test: code accuracy", sorted(k for k in series if k.startswith("leak/"))),
        )
        if any(k in series for k in keys)
    ]
    n = len(panels) + len(extra)
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 3.6))
    for ax, (title, keys) in zip(axes[len(panels) :], extra, strict=True):
        for key in keys:
            if key in series:
                steps, values = zip(*series[key], strict=True)
                style = ":" if key.endswith("majority") else "o-"
                ax.plot(steps, values, style, ms=3, lw=1, label=key)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    for ax, (term, title) in zip(axes[: len(panels)], panels, strict=True):
        for level in LEVELS:
            for stage, style in (("train", "-"), ("val", "o-")):
                points = series.get(f"{stage}/{level}/{term}")
                if points:
                    steps, values = zip(*points, strict=True)
                    ax.plot(steps, values, style, ms=3, lw=1, label=f"{level} ({stage})")
            chance = series.get(f"val/{level}/chance") or series.get(f"train/{level}/chance")
            if term == "acc" and chance:
                steps, values = zip(*chance, strict=True)
                ax.plot(steps, values, ":", lw=1, color="grey", label=f"{level} chance")
        if term == "prob_ppl":
            ax.set_yscale("log", base=2)
        ax.set_title(title)
        ax.set_xlabel("step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return save_figure(fig, out)
