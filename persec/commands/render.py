"""``persec render``: write N rendered word (or line) images and their labels to an LMDB."""

from __future__ import annotations

import os

from persec.commands.options import add_config_arguments, command_config
from persec.data.render.config import PRESETS
from persec.data.render.synth import WordRenderer
from persec.data.render.writer import render_lmdb
from persec.errors import PersecError

HELP = "render synthetic word images (with labels) into an LMDB"

# The renderer of a pool worker, set once by the pool initializer.
_renderer: WordRenderer | None = None
_format = "png"


def add_parser(subparsers) -> None:
    """Register ``render`` on the ``persec`` subcommand parser."""
    parser = subparsers.add_parser(
        "render",
        help=HELP,
        description="Render N labelled word images with the offline renderer and write them "
        "to a new LMDB at DIR (clovaai/parseq format). Image i is a pure function of "
        "(seed, split, i), whatever the number of workers. Settings: the fields of "
        "persec.data.render.synth.SynthConfig, from --config and key=value overrides "
        "(e.g. width=null words.p_number=0.3).",
    )
    parser.add_argument("--out", metavar="DIR", help="new LMDB directory (required)")
    parser.add_argument("--n", type=int, metavar="N", help="number of images (required)")
    parser.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    parser.add_argument(
        "--split",
        choices=["train", "test"],
        default="train",
        help="font split: test uses held-out font families (default train)",
    )
    parser.add_argument(
        "--style",
        choices=sorted(PRESETS),
        default="print",
        help="preset: print (default), hard (low contrast, blur, perspective, curves) or "
        "handwriting (script fonts, slant, elastic strokes, ink on paper or binarized; "
        "words and lines at their own width)",
    )
    parser.add_argument("--hard", action="store_true", help="same as --style hard")
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        metavar="W",
        help="render processes; 0 renders in this process (default: CPU count)",
    )
    parser.add_argument(
        "--format", choices=["png", "jpeg"], default="png", help="image encoding (default png)"
    )
    add_config_arguments(parser, "SynthConfig fields")
    parser.set_defaults(func=run)


def run(args) -> int:
    """Render ``--n`` images into ``--out`` and report images/s."""
    if args.hard and args.style not in ("print", "hard"):
        raise PersecError(f"--hard and --style {args.style} contradict each other: give one")
    schema = PRESETS["hard" if args.hard else args.style]
    config = command_config(schema, args)
    if config is None:
        return 0
    if args.out is None or args.n is None:
        raise PersecError("render needs --out DIR and --n N")
    n, workers, seconds = render_lmdb(
        args.out, args.n, config, args.split, args.seed, args.workers, args.format
    )
    print(
        f"wrote {n} images to {args.out} in {seconds:.1f} s "
        f"({n / seconds:.0f} images/s, {workers} process(es))"
    )
    return 0
