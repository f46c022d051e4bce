"""``persec score``: compare a prediction file with a ground-truth file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from persec.commands.eval import add_protocol_arguments
from persec.data.dataset import SkipReport, filter_label
from persec.data.gtfile import match_predictions, read_gt_file, read_pred_file
from persec.errors import PersecError
from persec.metrics import ScoreAccumulator, eval_charset, format_table, scores_to_rows

HELP = "word accuracy, 1 - NED and CER of predictions against ground truth"

EPILOG = """\
Both files hold one 'image_path<TAB>text' line per image; predictions may add a third
column, the confidence in [0, 1] ('persec read' writes that format). Predictions are
matched to ground truth by path, or, when the paths differ only by a directory prefix
(e.g. absolute paths in the prediction file), by that unique suffix. A missing
prediction counts as an empty (wrong) one. Prediction and ground truth are both mapped
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


def _dataset_name(gt: Path) -> str:
    # `IIIT5K/gt.txt` is named after its folder; `iiit5k_test.txt` after itself.
    if gt.stem.lower() in ("gt", "labels", "label") and gt.resolve().parent.name:
        return gt.resolve().parent.name
    return gt.stem


def run(args: argparse.Namespace) -> int:
    """Score ``--pred`` against ``--gt``, print a table and optionally write JSON."""
    charset = eval_charset(args.cased, args.punctuation, args.charset)
    gt_path, pred_path = Path(args.gt), Path(args.pred)
    gt = read_gt_file(gt_path, unique=True)
    preds = read_pred_file(pred_path, unique=True)
    if not gt:
        raise PersecError(f"{gt_path} holds no ground-truth lines")
    matched = match_predictions(gt, preds)

    name = args.name or _dataset_name(gt_path)
    # The eval protocol's label filter (persec.evaluate reads datasets the same way).
    report, keep = SkipReport(name), []
    for i, (path, label) in enumerate(zip(matched.paths, matched.labels, strict=True)):
        _, reason = filter_label(label, charset, args.max_length or None, remove_unsupported=True)
        if reason is None:
            keep.append(i)
        else:
            report.skip(reason, path)
    report.keep(len(keep))
    acc = ScoreAccumulator(name, charset)
    acc.update(
        [matched.preds[i] for i in keep],
        [matched.labels[i] for i in keep],
        [matched.confidences[i] for i in keep],
    )
    score = acc.compute()
    unmatched = set(matched.missing)
    missing = [matched.paths[i] for i in keep if matched.paths[i] in unmatched]

    print(f"eval charset: {charset.name} ({len(charset)} characters)")
    print(format_table([score]))
    if report.skipped:
        print(f"skipped: {report.summary()}")
    n_missing = len(missing)
    print(f"missing predictions: {n_missing} of {score.samples} (scored as empty)")
    if n_missing:
        print(f"  first missing: {missing[0]}")
    if matched.by_prefix:
        print(f"matched by directory prefix: {matched.by_prefix}")
    if matched.ignored:
        print(
            f"warning: {len(matched.ignored)} prediction(s) for paths not in {gt_path} ignored "
            f"(first: {matched.ignored[0]})",
            file=sys.stderr,
        )

    if args.out:
        result = {
            **scores_to_rows([score])[0],
            "missing": n_missing,
            "skipped": report.skipped,
            "skipped_by_reason": dict(sorted(report.counts.items())),
            "ignored": len(matched.ignored),
            "matched_by_prefix": matched.by_prefix,
            "charset": charset.name,
            "gt_file": str(gt_path),
            "pred_file": str(pred_path),
        }
        out = Path(args.out)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        except OSError as e:
            raise PersecError(f"cannot write {out}: {e.strerror}") from e
        print(f"wrote {out}")
    return 0
