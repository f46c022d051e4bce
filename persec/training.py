"""Shared Lightning plumbing for ``persec finetune`` (and later ``pretrain``): the
trainer config, loggers, checkpoints, seeding and safe checkpoint reading.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from persec.errors import PersecError


@dataclass
class TrainerConfig:
    """How long and where to train.

    Attributes:
        max_steps: optimiser steps.
        max_minutes: wall-clock budget (0 = none); training stops at whichever comes
            first. The schedule follows ``max_steps``, so size it to fit the budget.
        val_every: validate every N steps (0 = only at the end).
        log_every: log training scalars every N steps.
        precision: Lightning precision, e.g. ``32-true`` or ``bf16-mixed``.
        accelerator: ``auto``, ``cpu`` or ``gpu``.
        devices: devices per node.
        num_nodes: nodes.
        seed: global seed (model init, shuffling, augmentation).
        threads: torch CPU threads (0 = torch's default).
        progress: show a progress bar.
    """

    max_steps: int = 100_000
    max_minutes: float = 0.0
    val_every: int = 1000
    log_every: int = 50
    precision: str = "32-true"
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    seed: int = 0
    threads: int = 0
    progress: bool = True


def quiet_lightning() -> None:
    """Silence Lightning's start-up chatter that says nothing about the run."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*Experiment logs directory.*exists and is not empty.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    warnings.filterwarnings("ignore", ".*isinstance.*treespec.*")


def build_trainer(
    config: TrainerConfig,
    output_dir: Path,
    monitor: str | None,
    mode: str = "max",
    grad_clip: float = 0.0,
) -> tuple[L.Trainer, ModelCheckpoint]:
    """A Lightning trainer writing TensorBoard logs, ``metrics.csv`` and checkpoints
    under ``output_dir`` (``checkpoints/last.ckpt`` for ``--resume``); gradients are
    clipped to norm ``grad_clip`` (0 = off)."""
    quiet_lightning()
    if config.threads:
        torch.set_num_threads(config.threads)
    L.seed_everything(config.seed, workers=True, verbose=False)
    checkpoint = ModelCheckpoint(
        dirpath=output_dir / "checkpoints",
        filename="best",
        monitor=monitor,
        mode=mode,
        save_last=True,
        save_top_k=1 if monitor else 0,
        auto_insert_metric_name=False,
    )
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
        callbacks=[checkpoint],
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
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise PersecError(f"cannot read checkpoint {path} safely: {e}") from e
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
