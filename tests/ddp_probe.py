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


def _digests(images: torch.Tensor) -> list[str]:
    return [hashlib.sha1(img.numpy().tobytes()).hexdigest() for img in images]


class Probe(Callback):
    """Per rank: a digest of every training image by epoch, of every image of the last
    validation, the metrics that validation logged, the final parameters and, for a
    recognizer, its scores on the whole first validation set read in this one process."""

    def __init__(self, out: Path):
        self.out = out
        self.seen: dict[int, list[str]] = {}
        self.val_seen: list[str] = []
        self.val_metrics: dict[str, float] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        digests = _digests(batch[0])
        self.seen.setdefault(trainer.current_epoch, []).extend(digests)
        # Also step by step, on disk as it happens: a killed run leaves what it read.
        with open(self.out / f"rank{trainer.global_rank}.steps.jsonl", "a") as f:
            f.write(json.dumps({"step": trainer.global_step, "digests": digests}) + "\n")

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self.val_seen = []

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.val_seen.extend(_digests(batch[0]))

    def on_validation_end(self, trainer, pl_module) -> None:
        metrics = trainer.callback_metrics
        self.val_metrics = {k: float(v) for k, v in metrics.items() if k.startswith("val/")}

    def on_train_end(self, trainer, pl_module) -> None:
        rank = trainer.global_rank
        params = {k: p.detach().contiguous() for k, p in pl_module.named_parameters()}
        save_file(params, str(self.out / f"rank{rank}.safetensors"))
        info = {
            "world_size": trainer.world_size,
            "steps": trainer.global_step,
            "seen": self.seen,
            "val_seen": self.val_seen,
            "val_metrics": self.val_metrics,
        }
        if hasattr(pl_module, "model") and trainer.datamodule.val_sets:
            info["one_process"] = _score_alone(pl_module.model, trainer.datamodule.val_sets[0])
        (self.out / f"rank{rank}.json").write_text(json.dumps(info))


def _score_alone(model, dataset) -> dict[str, float]:
    """Word accuracy and CER of ``model`` on all of ``dataset``, read here, unsplit."""
    from torch.utils.data import DataLoader

    from persec.data.dataset import collate_samples
    from persec.metrics import ScoreAccumulator

    scores = ScoreAccumulator("alone", model.charset)
    model.eval()
    with torch.no_grad():
        for images, labels, _ in DataLoader(dataset, batch_size=8, collate_fn=collate_samples):
            predictions = model.decode(model(images))
            scores.update([p for p, _ in predictions], labels)
    result = scores.compute()
    return {"samples": result.samples, "word_acc": result.word_acc, "cer": result.cer}


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
