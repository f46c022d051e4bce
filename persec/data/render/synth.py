"""Offline word-image renderer: fonts, words, backgrounds and distortions.

Everything is drawn at the output scale (text ~``height`` pixels tall), so a
32×128 image costs well under a millisecond of Pillow/numpy work. An image is a
pure function of ``(seed, split, index)``: each index gets its own
``np.random.Generator`` from ``SeedSequence([seed, split, index])``.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from persec.charset import Charset
from persec.data.render.config import _SPLITS, SynthConfig, check_config
from persec.data.render.fonts import FontFace, available_fonts, split_fonts
from persec.data.render.handwriting import binarize, elastic, handwriting_faces, pen_width
from persec.data.render.words import WordSampler
from persec.errors import PersecError

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _homography(dst: np.ndarray, src: np.ndarray) -> tuple[float, ...]:
    """Pillow PERSPECTIVE coefficients mapping output points ``dst`` to input ``src``."""
    rows, rhs = [], []
    for (u, v), (x, y) in zip(dst, src, strict=True):
        rows += [[u, v, 1, 0, 0, 0, -u * x, -v * x], [0, 0, 0, u, v, 1, -u * y, -v * y]]
        rhs += [x, y]
    return tuple(np.linalg.solve(np.asarray(rows), np.asarray(rhs)).tolist())


def _draws(face: FontFace, ch: str) -> bool:
    """Whether ``face`` draws ``ch`` (every face has a space: an advance, no glyph)."""
    return ch == " " or ch in face.coverage


class WordRenderer:
    """Renders labelled word images, deterministic in ``(seed, split, index)``.

    Args:
        config: renderer settings (``HardSynthConfig()`` for the hard preset).
        split: ``"train"`` or ``"test"``: which side of the held-out font split to use.
        seed: non-negative base seed.
        fonts: validated faces to split (default :func:`available_fonts`).
    """

    def __init__(
        self,
        config: SynthConfig | None = None,
        split: str = "train",
        seed: int = 0,
        fonts: list[FontFace] | None = None,
    ):
        self.config = c = config or SynthConfig()
        if split not in _SPLITS:
            raise PersecError(f"unknown split {split!r}: use 'train' or 'test'")
        if seed < 0:
            raise PersecError(f"seed must be >= 0, got {seed}")
        check_config(c)
        self.split, self.seed = split, int(seed)
        self.charset = Charset.from_spec(c.charset)
        drawn = Charset.from_spec(c.draw_charset) if c.draw_charset else self.charset
        self.words = WordSampler(c.words, drawn, c.max_length)
        if fonts is None:
            fonts = available_fonts(c.font_dirs, c.system_fonts)
        if c.style == "handwriting":
            fonts = handwriting_faces(fonts)
        self.fonts = split_fonts(fonts, split, c.test_font_fraction)
        if not self.fonts:
            raise PersecError(f"no fonts left for the {split!r} split: install more font families")
        # Families are drawn uniformly, then a face: big families (Lato: 18) don't dominate.
        fams: dict[str, list[FontFace]] = {}
        for f in self.fonts:
            fams.setdefault(f.family, []).append(f)
        self._families = [fams[k] for k in sorted(fams)]
        w = np.array([c.bg_flat, c.bg_gradient, c.bg_noise, c.bg_texture], dtype=np.float64)
        if (w < 0).any() or w.sum() <= 0:
            raise PersecError("background weights must be >= 0 and not all 0")
        self._bg_cdf = np.cumsum(w / w.sum())
        self._font_cache: dict[tuple[str, int], ImageFont.FreeTypeFont] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_font_cache"] = {}  # FreeType handles are rebuilt lazily in each worker
        return state

    def _font(self, path: str, size: int) -> ImageFont.FreeTypeFont:
        key = (path, size)
        font = self._font_cache.get(key)
        if font is None:
            font = ImageFont.truetype(path, size, layout_engine=ImageFont.Layout.BASIC)
            self._font_cache[key] = font
        return font

    # ------------------------------------------------------------------ text
    def label(self, text: str) -> str:
        """The label of drawn ``text``: normalised by the charset, and without the
        characters it lacks when ``draw_charset`` draws more."""
        if self.config.draw_charset:
            return self.charset.strip_unsupported(text)
        return self.charset.normalize(text)

    def _pick_text(self, rng: np.random.Generator) -> tuple[str, FontFace]:
        """The text to draw and a face that renders all of its characters."""
        drawable = self.words.drawable
        for _ in range(8):
            text = self.words.sample(rng)
            fam = self._families[int(rng.integers(len(self._families)))]
            face = fam[int(rng.integers(len(fam)))]
            drawn = text.upper() if face.case == "upper" else text
            if all(_draws(face, ch) and ch in drawable for ch in drawn) and self.label(drawn):
                return drawn, face
        # Rare (punctuation few faces have): the first face that can draw the text.
        for face in self.fonts:
            if face.case == "mixed" and all(_draws(face, ch) for ch in text) and self.label(text):
                return text, face
        raise PersecError(f"no {self.split!r} font can draw {text!r}: use a smaller charset")

    def _text_masks(
        self, rng: np.random.Generator, text: str, face: FontFace, stroke: int, outline: bool
    ) -> tuple[list[Image.Image], int]:
        """Draw the text as 'L' masks on a canvas with margins.

        Returns ``[mask]`` (stroked in the text colour when ``stroke``), or
        ``[outer, inner]`` for an outline, and the ink height in pixels.
        """
        c = self.config
        size = max(6, round(c.height * rng.uniform(*c.font_size)))
        spacing = size * rng.uniform(*c.letter_spacing) if rng.random() < c.p_letter_spacing else 0
        for _ in range(3):  # shrink until the ink fits the output height
            font = self._font(face.path, size)
            x0, y0, x1, y1 = font.getbbox(text, stroke_width=stroke)
            ink_h = y1 - y0
            if ink_h <= 0.92 * c.height or size <= 6:
                break
            size = max(6, math.floor(size * 0.92 * c.height / ink_h))
        margin = stroke + 3
        w = int(x1 - x0 + spacing * (len(text) - 1)) + 2 * margin
        h = int(y1 - y0) + 2 * margin
        origin = (margin - x0, margin - y0)
        masks = []
        for sw in [stroke, 0] if outline else [stroke]:
            m = Image.new("L", (w, h))
            draw = ImageDraw.Draw(m)
            if spacing:
                for i, ch in enumerate(text):
                    x = origin[0] + font.getlength(text[:i]) + i * spacing
                    draw.text((x, origin[1]), ch, font=font, fill=255, stroke_width=sw)
            else:
                draw.text(origin, text, font=font, fill=255, stroke_width=sw)
            masks.append(m)
        return masks, int(y1 - y0)

    # ------------------------------------------------------------------ geometry
    def _curve(self, rng: np.random.Generator, masks: list[Image.Image], ink_h: int):
        """Bend the baseline along a sine or an arc with a strip-wise MESH warp."""
        amp = max(1.0, self.config.curve * ink_h * rng.uniform(0.4, 1.0))
        w, h = masks[0].size
        pad = math.ceil(amp)
        h2 = h + 2 * pad
        if rng.random() < 0.5:
            freq, phase = rng.uniform(0.3, 1.0), rng.uniform(0, 2 * math.pi)

            def offset(x):
                return amp * math.sin(2 * math.pi * freq * x / w + phase)
        else:
            sign = rng.choice([-1.0, 1.0])

            def offset(x):
                return sign * amp * ((2 * x / w - 1) ** 2 - 0.5)

        n = max(4, w // 6)
        mesh = []
        for i in range(n):
            xa, xb = i * w // n, (i + 1) * w // n
            da, db = offset(xa), offset(xb)
            # Source quad corners in Pillow's order: UL, LL, LR, UR.
            quad = (xa, -pad - da, xa, h + pad - da, xb, h + pad - db, xb, -pad - db)
            mesh.append(((xa, 0, xb, h2), quad))
        return [
            m.transform((w, h2), Image.Transform.MESH, mesh, Image.Resampling.BILINEAR)
            for m in masks
        ]

    def _warp(self, rng: np.random.Generator, masks: list[Image.Image], ink_h: int):
        """Shear, rotation and perspective as one projective transform."""
        c = self.config
        shear, rotate, persp = (
            rng.random() < p for p in (c.p_shear, c.p_rotation, c.p_perspective)
        )
        if not (shear or rotate or persp):
            return masks
        w, h = masks[0].size
        src = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
        pts = src - [w / 2, h / 2]
        if shear:
            pts[:, 0] += rng.uniform(-c.shear, c.shear) * pts[:, 1]
        if rotate:
            a = math.radians(rng.uniform(-c.rotation, c.rotation))
            pts = pts @ np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        if persp:
            pts += rng.uniform(-1, 1, size=(4, 2)) * c.perspective * ink_h
        pts -= pts.min(axis=0)
        size = tuple(int(v) + 1 for v in np.ceil(pts.max(axis=0)))
        coeffs = _homography(pts, src)
        return [
            m.transform(size, Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR)
            for m in masks
        ]

    # ------------------------------------------------------------------ colour
    def _colour(self, rng: np.random.Generator, luma: float) -> tuple[int, int, int]:
        """An RGB colour of the given luminance (so contrast is exact) and random hue."""
        c = self.config
        chroma = rng.uniform(-1, 1, 3).astype(np.float32)
        chroma -= chroma @ _LUMA  # equal-luminance direction
        sat = 0.0 if rng.random() < c.p_grey else 255 * rng.uniform(*c.saturation)
        # Shorten the chroma rather than clip, which would change the luminance.
        up, down = (255 - luma) / np.maximum(chroma, 1e-6), luma / np.maximum(-chroma, 1e-6)
        rgb = luma + min(sat, float(np.where(chroma > 0, up, down).min())) * chroma
        return tuple(int(round(v)) for v in np.clip(rgb, 0, 255))

    def _background(self, rng, w: int, h: int, bg: tuple[int, int, int], amp: float):
        """A flat, gradient, noisy or textured background whose luminance stays within
        ``amp`` of ``bg``, so the text contrast survives."""
        kind = int(np.searchsorted(self._bg_cdf, rng.random(), side="right"))
        if kind == 0 or amp < 2:
            return Image.new("RGB", (w, h), bg)
        base = np.asarray(bg, dtype=np.float32)
        delta = rng.uniform(-1, 1, 3).astype(np.float32) * amp
        if kind == 1:  # linear gradient at a random angle
            a = rng.uniform(0, 2 * math.pi)
            t = np.cos(a) * np.linspace(-1, 1, w, dtype=np.float32)[None, :]
            t = t + np.sin(a) * np.linspace(-1, 1, h, dtype=np.float32)[:, None]
            arr = base + (t / max(1e-6, np.abs(t).max()))[..., None] * delta
        elif kind == 2:  # fine noise, grey or coloured
            ch = 1 if rng.random() < 0.5 else 3
            arr = base + rng.standard_normal((h, w, ch), dtype=np.float32) * (0.35 * amp)
        elif rng.random() < 0.6:  # blotches: coarse noise, smoothly upsampled
            gw, gh = max(2, int(w / rng.uniform(4, 16))), max(2, int(h / rng.uniform(4, 16)))
            small = base + rng.uniform(-1, 1, (gh, gw, 1)).astype(np.float32) * delta
            small_im = Image.fromarray(np.clip(small, 0, 255).astype(np.uint8))
            return small_im.resize((w, h), Image.Resampling.BICUBIC)
        else:  # stripes
            a, period = rng.uniform(0, math.pi), rng.uniform(3, 20) * self.config.height / 32
            x = np.arange(w, dtype=np.float32)[None, :] * np.cos(a)
            y = np.arange(h, dtype=np.float32)[:, None] * np.sin(a)
            arr = base + 0.5 * np.sin(2 * math.pi * (x + y) / period)[..., None] * delta
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))

    def _clutter(self, rng, im: Image.Image, ink: tuple[int, int, int, int], colour) -> None:
        """Rules above or below the text (sign borders, underlines): never glyph-like."""
        draw = ImageDraw.Draw(im)
        w, h = im.size
        lw = max(1, round(self.config.height / 32 * rng.uniform(0.5, 2)))
        for top, room in ((True, ink[1] - lw), (False, h - ink[3] - lw)):
            if room >= 1 and rng.random() < 0.6:
                y = int(rng.integers(0, room)) if top else int(rng.integers(ink[3] + 1, h - lw + 1))
                draw.rectangle((0, y, w, y + lw - 1), fill=colour)

    # ------------------------------------------------------------------ main
    def _rng(self, index: int) -> np.random.Generator:
        ss = np.random.SeedSequence([self.seed, _SPLITS[self.split], int(index)])
        return np.random.default_rng(ss)

    def text(self, index: int) -> str:
        """The label of sample ``index`` without drawing it: ``render(index)[1]``."""
        text, _ = self._pick_text(self._rng(index))
        return self.label(text)

    def render(self, index: int) -> tuple[Image.Image, str]:
        """Render sample ``index``: an RGB image and its label.

        The label is the text drawn, normalised by the charset (case-folded for a
        single-case charset): no glyph is drawn that the label lacks, nor dropped,
        except the characters outside ``charset`` that ``draw_charset`` adds.
        """
        c, H = self.config, self.config.height
        s = H / 32
        rng = self._rng(index)
        text, face = self._pick_text(rng)

        d = 255 * rng.uniform(*c.contrast)
        lo = rng.uniform(0, 255 - d)
        fg_l, bg_l = (lo, lo + d) if rng.random() < c.p_dark_text else (lo + d, lo)
        fg, bg = self._colour(rng, fg_l), self._colour(rng, bg_l)
        outline = rng.random() < c.p_outline
        bold = outline or rng.random() < c.p_bold
        stroke = max(1, round(s)) if bold else 0
        masks, ink_h = self._text_masks(rng, text, face, stroke, outline)

        hand = c.style == "handwriting"
        if hand:
            masks = pen_width(rng, masks, c.p_thin, c.p_thick)
        if rng.random() < c.p_curve:
            masks = self._curve(rng, masks, ink_h)
        masks = self._warp(rng, masks, ink_h)
        if hand and rng.random() < c.p_elastic:
            masks = elastic(rng, masks, c.elastic, ink_h)
        masks = [m.crop(masks[0].getbbox()) for m in masks]
        shadow = round(s * rng.uniform(1, 2.5)) if rng.random() < c.p_shadow else 0
        mw, mh = masks[0].size
        if mh + shadow > H:  # rotation/warps made it taller than the output
            f = (H - shadow) / mh
            size = (max(1, round(mw * f)), H - shadow)
            masks = [m.resize(size, Image.Resampling.BILINEAR) for m in masks]
            mw, mh = size
        left, right = (round(H * rng.uniform(*c.padding)) for _ in range(2))
        cw = mw + shadow + left + right
        if c.width is not None and cw < c.width:
            # Pad towards the output aspect ratio; stretch the text by at most max_stretch.
            narrowest = min(c.width, math.ceil(c.width / c.max_stretch))
            stretch = rng.random() < c.p_stretch
            target = int(rng.integers(narrowest, c.width + 1)) if stretch else c.width
            extra = max(0, target - cw)
            k = int(rng.integers(0, extra + 1))
            left, right, cw = left + k, right + extra - k, cw + extra
        x, y = left, int(rng.integers(0, H - mh - shadow + 1))

        im = self._background(rng, cw, H, bg, 0.3 * d)
        if rng.random() < c.p_clutter:
            mix = rng.uniform(0.3, 0.7)
            rule = tuple(int(b + mix * (f - b)) for b, f in zip(bg, fg, strict=True))
            self._clutter(rng, im, (x, y, x + mw, y + mh + shadow), rule)
        if shadow:
            im.paste(tuple(int(v * 0.3) for v in bg), (x + shadow, y + shadow), masks[0])
        if outline:
            ol = 255 - rng.uniform(0, 60) if fg_l < 128 else rng.uniform(0, 60)
            im.paste(self._colour(rng, ol), (x, y), masks[0])
        if rng.random() < c.p_text_gradient:
            fg2 = self._colour(rng, float(np.clip(fg_l + rng.uniform(-0.3, 0.3) * d, 0, 255)))
            t = np.linspace(0, 1, mh, dtype=np.float32)[:, None, None]
            grad = np.asarray(fg, np.float32) * (1 - t) + np.asarray(fg2, np.float32) * t
            fill = Image.fromarray(np.repeat(grad, mw, axis=1).astype(np.uint8))
            im.paste(fill, (x, y), masks[-1])
        else:
            im.paste(fg, (x, y), masks[-1])
        im = self._degrade(rng, im)
        if hand and rng.random() < c.p_binarize:
            im = binarize(im)
        return im, self.label(text)

    def _degrade(self, rng: np.random.Generator, im: Image.Image) -> Image.Image:
        """Resize to the output size, then camera-like losses."""
        c, H = self.config, self.config.height
        if c.width is not None and im.size != (c.width, H):
            im = im.resize((c.width, H), Image.Resampling.BILINEAR)
        w = im.size[0]
        if rng.random() < c.p_lowres:
            f = rng.uniform(*c.lowres)
            small = im.resize(
                (max(2, round(w * f)), max(2, round(H * f))), Image.Resampling.BILINEAR
            )
            im = small.resize((w, H), Image.Resampling.BILINEAR)
        if rng.random() < c.p_blur:
            im = im.filter(ImageFilter.GaussianBlur(rng.uniform(*c.blur) * H / 32))
        shade, noisy = rng.random() < c.p_shading, rng.random() < c.p_noise
        if shade or noisy:
            arr = np.asarray(im, dtype=np.float32)
            if shade:
                a, k = rng.uniform(0, 2 * math.pi), rng.uniform(-c.shading, c.shading)
                t = np.cos(a) * np.linspace(-1, 1, w, dtype=np.float32)[None, :]
                t = t + np.sin(a) * np.linspace(-1, 1, H, dtype=np.float32)[:, None]
                arr = arr * (1 + k * 0.5 * t)[..., None]
            if noisy:
                ch = 1 if rng.random() < 0.7 else 3
                sigma = rng.uniform(*c.noise)
                arr = arr + rng.standard_normal((H, w, ch), dtype=np.float32) * sigma
            im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        if rng.random() < c.p_jpeg:
            buf, (q0, q1) = io.BytesIO(), c.jpeg_quality
            im.save(buf, "JPEG", quality=int(rng.integers(q0, q1 + 1)))
            im = Image.open(buf).convert("RGB")
        return im
