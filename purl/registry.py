"""A tiny name -> factory registry shared by models, datasets, allocators, rewards and agents.

Adding a component is one decorated class or function plus nothing else::

    MODELS = Registry("model")

    @MODELS.register("lenet5")
    def lenet5(...): ...

Names of the form ``package.module:attribute`` resolve to user code without
registration, so researchers can plug in their own components from config.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from purl.errors import RegistryError

T = TypeVar("T")


def import_object(spec: str) -> object:
    """Import ``package.module:attribute`` (attribute may be dotted); raise RegistryError if impossible."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise RegistryError(f"'{spec}' is not of the form 'package.module:name'")
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise RegistryError(f"cannot import module '{module_name}' for '{spec}': {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise RegistryError(f"module '{module_name}' has no attribute '{attr}' (from '{spec}')") from None
    return obj


class Registry(Generic[T]):
    """Maps lowercase names to objects; unknown names raise a RegistryError listing what is allowed."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, help: str | None = None) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name`` (case-insensitive, must be unique)."""
        key = name.lower()

        def decorator(obj: T) -> T:
            if key in self._items:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._items[key] = obj
            doc = help if help is not None else (getattr(obj, "__doc__", None) or "")
            self._help[key] = doc.strip().splitlines()[0] if doc.strip() else ""
            return obj

        return decorator

    def add(self, name: str, obj: T, help: str | None = None) -> T:
        """Register ``obj`` without decorator syntax."""
        return self.register(name, help)(obj)

    def get(self, name: str) -> T:
        """Return the object for ``name``, or import it when ``name`` is ``package.module:attr``."""
        if ":" in name:
            return import_object(name)  # type: ignore[return-value]
        key = name.lower()
        if key not in self._items:
            allowed = ", ".join(sorted(self._items)) or "(none registered)"
            raise RegistryError(
                f"unknown {self.kind} '{name}'; allowed: {allowed}, or 'package.module:name' for your own"
            )
        return self._items[key]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def describe(self) -> dict[str, str]:
        """Name -> first docstring line, for ``purl list``."""
        return {k: self._help[k] for k in sorted(self._items)}

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
