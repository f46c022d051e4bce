"""Cache keys of experiment cells: only settings away from the defaults are hashed, and a
cell's recorded settings are checked against the ones it would run with now."""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

from persec.experiment.keys import changed_fields, config_hash, stale_fields


@dataclass
class Inner:
    lr: float = 1e-3
    steps: int = 10


@dataclass
class Before:
    inner: Inner = field(default_factory=Inner)
    name: str = "a"
    output_dir: str = "runs/x"


@dataclass
class After(Before):
    """``Before`` with a switch added later, off by default."""

    new_switch: bool = False


def test_changed_fields_are_the_nested_differences() -> None:
    assert changed_fields(Before()) == {}
    config = Before(inner=Inner(steps=5), name="b")
    assert changed_fields(config) == {"inner": {"steps": 5}, "name": "b"}


def test_a_field_added_at_its_default_keeps_the_key() -> None:
    before, after = Before(inner=Inner(lr=3e-3)), After(inner=Inner(lr=3e-3))
    assert config_hash(before) == config_hash(after)
    after.new_switch = True
    assert config_hash(before) != config_hash(after)


def test_key_ignores_output_dir_and_depends_on_extra() -> None:
    a, b = Before(name="b"), Before(name="b", output_dir="elsewhere")
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(a, extra="scratch")
    assert config_hash(a) != config_hash(Before(name="c"))


def test_stale_fields_name_settings_that_changed(tmp_path) -> None:
    recorded = tmp_path / "config.yaml"
    recorded.write_text(
        yaml.safe_dump(
            {"inner": {"lr": 1e-3, "steps": 10, "gone": 1}, "name": "a", "output_dir": "old"}
        )
    )
    # A removed field ("gone"), an added one and the output folder are not changes.
    assert stale_fields(After(), recorded) == []
    assert stale_fields(After(inner=Inner(lr=2e-3)), recorded) == ["inner.lr: 0.001 -> 0.002"]


def test_settings_auto_now_match_what_a_run_settled(tmp_path) -> None:
    @dataclass
    class Trainer:
        precision: str = "auto"

    recorded = tmp_path / "config.yaml"
    recorded.write_text(yaml.safe_dump({"precision": "32-true"}))
    assert stale_fields(Trainer(), recorded) == []
    assert stale_fields(Trainer(precision="bf16-mixed"), recorded) == [
        "precision: '32-true' -> 'bf16-mixed'"
    ]


def test_how_often_a_run_checkpoints_is_not_part_of_the_key(tmp_path) -> None:
    """A grid may write resume points more often later (a slower machine) without
    re-keying its finished cells or calling them stale."""
    from persec.training.pretrain import PretrainConfig

    a, b = PretrainConfig(), PretrainConfig()
    b.trainer.checkpoint_every = 100
    assert config_hash(a) == config_hash(b)
    recorded = tmp_path / "config.yaml"
    recorded.write_text(yaml.safe_dump({"trainer": {"checkpoint_every": 0, "max_steps": 7}}))
    b.trainer.max_steps = 7
    assert stale_fields(b, recorded) == []
    b.trainer.max_steps = 8
    assert stale_fields(b, recorded) == ["trainer.max_steps: 7 -> 8"]
