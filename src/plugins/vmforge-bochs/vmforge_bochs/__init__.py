"""vmforge-bochs: the Bochs emulator's growing disk images, read-only (QEMU's ``bochs``)."""

# The driver is imported when first asked for (``vmforge_bochs.Bochs``, as the entry
# point does), not with the package: probing imports ``vmforge_bochs.probe`` alone.
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vmforge_bochs.driver import Bochs

__all__ = ["Bochs"]

_LAZY = {
    "Bochs": "vmforge_bochs.driver",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
