"""Typed configs: dataclasses are the single source of defaults; YAML files and
``key=value`` overrides are merged onto them. An unknown key or a wrong type is a
:class:`~persec.errors.ConfigError` that names the key.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
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
        path: optional YAML file merged onto the defaults. A file may start from another
            with ``base: OTHER.yaml`` (relative to it), stating only what differs.
        overrides: ``key=value`` strings, e.g. ``trainer.max_steps=100``, applied last.

    Raises:
        ConfigError: missing file, invalid YAML, unknown key or wrong type.
    """
    base = OmegaConf.structured(schema)
    layers: list[Any] = [] if path is None else read_yaml_layers(Path(path))
    based = len(layers) > 1  # the file starts from another (base:)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"override {bad[0]!r} is not of the form key=value")
    try:
        if overrides:
            layers.append(OmegaConf.from_dotlist(list(overrides)))
        merged = OmegaConf.merge(base, *layers)
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        where = ""
        if path is not None:  # the key may sit in a file the config is based on
            where = f" (in {path}{' or a file it is based on' if based else ''})"
        raise ConfigError(f"bad config{where}: {_describe(e)}") from e


def read_yaml_layers(path: Path, _seen: tuple[Path, ...] = ()) -> list[dict]:
    """The mappings a config file stands for, in merge order: its ``base:`` chain
    first (each path relative to the file naming it), then the file without ``base``.

    Raises:
        ConfigError: a missing file, invalid YAML, a non-mapping, or a ``base`` cycle.
    """
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path.resolve()))
        raise ConfigError(f"config base cycle: {chain}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at top level, got {type(data).__name__}")
    parent = data.pop("base", None)
    if parent is None:
        return [data]
    if not isinstance(parent, str) or not parent:
        raise ConfigError(f"{path}: base must be a path to another config file, got {parent!r}")
    return [*read_yaml_layers(path.parent / parent, (*_seen, path.resolve())), data]


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


def leaves(data: dict, prefix: str = "") -> dict[str, Any]:
    """A nested dict (e.g. from :func:`to_dict`) as ``{"dotted.key": value}``, one entry
    per non-dict value, each key behind ``prefix``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def save_config(config: Any, path: str | Path) -> None:
    """Write a config dataclass as YAML (the form ``load_config`` reads back)."""
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def field_help(schema: type) -> dict[str, str]:
    """Each field of a config dataclass → the first line of its entry under
    ``Attributes:`` in the class docstring (base classes' entries too)."""
    helps: dict[str, str] = {}
    for cls in reversed(schema.__mro__):
        doc = inspect.getdoc(cls) if dataclasses.is_dataclass(cls) else None
        if not doc or "Attributes:" not in doc:
            continue
        section = doc.split("Attributes:", 1)[1]
        names: list[str] = []
        for line in section.splitlines():
            # "name: help", "name (type): help", or grouped: "a, b: help" / "a / b: help"
            match = re.match(r"^ {4}(\w+(?:(?:, | / )\w+)*)(?: \([^)]*\))?: (.*)$", line)
            if match:
                names = re.split(r", | / ", match.group(1))
                for name in names:
                    helps[name] = match.group(2).strip()
            elif names and line.startswith(" " * 8):
                for name in names:
                    helps[name] += " " + line.strip()  # a wrapped entry
            elif line.strip() and not line.startswith(" "):
                break  # the next section
    for name, text in helps.items():  # the first sentence
        sentence = re.split(r"(?<!e\.g\.)(?<!i\.e\.)(?<=\.)\s", text, maxsplit=1)[0]
        helps[name] = sentence if len(sentence) <= 110 else sentence[:107] + "..."
    return helps


def describe_config(config: Any, indent: int = 0) -> str:
    """A config dataclass as YAML that ``load_config`` reads back, each key followed by
    its one-line help (:func:`field_help`) as a comment: ``--print-config``."""
    helps = field_help(type(config))
    lines = []
    pad = " " * indent
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        comment = f"  # {helps[f.name]}" if f.name in helps else ""
        if dataclasses.is_dataclass(value):
            lines.append(f"{pad}{f.name}:{comment}")
            lines.append(describe_config(value, indent + 2))
        else:
            text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
            text = text.removesuffix("\n...").removesuffix("...").strip()
            lines.append(f"{pad}{f.name}: {text}{comment}")
    return "\n".join(lines)
