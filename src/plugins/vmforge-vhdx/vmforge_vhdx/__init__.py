"""vmforge-vhdx: Microsoft's VHDX disk format (version 1, as qemu-img reads and writes it)."""

# The driver is imported when first asked for (``vmforge_vhdx.Vhdx``, as the entry
# point does), not with the package: probing imports ``vmforge_vhdx.probe`` alone.
from __future__ import annotations

from vmforge.lazy import lazy_attributes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from vmforge_vhdx.driver import Vhdx

__all__ = ["Vhdx"]

__getattr__ = lazy_attributes(__name__, {
    "Vhdx": "vmforge_vhdx.driver",
})
