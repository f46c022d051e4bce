"""``persec data``: inspect datasets (``stats``), convert gt.txt folders to LMDB
(``convert``) and split them into fixed parts (``split``, :mod:`persec.commands.data_split`)."""

from __future__ import annotations

import argparse

from persec.charset import STANDARD_CHARSET
from persec.commands.data_split import add_split_parser
from persec.data.folder import folder_to_lmdb
from persec.data.stats import compute_stats, format_stats

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
