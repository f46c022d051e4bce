"""``persec inspect-codes``: which codebook entries fire where, and how many are used."""

from __future__ import annotations

from pathlib import Path

HELP = "plot a pretrained encoder's quantizer codes (collapse check)"


def add_parser(subparsers) -> None:
    """Register ``inspect-codes`` on the ``persec`` subcommand parser."""
    parser = subparsers.add_parser(
        "inspect-codes",
        help=HELP,
        description="Run a pretraining output's encoder and quantizers (argmax codes, no "
        "masking) over a few images and write MODEL/inspect/codes.png (stroke codes "
        "overlaid on each image, semantic codes below) and usage.png (how often each "
        "codebook entry fires). A collapsed quantizer shows one colour everywhere and a "
        "usage histogram with a handful of bars.",
    )
    parser.add_argument(
        "--model", required=True, metavar="DIR", help="output_dir of `persec pretrain`"
    )
    parser.add_argument(
        "--data",
        required=True,
        metavar="PATH",
        help="images: LMDB tree, gt.txt folder or image folder (labels ignored)",
    )
    parser.add_argument("--n", type=int, default=8, help="images to draw (default 8)")
    parser.add_argument(
        "--usage-images",
        type=int,
        default=256,
        metavar="N",
        help="images counted in the usage histogram (default 256)",
    )
    parser.add_argument("--out", metavar="DIR", help="output folder (default MODEL/inspect)")
    parser.set_defaults(func=run)


def run(args) -> int:
    """Compute the quantizer codes of ``--data`` images, write the two plots and print usage."""
    import torch

    from persec.data.dataset import Skipped
    from persec.data.layouts import open_dataset
    from persec.errors import PersecError
    from persec.image import ToTensor
    from persec.objectives.inspect import compute_codes, plot_code_maps, plot_code_usage
    from persec.training.pretrain import load_pretrained

    if args.n < 1 or args.usage_images < 1:
        raise PersecError("--n and --usage-images must be at least 1")
    encoder, objective, config = load_pretrained(args.model)
    if config.objective != "persec":
        raise PersecError(
            f"{args.model} was pretrained with {config.objective}, which has no codebooks "
            "to inspect (inspect-codes reads PerSec pretraining outputs)"
        )
    dataset = open_dataset(args.data, unlabelled=True, transform=ToTensor(config.image))
    wanted = max(args.n, args.usage_images)
    images, skipped = [], 0
    for i in range(len(dataset)):
        item = dataset[i]
        if isinstance(item, Skipped):
            skipped += 1
            continue
        images.append(item[0])
        if len(images) == wanted:
            break
    if not images:
        raise PersecError(f"no readable image in {args.data}")
    batch = torch.stack(images)  # (N, C, H, W)
    out = Path(args.out) if args.out else Path(args.model) / "inspect"
    out.mkdir(parents=True, exist_ok=True)
    codes = compute_codes(encoder, objective, batch)
    # The maps draw the first --n images; their codes are the first rows of `codes`.
    maps = plot_code_maps(batch[: args.n], codes, out / "codes.png")
    usage = plot_code_usage(codes, out / "usage.png")
    for name, c in codes.items():
        used = ", ".join(f"{u}/{c.entries}" for u in c.used)
        print(
            f"{name}: code perplexity {c.code_ppl:.1f} of {len(c.used) * c.entries}; "
            f"entries used per codebook {used} ({len(images)} images)"
        )
    report = getattr(dataset, "report", None)
    if report is not None and report.skipped:
        print(f"skipped when opened: {report.summary()}")
    if skipped:
        print(f"skipped {skipped} unreadable images")
    print(f"wrote {maps} and {usage}")
    return 0
