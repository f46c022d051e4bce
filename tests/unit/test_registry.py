"""The registry behind the four extension axes: registration order, one name once,
and an unknown name answered with the known ones."""

from __future__ import annotations

import pytest

from persec.data.layout_registry import LAYOUTS
from persec.models.decoders.base import DECODERS
from persec.models.encoders.base import ENCODERS
from persec.objectives.registry import OBJECTIVES
from persec.registry import Registry


def test_register_get_and_refuse():
    reg: Registry[int] = Registry("widget")
    assert reg.register("b", 2) == 2 and reg.register("a", 1) == 1
    assert list(reg) == ["b", "a"] and reg.values() == [2, 1]  # registration order
    assert "a" in reg and "c" not in reg and reg["a"] == reg.get("a") == 1
    with pytest.raises(ValueError, match="widget 'a' registered twice"):
        reg.register("a", 3)
    with pytest.raises(ValueError, match="unknown widget 'c': use one of b, a"):
        reg.get("c")


def test_every_axis_is_filled_on_import():
    assert set(ENCODERS) == {"resnet", "vit"}
    assert set(DECODERS) == {"ctc", "attn"}
    assert set(OBJECTIVES) == {"persec", "seqclr"}
    import persec.data.layouts  # noqa: F401  (imports every reader, which registers)

    assert set(LAYOUTS) == {"folder", "lmdb", "iam", "cvl", "images"}
