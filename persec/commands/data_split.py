"""``persec data split``: cut a gt.txt folder into fixed parts (file lists), or check a split."""

from __future__ import annotations

import argparse

from persec.data.folder import split_folder
from persec.data.splits import check_split, make_split, read_group_parts, read_list, write_split
from persec.errors import DataError


def add_split_parser(sub) -> None:
    """Register ``split`` on the ``persec data`` subcommand parser."""
    split = sub.add_parser(
        "split",
        help="split a gt.txt folder into fixed parts (file lists), or check a split",
        description="With --lists: cut SRC into parts by ratio (default train/select/report "
        "70/15/15) and write DIR/<part>.txt (image paths as in SRC/gt.txt) and "
        "DIR/manifest.json. Byte-identical duplicate images are removed (the manifest names "
        "them); --group-by keeps the images of a group (e.g. one source photo or one page) in "
        "one part. Read a part later as SRC:PART (lists found in $PERSEC_SPLITS, ./data/splits "
        "or the checkout's data/splits) or SRC:DIR/PART.txt. With --check DIR: verify a split "
        "against the files on disk. With --out and --holdout: the older two-way split that "
        "copies images into OUT/train and OUT/heldout.",
    )
    split.add_argument("src", metavar="SRC", help="folder with gt.txt")
    mode = split.add_mutually_exclusive_group(required=True)
    mode.add_argument("--lists", metavar="DIR", help="write part lists and a manifest here")
    mode.add_argument("--check", metavar="DIR", help="check the split in DIR against SRC")
    mode.add_argument("--out", metavar="DIR", help="new folder for the copying train/heldout split")
    split.add_argument("--parts", default="train,select,report", metavar="A,B,..")
    split.add_argument("--ratios", default="70,15,15", metavar="R,R,..", help="one per part")
    split.add_argument(
        "--group-by", metavar="REGEX", help="its first group, searched in each file name, names "
        "the file's group (IC13 born-digital: '^img_(\\d+)_'; GW pages: '^(\\d+)-')"
    )  # fmt: skip
    split.add_argument(
        "--groups-from", metavar="MANIFEST", help="put each group in the part this manifest "
        "of another split gave it (GW lines with the words' page list)"
    )  # fmt: skip
    split.add_argument(
        "--fixed", action="append", default=[], metavar="PART=LIST",
        help="a part given as a list of image paths (or a gt.txt); repeatable",
    )  # fmt: skip
    split.add_argument("--holdout", type=int, metavar="N", help="held-out samples (with --out)")
    split.add_argument("--seed", type=int, default=0, metavar="S")
    split.set_defaults(func=run_split)


def _fixed_parts(specs: list[str]) -> dict[str, list[str]]:
    fixed = {}
    for spec in specs:
        part, sep, path = spec.partition("=")
        if not sep or not part or not path:
            raise DataError(f"--fixed takes PART=LIST, got {spec!r}")
        fixed[part] = read_list(path)
    return fixed


def run_split(args: argparse.Namespace) -> int:
    """``persec data split SRC (--lists DIR | --check DIR | --out DIR --holdout N)``."""
    if args.out is not None:
        if args.holdout is None:
            raise DataError("--out needs --holdout N (or use --lists for fixed part lists)")
        train, heldout = split_folder(args.src, args.out, args.holdout, args.seed)
        print(f"wrote {train} samples to {args.out}/train and {heldout} to {args.out}/heldout")
        return 0
    if args.check is not None:
        problems = check_split(args.src, args.check)
        for problem in problems:
            print(f"persec: {problem}")
        print(f"split {args.check} of {args.src}: " + ("bad" if problems else "ok"))
        return 1 if problems else 0
    parts = [p for p in args.parts.split(",") if p]
    try:
        ratios = [float(r) for r in args.ratios.split(",") if r]
    except ValueError as err:
        raise DataError(f"--ratios takes numbers separated by commas, got {args.ratios!r}") from err
    split = make_split(
        args.src,
        parts=parts,
        ratios=ratios,
        seed=args.seed,
        group_by=args.group_by,
        fixed=_fixed_parts(args.fixed),
        group_parts=read_group_parts(args.groups_from) if args.groups_from else None,
    )
    write_split(split, args.lists)
    counts = ", ".join(f"{name} {len(rels)}" for name, rels in split.parts.items())
    removed = len(split.manifest["duplicates"])
    print(f"wrote {args.lists}: {counts} ({removed} duplicate images removed)")
    return 0
