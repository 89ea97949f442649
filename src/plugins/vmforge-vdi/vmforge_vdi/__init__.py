"""vmforge-vdi: VirtualBox's VDI disk format (version 1.1, as qemu-img writes it)."""

# The driver is imported when first asked for (``vmforge_vdi.Vdi``, as the entry
# point does), not with the package: probing imports ``vmforge_vdi.probe`` alone.
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vmforge_vdi.driver import Vdi

__all__ = ["Vdi"]

_LAZY = {
    "Vdi": "vmforge_vdi.driver",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
