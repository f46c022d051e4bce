"""Pretraining diagnostics side by side: PerSec variants pretrained with the frozen
probe, effective rank and leak test logged at every validation (persec.training.probe).

Each variant is one `persec pretrain` run of configs/pretrain/cpu.yaml with its
overrides; a finished run (encoder.safetensors written) is skipped, so a killed sitting
resumes with the next variant. The table reads every run's metrics.csv.

    python benchmarks/pretrain_diagnostics.py --out runs/diagnostics          # all variants
    python benchmarks/pretrain_diagnostics.py --out runs/diagnostics --only input
    python benchmarks/pretrain_diagnostics.py --out runs/diagnostics --table  # no training
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from persec.cli import main as persec

ROOT = Path(__file__).resolve().parents[1]

COMMON = [
    "trainer.max_minutes=0",
    "data.synth_seed=100",
    "data.synth_val=128",
    "probe.train_images=2000",
    "probe.test_images=500",
]
#: name -> overrides of configs/pretrain/cpu.yaml
VARIANTS = {
    "random": ["trainer.max_steps=1", "trainer.val_every=1"],
    "features-m1": [],  # the CPU config: the paper's feature masking, span 1
    "features-span": [
        "persec.stroke.mask_prob=0.5",
        "persec.stroke.mask_span=4",
        "persec.semantic.mask_prob=0.5",
        "persec.semantic.mask_span=4",
    ],
    "input": ["persec.mask_at=input"],
    # The target pass rolled by a random number of frames and rolled back [ours].
    "input-shift": ["persec.mask_at=input", "persec.target_shift=true"],
}
COLUMNS = [
    "probe/word_acc",
    "probe/position_acc",
    "probe/cer",
    "probe/loss",
    "probe/rank",
    "probe/low_rank",
    "val/stroke/acc",
    "val/semantic/acc",
    "leak/stroke/neighbour_acc",
    "leak/stroke/context_acc",
    "leak/stroke/majority",
    "leak/semantic/neighbour_acc",
    "leak/semantic/context_acc",
    "leak/semantic/majority",
]


def run(name: str, out: Path, steps: int, val_every: int) -> None:
    target = out / name
    if (target / "encoder.safetensors").is_file():
        print(f"== {name}: done, skipped", flush=True)
        return
    overrides = [f"trainer.max_steps={steps}", f"trainer.val_every={val_every}"]
    overrides += COMMON + VARIANTS[name] + [f"output_dir={target}"]
    resume = ["--resume"] if (target / "checkpoints" / "last.ckpt").is_file() else []
    argv = ["pretrain", "--config", str(ROOT / "configs/pretrain/cpu.yaml"), *resume, *overrides]
    print(f"== {name}: persec {' '.join(argv)}", flush=True)
    if persec(argv):
        sys.exit(f"pretraining {name} failed")


def table(out: Path) -> str:
    lines = ["| variant | step | " + " | ".join(COLUMNS) + " |"]
    lines.append("|---|--:|" + "--:|" * len(COLUMNS))
    for name in VARIANTS:
        path = out / name / "metrics.csv"
        if not path.is_file():
            continue
        rows: dict[int, dict[str, str]] = {}
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                merged = rows.setdefault(int(float(row["step"])), {})
                merged.update({k: v for k, v in row.items() if v})
        for step, row in sorted(rows.items()):
            if row.get("probe/word_acc"):
                cells = [f"{float(row[c]):.3f}" if row.get(c) else "" for c in COLUMNS]
                lines.append(f"| {name} | {step} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/diagnostics")
    parser.add_argument("--only", nargs="*", choices=list(VARIANTS), help="these variants")
    parser.add_argument("--steps", type=int, default=600, help="pretraining steps (batch 64)")
    parser.add_argument("--val-every", type=int, default=150, help="probe cadence, steps")
    parser.add_argument("--table", action="store_true", help="only print the table")
    args = parser.parse_args()
    out = Path(args.out)
    if not args.table:
        for name in args.only or list(VARIANTS):
            run(name, out, args.steps, args.val_every)
    text = table(out)
    (out / "diagnostics.md").parent.mkdir(parents=True, exist_ok=True)
    (out / "diagnostics.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
