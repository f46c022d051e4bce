"""Safe weight files: safetensors for tensors, JSON for configs, never pickle.

Shared by saved recognizers, encoders and pretraining perceivers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from persec.errors import PersecError


def write_module(
    module: nn.Module, config: dict[str, Any], directory: Path, weights: str, config_name: str
) -> None:
    """Write a module's tensors (safetensors) and its config (JSON) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(state, str(directory / weights))
    (directory / config_name).write_text(json.dumps(config, indent=2) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; a missing, unreadable or non-object file is a
    :class:`~persec.errors.PersecError`."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise PersecError(f"{path} not found") from e
    except (OSError, ValueError) as e:
        raise PersecError(f"cannot read {path}: {e}") from e
    if not isinstance(data, dict):
        raise PersecError(f"{path}: expected a JSON object")
    return data


def read_safetensors(path: Path, map_location: str) -> dict[str, torch.Tensor]:
    """The tensors in the safetensors file ``path``, loaded onto ``map_location``; a
    missing or invalid file is a :class:`~persec.errors.PersecError`."""
    if not path.is_file():
        raise PersecError(f"weights file {path} not found")
    try:
        return load_file(str(path), device=map_location)
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise PersecError(f"{path} is not a valid safetensors file: {e}") from e


def load_state(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load with a one-line error naming missing, unexpected or mis-shaped tensors."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensors (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} tensors (e.g. {unexpected[0]})")
    if shapes:
        problems.append(
            f"shape mismatch: {shapes[0]}"
            + (f" and {len(shapes) - 1} more" if len(shapes) > 1 else "")
        )
    if problems:
        raise PersecError(f"weights in {source} do not fit the architecture: {'; '.join(problems)}")
    module.load_state_dict(state)


def average_states(
    states: list[dict[str, torch.Tensor]], sources: list[str]
) -> dict[str, torch.Tensor]:
    """Uniform average of state dicts with the same tensors (a "model soup").

    Floating-point tensors are averaged in float64 and cast back to their dtype; integer
    tensors (BatchNorm's ``num_batches_tracked`` counters) are taken from the first
    state. ``sources`` names each state in errors.

    Raises:
        PersecError: fewer than two states, or their tensor names, shapes or dtypes differ.
    """
    if len(states) < 2:
        raise PersecError(f"averaging needs at least 2 models, got {len(states)}")
    first, name = states[0], sources[0]
    for state, source in zip(states[1:], sources[1:], strict=True):
        if set(state) != set(first):
            extra = sorted(set(state) ^ set(first))
            raise PersecError(
                f"{source} and {name} hold different tensors (e.g. {extra[0]}): "
                "only models of the same architecture can be averaged"
            )
        for key, tensor in first.items():
            other = state[key]
            if other.shape != tensor.shape or other.dtype != tensor.dtype:
                raise PersecError(
                    f"{key} is {tuple(other.shape)} {other.dtype} in {source} but "
                    f"{tuple(tensor.shape)} {tensor.dtype} in {name}"
                )
    averaged = {}
    for key, tensor in first.items():
        if tensor.is_floating_point():
            total = torch.stack([state[key].double() for state in states]).mean(dim=0)
            averaged[key] = total.to(tensor.dtype)
        else:
            averaged[key] = tensor.clone()
    return averaged
