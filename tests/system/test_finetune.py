"""Supervised training: the label subset, the schedule, and `persec finetune` end to end
on tiny rendered data (a tiny model learns a 64-image set; resume, init-encoder,
frozen encoder and a mismatched encoder checkpoint)."""

from __future__ import annotations

import copy
import csv
import math

import pytest
import torch
from safetensors.torch import load_file
from tiny import FINETUNE_TINY

from persec.data.module import label_subset
from persec.errors import PersecError
from persec.models.recognizer import Recognizer, RecognizerConfig
from persec.training.finetune import scores_at_best
from persec.training.optim import OptimConfig, lr_factor


@pytest.fixture(scope="module")
def words(learned_words):
    """64 rendered word images (an LMDB) shared by the tests of this module: the
    session's ``learned_words``."""
    return learned_words


def test_label_subset_is_deterministic_and_sized():
    data = list(range(1000))
    a = label_subset(data, 0.1, seed=5)
    b = label_subset(data, 0.1, seed=5)
    c = label_subset(data, 0.1, seed=6)
    assert len(a) == 100
    assert list(a) == list(b)
    assert list(a) != list(c)
    assert label_subset(data, 1.0, seed=0) is data
    assert len(set(a)) == 100


def test_train_repeat_reads_real_sets_k_times_and_rendered_once(words):
    from persec.charset import Charset
    from persec.data.module import RecognitionDataConfig, RecognitionDataModule
    from persec.image import ImageConfig

    def size(**kw) -> int:
        config = RecognitionDataConfig(train=[str(words)], synth_train=10, **kw)
        return len(
            RecognitionDataModule(
                config, ImageConfig(), Charset.from_spec("36_lowercase")
            ).build_train()
        )

    assert size() == 64 + 10
    assert size(train_repeat=3) == 3 * 64 + 10
    with pytest.raises(PersecError, match="train_repeat must be >= 1"):
        size(train_repeat=0)


def test_lr_schedule_warmup_then_cosine():
    config = OptimConfig(lr=1.0, warmup_steps=10, min_lr_ratio=0.0)
    assert lr_factor(0, 110, config) == pytest.approx(0.1)
    assert lr_factor(9, 110, config) == pytest.approx(1.0)
    assert lr_factor(10, 110, config) == pytest.approx(1.0)
    assert lr_factor(60, 110, config) == pytest.approx(0.5)
    assert lr_factor(110, 110, config) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_optimizer_is_fused_on_cpu_and_matches_the_loop(name):
    """build_optimizer picks torch's fused kernel on CPU; the updates are the ones
    of the per-parameter loop up to float rounding."""
    from persec.training.optim import build_optimizer

    config = OptimConfig(name=name, lr=0.05, weight_decay=0.01)
    torch.manual_seed(0)
    fused_model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    loop_model = copy.deepcopy(fused_model)
    initial = [p.detach().clone() for p in fused_model.parameters()]
    fused = build_optimizer(fused_model.parameters(), config)
    assert fused.defaults["fused"] is True
    loop_cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    extra = {"momentum": config.momentum} if name == "sgd" else {}
    loop = loop_cls[name](
        loop_model.parameters(), lr=0.05, weight_decay=0.01, foreach=False, **extra
    )
    for _ in range(10):
        x = torch.randn(4, 6)
        for model, opt in ((fused_model, fused), (loop_model, loop)):
            model(x).square().mean().backward()
            opt.step()
            opt.zero_grad()
    for p, q in zip(fused_model.parameters(), loop_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)
    # Both really updated (matching without moving would prove nothing).
    assert all(
        not torch.equal(p, q) for p, q in zip(fused_model.parameters(), initial, strict=True)
    )


def _metrics(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_tiny_model_learns_64_images(learned):
    assert "(best validation word_acc): word accuracy 100.00%" in learned.stdout
    model = Recognizer.load(learned.model)
    assert (learned.model / "model.safetensors").is_file()
    rows = _metrics(learned.run / "metrics.csv")
    accs = [float(r["val/word_acc"]) for r in rows if r.get("val/word_acc")]
    assert max(accs) == 100.0 and accs[0] < 100.0
    assert model.config.encoder.size == "tiny"


def test_bf16_with_gradient_clipping_and_a_fused_optimizer(words, tmp_path, run_cli):
    """Lightning's mixed-precision plugin refuses to clip for a fused optimiser; under
    bf16 persec clips itself (the shipped and demo configs train this way)."""
    code, out, err = run_cli(
        [
            "finetune",
            *FINETUNE_TINY,
            f"data.train=[{words}]",
            "trainer.precision=bf16-mixed",
            "optim.grad_clip=0.01",
            "trainer.max_steps=3",
            f"output_dir={tmp_path / 'run'}",
        ]
    )
    assert code == 0, err
    losses = [
        float(r["train/loss"])
        for r in _metrics(tmp_path / "run" / "metrics.csv")
        if r.get("train/loss")
    ]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)


def test_resume_init_and_frozen_encoder(words, tmp_path, run_cli):
    run = tmp_path / "run"
    base = ["finetune", *FINETUNE_TINY, f"data.train=[{words}]", f"output_dir={run}"]
    assert run_cli([*base, "trainer.max_steps=3"])[0] == 0
    assert (run / "checkpoints" / "last.ckpt").is_file()
    code, out, err = run_cli([*base, "trainer.max_steps=5", "--resume"])
    assert code == 0, err
    assert "trained 5 steps" in out

    # An encoder saved from that model initialises a frozen-encoder run, which
    # must leave the encoder's weights untouched.
    model = Recognizer.load(run / "model")
    model.save_encoder(tmp_path / "enc")
    frozen = tmp_path / "frozen"
    code, out, err = run_cli(
        [
            "finetune",
            *FINETUNE_TINY,
            f"data.train=[{words}]",
            f"output_dir={frozen}",
            f"data.val=[{words}]",
            "trainer.max_steps=4",
            "trainer.val_every=2",
            "--init-encoder",
            str(tmp_path / "enc" / "encoder.safetensors"),
            "--freeze-encoder",
        ]
    )
    assert code == 0, err
    before = load_file(str(tmp_path / "enc" / "encoder.safetensors"))
    after = Recognizer.load(frozen / "model").encoder.state_dict()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
    decoder_before = model.decoder.state_dict()
    decoder_after = Recognizer.load(frozen / "model").decoder.state_dict()
    assert any(not torch.equal(decoder_before[k], decoder_after[k]) for k in decoder_before)


def test_mismatched_encoder_is_one_line_error(tmp_path, run_cli, words):
    other = Recognizer(RecognizerConfig())  # resnet small, not tiny
    other.save_encoder(tmp_path / "enc")
    code, out, err = run_cli(
        [
            "finetune",
            *FINETUNE_TINY,
            f"data.train=[{words}]",
            f"output_dir={tmp_path / 'run'}",
            "trainer.max_steps=1",
            "--init-encoder",
            str(tmp_path / "enc"),
        ]
    )
    assert code == 2
    assert "does not match" in err and "size" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_bad_config_key_is_named(run_cli, tmp_path):
    code, _, err = run_cli(["finetune", "trainer.max_stepz=3", f"output_dir={tmp_path}"])
    assert code == 2
    assert "max_stepz" in err


def test_overrides_may_follow_flags(tmp_path, run_cli) -> None:
    # `b=2` after a flag used to be "unrecognized"; it must reach the config.
    code, _, err = run_cli(["finetune", "data.workers=0", "--freeze-encoder", "x.y=1"])
    assert code == 2
    assert "Key 'x' not in 'FinetuneConfig'" in err
    assert "unrecognized" not in err
    code, _, err = run_cli(["finetune", "data.workers=0", "--freeze-encoder", "--bogus"])
    assert code == 2 and "unrecognized arguments: --bogus" in err


def test_augment_changes_training_batches_only(words, tmp_path):
    """With ``augment.enabled`` the model trains on augmented batches, validates on the
    images as read, and the default never crops (a crop can cut a character off)."""
    import lightning as L

    from persec.config import load_config
    from persec.training.finetune import FinetuneConfig, TrainAugmentConfig, finetune

    assert TrainAugmentConfig().crop_prob == 0.0 and not TrainAugmentConfig().enabled
    seen: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {"train": [], "val": []}

    class Spy(L.Callback):
        def on_fit_start(self, trainer, module):
            forward = module.model.forward

            def spied(images, *args, **kwargs):
                seen["train" if module.training else "val"].append((module._batch, images))
                return forward(images, *args, **kwargs)

            module.model.forward = spied

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            module._batch = batch[0].clone()

        def on_validation_batch_start(self, trainer, module, batch, batch_idx, idx=0):
            module._batch = batch[0].clone()

    overrides = [
        *FINETUNE_TINY,
        f"data.train=[{words}]",
        f"data.val=[{words}]",
        "trainer.max_steps=2",
    ]
    overrides += ["trainer.val_every=2", f"output_dir={tmp_path / 'run'}", "augment.enabled=true"]
    finetune(load_config(FinetuneConfig, None, overrides), callbacks=[Spy()])
    assert len(seen["train"]) == 2 and seen["val"]
    for raw, used in seen["train"]:
        assert used.shape == raw.shape and not torch.equal(used, raw)
        assert used.min() >= -1 and used.max() <= 1
    for raw, used in seen["val"]:
        assert torch.equal(used, raw)


def test_init_model_goes_on_from_saved_weights(words, tmp_path, run_cli, caplog):
    """``--init-model`` starts from every weight of a saved model (with lr 0 its
    parameters come out unchanged, whatever the config's own architecture says, and a
    warning names the ``model.*`` setting not used) and refuses ``--init-encoder``
    beside it."""
    base = ["finetune", *FINETUNE_TINY, f"data.train=[{words}]", "trainer.max_steps=2"]
    assert run_cli([*base, f"output_dir={tmp_path / 'a'}"])[0] == 0
    saved = Recognizer.load(tmp_path / "a" / "model")
    code, out, err = run_cli(
        [
            *base,
            "model.decoder.hidden=32",
            "optim.lr=0",
            "optim.warmup_steps=0",
            f"output_dir={tmp_path / 'b'}",
            "--init-model",
            str(tmp_path / "a" / "model"),
        ]
    )
    assert code == 0, err
    ignored = [r.getMessage() for r in caplog.records if "not used" in r.getMessage()]
    assert len(ignored) == 1 and ignored[0].endswith("model.decoder.hidden=32 (saved: 64)")
    again = Recognizer.load(tmp_path / "b" / "model")
    assert again.config.decoder.hidden == saved.config.decoder.hidden == 64
    params = dict(again.named_parameters())
    for name, value in saved.named_parameters():
        assert torch.equal(value, params[name]), name
    code, out, err = run_cli(
        [
            *base,
            f"output_dir={tmp_path / 'c'}",
            "--init-model",
            str(tmp_path / "a" / "model"),
            "--init-encoder",
            str(tmp_path / "a" / "model"),
        ]
    )
    assert code != 0 and "init_model and init_encoder exclude each other" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("monitor", ["word_acc", "cer"])
def test_early_stop_ends_after_validations_without_a_new_best(words, tmp_path, run_cli, monitor):
    """trainer.early_stop=2 ends the run two validations after the monitored metric's
    last new best: with lr 0 the word accuracy never improves after the first
    validation, so that run ends at the third (step 3 of 50)."""
    code, out, err = run_cli(
        [
            "finetune",
            *FINETUNE_TINY,
            f"data.train=[{words}]",
            f"data.val=[{words}]",
            "optim.lr=0",
            "optim.warmup_steps=0",
            "trainer.max_steps=50",
            "trainer.val_every=1",
            "trainer.early_stop=2",
            f"trainer.monitor={monitor}",
            f"output_dir={tmp_path / 'run'}",
        ]
    )
    assert code == 0, err
    rows = _metrics(tmp_path / "run" / "metrics.csv")
    values = [float(r[f"val/{monitor}"]) for r in rows if r.get(f"val/{monitor}")]
    mode = "max" if monitor == "word_acc" else "min"
    best = values.index(max(values) if mode == "max" else min(values))
    # Stopped two validations after the last new best, long before step 50 (lr 0: the
    # word accuracy stays 0; the CER moves only with BatchNorm's running statistics).
    assert best == len(values) - 3 and len(values) < 20, values
    if monitor == "word_acc":
        assert len(values) == 3
    # The run reports the scores of the validation it kept.
    kept = scores_at_best(tmp_path / "run" / "metrics.csv", f"val/{monitor}", values[best])
    assert f"(best validation {monitor})" in out and f"CER {kept['val/cer']:.2f}%" in out
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()


def test_scores_at_best_reads_the_kept_row(tmp_path):
    """The row of the kept checkpoint's score: the first with that score."""
    path = tmp_path / "metrics.csv"
    path.write_text(
        "step,train/loss,val/word_acc,val/cer\n"
        "0,5.0,,\n"
        "249,,1.0,80.0\n"
        "499,,3.0,60.0\n"
        "749,,2.0,55.0\n"
        "999,,3.0,55.0\n"
    )
    assert scores_at_best(path, "val/cer", 55.0) == {"val/word_acc": 2.0, "val/cer": 55.0}
    assert scores_at_best(path, "val/word_acc", 3.0) == {"val/word_acc": 3.0, "val/cer": 60.0}
    assert scores_at_best(path, "val/cer", 42.0) == {}
    assert scores_at_best(tmp_path / "none.csv", "val/cer", 55.0) == {}


def test_unknown_monitor_is_refused(tmp_path, run_cli):
    args = ["finetune", *FINETUNE_TINY, "data.synth_train=16", "trainer.monitor=loss"]
    code, _, err = run_cli([*args, f"output_dir={tmp_path}"])
    assert code != 0 and "trainer.monitor must be one of word_acc, cer, got 'loss'" in err


def test_negative_early_stop_is_refused(tmp_path, run_cli):
    args = ["finetune", *FINETUNE_TINY, "data.synth_train=16", "trainer.early_stop=-1"]
    code, _, err = run_cli([*args, f"output_dir={tmp_path}"])
    assert code != 0 and "trainer.early_stop must be >= 0" in err
