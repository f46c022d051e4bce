"""CLI subcommands: each module has ``add_parser(subparsers)`` and ``run(args)``; shared
flags live in :mod:`persec.commands.options`."""
