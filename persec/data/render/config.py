"""What the word renderer draws: fonts, words, colours, geometry and noise, as a config."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from persec.data.render.words import WordConfig
from persec.errors import PersecError

_SPLITS = {"train": 0, "test": 1}


@dataclass
class SynthConfig:
    """Renderer knobs. Ranges are ``(low, high)`` drawn uniformly; ``p_*`` are chances.

    Lengths are in output pixels for ``height=32`` and scale with ``height``.

    Attributes:
        charset: charset of the labels (preset or file); text is drawn from it.
        draw_charset: a larger charset to draw text from (e.g. ``94_full``), or ``""``
            (draw only label characters). Characters ``charset`` lacks are drawn but
            left out of the label, as STR training on real data strips unsupported
            characters [ours]: a model that cannot output ``/`` learns to pass over
            it (``03/09/2009`` → ``03092009``) rather than read it as ``1`` or ``i``.
        max_length: longest label.
        height: output height.
        width: output width (images are resized to it), or None to keep the text's
            aspect ratio at ``height``.
        words: text sources and case proportions.
        font_dirs: extra font folders or files (besides matplotlib and system fonts).
        system_fonts: also use ``/usr/share/fonts``.
        test_font_fraction: share of font families held out for the ``test`` split.
        font_size: em size as a fraction of ``height`` (shrunk if the ink would not fit).
        p_letter_spacing / letter_spacing: extra space between letters, in em.
        p_bold: chance of a stroke in the text colour (faux bold).
        p_outline: chance of an outline in a contrasting colour.
        p_shadow: chance of a drop shadow.
        p_text_gradient: chance that the text colour varies top to bottom.
        contrast: luminance difference between text and background, as a fraction of 255.
        p_dark_text: chance that text is darker than its background.
        p_grey: chance that a colour (text or background) is grey.
        saturation: colourfulness of the other colours (chroma as a fraction of 255).
        bg_flat / bg_gradient / bg_noise / bg_texture: weights of background kinds
            (texture = blurred blobs or stripes).
        p_clutter: chance of sign-like clutter (borders, rules) away from the text.
        p_rotation / rotation: rotation, max degrees either way.
        p_shear / shear: horizontal shear (slant), max |dx/dy|.
        p_perspective / perspective: corner jitter of a projective warp, as a fraction
            of text height.
        p_curve / curve: curved baseline (sine or arc), amplitude as a fraction of text
            height.
        padding: horizontal padding each side, as a fraction of ``height``.
        p_stretch: with a fixed ``width``, chance that a short word is stretched
            (by up to ``max_stretch``) rather than padded to the output aspect ratio.
        max_stretch: largest horizontal stretch of short words.
        p_shading / shading: multiplicative lighting ramp, max strength.
        p_blur / blur: Gaussian blur radius, in output pixels.
        p_lowres / lowres: downscale-then-upscale factor (soft, blocky low-res look).
        p_noise / noise: additive Gaussian noise sigma, on the 0..255 scale.
        p_jpeg / jpeg_quality: JPEG re-encoding quality.
        style: ``print`` (every font) or ``handwriting`` (script and hand-lettering
            families only, :mod:`persec.data.render.handwriting`).
        p_elastic / elastic: smooth random displacement of the glyphs, as a fraction
            of text height (handwriting).
        p_thin / p_thick: chance of a pen one pixel thinner / thicker (handwriting).
        p_binarize: chance of black-on-white binarization at the end (the look of
            binarized archive scans such as George Washington's letters).
    """

    charset: str = "62_mixed"
    draw_charset: str = ""
    max_length: int = 25
    height: int = 32
    width: int | None = 128
    words: WordConfig = field(default_factory=WordConfig)
    font_dirs: list[str] = field(default_factory=list)
    system_fonts: bool = True
    test_font_fraction: float = 0.2
    font_size: tuple[float, float] = (0.7, 1.05)
    p_letter_spacing: float = 0.1
    letter_spacing: tuple[float, float] = (0.05, 0.4)
    p_bold: float = 0.1
    p_outline: float = 0.08
    p_shadow: float = 0.08
    p_text_gradient: float = 0.1
    contrast: tuple[float, float] = (0.3, 0.9)
    p_dark_text: float = 0.55
    p_grey: float = 0.35
    saturation: tuple[float, float] = (0.05, 0.45)
    bg_flat: float = 0.3
    bg_gradient: float = 0.3
    bg_noise: float = 0.1
    bg_texture: float = 0.3
    p_clutter: float = 0.15
    p_rotation: float = 0.5
    rotation: float = 3.0
    p_shear: float = 0.1
    shear: float = 0.25
    p_perspective: float = 0.25
    perspective: float = 0.15
    p_curve: float = 0.08
    curve: float = 0.2
    padding: tuple[float, float] = (0.0, 0.3)
    p_stretch: float = 0.5
    max_stretch: float = 2.0
    p_shading: float = 0.25
    shading: float = 0.3
    p_blur: float = 0.4
    blur: tuple[float, float] = (0.3, 1.0)
    p_lowres: float = 0.2
    lowres: tuple[float, float] = (0.45, 0.85)
    p_noise: float = 0.4
    noise: tuple[float, float] = (2.0, 8.0)
    p_jpeg: float = 0.25
    jpeg_quality: tuple[int, int] = (20, 90)
    style: str = "print"
    p_elastic: float = 0.0
    elastic: float = 0.04
    p_thin: float = 0.0
    p_thick: float = 0.0
    p_binarize: float = 0.0


@dataclass
class HardSynthConfig(SynthConfig):
    """The ``hard`` preset: low contrast, strong blur, perspective and curves."""

    contrast: tuple[float, float] = (0.2, 0.5)
    p_rotation: float = 0.9
    rotation: float = 7.0
    p_shear: float = 0.3
    p_perspective: float = 0.8
    perspective: float = 0.3
    p_curve: float = 0.5
    curve: float = 0.35
    p_clutter: float = 0.4
    p_shading: float = 0.5
    shading: float = 0.4
    p_blur: float = 0.8
    blur: tuple[float, float] = (0.5, 1.1)
    p_lowres: float = 0.4
    lowres: tuple[float, float] = (0.45, 0.7)
    p_noise: float = 0.7
    noise: tuple[float, float] = (4.0, 12.0)
    p_jpeg: float = 0.5
    jpeg_quality: tuple[int, int] = (15, 50)


# Letters are running text: mostly lower and title case, few random strings.
HANDWRITING_WORDS = WordConfig(
    p_word=0.9, p_random=0.02, p_number=0.08, p_lower=0.7, p_upper=0.05, p_title=0.25, p_mixed=0.0
)


@dataclass
class HandwritingSynthConfig(SynthConfig):
    """The ``handwriting`` preset: script fonts, slant, a wobbling baseline, elastic
    strokes, dark ink on light paper (half of it binarized), words and lines at their
    own width; no outlines, shadows, gradients or sign clutter."""

    style: str = "handwriting"
    width: int | None = None
    words: WordConfig = field(default_factory=lambda: dataclasses.replace(HANDWRITING_WORDS))
    contrast: tuple[float, float] = (0.6, 0.95)
    p_dark_text: float = 1.0
    p_grey: float = 0.7
    saturation: tuple[float, float] = (0.02, 0.12)
    bg_flat: float = 0.6
    bg_gradient: float = 0.1
    bg_noise: float = 0.2
    bg_texture: float = 0.1
    p_bold: float = 0.0
    p_outline: float = 0.0
    p_shadow: float = 0.0
    p_text_gradient: float = 0.0
    p_clutter: float = 0.0
    p_letter_spacing: float = 0.0
    p_rotation: float = 0.5
    rotation: float = 2.0
    p_shear: float = 0.8
    shear: float = 0.4
    p_perspective: float = 0.1
    perspective: float = 0.08
    p_curve: float = 0.6
    curve: float = 0.12
    padding: tuple[float, float] = (0.05, 0.3)
    p_shading: float = 0.15
    p_blur: float = 0.25
    p_lowres: float = 0.1
    p_noise: float = 0.2
    p_jpeg: float = 0.1
    p_elastic: float = 0.6
    p_thin: float = 0.15
    p_thick: float = 0.3
    p_binarize: float = 0.5


PRESETS = {"print": SynthConfig, "hard": HardSynthConfig, "handwriting": HandwritingSynthConfig}
"""``persec render --style`` → the config class whose defaults are that preset."""


def check_config(c: SynthConfig) -> None:
    """Raise :class:`PersecError` naming the first out-of-range setting."""
    for f in dataclasses.fields(c):
        v = getattr(c, f.name)
        if f.name.startswith("p_") and not 0 <= v <= 1:
            raise PersecError(f"{f.name} is a probability in [0, 1], got {v}")
        if isinstance(v, tuple) and not (len(v) == 2 and 0 <= v[0] <= v[1]):
            raise PersecError(f"{f.name} must be (low, high) with 0 <= low <= high, got {v}")
    if c.height < 8 or (c.width is not None and c.width < 8):
        raise PersecError(f"image size must be at least 8 px, got {c.height}x{c.width}")
    if c.contrast[1] > 1 or c.font_size[0] <= 0:
        raise PersecError("contrast must be within [0, 1] and font_size above 0")
    if c.style not in ("print", "handwriting"):
        raise PersecError(f"style must be 'print' or 'handwriting', got {c.style!r}")
    if c.p_thin + c.p_thick > 1:
        raise PersecError(f"p_thin + p_thick must be <= 1, got {c.p_thin} + {c.p_thick}")
    if c.max_stretch < 1:
        raise PersecError(f"max_stretch must be >= 1, got {c.max_stretch}")
