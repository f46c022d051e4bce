"""Recognition metrics: word accuracy, 1 - NED and CER, per dataset and combined.

Protocol (the standard STR one, as code): prediction and ground truth are both mapped
through :meth:`Charset.strip_unsupported` of the eval charset (NFKD, accents dropped,
whitespace removed, case folded for single-case charsets, unsupported characters
dropped) before any comparison. The default eval charset is ``36_lowercase``.

The HTR protocol (``protocol="htr"``, handwriting): NFC, case and punctuation kept, runs
of whitespace collapsed to one space (:func:`htr_normalize`); no charset filter, so
characters a model cannot write still count as errors. WER is then reported beside CER:
edits over space-separated tokens (punctuation stays attached to its word).

All reported metrics are percentages (0-100):

* word accuracy: exact match after mapping,
* 1 - NED: mean over samples of ``1 - dist / max(len(gt), len(pred))`` (ICDAR 2019,
  PARSeq), 1 for a pair of empty strings,
* CER: corpus level, total edit distance over total ground-truth characters, so long
  words weigh more than short ones (unlike 1 - NED, which weighs every sample alike).
"""

from __future__ import annotations

import string
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from rapidfuzz.distance import Levenshtein

from persec.charset import PRESETS, STANDARD_CHARSET, Charset

STANDARD = "standard"
HTR = "htr"
PROTOCOLS = (STANDARD, HTR)


def htr_normalize(text: str) -> str:
    """The HTR protocol's form of a transcription: NFC, whitespace runs as one space,
    no space at either end; case and punctuation as written."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def eval_charset(
    cased: bool = False, punctuation: bool = False, charset: str | Charset | None = None
) -> Charset:
    """The charset that defines an evaluation protocol.

    Args:
        cased: compare case (``62_mixed``) instead of folding to lower case.
        punctuation: keep ASCII punctuation instead of dropping it.
        charset: a preset name, charset file or Charset; when given it wins over
            ``cased`` and ``punctuation``.

    Returns:
        ``36_lowercase`` by default; ``62_mixed`` when cased; ``94_full`` when cased
        with punctuation; ``36_lowercase`` + punctuation when only ``punctuation``.
    """
    if charset is not None:
        return Charset.from_spec(charset)
    if cased and punctuation:
        return Charset.from_spec("94_full")
    if cased:
        return Charset.from_spec("62_mixed")
    if punctuation:
        return Charset(
            PRESETS[STANDARD_CHARSET] + string.punctuation, name=f"{STANDARD_CHARSET}+punctuation"
        )
    return Charset.from_spec(STANDARD_CHARSET)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (unit cost insert, delete, substitute)."""
    return Levenshtein.distance(a, b)


def one_minus_ned(pred: str, gt: str) -> float:
    """``1 - dist / max(len(gt), len(pred))`` as a fraction in [0, 1]; 1.0 if both empty.

    Strings are compared as given: map them through the eval charset first.
    """
    return _complement_ned(edit_distance(pred, gt), max(len(pred), len(gt)))


def _complement_ned(dist: int, longest: int) -> float:
    return 1.0 - dist / longest if longest else 1.0


@dataclass(frozen=True)
class DatasetScore:
    """Scores of one dataset, kept as raw totals so that datasets can be combined.

    The derived metrics (``word_acc``, ``one_minus_ned``, ``cer``, ``confidence``,
    ``label_length``) are properties; all but ``label_length`` are percentages.

    Attributes:
        name: dataset name.
        samples: number of scored samples.
        correct: samples whose prediction equals the ground truth after mapping.
        ned_sum: sum over samples of 1 - NED (fractions, not percentages).
        edits: total edit distance between predictions and ground truths.
        gt_chars: total ground-truth characters after mapping.
        confidence_sum: sum of the confidences given (probabilities in [0, 1]).
        confidence_count: number of samples that came with a confidence.
        word_edits: total edit distance over space-separated tokens.
        gt_words: total ground-truth tokens.
    """

    name: str
    samples: int = 0
    correct: int = 0
    ned_sum: float = 0.0
    edits: int = 0
    gt_chars: int = 0
    confidence_sum: float = 0.0
    confidence_count: int = 0
    word_edits: int = 0
    gt_words: int = 0

    @property
    def word_acc(self) -> float:
        """Word accuracy in percent (0.0 for an empty dataset)."""
        return 100.0 * self.correct / self.samples if self.samples else 0.0

    @property
    def one_minus_ned(self) -> float:
        """Mean 1 - NED in percent (0.0 for an empty dataset)."""
        return 100.0 * self.ned_sum / self.samples if self.samples else 0.0

    @property
    def cer(self) -> float | None:
        """Character error rate in percent: ``100 * edits / gt_chars``.

        0.0 when there are no edits; None (undefined) when the ground truth holds no
        characters but the predictions do.
        """
        if self.edits == 0:
            return 0.0
        return 100.0 * self.edits / self.gt_chars if self.gt_chars else None

    @property
    def wer(self) -> float | None:
        """Word error rate in percent: ``100 * word_edits / gt_words`` (as :attr:`cer`)."""
        if self.word_edits == 0:
            return 0.0
        return 100.0 * self.word_edits / self.gt_words if self.gt_words else None

    @property
    def confidence(self) -> float | None:
        """Mean confidence in percent over the samples that had one, else None."""
        if not self.confidence_count:
            return None
        return 100.0 * self.confidence_sum / self.confidence_count

    @property
    def label_length(self) -> float:
        """Mean ground-truth length after mapping (PARSeq averages predictions instead)."""
        return self.gt_chars / self.samples if self.samples else 0.0


class ScoreAccumulator:
    """Accumulates predictions of one dataset, batch by batch.

    Args:
        name: dataset name for the table.
        charset: the eval charset (a Charset or a spec for :meth:`Charset.from_spec`);
            both predictions and ground truths are mapped through it.
        protocol: ``standard`` (map through ``charset``) or ``htr``
            (:func:`htr_normalize`; ``charset`` unused).
    """

    def __init__(
        self, name: str, charset: str | Charset = STANDARD_CHARSET, protocol: str = STANDARD
    ):
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        self.name = name
        self.charset = Charset.from_spec(charset)
        self.protocol = protocol
        self.reset()

    def normalize(self, text: str) -> str:
        """``text`` as this protocol compares it."""
        return htr_normalize(text) if self.protocol == HTR else self.charset.strip_unsupported(text)

    def reset(self) -> None:
        """Forget everything seen so far."""
        self._samples = self._correct = self._edits = self._gt_chars = 0
        self._ned_sum = self._conf_sum = 0.0
        self._conf_count = self._word_edits = self._gt_words = 0

    def update(
        self,
        preds: Sequence[str],
        gts: Sequence[str],
        confidences: Sequence[float | None] | None = None,
    ) -> None:
        """Add a batch of raw predictions and ground truths (mapped here).

        Args:
            preds: predicted strings, one per sample.
            gts: ground-truth strings, same length.
            confidences: optional per-sample probabilities in [0, 1]; None entries
                (e.g. missing predictions) are left out of the mean confidence.
        """
        if len(preds) != len(gts):
            raise ValueError(f"{len(preds)} predictions for {len(gts)} ground truths")
        if confidences is not None and len(confidences) != len(gts):
            raise ValueError(f"{len(confidences)} confidences for {len(gts)} ground truths")
        for pred, gt in zip(preds, gts, strict=True):
            pred, gt = self.normalize(pred), self.normalize(gt)
            dist = edit_distance(pred, gt)
            pred_words, gt_words = pred.split(), gt.split()
            self._word_edits += Levenshtein.distance(pred_words, gt_words)
            self._gt_words += len(gt_words)
            self._samples += 1
            self._correct += dist == 0
            self._edits += dist
            self._gt_chars += len(gt)
            self._ned_sum += _complement_ned(dist, max(len(pred), len(gt)))
        for conf in confidences or ():
            if conf is not None:
                self._conf_sum += float(conf)
                self._conf_count += 1

    def compute(self) -> DatasetScore:
        """The scores of everything added since the last :meth:`reset`."""
        return DatasetScore(
            name=self.name,
            samples=self._samples,
            correct=self._correct,
            ned_sum=self._ned_sum,
            edits=self._edits,
            gt_chars=self._gt_chars,
            confidence_sum=self._conf_sum,
            confidence_count=self._conf_count,
            word_edits=self._word_edits,
            gt_words=self._gt_words,
        )


def combine(scores: Sequence[DatasetScore], name: str = "Combined") -> DatasetScore:
    """Pool several datasets as if they were one.

    Word accuracy and 1 - NED end up weighted by samples, CER by ground-truth
    characters and confidence by the samples that had one.
    """
    return DatasetScore(
        name=name,
        samples=sum(s.samples for s in scores),
        correct=sum(s.correct for s in scores),
        ned_sum=sum(s.ned_sum for s in scores),
        edits=sum(s.edits for s in scores),
        gt_chars=sum(s.gt_chars for s in scores),
        confidence_sum=sum(s.confidence_sum for s in scores),
        confidence_count=sum(s.confidence_count for s in scores),
        word_edits=sum(s.word_edits for s in scores),
        gt_words=sum(s.gt_words for s in scores),
    )


def scores_to_rows(scores: Sequence[DatasetScore]) -> list[dict]:
    """One flat dict per dataset (percentages, raw totals), for CSV or JSON."""
    return [
        {
            "dataset": s.name,
            "samples": s.samples,
            "word_acc": s.word_acc,
            "one_minus_ned": s.one_minus_ned,
            "cer": s.cer,
            "wer": s.wer,
            "confidence": s.confidence,
            "label_length": s.label_length,
            "correct": s.correct,
            "edits": s.edits,
            "gt_chars": s.gt_chars,
            "word_edits": s.word_edits,
            "gt_words": s.gt_words,
        }
        for s in scores
    ]


_HEADER = ("Dataset", "# samples", "Accuracy", "1 - NED", "CER", "Confidence", "Label length")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def format_table(scores: Sequence[DatasetScore], combined: bool = True, wer: bool = False) -> str:
    """A Markdown table, one row per dataset, metrics in percent with two decimals.

    With ``combined`` and two or more datasets, a sample-weighted ``Combined`` row
    (see :func:`combine`) comes last. Undefined values print as ``-``. ``wer`` adds a
    WER column after CER (the HTR protocol).
    """
    scores = list(scores)
    if combined and len(scores) > 1:
        scores.append(combine(scores))
    header = _HEADER[:5] + ("WER",) + _HEADER[5:] if wer else _HEADER
    rows = [
        (
            s.name,
            str(s.samples),
            _fmt(s.word_acc),
            _fmt(s.one_minus_ned),
            _fmt(s.cer),
            *((_fmt(s.wer),) if wer else ()),
            _fmt(s.confidence),
            _fmt(s.label_length),
        )
        for s in scores
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        # Dataset names left-aligned, numbers right-aligned, as in the rule below.
        padded = [cells[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|:" + "-" * (widths[0] + 1) + "|" + "|".join("-" * (w + 1) + ":" for w in widths[1:]) + "|"
    )
    return "\n".join([line(header), rule, *(line(r) for r in rows)])
