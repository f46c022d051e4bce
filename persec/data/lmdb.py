"""LMDB datasets in the clovaai/parseq format.

Layout of one database: ``num-samples`` (ASCII integer) and, for ``i`` in
``1..num-samples``, ``image-%09d`` (encoded PNG/JPEG bytes) and ``label-%09d``
(UTF-8 text). A directory tree holding several databases is read as one dataset,
the databases concatenated in sorted path order.
"""

from __future__ import annotations

import bisect
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
from torch.utils.data import Dataset

from persec.charset import Charset, resolve_charset
from persec.data.dataset import (
    LABEL_NOT_UTF8,
    MISSING_KEY,
    UNDECODABLE,
    Skipped,
    SkipReport,
    dataset_name,
    filter_label,
)
from persec.data.layout_registry import Layout, register_layout
from persec.errors import DataError
from persec.image import ImageDecodeError, decode_image


def image_key(i: int) -> bytes:
    """Key of the i-th (1-based) image."""
    return b"image-%09d" % i


def label_key(i: int) -> bytes:
    """Key of the i-th (1-based) label."""
    return b"label-%09d" % i


def write_lmdb(
    path: str | Path,
    samples: Iterable[tuple[bytes, str]],
    map_size: int = 1 << 40,
    commit_every: int = 1000,
) -> int:
    """Write ``(encoded_image_bytes, label)`` pairs to a new LMDB at ``path``.

    ``map_size`` is only an address-space reservation (sparse file), so the default
    is large. Returns the number of samples written.
    """
    path = Path(path)
    if (path / "data.mdb").exists():
        raise DataError(f"{path} already holds an LMDB; choose a new output directory")
    path.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(path), map_size=map_size, subdir=True, meminit=False, map_async=True)
    n = 0
    try:
        txn = env.begin(write=True)
        for image, label in samples:
            n += 1
            txn.put(image_key(n), image)
            txn.put(label_key(n), label.encode("utf-8"))
            if n % commit_every == 0:
                txn.commit()
                txn = env.begin(write=True)
        txn.put(b"num-samples", str(n).encode())
        txn.commit()
        env.sync()
    finally:
        env.close()
    return n


def find_lmdbs(root: str | Path) -> list[Path]:
    """Every directory under ``root`` (``root`` included) that holds a ``data.mdb``, sorted.

    Symbolic links to directories are followed (datasets often live on other disks),
    each real directory at most once.

    Raises:
        DataError: ``root`` does not exist.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"LMDB path {root} does not exist")
    found: list[Path] = []
    seen: set[str] = set()
    for dirpath, dirnames, files in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a link loop or a second link to the same data
            dirnames.clear()
            continue
        seen.add(real)
        if "data.mdb" in files:
            found.append(Path(dirpath))
    return sorted(found)


def open_env(path: Path) -> lmdb.Environment:
    """Open one database for reading: read-only, no lock file, no readahead (random access)."""
    try:
        return lmdb.open(str(path), readonly=True, lock=False, readahead=False, meminit=False)
    except lmdb.Error as e:
        raise DataError(f"cannot open LMDB {path}: {e}") from e


# py-lmdb refuses to open one database twice in a process, and a forked child
# inherits the parent's handles (and that refusal) but must not use them. So every
# dataset in a process shares one handle per database, and a child closes the
# inherited ones before opening its own (harmless to the parent: no lock file, and
# closing only unmaps the child's copy).
_ENVS: dict[str, lmdb.Environment] = {}
_ENVS_PID = os.getpid()
_ENVS_LOCK = threading.Lock()


def _reset_lock_in_child() -> None:
    global _ENVS_LOCK
    _ENVS_LOCK = threading.Lock()  # another thread may have held it at fork time


os.register_at_fork(after_in_child=_reset_lock_in_child)


def _drop_inherited_envs() -> None:
    global _ENVS_PID
    if _ENVS_PID != os.getpid():
        for env in _ENVS.values():
            env.close()
        _ENVS.clear()
        _ENVS_PID = os.getpid()


def shared_env(path: Path, create: bool = True) -> lmdb.Environment | None:
    """This process's read-only handle on a database, opened on first use.

    Args:
        path: the LMDB directory.
        create: open the database when no handle exists yet; with ``False``,
            return ``None`` instead.
    """
    key = os.path.realpath(path)
    with _ENVS_LOCK:
        _drop_inherited_envs()
        env = _ENVS.get(key)
        if env is None and create:
            env = _ENVS[key] = open_env(path)
        return env


def close_envs() -> None:
    """Close every handle this process holds (they reopen lazily when needed)."""
    with _ENVS_LOCK:
        _drop_inherited_envs()
        for env in _ENVS.values():
            env.close()
        _ENVS.clear()


def read_num_samples(txn: lmdb.Transaction, path: Path) -> int:
    """The ``num-samples`` entry of an open database, validated."""
    raw = txn.get(b"num-samples")
    if raw is None:
        raise DataError(
            f"LMDB {path} has no 'num-samples' key; expected the clovaai/parseq format "
            "(num-samples, image-%09d, label-%09d, 1-based)"
        )
    try:
        n = int(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise DataError(f"LMDB {path}: 'num-samples' is not an integer: {raw[:40]!r}") from None
    if n < 0:
        raise DataError(f"LMDB {path}: 'num-samples' is negative ({n})")
    # Every sample needs at least its image key: a count beyond that is corrupt, and
    # trusting it would mean scanning (or sampling) billions of keys that are not there.
    entries = txn.stat()["entries"]
    if n + 1 > entries:
        raise DataError(
            f"LMDB {path}: 'num-samples' is {n} but the database holds only {entries} "
            "entries; it is corrupt or not in the clovaai/parseq format"
        )
    return n


@dataclass
class _Shard:
    """One database of the concatenation: which of its keys are used, and their labels."""

    path: Path
    length: int
    keys: np.ndarray | None = None  # (length,) int64 1-based key indices; None = 1..length
    labels: list[str] | None = None  # None when unlabelled


class LmdbDataset(Dataset):
    """Samples from one LMDB or a directory tree of LMDBs, concatenated.

    Labels are read and filtered once at init (skips counted in ``self.report``); images are read and decoded in ``__getitem__``. The LMDB handles
    are opened lazily in each process (see :func:`shared_env`): they are not part of
    the dataset's state, so it pickles, and ``DataLoader`` workers open their own.

    Args:
        root: an LMDB directory or a directory tree holding several.
        charset: label filter (preset name, charset file, Charset, or ``None`` for
            labels as written; see :func:`~persec.data.dataset.filter_label`).
        max_label_length: longer labels are skipped (``None``: no limit).
        unlabelled: do not read labels (they may be absent); items get label ``None``
            and init costs one read per database, whatever its size.
        remove_unsupported: drop characters outside the charset instead of skipping.
        transform: applied to the RGB PIL image.
        name: display name; defaults to the folder name of ``root``.

    Raises:
        DataError: no LMDB under ``root``, or a database without a valid ``num-samples``.
    """

    def __init__(
        self,
        root: str | Path,
        charset: Charset | str | None = None,
        max_label_length: int | None = 25,
        unlabelled: bool = False,
        remove_unsupported: bool = False,
        transform: Callable[[Any], Any] | None = None,
        name: str | None = None,
    ):
        self.root = Path(root)
        paths = find_lmdbs(self.root)
        if not paths:
            raise DataError(f"no LMDB (data.mdb) found under {self.root}")
        self.charset = resolve_charset(charset)
        self.max_label_length = max_label_length
        self.unlabelled = unlabelled
        self.remove_unsupported = remove_unsupported
        self.transform = transform
        self.name = name or dataset_name(self.root)
        self.report = SkipReport(self.name)
        self._shards = [self._scan(p) for p in paths]
        # _offsets[k] = index of the first sample of shard k in the concatenation.
        self._offsets = np.cumsum([0] + [s.length for s in self._shards]).tolist()

    @property
    def paths(self) -> list[Path]:
        """The databases read, in concatenation order."""
        return [s.path for s in self._shards]

    def _scan(self, path: Path) -> _Shard:
        # Scan through a temporary handle, so that nothing stays open after init,
        # unless another dataset of this process already holds one.
        shared = shared_env(path, create=False)
        env = shared if shared is not None else open_env(path)
        try:
            with env.begin() as txn:
                n = read_num_samples(txn, path)
                if self.unlabelled:
                    self.report.keep(n)
                    return _Shard(path, n)
                keys, labels = self._scan_labels(txn, path, n)
                self.report.keep(len(keys))
                return _Shard(path, len(keys), np.asarray(keys, dtype=np.int64), labels)
        except lmdb.Error as e:
            raise DataError(f"cannot read LMDB {path}: {e}") from e
        finally:
            if shared is None:
                env.close()

    def _scan_labels(
        self, txn: lmdb.Transaction, path: Path, n: int
    ) -> tuple[list[int], list[str]]:
        """Keys and filtered labels of the usable samples; skips go to the report."""
        keys: list[int] = []
        labels: list[str] = []
        cursor = txn.cursor()
        for i in range(1, n + 1):
            raw = txn.get(label_key(i))
            # set_key only positions the cursor: the image bytes are not copied.
            if raw is None or not cursor.set_key(image_key(i)):
                self.report.skip(MISSING_KEY, f"{path}:image-{i:09d}")
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                self.report.skip(LABEL_NOT_UTF8, f"{path}:image-{i:09d}")
                continue
            label, reason = filter_label(
                text, self.charset, self.max_label_length, self.remove_unsupported
            )
            if label is None:
                self.report.skip(reason or "invalid label", f"{path}:image-{i:09d}")
                continue
            keys.append(i)
            labels.append(label)
        return keys, labels

    def _env(self, shard: int) -> lmdb.Environment:
        # The handle is not an attribute, so pickling the dataset never touches it.
        return shared_env(self._shards[shard].path)  # type: ignore[return-value]

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return self._offsets[-1]

    def _locate(self, index: int) -> tuple[int, int, int]:
        """(shard, position within the shard, 1-based key index) of a global index."""
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        shard = bisect.bisect_right(self._offsets, index) - 1
        pos = index - self._offsets[shard]
        keys = self._shards[shard].keys
        return shard, pos, (pos + 1 if keys is None else int(keys[pos]))

    def label(self, index: int) -> str | None:
        """The (normalised) label of a sample without reading its image."""
        shard, pos, _ = self._locate(index)
        labels = self._shards[shard].labels
        return None if labels is None else labels[pos]

    def source(self, index: int) -> str:
        """Where a sample lives, e.g. ``data/train:image-000000017``."""
        shard, _, key = self._locate(index)
        return f"{self._shards[shard].path}:image-{key:09d}"

    def read_bytes(self, index: int) -> bytes | None:
        """The encoded image bytes as stored (``None`` if the key is missing)."""
        shard, _, key = self._locate(index)
        with self._env(shard).begin() as txn:
            return txn.get(image_key(key))

    def __getitem__(self, index: int) -> tuple[Any, str | None] | Skipped:
        """``(transform(image) or PIL image, label)``, or :class:`Skipped` for a bad image."""
        shard, pos, key = self._locate(index)
        with self._env(shard).begin() as txn:
            data = txn.get(image_key(key))
        if data is None:
            return Skipped(MISSING_KEY, f"{self._shards[shard].path}:image-{key:09d}")
        try:
            image = decode_image(data)
        except ImageDecodeError:
            return Skipped(UNDECODABLE, f"{self._shards[shard].path}:image-{key:09d}")
        if self.transform is not None:
            image = self.transform(image)
        labels = self._shards[shard].labels
        return image, (None if labels is None else labels[pos])

    def __repr__(self) -> str:
        return f"LmdbDataset({self.name!r}, {len(self)} samples, {len(self._shards)} LMDBs)"


def has_lmdb(path: Path) -> bool:
    """Whether ``path`` or any directory under it holds a ``data.mdb``."""
    for _, _, files in os.walk(path, followlinks=True):
        if "data.mdb" in files:
            return True
    return False


def _open_lmdb(path, charset=None, unlabelled=False, transform=None, **kwargs) -> LmdbDataset:
    return LmdbDataset(path, charset=charset, unlabelled=unlabelled, transform=transform, **kwargs)


register_layout(
    Layout(
        "lmdb",
        "a directory holding one or more LMDBs (data.mdb)",
        holds=has_lmdb,
        is_root=lambda path: (path / "data.mdb").is_file(),
        open=_open_lmdb,
        order=1,
    )
)
