"""A tiny named registry: one per axis of variation (datasets, backbones, strategies)."""
from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name that is not in a registry; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would otherwise quote the whole message
        return str(self.args[0])


class Registry(Generic[T]):
    """Maps names to entries; refuses duplicates; unknown names fail with the valid list."""

    def __init__(self, kind: str, plural: str = "", on_remove: Callable[[str], None] | None = None,
                 maker: Callable[[str], T | None] | None = None):
        self.kind, self.plural = kind, plural or kind + "s"
        self._entries: dict[str, T] = {}
        self._on_remove = on_remove  # e.g. the strategies' knobs go with their strategy
        # Entries made on first use for names nobody registered (backbone "timm:convnext_tiny"): the maker returns
        # None for a name it does not make, and raises UnknownNameError saying why for one it cannot.
        self._maker = maker

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of `add`."""
        return lambda entry: self.add(name, entry)

    def get(self, name: str) -> T:
        self._make(name)
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def _make(self, name: str) -> None:
        if self._maker is not None and name not in self._entries:
            entry = self._maker(str(name))
            if entry is not None:
                self._entries[name] = entry

    def unknown_message(self, name: str) -> str:
        try:
            self._make(name)
        except UnknownNameError as err:
            return str(err)
        close = difflib.get_close_matches(str(name), self._entries, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return (f"unknown {self.kind} {name!r}.{hint} Valid {self.plural}: "
                f"{', '.join(self._entries)}")

    def remove(self, name: str) -> T:
        """Unregister `name` (e.g. before re-running a notebook cell that registers it)."""
        entry = self._entries.pop(name) if name in self._entries else self.get(name)
        if self._on_remove:
            self._on_remove(name)
        return entry

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        try:
            self._make(name)
        except UnknownNameError:
            return False
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def items(self):
        return self._entries.items()

    def __repr__(self) -> str:
        return f"Registry({self.kind}: {', '.join(self._entries)})"
