"""CLI subcommands; each module has ``add_parser(subparsers)``."""

from __future__ import annotations

import argparse


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
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")


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
