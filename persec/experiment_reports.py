"""The reports of ``persec experiment``: the paper-style Markdown table and the two
plots, built from the ``results.csv`` rows (see :func:`persec.experiment.collect_rows`)."""

from __future__ import annotations

from pathlib import Path

from persec.errors import PersecError


def results_markdown(name: str, rows: list[dict]) -> str:
    """Paper-style table: rows = method × decoder × protocol, columns = test set ×
    label fraction, cells = word accuracy (%)."""
    tests = list(dict.fromkeys(r["test_set"] for r in rows))
    fractions = sorted({r["fraction"] for r in rows})
    keys = list(dict.fromkeys((r["method"], r["decoder"], r["protocol"]) for r in rows))
    acc = {
        (r["method"], r["decoder"], r["protocol"], r["test_set"], r["fraction"]): r["word_acc"]
        for r in rows
    }
    labels = {r["fraction"]: r["labels"] for r in rows}
    head = ["method", "decoder", "protocol"]
    for t in tests:
        for f in fractions:
            n = labels.get(f, -1)
            head.append(f"{t} @{f:g}" + (f" ({n:,} labels)" if n and n > 0 else ""))
    lines = [
        f"# {name}: word accuracy (%)",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for m, d, p in keys:
        cells = [m, d, p]
        for t in tests:
            for f in fractions:
                v = acc.get((m, d, p, t, f))
                cells.append("" if v is None else f"{v:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_accuracy_vs_fraction(rows: list[dict], out: Path) -> Path:
    """Word accuracy against label fraction, one panel per test set, one line per
    method × decoder × protocol."""
    from persec.plots import pyplot, save_figure

    plt = pyplot()
    tests = list(dict.fromkeys(r["test_set"] for r in rows))
    fig, axes = plt.subplots(1, len(tests), figsize=(4.5 * len(tests), 3.6), squeeze=False)
    for ax, test in zip(axes[0], tests, strict=True):
        lines: dict[tuple, list[tuple[float, float]]] = {}
        for r in rows:
            if r["test_set"] == test:
                key = (r["method"], r["decoder"], r["protocol"])
                lines.setdefault(key, []).append((r["fraction"], r["word_acc"]))
        for (m, d, p), points in lines.items():
            points.sort()
            xs, ys = zip(*points, strict=True)
            style = "o-" if p == "semi" else "s--"
            ax.plot(xs, ys, style, ms=4, lw=1, label=f"{m} {d} {p}")
        ax.set_xscale("log")
        fractions = sorted({r["fraction"] for r in rows})
        ax.set_xticks(fractions, [f"{100 * f:g}%" for f in fractions])
        ax.minorticks_off()
        ax.set_xlabel("labelled images used (share of the pool)")
        ax.set_ylabel("word accuracy (%)")
        ax.set_title(test)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    return save_figure(fig, out)


def plot_pretrain_comparison(directories: dict[str, Path], out: Path) -> Path:
    """Training loss and every logged contrastive accuracy of each pretraining run."""
    from persec.plots import pyplot, read_metrics, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for method, directory in directories.items():
        try:
            series = read_metrics(directory / "metrics.csv")
        except PersecError:
            continue
        for key, points in series.items():
            if key == "train/loss":
                ax, label = axes[0], method
            elif key.startswith("train/") and key.endswith("/acc"):
                ax, label = axes[1], f"{method}: {key[len('train/') :]}"
            else:
                continue
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, lw=1, label=label)
    axes[0].set_title("pretraining loss")
    axes[1].set_title("contrastive accuracy (train)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return save_figure(fig, out)
