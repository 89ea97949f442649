"""The bochs format driver: the Bochs emulator's "growing" images, read-only.

Layout (all integers little-endian), as QEMU's ``block/bochs.c`` reads it::

    0       header (512 bytes): magic "Bochs Virtual HD Image", type
            "Redolog", subtype "Growing" (NUL-terminated strings in 32, 16
            and 16 bytes), version (2.0, or 1.0 with another place for the
            disk size), header size, catalog entries, bitmap size, extent
            size, the disk size
    header  the catalog: one u32 per extent of the disk, the index of its
            stored extent (0xffffffff: not allocated)
    ...     stored extents, each a sector bitmap (whole sectors) then the
            extent's sectors; a sector whose bit is clear reads as zeros

qemu-img cannot create these images and neither does vmforge.
"""

from __future__ import annotations

import os
import struct
import sys
from array import array
from collections.abc import Iterator, Sequence

from vmforge.block.driver import (
    BlockError,
    BlockStatus,
    CorruptImageError,
    Extent,
    ReadOnlyError,
)
from vmforge.block.fileio import fill_zero, preadv_full
from vmforge.block.mapped import FileImage, merge_extents, open_image_file
from vmforge_bochs.probe import HEADER_SIZE, VERSION_1
from vmforge_bochs.probe import probe as _probe

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Self

SECTOR = 512
UNALLOCATED = 0xFFFFFFFF
#: QEMU's bound: enough for the largest image bximage makes (~8 TB)
MAX_CATALOG = 0x100000
MAX_EXTENT = 0x800000
# magic, type, subtype, version, header size, catalog entries, bitmap size, extent size
_HEADER = struct.Struct("<32s16s16sIIIII")

_DATA = BlockStatus.DATA | BlockStatus.ALLOCATED
_ZERO = BlockStatus.ZERO | BlockStatus.ALLOCATED


def _cstr(field: bytes, want: bytes) -> bool:
    """``field`` holds the NUL-terminated string ``want`` (C's strcmp)."""
    return field[:len(want) + 1] == want + b"\0"


class Bochs(FileImage):
    """A Bochs growing image (read-only)."""

    format_name = "bochs"
    granularity = SECTOR

    def __init__(self, filename: str, fd: int, size: int, catalog: array[int],
                 data_offset: int, bitmap_bytes: int, extent_size: int) -> None:
        super().__init__(filename, True, fd)
        self._size = size
        self.catalog = catalog
        self.data_offset = data_offset
        self.bitmap_bytes = bitmap_bytes
        self.extent_size = extent_size
        self.catalog_offset = data_offset - 4 * len(catalog)
        self._file_size = os.fstat(fd).st_size
        self._bitmap_cache: tuple[int, bytes] | None = None

    @classmethod
    def probe(cls, header: bytes, filename: str) -> int:
        return _probe(header, filename)

    @classmethod
    def open(cls, path: str, *, readonly: bool = True, **options: Any) -> Self:
        if not readonly:
            raise ReadOnlyError("the bochs format can only be opened read-only", path)
        with open_image_file(path, True) as fd:
            return cls._open_fd(path, fd)

    @classmethod
    def _open_fd(cls, path: str, fd: int) -> Self:
        raw = os.pread(fd, HEADER_SIZE, 0)
        if cls.probe(raw, path) == 0:
            raise BlockError("image not in Bochs format", path)
        _, _, _, version, header, entries, bitmap, extent = _HEADER.unpack_from(raw)
        disk = struct.unpack_from("<Q", raw, 84 if version == VERSION_1 else 88)[0]
        size = disk // SECTOR * SECTOR
        if entries > MAX_CATALOG:
            raise CorruptImageError(f"catalog of {entries} entries is too large", path, 72,
                                    "header")
        if extent < SECTOR or extent & (extent - 1) or extent > MAX_EXTENT:
            raise CorruptImageError(f"extent size {extent} is not a power of two from 512 "
                                    f"to {MAX_EXTENT}", path, 80, "header")
        if entries < -(-size // extent):
            raise CorruptImageError(f"catalog of {entries} entries is too small for a disk of "
                                    f"{size} bytes", path, 72, "header")
        file_size = os.fstat(fd).st_size
        if header < HEADER_SIZE or header + 4 * entries > file_size:
            raise CorruptImageError(f"catalog of {entries} entries at {header:#x} is outside "
                                    "the file", path, 68, "header")
        catalog = array("I", os.pread(fd, 4 * entries, header))
        if len(catalog) != entries:
            raise CorruptImageError("catalog truncated", path, header, "catalog")
        if sys.byteorder == "big":
            catalog.byteswap()
        bitmap_bytes = (1 + (bitmap - 1) // SECTOR) * SECTOR if bitmap else SECTOR
        if bitmap_bytes * 8 < extent // SECTOR:
            raise CorruptImageError(f"bitmap of {bitmap} bytes cannot cover an extent of "
                                    f"{extent} bytes", path, 76, "header")
        return cls(path, fd, size, catalog, header + 4 * entries, bitmap_bytes, extent)

    @property
    def size(self) -> int:
        return self._size

    def _bitmap(self, i: int) -> tuple[int, bytes] | None:
        """(where extent ``i``'s sectors start, its bitmap); None: not allocated."""
        entry = self.catalog[i]
        if entry == UNALLOCATED:
            return None
        at = self.data_offset + entry * (self.bitmap_bytes + self.extent_size)
        cached = self._bitmap_cache
        if cached is not None and cached[0] == at:
            return at + self.bitmap_bytes, cached[1]
        need = self.extent_size // SECTOR // 8 or 1
        if at + need > self._file_size:
            raise CorruptImageError(f"extent {i} (stored extent {entry}) at {at:#x} is past "
                                    "the end of the file", self.filename,
                                    self.catalog_offset + 4 * i, "catalog")
        bitmap = os.pread(self.fd, need, at)
        self._bitmap_cache = (at, bitmap)
        return at + self.bitmap_bytes, bitmap

    def _runs(self, offset: int, length: int) -> Iterator[tuple[int, int, int | None]]:
        """(offset, length, host offset or None for zeros) runs covering the range."""
        es = self.extent_size
        end = offset + length
        while offset < end:
            i = offset // es
            stop = min(end, (i + 1) * es)
            found = self._bitmap(i)
            if found is None:
                yield offset, stop - offset, None
                offset = stop
                continue
            data, bitmap = found
            pos = offset
            while pos < stop:  # runs of sectors with the same bit
                s = (pos - i * es) // SECTOR
                bit = bitmap[s // 8] >> (s % 8) & 1
                nxt = min(stop, i * es + (s + 1) * SECTOR)
                while nxt < stop:
                    t = (nxt - i * es) // SECTOR
                    if (bitmap[t // 8] >> (t % 8) & 1) != bit:
                        break
                    nxt = min(stop, nxt + SECTOR)
                yield pos, nxt - pos, data + (pos - i * es) if bit else None
                pos = nxt
            offset = stop

    def preadv(self, offset: int, buffers: Sequence[memoryview]) -> None:
        for v in self._checked_views(offset, buffers):
            base = offset
            for start, n, host in self._runs(offset, v.nbytes):
                part = v[start - base:start - base + n]
                if host is None:
                    fill_zero(part)
                else:
                    preadv_full(self.fd, host, [part])
            offset += v.nbytes

    def block_status(self, offset: int, length: int) -> Iterator[Extent]:
        self._check_range(offset, length)
        runs = ((start, n, _ZERO if host is None else _DATA, host)
                for start, n, host in self._runs(offset, length))
        yield from merge_extents(runs, self.filename)
