"""vmforge-qcow: QEMU's original copy-on-write format, qcow version 1."""

from vmforge_qcow.driver import Qcow

__all__ = ["Qcow"]
