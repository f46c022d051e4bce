"""What a PerSec-pretrained encoder's quantizers make of an image, as two pictures for
the page: the stroke-level code map over the image and the semantic code sequence along
the word (the drawings of ``persec inspect-codes``, one image at a time).

A recognizer carries no codebooks; ``persec serve --codes DIR`` names the pretraining
output (``persec pretrain``'s ``output_dir``) whose encoder and quantizers draw them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from persec.errors import PersecError
from persec.image import to_tensor
from persec.objectives.inspect import code_colors, compute_codes
from persec.objectives.persec import PersecObjective
from persec.serve.pictures import rgb_picture
from persec.training.pretrain import load_pretrained

STRIP_HEIGHT = 12  # pixels of the semantic code strip


class CodePictures:
    """Draws the code pictures of images with a pretraining output's encoder.

    Raises:
        PersecError: not a pretraining output, or one without codebooks (SeqCLR).
    """

    def __init__(self, directory: str | Path):
        encoder, objective, config = load_pretrained(directory)
        if not isinstance(objective, PersecObjective):
            raise PersecError(f"{directory} was pretrained with {config.objective}: no codebooks")
        self.encoder, self.objective, self.image = encoder.eval(), objective.eval(), config.image

    @torch.inference_mode()
    def draw(self, image: Image.Image) -> dict[str, str]:
        """``{"stroke_codes": ..., "semantic_codes": ...}`` PNG data URLs (the levels
        the objective has): each code id one colour, codebook group 0."""
        x = to_tensor(image, self.image)[None]  # (1, C, H, W) in [-1, 1]
        codes = compute_codes(self.encoder, self.objective, x)
        height, width = x.shape[2:]
        out = {}
        if "stroke" in codes:
            c = codes["stroke"]
            grid = code_colors(c.indices[0, ..., 0].numpy(), c.entries)  # (h, w, 3)
            cells = np.kron(grid, np.ones((height // grid.shape[0], width // grid.shape[1], 1)))
            grey = ((x[0].mean(0).numpy() + 1) / 2)[..., None]  # (H, W, 1)
            out["stroke_codes"] = rgb_picture(0.5 * cells + 0.5 * grey)
        if "semantic" in codes:
            c = codes["semantic"]
            strip = code_colors(c.indices[0, :, 0].numpy(), c.entries)[None]  # (1, T, 3)
            out["semantic_codes"] = rgb_picture(
                np.kron(strip, np.ones((STRIP_HEIGHT, width // strip.shape[1], 1)))
            )
        return out
