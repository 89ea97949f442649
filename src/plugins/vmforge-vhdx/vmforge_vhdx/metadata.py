"""Reading a VHDX image's headers, region table, metadata and BAT, checked.

Every inconsistency is a :class:`~vmforge.block.driver.CorruptImageError`
naming the file, the offset of the field at fault and its table; what the
format allows but QEMU does not support (differencing images, unknown
required regions or metadata) is a :class:`~vmforge.block.driver.BlockError`.
"""

from __future__ import annotations

import os
import struct
import sys
from array import array

from vmforge.block.driver import BlockError, CorruptImageError
from vmforge.record import FrozenRecord
from vmforge_vhdx import layout as L
from vmforge_vhdx.layout import Geometry, Header, MiB


def _pread(fd: int, n: int, offset: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = os.pread(fd, n - len(out), offset + len(out))
        if not chunk:
            break
        out += chunk
    return out


def read_headers(fd: int, path: str) -> tuple[list[bytearray], list[Header | None], int]:
    """Both header blocks (4 KiB each), the valid headers (None: invalid) and which
    one is current: the valid one, or of two the higher sequence number."""
    blocks: list[bytearray] = []
    headers: list[Header | None] = []
    for at in L.HEADER_OFFSETS:
        raw = _pread(fd, L.HEADER_SIZE, at)
        block = bytearray(raw.ljust(L.HEADER_SIZE, b"\0"))
        header = None
        if (len(raw) == L.HEADER_SIZE and raw[:4] == L.HEADER_SIGNATURE
                and L.checksum_ok(raw)):
            h = Header.unpack(raw)
            if h.version == 1:
                header = h
        blocks.append(block)
        headers.append(header)
    first, second = headers
    if first is None and second is None:
        raise CorruptImageError("No valid VHDX header found (signature, version 1 and "
                                "checksum)", path, L.HEADER_OFFSETS[0], "header")
    if first is None or second is None:
        return blocks, headers, 0 if second is None else 1
    if first.sequence != second.sequence:
        return blocks, headers, 0 if first.sequence > second.sequence else 1
    if blocks[0][:L.HEADER.size] != blocks[1][:L.HEADER.size]:
        raise CorruptImageError(f"both headers have the sequence number {first.sequence} "
                                "but differ", path, L.HEADER_OFFSETS[1] + 8, "header")
    return blocks, headers, 0


class Regions:
    """The file's ranges in use, to refuse overlaps."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.spans: list[tuple[int, int, str]] = []

    def overlap(self, start: int, length: int) -> str | None:
        """The name of a registered range that ``[start, start+length)`` overlaps."""
        end = start + length
        for s, e, name in self.spans:
            if start < e and s < end:
                return name
        return None

    def add(self, start: int, length: int, name: str, at: int) -> None:
        clash = self.overlap(start, length)
        if clash:
            raise CorruptImageError(f"{name} at {start:#x} ({length} bytes) overlaps {clash}",
                                    self.path, at, "region table")
        self.spans.append((start, start + length, name))


def read_regions(fd: int, path: str, regions: Regions) -> tuple[tuple[int, int], tuple[int, int]]:
    """Region table 1 checked: ``(offset, length)`` of the BAT and of the metadata."""
    base = L.REGION_TABLE_OFFSETS[0]
    buf = _pread(fd, L.HEADER_BLOCK, base)
    if len(buf) < L.HEADER_BLOCK or not L.checksum_ok(buf):
        raise CorruptImageError("region table checksum mismatch (or table truncated)", path,
                                base + 4, "region table")
    sig, _, count, _ = L.REGION_HEADER.unpack_from(buf)
    if sig != L.REGION_SIGNATURE:
        raise CorruptImageError("no region table signature 'regi'", path, base,
                                "region table")
    if count > L.REGION_ENTRIES_MAX:
        raise CorruptImageError(f"region table has {count} entries, more than "
                                f"{L.REGION_ENTRIES_MAX}", path, base + 8, "region table")
    file_size = os.fstat(fd).st_size
    found: dict[bytes, tuple[int, int]] = {}
    names = {L.BAT_GUID: "the BAT", L.METADATA_GUID: "the metadata region"}
    for k in range(count):
        at = base + L.REGION_HEADER.size + k * L.REGION_ENTRY.size
        guid, offset, length, bits = L.REGION_ENTRY.unpack_from(buf, at - base)
        name = names.get(guid, f"region {k}")
        regions.add(offset, length, name, at)
        if guid in names:
            if guid in found:
                raise CorruptImageError(f"{name} appears twice in the region table", path, at,
                                        "region table")
            if offset + length > file_size:
                raise CorruptImageError(f"{name} at {offset:#x} ({length} bytes) is past the "
                                        f"end of the file ({file_size} bytes)", path, at + 16,
                                        "region table")
            found[guid] = (offset, length)
        elif bits & L.REGION_REQUIRED:
            raise BlockError(f"unsupported VHDX image: required region {k} is unknown", path)
    for guid, name in names.items():
        if guid not in found:
            raise CorruptImageError(f"{name} is missing from the region table", path, base,
                                    "region table")
    return found[L.BAT_GUID], found[L.METADATA_GUID]


class Metadata(FrozenRecord):
    __slots__ = __match_args__ = ("geometry", "fixed", "physical_sector")
    geometry: Geometry
    fixed: bool
    physical_sector: int

    def __init__(self, geometry: Geometry, fixed: bool, physical_sector: int) -> None:
        object.__setattr__(self, "geometry", geometry)
        object.__setattr__(self, "fixed", fixed)
        object.__setattr__(self, "physical_sector", physical_sector)


def read_metadata(fd: int, path: str, base: int, length: int) -> Metadata:
    """The metadata table and its five required items, checked."""
    table = _pread(fd, L.METADATA_TABLE_SIZE, base)
    if len(table) < L.METADATA_TABLE_SIZE or table[:8] != L.METADATA_SIGNATURE:
        raise CorruptImageError("no metadata table signature 'metadata'", path, base,
                                "metadata")
    count = L.METADATA_HEADER.unpack_from(table)[2]
    if count > L.METADATA_ENTRIES_MAX:
        raise CorruptImageError(f"metadata table has {count} entries, more than "
                                f"{L.METADATA_ENTRIES_MAX}", path, base + 10, "metadata")
    items: dict[bytes, tuple[int, bytes]] = {}
    has_locator = False
    for k in range(count):
        at = L.METADATA_HEADER.size + k * L.METADATA_ENTRY.size
        guid, offset, size, bits, _ = L.METADATA_ENTRY.unpack_from(table, at)
        if guid == L.PARENT_LOCATOR_GUID:
            has_locator = True
        if guid not in L.METADATA_ITEMS:
            if bits & L.META_IS_REQUIRED and guid != L.PARENT_LOCATOR_GUID:
                raise BlockError(f"unsupported VHDX image: required metadata item {k} is "
                                 "unknown", path)
            continue
        name, need = L.METADATA_ITEMS[guid]
        if guid in items:
            raise CorruptImageError(f"metadata item {name} appears twice", path, base + at,
                                    "metadata")
        if size < need or size > MiB or offset + size > length:
            raise CorruptImageError(f"metadata item {name} of {size} bytes at {offset:#x} "
                                    f"does not fit the {length} bytes of the metadata region",
                                    path, base + at + 16, "metadata")
        items[guid] = (base + offset, _pread(fd, need, base + offset).ljust(need, b"\0"))
    for guid, (name, _) in L.METADATA_ITEMS.items():
        if guid not in items:
            raise CorruptImageError(f"metadata item {name} is missing", path, base, "metadata")

    def field(guid: bytes, fmt: str) -> tuple[int, int]:
        where, raw = items[guid]
        return where, struct.unpack_from(fmt, raw)[0]

    where, block_size = field(L.FILE_PARAMETERS_GUID, "<I")
    bits = struct.unpack_from("<I", items[L.FILE_PARAMETERS_GUID][1], 4)[0]
    if bits & L.PARAMS_HAS_PARENT:
        if has_locator:
            raise BlockError("unsupported VHDX image: differencing images (with a parent) "
                             "are not supported", path)
        raise CorruptImageError("the file parameters say the image has a parent, but there "
                                "is no parent locator", path, where + 4, "metadata")
    if not L.BLOCK_SIZE_MIN <= block_size <= L.BLOCK_SIZE_MAX or block_size & (block_size - 1):
        raise CorruptImageError(f"block size {block_size} is not a power of two from 1 MiB "
                                "to 256 MiB", path, where, "metadata")
    where_ls, logical = field(L.LOGICAL_SECTOR_GUID, "<I")
    if logical not in (512, 4096):
        raise CorruptImageError(f"logical sector size {logical} is neither 512 nor 4096",
                                path, where_ls, "metadata")
    where_sz, size = field(L.VIRTUAL_SIZE_GUID, "<Q")
    if size > L.MAX_IMAGE_SIZE or size % logical:
        raise CorruptImageError(f"virtual disk size {size} is over 64 TiB or not a multiple "
                                f"of the {logical}-byte sector", path, where_sz, "metadata")
    physical = field(L.PHYSICAL_SECTOR_GUID, "<I")[1]
    return Metadata(Geometry(size, block_size, logical),
                    bool(bits & L.PARAMS_LEAVE_BLOCKS_ALLOCATED), physical)


def read_bat(fd: int, path: str, geometry: Geometry, offset: int, length: int) -> array[int]:
    """The BAT's entries (payload and sector bitmap entries interleaved)."""
    n = geometry.bat_entries
    if 8 * n > length:
        raise CorruptImageError(f"the BAT of {length} bytes is too small for the {n} entries "
                                f"of a {geometry.size}-byte disk", path, offset, "BAT")
    raw = _pread(fd, 8 * n, offset)
    if len(raw) != 8 * n:
        raise CorruptImageError("BAT truncated", path, offset, "BAT")
    bat = array("Q", raw)
    if sys.byteorder == "big":
        bat.byteswap()
    return bat
