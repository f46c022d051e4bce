"""Words persec never renders and its language model never learns [ours].

The list is ``better_profanity``'s (a maintained profanity list on PyPI, MIT), minus
``allowed_words.txt`` beside this module: the ordinary, medical, legal, historical and
identity words the list also holds ("stroke", "vodka", "gay", "Dick"). What remains
are slurs and explicit profanity. Words are compared case-folded, as whole words.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

ALLOWED_FILE = Path(__file__).with_name("allowed_words.txt")


def _words(text: str) -> frozenset[str]:
    lines = (line.split("#", 1)[0].strip().casefold() for line in text.splitlines())
    return frozenset(line for line in lines if line)


def listed_words() -> frozenset[str]:
    """better_profanity's list as shipped, case-folded."""
    listed = resources.files("better_profanity").joinpath("profanity_wordlist.txt")
    return _words(listed.read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=1)
def blocked_words() -> frozenset[str]:
    """The case-folded words that are filtered out: the profanity list minus the
    allow-list, each entry also in its letters-and-digits form (a charset without
    ``-`` renders ``son-of-a-bitch`` as ``sonofabitch``)."""
    words = listed_words() - allowed_words()
    words |= {"".join(c for c in w if c.isalnum()) for w in words}
    return words - allowed_words() - {""}


@functools.lru_cache(maxsize=1)
def allowed_words() -> frozenset[str]:
    """The profanity list's words that persec keeps (``allowed_words.txt``)."""
    return _words(ALLOWED_FILE.read_text(encoding="utf-8"))


def is_blocked(word: str) -> bool:
    """Whether ``word`` (any case) is a filtered word."""
    return word.casefold() in blocked_words()
