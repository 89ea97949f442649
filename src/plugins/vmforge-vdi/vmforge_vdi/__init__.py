"""vmforge-vdi: VirtualBox's VDI disk format (version 1.1, as qemu-img writes it)."""

# The driver is imported when first asked for (``vmforge_vdi.Vdi``, as the entry
# point does), not with the package: probing imports ``vmforge_vdi.probe`` alone.
from __future__ import annotations

from vmforge.lazy import lazy_attributes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from vmforge_vdi.driver import Vdi

__all__ = ["Vdi"]

__getattr__ = lazy_attributes(__name__, {
    "Vdi": "vmforge_vdi.driver",
})
