"""vmforge-qcow2: QEMU's qcow2 disk format as a vmforge block driver."""

# The driver is imported when first asked for (``vmforge_qcow2.Qcow2``, as the entry
# point does), not with the package: probing imports ``vmforge_qcow2.probe`` alone.
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vmforge_qcow2.driver import Qcow2
    from vmforge_qcow2.snapshot import Snapshot

__all__ = ["Qcow2", "Snapshot"]

_LAZY = {
    "Qcow2": "vmforge_qcow2.driver",
    "Snapshot": "vmforge_qcow2.snapshot",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
