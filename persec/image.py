"""Word-crop images: decoding/encoding with one error type for bad inputs, and the
one preprocessing that turns an image into model input (training, eval and ``read``).

Datasets hold images as encoded bytes (PNG/JPEG in an LMDB, files in a folder).
:func:`decode_image` is the only place those bytes become pixels, so every kind of
bad input (zero bytes, truncated file, not an image, decompression bomb) surfaces as
:class:`ImageDecodeError` and a dataset can turn it into a counted skip.

PIL's global state is left alone: the pixel cap is applied per call (on top of
PIL's own ``Image.MAX_IMAGE_PIXELS`` check, so the stricter of the two wins), and
the bomb warning is turned into an error only inside a ``warnings.catch_warnings``
block (process-wide while it lasts, so a bomb warning raised by another thread in
that instant would also become an error). If other code sets
``ImageFile.LOAD_TRUNCATED_IMAGES = True``, PIL pads truncated images instead of
failing; we do not override that choice.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from persec.errors import DataError

# Word crops are small; 50 MP is far above any real one and far below what would
# exhaust memory when decoded in several workers at once.
DEFAULT_MAX_PIXELS = 50_000_000

# Formats we decode. Restricting the list keeps PIL from handing exotic inputs to
# plugins that shell out or parse complex containers (EPS calls Ghostscript).
ACCEPTED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")


class ImageDecodeError(DataError):
    """Encoded bytes that cannot be decoded into an image (or are too large to)."""


def decode_image(data: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode PNG/JPEG/... bytes into a fully loaded RGB image.

    Args:
        data: the encoded image.
        max_pixels: refuse images with more than this many pixels (width × height),
            checked from the header before any pixel is decoded. ``None``: only
            PIL's global limit applies.

    Raises:
        ImageDecodeError: for zero-byte, truncated, unknown-format or oversized input.
    """
    if not data:
        raise ImageDecodeError("zero-byte image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageDecodeError(
                    f"image of {width}x{height} pixels exceeds the limit of {max_pixels} pixels"
                )
            image.load()  # decodes now, so truncation is detected here, not later
            return _to_rgb(image)
    except ImageDecodeError:
        raise
    except Exception as e:  # PIL plugins raise OSError, ValueError, SyntaxError, ...
        raise ImageDecodeError(f"cannot decode image: {type(e).__name__}: {e}") from e


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L"):
        # PIL clips 16-bit grey to 255 when converting (a white image); rescale instead.
        grey = np.asarray(image, dtype=np.int64) // 257
        return Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8), "L").convert("RGB")
    return image.convert("RGB")


def encode_image(image: Image.Image, format: str = "png", quality: int = 95) -> bytes:
    """Encode an image as PNG (lossless) or JPEG bytes.

    Args:
        image: any PIL image; converted to RGB for JPEG when needed.
        format: ``"png"`` or ``"jpeg"`` (``"jpg"`` accepted).
        quality: JPEG quality (1-95); ignored for PNG.
    """
    fmt = format.lower()
    out = io.BytesIO()
    if fmt == "png":
        # Level 1 is ~3x faster than the default 6 for ~20% more bytes.
        image.save(out, format="PNG", compress_level=1)
    elif fmt in ("jpeg", "jpg"):
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        image.save(out, format="JPEG", quality=quality)
    else:
        raise ValueError(f"unsupported image format {format!r}: use 'png' or 'jpeg'")
    return out.getvalue()


# ---------------------------------------------------------------- model input
@dataclass
class ImageConfig:
    """Model input geometry.

    Attributes:
        height: input height in pixels (32 in the paper).
        width: input width in pixels (128 for fine-tuning, 384 for pretraining [paper]);
            with ``keep_aspect`` the largest width.
        channels: 3 for RGB, 1 for grayscale.
        keep_aspect: [ours, for text lines] scale to ``height`` keeping the aspect
            ratio, width rounded up to a multiple of 4 (the encoders' stride) and capped
            at ``width`` (only a wider image is squeezed). Batches of different widths
            are padded on the right (:func:`pad_to_width`). Off: every image is
            stretched to ``height`` × ``width`` as in the STR benchmarks.
    """

    height: int = 32
    width: int = 128
    channels: int = 3
    keep_aspect: bool = False


# Encoders downsample the width by 4 (ResNet stem/stage 1, ViT patches).
WIDTH_MULTIPLE = 4


def input_width(size: tuple[int, int], config: ImageConfig) -> int:
    """Model input width for an image of ``size`` = (width, height) pixels, before any
    padding to :func:`min_width`."""
    if not config.keep_aspect:
        return config.width
    w, h = size
    scaled = max(1, round(w * config.height / max(h, 1)))
    rounded = -(-scaled // WIDTH_MULTIPLE) * WIDTH_MULTIPLE
    return min(rounded, config.width // WIDTH_MULTIPLE * WIDTH_MULTIPLE)


def min_width(config: ImageConfig) -> int:
    """Narrowest model input: ``config.width``, or with ``keep_aspect`` twice the height
    (capped at ``width``); a narrower image (one letter) is padded to it, never
    stretched, so the windowed aggregators always see more than one window along the
    width and an ONNX export with a dynamic width covers every input."""
    if not config.keep_aspect:
        return config.width
    return min(2 * config.height, config.width) // WIDTH_MULTIPLE * WIDTH_MULTIPLE


def pad_to_width(images: list[torch.Tensor], width: int | None = None) -> torch.Tensor:
    """Stack ``(C, H, W_i)`` tensors into ``(B, C, H, W)``, each padded on the right to
    ``width`` (default: the widest) with its own per-channel median, the background of
    a text image (ink covers less than half of it), so padding reads as paper.

    A padded line reads almost, not exactly, as it does alone: the aggregators'
    windows and a BiLSTM see the padding next to the last characters, and CTC reads
    the padded frames (as blanks, in a trained model)."""
    width = width or max(x.shape[-1] for x in images)
    out = []
    for x in images:
        missing = width - x.shape[-1]
        if missing:
            background = x.flatten(1).median(dim=1).values  # (C,)
            fill = background[:, None, None].expand(*x.shape[:-1], missing)
            x = torch.cat([x, fill], -1)
        out.append(x)
    return torch.stack(out)


def to_tensor(image: Image.Image, config: ImageConfig) -> torch.Tensor:
    """Resize (ignoring aspect, as in the STR benchmarks, unless ``config.keep_aspect``)
    and scale to [-1, 1].

    Returns:
        ``(C, H, W)`` float32 tensor; ``W`` is ``config.width``, or with ``keep_aspect``
        :func:`input_width` of the image, at least :func:`min_width`.
    """
    mode = "L" if config.channels == 1 else "RGB"
    if image.mode != mode:
        image = image.convert(mode)
    size = (input_width(image.size, config), config.height)
    if image.size != size:
        image = image.resize(size, Image.Resampling.BICUBIC)
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1)  # (C, H, W) uint8
    tensor = tensor.float().div_(127.5).sub_(1.0)
    if tensor.shape[-1] < min_width(config):
        return pad_to_width([tensor], min_width(config))[0]
    return tensor


class ToTensor:
    """Picklable callable wrapper around :func:`to_tensor` for datasets."""

    def __init__(self, config: ImageConfig):
        self.config = config

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """Convert ``image`` with :func:`to_tensor` -> (C, H, W) float in [-1, 1]."""
        return to_tensor(image, self.config)  # (C, H, W)
