"""Rendering many word images into an LMDB with a process pool."""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import yaml
from tqdm import tqdm

from persec.config import to_dict
from persec.data.lmdb import write_lmdb
from persec.data.render.config import HardSynthConfig, SynthConfig
from persec.data.render.synth import WordRenderer
from persec.errors import PersecError
from persec.image import encode_image

CHUNK = 256  # indices per worker task: large enough to amortise the IPC


def _init_worker(renderer: WordRenderer, fmt: str) -> None:
    global _renderer, _format
    _renderer, _format = renderer, fmt


def _render_chunk(bounds: tuple[int, int]) -> list[tuple[bytes, str]]:
    assert _renderer is not None
    out = []
    for i in range(*bounds):
        image, label = _renderer.render(i)
        out.append((encode_image(image, _format), label))
    return out


def render_samples(
    renderer: WordRenderer, n: int, workers: int = 0, fmt: str = "png"
) -> Iterator[tuple[bytes, str]]:
    """Encoded samples ``0..n-1`` in index order, rendered by ``workers`` processes."""
    chunks = [(s, min(s + CHUNK, n)) for s in range(0, n, CHUNK)]
    if workers <= 0:
        _init_worker(renderer, fmt)
        for bounds in chunks:
            yield from _render_chunk(bounds)
        return
    # fork shares the already-loaded fonts list and word list with the workers.
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else None)
    with ctx.Pool(workers, initializer=_init_worker, initargs=(renderer, fmt)) as pool:
        for batch in pool.imap(_render_chunk, chunks):
            yield from batch


def render_lmdb(
    out: str | Path,
    n: int,
    config: SynthConfig,
    split: str = "train",
    seed: int = 0,
    workers: int = 0,
    fmt: str = "png",
    progress: bool = True,
) -> tuple[int, int, float]:
    """Render images ``0..n-1`` of ``(seed, split)`` into a new LMDB at ``out`` and write
    ``render.yaml`` (provenance) beside it.

    Returns:
        (images written, render processes used, seconds).

    Raises:
        PersecError: ``out`` is a file or already holds an LMDB, or ``n`` / ``workers``
            out of range.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PersecError(f"--out {out} is a file; give a new directory")
    if (out / "data.mdb").exists():
        raise PersecError(f"{out} already holds an LMDB; choose a new output directory")
    if n < 1:
        raise PersecError(f"--n must be at least 1, got {n}")
    if workers < 0:
        raise PersecError(f"--workers must be >= 0, got {workers}")
    renderer = WordRenderer(config, split=split, seed=seed)
    _ = renderer.words.vocabulary  # load the word list once, before the workers fork

    # A pool costs more than it saves on a chunk or two.
    workers = 0 if n <= CHUNK else min(workers, -(-n // CHUNK))
    bar = tqdm(
        total=n,
        unit="img",
        desc="render",
        file=sys.stderr,
        dynamic_ncols=True,
        disable=not progress,
    )

    def samples():
        for sample in render_samples(renderer, n, workers, fmt):
            bar.update(1)
            yield sample

    start = time.perf_counter()
    try:
        written = write_lmdb(out, samples())
    except BaseException:
        # Leave no half-written LMDB behind (it would block the next attempt).
        for name in ("data.mdb", "lock.mdb"):
            (out / name).unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    provenance = {
        "n": written,
        "seed": seed,
        "split": split,
        "hard": isinstance(config, HardSynthConfig),
        "style": config.style,
        "format": fmt,
        "config": to_dict(config),
    }
    (out / "render.yaml").write_text(yaml.safe_dump(provenance, sort_keys=False))
    return written, max(workers, 1), seconds
