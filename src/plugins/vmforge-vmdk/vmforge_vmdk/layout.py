"""The VMDK layout: the sparse extent header, grain markers, the text descriptor.

A sparse extent (``KDMV``) starts with a 512-byte header (all little-endian
after the magic)::

    0   magic "KDMV"            4   version (1; 2 with zeroed grains; 3 stream)
    8   flags                   12  capacity (sectors)
    20  grain size (sectors)    28  embedded descriptor offset (sectors)
    36  descriptor size         44  grain table entries per table (512)
    48  redundant GD (sectors)  56  grain directory (sectors; ~0: in the footer)
    64  first grain (sectors)   72  a filler byte, then "\\n \\r\\n" (line-ending check)
    77  compression (1: deflate)

The grain directory holds the sector of each grain table; a grain table
holds the sector of each grain (0: not allocated; 1: a zeroed grain when
the image has the zeroed-grain flag).  In a compressed (streamOptimized)
extent a table entry points at a grain marker: the grain's first sector
(8 bytes), the compressed length (4 bytes), then the zlib stream.

A descriptor is text: ``CID``, ``parentCID``, ``createType``, an optional
``parentFileNameHint`` and extent lines ``RW <sectors> SPARSE|FLAT "<file>"
[<offset>]``; it is embedded at sector 1 of a monolithic sparse image, or
is a file of its own whose extents are other files.
"""

from __future__ import annotations

import struct

from vmforge.record import FrozenRecord, Record
from vmforge_vmdk.probe import MAGIC

SECTOR = 512
HEADER_SIZE = 512
#: the embedded descriptor's room in images qemu-img makes (20 sectors)
DESC_SIZE = 20 * SECTOR
#: at most this much of a descriptor file is read (as QEMU)
MAX_DESC = (1 << 20) - 1

F_NL_DETECT = 1 << 0
F_RGD = 1 << 1
F_ZERO_GRAIN = 1 << 2
F_COMPRESS = 1 << 16
F_MARKER = 1 << 17
COMPRESSION_DEFLATE = 1
GD_AT_END = (1 << 64) - 1
GTE_ZEROED = 1

MARKER_EOS, MARKER_GT, MARKER_GD, MARKER_FOOTER = 0, 1, 2, 3

#: the largest grain (QEMU: 1 GiB is unrealistic) and grain table
MAX_GRAIN_SECTORS = 0x200000
MAX_GTES = 512
MAX_GD_ENTRIES = 32 * 1024 * 1024
#: table entries are 32-bit sector numbers
MAX_SECTOR = (1 << 32) - 1
#: extents of twoGbMaxExtent* images
SPLIT_SIZE = 0x80000000

_HEADER = struct.Struct("<IIQQQQIQQQc4sH")
CHECK_BYTES = b"\n \r\n"

# field offsets, for error messages and tests
AT_VERSION, AT_FLAGS, AT_CAPACITY, AT_GRAIN = 4, 8, 12, 20
AT_DESC, AT_DESC_SIZE, AT_GTES, AT_RGD, AT_GD, AT_GRAIN_OFFSET = 28, 36, 44, 48, 56, 64
AT_COMPRESSION = 77

SUBFORMATS = ("monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse",
              "twoGbMaxExtentFlat", "streamOptimized")
ADAPTER_TYPES = ("ide", "buslogic", "lsilogic", "legacyESX")
#: createType values of descriptor files QEMU opens
DESCRIPTOR_TYPES = ("monolithicFlat", "vmfs", "vmfsSparse", "twoGbMaxExtentSparse",
                    "twoGbMaxExtentFlat")


def div_up(a: int, b: int) -> int:
    return -(-a // b)


class Header(Record):
    """A sparse extent's header (the fields after the magic; a record, as
    :mod:`vmforge.record` explains)."""

    __slots__ = __match_args__ = (
        "version", "flags", "capacity", "granularity", "desc_offset", "desc_size", "num_gtes",
        "rgd_offset", "gd_offset", "grain_offset", "compression", "check_bytes")
    version: int
    flags: int
    capacity: int
    granularity: int
    desc_offset: int
    desc_size: int
    num_gtes: int
    rgd_offset: int
    gd_offset: int
    grain_offset: int
    compression: int
    check_bytes: bytes

    def __init__(self, version: int, flags: int, capacity: int, granularity: int,
                 desc_offset: int, desc_size: int, num_gtes: int, rgd_offset: int,
                 gd_offset: int, grain_offset: int, compression: int = 0,
                 check_bytes: bytes = CHECK_BYTES) -> None:
        self.version = version
        self.flags = flags
        self.capacity = capacity
        self.granularity = granularity
        self.desc_offset = desc_offset
        self.desc_size = desc_size
        self.num_gtes = num_gtes
        self.rgd_offset = rgd_offset
        self.gd_offset = gd_offset
        self.grain_offset = grain_offset
        self.compression = compression
        self.check_bytes = check_bytes

    @classmethod
    def unpack(cls, raw: bytes) -> Header:
        """From the first 79 bytes of the extent (magic included)."""
        (version, flags, capacity, grain, desc, desc_size, gtes, rgd, gd, grain_offset,
         _filler, check, compression) = _HEADER.unpack_from(raw, 4)
        return cls(version, flags, capacity, grain, desc, desc_size, gtes, rgd, gd,
                   grain_offset, compression, check)

    def pack(self) -> bytes:
        return MAGIC + _HEADER.pack(self.version, self.flags, self.capacity,
                                    self.granularity, self.desc_offset, self.desc_size,
                                    self.num_gtes, self.rgd_offset, self.gd_offset,
                                    self.grain_offset, b"\0", self.check_bytes,
                                    self.compression)

    @property
    def compressed(self) -> bool:
        return self.compression == COMPRESSION_DEFLATE


class SparseGeometry(FrozenRecord):
    """Where qemu-img puts the tables of a new sparse extent of ``size`` bytes."""

    __slots__ = __match_args__ = ("header", "gd_sectors", "gt_sectors", "gt_count")
    header: Header
    gd_sectors: int
    gt_sectors: int
    gt_count: int

    def __init__(self, header: Header, gd_sectors: int, gt_sectors: int,
                 gt_count: int) -> None:
        object.__setattr__(self, "header", header)
        object.__setattr__(self, "gd_sectors", gd_sectors)
        object.__setattr__(self, "gt_sectors", gt_sectors)
        object.__setattr__(self, "gt_count", gt_count)


def new_sparse_header(size: int, compress: bool, zeroed_grain: bool) -> SparseGeometry:
    """The header and table geometry of a new sparse extent, as QEMU lays it out:
    header, embedded descriptor (20 sectors), redundant GD and its tables, GD and
    its tables, then grains from the next 64 KiB boundary."""
    granularity, gtes = 128, 512
    capacity = size // SECTOR
    grains = div_up(capacity, granularity)
    gt_sectors = div_up(gtes * 4, SECTOR)
    gt_count = div_up(grains, gtes)
    gd_sectors = div_up(gt_count * 4, SECTOR)
    desc_offset, desc_size = 1, 20
    rgd = desc_offset + desc_size
    gd = rgd + gd_sectors + gt_sectors * gt_count
    grain_offset = div_up(gd + gd_sectors + gt_sectors * gt_count, granularity) * granularity
    version = 3 if compress else 2 if zeroed_grain else 1
    flags = (F_RGD | F_NL_DETECT | (F_COMPRESS | F_MARKER if compress else 0)
             | (F_ZERO_GRAIN if zeroed_grain else 0))
    header = Header(version, flags, capacity, granularity, desc_offset, desc_size, gtes,
                    rgd, gd, grain_offset, COMPRESSION_DEFLATE if compress else 0)
    return SparseGeometry(header, gd_sectors, gt_sectors, gt_count)


def gd_bytes(geo: SparseGeometry, gd_sector: int) -> bytes:
    """A new grain directory at ``gd_sector``, its tables right behind it."""
    first = gd_sector + geo.gd_sectors
    raw = struct.pack(f"<{geo.gt_count}I",
                      *(first + i * geo.gt_sectors for i in range(geo.gt_count)))
    return raw.ljust(geo.gd_sectors * SECTOR, b"\0")


# -- the descriptor ---------------------------------------------------------------------------

class ExtentLine(FrozenRecord):
    """An extent line of a descriptor."""

    __slots__ = __match_args__ = ("access", "sectors", "kind", "filename", "offset", "line")
    access: str
    sectors: int
    kind: str          # FLAT, SPARSE, VMFS, VMFSSPARSE, ...
    filename: str
    offset: int        # sectors into the file (flat extents)
    line: str

    def __init__(self, access: str, sectors: int, kind: str, filename: str, offset: int,
                 line: str) -> None:
        object.__setattr__(self, "access", access)
        object.__setattr__(self, "sectors", sectors)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "filename", filename)
        object.__setattr__(self, "offset", offset)
        object.__setattr__(self, "line", line)


class DescriptorError(ValueError):
    """A descriptor that cannot be used (the message says why)."""


_HEX = frozenset("0123456789abcdefABCDEF")


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _skip_word(text: str, i: int) -> int:
    while i < len(text) and not text[i].isspace():
        i += 1
    return i


def _number_end(text: str, i: int) -> int:
    """Where ``[+-]?\\d+`` at ``i`` ends, or -1 if none is there."""
    j = i + 1 if text[i:i + 1] in ("+", "-") else i
    k = j
    while k < len(text) and text[k].isdecimal():
        k += 1
    return k if k > j else -1


def match_extent(line: str) -> tuple[str, str, str, str, str | None] | None:
    """An extent line's access, sectors, type, file name and offset (None: none given),
    or None if it is not one: the regular expression
    ``\\s*(\\S{1,10})\\s+([+-]?\\d+)\\s+(\\S{1,10})\\s+"([^\\n\\r"]{1,511})"(?:\\s+([+-]?\\d+))?``
    matched at the start of ``line`` (QEMU's sscanf), in string code: :mod:`re` is not
    imported at start-up."""
    words = []
    i = _skip_space(line, 0)
    for _ in range(3):          # access, sectors, type: each followed by white space
        end = _skip_word(line, i)
        after = _skip_space(line, end)
        if not 1 <= end - i <= 10 or after == end:
            return None
        words.append(line[i:end])
        i = after
    if _number_end(words[1], 0) != len(words[1]) or line[i:i + 1] != '"':
        return None
    end = i + 1
    while end < len(line) and line[end] not in '\n\r"':
        end += 1
    if not 1 <= end - i - 1 <= 511 or line[end:end + 1] != '"':
        return None
    name = line[i + 1:end]
    at = _skip_space(line, end + 1)
    stop = _number_end(line, at) if at > end + 1 else -1
    return words[0], words[1], words[2], name, line[at:stop] if stop >= 0 else None


def _value(text: str, name: str) -> str | None:
    """``name="value"`` as QEMU finds it: the first occurrence, two characters on."""
    at = text.find(name)
    if at < 0:
        return None
    start = at + len(name) + 2
    end = text.find('"', start)
    if start >= len(text) or end < 0:
        return None
    return text[start:end]


def read_cid(text: str, parent: bool) -> int:
    """``CID`` (or ``parentCID``): the first occurrence, hex after the ``=``."""
    name = "parentCID" if parent else "CID"
    at = text.find(name)
    if at < 0:
        raise DescriptorError(f"descriptor has no {name}")
    rest = text[at + len(name) + 1:]        # ``\\s*([+-]?(?:0[xX])?[0-9a-fA-F]+)``:
    i = _skip_space(rest, 0)
    j = i + 1 if rest[i:i + 1] in ("+", "-") else i
    if rest[j:j + 2] in ("0x", "0X") and rest[j + 2:j + 3] in _HEX:
        j += 2
    k = j
    while k < len(rest) and rest[k] in _HEX:
        k += 1
    if k == j:
        raise DescriptorError(f"descriptor's {name} is not a hex number")
    return int(rest[i:k], 16) & 0xFFFFFFFF


def create_type(text: str) -> str:
    value = _value(text, "createType")
    if value is None:
        raise DescriptorError("invalid VMDK image descriptor (no createType)")
    return value


def parent_hint(text: str) -> str | None:
    at = text.find("parentFileNameHint")
    if at < 0:
        return None
    start = at + len("parentFileNameHint") + 2
    end = text.find('"', start)
    if end < 0:
        raise DescriptorError("parentFileNameHint is not terminated")
    return text[start:end] or None


def extent_lines(text: str) -> list[ExtentLine]:
    """The extent lines QEMU uses: access ``RW`` and a known type (others skipped)."""
    out = []
    for line in text.split("\n"):
        m = match_extent(line)
        if not m or m[0] != "RW":
            continue
        access, sectors, kind, name, offset = m
        n = int(sectors)
        if kind == "FLAT":
            if offset is None or int(offset) < 0:
                raise DescriptorError(f"Invalid extent line: {line.rstrip()}")
        elif kind == "VMFS":
            if offset is not None:
                raise DescriptorError(f"Invalid extent line: {line.rstrip()}")
            offset = "0"
        elif offset is not None:
            raise DescriptorError(f"Invalid extent line: {line.rstrip()}")
        if n <= 0 or kind not in ("FLAT", "SPARSE", "VMFS", "VMFSSPARSE", "SESPARSE"):
            continue
        out.append(ExtentLine(access, n, kind, name, int(offset or 0), line.rstrip()))
    return out


def make_descriptor(cid: int, parent_cid: int, subformat: str, parent: str | None,
                    extents: list[str], hwversion: str, size: int, adapter: str,
                    toolsversion: str) -> str:
    """The descriptor qemu-img writes (``extents``: the extent lines, newline-ended)."""
    heads = 16 if adapter == "ide" else 255
    parent_line = f'parentFileNameHint="{parent}"' if parent else ""
    return ("# Disk DescriptorFile\n"
            "version=1\n"
            f"CID={cid:x}\n"
            f"parentCID={parent_cid:x}\n"
            f'createType="{subformat}"\n'
            f"{parent_line}"
            "\n"
            "# Extent description\n"
            f"{''.join(extents)}"
            "\n"
            "# The Disk Data Base\n"
            "#DDB\n"
            "\n"
            f'ddb.virtualHWVersion = "{hwversion}"\n'
            f'ddb.geometry.cylinders = "{size // (63 * heads * SECTOR)}"\n'
            f'ddb.geometry.heads = "{heads}"\n'
            'ddb.geometry.sectors = "63"\n'
            f'ddb.adapterType = "{adapter}"\n'
            f'ddb.toolsVersion = "{toolsversion}"\n')


def with_cid(text: str, cid: int) -> str:
    """The descriptor with a new ``CID`` (QEMU's rewrite: up to ``CID=``, the new
    value, then everything from ``parentCID`` on)."""
    tail = text.find("parentCID")
    at = text.find("CID")
    if tail < 0 or at < 0:
        raise DescriptorError("descriptor has no CID/parentCID to update")
    return f"{text[:at + 4]}{cid:x}\n{text[tail:]}"


def decompose(path: str) -> tuple[str, str, str]:
    """``dir/``, the name before its last dot, and the rest (QEMU's filename_decompose)."""
    slash = path.rfind("/")
    directory, name = (path[:slash + 1], path[slash + 1:]) if slash >= 0 else ("", path)
    dot = name.rfind(".")
    if dot < 0:
        return directory, name, ""
    return directory, name[:dot], name[dot:]
