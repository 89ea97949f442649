"""vmforge-dmg: Apple's UDIF disk images (``.dmg``), QEMU's ``dmg`` format."""

from vmforge_dmg.driver import Dmg

__all__ = ["Dmg"]
