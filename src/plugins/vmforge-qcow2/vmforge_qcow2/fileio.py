"""The image file: bounded reads that fail with the table's name, tracked end."""

from __future__ import annotations

import os
from collections.abc import Sequence

from vmforge.block import BlockError, CorruptImageError

IOV_MAX = 1024


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
        n = memoryview(data).nbytes
        done = os.pwrite(self.fd, data, offset)
        while done < n:
            done += os.pwrite(self.fd, memoryview(data)[done:], offset + done)
        if offset + n > self.end:
            self.end = offset + n

    def pwritev(self, offset: int, bufs: Sequence[memoryview]) -> None:
        """Write ``bufs`` contiguously at ``offset`` (loops over IOV_MAX and short writes)."""
        bufs = list(bufs)
        pos = offset
        while bufs:
            chunk = bufs[:IOV_MAX]
            want = sum(b.nbytes for b in chunk)
            n = os.pwritev(self.fd, chunk, pos)
            pos += n
            if n == want:
                bufs = bufs[IOV_MAX:]
                continue
            # short write: drop what went out and retry the rest
            rest: list[memoryview] = []
            skip = n
            for b in chunk:
                if skip >= b.nbytes:
                    skip -= b.nbytes
                    continue
                rest.append(b[skip:])
                skip = 0
            bufs = rest + bufs[IOV_MAX:]
        if pos > self.end:
            self.end = pos

    def preadv(self, offset: int, bufs: Sequence[memoryview]) -> None:
        """Fill ``bufs`` from ``offset``; bytes past the end of the file read as zeros."""
        bufs = list(bufs)
        pos = offset
        while bufs:
            chunk = bufs[:IOV_MAX]
            want = sum(b.nbytes for b in chunk)
            n = os.preadv(self.fd, chunk, pos)
            pos += n
            if n == want:
                bufs = bufs[IOV_MAX:]
                continue
            rest: list[memoryview] = []
            skip = n
            for b in chunk:
                if skip >= b.nbytes:
                    skip -= b.nbytes
                    continue
                rest.append(b[skip:])
                skip = 0
            bufs = rest + bufs[IOV_MAX:]
            if n == 0:  # end of file: the rest reads as zeros
                for b in bufs:
                    fill_zero(b)
                return

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)
        self.end = size

    def sync(self) -> None:
        if not self.no_flush:
            os.fdatasync(self.fd)


_ZEROS = memoryview(bytes(1 << 20))


def fill_zero(mv: memoryview) -> None:
    """Zero a writable byte memoryview without allocating per call."""
    n = mv.nbytes
    pos = 0
    while pos < n:
        k = min(n - pos, len(_ZEROS))
        mv[pos:pos + k] = _ZEROS[:k]
        pos += k
