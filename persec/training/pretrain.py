"""Self-supervised pretraining of an encoder (``persec pretrain``): PerSec, or the
SeqCLR baseline with ``objective=seqclr``.

Writes into ``output_dir``: ``encoder.safetensors`` + ``encoder.json`` (what
``persec finetune --init-encoder`` loads), ``perceivers.safetensors`` (the objective's
own weights: for PerSec the mask vectors, quantizers and projections that
``persec inspect-codes`` reads; for SeqCLR the projection head),
``config.yaml``, ``metrics.csv``, TensorBoard logs under ``tb/``, Lightning checkpoints
under ``checkpoints/`` and ``curves.png``.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from persec.config import load_config_dict, to_dict
from persec.data.module import PretrainDataConfig, UnlabelledDataModule
from persec.errors import PersecError
from persec.image import ImageConfig
from persec.models.encoders.base import EncoderConfig, TextEncoder, build_encoder
from persec.models.recognizer import ENCODER_WEIGHTS, save_encoder
from persec.objectives.persec import PersecConfig, PersecObjective
from persec.objectives.registry import OBJECTIVES, build_objective
from persec.objectives.seqclr import SeqCLRConfig, SeqCLRObjective
from persec.training.callbacks import EncoderSnapshots, ProbeAtValidation, snapshot_dir
from persec.training.optim import OptimConfig
from persec.training.probe import ProbeConfig
from persec.training.run import fit_run, settle_resume
from persec.training.systems import PretrainSystem
from persec.training.trainer import TrainerConfig, compile_encoder, start_run
from persec.weights import load_state, read_json, read_safetensors, write_module

logger = logging.getLogger("persec")

PERCEIVER_WEIGHTS = "perceivers.safetensors"
PERCEIVER_CONFIG = "perceivers.json"


def _paper_optim() -> OptimConfig:
    # Adam 1e-4 with warm-up [paper]; warm-up length, cosine decay, clipping [ours].
    return OptimConfig(name="adam", lr=1e-4, warmup_steps=1000, grad_clip=5.0)


SNAPSHOTS = "snapshots"


@dataclass
class PretrainConfig:
    """Everything ``persec pretrain`` reads (YAML file + ``key=value`` overrides).

    Attributes:
        model: the encoder to pretrain (aggregators on).
        image: input geometry [paper: 32×384 for pretraining].
        objective: ``persec`` (the method) or ``seqclr`` (the contrastive baseline).
        persec: the PerSec objective (levels, perceivers, loss weights).
        seqclr: the SeqCLR objective (augmentations, instance mapping, NT-Xent).
        data: unlabelled training and validation images.
        optim: Adam, lr 1e-4, warm-up [paper].
        trainer: steps, validation cadence, precision, devices.
        probe: a frozen linear probe, effective rank and leak test of the encoder at
            every validation (``probe.train_images: 0`` = off) [ours].
        snapshots: also write the encoder after these steps, to
            ``output_dir/snapshots/step-N/`` (a pretraining-length curve from one run).
        output_dir: where the encoder, logs and checkpoints go.
        resume: continue from ``output_dir/checkpoints/last.ckpt``.
    """

    model: EncoderConfig = field(default_factory=EncoderConfig)
    image: ImageConfig = field(default_factory=lambda: ImageConfig(width=384))
    objective: str = "persec"
    persec: PersecConfig = field(default_factory=PersecConfig)
    seqclr: SeqCLRConfig = field(default_factory=SeqCLRConfig)
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    optim: OptimConfig = field(default_factory=_paper_optim)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    snapshots: list[int] = field(default_factory=list)
    output_dir: str = "runs/pretrain"
    resume: bool = False


@dataclass
class PretrainResult:
    """What a run produced."""

    encoder_path: Path
    steps: int
    seconds: float
    final: dict[str, float]


def build_pretraining(
    config: PretrainConfig,
) -> tuple[TextEncoder, PersecObjective | SeqCLRObjective]:
    """The encoder (geometry taken from ``config.image``) and the objective for it.

    Raises:
        PersecError: an unknown objective or a config it cannot use (e.g. PerSec
            without aggregators).
    """
    if config.objective not in OBJECTIVES:  # before any model is built
        raise PersecError(
            f"objective must be one of {', '.join(OBJECTIVES)}, got {config.objective!r}"
        )
    config.model.in_channels = config.image.channels
    config.model.input_height = config.image.height
    try:
        encoder = build_encoder(config.model)
        section = getattr(config, config.objective, None)  # None: an unknown objective
        objective = build_objective(config.objective, encoder, section)
    except ValueError as e:
        raise PersecError(str(e)) from e
    return encoder, objective


def save_perceivers(objective: nn.Module, config: PretrainConfig, directory: Path) -> None:
    """Write the objective's tensors and the settings needed to rebuild it."""
    meta = {"model": to_dict(config.model), "image": to_dict(config.image)}
    meta["objective"] = config.objective
    meta[config.objective] = to_dict(getattr(config, config.objective))
    write_module(objective, meta, directory, PERCEIVER_WEIGHTS, PERCEIVER_CONFIG)


def load_pretrained(
    directory: str | Path,
) -> tuple[TextEncoder, PersecObjective | SeqCLRObjective, PretrainConfig]:
    """Encoder, objective and :class:`PretrainConfig` of a finished pretraining run.

    Raises:
        PersecError: missing or mismatched files.
    """
    directory = Path(directory)
    meta_path = directory / PERCEIVER_CONFIG
    if not meta_path.is_file():
        raise PersecError(
            f"{directory} is not a pretraining output: {PERCEIVER_CONFIG} not found "
            "(run `persec pretrain` with output_dir there)"
        )
    meta = read_json(meta_path)
    if isinstance(meta.get("objective"), dict):  # written before SeqCLR joined (PerSec only)
        meta["persec"], meta["objective"] = meta["objective"], "persec"
    config = load_config_dict(PretrainConfig, meta, source=str(meta_path))
    encoder, objective = build_pretraining(config)
    load_state(encoder, read_safetensors(directory / ENCODER_WEIGHTS, "cpu"), "encoder")
    load_state(objective, read_safetensors(directory / PERCEIVER_WEIGHTS, "cpu"), "perceivers")
    return encoder.eval(), objective.eval(), config


def pretrain(config: PretrainConfig, callbacks: list | None = None) -> PretrainResult:
    """Pretrain an encoder and write it (and the perceivers) to ``output_dir``.

    ``callbacks`` (Lightning callbacks) join persec's own. Under DDP every rank runs
    this function; only rank 0 writes the outputs.
    """
    out = Path(config.output_dir)
    settle_resume(config)
    validates = config.data.val or config.data.synth_val or config.probe.train_images
    if config.data.shards and validates and config.trainer.val_every <= 0:
        raise PersecError(
            "data.shards is read as one endless pass, which never reaches an epoch end: "
            "validate on a step cadence (trainer.val_every > 0)"
        )
    start_run(config.trainer)
    encoder, objective = build_pretraining(config)
    if config.trainer.compile:
        compile_encoder(encoder)
    data = UnlabelledDataModule(config.data, config.image, config.trainer.seed)
    data.setup("fit")
    system = PretrainSystem(
        encoder,
        objective,
        config.optim,
        config.trainer.max_steps,
        val_seed=config.trainer.seed,
        max_nonfinite=config.trainer.max_nonfinite,
    )
    callbacks = list(callbacks or [])
    if config.probe.train_images > 0:
        callbacks.append(ProbeAtValidation(config.probe, config.data.synth, config.image))
    if config.snapshots:
        if not config.resume:  # a fresh run: snapshots of an earlier one are stale
            for step in config.snapshots:
                shutil.rmtree(snapshot_dir(out / SNAPSHOTS, step), ignore_errors=True)
        model = config.model
        callbacks.append(
            EncoderSnapshots(
                config.snapshots, out / SNAPSHOTS, lambda enc, d: save_encoder(enc, model, d)
            )
        )
    run = fit_run(config, system, data, callbacks=callbacks)
    trainer = run.trainer
    final = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    result = PretrainResult(
        encoder_path=out / ENCODER_WEIGHTS,
        steps=trainer.global_step,
        seconds=run.seconds,
        final=final,
    )
    if not trainer.is_global_zero:
        return result
    save_encoder(encoder, config.model, out)
    save_perceivers(objective, config, out)
    try:
        from persec.plots import plot_pretrain_curves

        plot_pretrain_curves(out / "metrics.csv", out / "curves.png")
    except PersecError as e:
        logger.warning("no curves plotted: %s", e)
    return result
