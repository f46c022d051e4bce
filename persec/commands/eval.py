"""``persec eval``: score a saved recognizer on benchmark datasets."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from persec.commands.options import (
    add_command,
    add_greedy_argument,
    add_model_argument,
    add_protocol_arguments,
    add_runtime_arguments,
    protocol_max_length,
)
from persec.data.dataset import SkipReport
from persec.decoding.settings import describe_decoding
from persec.errors import PersecError
from persec.evaluation.evaluate import evaluate, write_results
from persec.hub import default_model_dir
from persec.inference.model import is_onnx_file, load_reader
from persec.inference.read import decoding_of
from persec.metrics import HTR, eval_charset, format_table
from persec.orientation import ORIENTATIONS, TALL_RATIO

HELP = "score a saved model on datasets: word accuracy, 1 - NED, CER per dataset"

EPILOG = f"""\
DATA: a dataset folder (gt.txt or data.mdb directly inside) is one dataset; any other
folder stands for each of its sub-folders that is a dataset (an LMDB tree counts as one),
named by folder: 'persec eval --data data/test' gives one row per benchmark (IIIT5k, SVT,
IC13_857, ...) and a sample-weighted Combined row.

Protocol: labels and predictions are both mapped through the eval charset (default
36_lowercase: case folded, non-alphanumerics dropped); samples whose label is then empty
or longer than --max-length are skipped and reported, as are undecodable images. Every
crop is read as given (--orient none); --orient tall also reads each crop at least
{TALL_RATIO} times as tall as wide turned 90 degrees both ways and scores the reading
'persec read' would print (its default), which is outside the standard protocol.

--model FILE.onnx scores an export by 'persec export' with onnxruntime on the CPU, with
the preprocessing and decoding its sidecar (FILE.onnx.json) records.

Results are printed as a Markdown table and written to OUT/results.csv and
OUT/results.json; OUT defaults to MODEL/eval/, or FILE-eval/ beside an ONNX file (a
warning, not an error, when that is not writable). Without --model, the shipped model
at {default_model_dir()} is used and OUT defaults to ./eval-{default_model_dir().name}/
(the package folder is left alone).
"""


def add_parser(subparsers) -> None:
    """Register ``eval`` on the ``persec`` subcommand parser."""
    parser = add_command(subparsers, "eval", HELP, EPILOG)
    add_model_argument(
        parser,
        help="saved model directory, or an exported .onnx file (scored with onnxruntime; "
        "default: the shipped model, or $PERSEC_MODEL)",
        metavar="DIR_OR_ONNX",
    )
    parser.add_argument(
        "--data", nargs="+", required=True, metavar="PATH", help="datasets or folders of datasets"
    )
    add_protocol_arguments(parser)
    add_runtime_arguments(parser, workers="data loading processes")
    parser.add_argument(
        "--orient",
        choices=ORIENTATIONS,
        default="none",
        help="none: read every crop as given (default, the standard protocol); tall: also "
        "read tall crops turned 90 degrees both ways, as persec read does",
    )
    add_greedy_argument(parser)
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="where results.csv/results.json go (default: MODEL/eval/; see below)",
    )
    parser.set_defaults(func=run)


def default_out(model: str | None) -> Path:
    """Where results go without --out: MODEL/eval/ for a model folder, FILE-eval/ beside
    an ONNX file, ./eval-NAME/ for the shipped model."""
    if model is None:
        return Path(f"eval-{default_model_dir().name}")
    path = Path(model)
    return path.with_name(path.stem + "-eval") if is_onnx_file(path) else path / "eval"


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the table and write the results files."""
    charset = eval_charset(args.cased, args.punctuation, args.charset)
    model_dir = Path(args.model) if args.model else default_model_dir()
    model = load_reader(args.model, args.device, args.greedy)
    reports: list[SkipReport] = []
    scores = evaluate(
        model,
        args.data,
        charset=charset,
        batch_size=args.batch_size,
        workers=args.workers,
        max_label_length=protocol_max_length(args),
        progress=None,  # a bar on a terminal only
        reports=reports,
        orient=args.orient,
        protocol=args.protocol,
    )

    print(f"model: {model_dir}")
    if args.protocol == HTR:
        print("protocol: htr (NFC, case and punctuation kept, whitespace runs as one space)")
    else:
        print(f"eval charset: {charset.name} ({len(charset)} characters)")
    print(f"decoding: {describe_decoding(decoding_of(model))}")
    if args.orient != "none":
        print(f"orient: {args.orient} (tall crops also read turned; not the standard protocol)")
    print(format_table(scores, wer=args.protocol == HTR))
    for report in reports:
        if report.skipped:
            print(f"skipped: {report.summary()}")

    if args.out:
        out = Path(args.out)
    else:
        out = default_out(args.model)
    meta = {
        "model": str(model_dir),
        "charset": charset.name,
        "max_label_length": protocol_max_length(args),
        "protocol": args.protocol,
        "orient": args.orient,
        "data": list(args.data),
    }
    try:
        csv_path, json_path = write_results(scores, out, reports, meta)
    except PersecError as e:
        if args.out:
            raise
        print(f"warning: {e}; pass --out DIR to save them", file=sys.stderr)
        return 0
    print(f"wrote {csv_path} and {json_path}")
    return 0
