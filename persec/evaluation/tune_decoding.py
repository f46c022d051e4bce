"""Choose a CTC model's beam-search and language-model settings on validation data.

The encoder runs once; every setting of the grid then decodes the same logits
(:func:`~persec.decoding.beam.ctc_beam_decode`), so the default 24-point grid on 500 crops
takes about 20 s on 2 CPU cores, the model's pass included. The winner is the setting with the best word accuracy, then the best 1 - NED;
on a tie the earlier one in the grid (weaker LM, smaller bonus) wins. Greedy decoding is
always measured too, and kept when no setting beats it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from persec.charset import Charset, CTCTokenizer
from persec.data.dataset import collate_samples
from persec.data.layouts import find_datasets
from persec.decoding.settings import check_decoding, decode_ctc, greedy_decoding
from persec.errors import PersecError
from persec.evaluation.evaluate import open_eval_dataset
from persec.metrics import ScoreAccumulator
from persec.models.decoders.base import DecoderConfig
from persec.models.recognizer import Recognizer

LM_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.8)
LENGTH_BONUSES = (0.0, 0.5, 1.0, 2.0)


@dataclass
class DecodingTrial:
    """One decoding setting and its scores on the validation data (percentages)."""

    decoding: DecoderConfig
    word_acc: float
    one_minus_ned: float

    @property
    def key(self) -> tuple[float, float]:
        """What the search maximises."""
        return (round(self.word_acc, 6), round(self.one_minus_ned, 6))


@torch.inference_mode()
def collect_logits(
    model: Recognizer,
    paths: Sequence[str | Path],
    charset: Charset,
    max_label_length: int | None = 25,
    batch_size: int = 64,
    progress: bool | None = True,
) -> tuple[torch.Tensor, list[str], int]:
    """Run ``model`` once over every labelled crop under ``paths`` (read the eval way).

    Returns:
        logits (N, T, V) float32 on the CPU, the N labels, and how many images were
        skipped (unreadable, or labels empty or too long after mapping).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    chunks: list[torch.Tensor] = []
    labels: list[str] = []
    skipped = 0
    try:
        for path in find_datasets(paths):
            dataset = open_eval_dataset(path, model, charset, max_label_length)
            skipped += dataset.report.skipped if hasattr(dataset, "report") else 0
            loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_samples)
            for images, batch_labels, dropped in tqdm(
                loader,
                desc=f"logits {getattr(dataset, 'name', path)}",
                unit="batch",
                disable=None if progress is None else not progress,
            ):
                skipped += sum(dropped.values())
                if batch_labels:
                    chunks.append(model(images.to(device)).float().cpu())  # (B, T, V)
                    labels += batch_labels
    finally:
        model.train(was_training)
    if not labels:
        raise PersecError(f"no labelled image to tune on in {', '.join(map(str, paths))}")
    return torch.cat(chunks), labels, skipped


def score_decoding(
    logits: torch.Tensor,
    labels: Sequence[str],
    cfg: DecoderConfig,
    model_charset: Charset,
    eval_charset: Charset,
) -> tuple[float, float]:
    """Word accuracy and 1 - NED (percent) of decoding CTC ``logits`` (N, T, V) of a
    model with ``model_charset`` as ``cfg`` says, scored in ``eval_charset``."""
    acc = ScoreAccumulator("validation", eval_charset)
    acc.update([text for text, _ in decode_ctc(logits, CTCTokenizer(model_charset), cfg)], labels)
    score = acc.compute()
    return score.word_acc, score.one_minus_ned


def search_decoding(
    logits: torch.Tensor,
    labels: Sequence[str],
    base: DecoderConfig,
    model_charset: Charset,
    eval_charset: Charset,
    beam_width: int = 10,
    lm_weights: Sequence[float] = LM_WEIGHTS,
    length_bonuses: Sequence[float] = LENGTH_BONUSES,
    progress: bool | None = True,
) -> tuple[DecodingTrial, list[DecodingTrial]]:
    """Try greedy decoding and each (lm_weight, length_bonus) beam search on the
    logits of a CTC model whose decoder config is ``base``.

    ``lm_words``/``lm_order`` come from ``base``. Returns the winner (see the module
    docstring) and every trial, greedy first.

    Raises:
        PersecError: a model that is not CTC, or a setting that cannot work.
    """
    if base.name != "ctc":
        raise PersecError(f"only CTC models have decoding settings to tune (this is {base.name})")
    grid = [greedy_decoding(base)] + [
        replace(base, beam_width=beam_width, lm_weight=w, length_bonus=b)
        for w in lm_weights
        for b in length_bonuses
    ]
    trials = []
    for cfg in tqdm(
        grid, desc="decoding settings", disable=None if progress is None else not progress
    ):
        try:
            check_decoding(cfg)
        except ValueError as e:
            raise PersecError(str(e)) from e
        scores = score_decoding(logits, labels, cfg, model_charset, eval_charset)
        trials.append(DecodingTrial(cfg, *scores))
    best = trials[0]
    for trial in trials[1:]:
        if trial.key > best.key:
            best = trial
    return best, trials
