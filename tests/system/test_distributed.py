"""Two-process DDP on CPU (gloo) through ``pretrain`` and ``finetune``: each rank reads
its own half of every epoch, and both end with the same weights; on a streamed corpus
whose shards split unevenly the ranks still take the same steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny import FINETUNE_RESUMABLE, PRETRAIN_RESUMABLE, REPO, render_words


@pytest.fixture(scope="module")
def words(tmp_path_factory):
    """32 rendered word images: 4 batches of 4 per rank and epoch with 2 ranks."""
    return render_words(tmp_path_factory, n=32, seed=6)


def _run_ddp(
    command: str,
    tiny: list[str],
    words: Path,
    tmp_path: Path,
    data: str = "train",
    extra: tuple[str, ...] = (),
) -> Path:
    probe = tmp_path / "probe"
    argv = [*tiny, f"data.{data}=[{words}]", "data.batch_size=4", "trainer.max_steps=6"]
    argv += ["trainer.accelerator=cpu", "trainer.devices=2", f"output_dir={tmp_path / 'run'}"]
    argv += extra
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(REPO / "tests" / "ddp_probe.py"), command, str(probe), *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return probe


def _same_weights(probe: Path) -> list[dict]:
    info = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [i["world_size"] for i in info] == [2, 2]
    assert [i["steps"] for i in info] == [6, 6]
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
