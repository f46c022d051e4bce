"""Every YAML file in ``configs/`` loads with its command's schema: a misspelt key or
a wrong type in a committed recipe fails here, not an hour into ``make train-shipped``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tiny import REPO

from persec.config import load_config
from persec.experiment import ExperimentConfig
from persec.training.finetune import FinetuneConfig
from persec.training.pretrain import PretrainConfig

CONFIGS = REPO / "configs"


def schema_for(path: Path) -> type:
    """The schema of a config file, from its folder (or, in a recipe, its step's name)."""
    folder = path.parent.name
    if folder == "experiments":
        return ExperimentConfig
    kind = path.name.split("-", 1)[1] if path.parent.parent.name == "recipes" else folder
    if kind.startswith("pretrain"):
        return PretrainConfig
    if kind.startswith("finetune"):
        return FinetuneConfig
    raise AssertionError(f"no schema known for {path}")


FILES = sorted(CONFIGS.rglob("*.yaml"))


def test_configs_are_found():
    assert len(FILES) >= 10
    assert CONFIGS / "recipes" / "persec-small" / "4-finetune.yaml" in FILES


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_config_loads(path):
    config = load_config(schema_for(path), path)  # raises ConfigError on a bad key
    raw = yaml.safe_load(path.read_text())
    raw.pop("base", None)
    scalars = {k: v for k, v in raw.items() if not isinstance(v, dict | list)}
    for key, value in scalars.items():  # the file's values, not the defaults, are in force
        assert getattr(config, key) == value, key


def test_recipe_steps_are_numbered_and_based_on_earlier_steps():
    for recipe in sorted((CONFIGS / "recipes").iterdir()):
        steps = sorted(recipe.glob("*.yaml"))
        assert steps and steps[0].name.startswith("1-"), recipe
        for step in steps:
            number, command = step.stem.split("-", 1)
            assert number[0].isdigit() and command in ("pretrain", "finetune"), step
            base = yaml.safe_load(step.read_text()).get("base")
            if base is not None:  # a step starts from an earlier one
                assert (recipe / base).is_file() and base < step.name, step
            config = load_config(schema_for(step), step)
            assert config.output_dir.endswith("/" + step.stem), step  # the Makefile's folders


def test_base_merges_under_the_file_and_rejects_cycles(tmp_path):
    from persec.errors import ConfigError

    (tmp_path / "a.yaml").write_text("trainer: {max_steps: 5, seed: 3}\noutput_dir: runs/a\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\ntrainer: {max_steps: 7}\n")
    config = load_config(FinetuneConfig, tmp_path / "b.yaml", ["trainer.seed=9"])
    assert (config.trainer.max_steps, config.trainer.seed, config.output_dir) == (7, 9, "runs/a")
    (tmp_path / "bad.yaml").write_text("trainer: {max_stepz: 5}\n")
    (tmp_path / "d.yaml").write_text("base: bad.yaml\n")
    with pytest.raises(ConfigError, match="in .*d.yaml or a file it is based on.*max_stepz"):
        load_config(FinetuneConfig, tmp_path / "d.yaml")
    with pytest.raises(ConfigError, match=r"in .*bad.yaml\): .*max_stepz"):
        load_config(FinetuneConfig, tmp_path / "bad.yaml", ["trainer.seed=1"])
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    with pytest.raises(ConfigError, match="base cycle"):
        load_config(FinetuneConfig, tmp_path / "b.yaml")
    (tmp_path / "c.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(ConfigError, match="not found"):
        load_config(FinetuneConfig, tmp_path / "c.yaml")
