"""QEMU's QED disk format as a vmforge block plugin."""

# The driver is imported when first asked for (``vmforge_qed.Qed``, as the entry
# point does), not with the package: probing imports ``vmforge_qed.probe`` alone.
from __future__ import annotations

from vmforge.lazy import lazy_attributes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from vmforge_qed.driver import Qed

__all__ = ["Qed"]

__getattr__ = lazy_attributes(__name__, {
    "Qed": "vmforge_qed.driver",
})
