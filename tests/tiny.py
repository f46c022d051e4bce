"""Tiny models, configs and data shared by the tests (a helper module: tests import it,
never each other).

Each ``*_TINY`` list is the ``key=value`` overrides that shrink a command's config to a
model that trains a step in well under a second on one CPU thread.
"""

from __future__ import annotations

from pathlib import Path

import torch

from persec.models.decoders.base import DecoderConfig
from persec.models.encoders.base import EncoderConfig
from persec.models.recognizer import Recognizer, RecognizerConfig

REPO = Path(__file__).resolve().parents[1]  # the repository root

PRETRAIN_TINY = [
    "model.size=tiny",
    "model.stroke_aggregator.dim=32",
    "model.semantic_aggregator.dim=32",
    "persec.stroke.quantizer.entries=32",
    "persec.semantic.quantizer.entries=32",
    "data.workers=0",
    "data.batch_size=8",
    "image.width=128",
    "trainer.progress=false",
    "trainer.log_every=1",
]

FINETUNE_TINY = [
    "model.encoder.size=tiny",
    "model.encoder.widths=[32,64,64,64]",
    # No aggregators: at 128 wide they would cost more than the rest of this model.
    "model.encoder.aggregators=false",
    "model.decoder.lstm_layers=1",
    "model.decoder.hidden=64",
    "data.workers=0",
    "data.batch_size=16",
    "trainer.progress=false",
    "trainer.log_every=1",
    "optim.name=adamw",
    "optim.lr=3e-3",
]

# The resume and DDP tests: one thread per process, so runs are bit-identical.
PRETRAIN_RESUMABLE = [*PRETRAIN_TINY, "trainer.threads=1"]
FINETUNE_RESUMABLE = [*FINETUNE_TINY, "data.batch_size=8", "trainer.threads=1"]

# Small heads keep every recognizer test well under a second.
DECODERS = {
    "ctc": DecoderConfig(name="ctc", lstm_layers=1, hidden=16),
    "attn": DecoderConfig(name="attn", d_model=32, heads=2, layers=1),
}


def tiny_recognizer(
    encoder: str = "resnet",
    decoder: str = "ctc",
    size: str = "tiny",
    charset: str = "36_lowercase",
    seed: int = 0,
) -> Recognizer:
    """An untrained recognizer in eval mode, its weights a function of ``seed``."""
    torch.manual_seed(seed)
    config = RecognizerConfig(
        charset=charset,
        encoder=EncoderConfig(name=encoder, size=size),
        decoder=DecoderConfig(**vars(DECODERS[decoder])),
    )
    return Recognizer(config).eval()


def images(n: int = 3, seed: int = 0) -> torch.Tensor:
    """(n, 3, 32, 128) in [-1, 1]."""
    return torch.rand(n, 3, 32, 128, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def render_words(tmp_path_factory, n: int, seed: int) -> Path:
    """``n`` rendered word images with labels, as a new LMDB (``persec render``)."""
    from persec.cli import main

    out = tmp_path_factory.mktemp("data") / "words"
    assert (
        main(["render", "--out", str(out), "--n", str(n), "--workers", "0", "--seed", str(seed)])
        == 0
    )
    return out
