"""Dataset statistics: sizes, label lengths and characters, as numbers and text bars."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from persec.charset import STANDARD_CHARSET, Charset
from persec.data.dataset import Skipped, SkipReport
from persec.data.layouts import detect_layout, open_dataset
from persec.data.splits import parse_part

LAYOUT_NAMES = {"folder": "gt.txt folder", "lmdb": "LMDB", "images": "image folder, unlabelled"}


BAR_WIDTH = 40


@dataclass
class DatasetStats:
    """What ``persec data stats`` reports about one dataset."""

    name: str
    layout: str
    report: SkipReport
    charset: Charset | None
    max_length: int | None
    lengths: Counter[int] = field(default_factory=Counter)
    chars: Counter[str] = field(default_factory=Counter)
    widths: list[int] = field(default_factory=list)
    heights: list[int] = field(default_factory=list)
    decoded: bool = True


def compute_stats(
    path: str | Path,
    charset: Charset | str | None = STANDARD_CHARSET,
    max_length: int | None = 25,
    decode: bool = True,
    progress: bool | None = None,
) -> DatasetStats:
    """Open a dataset and collect its statistics (reading every image when ``decode``).

    A plain image folder is read as unlabelled (no label statistics).
    """
    layout = detect_layout(parse_part(path)[0])
    dataset = open_dataset(
        path, charset=charset, unlabelled=layout == "images", max_label_length=max_length
    )
    report = SkipReport(dataset.name).merge(dataset.report)
    stats = DatasetStats(
        dataset.name, layout, report, getattr(dataset, "charset", None), max_length, decoded=decode
    )
    indices = range(len(dataset))
    if decode:
        indices = tqdm(indices, desc=f"reading {dataset.name}", unit="img",
                       disable=None if progress is None else not progress)  # fmt: skip
    for i in indices:
        if decode:
            item = dataset[i]
            if isinstance(item, Skipped):
                report.skip_kept(item.reason, item.source)
                continue
            image, label = item
            stats.widths.append(image.width)
            stats.heights.append(image.height)
        else:
            label = dataset.label(i)
        if label is not None:
            stats.lengths[len(label)] += 1
            stats.chars.update(label)
    return stats


def _bar(n: int, most: int) -> str:
    return "#" * (max(1, round(BAR_WIDTH * n / most)) if n else 0)


def _fmt(x: float) -> str:
    # Pixel counts are integers; only a median of an even count can end in .5.
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"


def format_stats(stats: DatasetStats) -> str:
    """The human-readable report printed by ``persec data stats``."""
    r = stats.report
    lines = [f"dataset   {stats.name} ({LAYOUT_NAMES[stats.layout]})"]
    if stats.layout != "images" and stats.charset is not None:
        limit = stats.max_length if stats.max_length else "none"
        lines.append(
            f"charset   {stats.charset.name} ({len(stats.charset)} characters), max length {limit}"
        )
    lines += [f"samples   {r.total}", f"kept      {r.kept}", f"skipped   {r.skipped}"]
    width = max((len(reason) for reason in r.counts), default=0)
    for reason, n in sorted(r.counts.items()):
        example = r.examples.get(reason, [])
        hint = f"   e.g. {example[0]}" if example else ""
        lines.append(f"  {reason:<{width}}  {n}{hint}")

    if stats.lengths:
        lines.append("")
        lines.append("label length (kept samples)")
        most = max(stats.lengths.values())
        for length in range(min(stats.lengths), max(stats.lengths) + 1):
            n = stats.lengths[length]
            lines.append(f"  {length:>3} | {_bar(n, most):<{BAR_WIDTH}} {n}")
        mean = sum(k * v for k, v in stats.lengths.items()) / sum(stats.lengths.values())
        lines.append(f"  mean length {mean:.2f}")

    if stats.charset is not None and stats.layout != "images":
        present = [c for c in stats.charset if stats.chars[c]]
        missing = "".join(c for c in stats.charset if not stats.chars[c])
        lines.append("")
        lines.append(
            f"charset coverage: {len(present)} of {len(stats.charset)} characters appear "
            f"({len(stats.chars)} distinct in kept labels)"
        )
        lines.append(f"  present: {''.join(present) or '(none)'}")
        lines.append(f"  missing: {missing or '(none)'}")

    lines.append("")
    if not stats.decoded:
        lines.append("image size: not measured (--no-decode)")
    elif not stats.widths:
        lines.append("image size: no decodable image")
    else:
        aspects = [w / h for w, h in zip(stats.widths, stats.heights, strict=True)]
        lines.append(f"image size ({len(stats.widths)} decoded images)")
        for label, values, fmt in (
            ("width", stats.widths, _fmt),
            ("height", stats.heights, _fmt),
            ("aspect", aspects, "{:.2f}".format),
        ):
            low, mid, high = (fmt(x) for x in (min(values), statistics.median(values), max(values)))
            lines.append(f"  {label:<7} min {low:>7}  median {mid:>7}  max {high:>7}")
        lines.append("  (aspect = width / height)")
    return "\n".join(lines)
