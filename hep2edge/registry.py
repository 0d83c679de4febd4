"""A name -> implementation registry whose lookup error lists the valid names."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from hep2edge.errors import RegistryError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to implementations (classes or factories) for one kind of thing."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register `obj` under `name` (lower-case)."""

        def wrap(obj: T) -> T:
            key = name.lower()
            if key in self._items:
                raise ValueError(f"{self.kind} '{key}' registered twice")
            self._items[key] = obj
            return obj

        return wrap

    def add(self, name: str, obj: T) -> None:
        self.register(name)(obj)

    def get(self, name: str) -> T:
        key = name.strip().lower()
        if key not in self._items:
            valid = ", ".join(sorted(self._items))
            raise RegistryError(f"unknown {self.kind} '{name}'; valid names: {valid}")
        return self._items[key]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.strip().lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
