"""vmforge-qcow2: QEMU's qcow2 disk format as a vmforge block driver."""

from .driver import Qcow2
from .snapshot import Snapshot

__all__ = ["Qcow2", "Snapshot"]
