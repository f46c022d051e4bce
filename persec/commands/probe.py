"""``persec probe``: a frozen linear probe, effective rank and leak test of a
pretrained encoder (:mod:`persec.training.probe`)."""

from __future__ import annotations

import json
from pathlib import Path

HELP = "frozen linear probe, effective rank and leak test of a pretrained encoder"


def add_parser(subparsers) -> None:
    """Register ``probe`` on the ``persec`` subcommand parser."""
    parser = subparsers.add_parser(
        "probe",
        help=HELP,
        description="Encode rendered labelled words once with a pretraining output's "
        "frozen encoder, train a linear CTC head on the cached features and report its "
        "word accuracy on renders in held-out font families; also the effective rank of "
        "the encoder output and, for PerSec, the leak test: how well a masked position's "
        "code is predicted from its two neighbours alone against the perceiver's context. "
        "The same numbers are logged during `persec pretrain` when probe.train_images > 0.",
    )
    parser.add_argument("model", metavar="DIR", help="output_dir of `persec pretrain`")
    parser.add_argument("--train-images", type=int, default=2000, metavar="N")
    parser.add_argument("--test-images", type=int, default=500, metavar="N")
    parser.add_argument("--steps", type=int, default=2000, help="linear head steps")
    parser.add_argument("--no-leak", action="store_true", help="skip the leak test")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers here")
    parser.set_defaults(func=run)


def run(args) -> int:
    """Probe a pretrained encoder, print each number and optionally write them as JSON."""
    from persec.errors import PersecError
    from persec.precision import cpu_bf16_support
    from persec.training.pretrain import load_pretrained
    from persec.training.probe import ProbeConfig, make_probe_set, run_probe

    if args.train_images < 1 or args.test_images < 1 or args.steps < 1:
        raise PersecError("--train-images, --test-images and --steps must be >= 1")
    encoder, objective, config = load_pretrained(args.model)
    probe = ProbeConfig(
        train_images=args.train_images,
        test_images=args.test_images,
        steps=args.steps,
        leak=not args.no_leak,
    )
    data = make_probe_set(probe, config.data.synth, config.image)
    result = run_probe(encoder, objective, data, probe, bf16=cpu_bf16_support().native)
    logs = result.logs()
    for key, value in logs.items():
        print(f"{key}\t{value:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(logs, indent=1) + "\n", encoding="utf-8")
    return 0
