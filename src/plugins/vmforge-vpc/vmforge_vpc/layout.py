"""The VHD on-disk structures: the footer, the dynamic disk header, CHS geometry.

All integers are big-endian.  A fixed image is the disk followed by a 512-byte
footer.  A dynamic image is::

    0       a copy of the footer
    512     the dynamic disk header (1024 bytes, cookie "cxsparse")
    1536    the block allocation table (BAT): one u32 per block, the sector
            of the block's bitmap, 0xffffffff when the block is not allocated
    ...     blocks: a sector bitmap (bitmap_size bytes) then block_size bytes
    end     the footer

Both structures carry a checksum: the one's complement of the sum of their
bytes with the checksum field zeroed.
"""

from __future__ import annotations

import struct
import time

from vmforge.record import FrozenRecord
from vmforge_vpc.probe import COOKIE

DYN_COOKIE = b"cxsparse"
FOOTER_SIZE = 512
DYN_HEADER_SIZE = 1024
SECTOR = 512

TYPE_FIXED = 2
TYPE_DYNAMIC = 3
TYPE_DIFFERENCING = 4
TYPE_NAMES = {TYPE_FIXED: "fixed", TYPE_DYNAMIC: "dynamic", TYPE_DIFFERENCING: "differencing"}

UNALLOCATED = 0xFFFFFFFF
#: the block size qemu-img and Virtual PC use for dynamic images
DEFAULT_BLOCK_SIZE = 2 << 20
#: seconds from the Unix epoch to 2000-01-01 00:00:00 UTC, the VHD time base
TIMESTAMP_BASE = 946684800

#: the largest CHS geometry (cylinders x heads x sectors per track)
CHS_MAX = (65535, 16, 255)
MAX_GEOMETRY = 65535 * 16 * 255
#: the largest disk QEMU accepts: 2040 GiB, in sectors
MAX_SECTORS = 0xFF000000

# cookie, features, version, data offset, timestamp, creator app, major, minor,
# creator OS, original size, current size, cylinders, heads, sectors, type,
# checksum, uuid, saved state, reserved
_FOOTER = struct.Struct(">8sIIQI4sHH4sQQHBBII16sB427s")
FOOTER_CHECKSUM_AT = 64
# cookie, data offset, table offset, version, max table entries, block size,
# checksum, parent uuid, parent timestamp, reserved, parent name (UTF-16), then
# 8 parent locators and 256 reserved bytes
_DYN = struct.Struct(">8sQQIIII16sII512s")
DYN_CHECKSUM_AT = 36
DYN_TABLE_AT = 16
DYN_BLOCK_SIZE_AT = 32

assert _FOOTER.size == FOOTER_SIZE


def checksum(data: bytes | bytearray, at: int) -> int:
    """The VHD checksum of ``data`` with its 4-byte checksum field at ``at`` zeroed."""
    total = sum(data) - sum(data[at:at + 4])
    return ~total & 0xFFFFFFFF


class Footer(FrozenRecord):
    """The hard disk footer (the fields vmforge uses; the rest is kept as read; a record,
    as :mod:`vmforge.record` explains)."""

    __slots__ = __match_args__ = (
        "features", "version", "data_offset", "timestamp", "creator_app",
        "creator_version", "creator_os", "original_size", "current_size", "cylinders",
        "heads", "sectors", "disk_type", "checksum", "uuid", "saved_state")
    features: int
    version: int
    data_offset: int
    timestamp: int
    creator_app: bytes
    creator_version: tuple[int, int]
    creator_os: bytes
    original_size: int
    current_size: int
    cylinders: int
    heads: int
    sectors: int
    disk_type: int
    checksum: int
    uuid: bytes
    saved_state: int

    def __init__(self, features: int, version: int, data_offset: int, timestamp: int,
                 creator_app: bytes, creator_version: tuple[int, int], creator_os: bytes,
                 original_size: int, current_size: int, cylinders: int, heads: int,
                 sectors: int, disk_type: int, checksum: int, uuid: bytes,
                 saved_state: int) -> None:
        object.__setattr__(self, "features", features)
        object.__setattr__(self, "version", version)
        object.__setattr__(self, "data_offset", data_offset)
        object.__setattr__(self, "timestamp", timestamp)
        object.__setattr__(self, "creator_app", creator_app)
        object.__setattr__(self, "creator_version", creator_version)
        object.__setattr__(self, "creator_os", creator_os)
        object.__setattr__(self, "original_size", original_size)
        object.__setattr__(self, "current_size", current_size)
        object.__setattr__(self, "cylinders", cylinders)
        object.__setattr__(self, "heads", heads)
        object.__setattr__(self, "sectors", sectors)
        object.__setattr__(self, "disk_type", disk_type)
        object.__setattr__(self, "checksum", checksum)
        object.__setattr__(self, "uuid", uuid)
        object.__setattr__(self, "saved_state", saved_state)

    @classmethod
    def unpack(cls, raw: bytes) -> Footer:
        (_, features, version, data_offset, timestamp, app, major, minor, os_, orig, cur,
         cyls, heads, secs, dtype, csum, uid, saved, _) = _FOOTER.unpack_from(raw)
        return cls(features, version, data_offset, timestamp, app, (major, minor), os_,
                   orig, cur, cyls, heads, secs, dtype, csum, uid, saved)

    def pack(self) -> bytes:
        raw = bytearray(_FOOTER.pack(
            COOKIE, self.features, self.version, self.data_offset, self.timestamp,
            self.creator_app, *self.creator_version, self.creator_os, self.original_size,
            self.current_size, self.cylinders, self.heads, self.sectors, self.disk_type,
            0, self.uuid, self.saved_state, bytes(427)))
        struct.pack_into(">I", raw, FOOTER_CHECKSUM_AT, checksum(raw, FOOTER_CHECKSUM_AT))
        return bytes(raw)

    def with_checksum(self) -> Footer:
        values = dict(zip(self.__match_args__, self._values(), strict=True))
        values["checksum"] = struct.unpack_from(">I", self.pack(), FOOTER_CHECKSUM_AT)[0]
        return Footer(**values)

    @property
    def geometry_sectors(self) -> int:
        return self.cylinders * self.heads * self.sectors


def uses_chs(footer: Footer) -> bool:
    """Whether the virtual size is the CHS geometry's (QEMU's table of creators).

    Virtual PC and qemu-img without ``force_size`` size the disk by its
    geometry; Hyper-V ("win "), disk2vhd ("d2v "), XenServer ("tap\\0"),
    XenConverter ("CTXS") and qemu-img with ``force_size`` ("qem2") by the
    footer's current size.  A geometry of the maximum size always means the
    current size.
    """
    by_size = footer.creator_app in (b"win ", b"qem2", b"d2v ", b"CTXS", b"tap\0")
    return not by_size and footer.geometry_sectors != MAX_GEOMETRY


def calculate_geometry(total_sectors: int) -> tuple[int, int, int]:
    """CHS for ``total_sectors`` by the VHD specification's algorithm (may round down)."""
    total_sectors = min(total_sectors, MAX_GEOMETRY)
    if total_sectors >= 65535 * 16 * 63:
        secs, heads = 255, 16
        cth = total_sectors // secs
    else:
        secs = 17
        cth = total_sectors // secs
        heads = max(4, -(-cth // 1024))
        if cth >= heads * 1024 or heads > 16:
            secs, heads = 31, 16
            cth = total_sectors // secs
        if cth >= heads * 1024:
            secs, heads = 63, 16
            cth = total_sectors // secs
    return cth // heads, heads, secs


def create_geometry(size: int, force_size: bool) -> tuple[tuple[int, int, int], int]:
    """The geometry and the virtual size (bytes) qemu-img gives a new image of ``size``.

    Without ``force_size`` the size grows to the first geometry that holds it
    (so that a conversion never truncates); past what CHS can express (about
    127 GiB) or with ``force_size`` the geometry is the maximum and the size
    is the one asked, rounded up to a sector.  Raises ValueError above 2040 GiB.
    """
    sectors = -(-size // SECTOR)
    if force_size:
        chs = CHS_MAX
    else:
        want = min(MAX_GEOMETRY, sectors)
        chs = (0, 0, 0)
        i = 0
        while want > chs[0] * chs[1] * chs[2]:
            chs = calculate_geometry(want + i)
            i += 1
    if chs[0] * chs[1] * chs[2] == MAX_GEOMETRY:
        if sectors > MAX_SECTORS:
            raise ValueError("disk size is too large, max size is 2040 GiB")
        return chs, sectors * SECTOR
    return chs, chs[0] * chs[1] * chs[2] * SECTOR


def _new_uuid() -> bytes:
    import uuid  # (to create an image only)

    return uuid.uuid4().bytes


def new_footer(size: int, chs: tuple[int, int, int], disk_type: int, force_size: bool) -> Footer:
    """The footer qemu-img writes for a new image of ``size`` bytes."""
    now = max(0, int(time.time()) - TIMESTAMP_BASE) & 0xFFFFFFFF
    footer = Footer(
        features=2, version=0x00010000,
        data_offset=FOOTER_SIZE if disk_type == TYPE_DYNAMIC else (1 << 64) - 1,
        timestamp=now, creator_app=b"qem2" if force_size else b"qemu",
        creator_version=(5, 3), creator_os=b"Wi2k", original_size=size, current_size=size,
        cylinders=chs[0], heads=chs[1], sectors=chs[2], disk_type=disk_type, checksum=0,
        uuid=_new_uuid(), saved_state=0)
    return footer.with_checksum()


class DynHeader(FrozenRecord):
    """The dynamic disk header (the fields vmforge uses)."""

    __slots__ = __match_args__ = (
        "data_offset", "table_offset", "version", "max_table_entries", "block_size",
        "checksum")
    data_offset: int
    table_offset: int
    version: int
    max_table_entries: int
    block_size: int
    checksum: int

    def __init__(self, data_offset: int, table_offset: int, version: int,
                 max_table_entries: int, block_size: int, checksum: int) -> None:
        object.__setattr__(self, "data_offset", data_offset)
        object.__setattr__(self, "table_offset", table_offset)
        object.__setattr__(self, "version", version)
        object.__setattr__(self, "max_table_entries", max_table_entries)
        object.__setattr__(self, "block_size", block_size)
        object.__setattr__(self, "checksum", checksum)

    @classmethod
    def unpack(cls, raw: bytes) -> DynHeader:
        (_, data_offset, table_offset, version, entries, block_size, csum,
         *_rest) = _DYN.unpack_from(raw)
        return cls(data_offset, table_offset, version, entries, block_size, csum)


def new_dyn_header(table_offset: int, entries: int, block_size: int) -> bytes:
    """A dynamic disk header without a parent, as qemu-img writes it."""
    raw = bytearray(DYN_HEADER_SIZE)
    _DYN.pack_into(raw, 0, DYN_COOKIE, (1 << 64) - 1, table_offset, 0x00010000, entries,
                   block_size, 0, bytes(16), 0, 0, bytes(512))
    struct.pack_into(">I", raw, DYN_CHECKSUM_AT, checksum(raw, DYN_CHECKSUM_AT))
    return bytes(raw)


def bitmap_size(block_size: int) -> int:
    """Bytes of the sector bitmap in front of each block (whole sectors)."""
    return (block_size // (8 * SECTOR) + SECTOR - 1) // SECTOR * SECTOR
