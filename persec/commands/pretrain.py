"""``persec pretrain``: self-supervised PerSec pretraining of an encoder."""

from __future__ import annotations

from persec.commands.options import add_config_arguments, command_config, training_overrides

HELP = "pretrain an encoder on unlabelled images (PerSec, or SeqCLR)"


def add_parser(subparsers) -> None:
    """Register ``pretrain`` on the ``persec`` subcommand parser."""
    parser = subparsers.add_parser(
        "pretrain",
        help=HELP,
        description="Pretrain an encoder with the stroke and semantic context perceivers "
        "(PerSec), or with the SeqCLR baseline (objective=seqclr). "
        "Settings are the fields of persec.training.pretrain.PretrainConfig, from --config and "
        "key=value overrides (e.g. trainer.max_steps=2000 output_dir=runs/x "
        "persec.levels=stroke data.train=[/data/unlabelled]). Writes "
        "OUTPUT_DIR/encoder.safetensors (for `persec finetune --init-encoder`), "
        "metrics.csv, TensorBoard logs and curves.png.",
    )
    add_config_arguments(parser, "configs/pretrain/*.yaml", training=True)
    parser.set_defaults(func=run)


def run(args) -> int:
    """Pretrain an encoder from the config; print the steps, time and final validation numbers."""
    from persec.training.pretrain import PretrainConfig, pretrain

    overrides = training_overrides(args)
    config = command_config(PretrainConfig, args, overrides)
    if config is None:
        return 0
    result = pretrain(config)
    parts = []
    for level in ("stroke", "semantic", "seqclr"):
        acc = result.final.get(f"val/{level}/acc")
        ppl = result.final.get(f"val/{level}/prob_ppl")
        if acc is not None:
            parts.append(f"{level} acc {100 * acc:.1f}%")
            if ppl is not None:
                parts[-1] += f", prob ppl {ppl:.0f}"
    mse = result.final.get("val/pixel/mse")
    if mse is not None:
        parts.append(f"pixel mse {mse:.3f}")
    summary = f" (validation: {'; '.join(parts)})" if parts else ""
    print(
        f"pretrained {result.steps} steps in {result.seconds / 60:.1f} min{summary}; "
        f"encoder saved to {result.encoder_path}"
    )
    return 0
