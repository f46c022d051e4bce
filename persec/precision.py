"""``trainer.precision: auto``: bf16 mixed precision where the hardware runs bf16
natively, fp32 everywhere else.

On a CPU, bf16 autocast pays only with native bf16 instructions (Intel AMX, AVX512-BF16
on Intel Cooper Lake and later and on AMD Zen 4 and later). Without them oneDNN and
ATen convert every operand to fp32 and back: on a 2-core AVX2 EPYC a 3-step
``persec finetune`` took 222 s in bf16 against 30 s in fp32, and oneDNN's bf16 LSTM
failed there. The answer comes from what the CPU reports (through torch's own cpuinfo
queries) and what the libraries are allowed to use in this process
(``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``), so it costs nothing and needs no
benchmark run; ``benchmarks/throughput.py`` measures both precisions to check it.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

AUTO = "auto"
BF16 = "bf16-mixed"
FP32 = "32-true"

# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) that leave bf16 instructions available.
_ONEDNN_BF16_ISAS = ("BF16", "AMX", "AVX10", "FP16", "ALL", "DEFAULT")


@dataclass(frozen=True)
class Bf16Support:
    """Whether a device runs bf16 natively, and the evidence in words."""

    native: bool
    reason: str


def _cpu_flags() -> set[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def _cpu_bf16_instructions() -> list[str]:
    """Native bf16 instruction sets of this CPU (torch's cpuinfo queries, else
    ``/proc/cpuinfo``): ``AMX`` and/or ``AVX512-BF16``."""
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    avx = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    if amx is not None and avx is not None:
        found = {"AMX": amx(), "AVX512-BF16": avx()}
    else:  # private queries gone from a later torch: read the flags ourselves
        flags = _cpu_flags()
        found = {"AMX": "amx_bf16" in flags, "AVX512-BF16": "avx512_bf16" in flags}
    return [name for name, present in found.items() if present]


def _onednn_isa_cap() -> str:
    """The oneDNN ISA cap set for this process ('' when none)."""
    return (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA", "")).upper()


@cache
def cpu_bf16_support() -> Bf16Support:
    """Whether this CPU runs bf16 natively, as this process may use it."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return Bf16Support(False, f"bf16 autocast is not measured on {platform.machine()} CPUs")
    instructions = _cpu_bf16_instructions()
    if not instructions:
        return Bf16Support(False, "the CPU has neither AMX nor AVX512-BF16: bf16 would be emulated")
    have = " and ".join(instructions)
    capability = torch.backends.cpu.get_cpu_capability()
    if not capability.startswith("AVX512"):
        return Bf16Support(
            False, f"the CPU has {have}, but torch runs {capability} kernels (ATEN_CPU_CAPABILITY)"
        )
    cap = _onednn_isa_cap()
    if cap and not any(s in cap for s in _ONEDNN_BF16_ISAS):
        return Bf16Support(False, f"the CPU has {have}, but ONEDNN_MAX_CPU_ISA={cap} hides it")
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return Bf16Support(False, f"the CPU has {have}, but oneDNN reports no bf16 support")
    return Bf16Support(True, f"the CPU runs bf16 natively ({have})")


def cuda_bf16_support() -> Bf16Support:
    """Whether the current CUDA GPU runs bf16 natively (Ampere and later)."""
    name = torch.cuda.get_device_name()
    if torch.cuda.is_bf16_supported(including_emulation=False):
        return Bf16Support(True, f"{name} supports bf16")
    return Bf16Support(False, f"{name} has no native bf16")


def _uses_cuda(accelerator: str) -> bool:
    if accelerator in ("gpu", "cuda"):
        return True
    return accelerator == "auto" and torch.cuda.is_available()


def resolve_precision(requested: str, accelerator: str = "auto") -> tuple[str, str]:
    """The Lightning precision to train with, and why.

    Args:
        requested: ``trainer.precision``; anything but ``auto`` is returned as given.
        accelerator: ``trainer.accelerator`` (``auto``, ``cpu``, ``gpu``, ...).

    Returns:
        ``(precision, reason)``: ``bf16-mixed`` where the device runs bf16 natively,
        ``32-true`` elsewhere; ``reason`` is one clause for the run's log.
    """
    if requested != AUTO:
        return requested, "set in the config"
    if _uses_cuda(accelerator):
        support = cuda_bf16_support()
    elif accelerator in ("cpu", "auto"):
        support = cpu_bf16_support()
    else:
        support = Bf16Support(False, f"bf16 is not chosen automatically on {accelerator!r}")
    return (BF16 if support.native else FP32), support.reason


def cpu_model(default: str = "") -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``default`` where it is not there)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return default


def describe_machine(requested: str = AUTO, accelerator: str = "auto") -> str:
    """One line naming where a run trains and in what precision, for result records,
    e.g. ``AMD EPYC, 2 threads, AVX2, 32-true, torch 2.13.0+cpu``."""
    precision, _ = resolve_precision(requested, accelerator)
    if _uses_cuda(accelerator):
        device = torch.cuda.get_device_name()
    else:
        native = " + ".join(_cpu_bf16_instructions()) or torch.backends.cpu.get_cpu_capability()
        device = f"{cpu_model(platform.machine())}, {torch.get_num_threads()} threads, {native}"
    return f"{device}, {precision}, torch {torch.__version__}"
