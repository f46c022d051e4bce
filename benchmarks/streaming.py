"""Streaming loader: images/s and resident memory as a shard corpus grows.

Builds a synthetic corpus on disk once: ``--base`` word images rendered by persec's
renderer (PNG), repeated into one tar shard of ``--per-shard`` images. The corpus of
size k× is ``2k`` hard links to that file (``2k × per-shard`` images; the defaults
give 62,500 images at 1×, 250,000 at 4× and 1,000,000 at 16×). The links keep the
disk use to one shard; every shard is still opened, parsed and decoded on its own,
but its bytes come from the page cache, not the disk.

For each corpus size a fresh process builds a :class:`~persec.data.shards.stream.ShardStream`
and reads ``--batches`` batches through a ``StreamLoader`` (same batch size, workers
and shuffle buffer each time) while a thread samples the resident memory of the
process and its loader workers every 20 ms. Sizes are measured round-robin
``--repeats`` times; the table shows the median.

Usage::

    PYTHONPATH=. python benchmarks/streaming.py [--dir /tmp/persec-streaming]
        [--batches 200] [--batch-size 64] [--workers 2] [--repeats 3]

Other processes compete for the same cores: the load average is printed with the
table so numbers from a busy machine can be told apart.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FACTORS = (1, 4, 16)
SHARDS_PER_UNIT = 2  # 1× needs a shard per loader worker


# ------------------------------------------------------------------ building the corpus
def build_corpus(root: Path, base: int, per_shard: int) -> dict[int, Path]:
    """The corpus directories by size factor (built once, reused when present)."""
    from persec.data.render.config import SynthConfig
    from persec.data.render.synth import WordRenderer
    from persec.data.render.writer import render_samples
    from persec.data.shards.write import write_shards

    shard_dir = root / f"base-{base}-{per_shard}"
    shard = shard_dir / "shard-000000.tar"
    if not shard.is_file():
        shutil.rmtree(shard_dir, ignore_errors=True)
        start = time.perf_counter()
        renderer = WordRenderer(SynthConfig(), split="train", seed=0)
        images = list(render_samples(renderer, base, workers=2))
        print(f"# rendered {base} base images in {time.perf_counter() - start:.0f} s")
        start = time.perf_counter()
        repeated = (images[i % base] for i in range(per_shard))
        write_shards(repeated, shard_dir, per_shard=per_shard, progress=False)
        print(f"# wrote one shard of {per_shard} images in {time.perf_counter() - start:.0f} s")
    corpora = {}
    for factor in FACTORS:
        directory = root / f"x{factor}-{base}-{per_shard}"
        n = factor * SHARDS_PER_UNIT
        if len(list(directory.glob("shard-*.tar"))) != n:
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
            for k in range(n):
                os.link(shard, directory / f"shard-{k:06d}.tar")
        corpora[factor] = directory
    return corpora


# ------------------------------------------------------------------ measuring (child process)
def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _kib(pid: int, field: str, name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class MemorySampler(threading.Thread):
    """Peak of the summed RSS and PSS (KiB) of this process and its descendants."""

    def __init__(self, every: float = 0.02):
        super().__init__(daemon=True)
        self.every, self.peak_rss, self.peak_pss = every, 0, 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            pids, todo = [], [os.getpid()]
            while todo:
                pid = todo.pop()
                pids.append(pid)
                todo += _children(pid)
            self.peak_rss = max(self.peak_rss, sum(_kib(p, "VmRSS:", "status") for p in pids))
            self.peak_pss = max(self.peak_pss, sum(_kib(p, "Pss:", "smaps_rollup") for p in pids))
            self._stop_event.wait(self.every)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def measure(corpus: Path, batches: int, batch_size: int, workers: int, buffer: int) -> dict:
    """Read ``batches`` batches of one corpus; rates, latencies and peak memory."""
    import torch

    from persec.data.dataset import collate_samples
    from persec.data.shards.stream import ShardStream, StreamLoader
    from persec.image import ImageConfig, ToTensor

    torch.set_num_threads(1)
    sampler = MemorySampler()
    sampler.start()
    start = time.perf_counter()
    stream = ShardStream([corpus], ToTensor(ImageConfig(32, 128)), seed=0, shuffle_buffer=buffer)
    opened = time.perf_counter()
    loader = StreamLoader(
        stream, batch_size=batch_size, num_workers=workers, collate_fn=collate_samples
    )
    images, first = 0, None
    for i, (batch, _, skipped) in enumerate(loader):
        assert not skipped
        if i == 0:
            first = time.perf_counter()
        else:
            images += batch.shape[0]
        if i + 1 == batches:
            break
    end = time.perf_counter()
    sampler.stop()
    return {
        "shards": len(stream.shards),
        "open_s": opened - start,
        "first_batch_s": first - opened,
        "images_per_s": images / (end - first),
        "peak_rss_mib": sampler.peak_rss / 1024,
        "peak_pss_mib": sampler.peak_pss / 1024,
    }


# ------------------------------------------------------------------ driver
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/persec-streaming"))
    parser.add_argument("--base", type=int, default=2000, help="distinct rendered images")
    parser.add_argument("--per-shard", type=int, default=31_250, help="images per shard")
    parser.add_argument("--batches", type=int, default=200, help="batches read per measurement")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="loader worker processes")
    parser.add_argument("--buffer", type=int, default=2048, help="shuffle buffer per worker")
    parser.add_argument("--repeats", type=int, default=3, help="rounds over the sizes")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()
    if args.measure:
        result = measure(args.measure, args.batches, args.batch_size, args.workers, args.buffer)
        print(json.dumps(result))
        return

    corpora = build_corpus(args.dir, args.base, args.per_shard)
    load = os.getloadavg()[0]
    runs: dict[int, list[dict]] = {f: [] for f in FACTORS}
    child = [sys.executable, __file__, "--batches", str(args.batches), "--batch-size",
             str(args.batch_size), "--workers", str(args.workers), "--buffer", str(args.buffer)]  # fmt: skip
    for _ in range(args.repeats):
        for factor, corpus in corpora.items():
            out = subprocess.run([*child, "--measure", str(corpus)], capture_output=True,
                                 text=True, check=True)  # fmt: skip
            runs[factor].append(json.loads(out.stdout.strip().splitlines()[-1]))

    shard_bytes = next(iter(corpora.values())).joinpath("shard-000000.tar").stat().st_size
    print(
        f"# {args.batches} batches of {args.batch_size} (32x128), {args.workers} workers, "
        f"shuffle buffer {args.buffer}, median of {args.repeats}; {os.cpu_count()} CPUs, "
        f"load average {load:.2f} before, {os.getloadavg()[0]:.2f} after"
    )
    print(
        "| corpus | shards | images | tar bytes | open (ms) | first batch (s) "
        "| images/s (min–max) | peak RSS, main+workers (MiB) | peak PSS (MiB) |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    for factor, results in runs.items():
        med = {k: statistics.median(r[k] for r in results) for k in results[0]}
        rates = [r["images_per_s"] for r in results]
        n = int(med["shards"])
        print(
            f"| {factor}× | {n} | {n * args.per_shard:,} | {n * shard_bytes / 2**30:.1f} GiB "
            f"| {med['open_s'] * 1000:.1f} | {med['first_batch_s']:.2f} "
            f"| {med['images_per_s']:,.0f} ({min(rates):,.0f}–{max(rates):,.0f}) "
            f"| {med['peak_rss_mib']:.0f} | {med['peak_pss_mib']:.0f} |"
        )


if __name__ == "__main__":
    main()
