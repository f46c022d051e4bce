"""``persec shard``: split an image folder, gt.txt folder or LMDB into numbered shards
(tar or LMDB) for streamed pretraining (``data.shards=[DIR]``)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from persec.data.dataset import (
    MISSING_FILE,
    MISSING_KEY,
    UNDECODABLE,
    SkipReport,
    detect_layout,
    open_dataset,
)
from persec.data.shards import INDEX_FILE, write_shards
from persec.errors import DataError
from persec.image import ImageDecodeError, decode_image

HELP = "split an image folder, gt.txt folder or LMDB into tar or LMDB shards for streaming"


def add_parser(subparsers) -> None:
    """Register ``shard`` on the ``persec`` subcommand parser."""
    parser = subparsers.add_parser(
        "shard",
        help=HELP,
        description="Write the samples of SRC (a folder with gt.txt, a directory tree of "
        "LMDBs, or a plain image folder) into numbered shards under DIR "
        "(shard-000000.tar, ... or shard-000000/ LMDBs) and an index, shards.json. Image "
        "bytes are copied unchanged; labels as written. Pretraining streams them with "
        "data.shards=[DIR].",
    )
    parser.add_argument("src", metavar="SRC", help="dataset directory")
    parser.add_argument("--out", required=True, metavar="DIR", help="new output directory")
    parser.add_argument(
        "--format", choices=["tar", "lmdb"], default="tar", help="shard format (default tar)"
    )
    parser.add_argument(
        "--per-shard", type=int, default=10_000, metavar="N", help="samples per shard (10000)"
    )
    parser.add_argument(
        "--shuffle", action="store_true", help="write the samples in a random order"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of --shuffle (default 0)")
    parser.add_argument(
        "--no-labels", action="store_true", help="write images only (e.g. an unlabelled LMDB)"
    )
    parser.add_argument(
        "--no-verify", action="store_true", help="do not decode images to skip corrupt ones"
    )
    parser.set_defaults(func=run)


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
    """Convert a dataset on disk into shards (see :func:`~persec.data.shards.write_shards`).

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


def run(args: argparse.Namespace) -> int:
    """``persec shard SRC --out DIR``: write the shards and print what was skipped."""
    shards, report = shard_dataset(
        args.src,
        args.out,
        format=args.format,
        per_shard=args.per_shard,
        shuffle=args.shuffle,
        seed=args.seed,
        labels=not args.no_labels,
        verify=not args.no_verify,
    )
    print(report.summary())
    total = sum(s["count"] for s in shards)
    print(f"wrote {total} samples in {len(shards)} shard(s) to {args.out} ({INDEX_FILE})")
    return 0
