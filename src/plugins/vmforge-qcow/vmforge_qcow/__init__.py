"""vmforge-qcow: QEMU's original copy-on-write format, qcow version 1."""

# The driver is imported when first asked for (``vmforge_qcow.Qcow``, as the entry
# point does), not with the package: probing imports ``vmforge_qcow.probe`` alone.
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vmforge_qcow.driver import Qcow

__all__ = ["Qcow"]

_LAZY = {
    "Qcow": "vmforge_qcow.driver",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
