"""One shuffled stream over many shards, split between DDP ranks and loader workers.

Each epoch the shard list is shuffled with ``(seed, epoch)``; shard ``i`` of that
order goes to rank ``i % world_size`` and, within the rank, to loader worker
``k % num_workers`` (``k`` its position among the rank's shards). Samples then pass
through a fixed-size shuffle buffer seeded by ``(seed, epoch, rank, worker)``, so
memory depends on the buffer and the shard being read, not on the corpus size.

**Exact resume.** An endless stream read by a :class:`StreamLoader` with ``W`` workers
and batches of ``B`` hands out batch ``i`` from worker ``i % W``, each full, so after
``n`` batches worker ``k`` has given ``ceil((n - k) / W) * B`` items, and the order of
a worker's items is a pure function of ``(seed, epoch, rank, worker)``. A resumed run
therefore tells the loader how many batches were consumed (``start_fn``); each worker
skips its whole epochs by counting their shards' items (:func:`count_shard_items`,
no image read) and, in the epoch it stopped in, passes over the items already given
without decoding them. A new loader's first batch comes from its worker 0, so its
workers take the roles of workers ``n % W, n % W + 1, ...`` of the first run. Every sample of the epoch is then seen exactly once over both
parts of the run.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from persec.data.dataset import UNDECODABLE, Skipped
from persec.data.shards.format import (
    RawSample,
    count_shard_items,
    list_shards,
    read_lmdb_shard,
    read_tar_shard,
)
from persec.errors import DataError
from persec.image import ImageDecodeError, decode_image

DEFAULT_SHUFFLE_BUFFER = 2048


T = TypeVar("T")


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
        self.start_items: list[int] | None = None
        self.start_worker = 0
        self.set_distributed(rank, world_size)

    def set_start(self, items: list[int] | None, first_worker: int = 0) -> None:
        """Make the next pass begin after ``items[k]`` items of worker ``k`` (counted
        from the start of epoch :attr:`epoch`; None: from the start), loader worker
        ``i`` taking the role of worker ``(first_worker + i) % W``."""
        self.start_items, self.start_worker = items, first_worker

    def _fast_forward(self, worker: int, num_workers: int, epoch: int, skip: int):
        """Skip whole epochs of this worker's share (by item counts): the epoch to
        start in and the items to pass over in it."""
        while self.endless:
            n = sum(count_shard_items(p) for p in self.my_shards(worker, num_workers, epoch))
            if skip < n:
                break
            skip -= n
            epoch += 1
        return epoch, skip

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
        worker = (worker + self.start_worker) % num_workers
        epoch, skip = self.epoch, 0
        if self.start_items:
            epoch, skip = self._fast_forward(worker, num_workers, epoch, self.start_items[worker])
        while True:
            images, resumed = 0, skip > 0
            records = self.raw_samples(worker, num_workers, epoch)
            if skip:  # items a resumed run already trained on: read, not decoded
                records, skip = itertools.islice(records, skip, None), 0
            for record in records:
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
            if images == 0 and not resumed:  # endless over nothing would spin forever
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
        start_fn: returns how many batches of this pass were already consumed (a
            resumed run's step); the pass then goes on exactly after them (module
            docstring). Endless streams only.
        **kwargs: ``DataLoader`` arguments; ``persistent_workers`` must stay off.
    """

    def __init__(
        self,
        stream: ShardStream,
        epoch_fn: Callable[[], int] | None = None,
        start_fn: Callable[[], int] | None = None,
        **kwargs,
    ):
        if kwargs.get("persistent_workers"):
            raise ValueError("persistent workers would keep the first epoch's shard order")
        if start_fn is not None and not stream.endless:
            raise ValueError("start_fn needs an endless stream (every batch full)")
        super().__init__(stream, **kwargs)
        self.epoch_fn = epoch_fn
        self.start_fn = start_fn
        self._next_epoch = stream.epoch

    def __iter__(self):
        stream: ShardStream = self.dataset  # type: ignore[assignment]
        epoch = self.epoch_fn() if self.epoch_fn is not None else self._next_epoch
        self._next_epoch = epoch + 1
        stream.set_epoch(epoch)
        stream.my_shards(0, max(self.num_workers, 1))  # too few shards: fail here, not in a worker
        consumed = self.start_fn() if self.start_fn else 0
        stream.set_start(self.items_consumed(consumed), consumed % max(self.num_workers, 1))
        return super().__iter__()

    def items_consumed(self, batches: int) -> list[int] | None:
        """Items each worker gave for the first ``batches`` batches of a pass (batch
        ``i`` comes from worker ``i % W``, full); None for 0."""
        if batches <= 0:
            return None
        w, b = max(self.num_workers, 1), self.batch_size or 1
        return [(batches - k + w - 1) // w * b for k in range(w)]
