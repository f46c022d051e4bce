"""The CTC head: an optional BiLSTM and a per-frame classifier, greedy or beam-search decoding."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from persec.charset import Charset, CTCTokenizer
from persec.decoding.beam import ctc_beam_decode
from persec.decoding.greedy import ctc_greedy_decode
from persec.decoding.settings import DECODING_FIELDS, decode_ctc, decoding_lm
from persec.models.decoders.base import DecoderConfig, DecoderSpec, register_decoder
from persec.precision import cpu_bf16_support


# --------------------------------------------------------------------------- CTC
class CTCDecoder(nn.Module):
    """Optional BiLSTM and a per-frame classifier over blank + characters.

    Args:
        in_dim: C of the memory.
        charset: the characters; class 0 is the CTC blank.
        lstm_layers: BiLSTM layers (0: a linear layer on the memory).
        hidden: LSTM hidden size per direction.
        decoding: how :meth:`decode` decodes: its ``beam_width``, ``lm_*`` and
            ``length_bonus`` fields (None: greedy). The language model, if any, is
            built here, so loading a model includes its cost.
    """

    def __init__(
        self,
        in_dim: int,
        charset: Charset,
        lstm_layers: int = 2,
        hidden: int = 256,
        decoding: DecoderConfig | None = None,
    ):
        super().__init__()
        self.tokenizer = CTCTokenizer(charset)
        self.decoding = decoding or DecoderConfig(name="ctc")
        decoding_lm(self.decoding)
        self.rnn: nn.LSTM | None = None
        if lstm_layers > 0:
            self.rnn = nn.LSTM(in_dim, hidden, lstm_layers, batch_first=True, bidirectional=True)
            in_dim = 2 * hidden
        self.classifier = nn.Linear(in_dim, self.tokenizer.num_classes)

    def forward(self, memory: torch.Tensor, labels: Sequence[str] | None = None) -> torch.Tensor:
        """(B, T, C) -> logits (B, T, N+1). ``labels`` is accepted for a uniform API and unused."""
        if self.rnn is not None:
            memory = self._run_rnn(memory)  # (B, T, 2*hidden)
        return self.classifier(memory)

    def _run_rnn(self, memory: torch.Tensor) -> torch.Tensor:
        """The BiLSTM; under CPU bf16 autocast on a CPU without native bf16 it runs in
        fp32, since oneDNN has no bf16 LSTM for such CPUs (it raises "could not create
        a primitive descriptor")."""
        if (
            memory.device.type == "cpu"
            and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16
            and not cpu_bf16_support().native
        ):
            with torch.autocast("cpu", enabled=False):
                return self.rnn(memory.float())[0]
        return self.rnn(memory)[0]

    def loss(self, logits: torch.Tensor, labels: Sequence[str]) -> torch.Tensor:
        """CTC loss: per image, -log p(label) divided by the label length, then the batch mean.

        Computed from fp32 log-probabilities whatever the autocast dtype; alignments that
        are impossible (label longer than T allows) give 0 rather than inf.
        """
        targets, lengths = self.tokenizer.encode(labels)
        log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # (T, B, V)
        t, b = log_probs.shape[:2]
        input_lengths = torch.full((b,), t, dtype=torch.long)
        return F.ctc_loss(
            log_probs,
            targets.to(logits.device),
            input_lengths.to(logits.device),
            lengths.to(logits.device),
            blank=CTCTokenizer.blank_id,
            reduction="mean",
            zero_infinity=True,
        )

    def export_forward(self, memory: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> logits (B, T, N+1), as :meth:`forward`."""
        return self(memory)

    def export_info(self) -> dict:
        """The sidecar's ``decoding``: how an exported model decodes, as this one does."""
        return {"decoding": {key: getattr(self.decoding, key) for key in DECODING_FIELDS}}

    def set_decoding(self, cfg: DecoderConfig) -> None:
        """Decode as ``cfg``'s beam width, language model and length bonus say."""
        self.decoding = cfg

    def decode(self, logits: torch.Tensor) -> list[tuple[str, float]]:
        """The configured decoding of ``logits`` (B, T, N+1): greedy
        (:func:`ctc_greedy_decode`) when ``beam_width`` is 0, else the beam search of
        :meth:`beam_decode` with the language model, if any."""
        return decode_ctc(logits, self.tokenizer, self.decoding)

    def beam_decode(self, logits: torch.Tensor, beam_width: int = 10) -> list[tuple[str, float]]:
        """CTC prefix beam search (with this decoder's language model, if any);
        confidence = p(text), summed over its alignments.

        Pure Python, under a millisecond per crop for a trained model: meant for reading
        and evaluation, not for training loops. ``logits``: (B, T, N+1).
        """
        return ctc_beam_decode(
            logits,
            self.tokenizer,
            beam_width,
            decoding_lm(self.decoding),
            self.decoding.lm_weight,
            self.decoding.length_bonus,
        )


register_decoder(
    DecoderSpec(
        "ctc",
        lambda cfg, in_dim, charset: CTCDecoder(in_dim, charset, cfg.lstm_layers, cfg.hidden, cfg),
        CTCTokenizer,
        ctc_greedy_decode,
    )
)
