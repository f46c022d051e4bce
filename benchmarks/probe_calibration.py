"""Is the frozen linear probe a sound instrument, and is a 0% probe the probe or the features?

Three checks, each a line of JSON (the probe's logs):

* ``ceiling``: the probe on the encoders of fine-tuned recognizers (``--models``), whose own
  linear CTC head reads N% of held-out renders: the probe should read about as much;
* ``variants``: the probe on a pretrained encoder (``--pretrain``) with 4x the steps, other
  learning rates, and on the features before the semantic aggregator: does a longer or
  different fit leave the CTC plateau?
* ``random``: the longest variant on a random encoder of the same architecture.

The variants are scored on renders at seed 302, not the grid's 301.

    python benchmarks/probe_calibration.py \\
        --pretrain runs/experiments/label-efficiency-cpu/pretrain/persec-b45e8426b1 \\
        --models runs/experiments/label-efficiency-cpu/finetune/*-0.1-s0-*/model
"""

from __future__ import annotations

import argparse
import copy
import json
from dataclasses import replace

import torch

from persec.inference.model import load_model
from persec.models.encoders.base import build_encoder
from persec.training import probe as P
from persec.training.pretrain import load_pretrained


def _line(name: str, result: P.ProbeResult) -> None:
    print(name, json.dumps({k: round(v, 4) for k, v in result.logs().items()}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pretrain", required=True, help="a `persec pretrain` output_dir")
    parser.add_argument("--models", nargs="*", default=[], help="saved fine-tuned models")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    encoder, _, config = load_pretrained(args.pretrain)

    grid = P.ProbeConfig(train_images=2000, test_images=500, leak=False)
    data = P.make_probe_set(grid, config.data.synth, config.image)
    for model in args.models:
        _line(f"ceiling {model}", P.run_probe(load_model(model).encoder, None, data, grid, True))

    base = replace(grid, test_seed=302)
    data = P.make_probe_set(base, config.data.synth, config.image)
    variants = {
        "base": base,
        "steps8k": replace(base, steps=8000),
        "lr1e-2_8k": replace(base, steps=8000, lr=1e-2),
        "lr3e-4_8k": replace(base, steps=8000, lr=3e-4),
    }
    for name, cfg in variants.items():
        _line(name, P.run_probe(encoder, None, data, cfg, bf16=True))
    aggregator, encoder.semantic_aggregator = encoder.semantic_aggregator, torch.nn.Identity()
    _line("pre-agg 8k", P.run_probe(encoder, None, data, variants["steps8k"], bf16=True))
    encoder.semantic_aggregator = aggregator

    torch.manual_seed(0)
    model = copy.deepcopy(config.model)
    model.in_channels, model.input_height = config.image.channels, config.image.height
    _line(
        "random steps8k", P.run_probe(build_encoder(model), None, data, variants["steps8k"], True)
    )


if __name__ == "__main__":
    main()
