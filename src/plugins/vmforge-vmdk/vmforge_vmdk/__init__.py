"""VMware's VMDK disk format as a vmforge block plugin."""

from vmforge_vmdk.driver import Vmdk

__all__ = ["Vmdk"]
