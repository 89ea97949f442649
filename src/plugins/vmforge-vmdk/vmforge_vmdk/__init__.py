"""VMware's VMDK disk format as a vmforge block plugin."""

# The driver is imported when first asked for (``vmforge_vmdk.Vmdk``, as the entry
# point does), not with the package: probing imports ``vmforge_vmdk.probe`` alone.
from __future__ import annotations

from vmforge.lazy import lazy_attributes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from vmforge_vmdk.driver import Vmdk

__all__ = ["Vmdk"]

__getattr__ = lazy_attributes(__name__, {
    "Vmdk": "vmforge_vmdk.driver",
})
