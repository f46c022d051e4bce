"""A registry: the named implementations of one extension axis (encoders, decoders,
objectives, dataset layouts), filled by the modules that implement them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Names → implementations, in registration order.

    Args:
        kind: what is registered, for messages (``"decoder"``, ``"dataset layout"``).
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        """Add ``item`` as ``name``. Raises ValueError when the name is taken."""
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        """The item called ``name``. Raises ValueError naming the known ones."""
        if name not in self._items:
            raise ValueError(f"unknown {self.kind} {name!r}: use one of {', '.join(self._items)}")
        return self._items[name]

    def values(self) -> list[T]:
        """The registered items, in registration order."""
        return list(self._items.values())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __getitem__(self, name: str) -> T:
        return self._items[name]
