"""L1/L2 entries and the L2 table cache (bounded LRU, write-through)."""

from __future__ import annotations

import sys
from array import array

from vmforge.block import CorruptImageError

from .fileio import ImageFile

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections import OrderedDict
else:   # the class collections gives (importing the collections package costs start-up)
    from _collections import OrderedDict

OFLAG_COPIED = 1 << 63
OFLAG_COMPRESSED = 1 << 62
OFLAG_ZERO = 1
OFFSET_MASK = 0x00FFFFFFFFFFFE00
L1E_RESERVED = 0x7F000000000001FF
L2E_RESERVED = 0x3F000000000001FE

# kinds of an L2 entry
UNALLOC, ZERO, NORMAL, COMPRESSED = 0, 1, 2, 3

_SWAP = sys.byteorder == "little"


def table_from_bytes(raw: bytes) -> array:
    """Big-endian u64 table bytes -> array('Q') of native ints."""
    a = array("Q")
    a.frombytes(raw)
    if _SWAP:
        a.byteswap()
    return a


def table_to_bytes(a: array, i0: int = 0, i1: int | None = None) -> bytes:
    part = a[i0:i1]
    if _SWAP:
        part.byteswap()
    return part.tobytes()


#: the byte of an entry (in an array('Q')'s native order) that holds OFLAG_COPIED
_COPIED_BYTE = 7 if _SWAP else 0


def copied_entries(host: int, count: int, cluster_size: int) -> array:
    """The L2 entries of ``count`` clusters in a row from ``host``, each with
    OFLAG_COPIED: the flag set a byte at a time (offsets from ``range`` are small
    ints; with the flag they are not, and cost several times as much each)."""
    end = host + count * cluster_size
    if end >= 1 << 56:           # (not an offset an entry can hold: the slow way)
        return array("Q", range(host | OFLAG_COPIED, end | OFLAG_COPIED, cluster_size))
    a = array("Q", range(host, end, cluster_size))
    memoryview(a).cast("B")[_COPIED_BYTE::8] = b"\x80" * count
    return a


def entry_kind(ent: int) -> int:
    """The kind of an L2 entry (v2 images never set the zero flag)."""
    if ent & OFLAG_COMPRESSED:
        return COMPRESSED
    if ent & OFLAG_ZERO:
        return ZERO
    if ent & OFFSET_MASK:
        return NORMAL
    return UNALLOC


class L2Cache:
    """L2 tables by host offset; at most ``max_tables`` clean ones kept (LRU).

    Tables listed in ``dirty`` hold entries not yet written (the writer owns
    them and writes them at its next barrier); they are never evicted.
    """

    def __init__(self, f: ImageFile, cluster_bits: int, max_tables: int) -> None:
        self.f = f
        self.cs = 1 << cluster_bits
        self.max_tables = max(2, max_tables)
        self.tables: OrderedDict[int, array] = OrderedDict()
        self.dirty: set[int] = set()

    def get(self, offset: int, where: str = "L1 table") -> array:
        t = self.tables.get(offset)
        if t is not None:
            self.tables.move_to_end(offset)
            return t
        if offset % self.cs:
            raise CorruptImageError(f"L2 table offset {offset:#x} is not cluster aligned",
                                    self.f.filename, offset, where)
        if offset == 0:
            raise CorruptImageError("L2 table at offset 0 overlaps the header",
                                    self.f.filename, offset, where)
        raw = self.f.read_table(offset, self.cs, "L2 table")
        t = table_from_bytes(raw)
        self.put(offset, t)
        return t

    def put(self, offset: int, table: array) -> None:
        self.tables[offset] = table
        self.tables.move_to_end(offset)
        if len(self.tables) > self.max_tables:
            for key in list(self.tables):
                if len(self.tables) <= self.max_tables:
                    break
                if key not in self.dirty and key != offset:
                    del self.tables[key]

    def write_table(self, offset: int, table: array) -> None:
        self.f.pwrite(offset, table_to_bytes(table))
        self.put(offset, table)

    def write_entries(self, offset: int, i0: int, i1: int) -> None:
        t = self.tables[offset]
        self.f.pwrite(offset + 8 * i0, table_to_bytes(t, i0, i1))

    def drop(self, offset: int) -> None:
        self.tables.pop(offset, None)

    def __contains__(self, offset: int) -> bool:
        return offset in self.tables
