"""The raw disk image format: the file is the disk."""

# The driver is imported when first asked for (``vmforge_raw.Raw``, as the entry
# point does), not with the package: probing imports ``vmforge_raw.probe`` alone.
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vmforge_raw.driver import Raw

__all__ = ["Raw"]

_LAZY = {
    "Raw": "vmforge_raw.driver",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
