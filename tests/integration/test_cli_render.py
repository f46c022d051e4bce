"""Smoke tests of ``persec render``: LMDB layout, determinism across workers, errors."""

from __future__ import annotations

import io

import lmdb
import pytest
from PIL import Image

from persec.charset import Charset
from persec.cli import main


@pytest.fixture(autouse=True)
def font_cache(tmp_path_factory, monkeypatch):
    """Keep the font cache out of the user's home; one folder for the whole module."""
    monkeypatch.setenv("PERSEC_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "font-cache"))


def read_lmdb(path) -> list[tuple[bytes, str]]:
    """All (image bytes, label) pairs, read with the raw ``lmdb`` module."""
    env = lmdb.open(str(path), readonly=True, lock=False)
    try:
        with env.begin() as txn:
            n = int(txn.get(b"num-samples"))
            return [
                (txn.get(b"image-%09d" % i), txn.get(b"label-%09d" % i).decode())
                for i in range(1, n + 1)
            ]
    finally:
        env.close()


def test_render_smoke(tmp_path, capsys):
    out = tmp_path / "db"
    assert main(["render", "--out", str(out), "--n", "50", "--seed", "1"]) == 0
    assert "wrote 50 images" in capsys.readouterr().out
    samples = read_lmdb(out)
    assert len(samples) == 50
    charset = Charset.from_spec("62_mixed")
    for data, label in samples:
        image = Image.open(io.BytesIO(data))
        image.load()
        assert image.format == "PNG" and image.size == (128, 32)
        assert charset.check(label) == (label, None)
    assert (out / "render.yaml").is_file()

    # A second run into the same folder is a one-line error, not a traceback.
    assert main(["render", "--out", str(out), "--n", "5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("persec render: error:") and "already holds an LMDB" in err[-1]


def test_workers_do_not_change_the_output(tmp_path):
    args = ["render", "--n", "300", "--seed", "4", "--hard", "--split", "test"]
    assert main([*args, "--out", str(tmp_path / "pool"), "--workers", "2"]) == 0
    assert main([*args, "--out", str(tmp_path / "inproc"), "--workers", "0"]) == 0
    assert read_lmdb(tmp_path / "pool") == read_lmdb(tmp_path / "inproc")


def test_jpeg_and_overrides(tmp_path):
    out = tmp_path / "db"
    cmd = ["render", "--out", str(out), "--n", "8", "--format", "jpeg", "width=null", "height=48"]
    assert main(cmd) == 0
    for data, _ in read_lmdb(out):
        assert data[:2] == b"\xff\xd8"
        assert Image.open(io.BytesIO(data)).size[1] == 48


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--n", "0"], "--n must be at least 1"),
        (["--n", "5", "no_such_knob=1"], "no_such_knob"),
        (["--n", "5", "--config", "/nonexistent.yaml"], "config file not found"),
    ],
)
def test_user_errors(tmp_path, capsys, extra, message):
    assert main(["render", "--out", str(tmp_path / "db"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "db" / "data.mdb").exists()


def test_config_file(tmp_path):
    config = tmp_path / "synth.yaml"
    config.write_text("words:\n  p_word: 0\n  p_random: 0\n  p_number: 1\nwidth: 100\n")
    out = tmp_path / "db"
    assert main(["render", "--out", str(out), "--n", "20", "--config", str(config)]) == 0
    samples = read_lmdb(out)
    assert all(any(c.isdigit() for c in label) for _, label in samples)
    assert all(Image.open(io.BytesIO(data)).size == (100, 32) for data, _ in samples)
