"""``persec finetune``: supervised training of a recognizer."""

from __future__ import annotations

from persec.commands.options import add_config_arguments, command_config, training_overrides

HELP = "train a recognizer (from scratch or a pretrained encoder)"


def add_parser(subparsers) -> None:
    """Register ``finetune`` on the ``persec`` subcommand parser."""
    parser = subparsers.add_parser(
        "finetune",
        help=HELP,
        description="Train a recognizer with Lightning. Settings are the fields of "
        "persec.training.finetune.FinetuneConfig, from --config and key=value overrides "
        "(e.g. trainer.max_steps=2000 output_dir=runs/x data.synth_train=100000). "
        "The best model (validation word accuracy) is saved to OUTPUT_DIR/model/.",
    )
    add_config_arguments(parser, "configs/finetune/*.yaml", training=True)
    parser.add_argument(
        "--init-encoder", metavar="PATH", help="start from a pretrained encoder.safetensors"
    )
    parser.add_argument(
        "--init-model",
        metavar="DIR",
        help="go on training a saved model (e.g. persec/shipped/persec-small) on your data; "
        "its architecture replaces the config's model",
    )
    parser.add_argument(
        "--freeze-encoder",
        action="store_true",
        help="train the decoder only (decoder-evaluation protocol)",
    )
    parser.add_argument(
        "--label-fraction",
        type=float,
        metavar="F",
        help="use a fixed random fraction F of the training labels (semi-supervised protocol)",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    """Fine-tune a recognizer from the config and flags; print the steps, time and best accuracy."""
    from persec.training.finetune import FinetuneConfig, finetune

    overrides = training_overrides(args)
    if args.init_encoder:
        overrides.append(f"init_encoder={args.init_encoder}")
    if args.init_model:
        overrides.append(f"init_model={args.init_model}")
    if args.freeze_encoder:
        overrides.append("freeze_encoder=true")
    if args.label_fraction is not None:
        overrides.append(f"data.label_fraction={args.label_fraction}")
    config = command_config(FinetuneConfig, args, overrides)
    if config is None:
        return 0
    result = finetune(config)
    scores = [
        f"{name} {value:.2f}%"
        for name, value in (
            ("word accuracy", result.best_val_word_acc),
            ("CER", result.best_val_cer),
        )
        if value is not None
    ]
    acc = (
        f"; kept model (best validation {config.trainer.monitor}): {', '.join(scores)}"
        if scores
        else ""
    )
    print(
        f"trained {result.steps} steps in {result.seconds / 60:.1f} min{acc}; "
        f"model saved to {result.model_dir}"
    )
    return 0
