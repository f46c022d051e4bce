"""Run by tests/test_distributed.py as ``python tests/ddp_probe.py {pretrain|finetune}
OUT key=value...``: trains with the given overrides (two CPU processes under DDP) and
has every rank write what it saw and what it ended with, for the test to compare.

Lightning's DDP launcher starts the second rank by running this same command again.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
from safetensors.torch import save_file

from persec.config import load_config


class Probe(Callback):
    """Per rank: a digest of every training image by epoch, and the final parameters."""

    def __init__(self, out: Path):
        self.out = out
        self.seen: dict[int, list[str]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        digests = [hashlib.sha1(img.numpy().tobytes()).hexdigest() for img in batch[0]]
        self.seen.setdefault(trainer.current_epoch, []).extend(digests)

    def on_train_end(self, trainer, pl_module) -> None:
        rank = trainer.global_rank
        params = {k: p.detach().contiguous() for k, p in pl_module.named_parameters()}
        save_file(params, str(self.out / f"rank{rank}.safetensors"))
        info = {"world_size": trainer.world_size, "steps": trainer.global_step, "seen": self.seen}
        (self.out / f"rank{rank}.json").write_text(json.dumps(info))


def main() -> None:
    command, out, overrides = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    if command == "pretrain":
        from persec.training.pretrain import PretrainConfig, pretrain

        pretrain(load_config(PretrainConfig, None, overrides), callbacks=[Probe(out)])
    else:
        from persec.training.finetune import FinetuneConfig, finetune

        finetune(load_config(FinetuneConfig, None, overrides), callbacks=[Probe(out)])


if __name__ == "__main__":
    main()
