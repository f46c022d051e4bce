"""``trainer.precision: auto``: bf16-mixed where the CPU (or GPU) reports native bf16,
32-true elsewhere; the capability queries are mocked, not the answer."""

from __future__ import annotations

import pytest
import torch
from tiny import REPO

from persec import precision
from persec.config import load_config
from persec.training.finetune import FinetuneConfig
from persec.training.trainer import TrainerConfig, settle_precision


@pytest.fixture
def cpu(monkeypatch):
    """Set what the CPU and the libraries report: ``cpu(amx, avx512_bf16, ...)``."""

    def set_cpu(amx=False, avx512_bf16=False, capability="AVX512", onednn=True, isa_cap=None):
        precision.cpu_bf16_support.cache_clear()
        monkeypatch.setattr(precision.platform, "machine", lambda: "x86_64")
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
        monkeypatch.setattr(
            torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False
        )
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn)
        monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
        if isa_cap is None:
            monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
        else:
            monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa_cap)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    yield set_cpu
    precision.cpu_bf16_support.cache_clear()


@pytest.mark.parametrize(
    ("cpu_kind", "expected", "in_reason"),
    [
        ({"amx": True, "avx512_bf16": True}, "bf16-mixed", "AMX"),  # Intel Sapphire Rapids
        ({"avx512_bf16": True}, "bf16-mixed", "AVX512-BF16"),  # AMD Zen 4
        ({"capability": "AVX2", "onednn": False}, "32-true", "neither"),  # older EPYC
        ({}, "32-true", "neither"),  # Skylake-X: AVX512 without bf16
        ({"avx512_bf16": True, "capability": "AVX2"}, "32-true", "ATEN_CPU_CAPABILITY"),
        ({"avx512_bf16": True, "isa_cap": "AVX2"}, "32-true", "ONEDNN_MAX_CPU_ISA"),
        ({"avx512_bf16": True, "isa_cap": "avx512_core_bf16"}, "bf16-mixed", "natively"),
        ({"avx512_bf16": True, "onednn": False}, "32-true", "oneDNN"),
    ],
)
def test_auto_follows_the_cpu_capability(cpu, cpu_kind, expected, in_reason):
    cpu(**cpu_kind)
    chosen, reason = precision.resolve_precision("auto", "cpu")
    assert chosen == expected
    assert in_reason in reason
    assert precision.resolve_precision("auto", "auto")[0] == expected  # no GPU: the CPU


def test_flags_from_proc_cpuinfo_when_torch_lacks_the_queries(cpu, monkeypatch):
    cpu()
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    monkeypatch.setattr(precision, "_cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    assert precision.resolve_precision("auto", "cpu")[0] == "bf16-mixed"
    precision.cpu_bf16_support.cache_clear()
    monkeypatch.setattr(precision, "_cpu_flags", lambda: {"avx2", "fma"})
    assert precision.resolve_precision("auto", "cpu")[0] == "32-true"


def test_non_x86_cpus_train_in_fp32(cpu, monkeypatch):
    cpu(avx512_bf16=True)
    monkeypatch.setattr(precision.platform, "machine", lambda: "aarch64")
    assert precision.resolve_precision("auto", "cpu") == (
        "32-true",
        "bf16 autocast is not measured on aarch64 CPUs",
    )


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_on_a_gpu_asks_the_gpu(cpu, monkeypatch, bf16, expected):
    cpu(avx512_bf16=not bf16)  # the CPU's answer must not leak into the GPU's
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Some GPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
    assert precision.resolve_precision("auto", "auto")[0] == expected
    assert precision.resolve_precision("auto", "gpu")[0] == expected


def test_an_explicit_precision_wins(cpu):
    cpu(avx512_bf16=True)
    assert precision.resolve_precision("32-true", "cpu") == ("32-true", "set in the config")
    cpu()
    assert precision.resolve_precision("bf16-mixed", "cpu")[0] == "bf16-mixed"


def test_settle_precision_records_the_choice_and_says_why(cpu):
    cpu()
    config = TrainerConfig()  # the default is auto
    assert config.precision == "auto"
    line = settle_precision(config)
    assert config.precision == "32-true"  # what config.yaml records
    assert line.startswith(
        "persec: training in 32-true (trainer.precision=auto: the CPU has neither"
    )
    assert settle_precision(config) is None  # already settled: nothing more to say
    explicit = TrainerConfig(precision="bf16-mixed")
    assert settle_precision(explicit) is None and explicit.precision == "bf16-mixed"


def test_a_training_run_prints_the_line_once(cpu, tmp_path, run_cli):
    cpu()
    argv = ["pretrain", "model.size=tiny", "model.stroke_aggregator.dim=32"]
    argv += ["model.semantic_aggregator.dim=32", "persec.stroke.quantizer.entries=32"]
    argv += ["persec.semantic.quantizer.entries=32", "data.workers=0", "data.batch_size=4"]
    argv += ["data.synth_train=8", "image.width=64", "trainer.max_steps=1"]
    argv += ["trainer.val_every=0", "trainer.progress=false", f"output_dir={tmp_path}"]
    code, _, err = run_cli(argv)
    assert code == 0, err
    assert err.count("persec: training in 32-true (trainer.precision=auto:") == 1
    assert "precision: 32-true" in (tmp_path / "config.yaml").read_text()


def test_cpu_configs_default_to_auto():
    path = REPO / "configs" / "finetune" / "cpu-ctc.yaml"
    assert load_config(FinetuneConfig, path).trainer.precision == "auto"
    config = load_config(FinetuneConfig, path, ["trainer.precision=32"])
    assert config.trainer.precision == "32"
