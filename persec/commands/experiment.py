"""``persec experiment``: the label-efficiency grid in one command."""

from __future__ import annotations

from persec.commands.options import add_config_arguments, command_config
from persec.errors import PersecError

HELP = "run a label-efficiency experiment grid (pretrain, fine-tune, evaluate, report)"


def add_parser(subparsers) -> None:
    """Register ``experiment`` on the ``persec`` subcommand parser."""
    parser = subparsers.add_parser(
        "experiment",
        help=HELP,
        description="Pretrain every method of the grid with the same budget, fine-tune "
        "from each (and from random init) for every decoder, protocol (frozen encoder / "
        "whole model), label fraction and seed, probe every encoder (optional), evaluate "
        "every model on every test set, and "
        "write OUTPUT_DIR/results.csv, results.md and plots. Settings are the fields of "
        "persec.experiment.ExperimentConfig, from --config and key=value overrides. "
        "Finished cells are cached by config hash: re-running skips them, and a killed "
        "run resumes.",
    )
    add_config_arguments(parser, "configs/experiments/*.yaml")
    parser.add_argument(
        "--dry-run", action="store_true", help="list the cells and whether they are done"
    )
    parser.add_argument(
        "--only",
        metavar="METHODS",
        default="",
        help="comma-separated methods: run only their cells (and the pretrainings they "
        "need) this time, e.g. --only scratch,persec; the reports still hold every "
        "finished cell",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="run no cell: write the reports from the finished cells (local and archived)",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    """Run the experiment grid (``--dry-run``: only list its cells); print results and summary."""
    from persec.experiment import ExperimentConfig, format_summary, run_experiment

    config = command_config(ExperimentConfig, args)
    if config is None:
        return 0
    only = [m for m in args.only.split(",") if m]
    if args.report and (args.dry_run or only):
        raise PersecError("--report runs no cell; it takes neither --dry-run nor --only")
    result = run_experiment(config, dry_run=args.dry_run, only=only, report_only=args.report)
    if not args.dry_run:
        print((result.report_dir / "results.md").read_text())
        print(format_summary(result))
    return 0
