"""CLI subcommands; each module has ``add_parser(subparsers)``."""

from __future__ import annotations

import argparse


def add_config_arguments(
    parser: argparse.ArgumentParser, configs: str, resume: bool = False
) -> None:
    """The arguments every config-driven command shares: ``--config FILE`` (YAML files
    under ``configs``), optionally ``--resume``, and ``key=value`` overrides."""
    parser.add_argument("--config", metavar="FILE", help=f"YAML config ({configs})")
    if resume:
        parser.add_argument(
            "--resume", action="store_true", help="continue from OUTPUT_DIR/checkpoints/last.ckpt"
        )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
