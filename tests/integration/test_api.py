"""The public API of :mod:`persec`: its docstring example runs as written, and the
package imports without loading the library."""

from __future__ import annotations

import doctest
import subprocess
import sys

import pytest
from tiny import REPO

import persec

DEMO = REPO.parent / "shared" / "data" / "real_demo"


@pytest.mark.skipif(not DEMO.is_dir(), reason="needs ../shared/data/real_demo")
def test_docstring_example_runs(monkeypatch):
    monkeypatch.chdir(REPO)  # the example's paths are relative to the repository root
    monkeypatch.delenv("PERSEC_MODEL", raising=False)
    result = doctest.testmod(persec, optionflags=doctest.ELLIPSIS, raise_on_error=False)
    assert result.attempted >= 4 and result.failed == 0


def test_import_is_cheap_and_names_resolve():
    code = (
        "import sys, persec; heavy = [m for m in ('torch', 'lightning') if m in sys.modules];"
        "print(heavy, persec.__version__, callable(persec.read))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("[] 0.1.0 True"), out


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        persec.nope  # noqa: B018


def test_env_var_names_another_model(monkeypatch, tmp_path):
    from persec.errors import PersecError

    monkeypatch.setenv("PERSEC_MODEL", str(tmp_path / "missing"))
    with pytest.raises(PersecError, match=str(tmp_path / "missing")):
        persec.load_model()
