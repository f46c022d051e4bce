"""The JSON sidecar an ONNX export carries: its format tag and where it lies.

A leaf of the inference layer, so that the exporter (which writes the sidecar) and the
onnxruntime reader (which reads it) share it without importing each other.
"""

from __future__ import annotations

from pathlib import Path

SIDECAR_FORMAT = "persec-onnx/1"


def sidecar_path(onnx_path: str | Path) -> Path:
    """``FILE.json`` beside ``FILE``."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.name + ".json")
