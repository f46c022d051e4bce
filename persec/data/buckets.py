"""Width buckets for text lines: which training samples are wide, known before any
image is decoded, so that a batch holds lines of similar width and padding stays small.

A line model keeps each image's aspect ratio (:attr:`persec.image.ImageConfig.keep_aspect`),
so one batch mixes a 3-word line with a 12-word one unless the sampler groups them.
:func:`width_keys` estimates every sample's model input width once, cheaply:

- a file or LMDB sample (anything with ``read_bytes``): the image header's size, scaled
  to the model height (:func:`persec.image.input_width`); no pixel is decoded;
- a rendered sample: its text, replayed from the renderer's seed without drawing,
  times a typical glyph width (:data:`GLYPH_WIDTH` of the height);
- ``Subset`` and ``ConcatDataset`` of those: their parts' keys.

:class:`~persec.data.sampler.ResumableSampler` sorts pools of batches by these keys
(``keys=``, :func:`~persec.data.sampler.bucketed_order`), so the order stays a pure
function of ``(seed, epoch)`` and a resumed run reads exactly what the uninterrupted one
would have.
"""

from __future__ import annotations

import io

import torch
from PIL import Image
from torch.utils.data import ConcatDataset, Dataset, Subset

from persec.data.render.dataset import SynthDataset
from persec.errors import PersecError
from persec.image import ACCEPTED_FORMATS, ImageConfig, input_width, min_width

GLYPH_WIDTH = 0.5
"""Typical advance of one rendered character, as a fraction of the line height."""


def width_keys(dataset: Dataset, image: ImageConfig) -> torch.Tensor:
    """Estimated model input width of every sample of ``dataset``.

    Returns:
        ``(len(dataset),)`` int64 tensor, in pixels at ``image.height``, at least
        :func:`~persec.image.min_width`. A sample whose header cannot be read gets the
        widest key (it is skipped when read anyway).

    Raises:
        PersecError: a dataset kind whose widths cannot be known without decoding.
    """
    keys = _keys(dataset, image, {})
    return keys.clamp(min=min_width(image), max=image.width)


def _keys(dataset: Dataset, image: ImageConfig, seen: dict[int, torch.Tensor]) -> torch.Tensor:
    """:func:`width_keys` before clamping; ``seen`` memoises each dataset object (a
    set repeated by ``data.train_repeat`` is sized once)."""
    if id(dataset) in seen:
        return seen[id(dataset)]
    if isinstance(dataset, Subset):
        indices = torch.as_tensor(dataset.indices, dtype=torch.long)
        keys = _keys(dataset.dataset, image, seen)[indices]
    elif isinstance(dataset, ConcatDataset):
        parts = [_keys(d, image, seen) for d in dataset.datasets]
        keys = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
    elif isinstance(dataset, SynthDataset):
        renderer = dataset.renderer
        if renderer.config.width is not None:  # every render has one size
            size = (renderer.config.width, renderer.config.height)
            keys = torch.full((len(dataset),), input_width(size, image), dtype=torch.long)
        else:
            per_char = GLYPH_WIDTH * image.height
            widths = [round(len(renderer.text(i)) * per_char) for i in range(len(dataset))]
            keys = torch.tensor(widths, dtype=torch.long)
    elif hasattr(dataset, "read_bytes"):
        widths = [_header_width(dataset.read_bytes(i), image) for i in range(len(dataset))]
        keys = torch.tensor(widths, dtype=torch.long)
    else:
        raise PersecError(
            f"data.bucket_by_width cannot size the samples of a {type(dataset).__name__} "
            "without decoding them; turn it off for this data"
        )
    seen[id(dataset)] = keys
    return keys


def _header_width(data: bytes | None, image: ImageConfig) -> int:
    """Model input width from an encoded image's header (size only, no pixels)."""
    if not data:
        return image.width
    try:
        with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as im:
            return input_width(im.size, image)
    except Exception:  # an unreadable sample is counted as skipped when it is read
        return image.width
