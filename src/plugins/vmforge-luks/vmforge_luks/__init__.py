"""vmforge-luks: LUKS encrypted disk images (QEMU's ``luks`` format): LUKS1 read, written
and created; LUKS2 opened (read and written)."""

# The driver is imported when first asked for (``vmforge_luks.Luks``, as the entry
# point does), not with the package: probing imports ``vmforge_luks.probe`` alone.
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vmforge_luks.driver import Luks

__all__ = ["Luks"]

_LAZY = {
    "Luks": "vmforge_luks.driver",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
