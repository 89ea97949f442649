"""vmforge-dmg: Apple's UDIF disk images (``.dmg``), QEMU's ``dmg`` format."""

# The driver is imported when first asked for (``vmforge_dmg.Dmg``, as the entry
# point does), not with the package: probing imports ``vmforge_dmg.probe`` alone.
from __future__ import annotations

from vmforge.lazy import lazy_attributes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from vmforge_dmg.driver import Dmg

__all__ = ["Dmg"]

__getattr__ = lazy_attributes(__name__, {
    "Dmg": "vmforge_dmg.driver",
})
