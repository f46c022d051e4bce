"""Vertical text: a tall crop whose upright reading fails is also read turned 90°.

Scene-text recognizers read left to right; a crop of vertical text (a street sign
written top to bottom) comes out empty or garbled. With ``orient="tall"``, a crop at
least :data:`TALL_RATIO` times as tall as wide is also read turned 90° clockwise and
anticlockwise; the upright reading stays unless it is empty or doubtful and a turned
reading is longer (:func:`best_reading`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image

from persec.image import pad_to_width

ORIENTATIONS = ("none", "tall")
"""``orient`` modes: ``none`` reads every crop as it is; ``tall`` also tries each
crop at least :data:`TALL_RATIO` times as tall as wide turned 90° both ways."""
TALL_RATIO = 1.5
"""Height/width from which a crop is taken for vertical text (PP-OCR's pipeline turns
such crops too)."""
KEEP_UPRIGHT = 0.5
"""Confidence from which a tall crop's upright reading is kept without comparing."""


def check_orient(orient: str) -> None:
    """Raise ``ValueError`` naming the modes when ``orient`` is not one of them."""
    if orient not in ORIENTATIONS:
        raise ValueError(f"orient must be one of {', '.join(ORIENTATIONS)}, not {orient!r}")


def orientation_variants(image: Image.Image, orient: str = "none") -> list[Image.Image]:
    """The versions of ``image`` to read: the image itself first, then, for
    ``orient="tall"`` and a crop at least :data:`TALL_RATIO` times as tall as wide, the
    crop turned 90° clockwise (text written top to bottom) and anticlockwise (bottom to
    top).

    Raises:
        ValueError: an unknown ``orient``.
    """
    check_orient(orient)
    if orient == "tall" and image.height >= TALL_RATIO * image.width:
        return [
            image,
            image.transpose(Image.Transpose.ROTATE_270),
            image.transpose(Image.Transpose.ROTATE_90),
        ]
    return [image]


class OrientedTransform:
    """Transform of one image into its :func:`orientation_variants`, each through
    ``transform``, stacked: ``(K, C, H, W)`` (K = 1 unless ``orient`` turns it; versions
    of different widths are padded to the widest).
    Picklable when ``transform`` is, so DataLoader workers can run it."""

    def __init__(self, transform: Callable[[Image.Image], torch.Tensor], orient: str = "none"):
        check_orient(orient)
        self.transform, self.orient = transform, orient

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """Transform each orientation variant of ``image`` -> (K, C, H, W)."""
        versions = orientation_variants(image, self.orient)
        return pad_to_width([self.transform(v) for v in versions])  # (K, C, H, W)


def best_reading(
    candidates: Sequence[tuple[str, float]], keep_upright: float = KEEP_UPRIGHT
) -> tuple[str, float]:
    """One image's reading from the ``(text, confidence)`` of its versions, the crop as
    given first. That one stays unless it reads empty or less confident than
    ``keep_upright``; then the most confident turned reading *longer* than it wins (the
    first on a tie), if there is one.

    A tall crop holds a character or two of upright text (a digit, "In"), which turned
    90° often reads as another character, confidently; vertical text, turned, reads
    as a word. So turned readings only compete when the upright one is doubtful, and
    only when they read more characters. An empty upright reading never stays when a
    turned one reads text: an all-blank CTC path can be confident.
    """
    first = candidates[0]
    if first[0] and first[1] >= keep_upright:
        return first
    longer = [c for c in candidates[1:] if len(c[0]) > len(first[0])]
    return max(longer, key=lambda c: c[1]) if longer else first


def best_readings(
    decoded: Sequence[tuple[str, float]], counts: Sequence[int]
) -> list[tuple[str, float]]:
    """The :func:`best_reading` of each image, from the readings of a batch that holds
    each image's ``counts[i]`` versions one after the other."""
    out, start = [], 0
    for count in counts:
        out.append(best_reading(decoded[start : start + count]))
        start += count
    return out
