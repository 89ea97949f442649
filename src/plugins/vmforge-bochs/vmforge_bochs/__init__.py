"""vmforge-bochs: the Bochs emulator's growing disk images, read-only (QEMU's ``bochs``)."""

# The driver is imported when first asked for (``vmforge_bochs.Bochs``, as the entry
# point does), not with the package: probing imports ``vmforge_bochs.probe`` alone.
from __future__ import annotations

from vmforge.lazy import lazy_attributes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from vmforge_bochs.driver import Bochs

__all__ = ["Bochs"]

__getattr__ = lazy_attributes(__name__, {
    "Bochs": "vmforge_bochs.driver",
})
