"""vmforge-bochs: the Bochs emulator's growing disk images, read-only (QEMU's ``bochs``)."""

from vmforge_bochs.driver import Bochs

__all__ = ["Bochs"]
