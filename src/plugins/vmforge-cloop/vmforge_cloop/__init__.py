"""vmforge-cloop: Linux's compressed loop images (cloop 2.0), read-only (QEMU's ``cloop``)."""

# The driver is imported when first asked for (``vmforge_cloop.Cloop``, as the entry
# point does), not with the package: probing imports ``vmforge_cloop.probe`` alone.
from __future__ import annotations

from vmforge.lazy import lazy_attributes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from vmforge_cloop.driver import Cloop

__all__ = ["Cloop"]

__getattr__ = lazy_attributes(__name__, {
    "Cloop": "vmforge_cloop.driver",
})
