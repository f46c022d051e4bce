"""The run skeleton pretraining and fine-tuning share: trainer, config record, resume,
the fit itself and its time."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from persec.config import save_config
from persec.errors import PersecError, RunStopped
from persec.training.slurm import StopForRequeue, resume_after_requeue
from persec.training.trainer import build_trainer, kept_metrics, last_checkpoint, resume_path


@dataclass
class FitRun:
    """A finished ``fit``: the trainer, its checkpoint callback and the seconds it took."""

    trainer: L.Trainer
    checkpoint: ModelCheckpoint
    seconds: float


def settle_resume(config: Any) -> None:
    """Turn ``config.resume`` on in a requeued SLURM job whose run left a checkpoint
    (:func:`~persec.training.slurm.resume_after_requeue`), before anything that reads
    it (a fresh run clears stale snapshots; a resumed one keeps them)."""
    if not config.resume and resume_after_requeue(last_checkpoint(config.output_dir)):
        config.resume = True
        print(f"persec: requeued SLURM job: resuming from {last_checkpoint(config.output_dir)}")


def fit_run(
    config: Any,
    system: L.LightningModule,
    data: L.LightningDataModule,
    monitor: str | None = None,
    callbacks: list | None = None,
    mode: str = "max",
) -> FitRun:
    """Fit ``system`` on ``data`` as ``config`` says, in ``config.output_dir``.

    ``config`` is a run config (``PretrainConfig`` or ``FinetuneConfig``): its
    ``trainer``, ``optim.grad_clip``, ``output_dir`` and ``resume`` are read, and rank 0
    records it as ``config.yaml``. ``--resume`` continues from ``checkpoints/last.ckpt``
    (loaded ``weights_only``) and keeps the earlier ``metrics.csv`` rows. ``monitor``
    names the metric the best checkpoint is chosen by (None: no best checkpoint),
    ``mode`` whether higher (``max``) or lower (``min``) is better.

    Raises:
        PersecError: a resume without a checkpoint, or a fit that ran no step.
        RunStopped: the run stopped early for a SLURM requeue (its checkpoint is written).
    """
    out = Path(config.output_dir)
    trainer, checkpoint = build_trainer(
        config.trainer,
        out,
        monitor,
        mode=mode,
        grad_clip=config.optim.grad_clip,
        callbacks=callbacks,
    )
    if trainer.is_global_zero:
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.yaml")
    ckpt = resume_path(out, config.resume)
    start = time.time()
    with kept_metrics(out, config.resume, owner=trainer.is_global_zero):
        try:
            trainer.fit(system, datamodule=data, ckpt_path=ckpt, weights_only=True)
        except StopForRequeue as stop:
            raise RunStopped(
                f"{stop}; the requeued job resumes from {last_checkpoint(out)} "
                "(or run the same command with --resume)"
            ) from None
    if trainer.global_step == 0:
        raise PersecError("training ran no step (check the data and trainer.max_steps)")
    return FitRun(trainer, checkpoint, time.time() - start)
