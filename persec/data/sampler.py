"""The training sampler: a seeded shuffle that knows where training stands, so a run
resumed from a checkpoint reads exactly the samples the uninterrupted run would have
read next, and each distributed rank reads its own disjoint share.

The order is a pure function of ``(seed, epoch)``: epoch ``e`` is a permutation of the
dataset drawn from ``seed`` and ``e``, cut to a multiple of ``world_size`` and dealt to
the ranks round-robin (rank ``r`` takes positions ``r, r + W, r + 2W, ...``). Each rank
then sees a stream of per-rank samples, ``epoch_len`` per epoch; optimiser step ``s``
consumes stream positions ``[s * batch_len, (s + 1) * batch_len)``. Resuming at step
``s`` therefore means starting the stream at ``s * batch_len``.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from persec.errors import PersecError


class ResumableSampler(Sampler[int]):
    """Shuffled (or sequential) indices for one rank, restartable at any step.

    Every epoch has the same number of batches on every rank (the tail that does not
    fill a batch is dropped), so steps and stream positions stay in lock-step.

    Args:
        size: samples in the dataset.
        batch_size: samples per step on this rank.
        seed: base seed of the per-epoch permutations.
        rank: this process's rank.
        world_size: number of ranks.
        shuffle: permute each epoch (else read in order, the same every epoch unless
            ``keys`` regroup it).
        keys: ``(size,)`` width key per sample (:func:`persec.data.buckets.width_keys`)
            to group samples of similar width into batches (text lines), or None.
        pool_batches: with ``keys``, how many batches are sorted together
            (:func:`bucketed_order`).

    Raises:
        PersecError: a rank would get no sample, or ``keys`` do not match ``size``.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        keys: torch.Tensor | None = None,
        pool_batches: int = 50,
    ):
        if not 0 <= rank < world_size:
            raise PersecError(f"rank {rank} is outside world size {world_size}")
        per_rank = size // world_size
        if per_rank == 0:
            raise PersecError(
                f"{size} training samples cannot be split over {world_size} ranks "
                "(each rank needs at least one)"
            )
        if keys is not None and len(keys) != size:
            raise PersecError(f"{len(keys)} width keys for {size} samples")
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.keys, self.pool_batches = keys, pool_batches
        self.rank, self.world_size = rank, world_size
        # A rank with fewer samples than a batch reads them all as one short batch.
        self.batch_len = min(batch_size, per_rank)
        self.batches = per_rank // self.batch_len
        self.epoch_len = self.batches * self.batch_len
        self._start = 0  # stream position (per rank) where the next __iter__ begins

    def __len__(self) -> int:
        return self.epoch_len

    def start_at_step(self, step: int) -> None:
        """Make the next iteration begin where optimiser step ``step`` reads."""
        self._start = step * self.batch_len

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """This rank's indices for ``epoch``, in reading order.

        Returns:
            ``(epoch_len,)`` int64 tensor.
        """
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.size, generator=g) if self.shuffle else torch.arange(self.size)
        order = order[self.rank :: self.world_size][: self.epoch_len]
        if self.keys is None:
            return order
        return bucketed_order(order, self.keys, self.batch_len, self.pool_batches, g)

    def __iter__(self) -> Iterator[int]:
        epoch, offset = divmod(self._start, self.epoch_len)
        self._start = (epoch + 1) * self.epoch_len  # the next iteration is the next epoch
        yield from self.epoch_order(epoch)[offset:].tolist()


def bucketed_order(
    order: torch.Tensor, keys: torch.Tensor, batch_len: int, pool_batches: int, generator
) -> torch.Tensor:
    """Reorder ``order`` so that consecutive ``batch_len`` runs have similar ``keys``.

    ``order`` is cut into pools of ``pool_batches`` batches; each pool is sorted by key
    (stable) and cut into batches, and the pool's batches are shuffled with
    ``generator``, so the wide and the narrow batches still alternate at random. The
    length of ``order`` must be a multiple of ``batch_len`` (every batch full).

    Args:
        order: ``(N,)`` sample indices in reading order.
        keys: ``(size,)`` width key per sample index.
        batch_len: samples per batch.
        pool_batches: batches sorted together.
        generator: shuffles the batches of each pool.

    Returns:
        ``(N,)`` the same indices, reordered.
    """
    if len(order) % batch_len:
        raise ValueError(f"{len(order)} samples do not fill batches of {batch_len}")
    pool = batch_len * max(1, pool_batches)
    parts = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[torch.argsort(keys[chunk], stable=True)]
        batches = chunk.view(-1, batch_len)  # (pool_batches, batch_len)
        parts.append(batches[torch.randperm(len(batches), generator=generator)].reshape(-1))
    return torch.cat(parts) if parts else order


class RankShareSampler(Sampler[int]):
    """Indices ``rank, rank + W, rank + 2W, ...`` of a dataset, in order: one rank's
    share of a validation set. Unlike torch's ``DistributedSampler`` nothing is padded,
    so no sample is read twice and the shares, summed over ranks, are the set exactly
    once (they differ in length by at most one).

    Args:
        size: samples in the dataset.
        rank: this process's rank.
        world_size: number of ranks.
    """

    def __init__(self, size: int, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise PersecError(f"rank must be in [0, {world_size}), got {rank}")
        self.size, self.rank, self.world_size = size, rank, world_size

    def __len__(self) -> int:
        return len(range(self.rank, self.size, self.world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.size, self.world_size))
