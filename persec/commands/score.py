"""``persec score``: compare a prediction file with a ground-truth file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from persec.commands.options import add_protocol_arguments, protocol_max_length
from persec.errors import PersecError
from persec.evaluation.score import file_score_row, score_files
from persec.metrics import HTR, eval_charset, format_table

HELP = "word accuracy, 1 - NED and CER of predictions against ground truth"

EPILOG = """\
Both files hold one 'image_path<TAB>text' line per image; predictions may add a third
column, the confidence in [0, 1] ('persec read' writes that format). Predictions are
matched to ground truth by path, or, when the paths differ only by a directory prefix
(e.g. absolute paths in the prediction file), by that unique suffix. A missing
prediction counts as an empty (wrong) one; when the image beside the ground-truth file
is missing or cannot be decoded ('persec read' skips those), it is reported as an
unreadable input, by reason, not as a missing prediction. Prediction and ground truth are both mapped
through the eval charset (default 36_lowercase: case-insensitive, alphanumerics only);
as in 'persec eval', ground-truth lines whose label is then empty or longer than
--max-length are skipped and reported, not scored.
"""


def add_parser(subparsers) -> None:
    """Register ``score`` on the ``persec`` subcommand parser."""
    parser = subparsers.add_parser(
        "score",
        help=HELP,
        description=HELP[0].upper() + HELP[1:] + ".",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--pred", required=True, metavar="PRED.txt", help="prediction file")
    parser.add_argument("--gt", required=True, metavar="GT.txt", help="ground-truth file")
    add_protocol_arguments(parser)
    parser.add_argument("--name", help="dataset name in the table (default: from the GT path)")
    parser.add_argument("--out", metavar="FILE.json", help="also write the scores as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Score ``--pred`` against ``--gt``, print a table and optionally write JSON."""
    charset = eval_charset(args.cased, args.punctuation, args.charset)
    htr = args.protocol == HTR
    result = score_files(
        args.gt, args.pred, charset, protocol_max_length(args), args.name, args.protocol
    )
    if htr:
        print("protocol: htr (NFC, case and punctuation kept, whitespace runs as one space)")
    else:
        print(f"eval charset: {charset.name} ({len(charset)} characters)")
    print(format_table([result.score], wer=htr))
    if result.report.skipped:
        print(f"skipped: {result.report.summary()}")
    for reason, paths in sorted(result.unreadable.items()):
        print(f"unreadable input ({reason}): {len(paths)} (scored as empty), first: {paths[0]}")
    print(f"missing predictions: {len(result.missing)} of {result.score.samples} (scored as empty)")
    if result.missing:
        print(f"  first missing: {result.missing[0]}")
    if result.by_prefix:
        print(f"matched by directory prefix: {result.by_prefix}")
    if result.ignored:
        print(
            f"warning: {len(result.ignored)} prediction(s) for paths not in {args.gt} ignored "
            f"(first: {result.ignored[0]})",
            file=sys.stderr,
        )
    if args.out:
        row = {
            **file_score_row(result, charset, args.protocol),
            "gt_file": args.gt,
            "pred_file": args.pred,
        }
        out = Path(args.out)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(row, indent=2) + "\n", encoding="utf-8")
        except OSError as e:
            raise PersecError(f"cannot write {out}: {e.strerror}") from e
        print(f"wrote {out}")
    return 0
