"""vmforge-luks: LUKS encrypted disk images (QEMU's ``luks`` format): LUKS1 read, written
and created; LUKS2 opened (read and written)."""

# The driver is imported when first asked for (``vmforge_luks.Luks``, as the entry
# point does), not with the package: probing imports ``vmforge_luks.probe`` alone.
from __future__ import annotations

from vmforge.lazy import lazy_attributes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from vmforge_luks.driver import Luks

__all__ = ["Luks"]

__getattr__ = lazy_attributes(__name__, {
    "Luks": "vmforge_luks.driver",
})
