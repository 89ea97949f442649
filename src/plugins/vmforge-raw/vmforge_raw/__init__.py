"""The raw disk image format: the file is the disk."""

from vmforge_raw.driver import Raw

__all__ = ["Raw"]
