"""Export a recognizer's image → logits graph to ONNX, and read images with the export.

An export is two files: ``FILE`` (the ONNX graph, input ``images`` (B, C, H, W) float32
in [-1, 1], output ``logits`` (B, L, V); the batch axis is dynamic, H × W fixed by the
model's :class:`~persec.image.ImageConfig`, W dynamic too for a line model that keeps
the aspect ratio) and ``FILE.json`` (the sidecar: charset,
image geometry, decoder kind, decoding settings, tensor names), enough to decode the
logits without persec's PyTorch model.
:class:`~persec.inference.onnx_runtime.OnnxRecognizer` is that reader, with
persec's own preprocessing and the model's decoding: greedy, or for a CTC model saved
with ``decoder.beam_width`` the same beam search and language model
(:func:`~persec.decoding.beam.ctc_beam_decode`, a function of the logits).

CTC exports emit per-frame logits (L = W/4). Attention exports run the greedy loop for
all ``max_length + 1`` steps inside the graph (each decoder's ``export_forward``),
which gives the same logits as PyTorch's early-stopping loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from persec._version import __version__
from persec.errors import PersecError, first_line
from persec.image import WIDTH_MULTIPLE, ImageConfig, min_width
from persec.inference.sidecar import SIDECAR_FORMAT, sidecar_path
from persec.models.recognizer import Recognizer

FORMATS = ("onnx",)
# The lowest opset the torch.export-based exporter writes natively.
DEFAULT_OPSET = 18
INPUT_NAME = "images"
OUTPUT_NAME = "logits"


_FIXED_WIDTH = (
    "a line model (image.keep_aspect) needs an ONNX graph with a dynamic width, and "
    "torch's exporter unrolls a BiLSTM head over one fixed length: train line models "
    "with decoder.lstm_layers=0 (the W-MHSA aggregators give the context) to export them"
)


class ImagesToLogits(nn.Module):
    """The exported graph: images (B, C, H, W) → logits (B, L, V), greedy, no labels."""

    def __init__(self, recognizer: Recognizer):
        super().__init__()
        self.recognizer = recognizer

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → (B, L, V)."""
        memory = self.recognizer.encoder(images).high  # (B, T, C_h)
        return self.recognizer.decoder.export_forward(memory)


# ---------------------------------------------------------------- export
def export_model(
    model: Recognizer | str | Path | None,
    out: str | Path,
    format: str = "onnx",
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Export ``model`` in ``format`` (only ``onnx`` so far); see :func:`export_onnx`.

    Raises:
        PersecError: an unsupported format, and everything :func:`export_onnx` raises.
    """
    check_format(format)
    return export_onnx(model, out, opset)


def check_format(format: str) -> None:
    """Raise :class:`PersecError` unless ``format`` is one of :data:`FORMATS`."""
    if format.lower() not in FORMATS:
        raise PersecError(f"unsupported export format {format!r}: use {', '.join(FORMATS)}")


def export_onnx(
    model: Recognizer | str | Path | None, out: str | Path, opset: int = DEFAULT_OPSET
) -> Path:
    """Write ``out`` (ONNX) and ``out.json`` (sidecar) for a recognizer.

    Args:
        model: a :class:`Recognizer`, a saved model directory, or None for the shipped
            model. The recognizer's train/eval mode is restored afterwards.
        out: the ONNX file to write; its folder is created.
        opset: ONNX opset (>= 18).

    Returns:
        ``out`` as a Path.

    Raises:
        PersecError: a missing or invalid model directory, an opset below 18, or a
            graph the exporter cannot translate (naming the layer and op when known).
    """
    from persec.inference.model import load_model  # evaluate pulls in the data stack

    if opset < DEFAULT_OPSET:
        raise PersecError(f"opset {opset} is not supported: use {DEFAULT_OPSET} or later")
    recognizer = model if isinstance(model, Recognizer) else load_model(model, "cpu")
    if recognizer.config.image.keep_aspect and getattr(recognizer.decoder, "rnn", None) is not None:
        raise PersecError(_FIXED_WIDTH)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    was_training = recognizer.training
    recognizer.eval()
    try:
        program = _to_onnx(ImagesToLogits(recognizer), recognizer.config.image, opset)
    finally:
        recognizer.train(was_training)
    image = recognizer.config.image
    if image.keep_aspect and min_width(image) < image.width and _fixed_width(program):
        raise PersecError(_FIXED_WIDTH)
    program.save(str(out))
    info = {
        "format": SIDECAR_FORMAT,
        "persec_version": __version__,
        "opset": opset,
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", *_chw(recognizer.config.image)],
            "range": [-1.0, 1.0],
            "preprocessing": _preprocessing(recognizer.config.image),
        },
        "output": {"name": OUTPUT_NAME, "shape": ["batch", "length", "classes"]},
        "image": asdict(recognizer.config.image),
        "decoder": recognizer.config.decoder.name,
        "classes": "ctc: 0 = blank, i = charset[i-1]; attn: 0 = EOS, i = charset[i-1]",
        "charset": "".join(recognizer.charset.chars),
    }
    info.update(recognizer.decoder.export_info())
    sidecar_path(out).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    return out


def _fixed_width(program) -> bool:
    """Whether the ONNX program's image input has a fixed width (axis 3)."""
    width = program.model.graph.inputs[0].shape[3]
    return isinstance(width, int)


def _chw(image: ImageConfig) -> list[int | str]:
    return [image.channels, image.height, "width" if image.keep_aspect else image.width]


def _preprocessing(image: ImageConfig) -> str:
    if image.keep_aspect:
        return (
            "RGB (or L when channels=1), bicubic resize to height keeping the aspect, width "
            f"rounded up to a multiple of {WIDTH_MULTIPLE} and at most image.width, "
            "x / 127.5 - 1; a batch is padded on the right by repeating the last column"
        )
    return "RGB (or L when channels=1), bicubic resize to height x width ignoring aspect, x / 127.5 - 1"


def _to_onnx(graph: nn.Module, image: ImageConfig, opset: int):
    """torch.export the graph with a dynamic batch axis (and width, for a model that
    keeps the aspect ratio), then translate it to ONNX.

    The torch.export-based exporter (``dynamo=True``) is used because the legacy
    TorchScript one (``dynamo=False``, deprecated) cannot translate the windowed
    aggregators as written (``roll`` without ``dims``, in-place ``|=`` on masks),
    while torch.export functionalises them and constant-folds the masks.
    """
    device = next(graph.parameters()).device
    # batch 1 would be specialised
    example = torch.zeros(2, image.channels, image.height, image.width, device=device)
    axes = {0: torch.export.Dim("batch", min=1)}
    lo, hi = min_width(image) // WIDTH_MULTIPLE, image.width // WIDTH_MULTIPLE
    if image.keep_aspect and hi > lo:  # text lines: any width up to image.width, by 4
        steps = torch.export.Dim("width_steps", min=lo, max=hi)
        axes[3] = WIDTH_MULTIPLE * steps
        example = example[..., : max(lo, hi // 2) * WIDTH_MULTIPLE]
    with _quiet_exporter():
        try:
            program = torch.export.export(graph, (example,), dynamic_shapes=(axes,))
        except Exception as e:
            raise PersecError(f"ONNX export failed while tracing the model: {first_line(e)}") from e
        try:
            return torch.onnx.export(
                program,
                (example,),
                dynamo=True,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=(axes,),
                custom_translation_table={
                    torch.ops.aten.scaled_dot_product_attention.default: _attention_onnx
                },
                verbose=False,
            )
        except Exception as e:
            raise PersecError(_describe_failure(e, program)) from e


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's warnings and log lines (e.g. "torchvision is not
    installed"); real failures raise."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _attention_onnx(
    query,
    key,
    value,
    attn_mask=None,
    dropout_p=0.0,
    is_causal=False,
    scale=None,
    enable_gqa=False,
):
    """ONNX for ``aten.scaled_dot_product_attention`` on inputs of any rank (inference,
    so ``dropout_p`` is ignored).

    torchlib's translation accepts 4-D inputs only, and the windowed aggregators attend
    over (B, windows, heads, N, d). Same math: softmax(q kᵀ · scale + mask) v.
    """
    from onnxscript import ir
    from onnxscript import opset18 as op

    if enable_gqa:
        raise NotImplementedError("grouped-query attention (enable_gqa=True)")

    rank = len(query.shape)
    perm = [*range(rank - 2), rank - 1, rank - 2]
    if scale is None:
        scale = 1.0 / math.sqrt(query.shape[-1])  # the head width is static
    scores = op.Mul(op.MatMul(query, op.Transpose(key, perm=perm)), op.CastLike(scale, query))
    if is_causal:
        length, source = query.shape[-2], key.shape[-2]
        causal = np.triu(np.full((length, source), -np.inf, dtype=np.float32), 1)
        scores = op.Add(scores, op.CastLike(op.Constant(value=ir.tensor(causal)), scores))
    if attn_mask is not None:
        if attn_mask.dtype == ir.DataType.BOOL:
            scores = op.Where(attn_mask, scores, op.CastLike(-math.inf, scores))
        else:
            scores = op.Add(scores, attn_mask)
    return op.MatMul(op.Softmax(scores, axis=-1), value)


def _describe_failure(e: BaseException, program: torch.export.ExportedProgram) -> str:
    """One line naming the layer and op the ONNX translation failed on, when it says."""
    chain: list[BaseException] = []
    while e is not None and len(chain) < 20:
        chain.append(e)
        e = e.__cause__ or e.__context__
    found = re.search(r"translating node %(\w+) .*?target=([\w.]+)", "\n".join(map(str, chain)))
    where = ""
    if found:
        name, target = found.groups()
        op = ".".join(target.split(".")[2:4])  # torch.ops.NS.NAME.OVERLOAD -> NS.NAME
        short = op.split(".")[-1]
        # The node may have been renamed by the decompositions; fall back to its op.
        nodes = [n for n in program.graph.nodes if n.op == "call_function"]
        node = next((n for n in nodes if n.name == name), None) or next(
            (n for n in nodes if short in str(n.target)), None
        )
        stack = list((node.meta.get("nn_module_stack") or {}).values()) if node else []
        layer = re.sub(r"^.*?recognizer\.", "", str(stack[-1][0])) if stack else ""
        where = f" at {'layer ' + layer + ', ' if layer else ''}op {op}"
    reason = first_line(chain[-1]) if chain else "unknown error"
    return f"ONNX export failed{where}: {type(chain[-1]).__name__}: {reason}"
