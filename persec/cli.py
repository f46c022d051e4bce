"""The ``persec`` console script: one command, many subcommands.

Each subcommand lives in ``persec.commands.<name>`` and exposes
``add_parser(subparsers)`` (which sets ``func`` on its parser) — a thin layer over
library calls. User errors (:class:`~persec.errors.PersecError`) are printed as one
line and exit with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from persec._version import __version__
from persec.errors import PersecError, RunStopped

# Order here is the order in `persec --help`.
COMMANDS = [
    "render",
    "data",
    "shard",
    "pretrain",
    "finetune",
    "eval",
    "read",
    "serve",
    "export",
    "average",
    "tune-decoding",
    "score",
    "inspect-codes",
    "probe",
    "experiment",
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``persec`` parser, with every subcommand of ``COMMANDS`` registered."""
    parser = _Parser(
        prog="persec",
        description="persec: self-supervised pretraining (PerSec) for scene-text recognition. "
        "Run `persec COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"persec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f"persec.commands.{name.replace('-', '_')}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the subcommand and return its exit status.

    Stray ``key=value`` overrides after other options are folded back into the
    command's overrides; with no subcommand, print the help and return 2. A
    :class:`~persec.errors.PersecError` prints one line and returns 2, a run stopped
    for a SLURM requeue (:class:`~persec.errors.RunStopped`) returns 3, a broken pipe
    returns 0 and Ctrl-C returns 130.
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse takes a run of positionals once: `a=1 --flag X b=2` leaves `b=2` over.
    # Overrides may come anywhere on the line, so fold such leftovers back in.
    if extra and isinstance(getattr(args, "overrides", None), list):
        if all("=" in e and not e.startswith("-") for e in extra):
            args.overrides += extra
            extra = []
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except PersecError as e:
        print(f"persec {args.command}: error: {e}", file=sys.stderr)
        return 2
    except RunStopped as e:
        print(f"persec {args.command}: {e}", file=sys.stderr)
        return 3
    except BrokenPipeError:  # e.g. `persec data stats X | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("persec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
