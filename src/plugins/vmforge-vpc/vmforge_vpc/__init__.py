"""vmforge-vpc: the VHD format of Virtual PC and Hyper-V (QEMU's ``vpc``)."""

# The driver is imported when first asked for (``vmforge_vpc.Vpc``, as the entry
# point does), not with the package: probing imports ``vmforge_vpc.probe`` alone.
from __future__ import annotations

from vmforge.lazy import lazy_attributes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from vmforge_vpc.driver import Vpc

__all__ = ["Vpc"]

__getattr__ = lazy_attributes(__name__, {
    "Vpc": "vmforge_vpc.driver",
})
