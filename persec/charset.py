"""Character sets, label normalisation and the CTC / attention tokenizers.

One :class:`Charset` is applied identically to ground truth and predictions, so the
evaluation protocol is code, not a convention. Presets:

* ``36_lowercase``: ``0-9a-z`` (the standard case-insensitive STR protocol),
* ``62_mixed``: ``0-9a-zA-Z``,
* ``94_full``: every printable ASCII character except space.
"""

from __future__ import annotations

import string
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from persec.errors import PersecError

PRESETS: dict[str, str] = {
    "36_lowercase": string.digits + string.ascii_lowercase,
    "62_mixed": string.digits + string.ascii_lowercase + string.ascii_uppercase,
    "94_full": string.digits + string.ascii_lowercase + string.ascii_uppercase + string.punctuation,
}

# The standard STR protocol's charset: case-insensitive digits and letters.
STANDARD_CHARSET = "36_lowercase"

# Reasons a label is rejected; shared by datasets and `persec data stats`.
EMPTY = "empty label"
OUT_OF_CHARSET = "label outside charset"
TOO_LONG = "label too long"
CONTROL_CHARS = "label with control characters"


SPACE_LINE = "<space>"  # a space in a charset file


class Charset:
    """An ordered set of characters with the normalisation that goes with it.

    Args:
        chars: the characters, as a string or a sequence of one-character strings.
            Order defines token ids. Duplicates and whitespace other than the plain
            space are an error; a charset that holds the space (text lines) keeps one
            space between words, where the others remove all whitespace.
        name: a display name (preset name or file path).
    """

    def __init__(self, chars: str | Sequence[str], name: str | None = None):
        chars = list(chars)
        if not chars:
            raise PersecError("charset is empty")
        bad = [c for c in chars if len(c) != 1 or (c.isspace() and c != " ")]
        if bad:
            raise PersecError(
                f"charset entries must be single characters (whitespace: only the space), got {bad[:5]!r}"
            )
        seen: set[str] = set()
        dups = [c for c in chars if c in seen or seen.add(c)]
        if dups:
            raise PersecError(f"charset has duplicate characters: {''.join(dups[:10])!r}")
        self.chars: tuple[str, ...] = tuple(chars)
        self.name = name or "".join(chars[:12]) + ("..." if len(chars) > 12 else "")
        self._index = {c: i for i, c in enumerate(self.chars)}
        self.is_ascii = all(c.isascii() for c in self.chars)
        self.has_space = " " in self._index
        letters = [c for c in self.chars if c.isalpha()]
        has_lower = any(c.islower() for c in letters)
        has_upper = any(c.isupper() for c in letters)
        # A single-case charset folds labels to its case; a mixed one keeps case.
        self.fold: str | None = None
        if has_lower and not has_upper:
            self.fold = "lower"
        elif has_upper and not has_lower:
            self.fold = "upper"

    # ------------------------------------------------------------------ building
    @classmethod
    def from_file(cls, path: str | Path) -> Charset:
        """Read one character per line (blank lines ignored, the line ``<space>`` for a
        space), for large charsets and those built from data (``persec data charset``)."""
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise PersecError(f"cannot read charset file {path}: {e}") from e
        chars = [
            " " if line == SPACE_LINE else line.strip("\r\n") for line in lines if line.strip()
        ]
        bad = [(i + 1, c) for i, c in enumerate(chars) if len(c) != 1]
        if bad:
            raise PersecError(
                f"charset file {path}: line {bad[0][0]} holds {bad[0][1]!r}, expected one character per line"
            )
        return cls(chars, name=str(path))

    @classmethod
    def from_spec(cls, spec: str | Charset) -> Charset:
        """A preset name (``36_lowercase`` ...), a path to a charset file, the
        characters themselves as a saved model records them (``chars:<characters>``),
        or a Charset."""
        if isinstance(spec, Charset):
            return spec
        if spec.startswith("chars:"):
            return cls(spec[len("chars:") :])
        if spec in PRESETS:
            return cls(PRESETS[spec], name=spec)
        if Path(spec).is_file():
            return cls.from_file(spec)
        raise PersecError(
            f"unknown charset {spec!r}: use one of {', '.join(PRESETS)} or a file with one character per line"
        )

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, char: object) -> bool:
        return char in self._index

    def __iter__(self):
        return iter(self.chars)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Charset) and self.chars == other.chars

    def __hash__(self) -> int:
        return hash(self.chars)

    def __repr__(self) -> str:
        return f"Charset({self.name!r}, {len(self)} chars)"

    def index(self, char: str) -> int:
        """Position of ``char`` in the charset (0-based)."""
        return self._index[char]

    # ------------------------------------------------------------------ labels
    def normalize(self, label: str) -> str:
        """Map a raw label to the charset's conventions without dropping characters.

        NFKD then ASCII for ASCII-only charsets (``é`` → ``e``), whitespace removed (a
        charset holding the space: runs of whitespace become one space, none at the
        ends), case folded when the charset is single-case.
        """
        if self.is_ascii:
            # Drop only the accents NFKD splits off (é → e); other non-ASCII characters
            # (ß, ½ → 1⁄2) stay, so `check` rejects them rather than corrupting the label.
            label = unicodedata.normalize("NFKD", label)
            label = "".join(c for c in label if not unicodedata.category(c).startswith("M"))
        label = (" " if self.has_space else "").join(label.split())
        if self.fold == "lower":
            label = label.lower()
        elif self.fold == "upper":
            label = label.upper()
        return label

    def strip_unsupported(self, label: str) -> str:
        """Drop every character the charset does not hold (after :meth:`normalize`)."""
        return "".join(c for c in self.normalize(label) if c in self._index)

    def check(self, label: str, max_length: int | None = 25) -> tuple[str | None, str | None]:
        """Normalise a label and validate it.

        Returns:
            ``(label, None)`` when it is usable, else ``(None, reason)`` where reason is
            one of ``EMPTY``, ``CONTROL_CHARS``, ``OUT_OF_CHARSET``, ``TOO_LONG``.
        """
        if any(unicodedata.category(c) in ("Cc", "Cf") and not c.isspace() for c in label):
            return None, CONTROL_CHARS
        label = self.normalize(label)
        if not label:
            return None, EMPTY
        if any(c not in self._index for c in label):
            return None, OUT_OF_CHARSET
        if max_length is not None and len(label) > max_length:
            return None, TOO_LONG
        return label, None


class CTCTokenizer:
    """Maps labels to CTC targets: blank is id 0, characters are ``1..len(charset)``."""

    blank_id = 0

    def __init__(self, charset: Charset):
        self.charset = charset

    @property
    def num_classes(self) -> int:
        """Output size of a CTC head (characters + blank)."""
        return len(self.charset) + 1

    def encode(self, labels: Iterable[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode labels for ``F.ctc_loss``.

        Returns:
            targets ``(B, S)`` long, padded with blank, and lengths ``(B,)`` long.
        """
        ids = [[self.charset.index(c) + 1 for c in label] for label in labels]
        lengths = torch.tensor([len(x) for x in ids], dtype=torch.long)
        targets = torch.zeros(len(ids), max(1, max(map(len, ids), default=0)), dtype=torch.long)
        for i, x in enumerate(ids):
            targets[i, : len(x)] = torch.tensor(x, dtype=torch.long)
        return targets, lengths

    def decode(self, ids: Sequence[int]) -> str:
        """Greedy CTC collapse of a best path: merge repeats, then drop blanks."""
        out = []
        prev = None
        for i in ids:
            i = int(i)
            if i != prev and i != self.blank_id:
                out.append(self.charset.chars[i - 1])
            prev = i
        return "".join(out)


class AttentionTokenizer:
    """Maps labels to autoregressive targets.

    Ids: EOS = 0, characters ``1..N``, BOS = N + 1, PAD = N + 2. The decoder predicts
    ``N + 1`` classes (EOS + characters); BOS and PAD are inputs only.
    """

    eos_id = 0

    def __init__(self, charset: Charset):
        self.charset = charset
        self.bos_id = len(charset) + 1
        self.pad_id = len(charset) + 2

    @property
    def num_classes(self) -> int:
        """Output size of the decoder's classifier (EOS + characters)."""
        return len(self.charset) + 1

    @property
    def vocab_size(self) -> int:
        """Input embedding size (EOS + characters + BOS + PAD)."""
        return len(self.charset) + 3

    def encode(self, labels: Iterable[str], max_length: int | None = None) -> torch.Tensor:
        """Encode labels as ``[BOS] c1 .. cn [EOS] [PAD]...``.

        Returns:
            ``(B, L + 2)`` long, L the longest label (or ``max_length`` when given).
        """
        ids = [[self.charset.index(c) + 1 for c in label] for label in labels]
        length = max_length if max_length is not None else max((len(x) for x in ids), default=0)
        out = torch.full((len(ids), length + 2), self.pad_id, dtype=torch.long)
        for i, x in enumerate(ids):
            if len(x) > length:
                raise ValueError(f"label of length {len(x)} exceeds max_length {length}")
            out[i, 0] = self.bos_id
            out[i, 1 : len(x) + 1] = torch.tensor(x, dtype=torch.long)
            out[i, len(x) + 1] = self.eos_id
        return out

    def decode(self, ids: Sequence[int]) -> str:
        """Characters up to the first EOS; BOS and PAD are ignored."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if 1 <= i <= len(self.charset):
                out.append(self.charset.chars[i - 1])
        return "".join(out)


def resolve_charset(spec: Charset | str | None) -> Charset | None:
    """:meth:`Charset.from_spec`, with ``None`` (no charset: labels as written) kept."""
    return None if spec is None else Charset.from_spec(spec)
