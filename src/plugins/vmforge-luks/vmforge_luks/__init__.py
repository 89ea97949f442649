"""vmforge-luks: LUKS1 encrypted disk images (QEMU's ``luks`` format)."""

from vmforge_luks.driver import Luks

__all__ = ["Luks"]
