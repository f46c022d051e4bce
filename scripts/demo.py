"""`make demo`: the main job end to end on the embedded default data.

Render a held-out-font test set, PerSec-pretrain a small ResNet encoder on
rendered images with their labels dropped, fine-tune a CNN-CTC recognizer from it on
words rendered on the fly, then evaluate it and the shipped model (persec/shipped/persec-small)
on an explicit list of sets: the held-out fonts and, when ../shared/data is present,
the *report* parts of IIIT5K and IC15 (data/splits) and real_demo. Statistics are
printed for the same sets. No handwriting: there is no handwriting model yet.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from persec.cli import main as persec

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = ROOT / ".." / "shared" / "data"
#: The real sets the demo reads, as (set folder, part): split lists in data/splits.
REPORT_SETS = [("IIIT5K_train", ":report"), ("IC15_train", ":report"), ("real_demo", "")]


def step(title: str, argv: list[str]) -> None:
    print(f"\n== {title}: persec {' '.join(argv)}", flush=True)
    code = persec(argv)
    if code:
        sys.exit(f"demo: step '{title}' failed with exit code {code}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/demo", help="output directory (recreated)")
    parser.add_argument("--n-test", type=int, default=500, help="held-out-font test images")
    parser.add_argument(
        "--pretrain-steps", type=int, default=100, help="PerSec pretraining steps (batch 64)"
    )
    parser.add_argument("--steps", type=int, default=400, help="fine-tuning steps (batch 64)")
    args = parser.parse_args()
    out = Path(args.out)
    if out.exists():
        if any(out.iterdir()) and not (out / "synth-test").exists():
            sys.exit(f"demo: {out} exists and is not a previous demo output; choose another --out")
        shutil.rmtree(out)
    start = time.time()
    step(
        "render held-out-font test",
        [
            "render",
            "--out",
            str(out / "synth-test"),
            "--n",
            str(args.n_test),
            "--split",
            "test",
            "--seed",
            "1",
        ],
    )
    # Report parts only: never a set (or part) the shipped model trained or was tuned on.
    real_sets = [
        str(REAL_DATA / name) + part
        for name, part in REPORT_SETS
        if (REAL_DATA / name / "gt.txt").is_file()
    ]
    for name in [str(out / "synth-test"), *real_sets]:
        step(f"stats {Path(name).name}", ["data", "stats", name])
    step(
        "PerSec-pretrain the encoder on rendered images (labels dropped)",
        [
            "pretrain",
            "--config",
            str(ROOT / "configs" / "pretrain" / "cpu.yaml"),
            f"trainer.max_steps={args.pretrain_steps}",
            f"trainer.val_every={args.pretrain_steps}",
            "data.synth_val=128",
            f"output_dir={out / 'pretrain'}",
        ],
    )
    step(
        "fine-tune CNN-CTC from the pretrained encoder on rendered words",
        [
            "finetune",
            "--config",
            str(ROOT / "configs" / "finetune" / "cpu-ctc.yaml"),
            f"trainer.max_steps={args.steps}",
            f"trainer.val_every={args.steps}",
            "data.synth_val=200",
            # A linear CTC head leaves the CTC plateau in ~200 steps; the BiLSTM of
            # cpu-ctc.yaml needs ~600 (README, label-efficiency experiment).
            "model.decoder.lstm_layers=0",
            "optim.warmup_steps=100",
            f"output_dir={out / 'finetune'}",
            "--init-encoder",
            str(out / "pretrain"),
        ],
    )
    model = str(out / "finetune" / "model")
    step(
        "evaluate",
        [
            "eval",
            "--model",
            model,
            "--data",
            str(out / "synth-test"),
            *real_sets,
            "--out",
            str(out / "eval"),
        ],
    )
    # The shipped model trained on IIIT5K_train:train; its decoding weights were chosen
    # on the 500 crops it held out, now the select and report parts (README, "Real data").
    shipped_sets = [str(out / "synth-test"), *real_sets]
    step(
        "evaluate the shipped model (no --model: persec/shipped/persec-small)",
        ["eval", "--data", *shipped_sets, "--out", str(out / "eval-shipped")],
    )
    crops = sorted((REAL_DATA / "real_demo" / "images").glob("*"))[:4]
    if crops:
        step("read real crops with the shipped model", ["read", *map(str, crops)])
    print(f"\ndemo finished in {time.time() - start:.0f} s; outputs in {out}/")


if __name__ == "__main__":
    main()
