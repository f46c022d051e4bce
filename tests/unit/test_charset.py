"""Charset presets, files, label normalisation and the two tokenizers."""

from __future__ import annotations

import pytest
import torch

from persec.charset import (
    CONTROL_CHARS,
    EMPTY,
    OUT_OF_CHARSET,
    TOO_LONG,
    AttentionTokenizer,
    Charset,
    CTCTokenizer,
)
from persec.errors import PersecError


@pytest.mark.parametrize(
    ("spec", "size"), [("36_lowercase", 36), ("62_mixed", 62), ("94_full", 94)]
)
def test_preset_sizes(spec, size):
    charset = Charset.from_spec(spec)
    assert len(charset) == size
    assert charset.name == spec
    assert charset.chars[:10] == tuple("0123456789")
    assert " " not in charset


def test_preset_folding():
    assert Charset.from_spec("36_lowercase").fold == "lower"
    assert Charset.from_spec("62_mixed").fold is None
    assert Charset.from_spec("94_full").fold is None
    assert Charset("ABC").fold == "upper"


def test_from_file_with_multibyte_char_bom_and_blank_lines(tmp_path):
    path = tmp_path / "chars.txt"
    # BOM as Notepad writes it, CRLF ends, a blank line, a 3-byte UTF-8 char (€) and ü.
    path.write_bytes("\ufeffa\r\nb\r\n\r\n€\r\nü\r\n".encode())
    charset = Charset.from_spec(str(path))
    assert charset.chars == ("a", "b", "€", "ü")
    assert charset.index("€") == 2
    assert not charset.is_ascii
    # Non-ASCII charsets keep their characters: no NFKD → ASCII mapping.
    assert charset.strip_unsupported("ü€x") == "ü€"


def test_from_file_rejects_two_chars_on_a_line(tmp_path):
    path = tmp_path / "chars.txt"
    path.write_text("a\nbc\n", encoding="utf-8")
    with pytest.raises(PersecError, match="line 2"):
        Charset.from_file(path)


def test_unknown_spec_and_bad_chars():
    with pytest.raises(PersecError, match="unknown charset"):
        Charset.from_spec("37_nonsense")
    with pytest.raises(PersecError, match="duplicate"):
        Charset("abca")
    with pytest.raises(PersecError, match="only the space"):
        Charset("a\nb")
    with pytest.raises(PersecError, match="empty"):
        Charset("")


def test_normalize():
    lower = Charset.from_spec("36_lowercase")
    mixed = Charset.from_spec("62_mixed")
    assert lower.normalize("Café") == "cafe"  # NFKD splits é into e + accent
    assert mixed.normalize("Café") == "Cafe"  # mixed case keeps case
    assert lower.normalize(" New\tYork\n") == "newyork"  # all whitespace removed
    assert lower.normalize("ﬁne") == "fine"  # compatibility ligature
    # Non-decomposable non-ASCII characters are kept, so `check` can reject them.
    assert lower.normalize("Straße") == "straße"
    assert lower.strip_unsupported("Straße!") == "strae"
    assert Charset.from_spec("94_full").strip_unsupported("don't stop") == "don'tstop"


def test_check_reasons():
    charset = Charset.from_spec("36_lowercase")
    assert charset.check("Hello") == ("hello", None)
    assert charset.check("  ") == (None, EMPTY)
    assert charset.check("") == (None, EMPTY)
    assert charset.check("don't") == (None, OUT_OF_CHARSET)
    assert charset.check("straße") == (None, OUT_OF_CHARSET)
    assert charset.check("½") == (None, OUT_OF_CHARSET)  # not silently "12"
    assert charset.check("a\x00b") == (None, CONTROL_CHARS)
    assert charset.check("a\u200bb") == (None, CONTROL_CHARS)  # zero-width space is Cf
    assert charset.check("a" * 25) == ("a" * 25, None)
    assert charset.check("a" * 26) == (None, TOO_LONG)
    assert charset.check("a" * 26, max_length=None) == ("a" * 26, None)


def test_ctc_encode():
    tok = CTCTokenizer(Charset("abc"))
    assert tok.num_classes == 4
    targets, lengths = tok.encode(["ab", "c", ""])
    # Characters are 1..3 (a=1, b=2, c=3), padded with blank 0.
    assert targets.tolist() == [[1, 2], [3, 0], [0, 0]]
    assert lengths.tolist() == [2, 1, 0]
    assert targets.dtype == lengths.dtype == torch.long
    targets, lengths = tok.encode([])
    assert targets.shape == (0, 1) and lengths.shape == (0,)


def test_ctc_decode_collapses_repeats_then_blanks():
    tok = CTCTokenizer(Charset("abc"))
    assert tok.decode([1, 1, 0, 1]) == "aa"  # a a - a → aa
    assert tok.decode([0, 1, 1, 2, 2, 0, 0, 3]) == "abc"
    assert tok.decode([0, 0, 0]) == ""
    assert tok.decode(torch.tensor([2, 0, 2])) == "bb"


def test_attention_encode_layout():
    tok = AttentionTokenizer(Charset("abc"))
    # EOS = 0, a..c = 1..3, BOS = 4, PAD = 5
    assert (tok.eos_id, tok.bos_id, tok.pad_id) == (0, 4, 5)
    assert tok.num_classes == 4 and tok.vocab_size == 6
    ids = tok.encode(["ab", "c"])
    assert ids.tolist() == [[4, 1, 2, 0], [4, 3, 0, 5]]
    ids = tok.encode(["a"], max_length=3)
    assert ids.tolist() == [[4, 1, 0, 5, 5]]
    with pytest.raises(ValueError, match="exceeds"):
        tok.encode(["abcabc"], max_length=3)


def test_attention_decode_stops_at_eos():
    tok = AttentionTokenizer(Charset("abc"))
    assert tok.decode([1, 2, 0, 3, 3]) == "ab"
    assert tok.decode([4, 3, 1, 0, 5]) == "ca"  # BOS skipped
    assert tok.decode([0, 1]) == ""
    assert tok.decode(tok.encode(["cab"])[0]) == "cab"


def test_one_charset_resolver_for_presets_files_and_saved_characters(tmp_path):
    from persec.charset import STANDARD_CHARSET, resolve_charset

    saved = Charset.from_spec("chars:ab£")  # as a saved model's config.json records it
    assert "".join(saved.chars) == "ab£"
    assert resolve_charset(None) is None
    assert resolve_charset(STANDARD_CHARSET).name == "36_lowercase"
    (tmp_path / "c.txt").write_text("x\ny\n")
    assert len(resolve_charset(str(tmp_path / "c.txt"))) == 2
    assert resolve_charset(saved) is saved


def test_a_charset_with_the_space_keeps_one_between_words(tmp_path):
    lines = Charset("ab ")
    assert lines.has_space and lines.normalize("  a \t b  ") == "a b"
    assert lines.check("a  b") == ("a b", None)
    assert not Charset("ab").has_space and Charset("ab").normalize("a b") == "ab"
    with pytest.raises(PersecError, match="only the space"):
        Charset("a\tb")
    # A charset file spells the space as the line <space>.
    path = tmp_path / "chars.txt"
    path.write_text("a\n<space>\nb\n", encoding="utf-8")
    assert Charset.from_file(path).chars == ("a", " ", "b")
