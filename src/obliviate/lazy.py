"""A module proxy that imports on first use, so importing a module that names torch stays cheap.

The method modules read their hyper-parameters (dataclass fields) at config-load time, long before
any tensor exists; with ``torch = LazyModule("torch")`` they import in milliseconds and torch is
imported the first time a loss actually touches ``torch.<anything>``.
"""

from __future__ import annotations

import importlib
import types
from typing import Any


class LazyModule(types.ModuleType):
    """Stands in for ``import <name>``; the real module is imported on first attribute access."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__dict__["_lazy_module"] = None

    def _load(self) -> types.ModuleType:
        mod = self.__dict__["_lazy_module"]
        if mod is None:
            mod = importlib.import_module(self.__name__)
            self.__dict__["_lazy_module"] = mod
        return mod

    def __getattr__(self, attr: str) -> Any:  # only called for names not found normally
        return getattr(self._load(), attr)

    def __dir__(self) -> list[str]:
        return dir(self._load())

    def __repr__(self) -> str:
        state = "loaded" if self.__dict__["_lazy_module"] is not None else "not loaded"
        return f"<lazy module {self.__name__!r} ({state})>"
