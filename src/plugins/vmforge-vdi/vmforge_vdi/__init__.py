"""vmforge-vdi: VirtualBox's VDI disk format (version 1.1, as qemu-img writes it)."""

from vmforge_vdi.driver import Vdi

__all__ = ["Vdi"]
