"""vmforge-qcow: QEMU's original copy-on-write format, qcow version 1."""

# The driver is imported when first asked for (``vmforge_qcow.Qcow``, as the entry
# point does), not with the package: probing imports ``vmforge_qcow.probe`` alone.
from __future__ import annotations

from vmforge.lazy import lazy_attributes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from vmforge_qcow.driver import Qcow

__all__ = ["Qcow"]

__getattr__ = lazy_attributes(__name__, {
    "Qcow": "vmforge_qcow.driver",
})
