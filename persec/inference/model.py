"""Loading a saved recognizer onto a device."""

from __future__ import annotations

from pathlib import Path

import torch

from persec.errors import PersecError
from persec.hub import default_model_dir
from persec.models.recognizer import CONFIG, Recognizer


def resolve_device(device: str | None = None) -> torch.device:
    """``device`` as given, or ``cuda`` when available, else ``cpu``.

    Raises:
        PersecError: an unknown device string, or CUDA asked for but not available.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise PersecError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PersecError(f"device {device!r} asked for, but CUDA is not available")
    return dev


def load_model(model_dir: str | Path | None, device: str | torch.device = "cpu") -> Recognizer:
    """Load a saved recognizer in eval mode; ``None`` means the shipped model.

    Raises:
        PersecError: no such directory, no shipped model, or an invalid saved model.
    """
    if model_dir is None:
        model_dir = default_model_dir()
        if not (model_dir / CONFIG).is_file():
            raise PersecError(f"no --model given and no shipped model found at {model_dir}")
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise PersecError(f"model directory {model_dir} does not exist")
    model = Recognizer.load(model_dir)
    return model.to(device).eval()


def is_onnx_file(model: str | Path | None) -> bool:
    """Whether ``model`` names an exported ``.onnx`` file rather than a model folder."""
    return model is not None and Path(model).suffix == ".onnx" and not Path(model).is_dir()


def load_reader(model: str | Path | None, device: str | None = None, greedy: bool = False):
    """What ``persec read`` reads with: a saved model directory (or the shipped model,
    for ``None``) as a PyTorch :class:`Recognizer` on ``device``, or an exported
    ``.onnx`` file (its ``.onnx.json`` sidecar beside it) as an
    :class:`~persec.inference.onnx_runtime.OnnxRecognizer` with as many threads as
    PyTorch uses. ``greedy`` decodes best-path instead of the saved decoding.

    Raises:
        PersecError: no such model, a bad export, or a GPU device asked for an ONNX file
            (onnxruntime runs it on the CPU).
    """
    if is_onnx_file(model):
        from persec.inference.onnx_runtime import OnnxRecognizer

        if device is not None and resolve_device(device).type != "cpu":
            raise PersecError(f"an ONNX model runs on the CPU; --device {device} is for PyTorch")
        reader = OnnxRecognizer(model, threads=torch.get_num_threads())
    else:
        reader = load_model(model, resolve_device(device))
    if greedy:
        reader.use_greedy_decoding()
    return reader
