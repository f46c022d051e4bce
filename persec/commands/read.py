"""``persec read``: recognise image files and print ``path<TAB>text<TAB>confidence``."""

from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from persec.commands.options import (
    add_command,
    add_greedy_argument,
    add_model_argument,
    add_runtime_arguments,
)
from persec.errors import PersecError
from persec.hub import default_model_dir
from persec.inference.model import load_reader
from persec.inference.read import Reading, list_images, read_images
from persec.orientation import KEEP_UPRIGHT, ORIENTATIONS, TALL_RATIO

HELP = "recognise images: one 'path<TAB>text<TAB>confidence' line per image"

EPILOG = f"""\
Folders are searched recursively for image files (png, jpg, jpeg, bmp, webp, tif, tiff,
gif), in sorted order; paths are printed as given (joined onto the folder, not resolved).
The output is the prediction format of 'persec score --pred':

  persec read data/IIIT5K > pred.txt && persec score --pred pred.txt --gt data/IIIT5K/gt.txt

An image that cannot be read or decoded gets a warning on stderr and no line. Exit
status: 0 when at least one image was read, 2 when none could be (or on bad arguments).
Without --model, the shipped model at {default_model_dir()} is used. --model also
takes a file that 'persec export' wrote (model.onnx, its model.onnx.json beside it):
onnxruntime then runs the network on the CPU, with the same preprocessing and decoding,
about twice as fast one crop at a time as PyTorch on a 2-core CPU
(docs/shipped-model.md).

Vertical text: with --orient tall (the default), a crop at least {TALL_RATIO} times as tall
as wide is also read turned 90 degrees each way; when its upright reading is empty or
less confident than {KEEP_UPRIGHT}, the most confident turned reading that has more
characters replaces it. 'persec eval' follows the benchmarks' protocol and reads crops
as they are (like --orient none).
"""


def add_parser(subparsers) -> None:
    """Register ``read`` on the ``persec`` subcommand parser."""
    parser = add_command(subparsers, "read", HELP, EPILOG)
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER")
    add_model_argument(
        parser,
        help="saved model directory, or an exported .onnx file (read by onnxruntime; "
        "default: the shipped model, or $PERSEC_MODEL)",
        metavar="DIR_OR_ONNX",
    )
    add_runtime_arguments(parser, workers="image decoding processes")
    add_greedy_argument(parser)
    parser.add_argument(
        "--orient",
        choices=ORIENTATIONS,
        default="tall",
        help="'tall': read doubtful tall crops turned 90 degrees too (default); 'none': as given",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print one prediction line per readable image, streaming batch by batch."""
    paths = list_images(args.inputs)  # fails on a missing input before any work
    model = load_reader(args.model, args.device, args.greedy)
    # A bar only when the lines go elsewhere (a file, a pipe) and stderr is a terminal.
    bar = tqdm(
        total=len(paths),
        unit="img",
        desc="reading",
        file=sys.stderr,
        disable=sys.stdout.isatty() or not sys.stderr.isatty(),
    )
    failed = 0
    try:
        for n, reading in enumerate(
            read_images(model, paths, args.batch_size, args.workers, args.orient), 1
        ):
            bar.update()
            if reading.error is None and any(c in reading.path for c in "\t\r\n"):
                reading = Reading(reading.path, error="path holds a TAB or line break")
            if reading.error is not None:
                failed += 1
                tqdm.write(f"warning: skipped {reading.path!r}: {reading.error}", file=sys.stderr)
                continue
            print(f"{reading.path}\t{reading.text}\t{reading.confidence:.4f}")
            if n % args.batch_size == 0:
                sys.stdout.flush()
    finally:
        bar.close()
    if failed == len(paths):
        raise PersecError(f"none of the {len(paths)} image(s) could be read")
    if failed:
        print(f"warning: {failed} of {len(paths)} image(s) could not be read", file=sys.stderr)
    return 0
