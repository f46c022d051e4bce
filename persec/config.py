"""Typed configs: dataclasses are the single source of defaults; YAML files and
``key=value`` overrides are merged onto them. An unknown key or a wrong type is a
:class:`~persec.errors.ConfigError` that names the key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from persec.errors import ConfigError

T = TypeVar("T")


def _describe(e: OmegaConfBaseException) -> str:
    key = getattr(e, "full_key", None)
    msg = str(e).splitlines()[0]
    return f"{key}: {msg}" if key else msg


def load_config(
    schema: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()
) -> T:
    """Build a ``schema`` instance from its defaults, a YAML file and dotted overrides.

    Args:
        schema: a dataclass type whose fields (and nested dataclasses) are the config.
        path: optional YAML file merged onto the defaults.
        overrides: ``key=value`` strings, e.g. ``trainer.max_steps=100``, applied last.

    Raises:
        ConfigError: missing file, invalid YAML, unknown key or wrong type.
    """
    base = OmegaConf.structured(schema)
    layers: list[Any] = []
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at top level, got {type(data).__name__}")
        layers.append(data)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"override {bad[0]!r} is not of the form key=value")
    try:
        if overrides:
            layers.append(OmegaConf.from_dotlist(list(overrides)))
        merged = OmegaConf.merge(base, *layers)
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        where = f" (in {path})" if path is not None else ""
        raise ConfigError(f"bad config{where}: {_describe(e)}") from e


def load_config_dict(schema: type[T], data: dict, source: str = "config") -> T:
    """Build a ``schema`` instance from a plain dict (e.g. a saved ``config.json``).

    Raises:
        ConfigError: unknown key or wrong type, naming the key and ``source``.
    """
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), data)
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        raise ConfigError(f"bad config in {source}: {_describe(e)}") from e


def to_dict(config: Any) -> dict:
    """A plain dict of a config dataclass (for logging and ``config.json``)."""
    if isinstance(config, DictConfig):
        return OmegaConf.to_container(config, resolve=True)  # type: ignore[return-value]
    return dataclasses.asdict(config)


def save_config(config: Any, path: str | Path) -> None:
    """Write a config dataclass as YAML (the form ``load_config`` reads back)."""
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
