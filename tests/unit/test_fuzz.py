"""Property-based tests of the two paths every untrusted sample goes through: image
decoding (arbitrary and mutated bytes) and label normalisation (arbitrary text, and
arbitrary bytes as an LMDB stores them)."""

from __future__ import annotations

import io
import struct
import tempfile
import time
import unicodedata
import warnings
import zlib
from pathlib import Path

import lmdb
import numpy as np
import pytest
import torch
from factories import _chunk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from persec.charset import (
    CONTROL_CHARS,
    EMPTY,
    OUT_OF_CHARSET,
    TOO_LONG,
    AttentionTokenizer,
    Charset,
)
from persec.data.dataset import LABEL_NOT_UTF8, MISSING_KEY, filter_label
from persec.data.lmdb import LmdbDataset
from persec.image import ImageConfig, ImageDecodeError, decode_image, to_tensor
from persec.metrics import ScoreAccumulator, eval_charset

# PIL warns (and carries on) about damaged metadata (EXIF, TIFF tags); decoding decides.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL")

# No example database: other runs share this tree, and a failure prints its blob.
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)

# Small caps keep every accepted image cheap to decode and resize.
MAX_PIXELS = 1 << 16
SECONDS_PER_DECODE = 10.0  # far above any real decode of <= 64K pixels: a hang, not a slow run


# ---------------------------------------------------------------- image decoding
def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def _seed_images() -> list[bytes]:
    """Small valid files of every accepted format and the usual modes."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (7, 12, 3), dtype=np.uint8), "RGB")
    grey = rgb.convert("L")
    deep = Image.fromarray((rng.integers(0, 65536, (5, 9))).astype(np.uint16))
    return [
        _encode(rgb, "PNG"),
        _encode(rgb.convert("RGBA"), "PNG"),
        _encode(rgb.convert("P"), "PNG"),
        _encode(grey.convert("1"), "PNG"),
        _encode(deep, "PNG"),
        _encode(rgb, "PNG", optimize=True),
        _encode(rgb, "JPEG", quality=80),
        _encode(grey, "JPEG", quality=50),
        _encode(rgb, "JPEG", progressive=True),
        _encode(rgb.convert("CMYK"), "JPEG"),
        _encode(rgb, "GIF"),
        _encode(rgb, "BMP"),
        _encode(rgb.convert("P"), "BMP"),
        _encode(rgb, "TIFF"),
        _encode(rgb, "TIFF", compression="tiff_lzw"),
        _encode(rgb, "WEBP", quality=80),
        _encode(rgb, "PPM"),
        _encode(grey, "PPM"),
    ]


SEEDS = _seed_images()
MAGICS = [
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff\xe0",
    b"GIF89a",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
    b"RIFF\x20\x00\x00\x00WEBPVP8 ",
    b"P6\n",
    b"P5 ",
    b"P4\n",
    b"%!PS-Adobe-3.0 EPSF-3.0\n",  # not an accepted format: must not reach Ghostscript
]


@st.composite
def mutated_images(draw) -> bytes:
    """A valid seed with a few bit flips, overwrites, cuts, insertions or deletions."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        # Headers are where size and layout live: aim there half of the time.
        hi = max(len(data) - 1, 0)
        pos = draw(st.one_of(st.integers(0, min(hi, 64)), st.integers(0, hi)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[pos] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]))
        elif kind == "cut":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
    return bytes(data)


@st.composite
def crafted_pngs(draw) -> bytes:
    """Well-formed chunks (valid CRCs) around arbitrary header fields and pixel data,
    so that PIL's PNG decoder, not its chunk reader, meets the garbage."""
    size = st.one_of(st.integers(0, 300), st.integers(0, 2**31 - 1))
    ihdr = struct.pack(
        ">IIBBBBB",
        draw(size),
        draw(size),
        draw(st.sampled_from([1, 2, 4, 8, 16, 3, 0])),
        draw(st.sampled_from([0, 2, 3, 4, 6, 1, 7])),
        draw(st.sampled_from([0, 0, 1])),
        0,
        draw(st.sampled_from([0, 0, 1, 2])),
    )
    raw = draw(st.one_of(st.binary(max_size=512), st.integers(0, 4096).map(bytes)))
    chunks = [_chunk(b"IHDR", ihdr)]
    if draw(st.booleans()):
        chunks.append(_chunk(b"PLTE", draw(st.binary(max_size=48))))
    chunks.append(_chunk(b"IDAT", zlib.compress(raw)))
    if draw(st.booleans()):
        chunks.append(_chunk(b"IEND", b""))
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def _check_decode(data: bytes) -> None:
    """``decode_image`` returns a loaded RGB image within the cap that the training
    preprocessing accepts, or raises ImageDecodeError; nothing else, and promptly."""
    filters = list(warnings.filters)
    limit = Image.MAX_IMAGE_PIXELS
    start = time.monotonic()
    try:
        image = decode_image(data, max_pixels=MAX_PIXELS)
    except ImageDecodeError as e:
        assert str(e)
    else:
        width, height = image.size
        assert image.mode == "RGB"
        assert width >= 1 and height >= 1 and width * height <= MAX_PIXELS
        assert np.asarray(image).shape == (height, width, 3)
        x = to_tensor(image, ImageConfig(height=8, width=16))  # (3, 8, 16)
        assert x.shape == (3, 8, 16) and torch.isfinite(x).all()
        assert x.min() >= -1.0 and x.max() <= 1.0
    assert time.monotonic() - start < SECONDS_PER_DECODE
    assert warnings.filters == filters and Image.MAX_IMAGE_PIXELS == limit


def test_seeds_are_valid_images():
    for data in SEEDS:
        image = decode_image(data)
        assert image.mode == "RGB" and image.size in ((12, 7), (9, 5))


@FUZZ
@given(st.binary(max_size=2048))
def test_decode_arbitrary_bytes(data):
    _check_decode(data)


@FUZZ
@given(st.sampled_from(MAGICS), st.binary(max_size=1024))
def test_decode_garbage_behind_a_known_signature(magic, rest):
    _check_decode(magic + rest)


@FUZZ
@given(mutated_images())
def test_decode_mutated_valid_images(data):
    _check_decode(data)


@FUZZ
@given(crafted_pngs())
def test_decode_crafted_png_headers(data):
    _check_decode(data)


# ---------------------------------------------------------------- labels
PRESETS = [Charset.from_spec(s) for s in ("36_lowercase", "62_mixed", "94_full")]
# Non-ASCII charsets skip the NFKD step; single-case ones fold (ß, ς, İ are the traps).
CUSTOM = [Charset("абвгдеёжз"), Charset("ÄÖÜSZ"), Charset("aßςσ€1"), Charset("İIi")]
CHARSETS = PRESETS + CUSTOM
REASONS = {EMPTY, OUT_OF_CHARSET, TOO_LONG, CONTROL_CHARS}
# Characters that must always be refused: C0/C1 controls and format characters.
CONTROLS = [chr(c) for c in [*range(0x00, 0x09), *range(0x0E, 0x1C), 0x7F, 0x80, 0x9F]]
CONTROLS += ["\u200b", "\u200e", "\u2060", "\ufeff", "\u00ad", "\U000e0001"]
# Text that reaches every branch: ASCII, accents, ligatures, case traps, whitespace.
TRICKY = list("aZ09_!' \t\n\u00a0\u3000\u0301\u0308ßİıﬁ½ΣσςK\u212bÅéЁё") + CONTROLS
labels = st.text(alphabet=st.one_of(st.characters(), st.sampled_from(TRICKY)), max_size=40)
charsets = st.sampled_from(CHARSETS)


def _has_control(text: str) -> bool:
    return any(c in CONTROLS for c in text)


@FUZZ
@given(labels, charsets)
def test_normalize_and_strip_are_idempotent_and_stay_in_the_charset(text, charset):
    normal = charset.normalize(text)
    assert charset.normalize(normal) == normal
    assert not any(c.isspace() for c in normal)
    stripped = charset.strip_unsupported(text)
    assert all(c in charset for c in stripped)
    assert charset.strip_unsupported(stripped) == stripped
    assert stripped == "".join(c for c in normal if c in charset)


@FUZZ
@given(labels, charsets, st.sampled_from([None, 1, 5, 25]))
def test_check_accepts_only_clean_labels_with_documented_reasons(text, charset, max_length):
    label, reason = charset.check(text, max_length)
    if label is None:
        assert reason in REASONS
        if _has_control(text):
            assert reason == CONTROL_CHARS
        return
    assert reason is None and not _has_control(text)
    assert label == charset.normalize(text) and all(c in charset for c in label)
    assert 1 <= len(label) <= (max_length or len(label))
    assert charset.check(label, max_length) == (label, None)  # a fixed point
    tokens = AttentionTokenizer(charset)
    assert tokens.decode(tokens.encode([label])[0].tolist()) == label


@FUZZ
@given(
    labels,
    st.sampled_from([None, *CHARSETS]),
    st.sampled_from([None, 3, 25]),
    st.booleans(),
    st.integers(0, 40),
    st.sampled_from(CONTROLS),
)
def test_filter_label_refuses_control_characters_and_long_labels(
    text, charset, max_length, remove_unsupported, at, control
):
    label, reason = filter_label(text, charset, max_length, remove_unsupported)
    assert (label is None) != (reason is None)
    assert reason is None or reason in REASONS
    if label is not None:
        assert not _has_control(label) and label.strip()
        assert max_length is None or len(label) <= max_length
        if charset is None:
            assert label == text  # kept as written
        elif remove_unsupported:
            assert label == charset.strip_unsupported(text)
    # A control character anywhere refuses the label, unless unsupported characters are
    # stripped (the eval protocol), where it goes with them.
    dirty = text[:at] + control + text[at:]
    dirty_label, dirty_reason = filter_label(dirty, charset, max_length, remove_unsupported)
    if charset is None or not remove_unsupported:
        assert (dirty_label, dirty_reason) == (None, CONTROL_CHARS)
    else:
        # Not always equal to the clean result: a control character next to a Σ
        # changes whether lower() makes it final (ς) or not (σ).
        assert dirty_reason != CONTROL_CHARS and not _has_control(dirty_label or "")
    # Over-long: max_length + 1 characters every filter would keep if short enough.
    if max_length is not None:
        long = (charset.chars[0] if charset else "x") * (max_length + 1)
        assert filter_label(long, charset, max_length, remove_unsupported) == (None, TOO_LONG)


@FUZZ
@given(labels, labels, st.booleans(), st.booleans())
def test_word_accuracy_compares_mapped_strings(pred, gt, cased, punctuation):
    charset = eval_charset(cased, punctuation)
    same = ScoreAccumulator("x", charset)
    same.update([gt], [gt])
    assert same.compute().word_acc == 100.0 and same.compute().one_minus_ned == 100.0
    scores = ScoreAccumulator("x", charset)
    scores.update([pred], [gt])
    match = charset.strip_unsupported(pred) == charset.strip_unsupported(gt)
    assert scores.compute().word_acc == (100.0 if match else 0.0)
    # Whitespace is never significant.
    spaced = " ".join(gt)
    assert charset.strip_unsupported(spaced) == charset.strip_unsupported(gt)


# ---------------------------------------------------------------- LMDB labels (bytes)
# Lone surrogates (st.characters() draws them) encode to bytes strict UTF-8 refuses.
utf8_or_not = st.one_of(
    labels.map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.binary(max_size=24),
)


@settings(FUZZ, max_examples=60)
@given(st.lists(st.one_of(utf8_or_not, st.none()), min_size=1, max_size=6), charsets)
def test_lmdb_labels_as_bytes_are_kept_or_counted(raw_labels, charset):
    """Every stored label ends up kept (as ``filter_label`` says) or counted under one
    reason; ``None`` stands for a missing label key."""
    expected_labels, expected_counts = [], {}
    for raw in raw_labels:
        if raw is None:
            reason = MISSING_KEY
        else:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                reason = LABEL_NOT_UTF8
            else:
                label, reason = filter_label(text, charset, 25)
                if label is not None:
                    expected_labels.append(label)
                    continue
        expected_counts[reason] = expected_counts.get(reason, 0) + 1
    with tempfile.TemporaryDirectory() as tmp:
        env = lmdb.open(tmp, map_size=1 << 22)
        with env.begin(write=True) as txn:
            txn.put(b"num-samples", str(len(raw_labels)).encode())
            for i, raw in enumerate(raw_labels, start=1):
                txn.put(b"image-%09d" % i, b"not read at init")
                if raw is not None:
                    txn.put(b"label-%09d" % i, raw)
        env.close()
        ds = LmdbDataset(Path(tmp), charset=charset, max_label_length=25)
        assert [ds.label(i) for i in range(len(ds))] == expected_labels
        assert dict(ds.report.counts) == expected_counts
        assert ds.report.total == len(raw_labels)


def test_controls_list_matches_unicode_categories():
    # The fuzz oracle above is a fixed list; make sure it means what it says.
    for c in CONTROLS:
        assert unicodedata.category(c) in ("Cc", "Cf") and not c.isspace(), repr(c)
