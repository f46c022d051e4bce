"""``persec average``: the uniform weight average of saved models of one config."""

from __future__ import annotations

import argparse
from pathlib import Path

from persec.errors import PersecError
from persec.models.recognizer import WEIGHTS, Recognizer

HELP = "average the weights of saved models of one config (a model soup)"

EPILOG = """\
Loads each MODEL_DIR (model.safetensors + config.json), checks that they share one
config (architecture, charset, image size), and writes the mean of their weights as a
new model directory. Useful for fine-tuning runs that started from the same model (the
shipped recipe averages three), or for the last checkpoints of one run: the average
often reads better than each model and smooths out validation noise. Models trained
from different starting points usually do not average into a working model; evaluate
the result ('persec eval --model OUT') before using it.

  persec average runs/a/model runs/b/model runs/c/model --out runs/soup/model
"""


def add_parser(subparsers) -> None:
    """Register ``average`` on the ``persec`` subcommand parser."""
    parser = subparsers.add_parser(
        "average",
        help=HELP,
        description=HELP[0].upper() + HELP[1:] + ".",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("models", nargs="+", metavar="MODEL_DIR", help="saved models (2 or more)")
    parser.add_argument("--out", required=True, metavar="DIR", help="the model directory to write")
    parser.add_argument("--force", action="store_true", help="overwrite a model already in --out")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Average ``args.models`` and save the result in ``args.out``."""
    out = Path(args.out)
    if any(out.resolve() == Path(m).resolve() for m in args.models):
        raise PersecError(f"--out {out} is one of the models being averaged")
    if (out / WEIGHTS).exists() and not args.force:
        raise PersecError(f"{out} already holds a model (--force overwrites it)")
    model = Recognizer.average(args.models)
    model.save(out)
    print(f"wrote the average of {len(args.models)} models to {out}")
    return 0
