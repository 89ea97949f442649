"""VHDX on-disk structures: constants, GUIDs, checksums, and the layout of a new image.

Everything is little-endian; GUIDs are stored as Microsoft writes them (the
first three fields little-endian: :attr:`uuid.UUID.bytes_le`).  The file::

    0        file identifier: "vhdxfile", then the creator in UTF-16
    64 KiB   header 1 (4 KiB checksummed, CRC-32C)   \\ the one with the higher
    128 KiB  header 2                                / sequence number is current
    192 KiB  region table 1 (64 KiB checksummed), 256 KiB: region table 2 (a copy)
    1 MiB    the log (log_offset, log_length in the header)
    ...      the BAT and the metadata region (where the region table says)
    ...      payload blocks, each at a multiple of 1 MiB
"""

from __future__ import annotations

import os
import struct

from vmforge.record import FrozenRecord, Record
from vmforge_vhdx.probe import FILE_SIGNATURE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40

HEADER_SIGNATURE = b"head"
REGION_SIGNATURE = b"regi"
METADATA_SIGNATURE = b"metadata"

HEADER_BLOCK = 64 * KiB
HEADER_SIZE = 4 * KiB          # the checksummed part of a header block
HEADER_OFFSETS = (HEADER_BLOCK, 2 * HEADER_BLOCK)
REGION_TABLE_OFFSETS = (3 * HEADER_BLOCK, 4 * HEADER_BLOCK)
HEADER_SECTION_END = MiB

BLOCK_SIZE_MIN = MiB
BLOCK_SIZE_MAX = 256 * MiB
MAX_IMAGE_SIZE = 64 * TiB
MAX_SECTORS_PER_BLOCK = 1 << 23
LOG_SECTOR = 4096
REGION_ENTRIES_MAX = 2047
METADATA_ENTRIES_MAX = 2047
METADATA_TABLE_SIZE = 64 * KiB
DEFAULT_LOG_SIZE = MiB

# payload block states (the low 3 bits of a BAT entry)
PAYLOAD_NOT_PRESENT = 0
PAYLOAD_UNDEFINED = 1
PAYLOAD_ZERO = 2
PAYLOAD_UNMAPPED = 3
PAYLOAD_UNMAPPED_V095 = 5
PAYLOAD_FULLY_PRESENT = 6
PAYLOAD_PARTIALLY_PRESENT = 7
#: states that read as zeros in an image without a parent
READS_AS_ZERO = frozenset({PAYLOAD_NOT_PRESENT, PAYLOAD_UNDEFINED, PAYLOAD_ZERO,
                           PAYLOAD_UNMAPPED, PAYLOAD_UNMAPPED_V095})
BAT_STATE_MASK = 0x7
BAT_OFFSET_MASK = ~((1 << 20) - 1) & ((1 << 64) - 1)

REGION_REQUIRED = 1
META_IS_USER = 1
META_IS_VIRTUAL_DISK = 2
META_IS_REQUIRED = 4
PARAMS_LEAVE_BLOCKS_ALLOCATED = 1
PARAMS_HAS_PARENT = 2


def _le_guid(b: bytes) -> bytes:
    """A GUID's 16 bytes in text order as stored (first three fields little-endian)."""
    return b[3::-1] + b[5:3:-1] + b[7:5:-1] + b[8:]


def _guid(text: str) -> bytes:
    """``uuid.UUID(text).bytes_le`` (without importing :mod:`uuid` at start-up)."""
    return _le_guid(bytes.fromhex(text.replace("-", "")))


def new_guid() -> bytes:
    """A random (version 4) GUID as stored: ``uuid.uuid4().bytes_le``."""
    b = bytearray(os.urandom(16))
    b[6] = b[6] & 0x0F | 0x40
    b[8] = b[8] & 0x3F | 0x80
    return _le_guid(bytes(b))


BAT_GUID = _guid("2dc27766-f623-4200-9d64-115e9bfd4a08")
METADATA_GUID = _guid("8b7ca206-4790-4b9a-b8fe-575f050f886e")
FILE_PARAMETERS_GUID = _guid("caa16737-fa36-4d43-b3b6-33f0aa44e76b")
VIRTUAL_SIZE_GUID = _guid("2fa54224-cd1b-4876-b211-5dbed83bf4b8")
PAGE83_GUID = _guid("beca12ab-b2e6-4523-93ef-c309e000c746")
LOGICAL_SECTOR_GUID = _guid("8141bf1d-a96f-4709-ba47-f233a8faab5f")
PHYSICAL_SECTOR_GUID = _guid("cda348c7-445d-4471-9cc9-e9885251c556")
PARENT_LOCATOR_GUID = _guid("a8d35f2d-b30b-454d-abf7-d3d84834ab0c")
ZERO_GUID = bytes(16)

#: the metadata items every image has, by GUID: their names (for messages) and sizes
METADATA_ITEMS = {
    FILE_PARAMETERS_GUID: ("file parameters", 8),
    VIRTUAL_SIZE_GUID: ("virtual disk size", 8),
    PAGE83_GUID: ("page 83 data", 16),
    LOGICAL_SECTOR_GUID: ("logical sector size", 4),
    PHYSICAL_SECTOR_GUID: ("physical sector size", 4),
}

# signature, checksum, sequence number, file write GUID, data write GUID, log GUID,
# log version, version, log length, log offset
HEADER = struct.Struct("<4sIQ16s16s16sHHIQ")
# signature, checksum, entry count, reserved
REGION_HEADER = struct.Struct("<4sIII")
# GUID, file offset, length, data bits (bit 0: required)
REGION_ENTRY = struct.Struct("<16sQII")
# signature, reserved, entry count, reserved
METADATA_HEADER = struct.Struct("<8sHH20s")
# item id, offset (in the region), length, data bits, reserved
METADATA_ENTRY = struct.Struct("<16sIIII")


def crc32c(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """CRC-32C (Castagnoli) of ``data``, continuing from ``value``."""
    global _crc32c_function
    if _crc32c_function is None:    # on first use: what a command without vhdx never pays
        _crc32c_function = _load_crc32c()
    return int(_crc32c_function(data, value))


_crc32c_function: Callable[[bytes | bytearray | memoryview, int], int] | None = None


def _load_crc32c() -> Callable[[bytes | bytearray | memoryview, int], int]:
    """The ``crc32c`` package's C function, from its extension module alone: the
    package's ``__init__`` reads its own version with ``importlib.metadata`` and
    imports its command line (argparse), ~40 ms of every vhdx command's start (a
    third of ``img info``'s instructions).  The package as such where its layout
    differs."""
    import importlib.machinery  # (not importlib.util: ~9 M instructions more)
    import os

    spec = importlib.machinery.PathFinder.find_spec("crc32c")   # (finds it; runs nothing)
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(folder, "_crc32c" + suffix)
            if os.path.isfile(path):
                loader = importlib.machinery.ExtensionFileLoader("crc32c._crc32c", path)
                ext_spec = importlib.machinery.ModuleSpec("crc32c._crc32c", loader,
                                                          origin=path)
                module = loader.create_module(ext_spec)
                loader.exec_module(module)
                function: Callable[[bytes | bytearray | memoryview, int], int]
                function = module.crc32c
                return function
    import crc32c as package

    return package.crc32c  # type: ignore[no-any-return]


def checksum(buf: bytes | bytearray, at: int = 4) -> int:
    """The VHDX checksum of ``buf``: CRC-32C with its 4-byte field at ``at`` taken as zero."""
    return crc32c(bytes(buf[:at]) + bytes(4) + bytes(buf[at + 4:]))


def set_checksum(buf: bytearray, at: int = 4) -> None:
    """Write ``buf``'s checksum into its field at ``at``."""
    struct.pack_into("<I", buf, at, checksum(buf, at))


def checksum_ok(buf: bytes | bytearray, at: int = 4) -> bool:
    return len(buf) >= at + 4 and struct.unpack_from("<I", buf, at)[0] == checksum(buf, at)


def round_up(n: int, unit: int) -> int:
    return -(-n // unit) * unit


class Header(Record):
    """One of the two headers (the fields of the first 80 bytes; a record, as
    :mod:`vmforge.record` explains)."""

    __slots__ = __match_args__ = ("sequence", "file_write_guid", "data_write_guid", "log_guid",
                                  "log_version", "version", "log_length", "log_offset")
    sequence: int
    file_write_guid: bytes
    data_write_guid: bytes
    log_guid: bytes
    log_version: int
    version: int
    log_length: int
    log_offset: int

    def __init__(self, sequence: int, file_write_guid: bytes, data_write_guid: bytes,
                 log_guid: bytes, log_version: int, version: int, log_length: int,
                 log_offset: int) -> None:
        self.sequence = sequence
        self.file_write_guid = file_write_guid
        self.data_write_guid = data_write_guid
        self.log_guid = log_guid
        self.log_version = log_version
        self.version = version
        self.log_length = log_length
        self.log_offset = log_offset

    def replace(self, **changes: int | bytes) -> Header:
        """A copy with ``changes`` (:func:`dataclasses.replace`)."""
        new = Header(*self._values())
        for name, value in changes.items():
            setattr(new, name, value)
        return new

    @classmethod
    def unpack(cls, buf: bytes | bytearray) -> Header:
        (_, _, seq, fw, dw, lg, lv, ver, ll, lo) = HEADER.unpack_from(buf)
        return cls(seq, fw, dw, lg, lv, ver, ll, lo)

    def pack_into(self, block: bytearray) -> None:
        """Put this header in the first bytes of the 4 KiB ``block`` (the rest kept)
        and update its checksum."""
        HEADER.pack_into(block, 0, HEADER_SIGNATURE, 0, self.sequence, self.file_write_guid,
                         self.data_write_guid, self.log_guid, self.log_version, self.version,
                         self.log_length, self.log_offset)
        set_checksum(block)


class Geometry(FrozenRecord):
    """What the metadata and the BAT layout follow from."""

    __slots__ = __match_args__ = ("size", "block_size", "logical_sector")
    size: int
    block_size: int
    logical_sector: int

    def __init__(self, size: int, block_size: int, logical_sector: int) -> None:
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "block_size", block_size)
        object.__setattr__(self, "logical_sector", logical_sector)

    @property
    def chunk_ratio(self) -> int:
        """Payload blocks per sector bitmap block (BAT entries interleave them)."""
        return MAX_SECTORS_PER_BLOCK * self.logical_sector // self.block_size

    @property
    def data_blocks(self) -> int:
        return -(-self.size // self.block_size)

    @property
    def bat_entries(self) -> int:
        """Payload entries and the sector bitmap entries between them; for an empty disk,
        what QEMU's 32-bit arithmetic makes of it (``0 - 1`` wraps), so that each opens
        the other's empty images."""
        n = self.data_blocks
        return n + ((n - 1) & 0xFFFFFFFF) // self.chunk_ratio

    def bat_index(self, block: int) -> int:
        """The BAT entry of payload block ``block`` (past the sector bitmap entries)."""
        return block + block // self.chunk_ratio


def default_block_size(size: int) -> int:
    """qemu-img's choice when ``block_size`` is not given (keeps the BAT small)."""
    if size > 32 * TiB:
        return 64 * MiB
    if size > 100 * GiB:
        return 32 * MiB
    if size > GiB:
        return 16 * MiB
    return 8 * MiB


class NewImage(FrozenRecord):
    """Where qemu-img puts the parts of a new image."""

    __slots__ = __match_args__ = ("geometry", "log_size")
    geometry: Geometry
    log_size: int

    def __init__(self, geometry: Geometry, log_size: int) -> None:
        object.__setattr__(self, "geometry", geometry)
        object.__setattr__(self, "log_size", log_size)

    @property
    def bat_offset(self) -> int:
        return round_up(HEADER_SECTION_END + self.log_size, MiB)

    @property
    def bat_length(self) -> int:
        return round_up(self.geometry.bat_entries * 8, MiB)

    @property
    def metadata_offset(self) -> int:
        return round_up(self.bat_offset + self.bat_length, MiB)

    @property
    def data_offset(self) -> int:
        """The first payload block (the BAT, and 5 MiB to spare after it)."""
        return self.bat_offset + self.bat_length + 5 * MiB


def file_identifier(creator: str) -> bytes:
    return FILE_SIGNATURE + creator.encode("utf-16-le")


def region_table(entries: list[tuple[bytes, int, int, int]]) -> bytearray:
    """A 64 KiB region table of ``(guid, offset, length, data bits)`` with its checksum."""
    buf = bytearray(HEADER_BLOCK)
    REGION_HEADER.pack_into(buf, 0, REGION_SIGNATURE, 0, len(entries), 0)
    for k, entry in enumerate(entries):
        REGION_ENTRY.pack_into(buf, REGION_HEADER.size + k * REGION_ENTRY.size, *entry)
    set_checksum(buf)
    return buf


def metadata_region(geometry: Geometry, fixed: bool, page83: bytes) -> bytes:
    """The metadata table and its five items, as qemu-img writes them (the items
    from 64 KiB on, in the table's order)."""
    table = bytearray(METADATA_TABLE_SIZE)
    items = [
        (FILE_PARAMETERS_GUID, struct.pack("<II", geometry.block_size,
                                           PARAMS_LEAVE_BLOCKS_ALLOCATED if fixed else 0),
         META_IS_REQUIRED),
        (VIRTUAL_SIZE_GUID, struct.pack("<Q", geometry.size),
         META_IS_REQUIRED | META_IS_VIRTUAL_DISK),
        (PAGE83_GUID, page83, META_IS_REQUIRED | META_IS_VIRTUAL_DISK),
        (LOGICAL_SECTOR_GUID, struct.pack("<I", geometry.logical_sector),
         META_IS_REQUIRED | META_IS_VIRTUAL_DISK),
        (PHYSICAL_SECTOR_GUID, struct.pack("<I", geometry.logical_sector),
         META_IS_REQUIRED | META_IS_VIRTUAL_DISK),
    ]
    METADATA_HEADER.pack_into(table, 0, METADATA_SIGNATURE, 0, len(items), b"")
    offset = METADATA_TABLE_SIZE
    data = bytearray()
    for k, (guid, value, bits) in enumerate(items):
        METADATA_ENTRY.pack_into(table, METADATA_HEADER.size + k * METADATA_ENTRY.size,
                                 guid, offset, len(value), bits, 0)
        offset += len(value)
        data += value
    return bytes(table + data)
