"""Weight averaging (`persec average`, `Recognizer.average`, `average_states`): the mean
of known tensors, integer counters kept, mismatches refused with the offending name."""

from __future__ import annotations

import json
import re

import pytest
import torch
from tiny import images, tiny_recognizer

from persec.errors import PersecError
from persec.models.recognizer import CONFIG, WEIGHTS, Recognizer
from persec.weights import average_states


def test_average_states_hand_computed():
    a = {
        "w": torch.tensor([1.0, 2.0]),
        "n": torch.tensor(5),
        "h": torch.tensor([1.0], dtype=torch.bfloat16),
    }
    b = {
        "w": torch.tensor([3.0, 6.0]),
        "n": torch.tensor(9),
        "h": torch.tensor([2.0], dtype=torch.bfloat16),
    }
    c = {
        "w": torch.tensor([2.0, 1.0]),
        "n": torch.tensor(1),
        "h": torch.tensor([3.0], dtype=torch.bfloat16),
    }
    out = average_states([a, b, c], ["a", "b", "c"])
    assert torch.equal(out["w"], torch.tensor([2.0, 3.0]))
    assert out["n"].item() == 5 and out["n"].dtype == torch.int64  # counters: the first's
    assert out["h"].dtype == torch.bfloat16 and out["h"].item() == 2.0
    assert a["w"].tolist() == [1.0, 2.0]  # inputs untouched


@pytest.mark.parametrize(
    "other, message",
    [
        ({"w": torch.zeros(2), "x": torch.zeros(1)}, "b and a hold different tensors (e.g. x)"),
        ({"w": torch.zeros(3)}, "w is (3,) torch.float32 in b but (2,) torch.float32 in a"),
        ({"w": torch.zeros(2, dtype=torch.float64)}, "w is (2,) torch.float64 in b"),
    ],
)
def test_average_states_refuses_mismatches(other, message):
    with pytest.raises(PersecError, match=re.escape(message)):
        average_states([{"w": torch.zeros(2)}, other], ["a", "b"])


def test_average_states_needs_two():
    with pytest.raises(PersecError, match="at least 2 models, got 1"):
        average_states([{"w": torch.zeros(2)}], ["a"])


def test_recognizer_average_is_the_mean_and_averaging_copies_is_identity(tmp_path):
    dirs = [tiny_recognizer(seed=s).save(tmp_path / f"m{s}") for s in range(3)]
    states = [Recognizer.load(d).state_dict() for d in dirs]
    soup = Recognizer.average(dirs)
    for key, value in soup.state_dict().items():
        if value.is_floating_point():
            expected = (
                states[0][key].double() + states[1][key].double() + states[2][key].double()
            ) / 3
            torch.testing.assert_close(value, expected.float(), rtol=0, atol=1e-7)
        else:
            assert torch.equal(value, states[0][key])
    assert not soup.training

    # The average of a model with itself is that model: same logits.
    same = Recognizer.average([dirs[0], dirs[0]])
    with torch.no_grad():
        assert torch.equal(same(images()), Recognizer.load(dirs[0])(images()))


def test_recognizer_average_refuses_different_configs(tmp_path):
    a = tiny_recognizer().save(tmp_path / "a")
    b = tiny_recognizer(charset="62_mixed").save(tmp_path / "b")  # other charset, other head size
    with pytest.raises(PersecError, match=r"differ in their config \('charset'\)"):
        Recognizer.average([a, b])
    # Same tensor shapes, other config: still refused (dropout is in the config).
    c = tiny_recognizer().save(tmp_path / "c")
    config = json.loads((c / CONFIG).read_text())
    config["decoder"]["dropout"] = 0.3
    (c / CONFIG).write_text(json.dumps(config))
    with pytest.raises(PersecError, match=r"differ in their config \('decoder'\)"):
        Recognizer.average([a, c])
    # Decoding settings are not architecture: they may differ; the first model's stay.
    d = tiny_recognizer().save(tmp_path / "d")
    config = json.loads((d / CONFIG).read_text())
    config["decoder"].update(beam_width=5, length_bonus=1.0)
    (d / CONFIG).write_text(json.dumps(config))
    assert Recognizer.average([d, a]).config.decoder.beam_width == 5
    assert Recognizer.average([a, d]).config.decoder.beam_width == 0


def test_cli_average_writes_a_loadable_model_and_refuses_bad_calls(tmp_path, run_cli):
    a, b = (
        tiny_recognizer(seed=0).save(tmp_path / "a"),
        tiny_recognizer(seed=1).save(tmp_path / "b"),
    )
    out = tmp_path / "soup"
    code, stdout, err = run_cli(["average", str(a), str(b), "--out", str(out)])
    assert code == 0, err
    assert "wrote the average of 2 models" in stdout
    assert sorted(p.name for p in out.iterdir()) == sorted([WEIGHTS, CONFIG])
    expected = Recognizer.average([a, b]).state_dict()
    for key, value in Recognizer.load(out).state_dict().items():
        assert torch.equal(value, expected[key]), key

    code, _, err = run_cli(["average", str(a), str(b), "--out", str(out)])
    assert code == 2 and "already holds a model (--force overwrites it)" in err
    assert run_cli(["average", str(a), str(b), "--out", str(out), "--force"])[0] == 0
    code, _, err = run_cli(["average", str(a), "--out", str(tmp_path / "x")])
    assert code == 2 and "at least 2 models, got 1" in err
    code, _, err = run_cli(["average", str(a), str(b), "--out", str(a)])
    assert code == 2 and "is one of the models being averaged" in err
    code, _, err = run_cli(
        ["average", str(a), str(tmp_path / "missing"), "--out", str(tmp_path / "y")]
    )
    assert code == 2 and "config.json not found" in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
