"""Shared pytest fixtures (generic only; module-specific ones live in their test file)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from tiny import FINETUNE_TINY, render_words

from persec import cli

# One intra-op thread: the tiny test models gain nothing from more, and with two
# threads per process a second busy process on a 2-core machine makes OpenMP's
# spinning threads slow every op down ~10x.
torch.set_num_threads(1)


@pytest.fixture
def run_cli(capsys) -> Callable[[Sequence[str]], tuple[int, str, str]]:
    """Run ``persec ARGS...`` in-process; returns ``(exit_code, stdout, stderr)``."""

    def run(argv: Sequence[str]) -> tuple[int, str, str]:
        try:
            code = cli.main(list(argv))
        except SystemExit as e:  # argparse errors and --help exit instead of returning
            code = e.code if isinstance(e.code, int) else 2
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


@pytest.fixture(scope="session")
def learned_words(tmp_path_factory) -> Path:
    """64 rendered word images with labels (an LMDB): what :func:`learned` learns."""
    return render_words(tmp_path_factory, n=64, seed=3)


@dataclass(frozen=True)
class Learned:
    """A tiny trained recognizer and where it came from."""

    words: Path  # its training (and validation) set
    run: Path  # the finetune output_dir: metrics.csv, config.yaml, checkpoints
    model: Path  # the saved model (run / "model")
    stdout: str  # what ``persec finetune`` printed


@pytest.fixture(scope="session")
def learned(tmp_path_factory, learned_words) -> Learned:
    """A tiny CTC recognizer fine-tuned until it reads its 64 training words (500 steps,
    about 100 s on 2 cores, once per session): the trained model that the finetune,
    eval, read, export and average tests share."""
    run = tmp_path_factory.mktemp("learned") / "run"
    argv = [
        "finetune",
        *FINETUNE_TINY,
        "data.batch_size=64",
        f"data.train=[{learned_words}]",
        f"data.val=[{learned_words}]",
        "model.decoder.hidden=128",
        "trainer.max_steps=500",
        "trainer.val_every=100",
        "optim.schedule=constant",
        f"output_dir={run}",
    ]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(argv)
    assert code == 0, out.getvalue()
    return Learned(learned_words, run, run / "model", out.getvalue())
