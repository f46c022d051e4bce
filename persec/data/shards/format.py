"""The shard formats and reading one shard, sample by sample.

Streamed corpora are many shards read one after another, never indexed up front
(:mod:`persec.data.shards.stream`). A shard is a clovaai/parseq-format LMDB directory or a WebDataset-style ``.tar``
file whose members are grouped by key (the name up to the first dot of its last
path component): ``000000017.png`` holds the image (``png``, ``jpg``, ``jpeg``,
``webp``, ...) and ``000000017.txt`` the optional UTF-8 label. Members of one sample
must be adjacent, as ``persec shard`` writes them
(:mod:`persec.data.shards.write`).
"""

from __future__ import annotations

import functools
import logging
import os
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from persec.data.dataset import LABEL_NOT_UTF8, MISSING_FILE, MISSING_KEY, Skipped
from persec.data.folder import IMAGE_EXTENSIONS
from persec.data.lmdb import image_key, label_key, open_env, read_num_samples, shared_env
from persec.errors import DataError

logger = logging.getLogger("persec.data")

TAR_SUFFIX = ".tar"
INDEX_FILE = "shards.json"
LABEL_EXTENSION = "txt"
IMAGE_MEMBER_EXTENSIONS = frozenset(e.lstrip(".") for e in IMAGE_EXTENSIONS)
UNREADABLE_SHARD = "unreadable shard"  # a tar that ends early or is damaged mid-stream


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


@functools.lru_cache(maxsize=65536)
def count_shard_items(path: Path) -> int:
    """How many items (samples or skips) :func:`read_tar_shard` or
    :func:`read_lmdb_shard` yields for ``path``, from the tar headers or the LMDB's
    ``num-samples``, without reading any image. Lets a resumed stream skip a worker's
    whole epochs instead of reading them again."""
    if path.is_dir():
        shared = shared_env(path, create=False)  # lmdb refuses a second open in a process
        env = shared if shared is not None else open_env(path)
        try:
            with env.begin() as txn:
                return read_num_samples(txn, path)
        finally:
            if shared is None:
                env.close()
    try:
        tar = tarfile.open(path, mode="r:*")  # headers only: member data is seeked over
    except tarfile.TarError:
        return 1  # the reader yields one "unreadable shard"
    except OSError as e:
        raise DataError(f"cannot open tar shard {path}: {e}") from e
    count, key = 0, None
    with tar:
        try:
            while (member := tar.next()) is not None:
                tar.members = []
                if not member.isfile():
                    continue
                name, _ = _split_member(member.name)
                if name != key:
                    count += key is not None
                    key = name
        except (OSError, EOFError, tarfile.TarError):
            return count + 1  # the groups before the damage, then one skip
    return count + (key is not None)
