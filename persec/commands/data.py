"""``persec data``: inspect datasets (``stats``), convert gt.txt folders to LMDB
(``convert``) and split them into fixed parts (``split``, :mod:`persec.commands.data_split`)."""

from __future__ import annotations

import argparse

from persec.charset import STANDARD_CHARSET
from persec.commands.data_split import add_split_parser
from persec.data.charset_builder import count_label_chars, write_charset_file
from persec.data.folder import folder_to_lmdb
from persec.data.stats import compute_stats, format_stats
from persec.errors import PersecError

HELP = "dataset statistics and the gt.txt folder to LMDB converter"


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
        default=STANDARD_CHARSET,
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

    charset = sub.add_parser(
        "charset",
        help="a charset file of the characters the labels of some datasets use",
        description="Count the characters of the labels (as written, Unicode NFC) of every "
        "PATH and write them to OUT, one per line in code-point order (a space as the line "
        "<space>): the --charset / model.charset of a model that must read them all, "
        "e.g. GW's '£'. Only training parts belong here: a character seen only in test "
        "labels is an error the model should make.",
    )
    charset.add_argument(
        "paths", nargs="+", metavar="PATH", help="labelled datasets (DIR:PART too)"
    )
    charset.add_argument("--out", required=True, metavar="FILE", help="the charset file to write")
    charset.add_argument(
        "--min-count",
        type=int,
        default=1,
        metavar="N",
        help="leave out characters seen fewer than N times (default 1: keep all)",
    )
    charset.set_defaults(func=run_charset)

    add_split_parser(sub)


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


def run_charset(args: argparse.Namespace) -> int:
    """``persec data charset PATH... --out FILE``: the characters the labels use."""
    if args.min_count < 1:
        raise PersecError(f"--min-count must be >= 1, got {args.min_count}")
    counted = count_label_chars(args.paths)
    chars = counted.chars(args.min_count)
    left = sorted(set(counted.counts) - set(chars))
    path = write_charset_file(chars, args.out)
    shown = "".join(chars).replace(" ", "\u2423")
    print(f"{len(chars)} characters from {counted.labels} labels: {shown}")
    if left:
        print(f"left out (fewer than {args.min_count}): {''.join(left)}")
    print(f"wrote {path}")
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
