"""Writing samples into numbered tar or LMDB shards with an index."""

from __future__ import annotations

import io
import itertools
import json
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from persec.data.dataset import MISSING_FILE, MISSING_KEY, UNDECODABLE, SkipReport
from persec.data.layouts import detect_layout, open_dataset
from persec.data.lmdb import write_lmdb
from persec.data.shards.format import INDEX_FILE, LABEL_EXTENSION, TAR_SUFFIX
from persec.errors import DataError
from persec.image import ImageDecodeError, decode_image

# ------------------------------------------------------------------ writing
_MAGIC = [
    (b"\x89PNG", "png"), (b"\xff\xd8", "jpg"), (b"GIF8", "gif"),
    (b"BM", "bmp"), (b"II*\x00", "tif"), (b"MM\x00*", "tif"),
]  # fmt: skip


def image_extension(data: bytes, default: str = "png") -> str:
    """Member extension for encoded image bytes, from their magic number."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((ext for magic, ext in _MAGIC if data.startswith(magic)), default)


def _write_tar(path: Path, samples: Iterable[tuple[bytes, str | None]], start: int) -> int:
    partial = path.with_name(path.name + ".partial")  # never leave a half shard behind
    n = 0
    with tarfile.open(partial, "w") as tar:
        for n, (data, label) in enumerate(samples, 1):
            key = f"{start + n - 1:09d}"
            members = [(f"{key}.{image_extension(data)}", data)]
            if label is not None:
                members.append((f"{key}.{LABEL_EXTENSION}", label.encode("utf-8")))
            for name, payload in members:
                info = tarfile.TarInfo(name)  # mtime 0, root-owned: reproducible bytes
                info.size, info.mode = len(payload), 0o644
                tar.addfile(info, io.BytesIO(payload))
    partial.rename(path)
    return n


def write_shards(
    samples: Iterable[tuple[bytes, str | None]],
    out: str | Path,
    per_shard: int = 10_000,
    format: str = "tar",
    total: int | None = None,
    progress: bool | None = None,
    meta: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Write ``(encoded image, label or None)`` pairs into numbered shards under ``out``
    (``shard-000000.tar``, ... or ``shard-000000/`` LMDBs) and the index ``shards.json``.

    Image bytes are stored unchanged. An LMDB shard needs a label per sample (an
    unlabelled sample gets an empty one, which ``LmdbDataset`` skips as empty).

    Args:
        samples: the pairs, in output order.
        out: output directory (may exist, but must hold no shards).
        per_shard: samples per shard (the last one may hold fewer).
        format: ``"tar"`` or ``"lmdb"``.
        total: number of samples, for the progress bar.
        progress: show a progress bar (``None``: only on a terminal).
        meta: extra entries for ``shards.json`` (source, seed, ...).

    Returns:
        one ``{"name", "count"}`` per shard, as listed in ``shards.json``.

    Raises:
        DataError: bad ``per_shard`` / ``format``, shards already in ``out``, or no sample.
    """
    out = Path(out)
    if per_shard < 1:
        raise DataError(f"samples per shard must be >= 1, got {per_shard}")
    if format not in ("tar", "lmdb"):
        raise DataError(f"unknown shard format {format!r}: use 'tar' or 'lmdb'")
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; give a new directory")
    if (out / INDEX_FILE).exists() or any(out.glob("shard-*")):
        raise DataError(f"{out} already holds shards; choose a new output directory")
    out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(
        samples, total=total, unit="img", desc="shard",
        disable=None if progress is None else not progress,
    )  # fmt: skip
    it = iter(bar)
    shards: list[dict[str, Any]] = []
    written = 0
    while (first := next(it, None)) is not None:
        chunk = itertools.chain([first], itertools.islice(it, per_shard - 1))
        name = f"shard-{len(shards):06d}" + (TAR_SUFFIX if format == "tar" else "")
        if format == "tar":
            count = _write_tar(out / name, chunk, written)
        else:
            count = write_lmdb(out / name, ((d, "" if lb is None else lb) for d, lb in chunk))
        shards.append({"name": name, "count": count})
        written += count
    bar.close()
    if not shards:
        raise DataError("no samples to write")
    index = {"format": format, "total": written, **(meta or {}), "shards": shards}
    (out / INDEX_FILE).write_text(json.dumps(index, indent=1) + "\n")
    return shards


def shard_dataset(
    src: str | Path,
    out: str | Path,
    format: str = "tar",
    per_shard: int = 10_000,
    shuffle: bool = False,
    seed: int = 0,
    labels: bool = True,
    verify: bool = True,
    progress: bool | None = None,
) -> tuple[list[dict], SkipReport]:
    """Convert a dataset on disk into shards (see :func:`~persec.data.shards.write.write_shards`).

    Args:
        src: a gt.txt folder, a directory tree of LMDBs or a plain image folder (the
            last is always written without labels).
        out: output directory.
        format: ``"tar"`` or ``"lmdb"``.
        per_shard: samples per shard.
        shuffle: write the samples in the order of a permutation drawn from ``seed``
            (the permutation costs 8 bytes per sample).
        seed: seed of that permutation.
        labels: keep the labels (blank labels or ones with control characters are
            skipped, as every reader does); ``False``: images only.
        verify: decode every image and skip the undecodable ones.
        progress: show a progress bar (``None``: only on a terminal).

    Returns:
        ``(shards written, SkipReport)``.

    Raises:
        DataError: a missing or empty source, or an output that already holds shards.
    """
    layout = detect_layout(src)
    unlabelled = not labels or layout == "images"
    if (Path(out) / INDEX_FILE).exists() or any(Path(out).glob("shard-*")):  # before the scan
        raise DataError(f"{out} already holds shards; choose a new output directory")
    dataset = open_dataset(src, unlabelled=unlabelled, max_label_length=None)
    report = SkipReport(dataset.name).merge(dataset.report)
    if len(dataset) == 0:
        raise DataError(f"{src}: no usable sample ({report.summary()})")
    order = np.arange(len(dataset))
    if shuffle:
        order = np.random.default_rng(seed).permutation(len(dataset))
    missing = MISSING_KEY if layout == "lmdb" else MISSING_FILE

    def samples() -> Iterator[tuple[bytes, str | None]]:
        for i in map(int, order):
            data = dataset.read_bytes(i)
            if data is None:
                report.skip_kept(missing, dataset.source(i))
                continue
            if verify:
                try:
                    decode_image(data)
                except ImageDecodeError:
                    report.skip_kept(UNDECODABLE, dataset.source(i))
                    continue
            yield data, None if unlabelled else dataset.label(i)

    meta = {"source": str(src), "labelled": not unlabelled, "shuffled": shuffle}
    if shuffle:
        meta["seed"] = seed
    shards = write_shards(samples(), out, per_shard, format, len(dataset), progress, meta)
    return shards, report
