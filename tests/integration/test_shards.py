"""Streamed shard corpora: `persec shard` round trips (tar and LMDB), the split over
ranks and loader workers, the shuffle buffer, skips, and pretraining on shards."""

from __future__ import annotations

import io
import itertools
import json
import random
import tarfile
from collections import Counter
from pathlib import Path

import lightning as L
import lmdb
import pytest
import torch
from factories import jpeg, parseq_entries, png, truncated_png, write_gt_folder, write_raw_lmdb
from PIL import Image
from tiny import PRETRAIN_TINY

from persec.data.dataset import LABEL_NOT_UTF8, MISSING_FILE, UNDECODABLE, collate_samples
from persec.data.module import PretrainDataConfig, UnlabelledDataModule
from persec.data.shards.format import (
    UNREADABLE_SHARD,
    count_shard_items,
    list_shards,
    read_lmdb_shard,
    read_tar_shard,
)
from persec.data.shards.stream import ShardStream, StreamLoader, assign_shards, buffered_shuffle
from persec.data.shards.write import write_shards
from persec.errors import DataError, PersecError
from persec.image import ImageConfig, ToTensor

# 40 distinct samples; labels with a space and a non-ASCII letter survive as written.
SAMPLES = [
    (png(24, 12, seed=i) if i % 3 else jpeg(30 + i, 16, (i, 90, 200)), f"wörd {i}")
    for i in range(40)
]
TO_TENSOR = ToTensor(ImageConfig(height=16, width=32))


def _tar_samples(path: Path) -> list[tuple[str, bytes, str | None]]:
    """(member name, image bytes, label) per key, read with plain tarfile calls."""
    groups: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            key, ext = m.name.split(".", 1)
            groups.setdefault(key, {})[ext] = tar.extractfile(m).read()
    out = []
    for key, files in groups.items():
        ext = next(e for e in files if e != "txt")
        label = files["txt"].decode() if "txt" in files else None
        out.append((f"{key}.{ext}", files[ext], label))
    return out


def _lmdb_samples(path: Path) -> list[tuple[bytes, str]]:
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        n = int(txn.get(b"num-samples"))
        got = [(txn.get(b"image-%09d" % i), txn.get(b"label-%09d" % i).decode()) for i in
               range(1, n + 1)]  # fmt: skip
    env.close()
    return got


# ------------------------------------------------------------------ persec shard
def test_shard_gt_folder_to_tar_keeps_bytes_labels_and_order(tmp_path, run_cli) -> None:
    write_gt_folder(tmp_path / "src", SAMPLES)
    code, out, err = run_cli(["shard", str(tmp_path / "src"), "--out", str(tmp_path / "sh"),
                              "--per-shard", "7"])  # fmt: skip
    assert code == 0, err
    assert "wrote 40 samples in 6 shard(s)" in out
    index = json.loads((tmp_path / "sh" / "shards.json").read_text())
    assert index["format"] == "tar" and index["total"] == 40 and index["labelled"]
    assert [s["count"] for s in index["shards"]] == [7, 7, 7, 7, 7, 5]
    got = []
    for s in index["shards"]:
        got += _tar_samples(tmp_path / "sh" / s["name"])
    assert [(data, label) for _, data, label in got] == SAMPLES
    assert got[0][0] == "000000000.jpg" and got[1][0] == "000000001.png"
    # Writing again into the same directory is refused.
    code, _, err = run_cli(["shard", str(tmp_path / "src"), "--out", str(tmp_path / "sh")])
    assert code == 2 and "already holds shards" in err


def test_shard_lmdb_to_lmdb_shuffled_keeps_every_sample(tmp_path, run_cli) -> None:
    write_raw_lmdb(tmp_path / "src", parseq_entries(SAMPLES))
    argv = ["shard", str(tmp_path / "src"), "--format", "lmdb", "--per-shard", "16", "--shuffle"]
    assert run_cli([*argv, "--seed", "3", "--out", str(tmp_path / "a")])[0] == 0
    assert run_cli([*argv, "--seed", "3", "--out", str(tmp_path / "b")])[0] == 0
    index = json.loads((tmp_path / "a" / "shards.json").read_text())
    assert [s["count"] for s in index["shards"]] == [16, 16, 8] and index["seed"] == 3
    got = [x for s in index["shards"] for x in _lmdb_samples(tmp_path / "a" / s["name"])]
    again = [x for s in index["shards"] for x in _lmdb_samples(tmp_path / "b" / s["name"])]
    assert got == again  # same seed, same order
    assert got != SAMPLES and sorted(got) == sorted(SAMPLES)


def test_shard_image_folder_writes_images_only_and_skips_corrupt(tmp_path, run_cli) -> None:
    src = tmp_path / "imgs"
    src.mkdir()
    for i in range(5):
        (src / f"{i}.png").write_bytes(png(seed=i))
    (src / "cut.png").write_bytes(truncated_png())
    code, out, err = run_cli(["shard", str(src), "--out", str(tmp_path / "sh")])
    assert code == 0, err
    assert f"1 skipped ({UNDECODABLE}: 1)" in out
    got = _tar_samples(tmp_path / "sh" / "shard-000000.tar")
    assert [data for _, data, _ in got] == [png(seed=i) for i in range(5)]
    assert all(label is None for *_, label in got)


def test_shard_errors_are_one_line(tmp_path, run_cli) -> None:
    code, _, err = run_cli(["shard", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert code == 2 and "does not exist" in err
    write_gt_folder(tmp_path / "src", SAMPLES[:2])
    code, _, err = run_cli(["shard", str(tmp_path / "src"), "--out", str(tmp_path / "o"),
                            "--per-shard", "0"])  # fmt: skip
    assert code == 2 and "per shard must be >= 1" in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------ splitting and shuffling
def test_assign_shards_partitions_and_refuses_too_few() -> None:
    for epoch in range(3):
        parts = [assign_shards(10, epoch, 7, r, 2, w, 2) for r in range(2) for w in range(2)]
        assert sorted(i for p in parts for i in p) == list(range(10))
    assert assign_shards(10, 0, 7, 0, 2, 0, 2) != assign_shards(10, 1, 7, 0, 2, 0, 2)
    with pytest.raises(DataError, match=r"3 shard\(s\) for 2 rank\(s\) x 2 loader worker"):
        assign_shards(3, 0, 0, 0, 2, 0, 2)


def test_buffered_shuffle_is_a_seeded_permutation() -> None:
    items = list(range(100))
    out = list(buffered_shuffle(items, 16, random.Random(1)))
    assert sorted(out) == items and out != items
    assert out == list(buffered_shuffle(items, 16, random.Random(1)))
    assert out != list(buffered_shuffle(items, 16, random.Random(2)))
    assert list(buffered_shuffle(items, 1, random.Random(1))) == items
    # An item can come out at most size-1 places early: the buffer bounds the reach.
    assert all(pos >= item - 15 for pos, item in enumerate(out))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """10 shards of the 40 samples: 6 tar files and, in a subfolder, 4 LMDBs."""
    root = tmp_path_factory.mktemp("corpus")
    write_shards(SAMPLES[:24], root / "tar", per_shard=4, progress=False)
    write_shards(SAMPLES[24:], root / "nested" / "lmdb", 4, "lmdb", progress=False)
    return root


def _labels(stream: ShardStream, worker: int = 0, workers: int = 1) -> list[str]:
    return [r.label for r in stream.raw_samples(worker, workers)]


def test_list_shards_finds_tar_and_lmdb_recursively(corpus, tmp_path) -> None:
    shards = list_shards([corpus])
    assert len(shards) == 10
    assert sum(p.is_dir() for p in shards) == 4
    with pytest.raises(DataError, match="no shards"):
        list_shards([tmp_path])
    with pytest.raises(DataError, match="does not exist"):
        list_shards([tmp_path / "nope"])


def test_each_sample_once_per_epoch_across_ranks_and_workers(corpus) -> None:
    everything = sorted(label for _, label in SAMPLES)
    for epoch in (0, 1):
        seen: list[list[str]] = []
        for rank in range(2):
            stream = ShardStream([corpus], seed=5, shuffle_buffer=8, rank=rank, world_size=2)
            stream.set_epoch(epoch)
            seen.append([x for w in range(2) for x in _labels(stream, w, 2)])
        assert not set(seen[0]) & set(seen[1])
        assert sorted(seen[0] + seen[1]) == everything


def test_real_loader_workers_read_the_simulated_share(corpus) -> None:
    stream = ShardStream([corpus], TO_TENSOR, seed=5, shuffle_buffer=8, rank=1, world_size=2)
    expected = sorted(_labels(stream, 0, 2) + _labels(stream, 1, 2))
    loader = StreamLoader(stream, batch_size=4, num_workers=2, collate_fn=collate_samples)
    got = []
    for images, labels, skipped in loader:
        assert images.shape[1:] == (3, 16, 32) and not skipped
        got += labels
    assert sorted(got) == expected and len(got) == len(set(got))


def test_order_is_reproducible_per_seed_and_epoch(corpus) -> None:
    def order(seed: int, epoch: int) -> list[str]:
        stream = ShardStream([corpus], seed=seed, shuffle_buffer=8, epoch=epoch)
        return [label for _, label in stream]

    first = order(0, 0)
    assert first == order(0, 0)
    assert sorted(first) == sorted(label for _, label in SAMPLES)
    assert first != order(0, 1) and first != order(1, 0)
    plain = ShardStream([corpus], shuffle=False)  # sorted paths: nested/ before tar/
    assert [label for _, label in plain] == [label for _, label in SAMPLES[24:] + SAMPLES[:24]]


def test_stream_loader_moves_to_the_next_epoch(corpus) -> None:
    stream = ShardStream([corpus], TO_TENSOR, seed=3, shuffle_buffer=8)
    loader = StreamLoader(stream, batch_size=8, num_workers=2, collate_fn=collate_samples)
    passes = [[label for _, labels, _ in loader for label in labels] for _ in range(2)]
    assert stream.epoch == 1 and passes[0] != passes[1]
    assert sorted(passes[0]) == sorted(passes[1])
    with pytest.raises(ValueError, match="persistent"):
        StreamLoader(stream, num_workers=1, persistent_workers=True)


def test_endless_stream_reads_epoch_after_epoch_and_refuses_empty_shards(corpus, tmp_path) -> None:
    stream = ShardStream([corpus], seed=3, shuffle_buffer=8, rank=0, world_size=2)
    stream.endless = True
    epoch0, epoch1 = _labels(stream), stream.raw_samples(0, 1, epoch=1)
    first = list(itertools.islice(iter(stream), 3 * len(epoch0)))
    assert [label for _, label in first[: len(epoch0)]] == epoch0
    assert [label for _, label in first[len(epoch0) : 2 * len(epoch0)]] != epoch0
    assert {label for _, label in first} >= {r.label for r in epoch1}
    empty = tmp_path / "empty.tar"
    tarfile.open(empty, "w").close()  # a shard with no sample
    stream = ShardStream([empty], endless=True)
    with pytest.raises(DataError, match="no readable image"):
        next(iter(stream))


def test_corrupt_members_are_skipped_and_counted(tmp_path) -> None:
    good = tmp_path / "good.tar"
    with tarfile.open(good, "w") as tar:
        for name, data in [
            ("a.png", png(seed=1)), ("a.txt", b"ok"),
            ("b.png", truncated_png()), ("b.txt", b"cut"),
            ("c.txt", b"no image"),
            ("d.png", png(seed=2)), ("d.txt", b"\xff\xfe"),
            ("e.jpg", jpeg()), ("e.txt", b"fine\n"),
        ]:  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    cut = tmp_path / "cut.tar"
    with tarfile.open(good) as tar:
        end = tar.getmember("b.png").offset_data + 100
    cut.write_bytes(good.read_bytes()[:end])  # ends inside the second image
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 40)
    loader = StreamLoader(
        ShardStream([good, cut, tmp_path / "junk.tar"], TO_TENSOR, shuffle=False),
        batch_size=16,
        collate_fn=collate_samples,
    )
    (images, labels, skipped), *rest = list(loader)
    assert not rest
    assert sorted(labels) == ["fine", "ok", "ok"]
    assert skipped == Counter(
        {UNDECODABLE: 1, MISSING_FILE: 1, LABEL_NOT_UTF8: 1, UNREADABLE_SHARD: 2}
    )


def test_too_few_shards_is_a_clear_error(corpus) -> None:
    three = sorted((corpus / "tar").glob("*.tar"))[:3]
    stream = ShardStream(three, rank=1, world_size=2)
    loader = StreamLoader(stream, batch_size=4, num_workers=2, collate_fn=collate_samples)
    with pytest.raises(DataError, match=r"3 shard\(s\) for 2 rank\(s\) x 2 loader worker"):
        iter(loader)


# ------------------------------------------------------------------ pretraining
class _Recorder(L.LightningModule):
    """Records, per step, the trainer's epoch and a digest of each image."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[tuple[int, list[bytes]]] = []

    def training_step(self, batch, _):
        images, _, _ = batch
        self.seen.append((self.current_epoch, [img.numpy().tobytes() for img in images]))
        return (self.weight * images.mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_data_module_streams_shards_as_one_endless_pass(corpus) -> None:
    config = PretrainDataConfig(shards=[str(corpus)], shuffle_buffer=8, batch_size=20, workers=0)
    data = UnlabelledDataModule(config, ImageConfig(height=16, width=32), seed=1)
    model = _Recorder()
    trainer = L.Trainer(max_steps=5, max_epochs=-1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(model, datamodule=data)
    # 40 images, batches of 20: the stream goes from epoch to epoch inside one pass.
    assert [epoch for epoch, _ in model.seen] == [0] * 5
    first = [d for _, step in model.seen[:2] for d in step]
    second = [d for _, step in model.seen[2:4] for d in step]
    assert len(set(first)) == 40 and set(second) == set(first) and second != first


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("consumed", [1, 4, 7, 13])
def test_resumed_stream_goes_on_exactly_after_the_consumed_batches(corpus, workers, consumed):
    def batches(start: int, n: int) -> list[list[str]]:
        stream = ShardStream([corpus], TO_TENSOR, seed=2, shuffle_buffer=8, endless=True)
        loader = StreamLoader(
            stream, start_fn=lambda: start, batch_size=4, num_workers=workers,
            collate_fn=collate_samples,
        )  # fmt: skip
        return [labels for _, labels, _ in itertools.islice(loader, n)]

    full = batches(0, 16)  # 64 items: each worker goes into its second epoch
    assert batches(consumed, 16 - consumed) == full[consumed:]


def test_item_counts_match_what_the_readers_yield(corpus, tmp_path) -> None:
    shards = list_shards([corpus])
    for shard in shards:
        reader = read_lmdb_shard if shard.is_dir() else read_tar_shard
        assert count_shard_items(shard) == len(list(reader(shard))), shard
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 40)
    assert count_shard_items(tmp_path / "junk.tar") == len(
        list(read_tar_shard(tmp_path / "junk.tar"))
    )
    with pytest.raises(ValueError, match="endless"):
        StreamLoader(ShardStream([corpus]), start_fn=lambda: 3)


def test_shards_cannot_be_mixed_with_indexed_sources(corpus) -> None:
    config = PretrainDataConfig(shards=[str(corpus)], synth_train=8)
    with pytest.raises(PersecError, match="cannot be combined"):
        UnlabelledDataModule(config, ImageConfig()).setup("fit")


def test_pretrain_on_shards(tmp_path, run_cli) -> None:
    for i in range(6):
        Image.new("RGB", (90 + i, 30), (i * 40, 100, 200 - i * 30)).save(tmp_path / f"{i}.png")
    code, _, err = run_cli(["shard", str(tmp_path), "--out", str(tmp_path / "sh"),
                            "--per-shard", "3"])  # fmt: skip
    assert code == 0, err
    run = tmp_path / "run"
    code, out, err = run_cli(["pretrain", *PRETRAIN_TINY, f"data.shards=[{tmp_path / 'sh'}]",
                              "data.batch_size=3", "data.shuffle_buffer=4",
                              "trainer.max_steps=3", "trainer.val_every=0",
                              f"output_dir={run}"])  # fmt: skip
    assert code == 0, err
    assert "pretrained 3 steps" in out and (run / "encoder.safetensors").is_file()


def test_streamed_pretraining_with_validation_needs_a_step_cadence(corpus, tmp_path, run_cli):
    code, _, err = run_cli(["pretrain", *PRETRAIN_TINY, f"data.shards=[{corpus}]",
                            "data.synth_val=8", "trainer.val_every=0",
                            f"output_dir={tmp_path / 'run'}"])  # fmt: skip
    assert code == 2 and "trainer.val_every > 0" in err
