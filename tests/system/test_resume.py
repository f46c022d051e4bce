"""Exact resume and safe checkpoints: the resumable sampler, the random-number state,
atomic checkpoint writes, metrics kept across a resume, the NaN/Inf guard, and a run
killed with SIGKILL that, resumed, ends with the same weights bit for bit."""

from __future__ import annotations

import csv
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from safetensors.torch import load_file
from tiny import FINETUNE_RESUMABLE, PRETRAIN_RESUMABLE, REPO, render_words

from persec.config import load_config
from persec.data.sampler import ResumableSampler
from persec.errors import PersecError
from persec.training.callbacks import capture_rng, restore_rng
from persec.training.finetune import FinetuneConfig, finetune
from persec.training.pretrain import PretrainConfig, pretrain
from persec.training.trainer import AtomicCheckpointIO, _merge_metrics

# The tiny models of the pretrain and finetune tests, on one thread: bit-identical
# comparisons across processes need the same reduction order.


@pytest.fixture(scope="module")
def words(tmp_path_factory):
    """20 rendered word images: 2 batches of 8 per epoch, the last 4 dropped."""
    return render_words(tmp_path_factory, n=20, seed=5)


def _stream(sampler: ResumableSampler, epochs: int) -> list[int]:
    return [i for _ in range(epochs) for i in sampler]


# --- the sampler -----------------------------------------------------------------------


def test_sampler_ranks_are_disjoint_and_cover_the_epoch():
    ranks = [ResumableSampler(103, 8, seed=3, rank=r, world_size=4) for r in range(4)]
    orders = [set(s.epoch_order(0).tolist()) for s in ranks]
    assert all(len(o) == ranks[0].epoch_len == 24 for o in orders)  # 25 per rank → 3 batches
    assert sum(len(o) for o in orders) == len(set().union(*orders))  # disjoint
    assert len(set().union(*orders)) == 96


def test_sampler_started_at_a_step_reads_what_the_full_stream_reads_next():
    full = _stream(ResumableSampler(50, 8, seed=1), 4)  # 6 batches of 8 per epoch
    for step in (0, 1, 5, 6, 7, 13):
        resumed = ResumableSampler(50, 8, seed=1)
        resumed.start_at_step(step)
        tail = [i for _ in range(4) for i in resumed]
        assert tail[: len(full) - step * 8] == full[step * 8 :], step


def test_sampler_epochs_differ_are_reproducible_and_short_sets_give_one_batch():
    s = ResumableSampler(40, 8, seed=2)
    assert s.epoch_order(0).tolist() != s.epoch_order(1).tolist()
    assert s.epoch_order(1).tolist() == ResumableSampler(40, 8, seed=2).epoch_order(1).tolist()
    assert ResumableSampler(40, 8, seed=3).epoch_order(0).tolist() != s.epoch_order(0).tolist()
    short = ResumableSampler(5, 8, seed=0)
    assert (short.batch_len, short.batches, len(short)) == (5, 1, 5)
    ordered = ResumableSampler(10, 4, shuffle=False)
    assert list(ordered) == list(range(8))
    with pytest.raises(PersecError, match="cannot be split over 4 ranks"):
        ResumableSampler(3, 8, rank=0, world_size=4)


# --- random-number state, checkpoints, metrics ----------------------------------------


def test_rng_state_survives_a_weights_only_checkpoint(tmp_path):
    torch.save(capture_rng(), tmp_path / "rng.pt")
    first = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0])
    assert np.array_equal(first[1], again[1]) and first[2] == again[2]


def test_atomic_save_failing_midway_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": torch.tensor(1)}, path)

    def dies_halfway(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"step": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert io.load_checkpoint(path)["step"].item() == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temp file left


class _Payload:
    """Unpickling this writes a marker file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def test_checkpoint_with_a_code_payload_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "last.ckpt"
    path.write_bytes(pickle.dumps({"state_dict": {}, "x": _Payload(marker)}))
    with pytest.raises(PersecError, match="cannot read checkpoint"):
        AtomicCheckpointIO().load_checkpoint(path)
    assert not marker.exists()


def test_resume_refuses_a_payload_checkpoint(words, tmp_path, run_cli):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    marker = tmp_path / "marker"
    (run / "checkpoints" / "last.ckpt").write_bytes(pickle.dumps(_Payload(marker)))
    argv = ["pretrain", *PRETRAIN_RESUMABLE, f"data.train=[{words}]", f"output_dir={run}"]
    code, _, err = run_cli([*argv, "trainer.max_steps=2", "--resume"])
    assert code == 2 and "cannot read checkpoint" in err
    assert not marker.exists()


def test_metrics_merge_drops_steps_that_were_run_again(tmp_path):
    old, new = tmp_path / "old.csv", tmp_path / "new.csv"
    old.write_text("step,train/loss\n0,3.0\n1,2.5\n2,2.0\n3,1.9\n")
    new.write_text("step,train/loss,val/acc\n2,2.0,\n3,1.9,0.5\n")
    _merge_metrics(old, new, tmp_path / "out.csv")
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert lines == ["step,train/loss,val/acc", "0,3.0,", "1,2.5,", "2,2.0,", "3,1.9,0.5"]


# --- NaN/Inf guard ---------------------------------------------------------------------


class _PoisonLoss(Callback):
    """Makes the objective's loss NaN at the given steps (all of them if None)."""

    def __init__(self, steps: set[int] | None):
        self.steps = steps

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        objective = pl_module.objective
        poison = self.steps is None or trainer.global_step in self.steps
        if poison and not hasattr(objective, "_clean_forward"):
            objective._clean_forward = objective.forward

            def forward(*args, **kwargs):
                out = objective._clean_forward(*args, **kwargs)
                out.loss = out.loss * float("nan")
                return out

            objective.forward = forward
        elif not poison and hasattr(objective, "_clean_forward"):
            objective.forward = objective._clean_forward
            del objective._clean_forward


class _Weights(Callback):
    def __init__(self):
        self.sums: dict[int, float] = {}

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self.sums[trainer.global_step] = sum(
            p.double().sum().item() for p in pl_module.parameters()
        )


def test_nan_loss_step_is_skipped_and_a_nan_run_stops_with_a_message(words, tmp_path, caplog):
    base = [*PRETRAIN_RESUMABLE, f"data.train=[{words}]", "trainer.max_steps=4"]
    weights = _Weights()
    config = load_config(PretrainConfig, None, [*base, f"output_dir={tmp_path / 'a'}"])
    pretrain(config, callbacks=[_PoisonLoss({2}), weights])
    assert weights.sums[3] == weights.sums[2] != weights.sums[1]  # step 3 = the NaN one
    assert "loss is nan; step skipped" in caplog.text

    config = load_config(
        PretrainConfig, None, [*base, "trainer.max_nonfinite=2", f"output_dir={tmp_path / 'b'}"]
    )
    with pytest.raises(PersecError, match="NaN/Inf for 2 steps in a row"):
        pretrain(config, callbacks=[_PoisonLoss(None)])


# --- exact resume ----------------------------------------------------------------------


class _Interrupt(Callback):
    def __init__(self, at: int):
        self.at = at

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == self.at:
            raise RuntimeError("interrupted")


def _same_tensors(a: Path, b: Path) -> None:
    left, right = load_file(str(a)), load_file(str(b))
    assert left.keys() == right.keys()
    for key in left:
        assert torch.equal(left[key], right[key]), key


def test_finetune_interrupted_and_resumed_matches_the_uninterrupted_run(words, tmp_path):
    base = [*FINETUNE_RESUMABLE, f"data.train=[{words}]", f"data.val=[{words}]"]
    base += ["trainer.max_steps=7", "trainer.val_every=3", "trainer.checkpoint_every=1"]
    finetune(load_config(FinetuneConfig, None, [*base, f"output_dir={tmp_path / 'a'}"]))
    b = [*base, f"output_dir={tmp_path / 'b'}"]
    with pytest.raises(RuntimeError, match="interrupted"):
        finetune(load_config(FinetuneConfig, None, b), callbacks=[_Interrupt(5)])
    finetune(load_config(FinetuneConfig, None, [*b, "resume=true"]))
    _same_tensors(tmp_path / "a/model/model.safetensors", tmp_path / "b/model/model.safetensors")
    with open(tmp_path / "b/metrics.csv") as f:
        steps = {int(row["step"]) for row in csv.DictReader(f)}
    assert steps == set(range(7))  # the rows from before the resume are kept


def _pretrain_cmd(words: Path, out: Path, *extra: str) -> list[str]:
    argv = [*PRETRAIN_RESUMABLE, f"data.train=[{words}]", f"data.val=[{words}]"]
    argv += ["trainer.max_steps=30", "trainer.val_every=7", "trainer.checkpoint_every=1"]
    return [sys.executable, "-m", "persec", "pretrain", *argv, f"output_dir={out}", *extra]


def _step_of(checkpoint: Path) -> int:
    return int(torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"])


@pytest.mark.slow
def test_pretrain_killed_with_sigkill_resumes_to_identical_weights(words, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run(_pretrain_cmd(words, tmp_path / "a"), check=True, env=env, capture_output=True)

    killed = tmp_path / "b"
    proc = subprocess.Popen(
        _pretrain_cmd(words, killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    last = killed / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(random.uniform(0.2, 0.8))  # somewhere in the run, maybe mid-save
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    stopped_at = _step_of(last)  # the latest checkpoint is whole, whatever the kill hit
    assert 0 < stopped_at < 30

    resumed = subprocess.run(
        [*_pretrain_cmd(words, killed), "--resume"], env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    for name in ("encoder.safetensors", "perceivers.safetensors"):
        _same_tensors(tmp_path / "a" / name, killed / name)
