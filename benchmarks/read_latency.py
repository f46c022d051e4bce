"""What `persec read` costs per crop, greedy against the model's own decoding, in one run.

Reads the first N crops of a folder with :func:`persec.inference.read.read_images` (PNG/JPEG
decoding, resizing, the model, decoding), in process, the two decodings taking turns
``--rounds`` times, and prints crops/s of each, the ratio, and how often their texts
differ. Then times the whole ``persec read`` command (Python start, imports, model and
language-model load) once per decoding. Usage::

    python benchmarks/read_latency.py [--model DIR] [--data DIR] [--n 1000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from persec.decoding.settings import describe_decoding  # noqa: E402
from persec.inference.model import load_model  # noqa: E402
from persec.inference.read import list_images, read_images  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(ROOT / "persec" / "shipped" / "persec-small"))
    p.add_argument(
        "--data", default=str(ROOT.parent / "shared" / "data" / "IIIT5K_train" / "images")
    )
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args()

    paths = list_images([args.data])[: args.n]
    configured = load_model(args.model)
    greedy = load_model(args.model)
    greedy.use_greedy_decoding()
    models = {"greedy": greedy, describe_decoding(configured.config.decoder): configured}
    print(
        f"model {args.model}, {len(paths)} crops of {args.data}, torch threads "
        f"{torch.get_num_threads()}, batch {args.batch_size}, orient tall (the read default)"
    )
    rates: dict[str, list[float]] = {name: [] for name in models}
    texts: dict[str, list[str]] = {}
    for _ in range(args.rounds):
        for name, model in models.items():
            start = time.perf_counter()
            texts[name] = [
                r.text for r in read_images(model, paths, args.batch_size, orient="tall")
            ]
            rates[name].append(len(paths) / (time.perf_counter() - start))
    for name, r in rates.items():
        print(
            f"  {name}: {statistics.median(r):.1f} crops/s (rounds: "
            f"{', '.join(f'{x:.1f}' for x in r)})"
        )
    (g, gr), (c, cr) = rates.items()
    print(f"  ratio configured / greedy: {statistics.median(cr) / statistics.median(gr):.2f}")
    differ = sum(a != b for a, b in zip(texts[g], texts[c], strict=True))
    print(f"  texts that differ: {differ} of {len(paths)}")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "crops"
        folder.mkdir()
        for i, path in enumerate(paths):
            (folder / f"{i:05d}{Path(path).suffix}").symlink_to(Path(path).resolve())
        for extra in ([], ["--greedy"]):
            cmd = [
                sys.executable,
                "-m",
                "persec.cli",
                "read",
                "--model",
                args.model,
                *extra,
                str(folder),
            ]
            start = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
            seconds = time.perf_counter() - start
            print(
                f"  persec read {' '.join(extra) or '(configured)'}: {seconds:.1f} s for "
                f"{len(paths)} crops, start and load included"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
