"""The handwriting style of the renderer: script and hand-lettering fonts, elastic
strokes, a thinner or thicker pen, ink on paper, and the binarized look of scanned
archives (George Washington's letters).

:class:`~persec.data.render.config.HandwritingSynthConfig` sets the style's defaults
(slant as shear, baseline wobble as a curve, dark ink on light paper, no outlines,
shadows or sign clutter); :class:`~persec.data.render.synth.WordRenderer` calls the
functions here at three points: which faces to draw with, what to do to the glyph
masks, and the binarization at the end.

Fonts: the handwriting and cursive families Debian packages (all in ``make demo``'s
list): Breip (fonts-breip), Comic Neue (fonts-comic-neue), Dancing Script
(fonts-dancingscript), Humor Sans (fonts-humor-sans), Kristi (fonts-kristi), StayPuft
(fonts-staypuft), Tomson Talks (fonts-tomsontalks) and URW's Z003 chancery
(fonts-urw-base35). The ``test`` split holds whole families out, as for print.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageFilter

from persec.data.render.fonts import FontFace, family_group
from persec.errors import PersecError

HANDWRITING_FAMILIES = frozenset(
    family_group(name)
    for name in (
        "Breip",
        "Comic Neue",
        "Dancing Script",
        "Humor Sans",
        "Kristi",
        "StayPuft",
        "Tomson Talks",
        "Z003",
    )
)
"""Design groups (:func:`~persec.data.render.fonts.family_group`) drawn in handwriting style."""

STYLES = ("print", "handwriting")

MIN_CONTRAST = 24
"""Grey levels between the mean ink and the mean paper below which :func:`binarize`
leaves an image alone."""


def handwriting_faces(fonts: list[FontFace]) -> list[FontFace]:
    """The faces of ``fonts`` in :data:`HANDWRITING_FAMILIES`.

    Raises:
        PersecError: fewer than two such families (a train and a test split need one
            each), naming the Debian packages to install.
    """
    faces = [f for f in fonts if f.group in HANDWRITING_FAMILIES]
    if len({f.group for f in faces}) < 2:
        raise PersecError(
            "the handwriting style needs at least two handwriting font families; install "
            "fonts-kristi fonts-staypuft fonts-tomsontalks fonts-breip fonts-dancingscript "
            "fonts-comic-neue fonts-humor-sans (make demo does)"
        )
    return faces


def elastic(
    rng: np.random.Generator, masks: list[Image.Image], amount: float, ink_h: int
) -> list[Image.Image]:
    """Smooth random displacement of the glyphs (the hand's wobble): a coarse grid of
    offsets of about ``amount`` × ink height, interpolated by a MESH transform."""
    w, h = masks[0].size
    amp = amount * ink_h
    if amp < 0.5:
        return masks
    cell = max(4, round(ink_h * 0.6))
    nx, ny = max(2, math.ceil(w / cell)), max(2, math.ceil(h / cell))
    dx = rng.normal(0, amp, (ny + 1, nx + 1))
    dy = rng.normal(0, amp, (ny + 1, nx + 1))
    xs = np.linspace(0, w, nx + 1)
    ys = np.linspace(0, h, ny + 1)
    mesh = []
    for j in range(ny):
        for i in range(nx):
            box = (round(xs[i]), round(ys[j]), round(xs[i + 1]), round(ys[j + 1]))
            if box[2] <= box[0] or box[3] <= box[1]:
                continue

            def corner(a, b):
                return xs[a] + dx[b, a], ys[b] + dy[b, a]

            # Source quad corners in Pillow's order: UL, LL, LR, UR.
            quad = (*corner(i, j), *corner(i, j + 1), *corner(i + 1, j + 1), *corner(i + 1, j))
            mesh.append((box, quad))
    return [
        m.transform((w, h), Image.Transform.MESH, mesh, Image.Resampling.BILINEAR) for m in masks
    ]


# A thinner pen must leave this share of the ink: thin faces (Kristi) would vanish.
KEEP_INK = 0.6


def pen_width(rng: np.random.Generator, masks: list[Image.Image], p_thin: float, p_thick: float):
    """A thinner (erode) or thicker (dilate) pen by one pixel, with those chances; a
    thinning that would remove more than ``1 - KEEP_INK`` of the ink is not applied."""
    r = rng.random()
    if r < p_thin:
        thinner = [m.filter(ImageFilter.MinFilter(3)) for m in masks]
        ink = float(np.asarray(masks[-1], dtype=np.float32).sum())
        kept = float(np.asarray(thinner[-1], dtype=np.float32).sum())
        return thinner if ink > 0 and kept >= KEEP_INK * ink else masks
    if r < p_thin + p_thick:
        return [m.filter(ImageFilter.MaxFilter(3)) for m in masks]
    return masks


def binarize(im: Image.Image) -> Image.Image:
    """Black ink on white paper, thresholded by Otsu's method (the look of binarized
    archive scans). An image with too little contrast to tell ink from paper is
    returned unchanged rather than blanked. RGB in, RGB out."""
    grey = np.asarray(im.convert("L"))
    counts = np.bincount(grey.ravel(), minlength=256).astype(np.float64)
    levels = np.arange(256, dtype=np.float64)
    below = np.cumsum(counts)  # pixels at or below each threshold
    mass = np.cumsum(counts * levels)
    total, total_mass = below[-1], mass[-1]
    above = total - below
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_dark = mass / below
        mean_light = (total_mass - mass) / above
        between = below * above * (mean_dark - mean_light) ** 2
    between[~np.isfinite(between)] = -1.0
    t = int(np.argmax(between))
    if between[t] <= 0 or mean_light[t] - mean_dark[t] < MIN_CONTRAST:
        return im
    ink = grey <= t
    return Image.fromarray(np.where(ink, 0, 255).astype(np.uint8), "L").convert("RGB")
