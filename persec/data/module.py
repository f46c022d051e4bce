"""Training and validation data: labelled for recognition (LMDB trees, gt.txt folders
and the renderer, concatenated, with a deterministic label fraction) and unlabelled for
pretraining (the same sources with labels ignored, plus plain image folders).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import lightning as L
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from persec.charset import Charset
from persec.data.buckets import width_keys
from persec.data.dataset import collate_samples
from persec.data.layouts import open_dataset
from persec.data.render.config import SynthConfig
from persec.data.render.dataset import SynthDataset
from persec.data.sampler import RankShareSampler, ResumableSampler
from persec.data.shards.stream import DEFAULT_SHUFFLE_BUFFER, ShardStream, StreamLoader
from persec.errors import PersecError
from persec.image import ImageConfig, ToTensor

logger = logging.getLogger("persec.data")


@dataclass
class PretrainDataConfig:
    """Where images come from; labels, if any, are ignored (pretraining).

    Attributes:
        train: LMDB trees, gt.txt folders or (unlabelled only) plain image folders.
        train_repeat: each ``train`` set is read this many times per epoch (the
            rendered images once): how a small real set keeps its share in a mix
            with a large rendered one.
        shards: a corpus of tar and/or LMDB shards (files or directory trees, see
            ``persec shard``), streamed, not indexed: memory independent of corpus
            size. Split across ranks and loader workers by shard; a resumed run
            goes on exactly after the samples its steps read. Pretraining only; not combined with ``train`` or
            ``synth_train``.
        shuffle_buffer: samples each loader worker holds to shuffle ``shards`` (0: off).
        synth_train: rendered training images (0 = none); index i is image i of
            ``persec render --seed synth_seed``.
        synth_seed: renderer seed for the training images.
        val: held-out images, same layouts.
        synth_val: rendered validation images in held-out font families (0 = none).
        synth_val_seed: renderer seed for validation (keep it apart from synth_seed).
        synth: renderer settings for both.
        batch_size: images per step.
        workers: data-loader processes (0 = in the main process).
    """

    train: list[str] = field(default_factory=list)
    train_repeat: int = 1
    shards: list[str] = field(default_factory=list)
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER
    synth_train: int = 0
    synth_seed: int = 0
    val: list[str] = field(default_factory=list)
    synth_val: int = 0
    synth_val_seed: int = 1_000_003
    synth: SynthConfig = field(default_factory=SynthConfig)
    batch_size: int = 64
    workers: int = 2


@dataclass
class RecognitionDataConfig(PretrainDataConfig):
    """Where labelled images come from: the fields of :class:`PretrainDataConfig`
    (``train`` and ``val`` must carry labels) plus the label filters.

    Attributes:
        label_fraction: share of the training labels used (semi-supervised
            protocol); a subset fixed by ``fraction_seed``.
        fraction_seed: seed of that subset.
        max_label_length: longer labels are skipped (0: no cap, for text lines).
        bucket_by_width: [ours, for text lines] batch training samples of similar
            width together (:mod:`persec.data.buckets`), so that lines whose aspect is
            kept are padded little.
        bucket_pool: batches sorted together when bucketing: larger pools pad less
            but make the batch order less random.
    """

    label_fraction: float = 1.0
    fraction_seed: int = 0
    max_label_length: int = 25
    bucket_by_width: bool = False
    bucket_pool: int = 50


def label_subset(dataset: Dataset, fraction: float, seed: int) -> Dataset:
    """A fixed random ``fraction`` of ``dataset`` (same indices for the same seed)."""
    if not 0.0 < fraction <= 1.0:
        raise PersecError(f"label fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return dataset
    n = len(dataset)
    k = max(1, round(fraction * n))
    g = torch.Generator().manual_seed(seed)
    indices = torch.randperm(n, generator=g)[:k].sort().values.tolist()
    return Subset(dataset, indices)


class _ImageDataModule(L.LightningDataModule):
    """Loaders shared by the labelled and unlabelled modules.

    Subclasses implement ``_open`` (one path on disk); ``config`` needs ``train``,
    ``synth_train``, ``synth_seed``, ``val``, ``synth_val``, ``synth_val_seed``,
    ``synth``, ``batch_size`` and ``workers``. ``seed`` fixes the training order
    (see :class:`~persec.data.sampler.ResumableSampler`).
    """

    def __init__(self, config, image: ImageConfig, seed: int = 0):
        super().__init__()
        self.config = config
        self.seed = seed
        self.image = image
        self.transform = ToTensor(image)
        self.train_set: Dataset | None = None
        self.val_sets: list[Dataset] = []

    def _open(self, path: str) -> Dataset:
        raise NotImplementedError

    def _opened(self, path: str) -> Dataset:
        """``_open(path)``, its skip report logged (once: datasets do not log)."""
        dataset = self._open(path)
        report = getattr(dataset, "report", None)
        if report is not None:
            report.log()
        return dataset

    def build_train(self) -> Dataset:
        """All training sources, concatenated (or the stream of ``data.shards``)."""
        c = self.config
        if c.shards:
            return self.build_stream()
        if c.train_repeat < 1:
            raise PersecError(f"data.train_repeat must be >= 1, got {c.train_repeat}")
        parts: list[Dataset] = [self._opened(p) for p in c.train] * c.train_repeat
        if c.synth_train > 0:
            parts.append(
                SynthDataset(c.synth_train, c.synth, "train", c.synth_seed, self.transform)
            )
        if not parts:
            raise PersecError("no training data: set data.train=[...] and/or data.synth_train=N")
        return parts[0] if len(parts) == 1 else ConcatDataset(parts)

    def build_val(self) -> list[Dataset]:
        """One validation set per source (each is reported on its own)."""
        c = self.config
        sets: list[Dataset] = [self._opened(p) for p in c.val]
        if c.synth_val > 0:
            sets.append(
                SynthDataset(c.synth_val, c.synth, "test", c.synth_val_seed, self.transform)
            )
        return sets

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None and stage in (None, "fit"):
            self.train_set = self.build_train()
            self.val_sets = self.build_val()
            if isinstance(self.train_set, ShardStream):
                logger.info("training data: %s", self.train_set)
            else:
                logger.info("training samples: %d", len(self.train_set))

    def _loader(
        self, dataset: Dataset, sampler: ResumableSampler | RankShareSampler | None = None
    ) -> DataLoader:
        workers = self.config.workers
        return DataLoader(
            dataset,
            batch_size=getattr(sampler, "batch_len", self.config.batch_size),
            sampler=sampler,
            num_workers=workers,
            collate_fn=collate_samples,
            persistent_workers=workers > 0,
            # Its own generator: creating an iterator draws worker seeds from it, and a
            # draw from the global one would shift every random number after a resume.
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_sampler(self) -> ResumableSampler:
        """This rank's share of the training set, positioned at the trainer's step
        (non-zero after ``--resume``: the run goes on with the samples it would have
        read next)."""
        trainer = self.trainer  # None outside a Trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        keys, pool = None, 1
        if getattr(self.config, "bucket_by_width", False):
            if self.config.bucket_pool < 1:
                raise PersecError(f"data.bucket_pool must be >= 1, got {self.config.bucket_pool}")
            keys, pool = width_keys(self.train_set, self.image), self.config.bucket_pool
        sampler = ResumableSampler(
            len(self.train_set),
            self.config.batch_size,
            self.seed,
            rank,
            world,
            keys=keys,
            pool_batches=pool,
        )
        sampler.start_at_step(trainer.global_step if trainer else 0)
        return sampler

    def build_stream(self) -> ShardStream:
        """The streamed corpus of ``data.shards``: unlabelled, so pretraining only."""
        raise PersecError("data.shards streams unlabelled images for pretraining only")

    def _stream_loader(self) -> DataLoader:
        """This rank's shards of ``data.shards`` as one endless pass: each loader
        worker goes from its shards of epoch ``e`` on to those of ``e + 1``, training
        stops at ``trainer.max_steps``, and ranks never wait on each other at an epoch
        end. A resumed run goes on exactly after the batches its steps consumed
        (:class:`~persec.data.shards.stream.StreamLoader`)."""
        stream: ShardStream = self.train_set  # type: ignore[assignment]
        trainer = self.trainer  # None outside a Trainer
        if trainer:
            stream.set_distributed(trainer.global_rank, trainer.world_size)
        stream.endless = True
        return StreamLoader(
            stream,
            start_fn=(lambda: trainer.global_step) if trainer else None,
            batch_size=self.config.batch_size,
            num_workers=self.config.workers,
            collate_fn=collate_samples,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        if isinstance(self.train_set, ShardStream):
            return self._stream_loader()
        return self._loader(self.train_set, self.train_sampler())

    def val_dataloader(self) -> list[DataLoader]:
        """One loader per validation set; under DDP each rank reads its own share
        (:class:`~persec.data.sampler.RankShareSampler`) and the systems add up the
        ranks' counts, so every sample is scored once."""
        trainer = self.trainer  # None outside a Trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        for i, d in enumerate(self.val_sets):
            if world > 1 and len(d) < world:  # a rank without a sample would skip the sum
                name = getattr(d, "name", f"validation set {i}")
                raise PersecError(
                    f"{name}: {len(d)} validation sample(s) for {world} ranks; under DDP "
                    "every rank needs at least one"
                )
        return [self._loader(d, RankShareSampler(len(d), rank, world)) for d in self.val_sets]


class RecognitionDataModule(_ImageDataModule):
    """Lightning data module for supervised training.

    Batches are ``(images (B, C, H, W), labels list[str], skipped Counter)``
    (see :func:`~persec.data.dataset.collate_samples`).
    """

    def __init__(
        self, config: RecognitionDataConfig, image: ImageConfig, charset: Charset, seed: int = 0
    ):
        super().__init__(config, image, seed)
        self.charset = charset

    def _open(self, path: str) -> Dataset:
        return open_dataset(
            path,
            charset=self.charset,
            transform=self.transform,
            max_label_length=self.config.max_label_length or None,
        )

    def build_train(self) -> Dataset:
        """The concatenated training set, after the label fraction."""
        c = self.config
        return label_subset(super().build_train(), c.label_fraction, c.fraction_seed)


class UnlabelledDataModule(_ImageDataModule):
    """Lightning data module for pretraining: batches are ``(images (B, C, H, W),
    labels (ignored), skipped Counter)``."""

    def __init__(self, config: PretrainDataConfig, image: ImageConfig, seed: int = 0):
        super().__init__(config, image, seed)

    def _open(self, path: str) -> Dataset:
        return open_dataset(path, unlabelled=True, transform=self.transform)

    def build_stream(self) -> ShardStream:
        """The images of ``data.shards``, streamed (labels not read)."""
        c = self.config
        if c.train or c.synth_train:
            raise PersecError(
                "data.shards cannot be combined with data.train or data.synth_train: "
                "stream one corpus (`persec shard` converts the others into shards)"
            )
        return ShardStream(c.shards, self.transform, self.seed, c.shuffle_buffer, unlabelled=True)

    def build_val(self) -> list[Dataset]:
        """All validation sources as one set: pretraining metrics are not per source."""
        sets = super().build_val()
        return [sets[0] if len(sets) == 1 else ConcatDataset(sets)] if sets else []
