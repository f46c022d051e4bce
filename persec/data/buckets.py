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
(``keys=``, :func:`~persec.data.sampler.bucketed_order`), so the order stays a pure function of ``(seed, epoch)`` and a resumed
run reads exactly what the uninterrupted one would have.
"""

from __future__ import annotations

import io
import logging

import torch
from PIL import Image
from torch.utils.data import ConcatDataset, Dataset, Subset

from persec.data.render.dataset import SynthDataset
from persec.errors import PersecError
from persec.image import ImageConfig, input_width

logger = logging.getLogger(__name__)

GLYPH_WIDTH = 0.5
"""Typical advance of one rendered character, as a fraction of the line height."""


def width_keys(dataset: Dataset, image: ImageConfig) -> torch.Tensor:
    """Estimated model input width of every sample of ``dataset``.

    Returns:
        ``(len(dataset),)`` int64 tensor, in pixels at ``image.height``. A sample whose
        header cannot be read gets the widest key (it is skipped when read anyway).

    Raises:
        PersecError: a dataset kind whose widths cannot be known without decoding.
    """
    if isinstance(dataset, Subset):
        return width_keys(dataset.dataset, image)[torch.as_tensor(dataset.indices)]
    if isinstance(dataset, ConcatDataset):
        return torch.cat([width_keys(d, image) for d in dataset.datasets])
    if isinstance(dataset, SynthDataset):
        renderer = dataset.renderer
        lengths = [len(renderer.text(i)) for i in range(len(dataset))]
        per_char = GLYPH_WIDTH * image.height
        return torch.tensor([min(image.width, round(n * per_char)) for n in lengths])
    if hasattr(dataset, "read_bytes"):
        return torch.tensor(
            [_header_width(dataset.read_bytes(i), image) for i in range(len(dataset))]
        )
    raise PersecError(
        f"data.bucket_by_width cannot size the samples of a {type(dataset).__name__} "
        "without decoding them; turn it off for this data"
    )


def _header_width(data: bytes | None, image: ImageConfig) -> int:
    """Model input width from an encoded image's header (size only, no pixels)."""
    if not data:
        return image.width
    try:
        with Image.open(io.BytesIO(data)) as im:
            return input_width(im.size, image)
    except Exception:  # an unreadable sample is counted as skipped when it is read
        return image.width
