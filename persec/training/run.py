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
from persec.errors import PersecError
from persec.training.trainer import build_trainer, kept_metrics, resume_path


@dataclass
class FitRun:
    """A finished ``fit``: the trainer, its checkpoint callback and the seconds it took."""

    trainer: L.Trainer
    checkpoint: ModelCheckpoint
    seconds: float


def fit_run(
    config: Any,
    system: L.LightningModule,
    data: L.LightningDataModule,
    monitor: str | None = None,
    callbacks: list | None = None,
) -> FitRun:
    """Fit ``system`` on ``data`` as ``config`` says, in ``config.output_dir``.

    ``config`` is a run config (``PretrainConfig`` or ``FinetuneConfig``): its
    ``trainer``, ``optim.grad_clip``, ``output_dir`` and ``resume`` are read, and rank 0
    records it as ``config.yaml``. ``--resume`` continues from ``checkpoints/last.ckpt``
    (loaded ``weights_only``) and keeps the earlier ``metrics.csv`` rows. ``monitor``
    names the metric the best checkpoint is chosen by (None: no best checkpoint).

    Raises:
        PersecError: a resume without a checkpoint, or a fit that ran no step.
    """
    out = Path(config.output_dir)
    trainer, checkpoint = build_trainer(
        config.trainer, out, monitor, grad_clip=config.optim.grad_clip, callbacks=callbacks
    )
    if trainer.is_global_zero:
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.yaml")
    ckpt = resume_path(out, config.resume)
    start = time.time()
    with kept_metrics(out, config.resume and trainer.is_global_zero):
        trainer.fit(system, datamodule=data, ckpt_path=ckpt, weights_only=True)
    if trainer.global_step == 0:
        raise PersecError("training ran no step (check the data and trainer.max_steps)")
    return FitRun(trainer, checkpoint, time.time() - start)
