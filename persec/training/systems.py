"""Lightning wrappers. Models stay plain ``nn.Module``s; training logic lives here."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter

import lightning as L
import torch

from persec.data.augment import AugmentConfig
from persec.data.augment import augment as augment_images
from persec.errors import PersecError
from persec.metrics import DatasetScore, ScoreAccumulator
from persec.models.recognizer import Recognizer
from persec.training.encoder_tuning import (
    EncoderTuningConfig,
    encoder_param_groups,
    set_encoder_trainable,
)
from persec.training.optim import OptimConfig, optimizer_and_schedule

logger = logging.getLogger("persec")


class _TrainingSystem(L.LightningModule):
    """What both systems share: skipped-sample counts and the NaN/Inf guard, both
    carried through checkpoints.

    Args:
        max_nonfinite: consecutive non-finite losses tolerated before stopping.
    """

    def __init__(self, max_nonfinite: int = 20):
        super().__init__()
        self.skipped: Counter[str] = Counter()
        self.max_nonfinite = max_nonfinite
        self.nonfinite_steps = 0  # steps skipped for a NaN/Inf loss, whole run
        self._nonfinite_run = 0  # ... in a row, up to now

    def _fused_optimizer_ok(self) -> bool:
        """Fused optimisers unless a GradScaler (fp16) scales the gradients."""
        return getattr(self.trainer.precision_plugin, "scaler", None) is None

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        """Clip gradients by norm. Lightning's mixed-precision plugin refuses to clip
        for any fused optimiser, since under fp16 such an optimiser unscales gradients
        itself; under bf16 there is no scaler and nothing to unscale, so persec clips
        directly, as the plugin would for an unfused optimiser."""
        fused = getattr(optimizer, "_step_supports_amp_scaling", False)
        by_norm = gradient_clip_algorithm in (None, "norm")
        if gradient_clip_val and by_norm and fused and self._fused_optimizer_ok():
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def checked_loss(self, loss: torch.Tensor) -> torch.Tensor | None:
        """``loss`` when it is finite on every rank; otherwise ``None``, which makes
        Lightning skip the backward pass and leave the weights as they were (all ranks
        agree, so DDP never waits on a rank that skipped).

        Raises:
            PersecError: ``max_nonfinite`` non-finite losses in a row.
        """
        finite = bool(torch.isfinite(loss.detach()).all())
        finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if finite:
            self._nonfinite_run = 0
            return loss
        self._nonfinite_run += 1
        self.nonfinite_steps += 1
        if self._nonfinite_run >= self.max_nonfinite:
            raise PersecError(
                f"the loss was NaN/Inf for {self._nonfinite_run} steps in a row "
                f"(last at step {self.global_step}); the weights are those before the "
                "first of them. Lower optim.lr, raise optim.warmup_steps, check the data, "
                "or train with trainer.precision=32-true"
            )
        logger.warning(
            "step %d: the loss is %s; step skipped, weights unchanged (%d in a row)",
            self.global_step,
            float(loss.detach().float().mean()),
            self._nonfinite_run,
        )
        return None

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["persec"] = {
            "skipped": dict(self.skipped),
            "nonfinite_steps": self.nonfinite_steps,
            "nonfinite_run": self._nonfinite_run,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("persec", {})
        self.skipped = Counter(state.get("skipped", {}))
        self.nonfinite_steps = state.get("nonfinite_steps", 0)
        self._nonfinite_run = state.get("nonfinite_run", 0)


class RecognitionSystem(_TrainingSystem):
    """Supervised training of a :class:`Recognizer`, validated by word accuracy.

    Logs ``train/loss``, ``train/lr``, ``train/skipped`` and, per validation set,
    ``val/<name>/word_acc`` and ``val/<name>/cer`` plus the sample-weighted
    ``val/word_acc`` and the pooled ``val/cer`` (either selects the best checkpoint:
    ``trainer.monitor``). Under DDP each rank scores its
    share of every set and the counts are summed over ranks before anything is logged.

    Args:
        model: the recognizer to train.
        optim: optimiser settings.
        max_steps: training length (for the schedule).
        val_names: display names of the validation sets, in dataloader order.
        freeze_encoder: train the decoder only (decoder-evaluation protocol); the
            encoder is kept in eval mode so its BatchNorm statistics stay fixed.
        encoder_tuning: the encoder's learning-rate scale and frozen first steps
            [ours] (None: trained like the rest from the first step).
        max_nonfinite: consecutive NaN/Inf losses tolerated (each step is skipped).
        augment: augmentation applied to each training batch on its device (None = off);
            it draws from torch's global RNG, which checkpoints carry.
    """

    def __init__(
        self,
        model: Recognizer,
        optim: OptimConfig,
        max_steps: int,
        val_names: list[str] | None = None,
        freeze_encoder: bool = False,
        max_nonfinite: int = 20,
        augment: AugmentConfig | None = None,
        encoder_tuning: EncoderTuningConfig | None = None,
    ):
        super().__init__(max_nonfinite)
        self.model = model
        self.encoder_tuning = encoder_tuning or EncoderTuningConfig()
        self.optim = optim
        self.max_steps = max_steps
        self.val_names = val_names or []
        self.freeze_encoder = freeze_encoder
        self.augment = augment
        if freeze_encoder:
            self.model.encoder.requires_grad_(False)
        self._scores: list[ScoreAccumulator] = []

    def _keep_encoder_frozen(self) -> None:
        # Lightning puts the whole module back in train mode at fit start and after
        # every validation; a frozen encoder must keep its BatchNorm statistics.
        if self.freeze_encoder:
            self.model.encoder.eval()
        elif self.encoder_tuning.frozen_steps:
            frozen = self.global_step < self.encoder_tuning.frozen_steps
            set_encoder_trainable(self.model.encoder, not frozen)

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        """Release an encoder whose frozen first steps (``encoder_tuning.frozen_steps``)
        are over; the step count, not the batch, decides, so a resumed run agrees."""
        if self.encoder_tuning.frozen_steps:
            self._keep_encoder_frozen()

    def on_train_start(self) -> None:
        """Put a frozen encoder back in eval mode as training starts."""
        self._keep_encoder_frozen()

    def on_train_epoch_start(self) -> None:
        """Put a frozen encoder back in eval mode at the start of each epoch."""
        self._keep_encoder_frozen()

    def on_validation_model_train(self) -> None:
        """Return to train mode after validation, a frozen encoder excepted."""
        super().on_validation_model_train()
        self._keep_encoder_frozen()

    def _labels(self, labels: list[str]) -> list[str]:
        # Datasets already filter by the model's charset; the renderer draws from its
        # own (e.g. mixed-case) charset, so map every label the same way.
        return [self.model.charset.strip_unsupported(x) for x in labels]

    def training_step(self, batch, batch_idx: int):
        """Augment the images, return the recognition loss and log it with the learning
        rate and skip count (``None``, no update, for an empty batch or a non-finite
        loss)."""
        images, labels, skipped = batch
        self.skipped.update(skipped)
        if len(labels) == 0:
            return None
        labels = self._labels(labels)
        if self.augment is not None:
            images = augment_images(images, self.augment)  # (B, C, H, W)
        logits = self.model(images, labels)  # (B, L, V)
        loss = self.model.loss(logits, labels)
        if self.checked_loss(loss) is None:
            return None
        self.log("train/loss", loss, prog_bar=True, batch_size=len(labels))
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=len(labels))
        if skipped:
            self.log("train/skipped", float(sum(self.skipped.values())), batch_size=len(labels))
        return loss

    def on_validation_epoch_start(self) -> None:
        """Start a fresh word-accuracy score for each validation set, under the model's
        own charset (the 36-character protocol for a 36-character model; case and
        punctuation count for a model that writes them)."""
        charset = self.model.charset
        self._scores = [
            ScoreAccumulator(self._val_name(i), charset) for i in range(max(1, len(self.val_names)))
        ]

    def _val_name(self, i: int) -> str:
        return self.val_names[i] if i < len(self.val_names) else f"val{i}"

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Decode the batch and add its readings to its validation set's score."""
        images, labels, _ = batch
        if len(labels) == 0:
            return
        predictions = self.model.decode(self.model(images))
        self._scores[dataloader_idx].update(
            [p for p, _ in predictions], labels, [c for _, c in predictions]
        )

    def on_validation_epoch_end(self) -> None:
        """Log each validation set's word accuracy and their sample-weighted mean, over
        all ranks (each scored its own share of every set)."""
        scores = self._summed_over_ranks([s.compute() for s in self._scores])
        scores = [score for score in scores if score.samples]
        if not scores:
            return
        for s in scores:
            self.log(f"val/{s.name}/word_acc", s.word_acc, add_dataloader_idx=False)
            if s.cer is not None:
                self.log(f"val/{s.name}/cer", s.cer, add_dataloader_idx=False)
        total = sum(s.samples for s in scores)
        mean = sum(s.word_acc * s.samples for s in scores) / total
        self.log("val/word_acc", mean, prog_bar=True, add_dataloader_idx=False)
        chars = sum(s.gt_chars for s in scores)
        if chars:  # edits over every set's reference characters
            self.log(
                "val/cer", 100.0 * sum(s.edits for s in scores) / chars, add_dataloader_idx=False
            )

    def _summed_over_ranks(self, scores: list[DatasetScore]) -> list[DatasetScore]:
        """Each set's raw totals added up over the DDP ranks (as they are on one)."""
        if self.trainer.world_size == 1:
            return scores
        totals = [f for f in dataclasses.fields(DatasetScore) if f.name != "name"]
        rows = [[float(getattr(s, f.name)) for f in totals] for s in scores]
        summed = torch.tensor(rows, dtype=torch.float64, device=self.device)  # (sets, fields)
        summed = self.trainer.strategy.reduce(summed, reduce_op="sum").cpu().tolist()
        return [
            DatasetScore(
                name=s.name,
                **{
                    f.name: round(v) if f.type == "int" else v
                    for f, v in zip(totals, row, strict=True)
                },
            )
            for s, row in zip(scores, summed, strict=True)
        ]

    def configure_optimizers(self):
        """The optimiser and per-step schedule over the recognizer's trainable parameters
        (the encoder's at ``encoder_tuning.lr_scale`` times the rest's learning rate)."""
        params = self.model.parameters()
        tuning = self.encoder_tuning
        if not self.freeze_encoder and (tuning.lr_scale != 1.0 or tuning.frozen_steps):
            params = encoder_param_groups(self.model, self.optim.lr, tuning.lr_scale)
        return optimizer_and_schedule(
            params, self.optim, self.max_steps, self._fused_optimizer_ok()
        )


class PretrainSystem(_TrainingSystem):
    """Self-supervised pretraining of an encoder with the PerSec (or SeqCLR) objective.

    Logs every term the objective reports, under ``train/`` and ``val/``; for PerSec,
    per active level: ``contrastive``, ``acc``,
    ``diversity``, ``feature_penalty``, ``code_ppl``, ``prob_ppl``, ``temperature`` and
    ``negatives`` (e.g. ``train/stroke/acc``), plus ``train/loss``, ``val/loss`` and
    ``train/lr``. Validation runs the quantizers in eval mode (argmax codes) with masks
    and distractors drawn from a generator reseeded per batch, so two validations of
    the same weights give the same numbers.

    Args:
        encoder: the encoder to pretrain (its aggregators are trained too).
        objective: the perceivers and loss weights (or SeqCLR's projection head); any
            module with ``set_step(step)`` and ``forward(encoder, images, generator)``
            returning ``.loss`` and ``.logs``.
        optim: optimiser settings (Adam 1e-4 with warm-up [paper]).
        max_steps: training length (for the schedule).
        val_seed: seed of the validation masks.
        max_nonfinite: consecutive NaN/Inf losses tolerated (each step is skipped).
    """

    def __init__(
        self,
        encoder: torch.nn.Module,
        objective: torch.nn.Module,
        optim: OptimConfig,
        max_steps: int,
        val_seed: int = 0,
        max_nonfinite: int = 20,
    ):
        super().__init__(max_nonfinite)
        self.encoder = encoder
        self.objective = objective
        self.optim = optim
        self.max_steps = max_steps
        self.val_seed = val_seed

    def _log_terms(self, stage: str, logs: dict, batch_size: int, **kwargs) -> None:
        for key, value in logs.items():
            self.log(f"{stage}/{key}", value, batch_size=batch_size, **kwargs)

    def training_step(self, batch, batch_idx: int):
        """Return the objective's loss on the batch and log it with every term, the
        learning rate and skip count (``None``, no update, for an empty batch or a
        non-finite loss)."""
        images, _, skipped = batch
        self.skipped.update(skipped)
        if len(images) == 0:
            return None
        self.objective.set_step(self.global_step)
        out = self.objective(self.encoder, images)
        if self.checked_loss(out.loss) is None:
            return None
        b = images.size(0)
        self.log("train/loss", out.loss, prog_bar=True, batch_size=b)
        for key, value in out.logs.items():  # e.g. stroke/acc, semantic/acc, seqclr/acc
            if key.endswith("/acc"):
                self.log(f"train/{key}", value, prog_bar=True, batch_size=b)
        self._log_terms("train", {k: v for k, v in out.logs.items() if not k.endswith("/acc")}, b)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=b)
        if skipped:
            self.log("train/skipped", float(sum(self.skipped.values())), batch_size=b)
        return out.loss

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Log the objective's loss and terms on the batch, with masks drawn from a
        generator seeded by ``val_seed`` and the batch index."""
        images, _, _ = batch
        if len(images) == 0:
            return
        generator = torch.Generator(images.device).manual_seed(
            self.val_seed * 1_000_003 + batch_idx * 101 + dataloader_idx
        )
        out = self.objective(self.encoder, images, generator=generator)
        b = images.size(0)
        # Each rank validates its own share; the epoch value is the sample-weighted mean
        # over all ranks (Lightning reduces the sums and the counts).
        self.log("val/loss", out.loss, batch_size=b, add_dataloader_idx=False, sync_dist=True)
        self._log_terms("val", out.logs, b, add_dataloader_idx=False, sync_dist=True)

    def configure_optimizers(self):
        """The optimiser and per-step schedule over the encoder's and objective's trainable
        parameters."""
        return optimizer_and_schedule(
            self.parameters(), self.optim, self.max_steps, self._fused_optimizer_ok()
        )
