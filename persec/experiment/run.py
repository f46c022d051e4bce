"""Running ``persec experiment``: pretrain every method with the same budget, fine-tune
from each (and from random init) for every decoder, protocol, label fraction and seed,
probe every encoder, evaluate every model on every test set, and write the reports.

Each cell (see :mod:`persec.experiment.grid`) lives in a directory named by a hash of
its resolved config and of the encoder it starts from, with a ``done.json`` written
last: a second run skips finished cells and a killed run resumes from the cell it was
in (from its last Lightning checkpoint).

Layout of ``output_dir``::

    experiment.json              the grid as run (also in report_dir)
    data/heldout-test/           rendered held-out-font test set (LMDB)
    pretrain/<method>-<hash>/    persec pretrain output (+ snapshots/step-N/) + done.json
    probe/<method>-[pN-]<hash>/  frozen linear probe of one encoder: done.json
    finetune/<method>-[pN-]<decoder>-<protocol>-<fraction>-s<seed>-<hash>/
    results.csv  results.md  *.png  (report_dir)
"""

from __future__ import annotations

import copy
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from persec.config import save_config, to_dict
from persec.errors import ConfigError, PersecError
from persec.experiment.archive import archive_cell, is_archived, restore_cells, still_needed
from persec.experiment.grid import Cell, ExperimentConfig, encoder_config, plan, write_done
from persec.experiment.keys import stale_fields
from persec.experiment.reports import (
    HELDOUT,
    PROBE_TEST,
    collect_rows,
    pretrain_steps,
    report_path,
    write_reports,
)
from persec.models.recognizer import ENCODER_WEIGHTS
from persec.training.trainer import last_checkpoint

logger = logging.getLogger("persec")


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


def _run_pretrain(cell: Cell) -> dict:
    from persec.training.pretrain import pretrain

    cell.config.resume = last_checkpoint(cell.directory).is_file()
    result = pretrain(cell.config)
    return {"steps": result.steps, "minutes": result.seconds / 60, "final": result.final}


def _run_finetune(cell: Cell, test_sets: list[Path], batch_size: int) -> dict:
    from persec.evaluation.evaluate import evaluate
    from persec.inference.model import load_model
    from persec.training.finetune import finetune

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
        "val_cer": result.best_val_cer,
        "labels": _label_count(cell),
        "tests": {
            name: {"samples": s.samples, "word_acc": s.word_acc, "one_minus_ned": s.one_minus_ned}
            for name, s in zip(names, scores, strict=True)
        },
    }


def _run_probe(cell: Cell, pretrain_config) -> dict:
    """The frozen linear CTC probe of one encoder (random init: drawn from the cell's
    seed), on images rendered like the pretraining's validation set."""
    import torch

    from persec.models.encoders.base import build_encoder
    from persec.precision import AUTO, resolve_precision
    from persec.training.probe import make_probe_set, run_probe
    from persec.training.trainer import start_run
    from persec.weights import load_state, read_safetensors

    source = cell.pretrain
    start = time.time()
    model = copy.deepcopy(encoder_config(source, pretrain_config.model))
    model.in_channels = pretrain_config.image.channels
    model.input_height = pretrain_config.image.height
    trainer = copy.deepcopy(pretrain_config.trainer)
    trainer.seed = cell.seed
    start_run(trainer)
    encoder = build_encoder(model)
    if source is not None:
        weights = source.directory / ENCODER_WEIGHTS
        load_state(encoder, read_safetensors(weights, "cpu"), "encoder")
    save_config(cell.config, cell.directory / "config.yaml")  # checked by check_cached
    data = make_probe_set(cell.config, pretrain_config.data.synth, pretrain_config.image)
    precision, _ = resolve_precision(AUTO, "cpu")
    with torch.random.fork_rng():
        result = run_probe(encoder.eval(), None, data, cell.config, bf16=precision == "bf16-mixed")
    return {
        "steps": cell.config.steps,
        "minutes": (time.time() - start) / 60,
        "labels": cell.config.train_images,
        "probe": result.logs(),
        "tests": {
            PROBE_TEST: {
                "samples": cell.config.test_images,
                "word_acc": 100.0 * result.word_acc,
                "cer": result.cer,
            }
        },
    }


def _machine(cell: Cell) -> str:
    """Where the cell ran and in what precision (probes: the precision they choose)."""
    from persec.precision import AUTO, describe_machine

    trainer = getattr(cell.config, "trainer", None)
    if trainer is None:
        return describe_machine(AUTO, "cpu")
    return describe_machine(trainer.precision, trainer.accelerator)


def _label_count(cell: Cell) -> int:
    """Labelled images the fine-tune drew from (after the fraction)."""
    data = cell.config.data
    if data.train:
        return -1  # only known after opening the datasets; not needed for the report
    return max(1, round(data.synth_train * cell.fraction))


def prepare_test_sets(config: ExperimentConfig) -> list[Path]:
    """Render the held-out-font test set once (reused by every run) and list the real
    test sets that exist."""
    from persec.data.layouts import find_datasets
    from persec.data.render.config import HardSynthConfig, SynthConfig
    from persec.data.render.writer import render_lmdb
    from persec.data.splits import parse_part

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
        if not parse_part(path)[0].exists():  # DIR:PART names one part of DIR
            logger.warning("test set %s not found; skipped", path)
            continue
        sets.extend(find_datasets([path]))
    if not sets:
        raise PersecError("no test sets: set synth_test > 0 and/or test=[...]")
    return sets


def check_cached(cells: list[Cell], output_dir: Path, archive_dir: str = "") -> None:
    """Raise :class:`ConfigError` when a cell's recorded settings (``config.yaml``, in
    ``output_dir`` or in the archive) differ from those the grid now gives it: a
    default changed in code keeps a cell's key, and its results (or a killed run's
    checkpoint) must not be taken for the new settings'. Each cell, folder and setting
    is named."""
    stale = []
    for cell in cells:
        if cell.kind not in ("pretrain", "finetune", "probe"):
            continue
        places = [cell.directory]
        if archive_dir:  # a pretraining on a fresh machine: its dependents were restored
            places.append(Path(archive_dir) / cell.directory.relative_to(output_dir))
        for place in places:
            recorded = place / "config.yaml"
            changed = stale_fields(cell.config, recorded) if recorded.is_file() else []
            if changed:
                stale.append(f"{cell.label} ({place}): {'; '.join(changed)}")
    if stale:
        raise ConfigError(
            "experiment: cells were run with other settings than the grid now gives them "
            "(a default changed?); delete their folders (and their archived copies) to "
            "run them again, or set the old values:\n  " + "\n  ".join(stale)
        )


def run_experiment(
    config: ExperimentConfig,
    dry_run: bool = False,
    only: list[str] | None = None,
    report_only: bool = False,
) -> ExperimentResult:
    """Run (or resume) every cell of the grid and write the reports.

    Args:
        config: the grid.
        dry_run: plan and print the cells, train nothing.
        only: run only the cells of these methods (a grid split over sittings); the
            reports still hold every finished cell.
        report_only: run no cell; write the reports from the finished ones (local and
            archived), e.g. while another sitting's run of the grid is paused.

    Raises:
        ConfigError: ``only`` names a method the grid does not have.
    """
    from persec.config import load_config
    from persec.training.pretrain import PretrainConfig

    start = time.time()
    reports = report_path(config)
    cells = plan(config)
    out = Path(config.output_dir)
    if config.archive_dir and not dry_run:
        restored = restore_cells(cells, out, config.archive_dir)
        if restored:
            say(f"{len(restored)} finished cell(s) restored from {config.archive_dir}")
    check_cached(cells, out, config.archive_dir)
    methods = {c.method for c in cells}
    unknown = sorted(set(only or []) - methods)
    if unknown:
        raise ConfigError(
            f"experiment: --only {', '.join(unknown)}: not a method of this grid "
            f"(have: {', '.join(sorted(methods))})"
        )
    if dry_run:
        for cell in cells:
            state = "done" if cell.done else "to run"
            if not cell.done and config.archive_dir and is_archived(cell, out, config.archive_dir):
                state = "archived"
            print(f"{cell.label:<52} {state:<7} {cell.directory}")
        return ExperimentResult([], [], [c.label for c in cells if c.done], 0.0, reports)
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "experiment.json").write_text(json.dumps(to_dict(config), indent=2))
    test_sets = [] if report_only else prepare_test_sets(config)
    base = load_config(PretrainConfig, config.pretrain_config, config.pretrain)
    ran, cached = [], []
    for i, cell in enumerate(cells, 1):
        prefix = f"[{i}/{len(cells)}] {cell.label}"
        if cell.done:
            say(f"{prefix}: cached ({cell.directory.name})")
            cached.append(cell.label)
            if config.archive_dir:  # it may have finished before archive_dir was set
                archive_cell(cell, out, config.archive_dir)
            continue
        if report_only or (only and cell.method not in only):
            continue
        if cell.kind == "pretrain" and not still_needed(cell, cells):
            say(f"{prefix}: not needed (every cell that starts from it is done)")
            continue
        if cell.pretrain is not None and not cell.pretrain.done:
            # A pretraining stopped by its time budget before this snapshot's step.
            say(f"{prefix}: skipped, no encoder at {cell.pretrain.directory}")
            continue
        say(f"{prefix}: running in {cell.directory}")
        t0 = time.time()
        if cell.kind == "pretrain":
            payload = _run_pretrain(cell)
        elif cell.kind == "probe":
            cell.directory.mkdir(parents=True, exist_ok=True)
            payload = _run_probe(cell, base)
        else:
            payload = _run_finetune(cell, test_sets, config.eval_batch_size)
        if cell.kind != "pretrain":
            payload["pretrain_steps"] = pretrain_steps(cell.pretrain)
        write_done(cell, {**payload, "machine": _machine(cell)})
        if config.archive_dir:
            archive_cell(cell, out, config.archive_dir)
        ran.append(cell.label)
        say(
            f"{prefix}: done in {(time.time() - t0) / 60:.1f} min "
            f"(total {(time.time() - start) / 60:.1f} min)"
        )
    rows = collect_rows(cells)
    write_reports(config, cells, rows)
    return ExperimentResult(rows, ran, cached, time.time() - start, reports)


def format_summary(result: ExperimentResult) -> str:
    """A one-paragraph summary for the terminal."""
    minutes = result.seconds / 60
    return (
        f"{len(result.ran)} cell(s) run, {len(result.cached)} cached, {minutes:.1f} min; "
        f"results in {result.report_dir / 'results.csv'} and results.md"
    )
