"""vmforge-vhdx: Microsoft's VHDX disk format (version 1, as qemu-img reads and writes it)."""

# The driver is imported when first asked for (``vmforge_vhdx.Vhdx``, as the entry
# point does), not with the package: probing imports ``vmforge_vhdx.probe`` alone.
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vmforge_vhdx.driver import Vhdx

__all__ = ["Vhdx"]

_LAZY = {
    "Vhdx": "vmforge_vhdx.driver",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
