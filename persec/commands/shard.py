"""``persec shard``: split an image folder, gt.txt folder or LMDB into numbered shards
(tar or LMDB) for streamed pretraining (``data.shards=[DIR]``)."""

from __future__ import annotations

import argparse

from persec.data.shards.format import INDEX_FILE
from persec.data.shards.write import shard_dataset

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
