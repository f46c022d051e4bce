"""SLURM requeue without SLURM: a pretraining started with a SLURM job's environment gets
the pre-limit signal, checkpoints, asks ``scontrol`` (a shim on PATH that records the
call) to requeue the job and stops; started again as the requeued job, it resumes by
itself and ends with the weights of an uninterrupted run, bit for bit."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny import PRETRAIN_RESUMABLE, REPO, render_words

from persec.training.slurm import REQUEUE_SIGNAL, resume_after_requeue, slurm_job_id

SLURM_TASK = {
    "SLURM_JOB_ID": "4242",
    "SLURM_JOB_NAME": "persec-test",
    "SLURM_NTASKS": "1",
    "SLURM_NTASKS_PER_NODE": "1",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "0",
    "SLURM_NODELIST": "localhost",
}


@pytest.fixture(scope="module")
def words(tmp_path_factory):
    return render_words(tmp_path_factory, n=20, seed=5)


def _cmd(words: Path, out: Path) -> list[str]:
    argv = [*PRETRAIN_RESUMABLE, f"data.train=[{words}]", f"data.val=[{words}]"]
    argv += ["trainer.max_steps=30", "trainer.val_every=7"]
    return [sys.executable, "-m", "persec", "pretrain", *argv, f"output_dir={out}"]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    shim = tmp_path / "bin"
    shim.mkdir(exist_ok=True)
    scontrol = shim / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    scontrol.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", PATH=f"{shim}:{env['PATH']}")
    return {**env, **extra}


@pytest.mark.slow
def test_signal_checkpoints_requeues_and_the_requeued_job_resumes_exactly(words, tmp_path):
    plain = _env(tmp_path)
    subprocess.run(_cmd(words, tmp_path / "a"), check=True, env=plain, capture_output=True)

    out = tmp_path / "b"
    proc = subprocess.Popen(
        _cmd(words, out), env=_env(tmp_path, **SLURM_TASK), stderr=subprocess.PIPE, text=True
    )
    last = out / "checkpoints" / "last.ckpt"  # first written at the step-7 validation
    deadline = time.time() + 120
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(REQUEUE_SIGNAL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err[-2000:]  # stopped, not finished
    assert "for the SLURM requeue" in err
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    stopped = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert 7 <= stopped < 30
    assert not (out / "encoder.safetensors").exists()  # not written as if finished

    requeued = _env(tmp_path, **SLURM_TASK, SLURM_RESTART_COUNT="1")
    again = subprocess.run(_cmd(words, out), env=requeued, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming from" in again.stdout
    for name in ("encoder.safetensors", "perceivers.safetensors"):
        left, right = load_file(tmp_path / "a" / name), load_file(out / name)
        assert left.keys() == right.keys()
        for key in left:
            assert torch.equal(left[key], right[key]), (name, key)
    # The same validations, none lost to the stop, none added; no Lightning hpc checkpoint.
    assert _validated(tmp_path / "a") == _validated(out) == [6, 13, 20, 27]
    assert not list(out.glob("hpc_ckpt_*"))


def _validated(run: Path) -> list[int]:
    with open(run / "metrics.csv", newline="") as f:
        return sorted(int(r["step"]) for r in csv.DictReader(f) if r.get("val/loss"))


def test_requeue_detection_and_job_ids(tmp_path, monkeypatch):
    for key in list(os.environ):
        if key.startswith("SLURM_"):
            monkeypatch.delenv(key)
    checkpoint, other = tmp_path / "last.ckpt", tmp_path / "other.ckpt"
    torch.save({"global_step": 3, "slurm_job_id": "4242"}, checkpoint)
    torch.save({"global_step": 9, "slurm_job_id": "17"}, other)  # an earlier job's run
    assert not resume_after_requeue(checkpoint)  # not on SLURM
    for key, value in SLURM_TASK.items():
        monkeypatch.setenv(key, value)
    assert slurm_job_id() == "4242"
    assert not resume_after_requeue(checkpoint)  # the first run of the job
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    assert resume_after_requeue(checkpoint)
    assert not resume_after_requeue(other)  # not written by this job: a fresh start
    assert not resume_after_requeue(tmp_path / "none.ckpt")  # requeued before any checkpoint
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert slurm_job_id() == "77_3"
    assert REQUEUE_SIGNAL == signal.SIGUSR1
