"""`make demo`: the main job end to end on the embedded default data.

Today (foundation): render a labelled training set and a held-out-font test set
with the offline renderer, then print dataset statistics for them and for the
real word crops in ../shared/data when present. Later stages (pretrain →
fine-tune → evaluate) are appended as they land.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from persec.cli import main as persec

REAL_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def step(title: str, argv: list[str]) -> None:
    print(f"\n== {title}: persec {' '.join(argv)}", flush=True)
    code = persec(argv)
    if code:
        sys.exit(f"demo: step '{title}' failed with exit code {code}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/demo", help="output directory (recreated)")
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--n-test", type=int, default=500)
    args = parser.parse_args()
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    start = time.time()
    step("render train", ["render", "--out", str(out / "synth-train"), "--n", str(args.n_train)])
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
    for name in ("synth-train", "synth-test"):
        step(f"stats {name}", ["data", "stats", str(out / name)])
    for real in sorted(REAL_DATA.glob("*/gt.txt")):
        step(f"stats {real.parent.name} (real)", ["data", "stats", str(real.parent)])
    print(f"\ndemo finished in {time.time() - start:.0f} s; outputs in {out}/")


if __name__ == "__main__":
    main()
