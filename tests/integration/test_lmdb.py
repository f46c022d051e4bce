"""LMDB reader/writer, image decoding, skip accounting and collate."""

from __future__ import annotations

import pickle
import warnings
from collections import Counter

import numpy as np
import pytest
import torch
from factories import (
    PLANTED,
    PLANTED_GOOD,
    PLANTED_INIT,
    PLANTED_KEPT,
    PLANTED_UNDECODABLE,
    TEXT,
    bomb_png,
    jpeg,
    noise_image,
    parseq_entries,
    png,
    truncated_png,
    write_raw_lmdb,
)
from PIL import Image
from torch.utils.data import DataLoader

from persec.data.dataset import MISSING_KEY, UNDECODABLE, Skipped, SkipReport, collate_samples
from persec.data.layouts import open_dataset
from persec.data.lmdb import LmdbDataset, close_envs, find_lmdbs, shared_env, write_lmdb
from persec.errors import DataError
from persec.image import ImageConfig, ImageDecodeError, ToTensor, decode_image, encode_image

# ---------------------------------------------------------------- image decoding


@pytest.mark.parametrize(
    "data",
    [b"", truncated_png(), TEXT, bomb_png(), bomb_png(8000, 8000)],
    ids=["zero-byte", "truncated", "text", "bomb-pil-limit", "bomb-50MP-cap"],
)
def test_decode_image_rejects_bad_input_with_one_error_type(data):
    max_pixels_before = Image.MAX_IMAGE_PIXELS
    filters_before = list(warnings.filters)
    with pytest.raises(ImageDecodeError):
        decode_image(data)
    assert issubclass(ImageDecodeError, DataError)
    # PIL's global state and the warning filters are left as they were.
    assert Image.MAX_IMAGE_PIXELS == max_pixels_before
    assert warnings.filters == filters_before


def test_decode_image_pixel_cap_is_per_call():
    data = png(100, 20)
    with pytest.raises(ImageDecodeError, match="exceeds the limit of 1999 pixels"):
        decode_image(data, max_pixels=1999)
    assert decode_image(data, max_pixels=2000).size == (100, 20)


def test_decode_image_converts_to_rgb_and_encode_round_trips():
    grey = Image.new("L", (5, 3), 77)
    image = decode_image(encode_image(grey, "png"))
    assert image.mode == "RGB" and image.size == (5, 3)
    assert image.getpixel((0, 0)) == (77, 77, 77)
    noise = noise_image(9, 4)
    assert np.array_equal(np.asarray(decode_image(encode_image(noise))), np.asarray(noise))
    flat = decode_image(encode_image(Image.new("RGB", (16, 8), (10, 200, 30)), "jpeg"))
    assert all(abs(a - b) <= 3 for a, b in zip(flat.getpixel((8, 4)), (10, 200, 30), strict=True))
    with pytest.raises(ValueError):
        encode_image(grey, "gif")
    # 16-bit grey is rescaled, not clipped to white: 257 * v -> v.
    deep = Image.fromarray(np.array([[0, 257 * 100, 65535]], dtype=np.uint16))
    rgb = decode_image(encode_image(deep, "png"))
    assert [rgb.getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (100, 100, 100), (255,) * 3]


# ---------------------------------------------------------------- reading LMDBs


def test_write_read_round_trip_is_byte_identical(tmp_path):
    samples = [(png(seed=i), f"w{i}") for i in range(3)] + [(jpeg(), "jpg")]
    assert write_lmdb(tmp_path / "db", samples) == 4
    ds = LmdbDataset(tmp_path / "db", charset="62_mixed")
    assert len(ds) == 4
    assert [ds.read_bytes(i) for i in range(4)] == [s[0] for s in samples]
    assert [ds.label(i) for i in range(4)] == ["w0", "w1", "w2", "jpg"]
    image, label = ds[1]
    assert label == "w1" and image.mode == "RGB" and image.size == (48, 16)
    assert np.array_equal(np.asarray(image), np.asarray(noise_image(seed=1)))
    assert ds.name == "db" and ds.report.kept == 4 and ds.report.skipped == 0


def test_reads_database_from_independent_writer(tmp_path):
    # Mixed JPEG and PNG, labels needing normalisation, written with raw lmdb calls.
    samples = [(jpeg(), "Hello"), (png(seed=7), "wörld"), (jpeg(50, 10), "A B")]
    write_raw_lmdb(tmp_path / "IIIT5k", parseq_entries(samples))
    ds = LmdbDataset(tmp_path / "IIIT5k", charset="36_lowercase")
    assert ds.name == "IIIT5k"
    assert [ds[i][1] for i in range(3)] == ["hello", "world", "ab"]
    assert ds[0][0].size == (40, 20) and ds[2][0].size == (50, 10)
    assert ds.read_bytes(1) == samples[1][0]


def test_tree_of_lmdbs_is_concatenated_in_sorted_order(tmp_path):
    write_raw_lmdb(
        tmp_path / "b" / "inner", parseq_entries([(png(seed=3), "four"), (png(), "five")])
    )
    write_raw_lmdb(
        tmp_path / "a", parseq_entries([(png(), "one"), (jpeg(), "two"), (png(), "three")])
    )
    assert find_lmdbs(tmp_path) == [tmp_path / "a", tmp_path / "b" / "inner"]
    ds = LmdbDataset(tmp_path, charset="36_lowercase")
    assert len(ds) == 5
    assert [ds[i][1] for i in range(5)] == ["one", "two", "three", "four", "five"]
    assert ds[-1][1] == "five"
    assert ds.source(3).endswith("inner:image-000000001")
    with pytest.raises(IndexError):
        ds[5]
    # The root itself counts when it holds a database.
    assert find_lmdbs(tmp_path / "a") == [tmp_path / "a"]


def test_unlabelled_mode_needs_no_labels(tmp_path):
    samples = [(png(seed=i), "") for i in range(4)]
    write_raw_lmdb(tmp_path / "u", parseq_entries(samples, with_labels=False))
    labelled = LmdbDataset(tmp_path / "u")  # labelled reading finds every label missing
    assert labelled.report[MISSING_KEY] == 4 and len(labelled) == 0
    ds = LmdbDataset(tmp_path / "u", unlabelled=True, charset="36_lowercase")
    assert len(ds) == 4 and ds.report.kept == 4
    assert [ds[i][1] for i in range(4)] == [None] * 4
    assert ds[3][0].size == (48, 16)


def test_missing_keys_are_counted_not_fatal(tmp_path):
    entries = parseq_entries([(png(), "one"), (png(), "two"), (png(), "three")])
    del entries[b"label-000000002"]
    del entries[b"image-000000003"]
    write_raw_lmdb(tmp_path / "db", entries)
    ds = LmdbDataset(tmp_path / "db", charset="36_lowercase")
    assert len(ds) == 1 and ds[0][1] == "one"
    assert ds.report[MISSING_KEY] == 2 and ds.report.total == 3
    # Unlabelled mode does not scan: the missing image shows up as a Skipped item.
    ds = LmdbDataset(tmp_path / "db", unlabelled=True)
    assert ds[2] == Skipped(MISSING_KEY, f"{tmp_path / 'db'}:image-000000003")


@pytest.mark.parametrize(
    ("num_samples", "message"),
    [(None, "no 'num-samples' key"), (b"lots", "'num-samples' is not an integer")],
)
def test_bad_num_samples_is_a_clear_error(tmp_path, num_samples, message):
    entries = parseq_entries([(png(), "x")])
    if num_samples is None:
        del entries[b"num-samples"]
    else:
        entries[b"num-samples"] = num_samples
    write_raw_lmdb(tmp_path / "db", entries)
    with pytest.raises(DataError, match=message) as info:
        LmdbDataset(tmp_path / "db")
    assert str(tmp_path / "db") in str(info.value)


def test_no_lmdb_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no LMDB"):
        LmdbDataset(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        LmdbDataset(tmp_path / "nope")


def test_planted_corrupt_samples_exact_counts(tmp_path, caplog):
    write_raw_lmdb(tmp_path / "planted", parseq_entries(PLANTED))
    with caplog.at_level("WARNING", logger="persec.data"):
        ds = LmdbDataset(tmp_path / "planted", charset="36_lowercase", max_label_length=25)
    assert dict(ds.report.counts) == PLANTED_INIT
    assert ds.report.kept == PLANTED_KEPT == len(ds) and ds.report.total == 20
    # Counted, not logged: whoever opened the dataset reports it, once.
    assert not caplog.records
    assert ds.report.summary() == (
        "planted: 20 samples, 16 kept, 4 skipped "
        "(empty label: 2, label outside charset: 1, label too long: 1)"
    )
    items = [ds[i] for i in range(len(ds))]
    assert sum(isinstance(x, Skipped) and x.reason == UNDECODABLE for x in items) == 5
    images, labels, skipped = collate_samples(items)
    assert skipped == Counter({UNDECODABLE: PLANTED_UNDECODABLE})
    assert labels == PLANTED_GOOD and len(images) == 11


def test_remove_unsupported_strips_instead_of_skipping(tmp_path):
    write_raw_lmdb(
        tmp_path / "db", parseq_entries([(png(), "hello!"), (png(), "!!"), (png(), "ok")])
    )
    ds = LmdbDataset(tmp_path / "db", charset="36_lowercase", remove_unsupported=True)
    assert [ds.label(i) for i in range(len(ds))] == ["hello", "ok"]
    assert dict(ds.report.counts) == {"empty label": 1}


def test_lazy_env_pickle_and_dataloader_workers(tmp_path):
    samples = [(png(seed=i), f"w{i}") for i in range(6)] + [(TEXT, "bad")]
    write_lmdb(tmp_path / "db", samples)
    ds = LmdbDataset(tmp_path / "db", charset="36_lowercase", transform=ToTensor(ImageConfig()))
    assert shared_env(tmp_path / "db", create=False) is None  # nothing left open by init
    clone = pickle.loads(pickle.dumps(ds))
    assert ds[0][0].shape == (3, 32, 128)
    assert shared_env(tmp_path / "db", create=False) is not None
    # Pickles with a handle open; the copy shares this process's handle.
    clone = pickle.loads(pickle.dumps(ds))
    assert clone[6] == Skipped(UNDECODABLE, f"{tmp_path / 'db'}:image-000000007")
    # A second dataset over an open database (py-lmdb forbids a second handle).
    assert LmdbDataset(tmp_path / "db", charset="36_lowercase").label(5) == "w5"

    # Forked workers inherit the open handle; they must open their own.
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate_samples)
    report = SkipReport("db")
    labels = []
    for images, batch_labels, skipped in loader:
        assert isinstance(images, torch.Tensor) and images.shape[1:] == (3, 32, 128)
        assert images.shape[0] == len(batch_labels)
        labels += batch_labels
        report.merge(skipped)
    assert labels == [f"w{i}" for i in range(6)]
    assert dict(report.counts) == {UNDECODABLE: 1}
    close_envs()
    assert shared_env(tmp_path / "db", create=False) is None
    assert ds[1][1] == "w1"  # reopens lazily


# ---------------------------------------------------------------- shared pieces


def test_skip_report_summary_merge_and_skip_kept():
    report = SkipReport("IIIT5k")
    report.keep(10)
    report.skip("label too long", "a")
    report.skip("empty label")
    other = SkipReport()
    other.keep(5)
    other.skip("empty label", "b")
    report.merge(other).merge(Counter({"undecodable image": 2}))
    report.skip_kept("missing file", "c")
    assert report.kept == 14 and report.skipped == 6 and report.total == 20
    assert report["empty label"] == 2 and report["nothing"] == 0
    assert report.examples == {"label too long": ["a"], "empty label": ["b"], "missing file": ["c"]}
    assert report.summary() == (
        "IIIT5k: 20 samples, 14 kept, 6 skipped (empty label: 2, label too long: 1, "
        "missing file: 1, undecodable image: 2)"
    )


def test_collate_stacks_pads_widths_lists_otherwise_and_handles_all_skipped():
    a, b = torch.zeros(3, 4, 5), torch.ones(3, 4, 5)
    images, labels, skipped = collate_samples([(a, "x"), Skipped("missing file", "p"), (b, "y")])
    assert images.shape == (2, 3, 4, 5) and images[1].sum() == 60
    assert labels == ["x", "y"] and skipped == Counter({"missing file": 1})
    # Widths differ (text lines): padded on the right to the widest.
    images, labels, _ = collate_samples([(a, None), (torch.zeros(3, 4, 6), None)])
    assert images.shape == (2, 3, 4, 6) and labels == [None, None]
    assert (images[0, ..., 5] == 0).all()  # a's background
    images, _, _ = collate_samples([(a, None), (torch.zeros(3, 5, 5), None)])
    assert isinstance(images, list)  # heights differ: not a batch
    assert collate_samples([Skipped(UNDECODABLE, "p")] * 2) == ([], [], Counter({UNDECODABLE: 2}))


def test_open_dataset_dispatches_on_layout(tmp_path):
    write_raw_lmdb(tmp_path / "CUTE80" / "shard0", parseq_entries([(png(), "one")]))
    ds = open_dataset(tmp_path / "CUTE80", charset="36_lowercase")
    assert isinstance(ds, LmdbDataset) and ds.name == "CUTE80" and ds[0][1] == "one"
    assert open_dataset(tmp_path / "CUTE80", unlabelled=True)[0][1] is None
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="accepted layouts"):
        open_dataset(tmp_path / "empty", charset="36_lowercase")
    with pytest.raises(DataError, match="does not exist"):
        open_dataset(tmp_path / "missing")
