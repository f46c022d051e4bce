"""Font discovery, validation and the held-out font split for the word renderer.

Fonts come from packages that install by name: the DejaVu/STIX/Computer Modern
faces bundled with matplotlib (always present, the fallback), ``/usr/share/fonts``
(Debian ``fonts-*`` packages) and any directory in ``$PERSEC_FONT_DIRS``. A face is
kept only if every character of ``0-9a-zA-Z`` renders as a real glyph: not blank, not
the ``.notdef`` box, and not a handful of shapes repeated across many letters (symbol
fonts and "last resort" fonts), and if its strokes are not hairlines at ~20 px. The validated list is cached as JSON under
``$PERSEC_CACHE_DIR`` (default ``~/.cache/persec``) keyed by the candidate files, so
start-up costs one ``stat`` per font file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import statistics
import string
from collections.abc import Iterable, Sequence
from pathlib import Path

import PIL
from PIL import Image, ImageDraw, ImageFont

from persec.errors import PersecError

# Bump when the validation rules change, so stale caches are ignored.
_VALIDATOR_VERSION = 4
_PROBE_SIZE = 24
# Surely absent from any Latin font: renders as the font's .notdef glyph.
_ABSENT_CHAR = "\U0010fffd"
_REQUIRED = string.digits + string.ascii_lowercase + string.ascii_uppercase
_PRINTABLE = _REQUIRED + string.punctuation
# Letters without ascenders or descenders: about 0.7x their capital in a cased font.
_SHORT = "acemnorsuvwxz"
# Faces that pass glyph checks but are not text: symbols, math extensions, keyboard
# keycaps, decorated initials.
_BLOCKLIST = re.compile(
    r"d050000l|standardsymbols|dingbat|symbol|stixsiz|stixnonuni|cmex|cmsy|cmmi|"
    r"lastresort|last resort|math|keyboard|initials|linbiolinum_k|linlibertine_i\b",
    re.IGNORECASE,
)
# Words that name a weight, width or optical size rather than a design: faces that
# differ only by these belong to one family for the train/test split.
_STYLE_WORDS = {
    "thin", "hairline", "extralight", "ultralight", "light", "book", "regular", "medium",
    "semibold", "demibold", "demi", "bold", "extrabold", "ultrabold", "black", "heavy",
    "condensed", "cond", "narrow", "display", "retina", "minus", "alt", "o",
}  # fmt: skip
# Metric clones of one design (keys without spaces): held out together, so the test
# split is really unseen.
_CLONES = {
    "liberationsans": "helvetica-like", "nimbussans": "helvetica-like",
    "freesans": "helvetica-like", "arimo": "helvetica-like",
    "liberationserif": "times-like", "nimbusroman": "times-like",
    "freeserif": "times-like", "tinos": "times-like",
    "liberationmono": "courier-like", "nimbusmonops": "courier-like",
    "freemono": "courier-like", "cousine": "courier-like",
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class FontFace:
    """One validated font file.

    Attributes:
        path: absolute path of the TTF/OTF file.
        family: family name from the font's name table (e.g. ``"DejaVu Sans"``).
        style: style name (e.g. ``"Bold Oblique"``).
        case: ``"mixed"``, or ``"upper"`` for caps fonts whose lowercase letters are
            drawn as capitals (the renderer then draws and labels text in upper case).
        coverage: the printable ASCII characters the face renders as real glyphs.
    """

    path: str
    family: str
    style: str
    case: str = "mixed"
    coverage: str = _REQUIRED

    @property
    def group(self) -> str:
        """The design this face belongs to; the train/test split keeps groups whole."""
        return family_group(self.family)


def family_group(family: str) -> str:
    """The design key of a family name: style words dropped, clones merged.

    ``"Open Sans Condensed"`` → ``"open sans"``; ``"Nimbus Sans Narrow"`` →
    ``"helvetica-like"``; ``"cmr10"`` → ``"computer modern"``.
    """
    name = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", family).lower()
    if re.fullmatch(r"cm[a-z]+\d+", name):
        return "computer modern"
    words = [w for w in re.split(r"[\s_-]+", name) if w and w not in _STYLE_WORDS]
    key = " ".join(words) or name
    return _CLONES.get(key.replace(" ", ""), key)


def candidate_paths(font_dirs: Sequence[str | Path] = (), system: bool = True) -> list[Path]:
    """All TTF/OTF files in matplotlib's font folder, the system and extra folders."""
    import matplotlib

    dirs = [Path(matplotlib.get_data_path()) / "fonts" / "ttf"]
    if system:
        dirs.append(Path("/usr/share/fonts"))
    env = os.environ.get("PERSEC_FONT_DIRS", "")
    dirs += [Path(d) for d in env.split(os.pathsep) if d]
    dirs += [Path(d) for d in font_dirs]
    found: set[Path] = set()
    for d in dirs:
        if d.is_file():
            found.add(d.resolve())
        elif d.is_dir():
            found.update(p.resolve() for p in d.rglob("*") if p.suffix.lower() in (".ttf", ".otf"))
    return sorted(found)


def _glyph_signature(font: ImageFont.FreeTypeFont, char: str) -> bytes | None:
    """The cropped coverage mask of one character as bytes; None when blank."""
    im = Image.new("L", (3 * _PROBE_SIZE, 3 * _PROBE_SIZE))
    ImageDraw.Draw(im).text((_PROBE_SIZE, _PROBE_SIZE // 2), char, font=font, fill=255)
    # Threshold so that faint anti-aliasing noise does not count as a glyph.
    im = im.point(lambda v: 255 if v >= 64 else 0)
    bbox = im.getbbox()
    if bbox is None:
        return None
    crop = im.crop(bbox)
    return b"%d,%d:" % crop.size + crop.tobytes()


def _solid_fraction(path: str) -> float:
    """Share of inked pixels that are mostly covered when text is ~20 px (32 px lines)."""
    font = ImageFont.truetype(path, 20, layout_engine=ImageFont.Layout.BASIC)
    im = Image.new("L", (400, 40))
    ImageDraw.Draw(im).text((4, 4), "Hamburgefonts 0123", font=font, fill=255)
    hist = im.histogram()
    return sum(hist[128:]) / max(1, sum(hist[1:]))


def _height(signature: bytes) -> int:
    return int(signature.split(b":", 1)[0].split(b",")[1])


def validate_font(path: str | Path) -> FontFace | None:
    """Check one font file; return its :class:`FontFace` or None when unusable."""
    path = Path(path)
    if _BLOCKLIST.search(path.name):
        return None
    try:
        font = ImageFont.truetype(str(path), _PROBE_SIZE, layout_engine=ImageFont.Layout.BASIC)
        family, style = font.getname()
    except (OSError, ValueError):
        return None
    family, style = family or path.stem, style or "Regular"
    if _BLOCKLIST.search(family):
        return None
    notdef = _glyph_signature(font, _ABSENT_CHAR)
    sigs = {c: _glyph_signature(font, c) for c in _PRINTABLE}
    real = {c: s for c, s in sigs.items() if s is not None and s != notdef}
    if any(c not in real for c in _REQUIRED):
        return None
    # Symbol and fallback fonts map many letters to a few shapes.
    lower = {real[c] for c in string.digits + string.ascii_lowercase}
    upper = {real[c] for c in string.digits + string.ascii_uppercase}
    if min(len(lower), len(upper)) < 30:
        return None
    case = "mixed"
    if statistics.median(_height(real[c]) / _height(real[c.upper()]) for c in _SHORT) >= 0.9:
        # "Lowercase" as tall as the capitals: a caps font (unicase or caps variants).
        case = "upper"
    if _solid_fraction(str(path)) < 0.2:
        return None  # hairline strokes: barely any pixel fully inked at output scale
    coverage = "".join(c for c in _PRINTABLE if c in real)
    return FontFace(str(path), family, style, case, coverage)


def _cache_dir() -> Path:
    return Path(os.environ.get("PERSEC_CACHE_DIR") or Path.home() / ".cache" / "persec")


def _cache_key(paths: Iterable[Path]) -> str:
    h = hashlib.sha256(f"v{_VALIDATOR_VERSION};pillow{PIL.__version__}".encode())
    for p in paths:
        try:
            size = p.stat().st_size
        except OSError:
            size = -1
        h.update(f"{p}\0{size}\n".encode())
    return h.hexdigest()[:16]


def available_fonts(
    font_dirs: Sequence[str | Path] = (), system: bool = True, cache: bool = True
) -> list[FontFace]:
    """Validated fonts, sorted by path, one face per (family, style).

    Args:
        font_dirs: extra folders (searched recursively) or font files.
        system: also search ``/usr/share/fonts``.
        cache: read/write the validated list under ``$PERSEC_CACHE_DIR``.

    Raises:
        PersecError: when no usable font is found.
    """
    paths = candidate_paths(font_dirs, system)
    cache_file = _cache_dir() / f"fonts-{_cache_key(paths)}.json"
    fonts: list[FontFace] | None = None
    if cache and cache_file.is_file():
        try:
            fonts = [FontFace(**d) for d in json.loads(cache_file.read_text())]
        except (OSError, ValueError, TypeError):
            fonts = None  # a corrupt cache is rebuilt, not trusted
    if fonts is None:
        seen: set[tuple[str, str]] = set()
        fonts = []
        for p in paths:
            face = validate_font(p)
            # The same face often ships twice (matplotlib and Debian, liberation 1 and 2).
            if face is not None and (face.family, face.style) not in seen:
                seen.add((face.family, face.style))
                fonts.append(face)
        if cache:
            _write_cache(cache_file, fonts)
    if not fonts:
        raise PersecError(
            "no usable font found: install matplotlib or Debian fonts-* packages, "
            "or point $PERSEC_FONT_DIRS at a folder of TTF/OTF files"
        )
    return fonts


def _write_cache(cache_file: Path, fonts: list[FontFace]) -> None:
    # The cache only saves time; a read-only home must not break rendering.
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps([dataclasses.asdict(f) for f in fonts], indent=0))
        os.replace(tmp, cache_file)
    except OSError:
        pass


def _unit_hash(text: str) -> float:
    """A stable hash of ``text`` in [0, 1) (Python's ``hash`` is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2.0**64


def split_fonts(
    fonts: Sequence[FontFace], split: str = "train", test_fraction: float = 0.2
) -> list[FontFace]:
    """The faces of one side of the held-out font split.

    Whole design groups go to ``test`` when the stable hash of their name is below
    ``test_fraction``, so a group's side does not depend on which other fonts are
    installed. With two or more groups, each side keeps at least one (the group with
    the smallest hash is moved to ``test``, the largest to ``train``, if needed); a
    single group is all ``train`` and ``test`` is empty.

    Args:
        fonts: validated faces, e.g. from :func:`available_fonts`.
        split: ``"train"`` or ``"test"``.
        test_fraction: expected share of groups held out for ``test``.
    """
    if split not in ("train", "test"):
        raise PersecError(f"unknown font split {split!r}: use 'train' or 'test'")
    groups = sorted({f.group for f in fonts}, key=_unit_hash)
    test = {g for g in groups if _unit_hash(g) < test_fraction}
    if len(groups) == 1:
        test.clear()  # nothing can be held out: the only group trains
    elif len(groups) >= 2:
        if not test:
            test.add(groups[0])
        if len(test) == len(groups):
            test.discard(groups[-1])
    return [f for f in fonts if (f.group in test) == (split == "test")]
