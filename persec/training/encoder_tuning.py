"""How fine-tuning treats the encoder it starts from [ours]: a smaller learning rate
than the head's, and a first phase with the encoder frozen (linear probe, then
fine-tune: LP-FT, Kumar et al., ICLR 2022). Both are off by default, so a fine-tune
trains every parameter at ``optim.lr`` as the paper's protocol does.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from persec.errors import PersecError


@dataclass
class EncoderTuningConfig:
    """Fine-tuning settings for the encoder alone [ours].

    Attributes:
        lr_scale: the encoder's learning rate relative to ``optim.lr`` (the decoder
            keeps ``optim.lr``); 1.0 trains both alike. Warm-up and decay apply to both.
        frozen_steps: the encoder is frozen (no gradient, no weight decay, BatchNorm
            statistics fixed) for this many steps while the decoder learns, then
            trained; 0 trains it from the first step.
    """

    lr_scale: float = 1.0
    frozen_steps: int = 0

    def check(self, devices: int = 1) -> None:
        """Raise :class:`PersecError` for a setting that cannot run.

        Args:
            devices: training processes (a frozen phase is single-process only: DDP
                requires every parameter it wraps to receive a gradient each step).
        """
        if not self.lr_scale > 0:
            raise PersecError(f"encoder_tuning.lr_scale must be > 0, got {self.lr_scale}")
        if self.frozen_steps < 0:
            raise PersecError(f"encoder_tuning.frozen_steps must be >= 0, got {self.frozen_steps}")
        if self.frozen_steps and devices > 1:
            raise PersecError(
                "encoder_tuning.frozen_steps needs a single training process "
                f"(trainer.devices={devices}); use lr_scale alone under DDP"
            )


def encoder_param_groups(model: nn.Module, lr: float, lr_scale: float) -> list[dict]:
    """Optimiser parameter groups: everything but ``model.encoder`` at ``lr`` first (so
    ``param_groups[0]`` is the head's), then the encoder at ``lr * lr_scale``.

    Parameters that do not require a gradient are left out; an empty group is dropped.
    """
    encoder_ids = {id(p) for p in model.encoder.parameters()}
    head = [p for p in model.parameters() if p.requires_grad and id(p) not in encoder_ids]
    encoder = [p for p in model.encoder.parameters() if p.requires_grad]
    groups = [{"params": head, "lr": lr}, {"params": encoder, "lr": lr * lr_scale}]
    return [g for g in groups if g["params"]]


def set_encoder_trainable(encoder: nn.Module, trainable: bool) -> None:
    """Freeze (no gradient, eval mode: BatchNorm statistics fixed) or release an encoder."""
    encoder.requires_grad_(trainable)
    encoder.train(trainable)
