"""Supervised training of a recognizer (``persec finetune``), from scratch or from a
pretrained encoder, with the decoder-evaluation (frozen encoder) and
semi-supervised (label fraction) protocols.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from persec.charset import Charset
from persec.config import leaves, to_dict
from persec.data.augment import AugmentConfig
from persec.data.module import RecognitionDataConfig, RecognitionDataModule
from persec.errors import PersecError
from persec.models.recognizer import Recognizer, RecognizerConfig
from persec.plots import read_metrics
from persec.training.encoder_tuning import EncoderTuningConfig
from persec.training.optim import OptimConfig
from persec.training.run import fit_run, settle_resume
from persec.training.systems import RecognitionSystem
from persec.training.trainer import TrainerConfig, compile_encoder, read_checkpoint_state, start_run

logger = logging.getLogger("persec")


@dataclass
class TrainAugmentConfig(AugmentConfig):
    """Augmentation of every training batch on the training device (rendered and real
    images alike), with SeqCLR's operations. Off by default; it matters when a few
    real crops are repeated many times (``data.train_repeat``).

    Attributes:
        enabled: augment training batches (validation is never augmented).
        crop_prob: 0 here [ours]: a crop can cut a character off and make the label
            wrong; the other operations keep the text whole. See
            :class:`~persec.objectives.seqclr.AugmentConfig` for the rest.
    """

    enabled: bool = False
    crop_prob: float = 0.0


@dataclass
class FinetuneConfig:
    """Everything ``persec finetune`` reads (YAML file + ``key=value`` overrides).

    Attributes:
        model: recognizer architecture and charset.
        data: training and validation data.
        optim: SGD lr 5e-3 [paper] by default.
        trainer: steps, validation cadence, precision, devices.
        output_dir: where ``model/``, checkpoints and logs go.
        init_encoder: pretrained ``encoder.safetensors`` (or its directory) to start from.
        init_model: a saved recognizer (``model/`` directory: ``model.safetensors`` +
            ``config.json``, e.g. ``persec/shipped/persec-small``) to go on training; its
            architecture and charset replace ``model`` (a warning names the ``model.*``
            settings that are then not used). Excludes ``init_encoder``.
        freeze_encoder: train only the decoder (decoder-evaluation protocol).
        resume: continue from ``output_dir/checkpoints/last.ckpt``.
        augment: on-device augmentation of training batches (off by default).
        encoder_tuning: the encoder's learning-rate scale and frozen first steps [ours]
            (off by default).
    """

    model: RecognizerConfig = field(default_factory=RecognizerConfig)
    data: RecognitionDataConfig = field(default_factory=RecognitionDataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    output_dir: str = "runs/finetune"
    init_encoder: str = ""
    init_model: str = ""
    freeze_encoder: bool = False
    resume: bool = False
    augment: TrainAugmentConfig = field(default_factory=TrainAugmentConfig)
    encoder_tuning: EncoderTuningConfig = field(default_factory=EncoderTuningConfig)


@dataclass
class FinetuneResult:
    """What a run produced."""

    model_dir: Path
    best_val_word_acc: float | None
    steps: int
    seconds: float
    best_val_cer: float | None = None


# Metrics ``trainer.monitor`` may name, and whether higher or lower is better.
MONITORS = {"word_acc": "max", "cer": "min"}


def scores_at_best(metrics_csv: Path, monitor: str, best: float) -> dict[str, float]:
    """The validation metrics (``val/*`` columns) of ``metrics.csv``'s first row where
    ``monitor`` reads ``best`` (the kept checkpoint's score: the checkpoint replaces its
    best only on a strict improvement, so among equal scores it keeps the first); {}
    when no row does."""
    try:
        series = read_metrics(metrics_csv)
    except PersecError:  # no file, or nothing logged
        return {}
    kept = [
        s for s, v in series.get(monitor, []) if math.isclose(v, best, rel_tol=1e-6, abs_tol=1e-9)
    ]
    if not kept:
        return {}
    return {
        key: value
        for key, points in series.items()
        if key.startswith("val/")
        for step, value in points
        if step == kept[0]
    }


def check_label_cap(config: FinetuneConfig, model: Recognizer) -> None:
    """Raise :class:`PersecError` when labels may be longer than an attention decoder
    can write (``data.max_label_length`` 0 or above ``decoder.max_length``): the step
    that met one would fail mid-training. CTC has no such limit."""
    limit = getattr(model.decoder, "max_length", None)
    if model.config.decoder.name != "attn" or limit is None:
        return
    cap = config.data.max_label_length
    if cap == 0 or cap > limit:
        raise PersecError(
            f"data.max_label_length={cap} lets labels longer than the attention decoder's "
            f"max_length={limit} through; set data.max_label_length <= {limit} or raise "
            "model.decoder.max_length (text lines: use the CTC decoder)"
        )


def ignored_model_settings(requested: RecognizerConfig, saved: Recognizer) -> list[str]:
    """``model.*`` settings of a config that a saved model (``init_model``) overrides.

    Returns ``"model.KEY=requested (saved: value)"`` for each leaf that differs from
    both the saved value and the default (a config that leaves ``model`` alone warns
    of nothing); the charset counts as the same when both spell the same characters.
    """
    want, have, default = to_dict(requested), saved.saved_config(), to_dict(RecognizerConfig())
    if Charset.from_spec(want["charset"]).chars == saved.charset.chars:
        want["charset"] = have["charset"]

    want, have, default = (leaves(d, "model.") for d in (want, have, default))
    return [
        f"{k}={want[k]!r} (saved: {have.get(k)!r})"
        for k in want
        if want[k] != have.get(k) and want[k] != default.get(k)
    ]


def finetune(config: FinetuneConfig, callbacks: list | None = None) -> FinetuneResult:
    """Train a recognizer and save the best (by the validation metric
    ``trainer.monitor``, else the last) weights to ``output_dir/model/``.

    ``callbacks`` (Lightning callbacks) join persec's own. Under DDP every rank runs
    this function; only rank 0 writes the model.
    """
    out = Path(config.output_dir)
    settle_resume(config)
    if config.freeze_encoder and not (config.init_encoder or config.init_model):
        logger.warning("freeze_encoder without init_encoder trains a decoder on a random encoder")
    if config.init_model and config.init_encoder:
        raise PersecError(
            "init_model and init_encoder exclude each other: a saved model already holds an encoder"
        )
    config.encoder_tuning.check(config.trainer.devices * config.trainer.num_nodes)
    if config.trainer.monitor not in MONITORS:
        raise PersecError(
            f"trainer.monitor must be one of {', '.join(MONITORS)}, got {config.trainer.monitor!r}"
        )
    start_run(config.trainer)
    if config.init_model:
        model = Recognizer.load(config.init_model)
        model.train()
        ignored = ignored_model_settings(config.model, model)
        if ignored:
            logger.warning(
                "init_model %s: its saved config replaces the config's model section, so "
                "these settings are not used: %s",
                config.init_model,
                ", ".join(ignored),
            )
        config.model = model.config  # the saved architecture is the one trained (and recorded)
    else:
        model = Recognizer(config.model)
    check_label_cap(config, model)
    if config.init_encoder:
        model.load_encoder(config.init_encoder)
    if config.trainer.compile:
        compile_encoder(model.encoder)
    data = RecognitionDataModule(
        config.data, config.model.image, model.charset, config.trainer.seed
    )
    data.setup("fit")
    val_names = [getattr(d, "name", f"val{i}") for i, d in enumerate(data.val_sets)]
    if config.data.synth_val:
        val_names[-1] = "synth_heldout"
    system = RecognitionSystem(
        model,
        config.optim,
        config.trainer.max_steps,
        val_names,
        config.freeze_encoder,
        config.trainer.max_nonfinite,
        augment=config.augment if config.augment.enabled else None,
        encoder_tuning=config.encoder_tuning,
    )
    mode = MONITORS[config.trainer.monitor]
    monitor = f"val/{config.trainer.monitor}" if data.val_sets else None
    run = fit_run(config, system, data, monitor, callbacks, mode=mode)
    trainer, checkpoint = run.trainer, run.checkpoint
    best = checkpoint.best_model_path
    if best:
        model.load_state_dict(read_checkpoint_state(best, prefix="model."))
    model_dir = model.save(out / "model") if trainer.is_global_zero else out / "model"
    score = checkpoint.best_model_score
    scores = {}
    if trainer.is_global_zero and monitor and score is not None:  # rank 0 writes the CSV
        scores = scores_at_best(out / "metrics.csv", monitor, float(score))
    return FinetuneResult(
        model_dir=model_dir,
        best_val_word_acc=scores.get("val/word_acc"),
        steps=trainer.global_step,
        seconds=run.seconds,
        best_val_cer=scores.get("val/cer"),
    )
