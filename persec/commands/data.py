"""``persec data``: inspect datasets (``stats``) and convert gt.txt folders to LMDB
(``convert``)."""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from persec.charset import Charset
from persec.data.dataset import Skipped, SkipReport, detect_layout, open_dataset
from persec.data.folder import folder_to_lmdb, split_folder
from persec.data.splits import check_split, make_split, parse_part, read_list, write_split
from persec.errors import DataError

HELP = "dataset statistics and the gt.txt folder to LMDB converter"

LAYOUT_NAMES = {"folder": "gt.txt folder", "lmdb": "LMDB", "images": "image folder, unlabelled"}
BAR_WIDTH = 40


def add_parser(subparsers) -> None:
    """Register ``data`` (with ``stats`` and ``convert``) on the ``persec`` subcommand parser."""
    parser = subparsers.add_parser("data", help=HELP, description=HELP[0].upper() + HELP[1:] + ".")
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    stats = sub.add_parser(
        "stats",
        help="samples kept and skipped (by reason), label lengths, charset coverage, image sizes",
        description="Count samples kept and skipped by reason (decoding every image, so "
        "corrupt ones are found), and show label lengths, charset coverage and image sizes. "
        "PATH: a folder with gt.txt, a directory tree of LMDBs, or a plain image folder.",
    )
    stats.add_argument("path", metavar="PATH", help="dataset directory")
    stats.add_argument(
        "--charset",
        default="36_lowercase",
        metavar="SPEC",
        help="36_lowercase (default), 62_mixed, 94_full or a file with one character per line",
    )
    stats.add_argument(
        "--max-length", type=int, default=25, metavar="N", help="longest label kept (0: no limit)"
    )
    stats.add_argument(
        "--no-decode",
        action="store_true",
        help="do not decode images (faster; corrupt images and image sizes are not reported)",
    )
    stats.set_defaults(func=run_stats)

    convert = sub.add_parser(
        "convert",
        help="convert a gt.txt folder to an LMDB (image bytes copied unchanged)",
        description="Write the images listed in SRC/gt.txt and their labels to a new LMDB "
        "at OUT (clovaai/parseq format). Image bytes are copied unchanged; labels as written.",
    )
    convert.add_argument("src", metavar="SRC", help="folder with gt.txt")
    convert.add_argument("out", metavar="OUT", help="new LMDB directory")
    convert.add_argument(
        "--charset", metavar="SPEC", help="skip labels outside this charset (default: keep all)"
    )
    convert.add_argument(
        "--max-length", type=int, default=0, metavar="N", help="skip longer labels (0: no limit)"
    )
    convert.add_argument("--gt-file", default="gt.txt", help="ground-truth file inside SRC")
    convert.add_argument(
        "--no-verify", action="store_true", help="do not decode images to skip corrupt ones"
    )
    convert.set_defaults(func=run_convert)

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


@dataclass
class DatasetStats:
    """What ``persec data stats`` reports about one dataset."""

    name: str
    layout: str
    report: SkipReport
    charset: Charset | None
    max_length: int | None
    lengths: Counter[int] = field(default_factory=Counter)
    chars: Counter[str] = field(default_factory=Counter)
    widths: list[int] = field(default_factory=list)
    heights: list[int] = field(default_factory=list)
    decoded: bool = True


def compute_stats(
    path: str | Path,
    charset: Charset | str | None = "36_lowercase",
    max_length: int | None = 25,
    decode: bool = True,
    progress: bool | None = None,
) -> DatasetStats:
    """Open a dataset and collect its statistics (reading every image when ``decode``).

    A plain image folder is read as unlabelled (no label statistics).
    """
    layout = detect_layout(parse_part(path)[0])
    dataset = open_dataset(
        path, charset=charset, unlabelled=layout == "images", max_label_length=max_length
    )
    report = SkipReport(dataset.name).merge(dataset.report)
    stats = DatasetStats(
        dataset.name, layout, report, getattr(dataset, "charset", None), max_length, decoded=decode
    )
    indices = range(len(dataset))
    if decode:
        indices = tqdm(indices, desc=f"reading {dataset.name}", unit="img",
                       disable=None if progress is None else not progress)  # fmt: skip
    for i in indices:
        if decode:
            item = dataset[i]
            if isinstance(item, Skipped):
                report.skip_kept(item.reason, item.source)
                continue
            image, label = item
            stats.widths.append(image.width)
            stats.heights.append(image.height)
        else:
            label = dataset.label(i)
        if label is not None:
            stats.lengths[len(label)] += 1
            stats.chars.update(label)
    return stats


def _bar(n: int, most: int) -> str:
    return "#" * (max(1, round(BAR_WIDTH * n / most)) if n else 0)


def _fmt(x: float) -> str:
    # Pixel counts are integers; only a median of an even count can end in .5.
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"


def format_stats(stats: DatasetStats) -> str:
    """The human-readable report printed by ``persec data stats``."""
    r = stats.report
    lines = [f"dataset   {stats.name} ({LAYOUT_NAMES[stats.layout]})"]
    if stats.layout != "images" and stats.charset is not None:
        limit = stats.max_length if stats.max_length else "none"
        lines.append(
            f"charset   {stats.charset.name} ({len(stats.charset)} characters), max length {limit}"
        )
    lines += [f"samples   {r.total}", f"kept      {r.kept}", f"skipped   {r.skipped}"]
    width = max((len(reason) for reason in r.counts), default=0)
    for reason, n in sorted(r.counts.items()):
        example = r.examples.get(reason, [])
        hint = f"   e.g. {example[0]}" if example else ""
        lines.append(f"  {reason:<{width}}  {n}{hint}")

    if stats.lengths:
        lines.append("")
        lines.append("label length (kept samples)")
        most = max(stats.lengths.values())
        for length in range(min(stats.lengths), max(stats.lengths) + 1):
            n = stats.lengths[length]
            lines.append(f"  {length:>3} | {_bar(n, most):<{BAR_WIDTH}} {n}")
        mean = sum(k * v for k, v in stats.lengths.items()) / sum(stats.lengths.values())
        lines.append(f"  mean length {mean:.2f}")

    if stats.charset is not None and stats.layout != "images":
        present = [c for c in stats.charset if stats.chars[c]]
        missing = "".join(c for c in stats.charset if not stats.chars[c])
        lines.append("")
        lines.append(
            f"charset coverage: {len(present)} of {len(stats.charset)} characters appear "
            f"({len(stats.chars)} distinct in kept labels)"
        )
        lines.append(f"  present: {''.join(present) or '(none)'}")
        lines.append(f"  missing: {missing or '(none)'}")

    lines.append("")
    if not stats.decoded:
        lines.append("image size: not measured (--no-decode)")
    elif not stats.widths:
        lines.append("image size: no decodable image")
    else:
        aspects = [w / h for w, h in zip(stats.widths, stats.heights, strict=True)]
        lines.append(f"image size ({len(stats.widths)} decoded images)")
        for label, values, fmt in (
            ("width", stats.widths, _fmt),
            ("height", stats.heights, _fmt),
            ("aspect", aspects, "{:.2f}".format),
        ):
            low, mid, high = (fmt(x) for x in (min(values), statistics.median(values), max(values)))
            lines.append(f"  {label:<7} min {low:>7}  median {mid:>7}  max {high:>7}")
        lines.append("  (aspect = width / height)")
    return "\n".join(lines)


def run_stats(args: argparse.Namespace) -> int:
    """``persec data stats PATH``: print the statistics of one dataset."""
    stats = compute_stats(
        args.path,
        charset=args.charset,
        max_length=args.max_length or None,
        decode=not args.no_decode,
    )
    print(format_stats(stats))
    return 0


def run_convert(args: argparse.Namespace) -> int:
    """``persec data convert SRC OUT``: write a gt.txt folder to a new LMDB."""
    written, report = folder_to_lmdb(
        args.src,
        args.out,
        charset=args.charset,
        max_label_length=args.max_length or None,
        gt_file=args.gt_file,
        verify=not args.no_verify,
    )
    print(report.summary())
    print(f"wrote {written} samples to {args.out}")
    return 0


def _fixed_parts(specs: list[str]) -> dict[str, list[str]]:
    fixed = {}
    for spec in specs:
        part, sep, path = spec.partition("=")
        if not sep or not part or not path:
            raise DataError(f"--fixed takes PART=LIST, got {spec!r}")
        fixed[part] = read_list(path)
    return fixed


def _group_parts(path: str | None) -> dict[str, str] | None:
    if path is None:
        return None
    try:
        manifest = json.loads(Path(path).read_text("utf-8"))
        return {g: part for part, groups in manifest["groups"].items() for g in groups}
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"--groups-from {path}: not a split manifest with groups ({err})") from err


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
        group_parts=_group_parts(args.groups_from),
    )
    write_split(split, args.lists)
    counts = ", ".join(f"{name} {len(rels)}" for name, rels in split.parts.items())
    removed = len(split.manifest["duplicates"])
    print(f"wrote {args.lists}: {counts} ({removed} duplicate images removed)")
    return 0
