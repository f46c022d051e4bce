"""The pretraining objectives by name (``persec pretrain objective=NAME``).

An objective is an ``nn.Module`` built from the encoder it trains and its own config
section (``PretrainConfig.<name>``); calling it on a batch of images returns its loss
and logs. Adding one is a module in this package that calls :func:`register_objective`,
its name in ``persec/objectives/__init__.py``, and its config section in
``PretrainConfig``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from persec.registry import Registry

OBJECTIVES: Registry[Callable[[nn.Module, Any], nn.Module]] = Registry("objective")


def register_objective(name: str, build: Callable[[nn.Module, Any], nn.Module]) -> None:
    """Make ``build(encoder, config_section)`` the objective called ``name``."""
    OBJECTIVES.register(name, build)


def build_objective(name: str, encoder: nn.Module, config: Any) -> nn.Module:
    """The objective ``name`` for ``encoder``. Raises ValueError for an unknown name."""
    if name not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {name!r}")
    return OBJECTIVES[name](encoder, config)
