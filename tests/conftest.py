"""Shared pytest fixtures (generic only; module-specific ones live in their test file)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import torch

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
