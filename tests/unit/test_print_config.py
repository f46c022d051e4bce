"""``--print-config``: the merged configuration as YAML with each field's help, which
``load_config`` reads back to the same config."""

from __future__ import annotations

import dataclasses

import pytest

from persec.cli import main
from persec.config import describe_config, field_help, load_config
from persec.data.render.config import SynthConfig
from persec.experiment.grid import ExperimentConfig
from persec.training.finetune import FinetuneConfig
from persec.training.pretrain import PretrainConfig


@pytest.mark.parametrize("schema", [PretrainConfig, FinetuneConfig, ExperimentConfig, SynthConfig])
def test_printed_config_loads_back_equal(tmp_path, schema):
    config = load_config(
        schema, overrides=["output_dir=runs/x"] if schema is not SynthConfig else []
    )
    path = tmp_path / "printed.yaml"
    path.write_text(describe_config(config) + "\n")
    assert load_config(schema, path) == config


@pytest.mark.parametrize("schema", [PretrainConfig, FinetuneConfig, ExperimentConfig])
def test_every_field_has_help(schema):
    def missing(config, prefix=""):
        helps = field_help(type(config))
        for f in dataclasses.fields(config):
            if f.name not in helps:
                yield prefix + f.name
            value = getattr(config, f.name)
            if dataclasses.is_dataclass(value):
                yield from missing(value, f"{prefix}{f.name}.")

    assert list(missing(schema())) == []


def test_field_help_reads_wrapped_entries_and_inherits():
    @dataclasses.dataclass
    class Base:
        """A base.

        Attributes:
            alpha: the first
                field, wrapped. More text.
        """

        alpha: int = 1

    @dataclasses.dataclass
    class Child(Base):
        """A child.

        Attributes:
            beta (int): the second.
            gamma, delta: two at once.

        Raises:
            nothing: not an attribute.
        """

        beta: int = 2
        gamma: tuple[int, int] = (1, 2)
        delta: str = "e.g. this"

    assert field_help(Child) == {
        "alpha": "the first field, wrapped.",
        "beta": "the second.",
        "gamma": "two at once.",
        "delta": "two at once.",
    }
    assert describe_config(Child()).splitlines() == [
        "alpha: 1  # the first field, wrapped.",
        "beta: 2  # the second.",
        "gamma: [1, 2]  # two at once.",
        "delta: e.g. this  # two at once.",
    ]


def test_cli_prints_overrides_and_does_no_work(capsys, tmp_path):
    code = main(
        ["pretrain", "--print-config", f"output_dir={tmp_path / 'run'}", "trainer.max_steps=7"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "  max_steps: 7  # " in out and f"output_dir: {tmp_path / 'run'}" in out
    assert not (tmp_path / "run").exists()
