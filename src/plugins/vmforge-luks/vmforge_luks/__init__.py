"""vmforge-luks: LUKS encrypted disk images (QEMU's ``luks`` format): LUKS1 read, written
and created; LUKS2 opened (read and written)."""

from vmforge_luks.driver import Luks

__all__ = ["Luks"]
