"""The UDIF (``.dmg``) layout: the koly trailer, mish chunk tables, the property
list or resource fork that holds them, the chunk codecs, and the writer.

A flat UDIF image (all integers big-endian)::

    0          the data fork: chunks of the disk, stored raw or compressed
    ...        the XML property list: resource-fork / blkx / Data, each a
               base64 "mish" table (or, in old images, a binary resource fork)
    end - 512  the koly trailer: data fork and property list places, the
               disk's sector count, checksums

A mish table: a 204-byte header (first sector, sector count, data offset,
checksum, chunk count) and 40-byte chunk entries (type, sector and sector
count relative to the table, offset relative to the data fork and the
table's data offset, stored length). Chunk types: zero (0), raw (1), ignore
(2, reads as zeros), ADC (0x80000004), zlib, bzip2, lzfse (0x80000005..7),
comment (0x7ffffffe), last (0xffffffff).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable

from vmforge.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "CHUNK_NAMES",
    "COMPRESSIONS",
    "MAX_CHUNK_BYTES",
    "Chunk",
    "Koly",
    "decode_chunk",
    "encode_image",
    "parse_mish",
    "parse_plist",
    "parse_resource_fork",
]

SECTOR = 512
KOLY = b"koly"
MISH = b"mish"
ZERO, RAW, IGNORE, ADC, ZLIB, BZIP2, LZFSE = 0, 1, 2, 0x80000004, 0x80000005, 0x80000006, \
    0x80000007
COMMENT, LAST = 0x7FFFFFFE, 0xFFFFFFFF
CHUNK_NAMES = {ZERO: "zero", RAW: "raw", IGNORE: "ignore", ADC: "adc", ZLIB: "zlib",
               BZIP2: "bzip2", LZFSE: "lzfse"}
#: create option ``compression`` -> chunk type
COMPRESSIONS = {"raw": RAW, "zlib": ZLIB, "bzip2": BZIP2, "lzfse": LZFSE}
#: QEMU's bounds: a stored or decompressed chunk is at most 64 MiB, the plist 16 MiB
MAX_CHUNK_BYTES = 64 << 20
MAX_PLIST = 16 << 20
#: the plist keys in which vmforge records how its writer stores chunks
COMPRESSION_KEY = "vmforge-chunk-compression"
CHUNK_SIZE_KEY = "vmforge-chunk-size"

_KOLY = struct.Struct(">4sIIIQQQQQII16sII128sQQ120sII128sIQ12s")
_MISH = struct.Struct(">4sIQQQII24sII128sI")
_ENTRY = struct.Struct(">IIQQQQ")
assert _KOLY.size == 512 and _MISH.size == 204 and _ENTRY.size == 40


class LayoutError(ValueError):
    """Inconsistent metadata: ``offset`` is where in the file (or None), ``table`` what."""

    def __init__(self, message: str, offset: int | None, table: str) -> None:
        super().__init__(message)
        self.offset = offset
        self.table = table


class Koly(Record):
    """The fields of the trailer the reader uses (a record, as :mod:`vmforge.record`
    explains)."""

    __slots__ = __match_args__ = ("data_fork_offset", "data_fork_length", "rsrc_offset",
                                  "rsrc_length", "xml_offset", "xml_length", "sector_count")
    data_fork_offset: int
    data_fork_length: int
    rsrc_offset: int
    rsrc_length: int
    xml_offset: int
    xml_length: int
    sector_count: int

    def __init__(self, data_fork_offset: int, data_fork_length: int, rsrc_offset: int,
                 rsrc_length: int, xml_offset: int, xml_length: int,
                 sector_count: int) -> None:
        self.data_fork_offset = data_fork_offset
        self.data_fork_length = data_fork_length
        self.rsrc_offset = rsrc_offset
        self.rsrc_length = rsrc_length
        self.xml_offset = xml_offset
        self.xml_length = xml_length
        self.sector_count = sector_count

    @classmethod
    def parse(cls, raw: bytes, at: int) -> Koly:
        f = _KOLY.unpack(raw)
        if f[0] != KOLY:
            raise LayoutError("no koly trailer", at, "koly trailer")
        return cls(f[5], f[6], f[7], f[8], f[15], f[16], f[22])


class Chunk(Record):
    """One chunk entry: ``sector`` and ``count`` on the disk, ``offset`` and ``length``
    in the file (absolute), ``entry`` where the entry sits (for errors)."""

    __slots__ = __match_args__ = ("type", "sector", "count", "offset", "length", "entry")
    type: int
    sector: int
    count: int
    offset: int
    length: int
    entry: int | None

    def __init__(self, type: int, sector: int, count: int, offset: int,
                 length: int, entry: int | None = None) -> None:
        self.type = type
        self.sector = sector
        self.count = count
        self.offset = offset
        self.length = length
        self.entry = entry


def parse_mish(data: bytes, data_fork: int, where: int | None) -> list[Chunk]:
    """The chunks of a mish table (none if ``data`` is not one, as QEMU skips it)."""
    if len(data) < 244 or data[:4] != MISH:
        return []
    _, _, first, _, data_offset, _, _, _, _, _, _, n = _MISH.unpack_from(data)
    if n > (len(data) - 204) // 40:
        raise LayoutError(f"mish table claims {n} chunks in {len(data)} bytes", where,
                          "mish table")
    out = []
    for i in range(n):
        typ, _, sector, count, offset, length = _ENTRY.unpack_from(data, 204 + 40 * i)
        if typ in (COMMENT, LAST):
            continue
        entry = None if where is None else where + 204 + 40 * i
        out.append(Chunk(typ, first + sector, count, data_fork + data_offset + offset, length,
                         entry))
    return out


def parse_plist(xml: bytes, data_fork: int,
                where: int) -> tuple[list[Chunk], dict[str, Any]]:
    """The chunks of every blkx table of the XML property list, and how vmforge's
    writer stored them (``compression``, ``chunk_size``; empty if not its image)."""
    import plistlib  # (an image with an XML table only)

    try:
        plist = plistlib.loads(xml, fmt=plistlib.FMT_XML)
        tables = plist["resource-fork"]["blkx"]
        datas = [t["Data"] for t in tables]
    except Exception as exc:  # any malformed XML or structure
        raise LayoutError(f"property list unreadable ({type(exc).__name__}: {exc})", where,
                          "property list") from None
    chunks: list[Chunk] = []
    for data in datas:
        if not isinstance(data, bytes):
            raise LayoutError("a blkx Data is not data", where, "property list")
        chunks += parse_mish(data, data_fork, None)
    settings: dict[str, Any] = {}
    if plist.get(COMPRESSION_KEY) in COMPRESSIONS:
        settings["compression"] = plist[COMPRESSION_KEY]
    size = plist.get(CHUNK_SIZE_KEY)
    if isinstance(size, int) and 0 < size <= MAX_CHUNK_BYTES and size % SECTOR == 0:
        settings["chunk_size"] = size
    return chunks, settings


def parse_resource_fork(read: Callable[[int, int], bytes], begin: int, length: int,
                        data_fork: int) -> list[Chunk]:
    """The chunks of the mish tables in a binary resource fork (older images)."""
    head = read(begin, 12)
    if len(head) < 12:
        raise LayoutError("resource fork truncated", begin, "resource fork")
    data_off, _, count = struct.unpack(">III", head)
    if data_off > length or count == 0 or data_off + count > length:
        raise LayoutError("resource data outside the resource fork", begin, "resource fork")
    offset, end = begin + data_off, begin + data_off + count
    chunks: list[Chunk] = []
    while offset < end:
        raw = read(offset, 4)
        n = struct.unpack(">I", raw)[0] if len(raw) == 4 else 0
        if n == 0 or n > end - offset - 4:
            raise LayoutError(f"resource of {n} bytes runs past the resource data", offset,
                              "resource fork")
        chunks += parse_mish(read(offset + 4, n), data_fork, offset + 4)
        offset += 4 + n
    return chunks


def decode_chunk(chunk: Chunk, stored: bytes) -> bytes:
    """The ``count`` sectors a stored chunk holds; ValueError if it does not."""
    want = chunk.count * SECTOR
    if chunk.type == RAW:
        out = stored
    elif chunk.type == ZLIB:
        d = zlib.decompressobj()
        try:
            out = d.decompress(stored, want + 1)
        except zlib.error as exc:
            raise ValueError(f"zlib: {exc}") from None
        if not d.eof:
            raise ValueError("zlib stream does not end where the chunk does")
    elif chunk.type == BZIP2:
        import bz2

        b = bz2.BZ2Decompressor()
        try:
            out = b.decompress(stored, want + 1)
        except (OSError, EOFError) as exc:
            raise ValueError(f"bzip2: {exc}") from None
        if not b.eof:
            raise ValueError("bzip2 stream does not end where the chunk does")
    elif chunk.type == LZFSE:
        import lzfse

        raw = lzfse_raw_size(stored)   # the binding cannot bound its output: check first
        if raw is not None and raw != want:
            raise ValueError(f"lzfse blocks hold {raw} bytes, not {want}")
        try:
            out = lzfse.decompress(stored)
        except lzfse.error as exc:
            raise ValueError(f"lzfse: {exc}") from None
    else:
        raise ValueError(f"chunk type {chunk.type:#x} holds no data")
    if len(out) != want:
        raise ValueError(f"holds {len(out)} bytes, not {want}")
    return out


def lzfse_raw_size(stored: bytes) -> int | None:
    """How many bytes an LZFSE stream's block headers say it holds (None when a
    legacy ``bvx1`` block hides its length); ValueError for a broken stream."""
    pos, total = 0, 0
    while True:
        magic = stored[pos:pos + 4]
        if magic == b"bvx$":
            return total
        if pos + 8 > len(stored):
            raise ValueError("lzfse stream ends without its end-of-stream block")
        n_raw = struct.unpack_from("<I", stored, pos + 4)[0]
        if magic == b"bvx-":      # stored
            size = 8 + n_raw
        elif magic == b"bvxn":    # LZVN
            if pos + 12 > len(stored):
                raise ValueError("lzfse block header truncated")
            size = 12 + struct.unpack_from("<I", stored, pos + 8)[0]
        elif magic == b"bvx2":    # LZFSE v2: header size and payload sizes packed
            if pos + 32 > len(stored):
                raise ValueError("lzfse block header truncated")
            f0, f1, f2 = struct.unpack_from("<QQQ", stored, pos + 8)
            size = (f2 & 0xFFFFFFFF) + (f0 >> 20 & 0xFFFFF) + (f1 >> 40 & 0xFFFFF)
        elif magic == b"bvx1":
            return None
        else:
            raise ValueError(f"lzfse block magic {magic!r} at {pos}")
        total += n_raw
        if total > MAX_CHUNK_BYTES or size <= 0:
            raise ValueError(f"lzfse blocks hold more than {MAX_CHUNK_BYTES} bytes")
        pos += size


def _compress(typ: int, data: bytes, level: int) -> bytes:
    if typ == ZLIB:
        return zlib.compress(data, level)
    if typ == BZIP2:
        import bz2

        return bz2.compress(data, max(1, level))
    if typ == LZFSE:
        import lzfse

        return lzfse.compress(data)  # type: ignore[no-any-return]
    return data


def _mish(first: int, count: int, chunks: list[tuple[int, int, int, int, int]]) -> bytes:
    head = _MISH.pack(MISH, 1, first, count, 0, 0, len(chunks) + 1, bytes(24), 0, 0,
                      bytes(128), len(chunks) + 1)
    body = b"".join(_ENTRY.pack(t, 0, s, c, o, n) for t, s, c, o, n in chunks)
    return head + body + _ENTRY.pack(LAST, 0, count, 0, 0, 0)


def encode_image(fd: int, size: int, read: Callable[[int, int], bytes], *,
                 compression: str = "zlib", chunk_size: int = 1 << 20, level: int = 6,
                 chunk_types: Callable[[int, bytes], int] | None = None,
                 resource_fork: bool = False, recorded_chunk_size: int | None = None,
                 is_hole: Callable[[int, int], bool] | None = None) -> None:
    """Write a flat UDIF image of ``size`` bytes (a multiple of 512) read from
    ``read(offset, length)`` to ``fd`` (from its start; the file is truncated).

    Chunks of ``chunk_size`` bytes are stored by ``compression`` (``raw``,
    ``zlib``, ``bzip2``, ``lzfse``) unless they are all zeros (zero chunks,
    runs merged) or do not shrink (stored raw, as Apple's tools do).
    ``chunk_types(index, data)`` may choose each chunk's type instead (tests
    use it for ``ignore`` chunks and mixed images); ``resource_fork`` writes
    the tables as an old-style binary resource fork instead of the plist.
    ``recorded_chunk_size`` is the chunk size the plist records for later
    rewrites (default ``chunk_size``); ``is_hole(offset, length)`` says a range
    is known to read as zeros without reading it (a sparse file's holes).
    """
    os.ftruncate(fd, 0)
    default = COMPRESSIONS[compression]
    entries: list[tuple[int, int, int, int, int]] = []
    pos = 0
    fork_crc = 0   # the data fork's CRC32 (the tables carry no checksum: type 0)
    sectors = size // SECTOR
    for k, at in enumerate(range(0, size, chunk_size)):
        n = min(chunk_size, size - at)
        hole = is_hole is not None and is_hole(at, n)
        data = b"" if hole else read(at, n)
        if hole:
            typ = ZERO
        else:
            typ = chunk_types(k, data) if chunk_types else (default if any(data) else ZERO)
        s, c = at // SECTOR, n // SECTOR
        if typ in (ZERO, IGNORE):
            if entries and entries[-1][0] == typ and entries[-1][1] + entries[-1][2] == s:
                t, s0, c0, o, n = entries[-1]
                entries[-1] = (t, s0, c0 + c, o, n)
            else:
                entries.append((typ, s, c, pos, 0))
            continue
        stored = _compress(typ, data, level)
        if len(stored) >= len(data) and chunk_types is None:
            typ, stored = RAW, data
        os.pwrite(fd, stored, pos)
        fork_crc = zlib.crc32(stored, fork_crc)
        entries.append((typ, s, c, pos, len(stored)))
        pos += len(stored)
    data_fork_len = pos
    mish = _mish(0, sectors, entries)
    if resource_fork:
        blob = struct.pack(">I", len(mish)) + mish
        table = struct.pack(">III", 16, 0, len(blob)).ljust(16, b"\0") + blob
        rsrc, xml = (pos, len(table)), (0, 0)
    else:
        import plistlib

        table = plistlib.dumps({"resource-fork": {"blkx": [{
            "Attributes": "0x0050", "CFName": "whole disk (vmforge : 0)", "Data": mish,
            "ID": "0", "Name": "whole disk (vmforge : 0)"}]},
            COMPRESSION_KEY: compression,
            CHUNK_SIZE_KEY: recorded_chunk_size or chunk_size}, fmt=plistlib.FMT_XML)
        rsrc, xml = (0, 0), (pos, len(table))
    os.pwrite(fd, table, pos)
    pos += len(table)
    koly = _KOLY.pack(KOLY, 4, 512, 1, 0, 0, data_fork_len, rsrc[0], rsrc[1], 1, 1,
                      os.urandom(16), 2, 32, struct.pack(">I", fork_crc).ljust(128, b"\0"),
                      xml[0], xml[1], bytes(120), 0, 0, bytes(128), 1, sectors, bytes(12))
    os.pwrite(fd, koly, pos)


def describe(chunk: Chunk) -> dict[str, Any]:
    """A chunk as ``info`` lists it."""
    return {"type": CHUNK_NAMES.get(chunk.type, hex(chunk.type)), "sector": chunk.sector,
            "sectors": chunk.count, "offset": chunk.offset, "length": chunk.length}
