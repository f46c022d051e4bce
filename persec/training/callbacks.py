"""The Lightning callbacks persec's trainer adds: exact random-number state across
``--resume`` (:class:`ExactResume`), a periodic full checkpoint, logging the last step
whatever ``log_every`` says, the one-line announcement of the precision chosen, the
frozen-encoder probe at every pretraining validation (:mod:`persec.training.probe`) and encoder
snapshots at chosen steps.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only


def capture_rng() -> dict:
    """The state of every global random-number generator training draws from (torch
    CPU and CUDA, NumPy, Python), as tensors and plain values a ``weights_only``
    load accepts."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
        "numpy_rest": [int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    """Put back what :func:`capture_rng` took."""
    torch.set_rng_state(state["torch"])
    pos, has_gauss, cached = state["numpy_rest"]
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class ExactResume(Callback):
    """Saves the random-number state with every checkpoint and puts it back when
    training resumes, so masks, quantizer noise and dropout after a resume are the
    ones the uninterrupted run draws. Validation runs on a fork of the state: whether
    or not it runs between a save and the next step changes nothing."""

    def __init__(self):
        self._pending: dict | None = None
        self._before_val: dict | None = None

    def state_dict(self) -> dict:
        """The random-number state to store in the checkpoint being saved."""
        return {"rng": capture_rng()}

    def load_state_dict(self, state_dict: dict) -> None:
        """Keep the checkpoint's random-number state until training starts."""
        self._pending = state_dict.get("rng")

    def on_train_start(self, trainer, pl_module) -> None:
        """Restore the random-number state of the checkpoint resumed from, if any."""
        if self._pending is not None:
            restore_rng(self._pending)
            self._pending = None

    def on_validation_start(self, trainer, pl_module) -> None:
        """Save the random-number state before validation draws from it."""
        self._before_val = capture_rng()

    def on_validation_end(self, trainer, pl_module) -> None:
        """Put back the random-number state saved before validation."""
        if self._before_val is not None:
            restore_rng(self._before_val)
            self._before_val = None


class PeriodicCheckpoint(Callback):
    """Write the full training state to ``path`` every ``every`` optimiser steps."""

    def __init__(self, every: int, path: Path):
        self.every, self.path = every, path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """Save the full checkpoint to ``path`` when the global step is a multiple of
        ``every``."""
        if trainer.global_step % self.every == 0:
            trainer.save_checkpoint(self.path, weights_only=False)  # the full state


class LogLastStep(Callback):
    """Log the last training step whatever ``log_every`` says, so every run, even one
    shorter than ``log_every``, ends with its final values in ``metrics.csv`` and
    TensorBoard."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        """Log every step from the last one on (``max_steps`` reached by this step)."""
        if trainer.max_steps > 0 and trainer.global_step + 1 >= trainer.max_steps:
            trainer.log_every_n_steps = 1


class AnnouncePrecision(Callback):
    """Print the precision line once training starts (after a checkpoint to resume
    from has loaded, so a bad input stays a one-line error), on rank 0 only."""

    def __init__(self, message: str):
        self.message = message

    @rank_zero_only
    def on_train_start(self, trainer, pl_module) -> None:
        """Print the precision message to stderr."""
        print(self.message, file=sys.stderr, flush=True)


class ProbeAtValidation(Callback):
    """Run :func:`persec.training.probe.run_probe` on the encoder after every validation (not
    the sanity check) and log its numbers (``probe/word_acc``, ``probe/rank``,
    ``leak/semantic/neighbour_acc``, ...) with the validation metrics. The probe's
    images are rendered at the first use, on rank 0 only; other ranks log nothing."""

    def __init__(self, config, synth, image):
        self.config, self.synth, self.image = config, synth, image
        self._data = None

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        """Probe the encoder and log the probe's numbers at the end of each validation."""
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        from persec.training.probe import make_probe_set, run_probe

        if self._data is None:
            self._data = make_probe_set(self.config, self.synth, self.image)
        bf16 = str(trainer.precision).startswith("bf16") and pl_module.device.type == "cpu"
        objective = getattr(pl_module, "objective", None)
        result = run_probe(pl_module.encoder, objective, self._data, self.config, bf16=bf16)
        for key, value in result.logs().items():
            pl_module.log(key, value, rank_zero_only=True)


class EncoderSnapshots(Callback):
    """Write the encoder at chosen training steps, each to ``directory/step-N/``, so one
    pretraining run yields the points of a pretraining-length curve.

    Args:
        steps: global steps after which to write (a step the run never reaches is
            skipped; one already written, e.g. before a ``--resume``, is kept).
        directory: parent of the ``step-N`` folders.
        save: ``save(encoder, folder)`` writes one snapshot.
    """

    def __init__(self, steps, directory: Path, save):
        self.steps, self.directory, self.save = set(steps), Path(directory), save

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """Write the encoder snapshot of this step when it is a chosen one (rank 0; an
        existing snapshot is kept)."""
        step = trainer.global_step
        if step in self.steps and trainer.is_global_zero:
            folder = snapshot_dir(self.directory, step)
            if not folder.is_dir():
                tmp = folder.with_name(f".{folder.name}.tmp")
                self.save(pl_module.encoder, tmp)
                tmp.replace(folder)


def snapshot_dir(directory: Path, step: int) -> Path:
    """Where :class:`EncoderSnapshots` writes the encoder of ``step``."""
    return Path(directory) / f"step-{step}"
