"""``persec tune-decoding``: choose a CTC model's beam search and LM weight on validation data."""

from __future__ import annotations

import argparse
from pathlib import Path

from persec.commands.options import (
    add_command,
    add_model_argument,
    add_protocol_arguments,
    add_runtime_arguments,
    positive_int,
    protocol_max_length,
)
from persec.decoding.settings import describe_decoding
from persec.errors import PersecError
from persec.evaluation.tune_decoding import (
    LENGTH_BONUSES,
    LM_WEIGHTS,
    collect_logits,
    search_decoding,
)
from persec.inference.model import load_model, resolve_device
from persec.metrics import eval_charset
from persec.models.recognizer import WEIGHTS

HELP = "choose a CTC model's beam search and language-model weight on validation data"

EPILOG = f"""\
Runs the model once over the labelled crops of --data (read as 'persec eval' reads
them), then decodes those logits greedily and with a prefix beam search of --beam-width
beams fused with a character n-gram language model of English words, for every
--lm-weights x --length-bonuses pair. The setting with the best word accuracy (then
1 - NED; on a tie the earlier, weaker one) is written into the config.json of --out,
which 'persec read', 'persec eval' and 'persec export' then use; greedy stays when
nothing beats it. The weights are not changed.

Tune on validation data only (never on the set you report): the shipped model was
tuned on its IIIT5K held-out part,

  persec tune-decoding --model persec/shipped/persec-small --data runs/shipped/iiit5k/heldout

Defaults: --lm-weights {" ".join(f"{w:g}" for w in LM_WEIGHTS)}, --length-bonuses \
{" ".join(f"{b:g}" for b in LENGTH_BONUSES)}; the LM is estimated from the --lm-words
most frequent wordfreq English words at order --lm-order (a few seconds, no download).
'persec read/eval --greedy' decode a tuned model greedily again.
"""


def add_parser(subparsers) -> None:
    """Register ``tune-decoding`` on the ``persec`` subcommand parser."""
    parser = add_command(subparsers, "tune-decoding", HELP, EPILOG)
    add_model_argument(parser, required=True, help="a saved CTC model")
    parser.add_argument(
        "--data", nargs="+", required=True, metavar="PATH", help="validation datasets"
    )
    parser.add_argument(
        "--out", metavar="DIR", help="model directory to write (default: --model itself)"
    )
    parser.add_argument("--beam-width", type=positive_int, default=10, metavar="N")
    parser.add_argument(
        "--lm-weights", type=float, nargs="+", default=list(LM_WEIGHTS), metavar="W"
    )
    parser.add_argument(
        "--length-bonuses", type=float, nargs="+", default=list(LENGTH_BONUSES), metavar="B"
    )
    parser.add_argument("--lm-words", type=positive_int, metavar="N", help="default: 50000")
    parser.add_argument("--lm-order", type=positive_int, metavar="N", help="default: 6")
    add_protocol_arguments(parser)
    add_runtime_arguments(parser)
    parser.add_argument(
        "--force", action="store_true", help="overwrite another model already in --out"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the table, write nothing")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Search the grid, print every trial and save the winner's settings."""
    if any(w < 0 for w in args.lm_weights):
        raise PersecError(f"--lm-weights must be >= 0, got {args.lm_weights}")
    out = Path(args.out or args.model)
    in_place = out.resolve() == Path(args.model).resolve()
    if (out / WEIGHTS).exists() and not in_place and not args.force and not args.dry_run:
        raise PersecError(f"{out} already holds a model (--force overwrites it)")
    if args.protocol != "standard":
        raise PersecError("tune-decoding chooses decoding under the standard protocol only")
    charset = eval_charset(args.cased, args.punctuation, args.charset)
    model = load_model(args.model, resolve_device(args.device))
    base = model.config.decoder
    if args.lm_words is not None:
        base.lm_words = args.lm_words
    if args.lm_order is not None:
        base.lm_order = args.lm_order
    if base.name != "ctc":
        raise PersecError(f"{args.model}: only CTC models have decoding settings to tune")
    logits, labels, skipped = collect_logits(
        model, args.data, charset, protocol_max_length(args), args.batch_size, progress=None
    )
    best, trials = search_decoding(
        logits,
        labels,
        base,
        model.charset,
        charset,
        args.beam_width,
        args.lm_weights,
        args.length_bonuses,
        progress=None,
    )
    print(f"model: {args.model}")
    print(f"validation: {len(labels)} crops ({skipped} skipped), eval charset {charset.name}")
    print("| decoding | LM weight | length bonus | Accuracy | 1 - NED |")
    print("|:--|--:|--:|--:|--:|")
    for t in trials:
        mark = " **chosen**" if t is best else ""
        d = t.decoding
        kind = "greedy" if d.beam_width == 0 else f"beam {d.beam_width}"
        print(
            f"| {kind}{mark} | {d.lm_weight:g} | {d.length_bonus:g} | {t.word_acc:.2f} "
            f"| {t.one_minus_ned:.2f} |"
        )
    print(f"chosen: {describe_decoding(best.decoding)}")
    if args.dry_run:
        return 0
    model.config.decoder = best.decoding
    model.save(out)
    print(f"wrote {out / 'config.json'}")
    return 0
