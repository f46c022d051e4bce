"""The registry of dataset layouts on disk (one entry per reader).

A reader module registers its layout when imported; :mod:`persec.data.layouts` imports
every reader module (one line each) and answers the questions by asking the registered
layouts in order: which reader fits a path, whether a folder is itself a dataset, and
what the accepted layouts are (for error messages).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from persec.registry import Registry


@dataclass(frozen=True)
class Layout:
    """One way datasets are laid out on disk.

    Attributes:
        name: short name (``folder``, ``lmdb``, ``images``), as ``detect_layout`` says.
        description: one phrase for the list of accepted layouts.
        holds: ``path -> bool``: the directory is (or holds, for a tree) this layout.
        is_root: ``path -> bool``: the directory itself is one dataset of this layout
            (a folder of datasets is expanded into the children for which it holds).
        open: ``(path, charset, unlabelled, transform, **kwargs) -> Dataset``.
        order: detection asks layouts in this order, lowest first (a folder with both a
            gt.txt and an LMDB under it is a gt.txt folder).
        labelled: whether it can carry labels (an image folder cannot: unlabelled only).
        parts: what a split list names for ``DIR:PART`` (the reader's ``only``), e.g.
            ``"image paths"``; empty when the layout has no parts.
    """

    name: str
    description: str
    holds: Callable[[Path], bool]
    is_root: Callable[[Path], bool]
    open: Callable[..., Dataset]
    order: int
    labelled: bool = True
    parts: str = ""


LAYOUTS: Registry[Layout] = Registry("dataset layout")


def register_layout(layout: Layout) -> Layout:
    """Add a layout (detection asks them by ``order``)."""
    return LAYOUTS.register(layout.name, layout)
