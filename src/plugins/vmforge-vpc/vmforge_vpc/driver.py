"""The vpc (VHD) format driver: fixed and dynamic images, read and write.

What QEMU's ``block/vpc.c`` does, and so what this driver does:

- the footer's checksum is verified (a mismatch refuses the image); unlike
  QEMU, the dynamic disk header's checksum is verified too;
- the virtual size is the CHS geometry's or the footer's current size,
  depending on the creator application (:func:`~vmforge_vpc.layout.uses_chs`;
  the open option ``force_size_calc=chs|current_size`` overrides it);
- sector bitmaps are not consulted on reads: an allocated block reads as
  stored; a block gets an all-ones bitmap when it is first written;
- a new block goes where the footer was, and the footer moves after it.

Differencing images (type 4) are refused.
"""

from __future__ import annotations

import errno
import os
import struct
import threading
from array import array
from collections.abc import Iterator, Sequence
from typing import Any, Self

from vmforge.block.driver import (
    BlockDriver,
    BlockError,
    BlockStatus,
    CorruptImageError,
    CreateOption,
    Extent,
    ImageInfo,
)
from vmforge.block.fileio import preadv_full, pwritev_full
from vmforge_vpc.layout import (
    COOKIE,
    DEFAULT_BLOCK_SIZE,
    DYN_CHECKSUM_AT,
    DYN_COOKIE,
    DYN_HEADER_SIZE,
    FOOTER_CHECKSUM_AT,
    FOOTER_SIZE,
    MAX_SECTORS,
    SECTOR,
    TYPE_DIFFERENCING,
    TYPE_DYNAMIC,
    TYPE_FIXED,
    TYPE_NAMES,
    UNALLOCATED,
    DynHeader,
    Footer,
    bitmap_size,
    checksum,
    create_geometry,
    new_dyn_header,
    new_footer,
    uses_chs,
)

_DATA = BlockStatus.DATA | BlockStatus.ALLOCATED
_ZERO = BlockStatus.ZERO | BlockStatus.ALLOCATED
_BAT_START = FOOTER_SIZE + DYN_HEADER_SIZE  # where qemu-img puts the BAT


def _round_up(n: int, unit: int) -> int:
    return -(-n // unit) * unit


class Vpc(BlockDriver):
    """A VHD image (QEMU's format name ``vpc``)."""

    format_name = "vpc"
    granularity = SECTOR
    create_options = {
        "subformat": CreateOption("subformat", str, "dynamic",
                                  "type of virtual hard disk: dynamic (sparse) or fixed",
                                  ("dynamic", "fixed")),
        "force_size": CreateOption(
            "force_size", bool, False,
            "keep the size asked (rounded to a sector) instead of rounding it up to "
            "the nearest CHS geometry; the footer then says 'qem2'"),
    }

    def __init__(self, filename: str, readonly: bool, fd: int, footer: Footer,
                 footer_at: int, size: int) -> None:
        super().__init__(filename, readonly)
        self.fd = fd
        self.footer = footer
        #: where the footer was found (0 for dynamic images: the copy in front)
        self.footer_at = footer_at
        self._size = size
        self._lock = threading.Lock()
        self.block_size = 0
        self.bitmap_size = 0
        self.bat_offset = 0
        self.bat = array("I")
        #: where the next block goes (and the footer sits)
        self.free_offset = 0
        self._full_bitmaps: set[int] = set()  # blocks whose bitmap was set to all ones

    # -- class level ---------------------------------------------------------------------

    @classmethod
    def probe(cls, header: bytes, filename: str) -> int:
        # as QEMU: only a footer copy at the start (dynamic images) is recognised;
        # a fixed image is a raw disk with a footer at its end
        return 100 if header[:8] == COOKIE else 0

    @classmethod
    def create(cls, path: str, size: int, **options: Any) -> None:
        opts = cls.parse_create_options(options)
        if size < 0:
            raise BlockError(f"size {size} is negative", path)
        try:
            chs, vsize = create_geometry(size, opts["force_size"])
        except ValueError as exc:
            raise BlockError(str(exc), path) from None
        dynamic = opts["subformat"] == "dynamic"
        footer = new_footer(vsize, chs, TYPE_DYNAMIC if dynamic else TYPE_FIXED,
                            opts["force_size"]).pack()
        try:
            with open(path, "wb") as f:
                if not dynamic:
                    f.truncate(vsize)
                    f.seek(vsize)
                    f.write(footer)
                    return
                entries = -(-vsize // DEFAULT_BLOCK_SIZE)
                bat_bytes = _round_up(entries * 4, SECTOR)
                f.write(footer)
                f.write(new_dyn_header(_BAT_START, entries, DEFAULT_BLOCK_SIZE))
                f.write(b"\xff" * bat_bytes)
                f.write(footer)
        except OSError as exc:
            raise BlockError(f"cannot create: {exc.strerror}", path) from exc

    @classmethod
    def open(cls, path: str, *, readonly: bool = True, **options: Any) -> Self:
        try:
            fd = os.open(path, (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC)
        except OSError as exc:
            raise BlockError(f"cannot open: {exc.strerror}", path) from exc
        try:
            return cls._open_fd(path, fd, readonly, options.get("force_size_calc"))
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def _open_fd(cls, path: str, fd: int, readonly: bool, size_calc: str | None) -> Self:
        file_size = os.fstat(fd).st_size
        raw = os.pread(fd, FOOTER_SIZE, 0)
        footer_at = 0
        if raw[:8] != COOKIE:
            if file_size < FOOTER_SIZE:
                raise BlockError("not a VHD image (too short for a footer)", path)
            footer_at = file_size - FOOTER_SIZE
            raw = os.pread(fd, FOOTER_SIZE, footer_at)
            if raw[:8] != COOKIE:
                raise BlockError("not a VHD image (no 'conectix' footer)", path)
        elif len(raw) < FOOTER_SIZE:
            raise CorruptImageError(f"footer truncated to {len(raw)} bytes", path, 0, "footer")
        footer = Footer.unpack(raw)
        if checksum(raw, FOOTER_CHECKSUM_AT) != footer.checksum:
            raise CorruptImageError(
                f"incorrect footer checksum {footer.checksum:#010x} (computed "
                f"{checksum(raw, FOOTER_CHECKSUM_AT):#010x})", path,
                footer_at + FOOTER_CHECKSUM_AT, "footer")
        if footer.disk_type == TYPE_DIFFERENCING:
            raise BlockError("differencing VHD images are not supported", path)
        expected = TYPE_DYNAMIC if footer_at == 0 else TYPE_FIXED
        if footer.disk_type != expected:
            where = "a copy at the start" if footer_at == 0 else "only at the end"
            raise CorruptImageError(
                f"disk type {footer.disk_type} does not fit a footer {where} (a "
                f"{TYPE_NAMES[expected]} image has type {expected})", path,
                footer_at + 60, "footer")
        if size_calc not in (None, "chs", "current_size"):
            raise BlockError(f"force_size_calc={size_calc!r}: use chs or current_size", path)
        by_chs = uses_chs(footer) if size_calc is None else (
            size_calc == "chs" and footer.geometry_sectors != 65535 * 16 * 255)
        sectors = (footer.geometry_sectors if by_chs else footer.current_size // SECTOR)
        if sectors > MAX_SECTORS:
            raise CorruptImageError(f"disk of {sectors} sectors is larger than the 2040 GiB "
                                    "VHD allows", path, footer_at + 40, "footer")
        size = sectors * SECTOR
        drv = cls(path, readonly, fd, footer, footer_at, size)
        if footer.disk_type == TYPE_FIXED:
            if size > footer_at:
                raise CorruptImageError(
                    f"fixed disk of {size} bytes does not fit before the footer at "
                    f"{footer_at:#x} (the image was truncated?)", path, footer_at + 48,
                    "footer")
        else:
            drv._open_dynamic(file_size)
        return drv

    def _open_dynamic(self, file_size: int) -> None:
        path, at = self.filename, self.footer.data_offset
        if at % SECTOR or at + DYN_HEADER_SIZE > file_size:
            raise CorruptImageError(f"dynamic disk header offset {at:#x} is outside the file "
                                    "or unaligned", path, 16, "footer")
        raw = os.pread(self.fd, DYN_HEADER_SIZE, at)
        if raw[:8] != DYN_COOKIE:
            raise CorruptImageError("invalid dynamic disk header cookie (not 'cxsparse')",
                                    path, at, "dynamic disk header")
        hdr = DynHeader.unpack(raw)
        if checksum(raw, DYN_CHECKSUM_AT) != hdr.checksum:
            raise CorruptImageError(
                f"incorrect dynamic disk header checksum {hdr.checksum:#010x} (computed "
                f"{checksum(raw, DYN_CHECKSUM_AT):#010x})", path, at + DYN_CHECKSUM_AT,
                "dynamic disk header")
        bs = hdr.block_size
        if bs < SECTOR or bs & (bs - 1) or bs > 1 << 28:
            raise CorruptImageError(f"invalid block size {bs}", path, at + 32,
                                    "dynamic disk header")
        entries = hdr.max_table_entries
        if entries * bs < self._size:
            raise CorruptImageError(f"block allocation table of {entries} entries is too "
                                    f"small for {self._size} bytes", path, at + 28,
                                    "dynamic disk header")
        if entries > MAX_SECTORS * SECTOR // bs:
            raise CorruptImageError(f"{entries} table entries are too many", path, at + 28,
                                    "dynamic disk header")
        table = hdr.table_offset
        if table % SECTOR or table + entries * 4 > file_size:
            raise CorruptImageError(f"block allocation table at {table:#x} of {entries} "
                                    "entries is outside the file", path, at + 16,
                                    "dynamic disk header")
        bat = array("I", os.pread(self.fd, entries * 4, table))
        if len(bat) != entries:
            raise CorruptImageError("block allocation table truncated", path, table, "BAT")
        if struct.pack("=I", 1) != struct.pack(">I", 1):
            bat.byteswap()
        self.block_size, self.bitmap_size = bs, bitmap_size(bs)
        self.bat_offset, self.bat = table, bat
        free = _round_up(table + entries * 4, SECTOR)
        span = self.bitmap_size + bs
        for entry in bat:
            if entry != UNALLOCATED:
                free = max(free, entry * SECTOR + span)
        if free > file_size:
            raise CorruptImageError(
                f"the blocks end at {free:#x}, after the end of the file ({file_size:#x}): "
                "the image has been truncated", path, table, "BAT")
        self.free_offset = free

    # -- the image -----------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self._size

    @property
    def fixed(self) -> bool:
        return self.footer.disk_type == TYPE_FIXED

    def _pieces(self, offset: int, length: int) -> Iterator[tuple[int, int, int]]:
        """(block index, offset in block, length) for each block the range touches."""
        bs = self.block_size
        end = offset + length
        while offset < end:
            i, within = divmod(offset, bs)
            n = min(bs - within, end - offset)
            yield i, within, n
            offset += n

    def _block_data(self, i: int) -> int | None:
        """Where block ``i``'s data starts in the file (None: not allocated), checked."""
        entry = self.bat[i]
        if entry == UNALLOCATED:
            return None
        start = entry * SECTOR
        end = start + self.bitmap_size + self.block_size
        bat_end = self.bat_offset + 4 * len(self.bat)
        hdr = self.footer.data_offset
        if (start < FOOTER_SIZE or (start < bat_end and end > self.bat_offset)
                or (start < hdr + DYN_HEADER_SIZE and end > hdr)):
            raise CorruptImageError(f"block {i} at {start:#x} overlaps the image's headers "
                                    "or its block allocation table", self.filename,
                                    self.bat_offset + 4 * i, "BAT")
        return start + self.bitmap_size

    def preadv(self, offset: int, buffers: Sequence[memoryview]) -> None:
        views = [memoryview(b).cast("B") for b in buffers]
        self._check_range(offset, sum(v.nbytes for v in views))
        if self.fixed:
            preadv_full(self.fd, offset, views)
            return
        for v in views:
            pos = 0
            for i, within, n in self._pieces(offset, v.nbytes):
                part = v[pos:pos + n]
                data = self._block_data(i)
                if data is None:
                    part[:] = bytes(n)
                else:
                    preadv_full(self.fd, data + within, [part])
                pos += n
            offset += v.nbytes

    def pwritev(self, offset: int, buffers: Sequence[memoryview]) -> None:
        self._check_writable()
        views = [memoryview(b).cast("B") for b in buffers]
        self._check_range(offset, sum(v.nbytes for v in views))
        if self.fixed:
            pwritev_full(self.fd, offset, views)
            return
        with self._lock:
            for v in views:
                pos = 0
                for i, within, n in self._pieces(offset, v.nbytes):
                    self._write_piece(i, within, v[pos:pos + n])
                    pos += n
                offset += v.nbytes

    def _write_piece(self, i: int, within: int, data: memoryview) -> None:
        start = self._block_data(i)
        if start is None:
            self._allocate(i, within, data)
            return
        if i not in self._full_bitmaps:  # as QEMU: every sector of a written block is used
            os.pwrite(self.fd, b"\xff" * self.bitmap_size, start - self.bitmap_size)
            self._full_bitmaps.add(i)
        pwritev_full(self.fd, start + within, [data])

    def _allocate(self, i: int, within: int, data: memoryview) -> None:
        """Give block ``i`` the space where the footer is, with ``data`` written in it.

        Data first (bitmap, data, the footer after the block), then the BAT
        entry: a crash leaves at worst an unused block before the footer."""
        at = self.free_offset
        start = at + self.bitmap_size
        os.pwrite(self.fd, b"\xff" * self.bitmap_size, at)
        pwritev_full(self.fd, start + within, [data])
        end = start + self.block_size
        os.pwrite(self.fd, self.footer.pack(), end)
        self.free_offset = end
        self.bat[i] = at // SECTOR
        os.pwrite(self.fd, struct.pack(">I", at // SECTOR), self.bat_offset + 4 * i)
        self._full_bitmaps.add(i)

    def write_zeroes(self, offset: int, length: int, may_unmap: bool = False) -> None:
        self._check_writable()
        self._check_range(offset, length)
        if self.fixed:
            super().write_zeroes(offset, length, may_unmap)
            return
        zeros = memoryview(bytes(min(length, self.block_size)))
        with self._lock:
            for i, within, n in self._pieces(offset, length):
                if self.bat[i] != UNALLOCATED:  # an unallocated block already reads as zeros
                    self._write_piece(i, within, zeros[:n])

    def block_status(self, offset: int, length: int) -> Iterator[Extent]:
        self._check_range(offset, length)
        if self.fixed:
            yield from self._fixed_status(offset, length)
            return
        cur: list[Any] | None = None  # [offset, length, status, host]
        for i, within, n in self._pieces(offset, length):
            data = self._block_data(i)
            status, host = (_ZERO, None) if data is None else (_DATA, data + within)
            start = i * self.block_size + within
            if cur is not None and cur[2] == status and (
                    host is None if cur[3] is None else host == cur[3] + cur[1]):
                cur[1] += n
                continue
            if cur is not None:
                yield Extent(cur[0], cur[1], cur[2], cur[3], 0, self.filename)
            cur = [start, n, status, host]
        if cur is not None:
            yield Extent(cur[0], cur[1], cur[2], cur[3], 0, self.filename)

    def _fixed_status(self, offset: int, length: int) -> Iterator[Extent]:
        """A fixed disk is raw: holes of the file read as zeros."""
        end = offset + length
        pos = offset
        while pos < end:
            try:
                data = os.lseek(self.fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    raise BlockError(f"cannot map the file: {exc.strerror}",
                                     self.filename) from exc
                data = end
            if data > pos:
                stop = min(data, end)
                yield Extent(pos, stop - pos, _ZERO, pos, 0, self.filename)
                pos = stop
                continue
            try:
                hole = os.lseek(self.fd, pos, os.SEEK_HOLE)
            except OSError:
                hole = end
            stop = min(max(hole, pos + 1), end)
            yield Extent(pos, stop - pos, _DATA, pos, 0, self.filename)
            pos = stop

    def flush(self) -> None:
        if not self.readonly and self.sync:  # metadata is written through: only the fsync
            try:
                os.fsync(self.fd)
            except OSError as exc:
                raise BlockError(f"flush failed: {exc.strerror}", self.filename) from exc

    def info(self) -> ImageInfo:
        st = os.fstat(self.fd)
        return ImageInfo(self.filename, self.format_name, self._size, st.st_blocks * 512,
                         cluster_size=None if self.fixed else self.block_size)

    def close(self) -> None:
        if not self.closed:
            super().close()
            os.close(self.fd)
