"""The raw disk image format: the file is the disk."""

# The driver is imported when first asked for (``vmforge_raw.Raw``, as the entry
# point does), not with the package: probing imports ``vmforge_raw.probe`` alone.
from __future__ import annotations

from vmforge.lazy import lazy_attributes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from vmforge_raw.driver import Raw

__all__ = ["Raw"]

__getattr__ = lazy_attributes(__name__, {
    "Raw": "vmforge_raw.driver",
})
