"""The reports of ``persec experiment``, built from the cells' ``done.json`` files: the
``results.csv`` rows (one per model or probe, test set and seed), the paper-style
Markdown tables (mean ± std over seeds) and the plots."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

from persec.errors import PersecError
from persec.experiment.grid import Cell, ExperimentConfig, read_done

HELDOUT = "synth_heldout_test"
PROBE_TEST = "probe_heldout_fonts"
CSV_COLUMNS = [
    "method",
    "encoder",
    "decoder",
    "protocol",
    "fraction",
    "labels",
    "seed",
    "test_set",
    "samples",
    "word_acc",
    "one_minus_ned",
    "cer",
    "val_word_acc",
    "val_cer",
    "pretrain_steps",
    "finetune_steps",
    "finetune_minutes",
    "machine",
]


def pretrain_steps(cell: Cell | None) -> int | str:
    """Steps of the pretraining an encoder comes from (0: random init)."""
    if cell is None:
        return 0
    if cell.kind == "snapshot":
        return cell.steps
    if cell.kind == "external":
        from persec.plots import read_metrics

        try:
            series = read_metrics(cell.directory / "metrics.csv")
            return 1 + max(step for step, _ in series.get("train/loss", []))
        except (PersecError, ValueError):
            return ""
    if not cell.done:  # a fresh machine: its cells came from the archive
        return cell.steps
    return read_done(cell)["steps"]


def _encoder_kind(cell: Cell | None) -> str:
    if cell is None:
        return "random"
    return "snapshot" if cell.kind == "snapshot" else "pretrained"


def _round(value, digits: int = 2):
    return "" if value is None else round(value, digits)


def collect_rows(cells: list[Cell]) -> list[dict]:
    """One row per finished fine-tune or probe and test set (the ``results.csv`` rows)."""
    rows = []
    for cell in cells:
        if cell.kind not in ("finetune", "probe") or not cell.done:
            continue
        done = read_done(cell)
        probe = cell.kind == "probe"
        for test_set, score in done["tests"].items():
            rows.append(
                {
                    "method": cell.method,
                    "encoder": _encoder_kind(cell.pretrain),
                    "decoder": "linear-ctc" if probe else cell.decoder,
                    "protocol": "probe" if probe else cell.protocol,
                    "fraction": cell.fraction,
                    "labels": done.get("labels", -1),
                    "seed": cell.seed,
                    "test_set": test_set,
                    "samples": score["samples"],
                    "word_acc": round(score["word_acc"], 2),
                    "one_minus_ned": _round(score.get("one_minus_ned")),
                    "cer": _round(score.get("cer"), 4),
                    "val_word_acc": _round(done.get("val_word_acc")),
                    "val_cer": _round(done.get("val_cer")),
                    "pretrain_steps": (
                        done["pretrain_steps"]
                        if "pretrain_steps" in done
                        else pretrain_steps(cell.pretrain)
                    ),
                    "finetune_steps": done["steps"],
                    "finetune_minutes": round(done["minutes"], 2),
                    "machine": done.get("machine", ""),
                }
            )
    return rows


def mean_std(values: list[float]) -> str:
    """``"m ± s (n)"`` over seeds (sample std), or the value alone for one seed."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} ({len(values)})"


def results_markdown(name: str, rows: list[dict]) -> str:
    """Paper-style table of the final encoders (and random init): rows = method ×
    decoder × protocol, columns = test set × label fraction, cells = word accuracy (%),
    mean ± std (number of seeds) where there are several; then the
    pretraining-length curve when the grid has snapshots."""
    main = [r for r in rows if r["encoder"] != "snapshot"]
    main.sort(key=lambda r: r["protocol"] == "probe")  # probe rows and column last
    tests = list(dict.fromkeys(r["test_set"] for r in main))
    fractions = sorted({r["fraction"] for r in main})
    keys = list(dict.fromkeys((r["method"], r["decoder"], r["protocol"]) for r in main))
    acc: dict[tuple, list[float]] = {}
    for r in main:
        key = (r["method"], r["decoder"], r["protocol"], r["test_set"], r["fraction"])
        acc.setdefault(key, []).append(float(r["word_acc"]))
    labels = {r["fraction"]: r["labels"] for r in main if r["protocol"] != "probe"}
    head = ["method", "decoder", "protocol"]
    columns = []
    for t in tests:
        for f in fractions:
            if any((*k, t, f) in acc for k in keys):
                columns.append((t, f))
                n = labels.get(f, -1)
                head.append(f"{t} @{f:g}" + (f" ({n:,} labels)" if n and n > 0 else ""))
    lines = [f"# {name}: word accuracy (%)", "", _row(head), "|" + "---|" * len(head)]
    for m, d, p in keys:
        cells = [m, d, p]
        for t, f in columns:
            values = acc.get((m, d, p, t, f))
            cells.append(mean_std(values) if values else "")
        lines.append(_row(cells))
    curve = curve_markdown(rows)
    return "\n".join(lines) + "\n" + (f"\n{curve}" if curve else "")


def _row(cells: list) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def curve_series(rows: list[dict]) -> dict[tuple, dict[int, list[float]]]:
    """(method, measure, test set) -> pretraining steps -> word accuracies over seeds,
    for every method that has snapshots; random init is each method's step 0."""
    curved = {r["method"] for r in rows if r["encoder"] == "snapshot"}
    fractions = {r["fraction"] for r in rows if r["encoder"] == "snapshot"}
    series: dict[tuple, dict[int, list[float]]] = {}
    for r in rows:
        if r["protocol"] == "probe":
            measure = "frozen linear probe"
        elif r["protocol"] == "semi" and r["fraction"] in fractions:
            measure = f"semi {r['fraction']:g} ({r['labels']:,} labels)"
        else:
            continue
        owners = curved if r["encoder"] == "random" else {r["method"]} & curved
        for method in owners:
            steps = series.setdefault((method, measure, r["test_set"]), {})
            steps.setdefault(int(r["pretrain_steps"]), []).append(float(r["word_acc"]))
    return series


def curve_markdown(rows: list[dict]) -> str:
    """The pretraining-length curve as a table: one row per method, measure and test
    set, one column per pretraining length (0 = random init)."""
    series = curve_series(rows)
    if not series:
        return ""
    steps = sorted({s for points in series.values() for s in points})
    head = ["method", "measure", "test set", *(f"{s:,} steps" for s in steps)]
    lines = ["## Pretraining-length curve: word accuracy (%)", "", _row(head)]
    lines.append("|" + "---|" * len(head))
    for (method, measure, test), points in sorted(series.items()):
        values = [mean_std(points[s]) if s in points else "" for s in steps]
        lines.append(_row([method, measure, test, *values]))
    return "\n".join(lines) + "\n"


def plot_pretraining_length(rows: list[dict], out: Path) -> Path:
    """Word accuracy against pretraining steps: one panel per measure and test set, one
    line per method (mean over seeds, error bars = std)."""
    from persec.plots import pyplot, save_figure

    plt = pyplot()
    series = curve_series(rows)
    panels = sorted({(measure, test) for _, measure, test in series})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for ax, (measure, test) in zip(axes[0], panels, strict=True):
        for (method, m, t), points in sorted(series.items()):
            if (m, t) != (measure, test):
                continue
            xs = sorted(points)
            ys = [statistics.mean(points[x]) for x in xs]
            err = [statistics.stdev(points[x]) if len(points[x]) > 1 else 0.0 for x in xs]
            ax.errorbar(xs, ys, yerr=err, fmt="o-", ms=4, lw=1, capsize=2, label=method)
        ax.set_xlabel("pretraining steps (0 = random init)")
        ax.set_ylabel("word accuracy (%)")
        ax.set_title(f"{measure}\n{test}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, out)


def report_path(config: ExperimentConfig) -> Path:
    """Where the reports of ``config`` go."""
    return Path(config.report_dir or config.output_dir)


def write_reports(config: ExperimentConfig, cells: list[Cell], rows: list[dict]) -> None:
    """``results.csv``, ``results.md`` and the plots under ``report_dir``."""
    out = report_path(config)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    (out / "results.md").write_text(results_markdown(config.name, rows))
    tuned = [r for r in rows if r["protocol"] != "probe" and r["encoder"] != "snapshot"]
    if tuned:
        plot_accuracy_vs_fraction(tuned, out / "accuracy-vs-fraction.png")
    if curve_series(rows):
        plot_pretraining_length(rows, out / "pretraining-length.png")
    pretrain_dirs = {c.method: c.directory for c in cells if c.kind == "pretrain" and c.done}
    if pretrain_dirs:
        plot_pretrain_comparison(pretrain_dirs, out / "pretrain-curves.png")


def plot_accuracy_vs_fraction(rows: list[dict], out: Path) -> Path:
    """Word accuracy (mean over seeds) against label fraction, one panel per test set,
    one line per method × decoder × protocol."""
    from persec.plots import pyplot, save_figure

    plt = pyplot()
    tests = list(dict.fromkeys(r["test_set"] for r in rows))
    fig, axes = plt.subplots(1, len(tests), figsize=(4.5 * len(tests), 3.6), squeeze=False)
    for ax, test in zip(axes[0], tests, strict=True):
        lines: dict[tuple, dict[float, list[float]]] = {}
        for r in rows:
            if r["test_set"] == test:
                key = (r["method"], r["decoder"], r["protocol"])
                lines.setdefault(key, {}).setdefault(r["fraction"], []).append(r["word_acc"])
        for (m, d, p), points in lines.items():
            xs = sorted(points)
            ys = [statistics.mean(points[x]) for x in xs]
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
