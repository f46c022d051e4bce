"""Cache keys of a grid's cells, and the check that a cached cell still matches.

A cell's folder name ends in a hash of its resolved config. Only the settings that
differ from the config class's defaults are hashed, so a field added to a config later
(at a default that keeps the old behaviour, as every ``[ours]`` switch has) leaves the
keys of cells already run unchanged: a grid that runs over many sittings keeps its
finished cells when the code grows. The other way round, a default changed in code
would leave a key unchanged while the cell would now run differently; :func:`stale_fields`
catches that by comparing the config a cell recorded (``config.yaml``) with the one it
would run with now.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from persec.config import leaves, to_dict

AUTO = "auto"

# Settings that do not change what a cell computes (a fine-tune's encoder source is
# keyed apart: its ``init_encoder`` path is set from it after the hash; how often a
# run writes the checkpoint it resumes from changes nothing it learns, since a resume
# restores the random state too).
IGNORED = ("output_dir", "resume", "trainer.progress", "trainer.checkpoint_every", "init_encoder")


def _drop_ignored(data: dict) -> dict:
    for dotted in IGNORED:
        *parents, leaf = dotted.split(".")
        node = data
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
            if not node and parents:  # a section left with no change is no change
                _drop_empty(data, parents)
    return data


def _drop_empty(data: dict, path: list[str]) -> None:
    """Remove the empty dict at ``path`` and any parents it leaves empty."""
    while path:
        *parents, leaf = path
        node = data
        for key in parents:
            node = node[key]
        if node.get(leaf) != {}:
            return
        del node[leaf]
        path = parents


def _diff(data: dict, default: dict) -> dict:
    out = {}
    for key, value in data.items():
        base = default.get(key, _MISSING)
        if isinstance(value, dict) and isinstance(base, dict) and value.keys() == base.keys():
            inner = _diff(value, base)
            if inner:
                out[key] = inner
        elif value != base:
            out[key] = value
    return out


_MISSING = object()


def changed_fields(config: Any) -> dict:
    """The settings of a config dataclass that differ from its class's defaults, as a
    nested dict (an OmegaConf config, which has no class defaults, is returned whole)."""
    data = to_dict(config)
    if not dataclasses.is_dataclass(config):
        return data
    return _diff(data, to_dict(type(config)()))


def key_json(config: Any) -> str:
    """:func:`changed_fields` as canonical JSON, the ignored settings left out."""
    return json.dumps(_drop_ignored(changed_fields(config)), sort_keys=True, default=str)


def config_hash(config: Any, extra: str = "") -> str:
    """Short stable hash of what a resolved config changes from its defaults (the
    settings in ``IGNORED`` left out, since they do not change the result), plus
    ``extra`` (what the cell depends on besides its config)."""
    return hashlib.sha256((key_json(config) + extra).encode()).hexdigest()[:10]


def stale_fields(config: Any, recorded: str | Path) -> list[str]:
    """``"key: recorded -> now"`` for each setting a cell recorded in its
    ``config.yaml`` that the config it would run with now sets differently (settings
    only one side has are skipped: fields added or removed since; so are settings
    ``auto`` now, which a run records as what it settled them to, e.g. the precision)."""
    then = leaves(_drop_ignored(yaml.safe_load(Path(recorded).read_text()) or {}))
    now = leaves(_drop_ignored(to_dict(config)))
    return [
        f"{key}: {then[key]!r} -> {now[key]!r}"
        for key in sorted(then.keys() & now.keys())
        if now[key] != AUTO and _normal(then[key]) != _normal(now[key])
    ]


def _normal(value: Any) -> Any:
    """YAML reads tuples back as lists and may store paths as strings."""
    if isinstance(value, tuple | list):
        return [_normal(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
