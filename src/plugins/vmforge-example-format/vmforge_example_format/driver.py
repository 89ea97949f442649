"""The ``example`` format: a header, a block table, and the blocks in use.

Layout (all integers little-endian)::

    0       header (HEADER_SIZE bytes)
              magic "VMFXMAP\\0", version 1, header size, virtual size,
              block size, table offset, table entries, backing name and
              format lengths, CRC-32 of the header; then the backing file
              name and format
    4096    block table: one u64 per block of the virtual disk
              0: not allocated here (reads from the backing file, or zeros)
              1: reads as zeros
              n: the block's data is at byte n of the file (a multiple of
                 the block size)
    ...     data blocks, appended as they are first written

A block is written before the table entry that points at it, so a crash
leaves at worst an unused block, never an entry pointing at garbage.
"""

from __future__ import annotations

import os
import struct
import sys
import zlib
from array import array
from collections.abc import Sequence
from typing import Any, Self

from vmforge.block.driver import (
    BlockError,
    BlockStatus,
    CheckResult,
    CorruptImageError,
    CreateOption,
    ImageInfo,
)
from vmforge.block.mapped import MappedImage, open_image_file
from vmforge_example_format.probe import MAGIC
from vmforge_example_format.probe import probe as _probe

VERSION = 1
HEADER_SIZE = 4096
# magic, version, header size, virtual size, block size, table offset, entries,
# backing name length, backing format length, crc32
_HEADER = struct.Struct("<8sIIQIQQHHI")
_CRC_AT = _HEADER.size - 4
_NAMES_AT = 64
_MAX_NAME = 1024
_MAX_FMT = 32
_MAX_ENTRIES = 1 << 24           # a 128 MiB table at most: refuse absurd headers
UNALLOCATED, ZERO = 0, 1
_DATA = BlockStatus.DATA | BlockStatus.ALLOCATED
_ZERO = BlockStatus.ZERO | BlockStatus.ALLOCATED
_NONE = BlockStatus(0)


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _block_size(text: Any) -> int:
    from vmforge.block.driver import parse_size

    n = parse_size(text)
    if not _power_of_two(n) or not 4096 <= n <= 1 << 21:
        raise ValueError(f"block_size {n} is not a power of two from 4 KiB to 2 MiB")
    return n


def _entries(size: int, bs: int) -> int:
    return -(-size // bs)


def _table_bytes(entries: int, bs: int) -> int:
    """Room for the table: whole blocks, at least one."""
    return max(1, -(-entries * 8 // bs)) * bs


def _pack_header(size: int, bs: int, table_offset: int, entries: int,
                 backing: str | None, backing_fmt: str | None) -> bytes:
    name = (backing or "").encode()
    fmt = (backing_fmt or "").encode()
    if len(name) > _MAX_NAME or len(fmt) > _MAX_FMT:
        raise BlockError("backing file name or format too long for the example format")
    fields = [MAGIC, VERSION, HEADER_SIZE, size, bs, table_offset, entries, len(name), len(fmt)]
    raw = bytearray(HEADER_SIZE)
    raw[:_HEADER.size] = _HEADER.pack(*fields, 0)
    raw[_NAMES_AT:_NAMES_AT + len(name)] = name
    raw[_NAMES_AT + _MAX_NAME:_NAMES_AT + _MAX_NAME + len(fmt)] = fmt
    struct.pack_into("<I", raw, _CRC_AT, zlib.crc32(raw))
    return bytes(raw)


class ExampleFormat(MappedImage):
    """A sparse image with a flat block table and optional backing file.

    :class:`~vmforge.block.mapped.MappedImage` does the reads, writes and
    ``block_status`` from :meth:`_cluster_status` and :meth:`_allocate`; a
    "cluster" there is a block here.
    """

    format_name = "example"
    supports_backing = True
    create_options = {
        "block_size": CreateOption("block_size", _block_size, 65536,
                                   "allocation unit in bytes (4K..2M, a power of two)"),
        "backing_file": CreateOption("backing_file", str, None, "file name of a base image"),
        "backing_fmt": CreateOption("backing_fmt", str, None, "format of the base image"),
    }

    def __init__(self, filename: str, readonly: bool, fd: int, header: tuple[Any, ...],
                 backing: str | None, backing_fmt: str | None) -> None:
        super().__init__(filename, readonly, fd)
        (_, _, _, self._size, self.cluster_size, self.table_offset, n, _, _, _) = header
        self.granularity = self.cluster_size
        self._backing = backing
        self._backing_fmt = backing_fmt
        raw = os.pread(fd, n * 8, self.table_offset)
        if len(raw) != n * 8:
            raise CorruptImageError("block table extends past the end of the file", filename,
                                    self.table_offset, "block table")
        self.table = array("Q", raw)
        if sys.byteorder == "big":
            self.table.byteswap()
        self._table_room = _table_bytes(n, self.cluster_size) // 8
        self._file_end = os.fstat(fd).st_size

    # -- class level -------------------------------------------------------------------

    @classmethod
    def probe(cls, header: bytes, filename: str) -> int:
        return _probe(header, filename)

    @classmethod
    def create(cls, path: str, size: int, **options: Any) -> None:
        opts = cls.parse_create_options(options)
        bs = opts["block_size"]
        if size < 0:
            raise BlockError(f"size {size} is negative", path)
        entries = _entries(size, bs)
        if entries > _MAX_ENTRIES:
            raise BlockError(f"size {size} needs more than {_MAX_ENTRIES} blocks; "
                             "use a larger block_size", path)
        table_offset = max(HEADER_SIZE, bs)
        header = _pack_header(size, bs, table_offset, entries, opts["backing_file"],
                              opts["backing_fmt"])
        try:
            with open(path, "wb") as f:
                f.write(header)
                f.truncate(table_offset + _table_bytes(entries, bs))
        except OSError as exc:
            raise BlockError(f"cannot create: {exc.strerror}", path) from exc

    @classmethod
    def measure(cls, size: int, allocated: Sequence[tuple[int, int]] | None,
                **options: Any) -> dict[str, int]:
        bs = cls.parse_create_options(options)["block_size"]
        meta = max(HEADER_SIZE, bs) + _table_bytes(_entries(size, bs), bs)
        blocks = set()
        for off, length in allocated or ():
            blocks.update(range(off // bs, _entries(off + length, bs)))
        return {"required": meta + len(blocks) * bs,
                "fully-allocated": meta + _entries(size, bs) * bs}

    @classmethod
    def open(cls, path: str, *, readonly: bool = True, **options: Any) -> Self:
        with open_image_file(path, readonly) as fd:   # closed again if the header is refused
            header, backing, fmt = cls._read_header(fd, path)
            return cls(path, readonly, fd, header, backing, fmt)

    @staticmethod
    def _read_header(fd: int, path: str) -> tuple[tuple[Any, ...], str | None, str | None]:
        raw = bytearray(os.pread(fd, HEADER_SIZE, 0))
        if raw[:8] != MAGIC:
            raise BlockError("not an image of the example format (bad magic)", path)
        if len(raw) < HEADER_SIZE:
            raise CorruptImageError(f"header truncated to {len(raw)} bytes", path, 0, "header")
        header = _HEADER.unpack_from(raw)
        _, version, hsize, size, bs, table, n, name_len, fmt_len, crc = header
        if version != VERSION:
            raise BlockError(f"example format version {version} is not supported", path)
        struct.pack_into("<I", raw, _CRC_AT, 0)
        if zlib.crc32(raw) != crc:
            raise CorruptImageError("header checksum mismatch", path, _CRC_AT, "header")
        if hsize != HEADER_SIZE or not _power_of_two(bs) or not 4096 <= bs <= 1 << 21:
            raise CorruptImageError(f"header size {hsize} or block size {bs} is invalid",
                                    path, 0, "header")
        if n != _entries(size, bs) or n > _MAX_ENTRIES:
            raise CorruptImageError(f"{n} table entries do not fit virtual size {size}",
                                    path, 0, "header")
        if table < HEADER_SIZE or table % bs or name_len > _MAX_NAME or fmt_len > _MAX_FMT:
            raise CorruptImageError("table offset or name lengths invalid", path, 0, "header")
        try:
            name = bytes(raw[_NAMES_AT:_NAMES_AT + name_len]).decode() or None
            at = _NAMES_AT + _MAX_NAME
            fmt = bytes(raw[at:at + fmt_len]).decode() or None
        except UnicodeDecodeError:
            raise CorruptImageError("backing file name is not UTF-8", path, _NAMES_AT,
                                    "header") from None
        return header, name, fmt

    # -- the image ---------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self._size

    @property
    def backing_filename(self) -> str | None:
        return self._backing

    @property
    def backing_format(self) -> str | None:
        return self._backing_fmt

    def _host(self, i: int) -> int:
        """The data offset of block ``i`` (an entry above ZERO), checked."""
        host, bs = self.table[i], self.cluster_size
        table_end = self.table_offset + self._table_room * 8
        if (host % bs or host < HEADER_SIZE or host + bs > self._file_end
                or (host < table_end and host + bs > self.table_offset)):
            raise CorruptImageError(f"entry {i} points at {host:#x}, outside the data area",
                                    self.filename, self.table_offset + 8 * i, "block table")
        return host

    def _cluster_status(self, i: int) -> tuple[BlockStatus, int | None]:
        entry = self.table[i]
        if entry == UNALLOCATED:
            return _NONE, None   # not here: the backing file (or zeros)
        if entry == ZERO:
            return _ZERO, None
        return _DATA, self._host(i)

    def _allocate(self, i: int, within: int, data: memoryview) -> None:
        bs = self.cluster_size
        block = bytearray(bs)  # the block read as zeros before (unallocated or zero)
        block[within:within + data.nbytes] = data
        host = -(-self._file_end // bs) * bs
        os.pwrite(self.fd, block, host)
        self._file_end = host + bs
        self._set_entry(i, host)

    def _set_entry(self, i: int, value: int) -> None:
        self.table[i] = value
        os.pwrite(self.fd, struct.pack("<Q", value), self.table_offset + 8 * i)

    def write_zeroes(self, offset: int, length: int, may_unmap: bool = False) -> None:
        """Whole unallocated blocks become zero blocks (nothing written); the rest
        get zero bytes."""
        self._check_writable()
        self._check_range(offset, length)
        with self._lock:
            for i, within, n in self._pieces(offset, length):
                entry = self.table[i]
                if entry == ZERO:
                    continue
                whole = within == 0 and (n == self.cluster_size or
                                         i * self.cluster_size + n == self._size)
                if entry == UNALLOCATED and whole:
                    self._set_entry(i, ZERO)
                else:
                    self._write_piece(i, within, memoryview(bytes(n)))

    def truncate(self, size: int) -> None:
        self._check_writable()
        if size < 0:
            raise BlockError(f"size {size} is negative", self.filename)
        bs = self.cluster_size
        n = _entries(size, bs)
        if n > _MAX_ENTRIES:
            raise BlockError(f"size {size} needs too many blocks", self.filename)
        with self._lock:
            old = len(self.table)
            if size < self._size and size % bs and self.table[n - 1] > ZERO:
                tail = size % bs  # bytes past the new end must read as zeros if it regrows
                os.pwrite(self.fd, bytes(bs - tail), self._host(n - 1) + tail)
            # with a backing file, new blocks read as zeros, not as the backing file's data
            fill = ZERO if self._backing else UNALLOCATED
            table = self.table[:n] if n <= old else self.table + array("Q", [fill]) * (n - old)
            if n > self._table_room:  # move the table to the end of the file
                self.table_offset = -(-self._file_end // bs) * bs
                self._table_room = _table_bytes(n, bs) // 8
                self._file_end = self.table_offset + self._table_room * 8
                os.ftruncate(self.fd, self._file_end)
            raw = array("Q", table)
            if sys.byteorder == "big":
                raw.byteswap()
            os.pwrite(self.fd, raw.tobytes() + bytes(8 * (max(old - n, 0))), self.table_offset)
            self.table = table
            self._size = size
            self._write_header()

    def _write_header(self) -> None:
        os.pwrite(self.fd, _pack_header(self._size, self.cluster_size, self.table_offset,
                                        len(self.table), self._backing, self._backing_fmt), 0)

    def change_backing_file(self, filename: str | None, fmt: str | None) -> None:
        self._check_writable()
        with self._lock:
            self._backing, self._backing_fmt = filename or None, fmt or None
            self._write_header()

    def check(self, repair: str | None = None) -> CheckResult:
        result = CheckResult(self.filename, self.format_name, image_end_offset=self._file_end)
        owner: dict[int, int] = {}
        for i, entry in enumerate(self.table):
            if entry <= ZERO:
                continue
            try:
                self._host(i)
            except CorruptImageError as exc:
                result.corruptions += 1
                result.messages.append(f"ERROR {exc}")
                continue
            if entry in owner:
                result.corruptions += 1
                result.messages.append(f"ERROR blocks {owner[entry]} and {i} share the data "
                                       f"at {entry:#x}")
            owner[entry] = i
        return result

    def info(self) -> ImageInfo:
        return self._info(cluster_size=self.cluster_size, backing_filename=self._backing,
                          backing_format=self._backing_fmt,
                          format_specific={"version": VERSION, "table-entries": len(self.table)})
