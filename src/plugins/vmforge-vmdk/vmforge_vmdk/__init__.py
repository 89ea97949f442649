"""VMware's VMDK disk format as a vmforge block plugin."""

# The driver is imported when first asked for (``vmforge_vmdk.Vmdk``, as the entry
# point does), not with the package: probing imports ``vmforge_vmdk.probe`` alone.
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vmforge_vmdk.driver import Vmdk

__all__ = ["Vmdk"]

_LAZY = {
    "Vmdk": "vmforge_vmdk.driver",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
