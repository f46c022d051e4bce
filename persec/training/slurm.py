"""SLURM: requeue a job before its time limit and resume it where it stopped.

Submit with ``#SBATCH --signal=SIGUSR1@90`` (and ``--requeue``): 90 s before the limit
SLURM sends SIGUSR1. :class:`SlurmRequeue` notes the signal and, at the end of the
step under way, writes ``checkpoints/last.ckpt`` (the state ``--resume`` reads), asks
``scontrol requeue`` for the job (rank 0) and ends training there, as abruptly as a
kill would but with a whole checkpoint of that step (no closing validation, nothing
written as if the run were finished): the run ends with
:class:`~persec.errors.RunStopped`. The requeued job runs the
same command; :func:`resume_after_requeue` sees ``SLURM_RESTART_COUNT`` > 0 and a
checkpoint, and turns ``resume`` on, so the run continues exactly as ``--resume``
continues one (same samples, same random numbers).

Lightning's own SLURM requeue (``SLURMEnvironment(auto_requeue=True)``) is switched off:
it saves from inside the signal handler, mid-step, to a separate ``hpc_ckpt_N.ckpt``.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

logger = logging.getLogger(__name__)

REQUEUE_SIGNAL = signal.SIGUSR1
JOB_KEY = "slurm_job_id"  # the job that wrote a checkpoint
SCONTROL_TIMEOUT_S = 30


def on_slurm() -> bool:
    """Whether this process is a SLURM batch task that SLURM itself launched
    (Lightning's test: ``SLURM_NTASKS`` set and the job is not an interactive shell),
    not a torchrun process inside an allocation (torchrun's variables win then)."""
    return SLURMEnvironment.detect() and not TorchElasticEnvironment.detect()


def slurm_job_id() -> str | None:
    """The id ``scontrol requeue`` takes: ``ARRAYJOB_TASK`` for an array task."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array:
        return f"{array}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
    return os.environ.get("SLURM_JOB_ID")


def slurm_plugins() -> list:
    """The cluster environment for a SLURM task (none elsewhere), with Lightning's own
    requeue off: :class:`SlurmRequeue` does it at a step boundary."""
    return [SLURMEnvironment(auto_requeue=False)] if on_slurm() else []


def resume_after_requeue(checkpoint: Path) -> bool:
    """True in a requeued SLURM job (``SLURM_RESTART_COUNT`` > 0) when ``checkpoint``
    was written by this same job (:class:`SlurmRequeue` tags every checkpoint with the
    job id; a checkpoint an earlier job left in the directory is not resumed)."""
    restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
    if not (on_slurm() and restarts.isdigit() and int(restarts) > 0 and checkpoint.is_file()):
        return False
    try:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception:  # an unreadable checkpoint: --resume reports it properly
        return False
    return isinstance(saved, dict) and saved.get(JOB_KEY) == slurm_job_id()


def request_requeue(job_id: str) -> bool:
    """``scontrol requeue JOB``; False (and a warning) when it fails or is missing."""
    scontrol = shutil.which("scontrol")
    if scontrol is None:
        logger.warning("scontrol not found: job %s not requeued; resume it with --resume", job_id)
        return False
    try:
        done = subprocess.run(
            [scontrol, "requeue", job_id],
            capture_output=True,
            text=True,
            timeout=SCONTROL_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        logger.warning("scontrol requeue %s timed out; resume it with --resume", job_id)
        return False
    if done.returncode != 0:
        logger.warning(
            "scontrol requeue %s failed (%s); resume it with --resume",
            job_id,
            (done.stderr or done.stdout).strip() or f"exit {done.returncode}",
        )
        return False
    return True


class StopForRequeue(Exception):
    """Raised by :class:`SlurmRequeue` once the checkpoint is written, to end ``fit``."""

    def __init__(self, step: int):
        super().__init__(f"stopped at step {step} for the SLURM requeue")
        self.step = step


class SlurmRequeue(Callback):
    """On ``REQUEUE_SIGNAL``: checkpoint at the end of the current step, requeue the
    job, stop training (see the module docstring). Under DDP the ranks agree at each
    step whether any of them got the signal, so all stop at the same step. A step
    followed by a validation is not a stopping point (the resumed run would skip that
    validation): the stop waits one step; nor is the last step (the run ends anyway).
    Every checkpoint written meanwhile is tagged with the job id.

    Args:
        checkpoint: where the full state is written (``checkpoints/last.ckpt``).
    """

    def __init__(self, checkpoint: Path):
        self.checkpoint = checkpoint
        self.signalled = False
        self._previous = None

    def _note(self, signum, frame) -> None:
        self.signalled = True

    def on_fit_start(self, trainer, pl_module) -> None:
        """Install the signal handler (the main thread only can)."""
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(REQUEUE_SIGNAL, self._note)
        else:
            logger.warning("training runs off the main thread: no SLURM requeue on SIGUSR1")

    def _restore(self) -> None:
        if self._previous is not None:
            signal.signal(REQUEUE_SIGNAL, self._previous)
            self._previous = None

    def teardown(self, trainer, pl_module, stage: str) -> None:
        """Put the previous handler back."""
        self._restore()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """Put the previous handler back (teardown is skipped after an exception)."""
        self._restore()

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        """Tag the checkpoint with this job's id (:func:`resume_after_requeue`)."""
        checkpoint[JOB_KEY] = slurm_job_id()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """Checkpoint, requeue and stop once the signal came (on any rank)."""
        signalled = self.signalled
        if trainer.world_size > 1:
            signalled = trainer.strategy.reduce_boolean_decision(signalled, all=False)
        step = trainer.global_step
        every = trainer.val_check_interval
        validates = isinstance(every, int) and every > 0 and step % every == 0
        if not signalled or step >= (trainer.max_steps or 0) > 0 or validates:
            return
        trainer.save_checkpoint(self.checkpoint, weights_only=False)
        job = slurm_job_id()
        if trainer.is_global_zero and job and request_requeue(job):
            logger.warning("step %d checkpointed; SLURM job %s requeued", trainer.global_step, job)
        raise StopForRequeue(trainer.global_step)
