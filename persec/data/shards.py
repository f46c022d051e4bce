"""Streamed corpora: many shards read one after another, never indexed up front.

A shard is a clovaai/parseq-format LMDB directory or a WebDataset-style ``.tar``
file whose members are grouped by key (the name up to the first dot of its last
path component): ``000000017.png`` holds the image (``png``, ``jpg``, ``jpeg``,
``webp``, ...) and ``000000017.txt`` the optional UTF-8 label. Members of one sample
must be adjacent, as ``persec shard`` writes them.

Each epoch the shard list is shuffled with ``(seed, epoch)``; shard ``i`` of that
order goes to rank ``i % world_size`` and, within the rank, to loader worker
``k % num_workers`` (``k`` its position among the rank's shards). Samples then pass
through a fixed-size shuffle buffer seeded by ``(seed, epoch, rank, worker)``, so
memory depends on the buffer and the shard being read, not on the corpus size.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import os
import random
import tarfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from persec.data.dataset import LABEL_NOT_UTF8, MISSING_FILE, MISSING_KEY, UNDECODABLE, Skipped
from persec.data.folder import IMAGE_EXTENSIONS
from persec.data.lmdb import (
    image_key,
    label_key,
    open_env,
    read_num_samples,
    shared_env,
    write_lmdb,
)
from persec.errors import DataError
from persec.image import ImageDecodeError, decode_image

logger = logging.getLogger("persec.data")

TAR_SUFFIX = ".tar"
INDEX_FILE = "shards.json"
LABEL_EXTENSION = "txt"
IMAGE_MEMBER_EXTENSIONS = frozenset(e.lstrip(".") for e in IMAGE_EXTENSIONS)
UNREADABLE_SHARD = "unreadable shard"  # a tar that ends early or is damaged mid-stream
DEFAULT_SHUFFLE_BUFFER = 2048

T = TypeVar("T")


class RawSample(NamedTuple):
    """One sample as stored: encoded image bytes, label (``None``: none read) and origin."""

    data: bytes
    label: str | None
    source: str


# ------------------------------------------------------------------ listing, splitting
def list_shards(paths: Iterable[str | Path]) -> list[Path]:
    """Every shard under ``paths``: ``.tar`` files and LMDB directories, found
    recursively (links followed, each real file once), sorted within each path.

    Raises:
        DataError: a path does not exist, or no shard is found at all.
    """
    found: list[Path] = []
    seen: set[str] = set()

    def add(path: Path) -> None:
        real = os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            found.append(path)

    for root in map(Path, paths):
        if not root.exists():
            raise DataError(f"shard path {root} does not exist")
        if root.is_file():
            if root.suffix != TAR_SUFFIX:
                raise DataError(f"{root} is not a shard: expected a {TAR_SUFFIX} file")
            add(root)
            continue
        here: list[Path] = []
        for dirpath, dirnames, files in os.walk(root, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            if "data.mdb" in files:
                here.append(Path(dirpath))
            here += [Path(dirpath) / f for f in files if f.endswith(TAR_SUFFIX)]
        for path in sorted(here):
            add(path)
    if not found:
        raise DataError(
            f"no shards ({TAR_SUFFIX} files or LMDB directories) under "
            f"{', '.join(map(str, paths))}; `persec shard` writes them"
        )
    return found


def assign_shards(
    n_shards: int,
    epoch: int,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    worker: int = 0,
    num_workers: int = 1,
    shuffle: bool = True,
) -> list[int]:
    """Indices of the shards that one loader worker of one rank reads in ``epoch``.

    Over all ``(rank, worker)`` pairs the results partition ``range(n_shards)``.

    Raises:
        DataError: fewer shards than ``world_size * num_workers`` (someone gets none).
    """
    if n_shards < world_size * num_workers:
        raise DataError(
            f"{n_shards} shard(s) for {world_size} rank(s) x {num_workers} loader worker(s): "
            "every worker of every rank needs at least one; write more, smaller shards "
            "(persec shard --per-shard) or use fewer workers"
        )
    order = list(range(n_shards))
    if shuffle:
        _rng(seed, epoch).shuffle(order)
    return order[rank::world_size][worker::num_workers]


def buffered_shuffle(items: Iterable[T], size: int, rng: random.Random) -> Iterator[T]:
    """Yield ``items`` in an order shuffled through a buffer of ``size`` items.

    Once the buffer is full, each new item replaces a uniformly drawn one, which is
    yielded; the rest is yielded in random order at the end. Memory: ``size`` items.
    """
    buffer: list[T] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        i = rng.randrange(size)
        buffer[i], item = item, buffer[i]
        yield item
    rng.shuffle(buffer)
    yield from buffer


def _rng(*parts: int) -> random.Random:
    # A string seed is hashed with SHA-512: the same in every process and Python run.
    return random.Random("persec-shards:" + ":".join(map(str, parts)))


# ------------------------------------------------------------------ reading one shard
def _split_member(name: str) -> tuple[str, str]:
    head, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), ext.lower()


def _tar_sample(
    path: Path, key: str, files: dict[str, bytes], unlabelled: bool
) -> RawSample | Skipped:
    source = f"{path}:{key}"
    if "image" not in files:
        return Skipped(MISSING_FILE, source)
    if unlabelled:
        return RawSample(files["image"], None, source)
    if LABEL_EXTENSION not in files:
        return Skipped(MISSING_FILE, source + f".{LABEL_EXTENSION}")
    try:
        label = files[LABEL_EXTENSION].decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        return Skipped(LABEL_NOT_UTF8, source)
    return RawSample(files["image"], label, source)


def read_tar_shard(path: Path, unlabelled: bool = False) -> Iterator[RawSample | Skipped]:
    """Samples of a tar shard in stored order, read as a stream (no index, no seeks).

    A shard that is not a tar, or is damaged mid-stream, yields one
    ``Skipped("unreadable shard")`` and ends (logged as a warning).

    Raises:
        DataError: the file cannot be opened (missing, no permission).
    """
    try:
        tar = tarfile.open(path, mode="r|*")
    except tarfile.TarError as e:
        logger.warning("tar shard %s cannot be read: %s", path, e)
        yield Skipped(UNREADABLE_SHARD, str(path))
        return
    except OSError as e:
        raise DataError(f"cannot open tar shard {path}: {e}") from e
    key: str | None = None
    files: dict[str, bytes] = {}
    with tar:
        try:
            while (member := tar.next()) is not None:
                tar.members = []  # stream mode keeps every header: memory would grow
                if not member.isfile():
                    continue
                name, ext = _split_member(member.name)
                if name != key:
                    if key is not None:
                        yield _tar_sample(path, key, files, unlabelled)
                    key, files = name, {}
                slot = "image" if ext in IMAGE_MEMBER_EXTENSIONS else ext
                if slot == LABEL_EXTENSION or (slot == "image" and slot not in files):
                    files[slot] = tar.extractfile(member).read()  # type: ignore[union-attr]
        except (OSError, EOFError, tarfile.TarError) as e:
            logger.warning("tar shard %s is damaged after key %s: %s", path, key, e)
            yield Skipped(UNREADABLE_SHARD, f"{path}:{key}")
            return
    if key is not None:
        yield _tar_sample(path, key, files, unlabelled)


def read_lmdb_shard(path: Path, unlabelled: bool = False) -> Iterator[RawSample | Skipped]:
    """Samples of an LMDB shard in key order ``1..num-samples``.

    The database is opened for this pass and closed after it (unless this process
    already shares a handle on it), so its mapped pages do not pile up across shards.
    """
    shared = shared_env(path, create=False)
    env = shared if shared is not None else open_env(path)
    try:
        with env.begin() as txn:
            for i in range(1, read_num_samples(txn, path) + 1):
                source = f"{path}:image-{i:09d}"
                data = txn.get(image_key(i))
                raw = None if unlabelled else txn.get(label_key(i))
                if data is None or (raw is None and not unlabelled):
                    yield Skipped(MISSING_KEY, source)
                    continue
                try:
                    label = None if raw is None else raw.decode("utf-8")
                except UnicodeDecodeError:
                    yield Skipped(LABEL_NOT_UTF8, source)
                    continue
                yield RawSample(data, label, source)
    finally:
        if shared is None:
            env.close()


# ------------------------------------------------------------------ the stream
class ShardStream(IterableDataset):
    """Samples of many shards, streamed: split across ranks and loader workers,
    shuffled through a buffer, decoded as they come out.

    Items are what the map-style datasets return: ``(transform(image), label)`` or a
    :class:`Skipped` (undecodable image, missing member, damaged shard), so
    :func:`~persec.data.dataset.collate_samples` counts skips as usual. Labels are
    read as written (no charset filter).

    Args:
        paths: shard files, LMDB directories or directory trees holding them.
        transform: applied to the RGB PIL image.
        seed: seed of the shard order and of the shuffle buffers.
        shuffle_buffer: samples held for shuffling (per loader worker); 0 or 1: off.
        shuffle: shuffle the shard order and the samples; ``False`` reads the shards
            in sorted order, samples in stored order.
        rank / world_size: this process's share (see :meth:`set_distributed`).
        epoch: the epoch the next pass reads (see :meth:`set_epoch`).
        unlabelled: do not read labels; items get ``None``.
        endless: one pass reads epoch after epoch and never ends. DDP needs it: ranks
            whose shards hold different numbers of samples would otherwise end their
            epochs at different steps and wait on each other forever.

    Raises:
        DataError: no shard under ``paths`` (see :func:`list_shards`).
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        transform: Callable[[Any], Any] | None = None,
        seed: int = 0,
        shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        epoch: int = 0,
        unlabelled: bool = False,
        endless: bool = False,
    ):
        if shuffle_buffer < 0:
            raise DataError(f"shuffle buffer must be >= 0, got {shuffle_buffer}")
        self.shards = list_shards(paths)
        self.transform = transform
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.shuffle = shuffle
        self.unlabelled = unlabelled
        self.endless = endless
        self.epoch = epoch
        self.set_distributed(rank, world_size)

    def set_epoch(self, epoch: int) -> None:
        """Read epoch ``epoch`` on the next pass (loader workers copy it when they start)."""
        self.epoch = epoch

    def set_distributed(self, rank: int, world_size: int) -> None:
        """Read rank ``rank``'s share of the shards out of ``world_size`` ranks."""
        if not 0 <= rank < world_size:
            raise DataError(f"rank must be in [0, {world_size}), got {rank}")
        self.rank, self.world_size = rank, world_size

    def my_shards(
        self, worker: int = 0, num_workers: int = 1, epoch: int | None = None
    ) -> list[Path]:
        """The shards one loader worker of this rank reads in ``epoch`` (default: the
        current one)."""
        epoch = self.epoch if epoch is None else epoch
        order = assign_shards(
            len(self.shards), epoch, self.seed, self.rank, self.world_size,
            worker, num_workers, self.shuffle,
        )  # fmt: skip
        return [self.shards[i] for i in order]

    def raw_samples(
        self, worker: int = 0, num_workers: int = 1, epoch: int | None = None
    ) -> Iterator[RawSample | Skipped]:
        """Undecoded samples of one worker's share of ``epoch`` (default: the current
        one), after the shuffle buffer."""
        epoch = self.epoch if epoch is None else epoch
        records = itertools.chain.from_iterable(
            read_lmdb_shard(p, self.unlabelled) if p.is_dir()
            else read_tar_shard(p, self.unlabelled)
            for p in self.my_shards(worker, num_workers, epoch)
        )  # fmt: skip
        if not self.shuffle or self.shuffle_buffer <= 1:
            return records
        rng = _rng(self.seed, epoch, self.rank, worker)
        return buffered_shuffle(records, self.shuffle_buffer, rng)

    def __iter__(self) -> Iterator[tuple[Any, str | None] | Skipped]:
        info = get_worker_info()
        worker, num_workers = (0, 1) if info is None else (info.id, info.num_workers)
        epoch = self.epoch
        while True:
            images = 0
            for record in self.raw_samples(worker, num_workers, epoch):
                if isinstance(record, Skipped):
                    yield record
                    continue
                try:
                    image = decode_image(record.data)
                except ImageDecodeError:
                    yield Skipped(UNDECODABLE, record.source)
                    continue
                images += 1
                yield (image if self.transform is None else self.transform(image)), record.label
            if not self.endless:
                return
            if images == 0:  # endless over nothing would spin forever
                raise DataError(
                    f"rank {self.rank}, loader worker {worker}: no readable image in its "
                    f"shards of epoch {epoch}: {', '.join(map(str, self.my_shards(worker, num_workers, epoch)))}"
                )
            epoch += 1

    def __repr__(self) -> str:
        return (
            f"ShardStream({len(self.shards)} shards, rank {self.rank}/{self.world_size}, "
            f"epoch {self.epoch}, buffer {self.shuffle_buffer}{', endless' if self.endless else ''})"
        )


class StreamLoader(DataLoader):
    """A ``DataLoader`` over a :class:`ShardStream` that sets the stream's epoch
    before each pass, so workers (restarted every pass) read that epoch's order.

    Args:
        stream: the stream.
        epoch_fn: returns the epoch of the pass about to start (e.g. the trainer's
            current epoch); default: count the passes from the stream's epoch.
        **kwargs: ``DataLoader`` arguments; ``persistent_workers`` must stay off.
    """

    def __init__(self, stream: ShardStream, epoch_fn: Callable[[], int] | None = None, **kwargs):
        if kwargs.get("persistent_workers"):
            raise ValueError("persistent workers would keep the first epoch's shard order")
        super().__init__(stream, **kwargs)
        self.epoch_fn = epoch_fn
        self._next_epoch = stream.epoch

    def __iter__(self):
        stream: ShardStream = self.dataset  # type: ignore[assignment]
        epoch = self.epoch_fn() if self.epoch_fn is not None else self._next_epoch
        self._next_epoch = epoch + 1
        stream.set_epoch(epoch)
        stream.my_shards(0, max(self.num_workers, 1))  # too few shards: fail here, not in a worker
        return super().__iter__()


# ------------------------------------------------------------------ writing
_MAGIC = [
    (b"\x89PNG", "png"), (b"\xff\xd8", "jpg"), (b"GIF8", "gif"),
    (b"BM", "bmp"), (b"II*\x00", "tif"), (b"MM\x00*", "tif"),
]  # fmt: skip


def image_extension(data: bytes, default: str = "png") -> str:
    """Member extension for encoded image bytes, from their magic number."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((ext for magic, ext in _MAGIC if data.startswith(magic)), default)


def _write_tar(path: Path, samples: Iterable[tuple[bytes, str | None]], start: int) -> int:
    partial = path.with_name(path.name + ".partial")  # never leave a half shard behind
    n = 0
    with tarfile.open(partial, "w") as tar:
        for n, (data, label) in enumerate(samples, 1):
            key = f"{start + n - 1:09d}"
            members = [(f"{key}.{image_extension(data)}", data)]
            if label is not None:
                members.append((f"{key}.{LABEL_EXTENSION}", label.encode("utf-8")))
            for name, payload in members:
                info = tarfile.TarInfo(name)  # mtime 0, root-owned: reproducible bytes
                info.size, info.mode = len(payload), 0o644
                tar.addfile(info, io.BytesIO(payload))
    partial.rename(path)
    return n


def write_shards(
    samples: Iterable[tuple[bytes, str | None]],
    out: str | Path,
    per_shard: int = 10_000,
    format: str = "tar",
    total: int | None = None,
    progress: bool | None = None,
    meta: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Write ``(encoded image, label or None)`` pairs into numbered shards under ``out``
    (``shard-000000.tar``, ... or ``shard-000000/`` LMDBs) and the index ``shards.json``.

    Image bytes are stored unchanged. An LMDB shard needs a label per sample (an
    unlabelled sample gets an empty one, which ``LmdbDataset`` skips as empty).

    Args:
        samples: the pairs, in output order.
        out: output directory (may exist, but must hold no shards).
        per_shard: samples per shard (the last one may hold fewer).
        format: ``"tar"`` or ``"lmdb"``.
        total: number of samples, for the progress bar.
        progress: show a progress bar (``None``: only on a terminal).
        meta: extra entries for ``shards.json`` (source, seed, ...).

    Returns:
        one ``{"name", "count"}`` per shard, as listed in ``shards.json``.

    Raises:
        DataError: bad ``per_shard`` / ``format``, shards already in ``out``, or no sample.
    """
    out = Path(out)
    if per_shard < 1:
        raise DataError(f"samples per shard must be >= 1, got {per_shard}")
    if format not in ("tar", "lmdb"):
        raise DataError(f"unknown shard format {format!r}: use 'tar' or 'lmdb'")
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; give a new directory")
    if (out / INDEX_FILE).exists() or any(out.glob("shard-*")):
        raise DataError(f"{out} already holds shards; choose a new output directory")
    out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(
        samples, total=total, unit="img", desc="shard",
        disable=None if progress is None else not progress,
    )  # fmt: skip
    it = iter(bar)
    shards: list[dict[str, Any]] = []
    written = 0
    while (first := next(it, None)) is not None:
        chunk = itertools.chain([first], itertools.islice(it, per_shard - 1))
        name = f"shard-{len(shards):06d}" + (TAR_SUFFIX if format == "tar" else "")
        if format == "tar":
            count = _write_tar(out / name, chunk, written)
        else:
            count = write_lmdb(out / name, ((d, "" if lb is None else lb) for d, lb in chunk))
        shards.append({"name": name, "count": count})
        written += count
    bar.close()
    if not shards:
        raise DataError("no samples to write")
    index = {"format": format, "total": written, **(meta or {}), "shards": shards}
    (out / INDEX_FILE).write_text(json.dumps(index, indent=1) + "\n")
    return shards
