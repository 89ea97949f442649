"""vmforge-dmg: Apple's UDIF disk images (``.dmg``), QEMU's ``dmg`` format."""

# The driver is imported when first asked for (``vmforge_dmg.Dmg``, as the entry
# point does), not with the package: probing imports ``vmforge_dmg.probe`` alone.
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vmforge_dmg.driver import Dmg

__all__ = ["Dmg"]

_LAZY = {
    "Dmg": "vmforge_dmg.driver",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
