"""vmforge-cloop: Linux's compressed loop images (cloop 2.0), read-only (QEMU's ``cloop``)."""

# The driver is imported when first asked for (``vmforge_cloop.Cloop``, as the entry
# point does), not with the package: probing imports ``vmforge_cloop.probe`` alone.
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vmforge_cloop.driver import Cloop

__all__ = ["Cloop"]

_LAZY = {
    "Cloop": "vmforge_cloop.driver",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
