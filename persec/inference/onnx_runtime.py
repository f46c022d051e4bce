"""Running an exported model with onnxruntime, and checking it against the PyTorch one."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from persec.charset import Charset
from persec.decoding.settings import (
    DECODING_FIELDS,
    check_decoding,
    decode_ctc,
    decoding_lm,
    greedy_decoding,
)
from persec.errors import PersecError, first_line
from persec.image import ImageConfig, pad_to_width, to_tensor
from persec.inference.read import list_images
from persec.inference.sidecar import SIDECAR_FORMAT, sidecar_path
from persec.models.decoders.base import DECODERS, DecoderConfig
from persec.models.recognizer import ImageLike, Recognizer, as_pil_image, read_in_batches


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
    if info.decoder not in DECODERS:
        raise PersecError(f"{path}: unknown decoder {info.decoder!r}")
    return info


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
        spec = DECODERS[self.info.decoder]
        self.tokenizer, self._decode = spec.tokenizer(self.info.charset), spec.greedy_decode
        dec = self.info.decoding
        if dec is not None and dec.beam_width > 0:  # as the PyTorch CTC decoder does
            try:
                check_decoding(dec)
            except ValueError as e:
                raise PersecError(f"{sidecar_path(path)}: {e}") from e
            decoding_lm(dec)  # built now, as when a PyTorch model loads
            self._decode = functools.partial(decode_ctc, cfg=dec)
        options = ort.SessionOptions()
        # Without spinning, onnxruntime's idle threads leave the cores to the Python work
        # between runs (image decoding, the beam search): on a 2-core AVX2 EPYC, reading
        # one crop at a time took 16.5 ms a crop instead of 25.4, and the network alone ran
        # batches of 32 at 129 crops/s instead of 117 (2 threads, one run, 2026-12-08).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
            raise PersecError(f"onnxruntime cannot load {path}: {first_line(e)}") from e

    @property
    def image(self) -> ImageConfig:
        """How input images are prepared (height, width, channels), from the sidecar."""
        return self.info.image

    @property
    def decoding(self) -> DecoderConfig:
        """The decoding settings in use, as ``Recognizer.config.decoder`` for PyTorch: the
        sidecar's, or greedy defaults for an older export without them."""
        return self.info.decoding or DecoderConfig(name=self.info.decoder)

    def use_greedy_decoding(self) -> None:
        """Decode best-path from now on, without the sidecar's beam search and LM
        (:attr:`decoding` is updated to match)."""
        self._decode = DECODERS[self.info.decoder].greedy_decode
        if self.info.decoding is not None:
            self.info.decoding = greedy_decoding(self.info.decoding)

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


CHECK_RENDERED = 16


def parity_images(model: Recognizer, inputs: list[str]) -> tuple[torch.Tensor, str]:
    """(B, C, H, W) with the model's preprocessing: the given files, or rendered words."""
    if inputs:
        paths = list_images(inputs)
        return pad_to_width([model.preprocess(p) for p in paths]), "given images"
    from persec.data.render.config import SynthConfig
    from persec.data.render.synth import WordRenderer  # font discovery only when rendering

    # A line model is checked at the rendered words' own widths (a dynamic width).
    config = SynthConfig(width=None) if model.config.image.keep_aspect else None
    renderer = WordRenderer(config, split="test", seed=0)
    crops = [renderer.render(i)[0] for i in range(CHECK_RENDERED)]
    return pad_to_width([model.preprocess(c) for c in crops]), "rendered images"
