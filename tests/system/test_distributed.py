"""Two-process DDP on CPU (gloo) through ``pretrain`` and ``finetune``: each rank reads
its own half of every epoch, and both end with the same weights; on a streamed corpus
whose shards split unevenly the ranks still take the same steps; validation is split
across the ranks; a streamed run killed mid-epoch resumes exactly."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny import FINETUNE_RESUMABLE, PRETRAIN_RESUMABLE, REPO, render_words


@pytest.fixture(scope="module")
def words(tmp_path_factory):
    """32 rendered word images: 4 batches of 4 per rank and epoch with 2 ranks."""
    return render_words(tmp_path_factory, n=32, seed=6)


def _ddp_cmd(
    command: str, tiny: list[str], words: Path, tmp_path: Path, data: str, extra: tuple[str, ...]
) -> list[str]:
    argv = [*tiny, f"data.{data}=[{words}]", "data.batch_size=4", "trainer.max_steps=6"]
    argv += ["trainer.accelerator=cpu", "trainer.devices=2", f"output_dir={tmp_path / 'run'}"]
    argv += extra
    probe = str(tmp_path / "probe")
    return [sys.executable, str(REPO / "tests" / "ddp_probe.py"), command, probe, *argv]


ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _run_ddp(
    command: str,
    tiny: list[str],
    words: Path,
    tmp_path: Path,
    data: str = "train",
    extra: tuple[str, ...] = (),
) -> Path:
    cmd = _ddp_cmd(command, tiny, words, tmp_path, data, extra)
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp_path / "probe"


def _same_weights(probe: Path, steps: int = 6) -> list[dict]:
    info = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [i["world_size"] for i in info] == [2, 2]
    assert [i["steps"] for i in info] == [steps, steps]
    left = load_file(str(probe / "rank0.safetensors"))
    right = load_file(str(probe / "rank1.safetensors"))
    assert left.keys() == right.keys()
    for key in left:
        assert torch.equal(left[key], right[key]), key
    return info


def _check_ranks(probe: Path) -> None:
    info = _same_weights(probe)
    first = [set(i["seen"]["0"]) for i in info]  # epoch 0: 4 steps × 4 images per rank
    assert [len(s) for s in first] == [16, 16]
    assert not first[0] & first[1], "ranks read the same images"
    assert len(first[0] | first[1]) == 32  # together they read the whole set once
    left, right = (
        load_file(str(probe / "rank0.safetensors")),
        load_file(str(probe / "rank1.safetensors")),
    )
    assert left.keys() == right.keys()
    for key in left:
        assert torch.equal(left[key], right[key]), key


@pytest.mark.slow
def test_ddp_pretraining_two_cpu_processes(words, tmp_path):
    probe = _run_ddp("pretrain", PRETRAIN_RESUMABLE, words, tmp_path)
    _check_ranks(probe)
    assert (tmp_path / "run" / "encoder.safetensors").is_file()


@pytest.mark.slow
def test_ddp_finetuning_two_cpu_processes(words, tmp_path):
    probe = _run_ddp("finetune", FINETUNE_RESUMABLE, words, tmp_path)
    _check_ranks(probe)
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_ddp_pretraining_on_unequal_shards_does_not_hang(words, tmp_path, run_cli):
    shards = tmp_path / "shards"  # 10 + 10 + 10 + 2 images: the ranks get 20 and 12
    assert run_cli(["shard", str(words), "--out", str(shards), "--per-shard", "10"])[0] == 0
    probe = _run_ddp("pretrain", PRETRAIN_RESUMABLE, shards, tmp_path, data="shards")
    info = _same_weights(probe)
    assert [sum(len(v) for v in i["seen"].values()) for i in info] == [24, 24]


@pytest.mark.slow
def test_ddp_validation_splits_the_set_and_sums_the_counts(words, tmp_path):
    # Validated after 2 steps: the model still writes noise, so CER is not the trivial
    # 100% of empty readings and a wrongly summed count would show.
    extra = (f"data.val=[{words}]", "trainer.max_steps=2", "trainer.val_every=2")
    probe = _run_ddp("finetune", FINETUNE_RESUMABLE, words, tmp_path, extra=extra)
    info = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    halves = [set(i["val_seen"]) for i in info]
    assert [len(i["val_seen"]) for i in info] == [16, 16]  # 32 images, each read once
    assert not halves[0] & halves[1] and len(halves[0] | halves[1]) == 32
    alone = info[0]["one_process"]  # the same weights reading all 32 in one process
    assert alone["samples"] == 32 and alone["cer"] not in (0, 100), alone
    name = words.name
    for rank in info:
        logged = rank["val_metrics"]
        assert logged["val/word_acc"] == pytest.approx(alone["word_acc"])
        assert logged[f"val/{name}/cer"] == pytest.approx(alone["cer"])


def _steps(probe: Path, rank: int) -> dict[int, list[list[str]]]:
    """Every record of what rank ``rank`` read at each step, in the order written."""
    out: dict[int, list[list[str]]] = {}
    for line in (probe / f"rank{rank}.steps.jsonl").read_text().splitlines():
        record = json.loads(line)
        out.setdefault(record["step"], []).append(record["digests"])
    return out


@pytest.mark.slow
def test_ddp_streamed_pretraining_killed_mid_epoch_resumes_exactly(words, tmp_path, run_cli):
    # 32 images in 8 shards of 4: with 2 ranks x 2 loader workers each worker reads
    # 2 shards (2 batches of 4) an epoch, each rank 4 batches: 12 steps are 3 epochs.
    shards = tmp_path / "shards"
    assert run_cli(["shard", str(words), "--out", str(shards), "--per-shard", "4"])[0] == 0
    extra = ("data.workers=2", "trainer.max_steps=12", "trainer.checkpoint_every=1")
    whole = _run_ddp("pretrain", PRETRAIN_RESUMABLE, shards, tmp_path / "a", "shards", extra)

    b = tmp_path / "b"
    cmd = _ddp_cmd("pretrain", PRETRAIN_RESUMABLE, shards, b, "shards", extra)
    proc = subprocess.Popen(cmd, env=ENV, stderr=subprocess.PIPE, start_new_session=True)
    last = b / "run" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline:
        if last.exists() and torch.load(last, weights_only=True)["global_step"] >= 2:
            break
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 0.3))  # mid-epoch, maybe mid-step or mid-save
    os.killpg(proc.pid, signal.SIGKILL)  # both ranks, at once
    proc.wait()
    stopped = torch.load(last, weights_only=True)["global_step"]
    assert 2 <= stopped < 12, proc.stderr.read().decode()[-2000:]
    killed = {r: _steps(b / "probe", r) for r in (0, 1)}

    resumed = subprocess.run(
        [*cmd, "resume=true"], env=ENV, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _same_weights(b / "probe", steps=12)
    for name in ("encoder.safetensors", "perceivers.safetensors"):
        left, right = load_file(tmp_path / "a" / "run" / name), load_file(b / "run" / name)
        assert all(torch.equal(left[k], right[k]) for k in left), name

    epoch0 = []
    for rank in (0, 1):
        reference = {t: reads[-1] for t, reads in _steps(whole, rank).items()}
        both = _steps(b / "probe", rank)  # the killed part's records, then the resumed part's
        # Steps before the checkpoint were read once; the resumed run reads from there on,
        # and a step the kill cut short is read again with the same images.
        for step, reads in both.items():
            assert all(r == reference[step] for r in reads), (rank, step)
            assert len(reads) == (2 if step in killed[rank] and step >= stopped else 1)
        assert sorted(both) == list(range(12))
        epoch0 += [d for step in range(4) for d in both[step][-1]]
    assert len(epoch0) == len(set(epoch0)) == 32  # the first epoch: every image exactly once
