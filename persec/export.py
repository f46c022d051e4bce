"""Export a recognizer's image → logits graph to ONNX, and read images with the export.

An export is two files: ``FILE`` (the ONNX graph, input ``images`` (B, C, H, W) float32
in [-1, 1], output ``logits`` (B, L, V); the batch axis is dynamic, H × W fixed by the
model's :class:`~persec.image.ImageConfig`) and ``FILE.json`` (the sidecar: charset,
image geometry, decoder kind, decoding settings, tensor names), enough to decode the
logits without persec's PyTorch model. :class:`OnnxRecognizer` is that reader, with
persec's own preprocessing and the model's decoding: greedy, or for a CTC model saved
with ``decoder.beam_width`` the same beam search and language model
(:func:`~persec.models.lm.ctc_beam_decode`, a function of the logits).

CTC exports emit per-frame logits (L = W/4). Attention exports run the greedy loop for
all ``max_length + 1`` steps inside the graph (``AttentionDecoder(fixed_length=True)``),
which gives the same logits as PyTorch's early-stopping loop.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from persec import __version__
from persec.charset import AttentionTokenizer, Charset, CTCTokenizer
from persec.errors import PersecError
from persec.image import ImageConfig, to_tensor
from persec.models.decoders import (
    DECODING_FIELDS,
    AttentionDecoder,
    DecoderConfig,
    attention_greedy_decode,
    check_decoding,
    ctc_greedy_decode,
    decode_ctc,
    decoding_lm,
)
from persec.models.recognizer import ImageLike, Recognizer, as_pil_image, read_in_batches

FORMATS = ("onnx",)
# The lowest opset the torch.export-based exporter writes natively.
DEFAULT_OPSET = 18
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
SIDECAR_FORMAT = "persec-onnx/1"


def sidecar_path(onnx_path: str | Path) -> Path:
    """``FILE.json`` beside ``FILE``."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.name + ".json")


class ImagesToLogits(nn.Module):
    """The exported graph: images (B, C, H, W) → logits (B, L, V), greedy, no labels."""

    def __init__(self, recognizer: Recognizer):
        super().__init__()
        self.recognizer = recognizer

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → (B, L, V)."""
        memory = self.recognizer.encoder(images).high  # (B, T, C_h)
        decoder = self.recognizer.decoder
        if isinstance(decoder, AttentionDecoder):
            return decoder(memory, fixed_length=True)
        return decoder(memory)


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
    from persec.evaluate import load_model  # evaluate pulls in the data stack

    if opset < DEFAULT_OPSET:
        raise PersecError(f"opset {opset} is not supported: use {DEFAULT_OPSET} or later")
    recognizer = model if isinstance(model, Recognizer) else load_model(model, "cpu")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    was_training = recognizer.training
    recognizer.eval()
    try:
        program = _to_onnx(ImagesToLogits(recognizer), recognizer.config.image, opset)
    finally:
        recognizer.train(was_training)
    program.save(str(out))
    info = {
        "format": SIDECAR_FORMAT,
        "persec_version": __version__,
        "opset": opset,
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", *_chw(recognizer.config.image)],
            "range": [-1.0, 1.0],
            "preprocessing": "RGB (or L when channels=1), bicubic resize to height x width "
            "ignoring aspect, x / 127.5 - 1",
        },
        "output": {"name": OUTPUT_NAME, "shape": ["batch", "length", "classes"]},
        "image": asdict(recognizer.config.image),
        "decoder": recognizer.config.decoder.name,
        "classes": "ctc: 0 = blank, i = charset[i-1]; attn: 0 = EOS, i = charset[i-1]",
        "charset": "".join(recognizer.charset.chars),
    }
    if isinstance(recognizer.decoder, AttentionDecoder):
        info["max_length"] = recognizer.decoder.max_length
    else:
        dec = recognizer.config.decoder
        info["decoding"] = {key: getattr(dec, key) for key in DECODING_FIELDS}
    sidecar_path(out).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    return out


def _chw(image: ImageConfig) -> list[int]:
    return [image.channels, image.height, image.width]


def _to_onnx(graph: nn.Module, image: ImageConfig, opset: int):
    """torch.export the graph with a dynamic batch axis, then translate it to ONNX.

    The torch.export-based exporter (``dynamo=True``) is used because the legacy
    TorchScript one (``dynamo=False``, deprecated) cannot translate the windowed
    aggregators as written (``roll`` without ``dims``, in-place ``|=`` on masks),
    while torch.export functionalises them and constant-folds the masks.
    """
    device = next(graph.parameters()).device
    example = torch.zeros(2, *_chw(image), device=device)  # batch 1 would be specialised
    batch = torch.export.Dim("batch", min=1)
    with _quiet_exporter():
        try:
            program = torch.export.export(graph, (example,), dynamic_shapes=({0: batch},))
        except Exception as e:
            raise PersecError(
                f"ONNX export failed while tracing the model: {_first_line(e)}"
            ) from e
        try:
            return torch.onnx.export(
                program,
                (example,),
                dynamo=True,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
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


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    line = text[0] if text else type(e).__name__
    return line if len(line) <= 300 else line[:297] + "..."


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
    reason = _first_line(chain[-1]) if chain else "unknown error"
    return f"ONNX export failed{where}: {type(chain[-1]).__name__}: {reason}"


# ---------------------------------------------------------------- reading
@dataclass
class ExportInfo:
    """What the sidecar says about an export."""

    decoder: str
    charset: Charset
    image: ImageConfig
    input_name: str
    output_name: str
    decoding: DecoderConfig | None = None  # CTC: beam search and LM settings


def read_sidecar(onnx_path: str | Path) -> ExportInfo:
    """Read and check ``FILE.json``.

    Raises:
        PersecError: missing, malformed, or not a persec ONNX sidecar.
    """
    path = sidecar_path(onnx_path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise PersecError(f"{path} not found: an ONNX export needs its sidecar") from e
    except (OSError, ValueError) as e:
        raise PersecError(f"cannot read {path}: {e}") from e
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise PersecError(f"{path} is not a persec ONNX sidecar ({SIDECAR_FORMAT})")
    try:
        info = ExportInfo(
            decoder=data["decoder"],
            charset=Charset(data["charset"]),
            image=ImageConfig(**data["image"]),
            input_name=data["input"]["name"],
            output_name=data["output"]["name"],
        )
        if "decoding" in data:  # older exports lack it: greedy
            if set(data["decoding"]) - set(DECODING_FIELDS):
                raise KeyError(
                    f"decoding keys {sorted(set(data['decoding']) - set(DECODING_FIELDS))}"
                )
            info.decoding = DecoderConfig(name=info.decoder, **data["decoding"])
    except (KeyError, TypeError) as e:
        raise PersecError(f"{path} lacks or mangles {e}") from e
    if info.decoder not in DECODE:
        raise PersecError(f"{path}: unknown decoder {info.decoder!r}")
    return info


# decoder kind -> (tokenizer, greedy decode), the same functions the torch decoders use
DECODE = {
    "ctc": (CTCTokenizer, ctc_greedy_decode),
    "attn": (AttentionTokenizer, attention_greedy_decode),
}


class OnnxRecognizer:
    """An exported recognizer run by onnxruntime (CPU), with persec's pre/post-processing.

    Args:
        path: the ONNX file; ``path.json`` must sit beside it.
        threads: onnxruntime intra-op threads (None: onnxruntime's default).
    """

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise PersecError(f"ONNX file {path} does not exist")
        self.info = read_sidecar(path)
        tokenizer_cls, self._decode = DECODE[self.info.decoder]
        self.tokenizer = tokenizer_cls(self.info.charset)
        dec = self.info.decoding
        if dec is not None and dec.beam_width > 0:  # as the PyTorch CTC decoder does
            try:
                check_decoding(dec)
            except ValueError as e:
                raise PersecError(f"{sidecar_path(path)}: {e}") from e
            decoding_lm(dec)  # built now, as when a PyTorch model loads
            self._decode = functools.partial(decode_ctc, cfg=dec)
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
            raise PersecError(f"onnxruntime cannot load {path}: {_first_line(e)}") from e

    def __call__(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """Images (B, C, H, W) in [-1, 1] → logits (B, L, V), float32."""
        if isinstance(images, torch.Tensor):
            images = images.detach().cpu().numpy()
        feed = {self.info.input_name: np.ascontiguousarray(images, dtype=np.float32)}
        return self.session.run([self.info.output_name], feed)[0]

    def decode(self, logits: np.ndarray | torch.Tensor) -> list[tuple[str, float]]:
        """Logits (B, L, V) → ``[(text, confidence)]``, as :meth:`Recognizer.decode`."""
        return self._decode(torch.as_tensor(logits), self.tokenizer)

    def preprocess(self, image: ImageLike) -> torch.Tensor:
        """One image (path, PIL image or uint8 array) → ``(C, H, W)``, as the model's."""
        return to_tensor(as_pil_image(image), self.info.image)

    def read(
        self, images: Sequence[ImageLike], batch_size: int = 64, orient: str = "none"
    ) -> list[tuple[str, float]]:
        """Recognise a list of images in batches, as :meth:`Recognizer.read` does
        (``orient="tall"``: tall crops are also read turned 90° both ways)."""
        return read_in_batches(
            images, self.info.image, lambda batch: self.decode(self(batch)), batch_size, orient
        )


# ---------------------------------------------------------------- parity
@dataclass
class ParityReport:
    """PyTorch vs onnxruntime on the same preprocessed images."""

    n: int
    max_abs_diff: float  # max |Δlogit|
    max_abs_logit: float  # scale of the logits, for reading the difference
    same_text: int  # images whose decoded text is identical
    mismatches: list[tuple[int, str, str]]  # (index, torch text, onnx text)

    def summary(self) -> str:
        """One line: max |Δlogit| and text agreement."""
        return (
            f"max |Δlogit| {self.max_abs_diff:.2e} (logits up to {self.max_abs_logit:.3g}), "
            f"text identical on {self.same_text}/{self.n} images"
        )


@torch.inference_mode()
def check_parity(
    recognizer: Recognizer, onnx: OnnxRecognizer, images: torch.Tensor
) -> ParityReport:
    """Run both on ``images`` (B, C, H, W) in [-1, 1] and compare logits and texts."""
    was_training = recognizer.training
    recognizer.eval()
    try:
        device = next(recognizer.parameters()).device
        ref = recognizer(images.to(device)).float().cpu()
    finally:
        recognizer.train(was_training)
    got = torch.from_numpy(onnx(images))
    if got.shape != ref.shape:
        raise PersecError(f"ONNX logits have shape {tuple(got.shape)}, PyTorch {tuple(ref.shape)}")
    ref_text = [t for t, _ in recognizer.decode(ref)]
    got_text = [t for t, _ in onnx.decode(got)]
    real = ref[ref > torch.finfo(ref.dtype).min]  # attention's filled steps hold the min
    mismatches = [
        (i, a, b) for i, (a, b) in enumerate(zip(ref_text, got_text, strict=True)) if a != b
    ]
    return ParityReport(
        n=len(ref_text),
        max_abs_diff=float((ref - got).abs().max()) if ref.numel() else 0.0,
        max_abs_logit=float(real.abs().max()) if real.numel() else 0.0,
        same_text=len(ref_text) - len(mismatches),
        mismatches=mismatches,
    )
