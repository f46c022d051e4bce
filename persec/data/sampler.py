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
        shuffle: permute each epoch (else read in order, the same every epoch).

    Raises:
        PersecError: a rank would get no sample.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
    ):
        if not 0 <= rank < world_size:
            raise PersecError(f"rank {rank} is outside world size {world_size}")
        per_rank = size // world_size
        if per_rank == 0:
            raise PersecError(
                f"{size} training samples cannot be split over {world_size} ranks "
                "(each rank needs at least one)"
            )
        self.size, self.seed, self.shuffle = size, seed, shuffle
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
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.size, generator=g)
        else:
            order = torch.arange(self.size)
        return order[self.rank :: self.world_size][: self.epoch_len]

    def __iter__(self) -> Iterator[int]:
        epoch, offset = divmod(self._start, self.epoch_len)
        self._start = (epoch + 1) * self.epoch_len  # the next iteration is the next epoch
        yield from self.epoch_order(epoch)[offset:].tolist()


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
