"""The label-efficiency experiment (``persec experiment``): pretrain every method with
the same budget, fine-tune from each (and from random init) for every decoder,
protocol and label fraction with the same budget, evaluate every model on every test
set, and write ``results.csv``, ``results.md`` and plots.

A *cell* is one pretraining or one fine-tune+evaluation. Each lives in a directory
named by a hash of its resolved config (and, for fine-tunes, of the pretraining it
starts from), with a ``done.json`` written last: a second run skips finished cells and
a killed run resumes from the cell it was in (from its last Lightning checkpoint).

Layout of ``output_dir``::

    experiment.json              the grid as run (also in report_dir)
    data/heldout-test/           rendered held-out-font test set (LMDB)
    pretrain/<method>-<hash>/    persec pretrain output + done.json
    finetune/<method>-<decoder>-<protocol>-<fraction>-<hash>/   finetune output + done.json
    results.csv  results.md  accuracy-vs-fraction.png  pretrain-curves.png  (report_dir)
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from persec.config import load_config, to_dict
from persec.errors import ConfigError, PersecError
from persec.experiment_reports import (
    plot_accuracy_vs_fraction,
    plot_pretrain_comparison,
    results_markdown,
)
from persec.models.recognizer import ENCODER_CONFIG, ENCODER_WEIGHTS, read_encoder_config
from persec.training import last_checkpoint

logger = logging.getLogger("persec")

PROTOCOLS = ("frozen", "semi")
SCRATCH = "scratch"
DONE = "done.json"
HELDOUT = "synth_heldout_test"
CSV_COLUMNS = [
    "method",
    "decoder",
    "protocol",
    "fraction",
    "labels",
    "test_set",
    "samples",
    "word_acc",
    "one_minus_ned",
    "val_word_acc",
    "pretrain_steps",
    "finetune_steps",
    "finetune_minutes",
]


@dataclass
class ExperimentConfig:
    """One grid of the label-efficiency experiment (``configs/experiments/*.yaml``).

    Attributes:
        name: shown in reports.
        output_dir: where cells, data and results go.
        report_dir: where ``results.csv``, ``results.md`` and the plots go (empty =
            ``output_dir``); lets a second grid (e.g. ablations) share the cells of a
            first one in the same ``output_dir`` without overwriting its reports.
        pretrain_config: base ``persec pretrain`` config shared by every method.
        pretrain: overrides applied to it for every method (the shared budget: steps,
            minutes, data, seed).
        methods: method name -> extra pretraining overrides, e.g. ``{scratch: [],
            seqclr: [objective=seqclr], persec: []}``; the name ``scratch`` means random
            init (no pretraining).
        encoders: method name -> an encoder pretrained elsewhere (``encoder.safetensors``
            or its directory, with ``encoder.json``): fine-tuned like the others, not
            pretrained here (e.g. a longer pretraining run to compare with).
        finetune_configs: decoder name -> base ``persec finetune`` config.
        finetune: overrides applied to every fine-tune (the shared budget and the
            labelled pool, e.g. ``data.synth_train=10000 data.synth_seed=1``).
        frozen: extra overrides for the frozen protocol only (after ``finetune``): a
            decoder trained alone on fixed features usually wants another learning rate.
        decoders: which entries of ``finetune_configs`` to run.
        protocols: ``frozen`` (decoder evaluation: encoder frozen) and/or ``semi``
            (whole model fine-tuned).
        fractions: label fractions of the labelled pool, for every protocol.
        frozen_fractions: fractions for the frozen protocol when it should differ
            (empty = ``fractions``; SeqCLR's decoder evaluation uses all labels: [1.0]).
        test: real test sets (dataset folders or folders of them); missing paths are
            skipped with a warning so configs stay portable.
        synth_test: size of the rendered held-out-font test set (0 = none).
        synth_test_seed: its renderer seed (apart from every training/validation seed).
        synth_test_hard: render it with the hard preset.
        eval_batch_size: images per forward pass when testing.
    """

    name: str = "experiment"
    output_dir: str = "runs/experiments/experiment"
    report_dir: str = ""
    pretrain_config: str = "configs/pretrain/cpu.yaml"
    pretrain: list[str] = field(default_factory=list)
    # Empty by default: YAML mappings merge into defaults, so a default grid here
    # could not be narrowed by a config file.
    methods: dict[str, list[str]] = field(default_factory=dict)
    encoders: dict[str, str] = field(default_factory=dict)
    finetune_configs: dict[str, str] = field(
        default_factory=lambda: {
            "ctc": "configs/finetune/cpu-ctc.yaml",
            "attn": "configs/finetune/cpu-attn.yaml",
        }
    )
    finetune: list[str] = field(default_factory=list)
    frozen: list[str] = field(default_factory=list)
    decoders: list[str] = field(default_factory=lambda: ["ctc"])
    protocols: list[str] = field(default_factory=lambda: ["frozen", "semi"])
    fractions: list[float] = field(default_factory=lambda: [0.1, 1.0])
    frozen_fractions: list[float] = field(default_factory=list)
    test: list[str] = field(default_factory=list)
    synth_test: int = 1000
    synth_test_seed: int = 7
    synth_test_hard: bool = False
    eval_batch_size: int = 128


@dataclass
class Cell:
    """One unit of work: a pretraining or a fine-tune (+ evaluation)."""

    kind: str  # "pretrain" | "finetune" | "external" (an encoder pretrained elsewhere)
    method: str
    directory: Path
    config: Any  # PretrainConfig | FinetuneConfig | EncoderConfig (external)
    decoder: str = ""
    protocol: str = ""
    fraction: float = 1.0
    pretrain: Cell | None = None
    key: str = ""  # external encoders: the hash of their weights

    @property
    def done(self) -> bool:
        if self.kind == "external":
            return (self.directory / ENCODER_WEIGHTS).is_file()
        return (self.directory / DONE).is_file()

    @property
    def label(self) -> str:
        if self.kind == "pretrain":
            return f"pretrain {self.method}"
        return f"finetune {self.method} {self.decoder} {self.protocol} {self.fraction:g}"


@dataclass
class ExperimentResult:
    """What a run did and where the results are."""

    rows: list[dict]
    ran: list[str]
    cached: list[str]
    seconds: float
    report_dir: Path


def say(message: str) -> None:
    """A progress line on stderr (the grid runs for hours; each cell says where it is)."""
    print(f"experiment: {message}", file=sys.stderr, flush=True)


def config_hash(config: Any, extra: str = "") -> str:
    """Short stable hash of a resolved config (``output_dir``/``resume`` and the
    progress bar excluded, since they do not change the result)."""
    data = to_dict(config)
    data.pop("output_dir", None)
    data.pop("resume", None)
    data.get("trainer", {}).pop("progress", None)
    blob = json.dumps(data, sort_keys=True, default=str) + extra
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def _check(config: ExperimentConfig) -> None:
    if not config.methods and not config.encoders:
        raise ConfigError("experiment: methods and encoders are both empty")
    both = set(config.methods) & set(config.encoders)
    if both:
        raise ConfigError(f"experiment: {', '.join(sorted(both))} in both methods and encoders")
    for decoder in config.decoders:
        if decoder not in config.finetune_configs:
            raise ConfigError(
                f"experiment: decoder {decoder!r} has no entry in finetune_configs "
                f"(have: {', '.join(config.finetune_configs) or 'none'})"
            )
    for protocol in config.protocols:
        if protocol not in PROTOCOLS:
            raise ConfigError(
                f"experiment: protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}"
            )
    for f in [*config.fractions, *config.frozen_fractions]:
        if not 0.0 < f <= 1.0:
            raise ConfigError(f"experiment: label fraction must be in (0, 1], got {f}")


def plan(config: ExperimentConfig) -> list[Cell]:
    """Every cell of the grid, pretrainings first; configs are resolved (so a bad
    override fails here, before any training)."""
    from persec.finetune import FinetuneConfig
    from persec.pretrain import OBJECTIVES, PretrainConfig

    _check(config)
    out = Path(config.output_dir)
    try:
        # Random init uses the encoder every method pretrains (same architecture).
        base_encoder = load_config(PretrainConfig, config.pretrain_config, config.pretrain).model
    except ConfigError as e:
        raise ConfigError(f"experiment: pretraining: {e}") from e
    pretrained: dict[str, Cell | None] = {}
    cells: list[Cell] = []
    for method, overrides in config.methods.items():
        if method == SCRATCH:
            pretrained[method] = None
            continue
        try:
            pc = load_config(PretrainConfig, config.pretrain_config, [*config.pretrain, *overrides])
        except ConfigError as e:
            raise ConfigError(f"experiment: method {method}: {e}") from e
        if pc.objective not in OBJECTIVES:
            raise ConfigError(
                f"experiment: method {method}: objective must be one of "
                f"{', '.join(OBJECTIVES)}, got {pc.objective!r}"
            )
        directory = out / "pretrain" / f"{method}-{config_hash(pc)}"
        pc.output_dir = str(directory)
        cell = Cell("pretrain", method, directory, pc)
        pretrained[method] = cell
        cells.append(cell)
    for method, path in config.encoders.items():
        pretrained[method] = _external_encoder(method, path)
    for decoder in config.decoders:
        for protocol in config.protocols:
            overrides = list(config.finetune)
            if protocol == "frozen":
                overrides += config.frozen
            try:
                base = load_config(FinetuneConfig, config.finetune_configs[decoder], overrides)
            except ConfigError as e:
                raise ConfigError(f"experiment: decoder {decoder}: {e}") from e
            fractions = config.fractions
            if protocol == "frozen" and config.frozen_fractions:
                fractions = config.frozen_fractions
            for fraction in fractions:
                for method, source in pretrained.items():
                    fc = copy.deepcopy(base)
                    fc.data.label_fraction = fraction
                    fc.freeze_encoder = protocol == "frozen"
                    init = str(source.directory / ENCODER_WEIGHTS) if source else ""
                    # Every method fine-tunes the encoder architecture it pretrained.
                    if source is None:
                        encoder = base_encoder
                    elif source.kind == "external":
                        encoder = source.config  # its EncoderConfig
                    else:
                        encoder = source.config.model
                    fc.model.encoder = copy.deepcopy(encoder)
                    key = config_hash(fc, extra=_source_key(source))
                    name = f"{method}-{decoder}-{protocol}-{fraction:g}-{key}"
                    directory = out / "finetune" / name
                    fc.init_encoder = init
                    fc.output_dir = str(directory)
                    cells.append(
                        Cell("finetune", method, directory, fc, decoder, protocol, fraction, source)
                    )
    return cells


def _external_encoder(method: str, path: str) -> Cell:
    """A pseudo-cell for an encoder pretrained elsewhere (always "done")."""
    directory = Path(path)
    if directory.is_file():
        directory = directory.parent
    weights, meta = directory / ENCODER_WEIGHTS, directory / ENCODER_CONFIG
    if not weights.is_file() or not meta.is_file():
        raise ConfigError(
            f"experiment: encoders.{method}: {directory} holds no {ENCODER_WEIGHTS} + "
            f"{ENCODER_CONFIG} (give a `persec pretrain` output directory)"
        )
    model = read_encoder_config(meta)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    return Cell("external", method, directory, model, key=digest)


def _source_key(source: Cell | None) -> str:
    """What a fine-tune's cache key depends on besides its own config."""
    if source is None:
        return SCRATCH
    if source.kind == "external":  # the weights themselves, wherever they live
        return source.key
    return source.directory.name


def _pretrain_steps(cell: Cell | None) -> int | str:
    """Steps of the pretraining a fine-tune started from (0: random init)."""
    if cell is None:
        return 0
    if cell.kind == "external":
        from persec.plots import read_metrics

        try:
            series = read_metrics(cell.directory / "metrics.csv")
            return 1 + max(step for step, _ in series.get("train/loss", []))
        except (PersecError, ValueError):
            return ""
    return _read_done(cell)["steps"]


def _run_pretrain(cell: Cell) -> dict:
    from persec.pretrain import pretrain

    cell.config.resume = last_checkpoint(cell.directory).is_file()
    result = pretrain(cell.config)
    return {"steps": result.steps, "minutes": result.seconds / 60, "final": result.final}


def _run_finetune(cell: Cell, test_sets: list[Path], batch_size: int) -> dict:
    from persec.evaluate import evaluate, load_model
    from persec.finetune import finetune

    cell.config.resume = last_checkpoint(cell.directory).is_file()
    result = finetune(cell.config)
    model = load_model(result.model_dir)
    scores = evaluate(model, test_sets, batch_size=batch_size, progress=False)
    names = [
        HELDOUT if p.name == "heldout-test" else s.name
        for p, s in zip(test_sets, scores, strict=True)
    ]
    return {
        "steps": result.steps,
        "minutes": result.seconds / 60,
        "val_word_acc": result.best_val_word_acc,
        "labels": _label_count(cell),
        "tests": {
            name: {"samples": s.samples, "word_acc": s.word_acc, "one_minus_ned": s.one_minus_ned}
            for name, s in zip(names, scores, strict=True)
        },
    }


def _label_count(cell: Cell) -> int:
    """Labelled images the fine-tune drew from (after the fraction)."""
    data = cell.config.data
    if data.train:
        return -1  # only known after opening the datasets; not needed for the report
    return max(1, round(data.synth_train * cell.fraction))


def _write_done(cell: Cell, payload: dict) -> None:
    payload = {"cell": cell.label, "method": cell.method, **payload}
    tmp = cell.directory / (DONE + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float))
    tmp.replace(cell.directory / DONE)


def _read_done(cell: Cell) -> dict:
    return json.loads((cell.directory / DONE).read_text())


def prepare_test_sets(config: ExperimentConfig) -> list[Path]:
    """Render the held-out-font test set once (reused by every run) and list the real
    test sets that exist."""
    from persec.commands.render import render_lmdb
    from persec.data.synth import HardSynthConfig, SynthConfig
    from persec.evaluate import find_datasets

    sets: list[Path] = []
    if config.synth_test:
        out = Path(config.output_dir) / "data" / "heldout-test"
        if not (out / "render.yaml").is_file():
            for name in ("data.mdb", "lock.mdb"):
                (out / name).unlink(missing_ok=True)
            synth = HardSynthConfig() if config.synth_test_hard else SynthConfig()
            say(f"rendering {config.synth_test} held-out-font test images to {out}")
            render_lmdb(out, config.synth_test, synth, "test", config.synth_test_seed, workers=2)
        sets.append(out)
    for path in config.test:
        if not Path(path).exists():
            logger.warning("test set %s not found; skipped", path)
            continue
        sets.extend(find_datasets([path]))
    if not sets:
        raise PersecError("no test sets: set synth_test > 0 and/or test=[...]")
    return sets


def run_experiment(config: ExperimentConfig, dry_run: bool = False) -> ExperimentResult:
    """Run (or resume) every cell of the grid and write the reports.

    Args:
        config: the grid.
        dry_run: plan and print the cells, train nothing.
    """
    start = time.time()
    reports = report_path(config)
    cells = plan(config)
    if dry_run:
        for cell in cells:
            state = "done" if cell.done else "to run"
            print(f"{cell.label:<44} {state:<7} {cell.directory}")
        return ExperimentResult([], [], [c.label for c in cells if c.done], 0.0, reports)
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "experiment.json").write_text(json.dumps(to_dict(config), indent=2))
    test_sets = prepare_test_sets(config)
    ran, cached = [], []
    for i, cell in enumerate(cells, 1):
        prefix = f"[{i}/{len(cells)}] {cell.label}"
        if cell.done:
            say(f"{prefix}: cached ({cell.directory.name})")
            cached.append(cell.label)
            continue
        say(f"{prefix}: running in {cell.directory}")
        t0 = time.time()
        if cell.kind == "pretrain":
            payload = _run_pretrain(cell)
        else:
            payload = _run_finetune(cell, test_sets, config.eval_batch_size)
        _write_done(cell, payload)
        ran.append(cell.label)
        say(
            f"{prefix}: done in {(time.time() - t0) / 60:.1f} min (total {(time.time() - start) / 60:.1f} min)"
        )
    rows = collect_rows(cells)
    write_reports(config, cells, rows)
    return ExperimentResult(rows, ran, cached, time.time() - start, reports)


def collect_rows(cells: list[Cell]) -> list[dict]:
    """One row per fine-tuned model and test set (the ``results.csv`` rows)."""
    rows = []
    for cell in cells:
        if cell.kind != "finetune" or not cell.done:
            continue
        done = _read_done(cell)
        pre_steps = _pretrain_steps(cell.pretrain)
        for test_set, score in done["tests"].items():
            rows.append(
                {
                    "method": cell.method,
                    "decoder": cell.decoder,
                    "protocol": cell.protocol,
                    "fraction": cell.fraction,
                    "labels": done.get("labels", -1),
                    "test_set": test_set,
                    "samples": score["samples"],
                    "word_acc": round(score["word_acc"], 2),
                    "one_minus_ned": round(score["one_minus_ned"], 2),
                    "val_word_acc": (
                        "" if done.get("val_word_acc") is None else round(done["val_word_acc"], 2)
                    ),
                    "pretrain_steps": pre_steps,
                    "finetune_steps": done["steps"],
                    "finetune_minutes": round(done["minutes"], 2),
                }
            )
    return rows


def write_reports(config: ExperimentConfig, cells: list[Cell], rows: list[dict]) -> None:
    """``results.csv``, ``results.md`` and the two plots under ``report_dir``."""
    out = report_path(config)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    (out / "results.md").write_text(results_markdown(config.name, rows))
    if rows:
        plot_accuracy_vs_fraction(rows, out / "accuracy-vs-fraction.png")
    pretrain_dirs = {c.method: c.directory for c in cells if c.kind == "pretrain" and c.done}
    if pretrain_dirs:
        plot_pretrain_comparison(pretrain_dirs, out / "pretrain-curves.png")


def report_path(config: ExperimentConfig) -> Path:
    """Where the reports of ``config`` go."""
    return Path(config.report_dir or config.output_dir)


def format_summary(result: ExperimentResult) -> str:
    """A one-paragraph summary for the terminal."""
    minutes = result.seconds / 60
    return (
        f"{len(result.ran)} cell(s) run, {len(result.cached)} cached, {minutes:.1f} min; "
        f"results in {result.report_dir / 'results.csv'} and results.md"
    )
