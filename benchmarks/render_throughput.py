"""Throughput of the offline word renderer (images/s at 32x128).

Measures, for the default and the ``hard`` preset:
  * render only, one process;
  * render + PNG encode, one process;
  * render + PNG encode with a pool of W workers (what ``persec render`` does,
    minus the LMDB write).

Usage::

    PYTHONPATH=. python benchmarks/render_throughput.py --n 4000 [--workers 2]

Other processes compete for the same cores: the load average is printed with the
table so numbers from a busy machine can be told apart.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from persec.data.render.config import HardSynthConfig, SynthConfig
from persec.data.render.synth import WordRenderer  # noqa: E402
from persec.data.render.writer import render_samples  # noqa: E402
from persec.image import encode_image  # noqa: E402


def _rate(fn, n: int) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def measure(renderer: WordRenderer, n: int, workers: int) -> dict[str, float]:
    """Images/s of the three modes for ``n`` images."""
    renderer.render(0)  # warm the word list and a first font

    def render_only():
        for i in range(n):
            renderer.render(i)

    def render_png():
        for i in range(n):
            encode_image(renderer.render(i)[0], "png")

    def pool():
        for _ in render_samples(renderer, n, workers, "png"):
            pass

    return {
        "render, 1 process": _rate(render_only, n),
        "render+png, 1 process": _rate(render_png, n),
        f"render+png, {workers} workers": _rate(pool, n),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000, help="images per measurement")
    parser.add_argument("--workers", type=int, default=2, help="pool size")
    args = parser.parse_args()

    load = os.getloadavg()[0]
    print(f"# {args.n} images at 32x128, {os.cpu_count()} CPUs, load average {load:.2f}")
    print(f"| {'preset':<8} | {'mode':<24} | {'images/s':>9} |")
    print(f"|{'-' * 10}|{'-' * 26}|{'-' * 11}|")
    for name, config in (("default", SynthConfig()), ("hard", HardSynthConfig())):
        renderer = WordRenderer(config, split="train", seed=0)
        for mode, rate in measure(renderer, args.n, args.workers).items():
            print(f"| {name:<8} | {mode:<24} | {rate:>9.0f} |")
    print(f"# load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
