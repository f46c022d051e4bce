"""Fine-tuning's encoder settings [ours]: the encoder's learning-rate scale (its own
optimiser group) and a frozen first phase (LP-FT) that leaves the encoder, BatchNorm
statistics included, untouched until its last frozen step and trains it after."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from tiny import FINETUNE_TINY, tiny_recognizer

from persec.config import load_config
from persec.errors import PersecError
from persec.training.encoder_tuning import EncoderTuningConfig, encoder_param_groups
from persec.training.finetune import FinetuneConfig, finetune


def test_param_groups_split_encoder_from_head():
    model = tiny_recognizer()
    groups = encoder_param_groups(model, lr=1e-3, lr_scale=0.1)
    assert [g["lr"] for g in groups] == [pytest.approx(1e-3), pytest.approx(1e-4)]
    encoder = {id(p) for p in model.encoder.parameters()}
    assert {id(p) for p in groups[1]["params"]} == encoder
    assert not encoder & {id(p) for p in groups[0]["params"]}
    total = sum(len(g["params"]) for g in groups)
    assert total == len(list(model.parameters()))


def test_param_groups_drop_frozen_parameters():
    model = tiny_recognizer()
    model.encoder.requires_grad_(False)
    groups = encoder_param_groups(model, lr=1e-3, lr_scale=0.5)
    assert len(groups) == 1 and groups[0]["lr"] == pytest.approx(1e-3)


@pytest.mark.parametrize(
    "setting, message",
    [
        (EncoderTuningConfig(lr_scale=0.0), "lr_scale must be > 0"),
        (EncoderTuningConfig(frozen_steps=-1), "frozen_steps must be >= 0"),
    ],
)
def test_bad_settings_are_named(setting, message):
    with pytest.raises(PersecError, match=message):
        setting.check()


def test_frozen_phase_needs_one_process():
    with pytest.raises(PersecError, match="single training process"):
        EncoderTuningConfig(frozen_steps=5).check(devices=2)
    EncoderTuningConfig(lr_scale=0.1).check(devices=2)  # a scale alone is fine


class _Watch(L.Callback):
    """Records, after each optimiser step, whether the encoder's tensors (weights and
    BatchNorm buffers) still equal their values before training, and the lr of each
    parameter group."""

    def __init__(self):
        self.unchanged: list[bool] = []
        self.lrs: list[list[float]] = []
        self.start: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer, module):
        self.start = {k: v.detach().clone() for k, v in module.model.encoder.state_dict().items()}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        now = module.model.encoder.state_dict()
        self.unchanged.append(all(torch.equal(v, now[k]) for k, v in self.start.items()))
        self.lrs.append([g["lr"] for g in trainer.optimizers[0].param_groups])


def _run(words, tmp_path, *overrides: str) -> _Watch:
    config = load_config(
        FinetuneConfig,
        None,
        [
            *FINETUNE_TINY,
            f"data.train=[{words}]",
            f"output_dir={tmp_path}",
            "trainer.max_steps=4",
            "trainer.val_every=0",
            "optim.warmup_steps=0",
            "optim.schedule=constant",
            *overrides,
        ],
    )
    watch = _Watch()
    finetune(config, callbacks=[watch])
    return watch


def test_frozen_first_steps_then_trained(learned_words, tmp_path):
    watch = _run(learned_words, tmp_path, "encoder_tuning.frozen_steps=2")
    # Steps 1 and 2 leave every encoder tensor (BatchNorm statistics included) as it
    # was; step 3 trains it.
    assert watch.unchanged == [True, True, False, False]


def test_lr_scale_gives_the_encoder_its_own_rate(learned_words, tmp_path):
    watch = _run(learned_words, tmp_path, "encoder_tuning.lr_scale=0.25")
    assert watch.lrs[-1] == [pytest.approx(3e-3), pytest.approx(7.5e-4)]
    assert watch.unchanged == [False] * 4
