"""The image file: bounded reads that fail with the table's name, tracked end."""

from __future__ import annotations

import os

from vmforge.block import BlockError, CorruptImageError
from vmforge.block.fileio import fill_zero, preadv_full, pwritev_full

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["ImageFile", "fill_zero"]


class ImageFile:
    """An open host file with the qcow2 driver's error conventions."""

    def __init__(self, path: str, readonly: bool, no_flush: bool = False) -> None:
        self.filename = path
        #: skip fdatasync (QEMU's cache.no-flush / qemu-img convert's default
        #: cache=unsafe): write order is kept, durability is left to the OS
        self.no_flush = no_flush
        flags = os.O_RDONLY if readonly else os.O_RDWR
        try:
            self.fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
        except OSError as e:
            raise BlockError(f"cannot open: {e.strerror}", path) from e
        self.end = os.lseek(self.fd, 0, os.SEEK_END)   # also right for block devices

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def read_table(self, offset: int, nbytes: int, table: str) -> bytes:
        """Read metadata; a short read means the table lies outside the file."""
        if offset < 0 or offset + nbytes > self.end:
            raise CorruptImageError(f"{table} ({nbytes} bytes) lies outside the file "
                                    f"({self.end} bytes)", self.filename, offset, table)
        data = os.pread(self.fd, nbytes, offset)
        if len(data) != nbytes:
            raise CorruptImageError(f"short read of {table}: {len(data)} of {nbytes} bytes",
                                    self.filename, offset, table)
        return data

    def pwrite(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        pos = pwritev_full(self.fd, offset, [memoryview(data)])
        if pos > self.end:
            self.end = pos

    def pwritev(self, offset: int, bufs: Sequence[memoryview]) -> None:
        """Write ``bufs`` contiguously at ``offset`` (loops over IOV_MAX and short writes)."""
        pos = pwritev_full(self.fd, offset, bufs)
        if pos > self.end:
            self.end = pos

    def preadv(self, offset: int, bufs: Sequence[memoryview]) -> None:
        """Fill ``bufs`` from ``offset``; bytes past the end of the file read as zeros."""
        preadv_full(self.fd, offset, bufs)

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)
        self.end = size

    def sync(self) -> None:
        if not self.no_flush:
            os.fdatasync(self.fd)
