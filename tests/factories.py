"""Tiny datasets built in memory for the data tests: good, corrupt and bomb images,
an independent raw-LMDB writer and a gt.txt folder writer."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import lmdb
import numpy as np
from PIL import Image


def noise_image(width: int = 48, height: int = 16, seed: int = 0) -> Image.Image:
    """Random RGB pixels: incompressible, so a cut PNG really is truncated."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def png(width: int = 48, height: int = 16, seed: int = 0) -> bytes:
    out = io.BytesIO()
    noise_image(width, height, seed).save(out, format="PNG")
    return out.getvalue()


def jpeg(width: int = 40, height: int = 20, color=(200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="JPEG", quality=90)
    return out.getvalue()


def truncated_png(seed: int = 0) -> bytes:
    data = png(seed=seed)
    return data[: len(data) // 2]


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def bomb_png(width: int = 10_000, height: int = 10_000) -> bytes:
    """A ~60-byte PNG whose header claims width × height 8-bit grey pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + _chunk(b"IEND", b"")
    )


TEXT = b"this is not an image\n"

# 20 samples: (encoded image, label). With charset 36_lowercase and max length 25:
#   at init   2 empty labels, 1 label outside the charset, 1 label too long -> 16 kept;
#   when read 2 truncated PNGs, 1 zero-byte, 1 text file, 1 bomb -> 5 undecodable, 11 good.
PLANTED: list[tuple[bytes, str]] = [
    (truncated_png(1), "trunc"),
    (truncated_png(2), "cated"),
    (b"", "zero"),
    (TEXT, "text"),
    (bomb_png(), "bomb"),
    (png(seed=3), ""),
    (png(seed=4), "   "),
    (png(seed=5), "hello!"),
    (png(seed=6), "a" * 30),
] + [(png(seed=10 + i) if i % 2 else jpeg(30 + i), f"Word{i}") for i in range(11)]
PLANTED_INIT = {"empty label": 2, "label outside charset": 1, "label too long": 1}
PLANTED_KEPT = 16
PLANTED_UNDECODABLE = 5
PLANTED_GOOD = [label.lower() for _, label in PLANTED[9:]]


def write_raw_lmdb(path: Path, entries: dict[bytes, bytes]) -> None:
    """Write raw key/value pairs with plain lmdb calls (independent of persec's writer)."""
    path.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for key, value in entries.items():
            txn.put(key, value)
    env.close()


def parseq_entries(
    samples: list[tuple[bytes, str]], with_labels: bool = True
) -> dict[bytes, bytes]:
    """Keys in the clovaai/parseq format, 1-based."""
    entries = {b"num-samples": str(len(samples)).encode()}
    for i, (image, label) in enumerate(samples, start=1):
        entries[f"image-{i:09d}".encode()] = image
        if with_labels:
            entries[f"label-{i:09d}".encode()] = label.encode()
    return entries


def write_gt_folder(
    root: Path, samples: list[tuple[bytes, str]], missing: tuple[str, ...] = ()
) -> list[str]:
    """Write ``images/NNN.ext`` files and ``gt.txt``; ``missing`` adds lines without files.

    Returns:
        the relative paths, in gt order.
    """
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines, paths = [], []
    for i, (data, label) in enumerate(samples):
        ext = "jpg" if data.startswith(b"\xff\xd8") else "png"
        rel = f"images/{i:03d}.{ext}"
        (root / rel).write_bytes(data)
        lines.append(f"{rel}\t{label}")
        paths.append(rel)
    for rel in missing:
        lines.append(f"{rel}\tmissing")
        paths.append(rel)
    (root / "gt.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return paths
