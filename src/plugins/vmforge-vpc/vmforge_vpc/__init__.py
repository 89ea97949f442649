"""vmforge-vpc: the VHD format of Virtual PC and Hyper-V (QEMU's ``vpc``)."""

# The driver is imported when first asked for (``vmforge_vpc.Vpc``, as the entry
# point does), not with the package: probing imports ``vmforge_vpc.probe`` alone.
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vmforge_vpc.driver import Vpc

__all__ = ["Vpc"]

_LAZY = {
    "Vpc": "vmforge_vpc.driver",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
