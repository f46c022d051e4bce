"""CLI subcommands; each module has ``add_parser(subparsers)``."""

from __future__ import annotations

import argparse

from persec.config import describe_config, load_config
from persec.metrics import HTR, PROTOCOLS, STANDARD


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_config_arguments(
    parser: argparse.ArgumentParser, configs: str, training: bool = False
) -> None:
    """The arguments every config-driven command shares: ``--config FILE`` (YAML files
    under ``configs``) and ``key=value`` overrides; training commands also get
    ``--resume``, ``--devices`` and ``--num-nodes`` (see :func:`training_overrides`)."""
    parser.add_argument("--config", metavar="FILE", help=f"YAML config ({configs})")
    if training:
        parser.add_argument(
            "--resume", action="store_true", help="continue from OUTPUT_DIR/checkpoints/last.ckpt"
        )
        parser.add_argument(
            "--devices",
            type=_positive,
            metavar="N",
            help="GPUs (or CPU processes) per node; N > 1 trains with DDP (trainer.devices)",
        )
        parser.add_argument(
            "--num-nodes", type=_positive, metavar="M", help="nodes (trainer.num_nodes)"
        )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the merged configuration (YAML, each field with its help) and exit",
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")


def command_config(schema: type, args: argparse.Namespace, overrides: list[str] | None = None):
    """The command's config from ``--config`` and ``overrides`` (default: the
    positional ones); None after printing it when ``--print-config`` was given."""
    config = load_config(schema, args.config, args.overrides if overrides is None else overrides)
    if args.print_config:
        print(describe_config(config))
        return None
    return config


def training_overrides(args: argparse.Namespace) -> list[str]:
    """``key=value`` overrides with the training flags folded in (flags win)."""
    overrides = list(args.overrides)
    if args.resume:
        overrides.append("resume=true")
    if args.devices:
        overrides.append(f"trainer.devices={args.devices}")
    if args.num_nodes:
        overrides.append(f"trainer.num_nodes={args.num_nodes}")
    return overrides


def positive_int(text: str) -> int:
    """The argparse type of an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """The argparse type of an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def add_protocol_arguments(parser: argparse.ArgumentParser) -> None:
    """The evaluation-protocol options shared by ``eval`` and ``score``."""
    parser.add_argument(
        "--charset",
        metavar="SPEC",
        help="eval charset: 36_lowercase, 62_mixed, 94_full or a file with one character "
        "per line; overrides --cased/--punctuation",
    )
    parser.add_argument("--cased", action="store_true", help="compare case (62_mixed)")
    parser.add_argument(
        "--punctuation", action="store_true", help="keep ASCII punctuation (94_full when --cased)"
    )
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default=STANDARD,
        help="standard: the 36-character (or --charset) comparison of scene text; htr: "
        "handwriting, NFC with case and punctuation kept, whitespace runs as one space, "
        "CER and WER",
    )
    parser.add_argument(
        "--max-length",
        type=non_negative_int,
        default=None,
        metavar="N",
        help="skip labels longer than N after mapping (default: 25 under the standard "
        "protocol, no limit under htr; 0: no limit)",
    )


def protocol_max_length(args: argparse.Namespace) -> int | None:
    """``--max-length`` as given, else the protocol's default (25 standard, none htr)."""
    if args.max_length is None:
        return None if args.protocol == HTR else 25
    return args.max_length or None


def add_greedy_argument(parser: argparse.ArgumentParser) -> None:
    """``--greedy``, shared by ``eval`` and ``read`` (see :meth:`Recognizer.use_greedy_decoding`)."""
    parser.add_argument(
        "--greedy",
        action="store_true",
        help="best-path CTC decoding, without the model's beam search and language model",
    )


def add_command(subparsers, name: str, help: str, epilog: str | None = None):
    """A subcommand parser whose description is its one-line ``help`` as a sentence and
    whose ``epilog`` keeps its line breaks."""
    return subparsers.add_parser(
        name,
        help=help,
        description=help[0].upper() + help[1:] + ".",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_model_argument(
    parser: argparse.ArgumentParser,
    required: bool = False,
    help: str = "saved model (default: the shipped one, or $PERSEC_MODEL)",
    metavar: str = "DIR",
) -> None:
    """``--model DIR``: a saved recognizer directory (or what ``help`` says)."""
    parser.add_argument("--model", required=required, metavar=metavar, help=help)


def add_runtime_arguments(parser: argparse.ArgumentParser, workers: str | None = None) -> None:
    """``--batch-size N`` and ``--device``; ``--workers N`` too when ``workers`` (its
    help) is given."""
    parser.add_argument("--batch-size", type=positive_int, default=64, metavar="N")
    if workers:
        parser.add_argument(
            "--workers", type=non_negative_int, default=0, metavar="N", help=workers
        )
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
