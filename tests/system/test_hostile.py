"""Hostile inputs end to end: corrupt images and labels are skipped and counted by
reason, malformed LMDBs and configs fail with a one-line error naming the problem, and
no weight file is ever unpickled (a payload that would run code is refused unrun)."""

from __future__ import annotations

import ast
import io
import pickle
import struct
import zlib
from collections import Counter
from pathlib import Path

import pytest
import torch
from factories import (
    TEXT,
    _chunk,
    jpeg,
    parseq_entries,
    png,
    truncated_png,
    write_gt_folder,
    write_raw_lmdb,
)
from PIL import Image
from tiny import FINETUNE_TINY, PRETRAIN_TINY, REPO
from torch.utils.data import DataLoader

from persec.charset import CONTROL_CHARS
from persec.config import load_config
from persec.data.dataset import (
    LABEL_NOT_UTF8,
    MISSING_FILE,
    MISSING_KEY,
    UNDECODABLE,
    SkipReport,
    collate_samples,
)
from persec.data.layouts import open_dataset
from persec.data.lmdb import LmdbDataset
from persec.errors import DataError, PersecError
from persec.image import DEFAULT_MAX_PIXELS, ImageConfig, ImageDecodeError, ToTensor, decode_image

PACKAGE = REPO / "persec"


# ---------------------------------------------------------------- hostile samples
def bitonal_png(width: int, height: int) -> bytes:
    """A complete, valid 1-bit PNG of white pixels.

    All-zero rows deflate ~1000:1, so 8000 × 8000 (64 MP, over the 50 MP cap and
    under PIL's own 89 MP limit) is ~8 KB on disk and ~190 MB once decoded to RGB.
    """
    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(row * height, 9))
        + _chunk(b"IEND", b"")
    )


BOMB = bitonal_png(8000, 8000)


def test_bitonal_bomb_is_a_real_image_refused_from_its_header():
    # The generator makes valid PNGs: a small one decodes, the big one opens in PIL.
    assert decode_image(bitonal_png(37, 5)).size == (37, 5)
    assert len(BOMB) < 16_000 and 8000 * 8000 > DEFAULT_MAX_PIXELS
    assert Image.open(io.BytesIO(BOMB)).size == (8000, 8000)
    with pytest.raises(ImageDecodeError, match="8000x8000 pixels exceeds the limit"):
        decode_image(BOMB)


# Image hazards (found when read) and label hazards (found at init), with a good
# PNG and a good JPEG among them. LMDB labels are bytes, so they may be invalid UTF-8.
IMAGE_HAZARDS: list[tuple[bytes, str]] = [
    (png(seed=1), "good"),
    (truncated_png(2), "truncated"),
    (b"", "zerobyte"),
    (TEXT, "notanimage"),
    (BOMB, "bomb"),
    (jpeg(), "Also Good"),
]
CONTROL_LABELS = ["bel\x07l", "nul\x00", "zero\u200bwidth", "esc\x1b[31m"]
NOT_UTF8_LABELS = [b"caf\xe9", b"\xed\xa0\x80", b"\xff\xfe"]  # latin-1, surrogate, BOM-ish
KEPT_LABELS = ["good", "alsogood"]


def _iterate(dataset) -> tuple[list[str | None], Counter[str]]:
    """Every usable label and the read-time skips, through a DataLoader."""
    loader = DataLoader(dataset, batch_size=3, collate_fn=collate_samples)
    labels: list[str | None] = []
    skipped: Counter[str] = Counter()
    for images, batch_labels, batch_skipped in loader:
        if batch_labels:
            assert images.shape == (len(batch_labels), 3, 32, 128)
        labels += batch_labels
        skipped += batch_skipped
    return labels, skipped


def test_hostile_lmdb_skips_and_counts_every_hazard_by_reason(tmp_path):
    good = png(seed=9)
    entries = parseq_entries(IMAGE_HAZARDS + [(good, label) for label in CONTROL_LABELS])
    n = len(IMAGE_HAZARDS) + len(CONTROL_LABELS)
    for i, raw in enumerate(NOT_UTF8_LABELS, start=n + 1):
        entries[b"image-%09d" % i] = good
        entries[b"label-%09d" % i] = raw
    n += len(NOT_UTF8_LABELS)
    entries[b"image-%09d" % (n + 1)] = good  # its label is missing
    entries[b"label-%09d" % (n + 2)] = b"orphan"  # its image is missing
    n += 2
    entries[b"num-samples"] = str(n).encode()
    write_raw_lmdb(tmp_path / "hostile", entries)

    ds = LmdbDataset(
        tmp_path / "hostile", charset="36_lowercase", transform=ToTensor(ImageConfig())
    )
    assert dict(ds.report.counts) == {
        CONTROL_CHARS: len(CONTROL_LABELS),
        LABEL_NOT_UTF8: len(NOT_UTF8_LABELS),
        MISSING_KEY: 2,
    }
    assert ds.report.kept == len(ds) == len(IMAGE_HAZARDS)
    labels, skipped = _iterate(ds)
    assert labels == KEPT_LABELS
    assert skipped == Counter({UNDECODABLE: 4})
    # The sources of the first few skips are kept, to find them.
    assert ds.report.examples[LABEL_NOT_UTF8][0] == f"{tmp_path / 'hostile'}:image-000000011"


def test_hostile_folder_skips_and_counts_every_hazard_by_reason(tmp_path):
    root = tmp_path / "hostile"
    good = png(seed=9)
    write_gt_folder(
        root,
        IMAGE_HAZARDS + [(good, label) for label in CONTROL_LABELS],
        missing=("images/gone.png",),
    )
    ds = open_dataset(root, charset="36_lowercase", transform=ToTensor(ImageConfig()))
    assert dict(ds.report.counts) == {
        CONTROL_CHARS: len(CONTROL_LABELS),
        MISSING_FILE: 1,
    }
    # The text file is named .png and the zero-byte file too (write_gt_folder names
    # everything that is not a JPEG .png).
    assert ds.source(3).endswith(".png") and ds.source(2).endswith(".png")
    labels, skipped = _iterate(ds)
    assert labels == KEPT_LABELS
    assert skipped == Counter({UNDECODABLE: 4})
    total = SkipReport().merge(ds.report).merge(skipped)
    assert total.skipped == len(CONTROL_LABELS) + 1 + 4

    # The same files as a plain (unlabelled) image folder, as pretraining reads them.
    (root / "gt.txt").unlink()
    plain = open_dataset(root, unlabelled=True, transform=ToTensor(ImageConfig()))
    labels, skipped = _iterate(plain)
    assert labels == [None] * (len(IMAGE_HAZARDS) - 4 + len(CONTROL_LABELS))
    assert skipped == Counter({UNDECODABLE: 4})


def test_gt_file_with_invalid_utf8_is_one_clear_error(tmp_path):
    # gt.txt is a text file: a bad byte makes the whole file unreadable (no per-line
    # skip), and the error says which file and where.
    root = tmp_path / "latin1"
    write_gt_folder(root, [(png(), "ok")])
    (root / "gt.txt").write_bytes(b"images/000.png\tcaf\xe9\n")
    with pytest.raises(DataError, match=r"gt.txt: not UTF-8 .* at byte 18"):
        open_dataset(root, charset="36_lowercase")


# ---------------------------------------------------------------- malformed LMDBs
@pytest.mark.parametrize(
    ("num_samples", "message"),
    [
        (b"-3", "'num-samples' is negative"),
        (b"\xff\xfe1", "'num-samples' is not an integer"),
        (b"9" * 5000, "'num-samples' is not an integer"),  # beyond int() digit limit
        # Trusting it would scan (or sample) every missing key: 10**12 of them take weeks.
        (b"1000", "'num-samples' is 1000 but the database holds only 5 entries"),
    ],
    ids=["negative", "not-ascii", "huge-string", "more-than-stored"],
)
@pytest.mark.parametrize("unlabelled", [False, True], ids=["labelled", "unlabelled"])
def test_corrupt_num_samples_is_a_clear_error_not_a_hang(
    tmp_path, num_samples, message, unlabelled
):
    entries = parseq_entries([(png(), "one"), (png(), "two")])
    entries[b"num-samples"] = num_samples
    write_raw_lmdb(tmp_path / "db", entries)
    with pytest.raises(DataError, match=message) as info:
        LmdbDataset(tmp_path / "db", unlabelled=unlabelled)
    assert str(tmp_path / "db") in str(info.value) and "\n" not in str(info.value)


def test_lmdb_in_another_key_scheme_counts_every_sample_as_missing(tmp_path):
    # 0-based keys: a different writer's convention. Sample 0 is not looked for, and
    # samples 1..2 lack the key of their partner.
    entries = {b"num-samples": b"3"}
    for i in range(3):
        entries[b"image-%09d" % i] = png(seed=i)
        entries[b"label-%09d" % (i + 10)] = b"word"
    write_raw_lmdb(tmp_path / "db", entries)
    ds = LmdbDataset(tmp_path / "db", charset="36_lowercase")
    assert len(ds) == 0 and dict(ds.report.counts) == {MISSING_KEY: 3}
    assert ds.report.examples[MISSING_KEY][0].endswith("db:image-000000001")


# ---------------------------------------------------------------- configs
PRETRAIN_NESTED = "persec:\n  stroke:\n    quantizer: {entriez: 16}\n"
FINETUNE_NESTED = "model:\n  decoder: {name: ctc, hiddn: 64}\n"


@pytest.mark.parametrize(
    ("command", "overrides", "yaml", "key"),
    [
        ("pretrain", ["trainer.max_steps=abc"], None, "trainer.max_steps"),
        ("pretrain", ["model.nope=1"], None, "model.nope"),
        ("pretrain", [], PRETRAIN_NESTED, "persec.stroke.quantizer.entriez"),
        ("pretrain", [], "trainer: {max_steps: lots}\n", "trainer.max_steps"),
        ("finetune", ["trainer.max_steps=abc"], None, "trainer.max_steps"),
        ("finetune", ["model.nope=1"], None, "model.nope"),
        ("finetune", [], FINETUNE_NESTED, "model.decoder.hiddn"),
        ("finetune", [], "optim: {lr: fast}\n", "optim.lr"),
        ("experiment", ["synth_test=abc"], None, "synth_test"),
        ("experiment", ["nope=1"], None, "nope"),
        ("experiment", [], "trainer: {max_steps: 2}\n", "trainer"),
        ("experiment", [], "fractions: [half]\n", "fractions[0]"),
    ],
)
def test_bad_config_fails_before_training_naming_the_key(
    tmp_path, run_cli, command, overrides, yaml, key
):
    out = tmp_path / "run"
    argv = [command, *overrides, f"output_dir={out}"]
    if yaml is not None:
        (tmp_path / "c.yaml").write_text(yaml)
        argv += ["--config", str(tmp_path / "c.yaml")]
    code, _, err = run_cli(argv)
    assert code == 2
    assert err.startswith(f"persec {command}: error: bad config") and err.count("\n") == 1
    assert f" {key}: " in err
    if yaml is not None:
        assert "c.yaml" in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("change", "where", "key"),
    [
        ("pretrain: [trainer.max_steps=abc]", "pretraining", "trainer.max_steps"),
        ("methods: {persec: [model.nope=1]}", "method persec", "model.nope"),
        ("finetune: [optim.lr=fast]", "decoder ctc", "optim.lr"),
        ("finetune_configs: {ctc: BAD_FT}", "decoder ctc", "model.decoder.hiddn"),
    ],
)
def test_experiment_checks_every_nested_config_before_training(
    tmp_path, run_cli, change, where, key
):
    (tmp_path / "pt.yaml").write_text("{}\n")
    (tmp_path / "ft.yaml").write_text("{}\n")
    (tmp_path / "bad-ft.yaml").write_text(FINETUNE_NESTED)
    grid = (
        f"pretrain_config: {tmp_path / 'pt.yaml'}\n"
        f"finetune_configs: {{ctc: {tmp_path / 'ft.yaml'}}}\n"
        "methods: {scratch: [], persec: []}\n"
        "decoders: [ctc]\n"
        f"output_dir: {tmp_path / 'exp'}\n"
    )
    grid += change.replace("BAD_FT", str(tmp_path / "bad-ft.yaml")) + "\n"
    (tmp_path / "grid.yaml").write_text(grid)
    code, _, err = run_cli(["experiment", "--config", str(tmp_path / "grid.yaml")])
    assert code == 2 and err.count("\n") == 1
    assert f"persec experiment: error: experiment: {where}: bad config" in err
    assert f" {key}: " in err
    assert not (tmp_path / "exp").exists()


# ---------------------------------------------------------------- unsafe weights
class _Payload:
    """Unpickling this runs code that writes ``marker``: proof that a loader ran it."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


def write_payload(path: Path, marker: Path, writer: str = "torch.save") -> None:
    """A checkpoint-shaped pickle carrying the payload, as plain pickle or torch.save."""
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = {"state_dict": {"w": torch.zeros(1)}, "extra": _Payload(marker)}
    if writer == "pickle":
        path.write_bytes(pickle.dumps(checkpoint, protocol=2))  # what torch.load expects
    else:
        with open(path, "wb") as f:
            torch.save(checkpoint, f)


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_payload_is_live(tmp_path, writer):
    # Without this, "the marker does not exist" below would prove nothing.
    marker = tmp_path / "pwned"
    write_payload(tmp_path / "p.bin", marker, writer)
    if writer == "pickle":
        pickle.loads((tmp_path / "p.bin").read_bytes())
    else:
        torch.load(tmp_path / "p.bin", weights_only=False)
    assert marker.read_text() == "pwned"


def test_no_unsafe_loader_in_the_package():
    """Weights load through safetensors or ``torch.load(weights_only=True)``, nothing else."""
    unsafe = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            where = f"{path.relative_to(PACKAGE.parent)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.ImportFrom) and node.module in ("pickle", "dill", "joblib"):
                unsafe.append(f"{where} from {node.module} import")
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner = node.func.value
            name = owner.id if isinstance(owner, ast.Name) else ""
            attr = node.func.attr
            if name in ("pickle", "dill", "joblib") and attr in ("load", "loads", "Unpickler"):
                unsafe.append(f"{where} {name}.{attr}")
            if name == "torch" and attr == "load":
                flag = {k.arg: k.value for k in node.keywords}.get("weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    unsafe.append(f"{where} torch.load without weights_only=True")
            if name == "np" and attr == "load":
                flag = {k.arg: k.value for k in node.keywords}.get("allow_pickle")
                if isinstance(flag, ast.Constant) and flag.value is True:
                    unsafe.append(f"{where} np.load(allow_pickle=True)")
    assert unsafe == []


# The tiny models of the finetune and pretrain tests, rendering 8 images, one step.
ONE_STEP = ["data.synth_train=8", "data.batch_size=4", "trainer.max_steps=1", "trainer.val_every=0"]
FINETUNE_ONE_STEP = [*FINETUNE_TINY, "model.decoder.hidden=16", *ONE_STEP]
PRETRAIN_ONE_STEP = [
    *PRETRAIN_TINY,
    "persec.stroke.quantizer.entries=8",
    "persec.semantic.quantizer.entries=8",
    *ONE_STEP,
]


def _one_line_refusal(code: int, err: str, command: str, *fragments: str) -> None:
    assert code == 2, err
    assert err.startswith(f"persec {command}: error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_init_encoder_payload_is_refused_unrun(tmp_path, run_cli, writer):
    from persec.models.recognizer import ENCODER_WEIGHTS, Recognizer
    from persec.training.finetune import FinetuneConfig

    # A real encoder.json that fits the model, beside a payload named encoder.safetensors.
    config = load_config(FinetuneConfig, None, FINETUNE_ONE_STEP)
    Recognizer(config.model).save_encoder(tmp_path / "enc")
    marker = tmp_path / "pwned"
    write_payload(tmp_path / "enc" / ENCODER_WEIGHTS, marker, writer)
    out = tmp_path / "run"
    for path in (tmp_path / "enc", tmp_path / "enc" / ENCODER_WEIGHTS):
        code, _, err = run_cli(
            ["finetune", *FINETUNE_ONE_STEP, f"output_dir={out}", "--init-encoder", str(path)]
        )
        _one_line_refusal(code, err, "finetune", "not a valid safetensors file")
    assert not marker.exists() and not out.exists()


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_model_payload_is_refused_unrun_by_read(tmp_path, run_cli, writer):
    from persec.models.recognizer import WEIGHTS, Recognizer
    from persec.training.finetune import FinetuneConfig

    Recognizer(load_config(FinetuneConfig, None, FINETUNE_ONE_STEP).model).save(tmp_path / "m")
    marker = tmp_path / "pwned"
    write_payload(tmp_path / "m" / WEIGHTS, marker, writer)
    (tmp_path / "word.png").write_bytes(png())
    code, out, err = run_cli(["read", "--model", str(tmp_path / "m"), str(tmp_path / "word.png")])
    _one_line_refusal(code, err, "read", "model.safetensors", "not a valid safetensors file")
    assert out == "" and not marker.exists()


@pytest.mark.parametrize("poisoned", ["encoder.safetensors", "perceivers.safetensors"])
def test_pretraining_output_payload_is_refused_unrun(tmp_path, run_cli, poisoned):
    from persec.models.recognizer import save_encoder
    from persec.training.pretrain import (
        PretrainConfig,
        build_pretraining,
        load_pretrained,
        save_perceivers,
    )

    config = load_config(PretrainConfig, None, PRETRAIN_ONE_STEP)
    encoder, objective = build_pretraining(config)
    run = tmp_path / "pt"
    save_encoder(encoder, config.model, run)
    save_perceivers(objective, config, run)
    load_pretrained(run)  # the untouched output is valid
    marker = tmp_path / "pwned"
    write_payload(run / poisoned, marker)
    code, _, err = run_cli(["inspect-codes", "--model", str(run), "--data", str(run)])
    _one_line_refusal(code, err, "inspect-codes", poisoned, "not a valid safetensors file")
    assert not marker.exists()


def test_best_checkpoint_reader_refuses_payload_unrun(tmp_path, monkeypatch):
    from persec.training.trainer import read_checkpoint_state

    # Even where torch is told to default to unsafe loading, the reader asks for safety.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "pwned"
    for writer in ("pickle", "torch.save"):
        write_payload(tmp_path / "best.ckpt", marker, writer)
        with pytest.raises(PersecError, match="cannot read checkpoint .* safely"):
            read_checkpoint_state(tmp_path / "best.ckpt")
        assert not marker.exists()


@pytest.mark.parametrize(
    ("command", "tiny", "product"),
    [
        ("finetune", FINETUNE_ONE_STEP, "model"),
        ("pretrain", PRETRAIN_ONE_STEP, "encoder.safetensors"),
    ],
)
def test_resume_payload_is_refused_unrun(tmp_path, run_cli, monkeypatch, command, tiny, product):
    # TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD turns torch.load's default to unsafe: only an
    # explicit weights_only=True on the resume path keeps the payload from running.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    out = tmp_path / "run"
    marker = tmp_path / "pwned"
    write_payload(out / "checkpoints" / "last.ckpt", marker)
    code, _, err = run_cli([command, *tiny, f"output_dir={out}", "--resume"])
    assert not marker.exists()
    assert code == 2 and err.startswith(f"persec {command}: error: ") and "last.ckpt" in err
    assert not (out / product).exists()
    assert err.count("\n") == 1, err  # one line
