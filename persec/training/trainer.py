"""Shared Lightning plumbing for ``persec pretrain`` and ``persec finetune``: the
trainer config, loggers, checkpoints (written atomically, read without unpickling
code) and seeding; the callbacks it adds are in :mod:`persec.training.callbacks`.
"""

from __future__ import annotations

import csv
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from persec.errors import PersecError
from persec.precision import AUTO, resolve_precision
from persec.training.callbacks import (
    AnnouncePrecision,
    ExactResume,
    LogLastStep,
    PeriodicCheckpoint,
)
from persec.training.slurm import SlurmRequeue, on_slurm, slurm_plugins


@dataclass
class TrainerConfig:
    """How long and where to train.

    Attributes:
        max_steps: optimiser steps.
        max_minutes: wall-clock budget (0 = none); training stops at whichever comes
            first. The schedule follows ``max_steps``, so size it to fit the budget.
        val_every: validate every N steps (0 = only at the end).
        log_every: log training scalars every N steps.
        precision: ``auto`` (``bf16-mixed`` where the CPU or GPU runs bf16 natively,
            ``32-true`` elsewhere; see :mod:`persec.precision`) or any Lightning
            precision, e.g. ``32-true`` or ``bf16-mixed``, used as given.
        accelerator: ``auto``, ``cpu`` or ``gpu``.
        devices: devices (processes on CPU) per node; more than one trains with DDP.
        num_nodes: nodes.
        strategy: Lightning strategy; ``auto`` is DDP (gloo on CPU, NCCL on GPU)
            when ``devices * num_nodes > 1``.
        sync_batchnorm: BatchNorm statistics over the global batch under DDP (else
            per rank, with rank 0's buffers broadcast at every step).
        compile: ``torch.compile`` each part of the encoder (stem, stages,
            aggregators) before training; weights and checkpoints are unchanged.
        early_stop: stop after this many validations in a row without a new best of
            the monitored metric (fine-tuning: ``monitor``); 0 = never.
            The best checkpoint is what the run keeps either way, and the learning-rate
            schedule still follows ``max_steps``.
        monitor: fine-tuning: the validation metric that picks the best checkpoint and
            that ``early_stop`` watches: ``word_acc`` (higher is better) or ``cer``
            (character error rate over all validation sets, lower is better) [ours]:
            with few labels, one word is a step of the noise size (0.2 points of 500
            words) while the CER still moves.
        checkpoint_every: also write ``checkpoints/last.ckpt`` every N steps (0 = at
            every validation and at the end); what a preempted run resumes from.
        max_nonfinite: stop after this many consecutive steps with a NaN/Inf loss
            (each one is skipped: no update, a warning).
        seed: global seed (model init, shuffling, augmentation).
        threads: torch CPU threads (0 = torch's default).
        keep_freed_memory: glibc only: keep freed memory in the process instead of
            handing big blocks back to the OS, so each step's large activations reuse
            pages already mapped (see :func:`keep_freed_memory`); the process then
            holds its peak memory until it ends.
        progress: show a progress bar.
    """

    max_steps: int = 100_000
    max_minutes: float = 0.0
    val_every: int = 1000
    log_every: int = 50
    precision: str = AUTO
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    sync_batchnorm: bool = False
    compile: bool = False
    checkpoint_every: int = 0
    early_stop: int = 0
    monitor: str = "word_acc"
    max_nonfinite: int = 20
    seed: int = 0
    threads: int = 0
    keep_freed_memory: bool = True
    progress: bool = True


def quiet_lightning() -> None:
    """Silence Lightning's start-up chatter that says nothing about the run."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*Experiment logs directory.*exists and is not empty.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    warnings.filterwarnings("ignore", ".*isinstance.*treespec.*")
    # persec's sampler and shard stream restart mid-epoch exactly, and a
    # skipped NaN step is reported by the system itself.
    warnings.filterwarnings("ignore", ".*your dataloader is not resumable.*")
    warnings.filterwarnings("ignore", ".*`training_step` returned `None`.*")
    warnings.filterwarnings("ignore", ".*Checkpoint directory .* exists and is not empty.*")
    warnings.filterwarnings("ignore", ".*Total length of `list` across ranks is zero.*")
    # LogLastStep logs the last step of a run shorter than log_every.
    warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file in the same directory, flushed to disk,
    then renamed over the target: a kill during a save leaves the previous checkpoint
    whole. Reading never unpickles code (``weights_only=True``)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        """Write ``checkpoint`` to ``path`` atomically (temporary file, fsync, rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        try:  # make the rename itself durable
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:  # some filesystems cannot fsync a directory
            pass

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        """Read ``path`` with :func:`load_checkpoint_safely` (always ``weights_only``,
        onto the CPU unless ``map_location`` says otherwise)."""
        return load_checkpoint_safely(path, map_location or "cpu")


def load_checkpoint_safely(path: str | Path, map_location="cpu"):
    """``torch.load(path, weights_only=True)``: tensors and plain values only; a file
    that holds anything else (e.g. pickled code) is refused before any of it runs.

    Raises:
        PersecError: one line naming the file and what torch refused.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        # torch's message goes on to explain how to load the file unsafely: keep its
        # first line, which says what was refused.
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PersecError(
            f"cannot read checkpoint {path} safely ({reason}); persec only loads tensors "
            "and plain values from checkpoints and never runs code stored in them"
        ) from e


def compile_encoder(encoder: torch.nn.Module) -> torch.nn.Module:
    """Compile each child of ``encoder`` in place (``nn.Module.compile``): the objectives
    call the encoder's parts separately (``encode_low``, aggregators), and parameter
    names stay as they are, so checkpoints and saved weights do not change."""
    for child in encoder.children():
        child.compile()
    return encoder


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory in the process; False where that is not glibc.

    By default glibc serves blocks above 32 MB (e.g. the stem's 64×32×32×128 fp32
    maps) with fresh ``mmap`` calls and unmaps them when freed, so every training step
    page-faults its largest tensors in again: ReLU over a fresh 33 MB output took 51 ms
    here, 13 ms on reused memory. No mmap for big blocks and no trimming below 1 GiB
    made CPU training 1.08-1.11× faster (docs/throughput.md). Affects allocations made
    after the call; DataLoader workers forked later inherit it.
    """
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**30))


def settle_precision(config: TrainerConfig) -> str | None:
    """Replace ``config.precision=auto`` by the precision this machine trains fastest
    in (so the run's ``config.yaml`` records what ran) and return the line that says
    which and why; None when the config names a precision, which is left as it is."""
    if config.precision != AUTO:
        return None
    config.precision, reason = resolve_precision(AUTO, config.accelerator)
    return f"persec: training in {config.precision} (trainer.precision=auto: {reason})"


def start_run(config: TrainerConfig) -> None:
    """Set threads, the allocator (``config.keep_freed_memory``) and seed every
    generator from ``config.seed``. Call it before the model is built: initial weights
    are drawn from the seeded generators."""
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.keep_freed_memory:
        keep_freed_memory()
    L.seed_everything(config.seed, workers=True, verbose=False)


def build_trainer(
    config: TrainerConfig,
    output_dir: Path,
    monitor: str | None,
    mode: str = "max",
    grad_clip: float = 0.0,
    callbacks: list[Callback] | None = None,
) -> tuple[L.Trainer, ModelCheckpoint]:
    """A Lightning trainer writing TensorBoard logs, ``metrics.csv`` and checkpoints
    under ``output_dir`` (``checkpoints/last.ckpt`` for ``--resume``); gradients are
    clipped to norm ``grad_clip`` (0 = off). ``callbacks`` are added to persec's own.
    ``config.early_stop`` stops on ``monitor`` (ignored without one).
    ``config.precision=auto`` is settled here (:func:`settle_precision`) and
    announced when training starts.

    The data modules shard the training set over ranks themselves (Lightning's
    distributed sampler is off): see :class:`~persec.data.sampler.ResumableSampler`.
    In a SLURM task the job is requeued before its time limit
    (:mod:`persec.training.slurm`).
    """
    quiet_lightning()
    if config.checkpoint_every < 0 or config.max_nonfinite < 1 or config.early_stop < 0:
        raise PersecError(
            "trainer.checkpoint_every and trainer.early_stop must be >= 0 and "
            "trainer.max_nonfinite >= 1"
        )
    checkpoint = ModelCheckpoint(
        dirpath=output_dir / "checkpoints",
        filename="best",
        monitor=monitor,
        mode=mode,
        save_last=True,
        save_top_k=1 if monitor else 0,
        auto_insert_metric_name=False,
        enable_version_counter=False,  # one last.ckpt, also written by PeriodicCheckpoint
    )
    precision_line = settle_precision(config)
    extra: list[Callback] = [ExactResume(), LogLastStep(), checkpoint]
    if precision_line:
        extra.append(AnnouncePrecision(precision_line))
    if config.early_stop and monitor:
        extra.append(
            EarlyStopping(monitor, mode=mode, patience=config.early_stop, check_finite=False)
        )
    every = config.checkpoint_every
    if not every and monitor is None and config.val_every > 0:
        # Lightning writes last.ckpt at a validation only when it also wrote a top-k
        # checkpoint, which it never does without a monitored metric (pretraining):
        # write it at the validation cadence, or a killed run could not resume.
        every = config.val_every
    if every:
        extra.append(PeriodicCheckpoint(every, last_checkpoint(output_dir)))
    if on_slurm():
        extra.append(SlurmRequeue(last_checkpoint(output_dir)))
    loggers = [
        TensorBoardLogger(output_dir, name="tb", version=""),
        CSVLogger(output_dir, name="", version=""),
    ]
    trainer = L.Trainer(
        max_steps=config.max_steps,
        max_epochs=-1,
        max_time={"minutes": config.max_minutes} if config.max_minutes > 0 else None,
        val_check_interval=config.val_every if config.val_every > 0 else None,
        check_val_every_n_epoch=None if config.val_every > 0 else 1,
        log_every_n_steps=config.log_every,
        precision=config.precision,
        accelerator=config.accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy=config.strategy,
        sync_batchnorm=config.sync_batchnorm,
        use_distributed_sampler=False,
        plugins=[AtomicCheckpointIO(), *slurm_plugins()],
        callbacks=[*extra, *(callbacks or [])],
        logger=loggers,
        enable_progress_bar=config.progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        gradient_clip_val=grad_clip or None,
        default_root_dir=output_dir,
    )
    return trainer, checkpoint


def read_checkpoint_state(path: str | Path, prefix: str = "") -> dict[str, torch.Tensor]:
    """Tensors of a Lightning checkpoint's ``state_dict`` (``weights_only`` load: no
    code runs), with ``prefix`` stripped from the keys that have it."""
    ckpt = load_checkpoint_safely(path)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise PersecError(f"{path} holds no state_dict")
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def last_checkpoint(output_dir: str | Path) -> Path:
    """Where a run in ``output_dir`` keeps its latest Lightning checkpoint."""
    return Path(output_dir) / "checkpoints" / "last.ckpt"


def resume_path(output_dir: Path, resume: bool) -> str | None:
    """``checkpoints/last.ckpt`` under ``output_dir`` when resuming (error if absent)."""
    if not resume:
        return None
    last = last_checkpoint(output_dir)
    if not last.is_file():
        raise PersecError(f"--resume: no checkpoint at {last}")
    return os.fspath(last)


def _merge_metrics(old: Path, new: Path, out: Path) -> None:
    """``old`` rows logged before the first step of ``new``, then ``new``'s rows (the
    steps a killed run logged after its last checkpoint were run again)."""
    with open(old, newline="") as f:
        old_reader = csv.DictReader(f)
        old_rows, fields = list(old_reader), list(old_reader.fieldnames or [])
    new_rows: list[dict] = []
    if new.is_file():
        with open(new, newline="") as f:
            new_reader = csv.DictReader(f)
            new_rows = list(new_reader)
            fields += [k for k in new_reader.fieldnames or [] if k not in fields]
    first = min((int(r["step"]) for r in new_rows if r.get("step")), default=None)
    kept = [r for r in old_rows if first is None or int(r.get("step") or 0) < first]
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept + new_rows)
    os.replace(tmp, out)


@contextmanager
def kept_metrics(output_dir: Path, resume: bool, owner: bool = True) -> Iterator[None]:
    """Keep ``metrics.csv`` across ``--resume`` (Lightning's CSV logger starts a new
    file): the earlier rows wait in ``metrics-before-resume.csv`` and are merged back
    when training ends, even if it ends with an error. ``owner`` is the process that
    keeps the file (global rank 0); on the other ranks nothing is touched."""
    metrics = output_dir / "metrics.csv"
    stash = output_dir / "metrics-before-resume.csv"
    if not resume and owner and stash.is_file():  # left by a killed run: not ours
        stash.unlink()
    if resume and owner and metrics.is_file():
        if stash.is_file():  # an earlier resume was killed before merging
            _merge_metrics(stash, metrics, stash)
        else:
            os.replace(metrics, stash)
    try:
        yield
    finally:
        # Only the process that stashed merges: under DDP the other ranks see the stash
        # too, and two merges into one file race.
        if resume and owner and stash.is_file():
            _merge_metrics(stash, metrics, metrics)
            stash.unlink()
