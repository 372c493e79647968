"""Lazy re-exports for package ``__init__`` modules: names load from their submodules on first use, so
importing a light submodule (a name table, a config) never imports torch through its package."""
from __future__ import annotations

import importlib
from typing import Any, Callable

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for package ``package`` re-exporting ``name -> submodule`` from ``exports``::

        __getattr__, __dir__ = lazy_exports(__name__, {"TrainConfig": "config", "train": "loop"})
    """
    def getattr_(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def dir_() -> list[str]:
        return sorted(set(exports) | set(vars(importlib.import_module(package))))

    return getattr_, dir_
