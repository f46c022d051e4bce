"""Where the shipped model lives.

It is package data (``persec/shipped/persec-small``: ``config.json`` and
``model.safetensors``), so it is found the same way from a checkout, an editable
install or a wheel. The environment variable ``PERSEC_MODEL`` names another model
directory to use whenever a command is given no ``--model``.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

SHIPPED_MODEL = "persec-small"
ENV_VAR = "PERSEC_MODEL"


def default_model_dir() -> Path:
    """The model used when none is named: ``$PERSEC_MODEL`` if set, else the shipped one.

    The path is returned whether or not it exists;
    :func:`persec.inference.model.load_model` checks.
    """
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override)
    return Path(str(resources.files("persec").joinpath("shipped", SHIPPED_MODEL)))
