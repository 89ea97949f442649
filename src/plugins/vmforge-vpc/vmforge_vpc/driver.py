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

import os
import struct
import sys
from array import array
from collections.abc import Iterator, Sequence

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
from vmforge.block.mapped import (
    Gather,
    MappedImage,
    file_extents,
    open_image_file,
    pieces_of,
)
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
from vmforge_vpc.probe import probe as _probe

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Self

_DATA = BlockStatus.DATA | BlockStatus.ALLOCATED
_ZERO = BlockStatus.ZERO | BlockStatus.ALLOCATED
_BAT_START = FOOTER_SIZE + DYN_HEADER_SIZE  # where qemu-img puts the BAT


def _round_up(n: int, unit: int) -> int:
    return -(-n // unit) * unit


class Vpc(MappedImage):
    """A VHD image (QEMU's format name ``vpc``)."""

    format_name = "vpc"
    #: a block's sectors (after its bitmap), and a fixed disk, are kept as the guest
    #: reads them, at the offsets block status gives
    plain_data = True
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
        super().__init__(filename, readonly, fd)
        self.footer = footer
        #: where the footer was found (0 for dynamic images: the copy in front)
        self.footer_at = footer_at
        self._size = size
        #: the size of a block (0 for fixed images)
        self.cluster_size = 0
        self.bitmap_size = 0
        self.bat_offset = 0
        self.bat = array("I")
        #: where the next block goes (and the footer sits)
        self.free_offset = 0
        self._full_bitmaps: set[int] = set()  # blocks whose bitmap was set to all ones
        #: the footer as written after each new block (packed once: its checksum
        #: sums 512 bytes in Python)
        self._footer_raw: bytes | None = None

    # -- class level ---------------------------------------------------------------------

    @classmethod
    def probe(cls, header: bytes, filename: str) -> int:
        return _probe(header, filename)

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
        with open_image_file(path, readonly) as fd:
            return cls._open_fd(path, fd, readonly, options.get("force_size_calc"))

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
        self.cluster_size, self.bitmap_size = bs, bitmap_size(bs)
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

    def _cluster_status(self, i: int) -> tuple[BlockStatus, int | None]:
        """Where block ``i``'s data starts in the file (not allocated: zeros), checked."""
        entry = self.bat[i]
        if entry == UNALLOCATED:
            return _ZERO, None
        start = entry * SECTOR
        end = start + self.bitmap_size + self.cluster_size
        bat_end = self.bat_offset + 4 * len(self.bat)
        hdr = self.footer.data_offset
        if (start < FOOTER_SIZE or (start < bat_end and end > self.bat_offset)
                or (start < hdr + DYN_HEADER_SIZE and end > hdr)):
            raise CorruptImageError(f"block {i} at {start:#x} overlaps the image's headers "
                                    "or its block allocation table", self.filename,
                                    self.bat_offset + 4 * i, "BAT")
        return _DATA, start + self.bitmap_size

    def preadv(self, offset: int, buffers: Sequence[memoryview]) -> None:
        if not self.fixed:
            super().preadv(offset, buffers)
            return
        preadv_full(self.fd, offset, self._checked_views(offset, buffers))

    def pwritev(self, offset: int, buffers: Sequence[memoryview]) -> None:
        if not self.fixed:
            super().pwritev(offset, buffers)
            return
        self._check_writable()
        pwritev_full(self.fd, offset, self._checked_views(offset, buffers))

    def pwritev_runs(self, runs: Sequence[tuple[int, memoryview]]) -> None:
        """Each run written as :meth:`pwritev` would, in order, in one loop (what
        ``convert`` writes: a batch per 2 MiB), to the same file, byte for byte.

        Pieces that follow each other in the file go in one ``pwritev``; a block's
        sector bitmap goes with them (a new block's bitmap sits where the footer
        was, right before its data).  The footer is written once, after the batch's
        last new block, and the new blocks' BAT entries after their data and the
        footer, with one ``pwrite`` per stretch of the table (QEMU writes a bitmap,
        the footer and a BAT entry for each new block)."""
        self._check_writable()
        checked = self._checked_runs(runs)
        gather = Gather(self.fd, pwritev_full)
        if self.fixed:   # raw, the footer after the data
            for offset, view in checked:
                gather.add(offset, view)
            gather.flush()
            return
        with self._lock:
            new: list[int] = []
            done = False
            try:
                self._gather_runs(checked, gather, new)
                if new:
                    gather.add(self.free_offset, self._footer_view())
                gather.flush()
                done = True
            finally:
                if new:     # blocks given (even if a data write failed): in the BAT
                    if not done:    # and the file long enough for them
                        os.pwrite(self.fd, self._footer_view(), self.free_offset)
                    self._write_bat(new)

    def _gather_runs(self, checked: list[tuple[int, memoryview]], gather: Gather,
                     new: list[int]) -> None:
        """:meth:`pwritev_runs`' pieces into ``gather``, with the bitmaps of blocks
        written for the first time; the blocks it gives go into ``new``."""
        cs, full = self.cluster_size, self._full_bitmaps
        bitmap = memoryview(b"\xff" * self.bitmap_size)
        last, start = -1, 0
        for offset, view in checked:
            for i, within, part in pieces_of(offset, view, cs):
                if i != last:
                    last, start = i, self._cluster_status(i)[1]
                    if start is None:       # a new block where the footer is
                        at = self.free_offset
                        start = at + bitmap.nbytes
                        gather.add(at, bitmap)
                        self.free_offset = start + cs
                        self.bat[i] = at // SECTOR
                        full.add(i)
                        new.append(i)
                    elif i not in full:
                        gather.add(start - bitmap.nbytes, bitmap)
                        full.add(i)
                gather.add(start + within, part)

    def _footer_view(self) -> memoryview:
        if self._footer_raw is None:
            self._footer_raw = self.footer.pack()
        return memoryview(self._footer_raw)

    def _write_bat(self, indices: list[int]) -> None:
        """The BAT entries ``indices`` (ascending or not) written from :attr:`bat`:
        entries less than 128 apart in one ``pwrite`` of the stretch between them."""
        indices = sorted(indices)
        lo = prev = indices[0]
        for i in [*indices[1:], -1]:
            if i == -1 or i - prev >= 128:
                part = self.bat[lo:prev + 1]
                if sys.byteorder == "little":
                    part.byteswap()
                os.pwrite(self.fd, part.tobytes(), self.bat_offset + 4 * lo)
                lo = i
            prev = i

    def _fill_bitmap(self, i: int, start: int) -> None:
        """Block ``i``'s sector bitmap all ones (as QEMU: every sector of a written
        block is used), before the block's first write; ``start``: its data."""
        os.pwrite(self.fd, b"\xff" * self.bitmap_size, start - self.bitmap_size)
        self._full_bitmaps.add(i)

    def _write_piece(self, i: int, within: int, data: memoryview) -> None:
        start = self._cluster_status(i)[1]
        if start is None:
            self._allocate(i, within, data)
            return
        if i not in self._full_bitmaps:
            self._fill_bitmap(i, start)
        pwritev_full(self.fd, start + within, [data])

    def _allocate(self, i: int, within: int, data: memoryview) -> None:
        """Give block ``i`` the space where the footer is, with ``data`` written in it.

        Data first (bitmap, data, the footer after the block), then the BAT
        entry: a crash leaves at worst an unused block before the footer."""
        at = self.free_offset
        start = at + self.bitmap_size
        os.pwrite(self.fd, b"\xff" * self.bitmap_size, at)
        pwritev_full(self.fd, start + within, [data])
        end = start + self.cluster_size
        os.pwrite(self.fd, self._footer_view(), end)
        self.free_offset = end
        self.bat[i] = at // SECTOR
        os.pwrite(self.fd, struct.pack(">I", at // SECTOR), self.bat_offset + 4 * i)
        self._full_bitmaps.add(i)

    def write_zeroes(self, offset: int, length: int, may_unmap: bool = False) -> None:
        if self.fixed:
            BlockDriver.write_zeroes(self, offset, length, may_unmap)
        else:
            super().write_zeroes(offset, length, may_unmap)

    def block_status(self, offset: int, length: int) -> Iterator[Extent]:
        if not self.fixed:
            yield from super().block_status(offset, length)
            return
        self._check_range(offset, length)
        # a fixed disk is raw: holes of the file read as zeros
        yield from file_extents(self.fd, offset, length, self.filename, mapped=True)

    def info(self) -> ImageInfo:
        return self._info(cluster_size=None if self.fixed else self.cluster_size)
