"""The dmg format driver: Apple's flat UDIF images, as QEMU's ``dmg`` driver reads them,
and written by vmforge.

Reads take chunks of type zero, ignore (both read as zeros), raw, zlib,
bzip2 and lzfse (ADC is refused when the image is opened). Probing is by
content: the koly trailer in the file's last 512 bytes (QEMU goes by the
``.dmg`` suffix). The chunk tables must cover the disk exactly, once.

A compressed image cannot be changed in place, so a read-write open keeps the
disk in a sparse temporary file next to the image, and ``flush`` (and
``close``) write the whole image again from it, each chunk compressed as the
image was made (``create``'s ``compression``, recorded in the property
list) unless it is all zeros or does not shrink.
"""

from __future__ import annotations

import bisect
import collections
import os
from collections.abc import Iterator, Sequence

from vmforge.block.driver import (
    BlockError,
    BlockStatus,
    CheckResult,
    CorruptImageError,
    CreateOption,
    Extent,
    ImageInfo,
)
from vmforge.block.fileio import fill_zero, preadv_full, pwritev_full
from vmforge.block.mapped import FileImage, file_extents, merge_extents, open_image_file
from vmforge_dmg.layout import (
    BZIP2,
    CHUNK_NAMES,
    COMPRESSIONS,
    IGNORE,
    LZFSE,
    MAX_CHUNK_BYTES,
    MAX_PLIST,
    RAW,
    SECTOR,
    ZERO,
    ZLIB,
    Chunk,
    Koly,
    LayoutError,
    decode_chunk,
    encode_image,
    parse_plist,
    parse_resource_fork,
)
from vmforge_dmg.probe import probe as _probe

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Self

KOLY_SEARCH = 515   # QEMU looks for "koly" in the last 515 bytes (odd-sized files)
_DATA = BlockStatus.DATA | BlockStatus.ALLOCATED
_ZERO = BlockStatus.ZERO | BlockStatus.ALLOCATED
_COMPRESSED = _DATA | BlockStatus.COMPRESSED
_READABLE = (ZERO, IGNORE, RAW, ZLIB, BZIP2, LZFSE)


class Table:
    """What the trailer and the chunk tables say: the size, the chunks in order."""

    def __init__(self, koly_at: int, koly: Koly, chunks: list[Chunk],
                 settings: dict[str, Any]) -> None:
        self.koly_at = koly_at
        self.size = koly.sector_count * SECTOR
        self.chunks = chunks
        self.starts = [c.sector for c in chunks]
        self.settings = settings

    @classmethod
    def read(cls, fd: int, path: str) -> Table:
        try:
            return cls._read(fd, path)
        except LayoutError as exc:
            raise CorruptImageError(str(exc), path, exc.offset, exc.table) from None

    @classmethod
    def _read(cls, fd: int, path: str) -> Table:
        size = os.fstat(fd).st_size
        if size < 512:
            raise BlockError("not a dmg image: shorter than its 512-byte trailer", path)
        start = max(0, size - KOLY_SEARCH)
        tail = os.pread(fd, size - start, start)
        found = tail.find(b"koly")
        at = start + found
        if found < 0 or at + 512 > size:
            raise BlockError("not a dmg image: no UDIF trailer (koly) at its end", path)
        koly = Koly.parse(os.pread(fd, 512, at), at)
        if koly.data_fork_offset > at:
            raise LayoutError(f"data fork at {koly.data_fork_offset:#x} is past the trailer",
                              at + 0x18, "koly trailer")
        if koly.rsrc_offset >= at or koly.rsrc_length > at - koly.rsrc_offset:
            raise LayoutError("resource fork outside the file", at + 0x28, "koly trailer")
        if koly.xml_offset >= at or koly.xml_length > at - koly.xml_offset:
            raise LayoutError("property list outside the file", at + 0xD8, "koly trailer")
        if koly.sector_count >= 1 << 54:
            raise LayoutError(f"sector count {koly.sector_count} is too large", at + 0x1EC,
                              "koly trailer")
        settings: dict[str, Any] = {}
        if koly.rsrc_length:
            chunks = parse_resource_fork(lambda o, n: os.pread(fd, n, o), koly.rsrc_offset,
                                         koly.rsrc_length, koly.data_fork_offset)
        elif koly.xml_length:
            if koly.xml_length > MAX_PLIST:
                raise LayoutError(f"property list of {koly.xml_length} bytes (at most "
                                  f"{MAX_PLIST})", at + 0xE0, "koly trailer")
            xml = os.pread(fd, koly.xml_length, koly.xml_offset)
            chunks, settings = parse_plist(xml, koly.data_fork_offset, koly.xml_offset)
        else:
            raise LayoutError("neither a property list nor a resource fork", at + 0xE0,
                              "koly trailer")
        return cls(at, koly, _checked(chunks, koly.sector_count, at, path), settings)

    def find(self, sector: int) -> int:
        return bisect.bisect_right(self.starts, sector) - 1


def _checked(chunks: list[Chunk], sectors: int, koly_at: int, path: str) -> list[Chunk]:
    """The chunks in order, each one checked; they must cover the disk once."""
    out = []
    for c in chunks:
        where = c.entry if c.entry is not None else koly_at + 0xD8
        table = "chunk table" if c.entry is not None else "property list"
        if c.type not in _READABLE:
            name = CHUNK_NAMES.get(c.type, f"{c.type:#x}")
            raise BlockError(f"chunk type {name} is not supported (sector {c.sector})", path)
        if c.count == 0:
            continue
        if c.type not in (ZERO, IGNORE):
            if c.count * SECTOR > MAX_CHUNK_BYTES or c.length > MAX_CHUNK_BYTES:
                raise LayoutError(f"chunk at sector {c.sector}: {c.count} sectors, "
                                  f"{c.length} bytes stored (at most 64 MiB)", where, table)
            if c.offset + c.length > koly_at:
                raise LayoutError(f"chunk at sector {c.sector} stored at {c.offset:#x} is "
                                  "past the data", where, table)
            if c.type == RAW and c.length != c.count * SECTOR:
                raise LayoutError(f"raw chunk at sector {c.sector} stores {c.length} bytes "
                                  f"for {c.count} sectors", where, table)
        out.append(c)
    out.sort(key=lambda c: c.sector)
    pos = 0
    for c in out:
        if c.sector != pos:
            what = "overlap" if c.sector < pos else f"leave sectors {pos} to {c.sector - 1} out"
            raise LayoutError(f"the chunks {what}", koly_at + 0xD8, "chunk table")
        pos = c.sector + c.count
    if pos != sectors:
        raise LayoutError(f"the chunks cover {pos} sectors of {sectors}", koly_at + 0x1EC,
                          "chunk table")
    return out


class Dmg(FileImage):
    """A flat UDIF image."""

    format_name = "dmg"
    granularity = SECTOR
    locked_reads = True
    create_options = {
        "compression": CreateOption("compression", str, "zlib", "how chunks are stored",
                                    tuple(COMPRESSIONS)),
        "chunk_size": CreateOption("chunk_size", int, 1 << 20,
                                   "bytes of disk per chunk (a multiple of 512, up to 64M)"),
    }

    def __init__(self, filename: str, readonly: bool, fd: int, table: Table) -> None:
        super().__init__(filename, readonly, fd)
        self.table = table
        self._size = table.size
        self._cache: tuple[int, bytes] | None = None
        self._shadow: int | None = None
        self._dirty = False
        self.compression = table.settings.get("compression") or _usual_compression(
            table.chunks)
        self.chunk_size = table.settings.get("chunk_size", 1 << 20)

    # -- probe, open, create ----------------------------------------------------------

    @classmethod
    def probe(cls, header: bytes, filename: str) -> int:
        return _probe(header, filename)

    @classmethod
    def open(cls, path: str, *, readonly: bool = True, **options: Any) -> Self:
        with open_image_file(path, readonly) as fd:
            drv = cls(path, readonly, fd, Table.read(fd, path))
            if not readonly:
                drv._load_shadow()
            return drv

    @classmethod
    def create(cls, path: str, size: int, **options: Any) -> None:
        opts = cls.parse_create_options(options)
        chunk = opts["chunk_size"]
        if size % SECTOR:
            raise BlockError(f"size {size} is not a multiple of {SECTOR}", path)
        if chunk <= 0 or chunk % SECTOR or chunk > MAX_CHUNK_BYTES:
            raise BlockError(f"chunk_size {chunk} is not a multiple of 512 up to 64 MiB", path)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            encode_image(fd, size, lambda at, n: bytes(n), compression=opts["compression"],
                         chunk_size=MAX_CHUNK_BYTES, recorded_chunk_size=chunk,
                         is_hole=lambda at, n: True)
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- reading the image ---------------------------------------------------------------

    @property
    def size(self) -> int:
        return self._size

    def _decoded(self, i: int) -> bytes:
        """Chunk ``i``'s sectors, decompressed (the last one is kept)."""
        if self._cache is not None and self._cache[0] == i:
            return self._cache[1]
        c = self.table.chunks[i]
        stored = os.pread(self.fd, c.length, c.offset)
        try:
            if len(stored) != c.length:
                raise ValueError("the file ends inside it")
            data = decode_chunk(c, stored)
        except ValueError as exc:
            raise CorruptImageError(f"{CHUNK_NAMES[c.type]} chunk for sectors {c.sector} to "
                                    f"{c.sector + c.count - 1}: {exc}", self.filename,
                                    c.offset, "data fork") from None
        self._cache = (i, data)
        return data

    def _read_image(self, offset: int, view: memoryview) -> None:
        pos, end = 0, view.nbytes
        while pos < end:
            at = offset + pos
            i = self.table.find(at // SECTOR)
            c = self.table.chunks[i]
            within = at - c.sector * SECTOR
            n = min(end - pos, c.count * SECTOR - within)
            part = view[pos:pos + n]
            if c.type in (ZERO, IGNORE):
                fill_zero(part)
            elif c.type == RAW:
                preadv_full(self.fd, c.offset + within, [part])
            else:
                part[:] = self._decoded(i)[within:within + n]
            pos += n

    def preadv(self, offset: int, buffers: Sequence[memoryview]) -> None:
        views = self._checked_views(offset, buffers)
        with self._lock:
            for v in views:
                if self._shadow is not None:
                    preadv_full(self._shadow, offset, [v])
                else:
                    self._read_image(offset, v)
                offset += v.nbytes

    def block_status(self, offset: int, length: int) -> Iterator[Extent]:
        self._check_range(offset, length)
        if self._shadow is not None:
            for e in file_extents(self._shadow, offset, length, self.filename):
                yield Extent(e.offset, e.length, e.status, None, 0, self.filename)
            return
        yield from merge_extents(self._runs(offset, length), self.filename)

    def _runs(self, offset: int, length: int) -> Iterator[tuple[int, int, BlockStatus,
                                                                int | None]]:
        end = offset + length
        while offset < end:
            c = self.table.chunks[self.table.find(offset // SECTOR)]
            within = offset - c.sector * SECTOR
            n = min(end - offset, c.count * SECTOR - within)
            if c.type in (ZERO, IGNORE):
                yield offset, n, _ZERO, None
            elif c.type == RAW:
                yield offset, n, _DATA, c.offset + within
            else:
                yield offset, n, _COMPRESSED, None
            offset += n

    # -- writing: a shadow disk, the image written again on flush ------------------------

    def _load_shadow(self) -> None:
        import tempfile  # (written images only)

        fd, name = tempfile.mkstemp(prefix=".vmforge-dmg-",
                                    dir=os.path.dirname(os.path.abspath(self.filename)))
        os.unlink(name)
        self._shadow = fd
        try:
            os.ftruncate(fd, self._size)
            for i, c in enumerate(self.table.chunks):
                if c.type in (ZERO, IGNORE):
                    continue
                data = (os.pread(self.fd, c.length, c.offset) if c.type == RAW
                        else self._decoded(i))
                pwritev_full(fd, c.sector * SECTOR, [memoryview(data)])
        except BaseException:
            os.close(fd)
            self._shadow = None
            raise
        self._cache = None

    def pwritev(self, offset: int, buffers: Sequence[memoryview]) -> None:
        self._check_writable()
        views = self._checked_views(offset, buffers)
        assert self._shadow is not None
        with self._lock:
            pwritev_full(self._shadow, offset, views)
            self._dirty = True

    def truncate(self, size: int) -> None:
        self._check_writable()
        if size < 0 or size % SECTOR:
            raise BlockError(f"size {size} is not a multiple of {SECTOR}", self.filename)
        assert self._shadow is not None
        with self._lock:
            os.ftruncate(self._shadow, size)
            self._size = size
            self._dirty = True

    def flush(self) -> None:
        if self.readonly or self.closed or self._shadow is None:
            return
        with self._lock:
            if self._dirty:
                shadow = self._shadow

                def read(at: int, n: int) -> bytes:
                    return os.pread(shadow, n, at)

                def is_hole(at: int, n: int) -> bool:
                    try:
                        return os.lseek(shadow, at, os.SEEK_DATA) >= at + n
                    except OSError:   # ENXIO: no data after at
                        return True

                encode_image(self.fd, self._size, read, compression=self.compression,
                             chunk_size=self.chunk_size, is_hole=is_hole)
                self.table = Table.read(self.fd, self.filename)
                self._dirty = False
        super().flush()

    def close(self) -> None:
        if self.closed:
            return
        try:
            super().close()
        finally:
            if self._shadow is not None:
                os.close(self._shadow)
                self._shadow = None

    # -- reports --------------------------------------------------------------------------

    def info(self) -> ImageInfo:
        kinds = collections.Counter(CHUNK_NAMES[c.type] for c in self.table.chunks)
        return self._info(format_specific={"chunks": dict(sorted(kinds.items()))})

    def check(self, repair: str | None = None) -> CheckResult:
        """Every compressed chunk must decompress to its sectors."""
        result = CheckResult(self.filename, self.format_name,
                             image_end_offset=self.table.koly_at + 512)
        with self._lock:
            for i, c in enumerate(self.table.chunks):
                if c.type in (ZLIB, BZIP2, LZFSE):
                    try:
                        self._decoded(i)
                    except CorruptImageError as exc:
                        result.corruptions += 1
                        result.messages.append(f"ERROR {exc}")
        return result


def _usual_compression(chunks: list[Chunk]) -> str:
    """The compression most data chunks use (zlib if none)."""
    kinds = collections.Counter(c.type for c in chunks if c.type in (RAW, ZLIB, BZIP2, LZFSE))
    if not kinds:
        return "zlib"
    return CHUNK_NAMES[kinds.most_common(1)[0][0]]
