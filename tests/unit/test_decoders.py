"""Decoders: shapes, hand-computed decoding and losses, KV-cache parity, overfitting."""

from __future__ import annotations

import math

import pytest
import torch

from persec.charset import Charset
from persec.models.decoders.attn import AttentionDecoder
from persec.models.decoders.base import DecoderConfig, build_decoder
from persec.models.decoders.ctc import CTCDecoder
from persec.models.encoders.base import EncoderConfig, build_encoder

CHARSET = Charset.from_spec("36_lowercase")
N = len(CHARSET)


def _cls(char: str) -> int:
    """Class id of a character in both heads (blank / EOS is 0)."""
    return CHARSET.index(char) + 1


def _logits(rows: list[dict[int, float]]) -> torch.Tensor:
    """(1, T, N+1) log-probabilities; each row gives some class probabilities and
    spreads the rest evenly over the other classes."""
    out = torch.empty(1, len(rows), N + 1, dtype=torch.float64)
    for t, row in enumerate(rows):
        rest = (1.0 - sum(row.values())) / (N + 1 - len(row))
        probs = torch.full((N + 1,), rest, dtype=torch.float64)
        for c, p in row.items():
            probs[c] = p
        out[0, t] = probs.log()
    return out


def _memory(b: int = 3, t: int = 12, c: int = 24) -> torch.Tensor:
    return torch.randn(b, t, c, generator=torch.Generator().manual_seed(0))  # (B, T, C)


# --------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("lstm_layers", [0, 2])
def test_ctc_shapes(lstm_layers: int) -> None:
    dec = CTCDecoder(24, CHARSET, lstm_layers=lstm_layers, hidden=16)
    logits = dec(_memory())
    assert logits.shape == (3, 12, N + 1)
    assert len(dec.decode(logits)) == 3


def test_attention_shapes() -> None:
    dec = AttentionDecoder(24, CHARSET, d_model=32, heads=4, layers=2, max_length=7)
    assert dec(_memory(), ["ab", "", "hello"]).shape == (3, 6, N + 1)  # longest + EOS
    dec.eval()
    with torch.no_grad():
        assert dec(_memory()).shape == (3, 8, N + 1)  # max_length + EOS
    with pytest.raises(ValueError, match="max_length 7"):
        dec(_memory(), ["abcdefgh"])


def test_build_decoder() -> None:
    ctc = build_decoder(DecoderConfig(name="ctc", lstm_layers=0), 24, CHARSET)
    assert isinstance(ctc, CTCDecoder) and ctc.rnn is None
    attn = build_decoder(DecoderConfig(name="attn", d_model=32, heads=4, max_length=9), 24, CHARSET)
    assert isinstance(attn, AttentionDecoder) and attn.max_length == 9
    with pytest.raises(ValueError, match="use one of attn, ctc"):
        build_decoder(DecoderConfig(name="rnn"), 24, CHARSET)


# --------------------------------------------------------------------------- CTC by hand
def test_ctc_greedy_by_hand() -> None:
    a, b, blank = _cls("a"), _cls("b"), 0
    probs = [0.6, 0.7, 0.8, 0.5, 0.9, 0.55, 0.65]
    ids = [a, a, blank, b, b, blank, b]  # a a - b b - b
    text, conf = CTCDecoder(8, CHARSET, lstm_layers=0).decode(
        _logits([{c: p} for c, p in zip(ids, probs, strict=True)])
    )[0]
    assert text == "abb"
    # each character: the best frame of its run
    assert conf == pytest.approx(0.7 * 0.9 * 0.65)


def test_ctc_empty_prediction_gets_all_blank_path_probability() -> None:
    text, conf = CTCDecoder(8, CHARSET, 0).decode(_logits([{0: 0.9}, {0: 0.8}, {0: 0.5}]))[0]
    assert text == "" and conf == pytest.approx(0.9 * 0.8 * 0.5)


def test_ctc_beam_search_sums_alignments() -> None:
    a = _cls("a")
    # Each frame: blank 0.6, "a" 0.4. Best path is "" (0.36), but "a" has three
    # alignments (a-, -a, aa): 0.24 + 0.24 + 0.16 = 0.64.
    logits = _logits([{0: 0.6, a: 0.4}] * 2)
    dec = CTCDecoder(8, CHARSET, 0)
    assert dec.decode(logits)[0] == ("", pytest.approx(0.36))
    assert dec.beam_decode(logits, beam_width=4)[0] == ("a", pytest.approx(0.64))
    # Over {a, blank}^3 every sequence but "---" and "a-a" collapses to "a".
    flat = _logits([{a: 0.5, 0: 0.5}] * 3)
    assert dec.beam_decode(flat, beam_width=4)[0] == ("a", pytest.approx(6 / 8))
    # A repeated character needs a blank between: a-a is "aa" (0.9^3), aa- is "a".
    sep = _logits([{a: 0.9, 0: 0.1}, {0: 0.9, a: 0.1}, {a: 0.9, 0: 0.1}])
    assert dec.beam_decode(sep, beam_width=4)[0] == ("aa", pytest.approx(0.729))


def test_ctc_loss_by_hand() -> None:
    dec = CTCDecoder(8, CHARSET, 0)
    a, b = _cls("a"), _cls("b")
    one = _logits([{a: 0.3}])
    assert dec.loss(one, ["a"]).item() == pytest.approx(-math.log(0.3), rel=1e-5)
    two = _logits([{a: 0.5, b: 0.2}, {a: 0.4, b: 0.1}])
    # label "ab" over 2 frames: the only path is a,b; mean divides by the label length
    assert dec.loss(two, ["ab"]).item() == pytest.approx(-math.log(0.5 * 0.1) / 2, rel=1e-5)
    # batch mean of per-image losses
    both = torch.cat([_logits([{a: 0.3}, {0: 0.5}]), _logits([{a: 0.2}, {a: 0.6}])])
    p1 = 0.3 * 0.5 + 0.3 * (0.5 / N) + (0.7 / N) * (0.5 / N)  # a-, aa, -a
    p2 = 0.2 * (0.4 / N) + 0.2 * 0.6 + (0.8 / N) * 0.6
    expected = (-math.log(p1) - math.log(p2)) / 2
    assert dec.loss(both, ["a", "a"]).item() == pytest.approx(expected, rel=1e-5)


# --------------------------------------------------------------------------- attention by hand
def test_attention_decode_by_hand() -> None:
    h, i, z = _cls("h"), _cls("i"), _cls("z")
    dec = AttentionDecoder(8, CHARSET, d_model=16, heads=2, layers=1, max_length=5)
    logits = _logits([{h: 0.9}, {i: 0.8}, {0: 0.7}, {z: 0.99}])  # h i EOS z
    assert dec.decode(logits)[0] == ("hi", pytest.approx(0.9 * 0.8 * 0.7))
    no_eos = _logits([{h: 0.9}, {i: 0.5}])
    assert dec.decode(no_eos)[0] == ("hi", pytest.approx(0.45))


def test_attention_loss_ignores_padding() -> None:
    dec = AttentionDecoder(8, CHARSET, d_model=16, heads=2, layers=1, max_length=5)
    logits = torch.randn(2, 6, N + 1, generator=torch.Generator().manual_seed(1))
    labels = ["ab", "abcd"]
    targets = [[_cls("a"), _cls("b"), 0], [_cls(c) for c in "abcd"] + [0]]
    logp = logits.log_softmax(-1)
    terms = [-logp[r, t, c] for r, row in enumerate(targets) for t, c in enumerate(row)]
    expected = torch.stack(terms).mean()
    torch.testing.assert_close(dec.loss(logits, labels), expected)
    with pytest.raises(ValueError, match="logits cover"):
        dec.loss(logits[:, :3], labels)


@pytest.mark.parametrize("layers", [1, 2])
def test_greedy_with_cache_matches_teacher_forcing(layers: int) -> None:
    torch.manual_seed(0)
    dec = AttentionDecoder(24, CHARSET, d_model=32, heads=4, layers=layers, max_length=6).eval()
    mem = _memory(4)
    with torch.no_grad():
        greedy = dec(mem)
        texts = [t for t, _ in dec.decode(greedy)]
        # a row without EOS holds max_length + 1 characters; the last is never an input
        forced = dec(mem, [t[: dec.max_length] for t in texts])
    for r, text in enumerate(texts):
        n = min(len(text) + 1, greedy.size(1))  # characters + EOS, or every step
        torch.testing.assert_close(greedy[r, :n], forced[r, :n], atol=1e-4, rtol=1e-4)


def test_greedy_stops_early_and_pads_with_eos() -> None:
    dec = AttentionDecoder(24, CHARSET, d_model=32, heads=4, layers=1, max_length=10).eval()
    with torch.no_grad():
        dec.classifier.bias.fill_(0.0)
        dec.classifier.bias[0] = 50.0  # EOS first: all rows stop at step 1
        logits = dec(_memory())
    assert logits.shape == (3, 11, N + 1)
    assert (logits.argmax(-1) == 0).all()
    assert [t for t, _ in dec.decode(logits)] == ["", "", ""]


# --------------------------------------------------------------------------- learning
LABELS = ["cat", "dog", "a1", "zebra", "xyz", "7up", "hello", "q"]


@pytest.mark.parametrize(
    ("encoder", "decoder"), [("resnet", "ctc"), ("vit", "attn"), ("vit", "ctc"), ("resnet", "attn")]
)
def test_tiny_model_overfits_a_batch(encoder: str, decoder: str) -> None:
    torch.manual_seed(0)
    x = torch.rand(8, 3, 32, 48) * 2 - 1  # (B, C, H, W): T = 12 frames
    enc = build_encoder(EncoderConfig(name=encoder, size="tiny"))
    cfg = DecoderConfig(
        decoder, lstm_layers=1, hidden=32, d_model=32, heads=2, layers=1, dropout=0.0, max_length=8
    )
    dec = build_decoder(cfg, enc.out_channels, CHARSET)
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-3)
    losses, preds = [], []
    for step in range(1000):
        enc.train(), dec.train()
        loss = dec.loss(dec(enc(x).high, LABELS), LABELS)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % 25 == 24:
            enc.eval(), dec.eval()
            with torch.no_grad():
                preds = [t for t, _ in dec.decode(dec(enc(x).high))]  # greedy, no labels
            if preds == LABELS:
                break
    assert preds == LABELS
    assert losses[-1] < 0.5 * losses[0]
    if decoder == "attn":  # greedy and teacher forcing agree on the learned labels
        with torch.no_grad():
            high = enc(x).high
            forced = dec.decode(dec(high, LABELS))
            greedy = dec.decode(dec(high))
        assert [t for t, _ in forced] == LABELS
        for (_, cf), (_, cg) in zip(forced, greedy, strict=True):
            assert cf == pytest.approx(cg, rel=1e-4)


def test_ctc_impossible_alignment_gives_zero_not_inf() -> None:
    dec = CTCDecoder(8, CHARSET, 0)
    loss = dec.loss(_logits([{0: 0.5}, {0: 0.5}]), ["abc"])  # 3 characters, 2 frames
    assert loss.item() == 0.0


@pytest.mark.parametrize("name", ["ctc", "attn"])
def test_bf16_autocast_keeps_losses_in_fp32(name: str) -> None:
    cfg = DecoderConfig(name, lstm_layers=1, hidden=16, d_model=32, heads=4, layers=1, max_length=6)
    dec = build_decoder(cfg, 24, CHARSET)
    labels = ["ab", "c", "xyz"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = dec.loss(dec(_memory(), labels), labels)
        dec.eval()
        greedy = dec(_memory())
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert len(dec.decode(greedy)) == 3
