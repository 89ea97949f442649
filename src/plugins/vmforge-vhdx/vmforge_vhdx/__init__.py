"""vmforge-vhdx: Microsoft's VHDX disk format (version 1, as qemu-img reads and writes it)."""

from vmforge_vhdx.driver import Vhdx

__all__ = ["Vhdx"]
