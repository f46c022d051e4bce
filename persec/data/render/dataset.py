"""Rendered words as a map-style dataset: sample i is the same image in every process."""

from __future__ import annotations

from torch.utils.data import Dataset

from persec.data.render.config import SynthConfig
from persec.data.render.fonts import FontFace
from persec.data.render.synth import WordRenderer
from persec.errors import PersecError


class SynthDataset(Dataset):
    """A map-style dataset of ``n`` rendered words: item ``i`` is ``render(i)``.

    Cheap to pickle (fonts are opened lazily in each worker), so it works with
    ``DataLoader(num_workers=...)`` and gives the same samples in every process.

    Args:
        n: number of samples.
        config: renderer settings.
        split: ``"train"`` or ``"test"`` font split.
        seed: base seed.
        transform: optional callable applied to the PIL image.
        fonts: validated faces (default :func:`available_fonts`).
    """

    def __init__(
        self,
        n: int,
        config: SynthConfig | None = None,
        split: str = "train",
        seed: int = 0,
        transform=None,
        fonts: list[FontFace] | None = None,
    ):
        if n < 0:
            raise PersecError(f"dataset size must be >= 0, got {n}")
        self.n = n
        self.renderer = WordRenderer(config, split, seed, fonts)
        self.transform = transform

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} samples")
        image, label = self.renderer.render(index)
        return (self.transform(image) if self.transform else image), label
