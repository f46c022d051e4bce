"""The optimiser and its learning-rate schedule, shared by pretraining and fine-tuning."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule.

    Attributes:
        name: ``sgd`` [paper, fine-tuning], ``adam`` [paper, pretraining] or ``adamw``.
        lr: peak learning rate (5e-3 for fine-tuning [paper]).
        momentum: SGD momentum [ours].
        weight_decay: decoupled for adamw, L2 otherwise.
        schedule: ``cosine`` (decay to ``min_lr_ratio``·lr after warm-up) [ours] or ``constant``.
        warmup_steps: linear warm-up from 0.
        min_lr_ratio: floor of the cosine schedule relative to ``lr``.
        grad_clip: max gradient norm (0 = off).
    """

    name: str = "sgd"
    lr: float = 5e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.01
    grad_clip: float = 5.0


# Devices with fused (one kernel per parameter) SGD/Adam/AdamW kernels in torch 2.13.
_FUSED_DEVICES = ("cpu", "cuda")


def _are_groups(params: list) -> bool:
    """Whether ``params`` are parameter groups (dicts with ``"params"``), not tensors."""
    return bool(params) and isinstance(params[0], dict)


def build_optimizer(params, config: OptimConfig, fused: bool = True) -> torch.optim.Optimizer:
    """The optimiser named by ``config``.

    With ``fused``, fused kernels when every parameter is a floating-point tensor on the
    CPU or a CUDA GPU (the systems pass False under a GradScaler, i.e. fp16): on CPU
    torch's default is a Python loop over the parameters, which took 14-27 ms per AdamW
    step of the shipped model where the fused kernel takes 4-7 ms
    (docs/throughput.md). Same update up to float rounding (~1e-8 after 20 steps).
    """
    params = list(params)  # tensors, or parameter groups (dicts with "params")
    tensors = [t for g in params for t in g["params"]] if _are_groups(params) else params
    fused = (
        fused
        and bool(tensors)
        and all(p.device.type in _FUSED_DEVICES and p.is_floating_point() for p in tensors)
    )
    kwargs = {"lr": config.lr, "weight_decay": config.weight_decay, "fused": fused or None}
    if config.name == "sgd":
        return torch.optim.SGD(params, momentum=config.momentum, **kwargs)
    if config.name == "adam":
        return torch.optim.Adam(params, **kwargs)
    if config.name == "adamw":
        return torch.optim.AdamW(params, **kwargs)
    raise ValueError(f"optim.name must be sgd, adam or adamw, got {config.name!r}")


def lr_factor(step: int, total: int, config: OptimConfig) -> float:
    """Multiplier of ``config.lr`` at ``step`` (warm-up, then cosine or constant)."""
    if config.warmup_steps and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    if config.schedule != "cosine":
        raise ValueError(f"optim.schedule must be cosine or constant, got {config.schedule!r}")
    span = max(1, total - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    floor = config.min_lr_ratio
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def optimizer_and_schedule(params, config: OptimConfig, max_steps: int, fused: bool = True) -> dict:
    """Lightning's ``configure_optimizers`` answer: the optimiser over the trainable
    ``params`` (tensors, or parameter groups whose own ``lr`` the schedule scales;
    ``fused``: as :func:`build_optimizer`) and a per-step warm-up + cosine/constant
    schedule."""
    params = list(params)
    if not _are_groups(params):
        params = [p for p in params if p.requires_grad]
    optimizer = build_optimizer(params, config, fused)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, max_steps, config)
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
