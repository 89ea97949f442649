"""The Parallels expandable disk format as a vmforge block plugin."""

# The driver is imported when first asked for (``vmforge_parallels.Parallels``, as the entry
# point does), not with the package: probing imports ``vmforge_parallels.probe`` alone.
from __future__ import annotations

from vmforge.lazy import lazy_attributes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from vmforge_parallels.driver import Parallels

__all__ = ["Parallels"]

__getattr__ = lazy_attributes(__name__, {
    "Parallels": "vmforge_parallels.driver",
})
