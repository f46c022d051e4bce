"""Fixed parts of a labelled ``gt.txt`` set: make them fairly, write them as file
lists with a manifest, check them, and find a part named as ``SET:PART``.

A split removes byte-identical duplicates (the first listed copy stays), keeps every
*group* (crops of one source image, words of one handwritten page: the first capture
group of ``group_by`` matched against the file name) inside one part, and cuts the
shuffled groups into parts by ratio. A part can also be given as a fixed list (e.g. the
crops an earlier model trained on); the other parts share what is left. The lists name
images by their path in ``gt.txt`` (relative to the set folder), one per line, in
``gt.txt`` order; ``manifest.json`` holds the settings, the counts, the removed
duplicates and digests of the inputs, so that ``check_split`` can tell whether the
files on disk are still the ones split.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from persec.data.dataset import GT_FILE
from persec.data.gtfile import read_gt_file
from persec.errors import DataError

MANIFEST = "manifest.json"
PART_SEP = ":"
#: Where ``SET:PART`` lists are looked for after ``$PERSEC_SPLITS``: the working
#: directory's ``data/splits``, then the project checkout's.
SPLITS_DIRS = (Path("data") / "splits", Path(__file__).resolve().parents[2] / "data" / "splits")


@dataclass
class Split:
    """A split of one set: ``parts`` maps part name → image paths (``gt.txt`` order);
    ``manifest`` is what :func:`write_split` saves beside the lists."""

    parts: dict[str, list[str]]
    manifest: dict = field(default_factory=dict)


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _digest(rels: Sequence[str], hashes: Mapping[str, str]) -> str:
    """One digest over ``rels`` and their images' hashes, in order."""
    h = hashlib.sha256()
    for rel in rels:
        h.update(f"{rel}\t{hashes[rel]}\n".encode())
    return h.hexdigest()


def group_of(rel: str, pattern: re.Pattern | None) -> str:
    """The group a file belongs to: the first capture group of ``pattern`` searched in
    its file name, or the file itself when ``pattern`` is None.

    Raises:
        DataError: a file name the pattern does not match.
    """
    if pattern is None:
        return rel
    m = pattern.search(Path(rel).name)
    key = None if m is None else (m.group(1) if m.groups() else m.group(0))
    if key is None:
        raise DataError(f"group pattern {pattern.pattern!r} does not match file name {rel!r}")
    return key


def _linked_groups(entries, hashes, pattern, keep: set[str]) -> dict[str, str]:
    """Group of each file in ``keep``: its pattern group, merged with every group that
    holds a byte-identical copy of one of its images (named by the first such group
    in sorted order), so that copies across groups land in one part."""
    parent: dict[str, str] = {}

    def find(g: str) -> str:
        while parent.setdefault(g, g) != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    own = {rel: group_of(rel, pattern) for rel, _ in entries}
    first_of: dict[str, str] = {}
    for rel, _ in entries:
        other = first_of.setdefault(hashes[rel], own[rel])
        a, b = sorted((find(own[rel]), find(other)))
        parent[b] = a
    return {rel: find(own[rel]) for rel in keep}


def _read_inputs(folder: Path) -> tuple[list[tuple[str, str]], dict[str, str]]:
    gt = folder / GT_FILE
    if not gt.is_file():
        raise DataError(f"{folder} has no {GT_FILE}: a split needs a labelled gt.txt folder")
    entries = read_gt_file(gt, unique=True)
    hashes = {}
    for rel, _ in entries:
        path = folder / rel
        if not path.is_file():
            raise DataError(f"{path} is listed in {gt} but does not exist")
        hashes[rel] = file_digest(path)
    return entries, hashes


def _cut(groups: list[str], sizes: Mapping[str, int], parts: Sequence[str], ratios) -> dict:
    """Assign shuffled ``groups`` (with ``sizes`` images each) to ``parts``: a group goes
    to the part whose share of the cumulative image count holds the group's middle."""
    total = sum(sizes[g] for g in groups)
    bounds, acc = [], 0.0
    for r in ratios:
        acc += r
        bounds.append(acc / sum(ratios) * total)
    assigned, seen = {}, 0
    for g in groups:
        middle = seen + sizes[g] / 2
        i = next((k for k, b in enumerate(bounds) if middle < b), len(parts) - 1)
        assigned[g] = parts[i]
        seen += sizes[g]
    return assigned


def make_split(
    folder: str | Path,
    parts: Sequence[str] = ("train", "select", "report"),
    ratios: Sequence[float] = (70, 15, 15),
    seed: int = 0,
    group_by: str | None = None,
    fixed: Mapping[str, Sequence[str]] | None = None,
    group_parts: Mapping[str, str] | None = None,
) -> Split:
    """Split the ``gt.txt`` set in ``folder`` into ``parts``.

    Args:
        folder: the set folder.
        parts: names of the parts cut by ratio (not those in ``fixed``).
        ratios: one per part in ``parts``, any scale (70/15/15 or 0.7/0.15/0.15).
        seed: shuffles the groups.
        group_by: regular expression searched in each file name; its first capture
            group names the file's group (None: every file its own group).
        fixed: part name → image paths that make that part as given.
        group_parts: group → part, taken as given (e.g. the pages of another split of
            the same pages); every group of the set must be in it.

    Raises:
        DataError: bad ratios or part names, a fixed path not in ``gt.txt``, a group
            missing from ``group_parts``, a pattern that does not match a file name.
    """
    folder = Path(folder)
    fixed = {k: list(v) for k, v in (fixed or {}).items()}
    if len(parts) != len(ratios) or not parts:
        raise DataError(f"{len(parts)} parts {list(parts)} but {len(ratios)} ratios {list(ratios)}")
    if any(r <= 0 for r in ratios):
        raise DataError(f"ratios must be positive, got {list(ratios)}")
    names = list(fixed) + list(parts)
    if len(set(names)) != len(names) or any(not re.fullmatch(r"[\w.-]+", n) for n in names):
        raise DataError(f"part names must be distinct words, got {names}")
    entries, hashes = _read_inputs(folder)
    order = {rel: i for i, (rel, _) in enumerate(entries)}
    labels = dict(entries)
    fixed_of: dict[str, str] = {}
    for part, rels in fixed.items():
        for rel in rels:
            if rel not in order:
                raise DataError(f"fixed part {part!r} names {rel!r}, which {folder}/gt.txt lacks")
            if fixed_of.setdefault(rel, part) != part:
                raise DataError(f"{rel!r} is in fixed parts {fixed_of[rel]!r} and {part!r}")
    # Duplicates: keep a copy in a fixed part if there is one, else the first listed.
    first: dict[str, str] = {}
    for rel, _ in sorted(entries, key=lambda e: (e[0] not in fixed_of, order[e[0]])):
        first.setdefault(hashes[rel], rel)
    duplicates = [
        {
            "removed": rel,
            "same_as": first[hashes[rel]],
            "label": labels[rel],
            "same_as_label": labels[first[hashes[rel]]],
        }
        for rel, _ in entries
        if first[hashes[rel]] != rel
    ]
    removed = {d["removed"] for d in duplicates}
    try:
        pattern = re.compile(group_by) if group_by else None
    except re.error as err:
        raise DataError(f"--group-by {group_by!r} is not a regular expression: {err}") from err
    free = [rel for rel, _ in entries if rel not in removed and rel not in fixed_of]
    group = _linked_groups(entries, hashes, pattern, keep=set(free))
    sizes: dict[str, int] = {}
    for rel in free:
        sizes[group[rel]] = sizes.get(group[rel], 0) + 1
    groups = sorted(sizes)
    if group_parts is not None:
        missing = [g for g in groups if g not in group_parts]
        if missing:
            raise DataError(f"groups {missing[:5]} of {folder} are not in the given group list")
        unknown = sorted({group_parts[g] for g in groups} - set(parts))
        if unknown:
            raise DataError(f"the given group list uses parts {unknown} not in {list(parts)}")
        assigned = {g: group_parts[g] for g in groups}
    else:
        random.Random(seed).shuffle(groups)
        assigned = _cut(groups, sizes, parts, ratios)
    out = {name: [] for name in names}
    for rel, _ in entries:
        if rel in removed:
            continue
        out[fixed_of[rel] if rel in fixed_of else assigned[group[rel]]].append(rel)
    total = sum(ratios)
    manifest = {
        "set": Path(os.path.abspath(folder)).name,
        "seed": seed,
        "group_by": group_by,
        "inputs": {
            "gt_sha256": file_digest(folder / GT_FILE),
            "images": len(entries),
            "images_sha256": _digest([rel for rel, _ in entries], hashes),
        },
        "parts": {
            name: {
                "images": len(out[name]),
                "ratio": None if name in fixed else ratios[parts.index(name)] / total,
                "fixed": name in fixed,
                "sha256": _digest(out[name], hashes),
            }
            for name in names
        },
        "duplicates": duplicates,
    }
    if pattern is not None:
        merged = {
            own: root for rel, root in group.items() if (own := group_of(rel, pattern)) != root
        }
        if merged:  # groups joined because they share a byte-identical image
            manifest["merged_groups"] = dict(sorted(merged.items()))
        by_part: dict[str, list[str]] = {}
        for g in sorted(assigned, key=lambda s: (len(s), s)):
            by_part.setdefault(assigned[g], []).append(g)
        manifest["groups"] = by_part
    return Split(out, manifest)


def write_split(split: Split, out: str | Path) -> list[Path]:
    """Write ``<out>/<part>.txt`` for each part and ``<out>/manifest.json``; returns
    the list files."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name, rels in split.parts.items():
        path = out / f"{name}.txt"
        path.write_text("".join(f"{rel}\n" for rel in rels), encoding="utf-8")
        files.append(path)
    text = json.dumps(split.manifest, indent=1, ensure_ascii=False)
    (out / MANIFEST).write_text(text + "\n", encoding="utf-8")
    return files


def read_list(path: str | Path) -> list[str]:
    """Image paths of a split list (or the first column of a ``gt.txt``).

    Raises:
        DataError: the file does not exist, or lists a path twice.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"split list {path} does not exist")
    lines = path.read_text("utf-8-sig").split("\n")
    rels = [line.rstrip("\r").split("\t", 1)[0] for line in lines]
    rels = [rel for rel in rels if rel.strip()]
    if len(set(rels)) != len(rels):
        raise DataError(f"split list {path} names an image more than once")
    return rels


def check_split(folder: str | Path, lists: str | Path) -> list[str]:
    """Problems with the split in ``lists`` of the set in ``folder``: images on disk
    that changed, parts that overlap, images in no part that are not a removed
    duplicate. An empty list means the split is sound."""
    folder, lists = Path(folder), Path(lists)
    manifest_path = lists / MANIFEST
    if not manifest_path.is_file():
        raise DataError(
            f"{lists} has no {MANIFEST}; is it a folder written by `persec data split`?"
        )
    manifest = json.loads(manifest_path.read_text("utf-8"))
    entries, hashes = _read_inputs(folder)
    problems = []
    if _digest([rel for rel, _ in entries], hashes) != manifest["inputs"]["images_sha256"]:
        problems.append(f"the images or gt.txt of {folder} differ from those split")
    seen: dict[str, str] = {}
    for name, info in manifest["parts"].items():
        rels = read_list(lists / f"{name}.txt")
        for rel in rels:
            if rel in seen:
                problems.append(f"{rel} is in parts {seen[rel]} and {name}")
            seen[rel] = name
        missing = [rel for rel in rels if rel not in hashes]
        if missing:
            problems.append(f"part {name} names {len(missing)} images not in gt.txt: {missing[:3]}")
        elif _digest(rels, hashes) != info["sha256"]:
            problems.append(f"part {name} does not match its digest in {MANIFEST}")
    removed = {d["removed"] for d in manifest["duplicates"]}
    unplaced = [rel for rel, _ in entries if rel not in seen and rel not in removed]
    if unplaced:
        problems.append(f"{len(unplaced)} images are in no part: {unplaced[:3]}")
    return problems


def parse_part(spec: str | os.PathLike) -> tuple[Path, str | None]:
    """``"DIR:PART"`` → ``(DIR, PART)``; a plain path → ``(path, None)``. A path that
    exists as given is never split, so a folder whose name holds ``:`` still works."""
    text = os.fspath(spec)
    if PART_SEP not in text or Path(text).exists():
        return Path(text), None
    folder, part = text.rsplit(PART_SEP, 1)
    if not folder or not part:
        return Path(text), None
    return Path(folder), part


def part_name(spec: str | os.PathLike) -> str | None:
    """Display name of ``DIR:PART`` (``IC15_train:report``; a list file given as the
    part is named by its stem); None for a plain path."""
    folder, part = parse_part(spec)
    if part is None:
        return None
    label = Path(part).stem if Path(part).is_file() else part
    return f"{Path(os.path.abspath(folder)).name}:{label}"


def part_list(folder: Path, part: str) -> Path:
    """The list file of ``part`` of the set in ``folder``: ``part`` itself when it is a
    file, else ``<dir>/<set name>/<part>.txt`` in ``$PERSEC_SPLITS`` or one of
    :data:`SPLITS_DIRS`.

    Raises:
        DataError: no such list (the message names where it looked and the parts found).
    """
    if Path(part).is_file():
        return Path(part)
    env = os.environ.get("PERSEC_SPLITS")
    dirs = ([Path(env)] if env else []) + list(SPLITS_DIRS)
    name = Path(os.path.abspath(folder)).name  # a symlinked set keeps its link's name
    for d in dirs:
        if (d / name / f"{part}.txt").is_file():
            return d / name / f"{part}.txt"
    found = sorted({p.stem for d in dirs for p in (d / name).glob("*.txt")})
    where = ", ".join(str(d / name) for d in dirs)
    hint = f"parts there: {', '.join(found)}" if found else "no split lists for this set"
    raise DataError(f"no split list {part!r} for {name} (looked in {where}; {hint})")


def read_group_parts(manifest: str | Path) -> dict[str, str]:
    """Group → part, from the manifest of an earlier split (``persec data split
    --groups-from``: e.g. GW lines put in the part their page's words went to).

    Raises:
        DataError: the file is missing or is not a split manifest with groups.
    """
    try:
        data = json.loads(Path(manifest).read_text("utf-8"))
        return {g: part for part, groups in data["groups"].items() for g in groups}
    except (OSError, ValueError, KeyError, AttributeError) as err:
        raise DataError(
            f"--groups-from {manifest}: not a split manifest with groups ({err})"
        ) from err
