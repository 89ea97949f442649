"""The Parallels expandable disk format as a vmforge block plugin."""

# The driver is imported when first asked for (``vmforge_parallels.Parallels``, as the entry
# point does), not with the package: probing imports ``vmforge_parallels.probe`` alone.
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vmforge_parallels.driver import Parallels

__all__ = ["Parallels"]

_LAZY = {
    "Parallels": "vmforge_parallels.driver",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
