"""What the benchmarks report about the machine they ran on."""

from __future__ import annotations

from persec.precision import cpu_model

__all__ = ["cpu_model"]
