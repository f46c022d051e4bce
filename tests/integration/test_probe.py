"""persec.training.probe: effective rank, the linear CTC probe and the leak classifiers on
hand-made features whose answers are known, and `persec probe` on a tiny run."""

from __future__ import annotations

import json

import torch

from persec.charset import Charset
from persec.training.probe import (
    ProbeConfig,
    _code_accuracy,
    _fit_linear_ctc,
    _score,
    effective_rank,
)


def test_effective_rank_counts_the_directions_in_use():
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(64, 64, generator=g))[0]
    coeffs = torch.randn(4000, 8, generator=g)
    x = coeffs @ basis[:8]  # (N, 64) in an 8-dimensional subspace, equal variances
    assert 7.0 < effective_rank(x) <= 8.01
    line = torch.randn(500, 1, generator=g) * basis[:1]  # one direction
    assert effective_rank(line) < 1.01
    assert 55 < effective_rank(torch.randn(4000, 64, generator=g)) <= 64


def test_linear_ctc_probe_reads_features_that_hold_the_characters():
    """Frame t holds a one-hot of the character written there (or of blank): a linear
    head must read every word; on shuffled frames it must not."""
    charset = Charset.from_spec("36_lowercase")
    g = torch.Generator().manual_seed(1)
    n, t = 300, 12
    labels, frames = [], torch.zeros(n, t, len(charset) + 1)
    for i in range(n):
        ids = torch.randint(len(charset), (4,), generator=g).tolist()
        labels.append("".join(charset.chars[j] for j in ids))
        path = [0] * t
        for k, j in enumerate(ids):
            path[1 + 2 * k] = j + 1  # blank between characters, so repeats survive
        frames[i, torch.arange(t), torch.tensor(path)] = 1.0
    features = frames + 0.05 * torch.randn(n, t, len(charset) + 1, generator=g)
    config = ProbeConfig(steps=400, batch_size=64, lr=3e-2)
    head, loss = _fit_linear_ctc(features[:200], labels[:200], charset, config, seed=0)
    assert loss < 0.5
    word_acc, cer = _score(head, features[200:], labels[200:], charset)
    assert word_acc > 0.95
    assert cer < 0.02
    scrambled = features[:, torch.randperm(t, generator=g)]
    head, _ = _fit_linear_ctc(scrambled[:200], labels[:200], charset, config, seed=0)
    assert _score(head, scrambled[200:], labels[200:], charset)[0] < 0.2


def test_code_accuracy_finds_codes_that_the_inputs_hold_and_not_others():
    g = torch.Generator().manual_seed(2)
    codes = torch.randint(8, (2000, 2), generator=g)  # (S, G)
    holds = torch.cat([torch.eye(8)[codes[:, 0]], torch.eye(8)[codes[:, 1]]], dim=1)
    assert _code_accuracy(holds + 0.1 * torch.randn(2000, 16, generator=g), codes, 200, 8) > 0.98
    noise = torch.randn(2000, 16, generator=g)
    assert _code_accuracy(noise, codes, 200, 8) < 0.25  # chance 1/8


def test_position_accuracy_tells_position_from_content():
    from persec.training.probe import position_accuracy

    g = torch.Generator().manual_seed(3)
    n, t = 200, 8
    position = torch.eye(t).expand(n, t, t)  # a frame's features = its index, one-hot
    assert position_accuracy(position + 0.1 * torch.randn(n, t, t, generator=g), 1000, 200) > 0.98
    content = torch.randn(n, t, t, generator=g)  # nothing about where the frame is
    assert position_accuracy(content, 1000, 200) < 0.25  # chance 1/8


def test_probe_command_on_a_pretraining_output(tmp_path, run_cli):
    from persec.cli import main

    run = tmp_path / "run"
    argv = ["pretrain", "model.size=tiny", "model.stroke_aggregator.dim=32",
            "model.semantic_aggregator.dim=32", "persec.stroke.quantizer.entries=32",
            "persec.semantic.quantizer.entries=32", "data.workers=0", "data.batch_size=8",
            "data.synth_train=64", "image.width=128", "trainer.progress=false",
            "trainer.max_steps=2", f"output_dir={run}"]  # fmt: skip
    assert main(argv) == 0
    code, out, err = run_cli(["probe", str(run), "--train-images", "16", "--test-images", "8",
                              "--steps", "5", "--json", str(tmp_path / "p.json")])  # fmt: skip
    assert code == 0, err
    numbers = json.loads((tmp_path / "p.json").read_text())
    assert 0.0 <= numbers["probe/word_acc"] <= 1.0 and numbers["probe/rank"] >= 1.0
    assert numbers["probe/cer"] >= 0.0 and 0.0 <= numbers["probe/position_acc"] <= 1.0
    assert "leak/semantic/neighbour_acc" in numbers and "probe/word_acc\t" in out
    code, _, err = run_cli(["probe", str(tmp_path), "--steps", "5"])
    assert code != 0 and "not a pretraining output" in err


def test_nearest_unmasked_neighbours_skip_masked_ones():
    from persec.training.probe import nearest_unmasked

    mask = torch.tensor([[False, True, True, False, True, False],
                         [True, False, False, False, False, True]])  # fmt: skip
    left, right = nearest_unmasked(mask)
    assert left.tolist() == [[-1, 0, 0, 0, 3, 3], [-1, -1, 1, 2, 3, 4]]
    assert right.tolist() == [[3, 3, 3, 5, 5, -1], [1, 2, 3, 4, -1, -1]]
