"""Every YAML file in ``configs/`` loads with its command's schema: a misspelt key or
a wrong type in a committed recipe fails here, not an hour into ``make train-shipped``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from persec.config import load_config
from persec.experiment import ExperimentConfig
from persec.finetune import FinetuneConfig
from persec.pretrain import PretrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def schema_for(path: Path) -> type:
    """The schema of a config file, from its folder (or, in shipped/, its name)."""
    folder = path.parent.name
    if folder == "experiments":
        return ExperimentConfig
    kind = path.name if folder == "shipped" else folder
    if kind.startswith("pretrain"):
        return PretrainConfig
    if kind.startswith("finetune"):
        return FinetuneConfig
    raise AssertionError(f"no schema known for {path}")


FILES = sorted(CONFIGS.rglob("*.yaml"))


def test_configs_are_found():
    assert len(FILES) >= 10
    assert CONFIGS / "shipped" / "finetune-cpu-continue.yaml" in FILES


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_config_loads(path):
    config = load_config(schema_for(path), path)  # raises ConfigError on a bad key
    raw = yaml.safe_load(path.read_text())
    scalars = {k: v for k, v in raw.items() if not isinstance(v, dict | list)}
    for key, value in scalars.items():  # the file's values, not the defaults, are in force
        assert getattr(config, key) == value, key
