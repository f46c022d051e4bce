"""A word recognizer: encoder + decoder + charset, with safe save/load and ``read``.

A saved model is a directory with ``model.safetensors`` (weights) and
``config.json`` (the :class:`RecognizerConfig`, with the charset's characters
spelled out). Loading never unpickles anything.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from persec.charset import STANDARD_CHARSET, Charset
from persec.config import load_config_dict, to_dict
from persec.decoding.settings import DECODING_FIELDS, greedy_decoding
from persec.errors import PersecError
from persec.image import ImageConfig, ToTensor, decode_image, pad_to_width, to_tensor
from persec.models.decoders.base import DecoderConfig, build_decoder
from persec.models.encoders.base import EncoderConfig, build_encoder
from persec.orientation import OrientedTransform, best_readings
from persec.weights import average_states, load_state, read_json, read_safetensors, write_module

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
ENCODER_WEIGHTS = "encoder.safetensors"
ENCODER_CONFIG = "encoder.json"

ImageLike = str | Path | Image.Image | np.ndarray


@dataclass
class RecognizerConfig:
    """Everything needed to rebuild a recognizer.

    Attributes:
        charset: preset name (``36_lowercase`` ...), path to a charset file, or, in a
            saved ``config.json``, the characters themselves (``chars:`` prefix).
        image: input geometry (32×128 for fine-tuning [paper]).
        encoder: encoder family and size.
        decoder: CTC or attention head.
    """

    charset: str = STANDARD_CHARSET
    image: ImageConfig = field(default_factory=ImageConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)


def as_pil_image(image: ImageLike) -> Image.Image:
    """A path, PIL image or HxW / HxWxC uint8 array as a PIL image (paths decoded).

    Raises:
        PersecError: an unreadable or undecodable file, a non-uint8 array, another type.
    """
    if isinstance(image, (str, Path)):
        try:
            data = Path(image).read_bytes()
        except OSError as e:
            raise PersecError(f"cannot read image {image}: {e.strerror or e}") from e
        return decode_image(data)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise PersecError(f"image arrays must be uint8, got {image.dtype}")
        return Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise PersecError(f"cannot read an image from a {type(image).__name__}")
    return image


def read_in_batches(
    images: Sequence[ImageLike],
    image: ImageConfig,
    recognize: Callable[[torch.Tensor], list[tuple[str, float]]],
    batch_size: int = 64,
    orient: str = "none",
) -> list[tuple[str, float]]:
    """``[(text, confidence)]`` for ``images``, read ``batch_size`` at a time.

    Each image is preprocessed as in training (``image``); with ``orient="tall"`` a tall
    crop's turned versions go into the same batch and the best reading is kept
    (:func:`persec.orientation.best_readings`). ``recognize`` maps a batch
    (N, C, H, W) to its decoded readings; :meth:`Recognizer.read` and the ONNX
    reader (:class:`persec.inference.onnx_runtime.OnnxRecognizer`) share this loop.

    A line model (``image.keep_aspect``) reads :data:`LINE_GROUP` batches' worth of
    images at a time sorted by width, so each batch holds lines of similar width and
    is padded little; the readings come back in the order given.
    """
    transform = OrientedTransform(ToTensor(image), orient)
    out: list[tuple[str, float]] = []
    chunk = batch_size * (LINE_GROUP if image.keep_aspect else 1)
    for start in range(0, len(images), chunk):
        versions = [transform(as_pil_image(x)) for x in images[start : start + chunk]]
        flat = [v for vs in versions for v in vs]  # each (C, H, W_i)
        if image.keep_aspect:
            readings = _read_by_width(flat, recognize, batch_size)
        else:
            readings = recognize(pad_to_width(flat))  # (ΣK, C, H, W) in
        out.extend(best_readings(readings, [len(v) for v in versions]))
    return out


# Batches of lines sorted by width together in read_in_batches.
LINE_GROUP = 8


def _read_by_width(
    flat: list[torch.Tensor],
    recognize: Callable[[torch.Tensor], list[tuple[str, float]]],
    batch_size: int,
) -> list[tuple[str, float]]:
    """Readings of ``flat`` (C, H, W_i) in its order, read in batches of similar width."""
    order = sorted(range(len(flat)), key=lambda i: flat[i].shape[-1])
    readings: list[tuple[str, float]] = [("", 0.0)] * len(flat)
    for b in range(0, len(order), batch_size):
        chosen = order[b : b + batch_size]
        batch = pad_to_width([flat[i] for i in chosen])  # (N, C, H, W)
        for i, reading in zip(chosen, recognize(batch), strict=True):
            readings[i] = reading
    return readings


class Recognizer(nn.Module):
    """Images ``(B, C, H, W)`` in [-1, 1] → text.

    Args:
        config: the recognizer's configuration; ``config.encoder.in_channels`` and
            ``input_height`` are taken from ``config.image``.
    """

    def __init__(self, config: RecognizerConfig):
        super().__init__()
        config.encoder.in_channels = config.image.channels
        config.encoder.input_height = config.image.height
        self.config = config
        self.charset = Charset.from_spec(config.charset)
        self.encoder = build_encoder(config.encoder)
        self.decoder = build_decoder(config.decoder, self.encoder.out_channels, self.charset)

    def forward(self, images: torch.Tensor, labels: Sequence[str] | None = None) -> torch.Tensor:
        """``(B, C, H, W)`` → logits ``(B, L, V)``; ``labels`` enables teacher forcing."""
        memory = self.encoder(images).high  # (B, T, C_h)
        return self.decoder(memory, labels)

    def loss(self, logits: torch.Tensor, labels: Sequence[str]) -> torch.Tensor:
        """The decoder's training loss (scalar)."""
        return self.decoder.loss(logits, labels)

    def decode(self, logits: torch.Tensor) -> list[tuple[str, float]]:
        """Logits → ``[(text, confidence)]``, greedy or by beam search as
        ``config.decoder`` says."""
        return self.decoder.decode(logits)

    def use_greedy_decoding(self) -> None:
        """Decode best-path from now on, without the config's beam search and language
        model (``config.decoder`` is updated to match, so a save records it)."""
        self.config.decoder = greedy_decoding(self.config.decoder)
        self.decoder.set_decoding(self.config.decoder)

    # ---------------------------------------------------------------- inference
    def preprocess(self, image: ImageLike) -> torch.Tensor:
        """One image (path, PIL image or HxW / HxWxC uint8 array) → ``(C, H, W)``."""
        return to_tensor(as_pil_image(image), self.config.image)

    @torch.inference_mode()
    def read(
        self, images: Sequence[ImageLike], batch_size: int = 64, orient: str = "none"
    ) -> list[tuple[str, float]]:
        """Recognise a list of images with the training preprocessing, in batches of
        ``batch_size`` images. ``orient="tall"`` also reads each crop at least 1.5 times
        as tall as wide turned 90° both ways; a longer turned reading replaces an
        upright one that is empty or doubtful (:func:`persec.orientation.best_reading`)."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        try:
            return read_in_batches(
                images,
                self.config.image,
                lambda batch: self.decode(self(batch.to(device))),
                batch_size,
                orient,
            )
        finally:
            self.train(was_training)

    # ---------------------------------------------------------------- save/load
    def saved_config(self) -> dict:
        """The config as ``config.json`` holds it (the charset spelled out)."""
        config = to_dict(self.config)
        config["charset"] = "chars:" + "".join(self.charset.chars)
        return config

    def save(self, directory: str | Path) -> Path:
        """Write ``model.safetensors`` + ``config.json`` into ``directory``."""
        write_module(self, self.saved_config(), Path(directory), WEIGHTS, CONFIG)
        return Path(directory)

    @classmethod
    def average(cls, directories: Sequence[str | Path]) -> Recognizer:
        """Load saved models of one config and return their uniform weight average.

        A "model soup" (Wortsman et al., 2022; fairseq's ``average_checkpoints``):
        fine-tuning runs that start from the same model usually stay in one basin, where
        the mean of their weights often reads better than each of them. The models must
        share the config (architecture, charset, image size) but may decode differently
        (``decoder.beam_width``, ``lm_*``...): the average decodes as the first model
        does. BatchNorm statistics are averaged like the weights.

        Raises:
            PersecError: fewer than two models, a model cannot be loaded, or configs differ.
        """
        if len(directories) < 2:
            raise PersecError(f"averaging needs at least 2 models, got {len(directories)}")
        models = [cls.load(d) for d in directories]

        def architecture(model: Recognizer) -> dict:
            config = model.saved_config()
            config["decoder"] = {
                k: v for k, v in config["decoder"].items() if k not in DECODING_FIELDS
            }
            return config

        first = architecture(models[0])
        for directory, model in zip(directories[1:], models[1:], strict=True):
            config = architecture(model)
            if config != first:
                key = next(
                    k for k in sorted(set(first) | set(config)) if first.get(k) != config.get(k)
                )
                raise PersecError(
                    f"{directory} and {directories[0]} differ in their config ({key!r}): "
                    "only models of the same config can be averaged"
                )
        state = average_states(
            [m.state_dict() for m in models], [str(Path(d) / WEIGHTS) for d in directories]
        )
        models[0].load_state_dict(state)
        return models[0]

    @classmethod
    def load(cls, directory: str | Path, map_location: str = "cpu") -> Recognizer:
        """Rebuild a recognizer saved by :meth:`save` (safetensors only, no pickle)."""
        directory = Path(directory)
        if not (directory / CONFIG).is_file():
            raise PersecError(
                f"{directory / CONFIG} not found: a model directory holds {WEIGHTS} and {CONFIG}"
            )
        config = read_json(directory / CONFIG)
        try:
            model = cls(load_config_dict(RecognizerConfig, config, source=str(directory / CONFIG)))
        except ValueError as e:  # build_encoder/build_decoder: unknown name, bad sizes
            raise PersecError(f"bad config in {directory / CONFIG}: {e}") from e
        state = read_safetensors(directory / WEIGHTS, map_location)
        load_state(model, state, str(directory / WEIGHTS))
        model.eval()
        return model

    def save_encoder(self, directory: str | Path) -> Path:
        """Write only the encoder (``encoder.safetensors`` + ``encoder.json``)."""
        return save_encoder(self.encoder, self.config.encoder, directory)

    def load_encoder(self, path: str | Path) -> None:
        """Initialise the encoder from ``encoder.safetensors`` (file or its directory).

        Raises:
            PersecError: the checkpoint's encoder config or tensors do not match.
        """
        path = Path(path)
        weights = path / ENCODER_WEIGHTS if path.is_dir() else path
        config_path = weights.with_name(ENCODER_CONFIG)
        if config_path.is_file():
            saved = to_dict(read_encoder_config(config_path))
            ours = to_dict(self.config.encoder)
            diff = [
                f"{k}: checkpoint {saved[k]!r} vs model {ours[k]!r}"
                for k in ours
                if saved[k] != ours[k]
            ]
            if diff:
                raise PersecError(
                    f"encoder checkpoint {weights} does not match this model ({'; '.join(diff)})"
                )
        load_state(self.encoder, read_safetensors(weights, "cpu"), str(weights))


def read_encoder_config(path: str | Path) -> EncoderConfig:
    """The :class:`EncoderConfig` in an ``encoder.json``.

    Raises:
        ConfigError: unknown key or wrong type, naming the file.
    """
    return load_config_dict(EncoderConfig, read_json(path), source=str(path))


def save_encoder(encoder: nn.Module, config: EncoderConfig, directory: str | Path) -> Path:
    """Write an encoder's weights and config as ``encoder.safetensors`` + ``encoder.json``."""
    directory = Path(directory)
    write_module(encoder, to_dict(config), directory, ENCODER_WEIGHTS, ENCODER_CONFIG)
    return directory / ENCODER_WEIGHTS
