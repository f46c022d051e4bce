"""``persec export``: write a saved recognizer as ONNX (+ a JSON sidecar), optionally
checking it against PyTorch."""

from __future__ import annotations

import argparse

from persec.commands.options import add_command, add_model_argument, positive_int
from persec.errors import PersecError
from persec.hub import default_model_dir
from persec.inference.export import DEFAULT_OPSET, FORMATS, check_format, export_model, sidecar_path
from persec.inference.model import load_model
from persec.inference.onnx_runtime import OnnxRecognizer, check_parity, parity_images

HELP = "export a saved model to ONNX (image -> logits), with a JSON sidecar for decoding"

EPILOG = f"""\
Writes FILE (input 'images' (B, C, H, W) float32 in [-1, 1], B dynamic, H x W fixed by
the model; output 'logits' (B, L, V)) and FILE.json (charset, image size, decoder kind,
tensor names): enough to decode without persec's PyTorch model, or with
persec.inference.onnx_runtime.OnnxRecognizer. CTC models export their per-frame logits;
attention models run their greedy loop for all max_length + 1 steps inside the graph.

--check runs PyTorch and onnxruntime on the same images (the files given, or 16 words
rendered in held-out fonts when none are) and prints the largest logit difference and
how many decoded texts agree; it fails (exit status 2) when a text differs or a logit
differs by more than --atol. Without --model, the shipped model at {default_model_dir()}
is exported.
"""


def add_parser(subparsers) -> None:
    """Register ``export`` on the ``persec`` subcommand parser."""
    parser = add_command(subparsers, "export", HELP, EPILOG)
    add_model_argument(parser)
    parser.add_argument(
        "--format", default="onnx", help=f"export format: {', '.join(FORMATS)} (default: onnx)"
    )
    parser.add_argument("--out", required=True, metavar="FILE", help="the file to write")
    parser.add_argument(
        "--opset",
        type=positive_int,
        default=DEFAULT_OPSET,
        metavar="N",
        help=f"ONNX opset (default: {DEFAULT_OPSET})",
    )
    parser.add_argument(
        "--check",
        nargs="*",
        metavar="IMAGE_OR_FOLDER",
        help="compare with PyTorch on these images (none: rendered words)",
    )
    parser.add_argument(
        "--atol",
        type=float,
        default=1e-3,
        help="largest logit difference --check accepts (default: 1e-3)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export, then optionally check parity; print what was written and the check."""
    check_format(args.format)  # before the (slow) model load
    model = load_model(args.model, "cpu")
    out = export_model(model, args.out, args.format, args.opset)
    size_mb = out.stat().st_size / 1e6
    print(f"wrote {out} ({size_mb:.1f} MB) and {sidecar_path(out)}")
    if args.check is None:
        return 0
    images, source = parity_images(model, args.check)
    report = check_parity(model, OnnxRecognizer(out), images)
    print(f"check on {len(images)} {source}: {report.summary()}")
    if report.mismatches:
        i, ours, theirs = report.mismatches[0]
        raise PersecError(
            f"parity check failed: {len(report.mismatches)} text(s) differ "
            f"(image {i}: PyTorch {ours!r}, ONNX {theirs!r})"
        )
    if not report.max_abs_diff <= args.atol:  # also catches NaN
        raise PersecError(
            f"parity check failed: max |Δlogit| {report.max_abs_diff:.2e} > --atol {args.atol:g}"
        )
    return 0
