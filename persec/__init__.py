"""persec: self-supervised pretraining (PerSec) for scene-text recognition."""

__version__ = "0.1.0"
