"""vmforge-qcow2: QEMU's qcow2 disk format as a vmforge block driver."""

# The driver is imported when first asked for (``vmforge_qcow2.Qcow2``, as the entry
# point does), not with the package: probing imports ``vmforge_qcow2.probe`` alone.
from __future__ import annotations

from vmforge.lazy import lazy_attributes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from vmforge_qcow2.driver import Qcow2
    from vmforge_qcow2.snapshot import Snapshot

__all__ = ["Qcow2", "Snapshot"]

__getattr__ = lazy_attributes(__name__, {
    "Qcow2": "vmforge_qcow2.driver",
    "Snapshot": "vmforge_qcow2.snapshot",
})
