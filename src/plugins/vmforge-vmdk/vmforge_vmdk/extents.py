"""A VMDK image's extents: sparse (grain directory, grain tables, grains, maybe
compressed) and flat (a plain file, or a part of one).

Each extent is addressed from its own first byte; :class:`~vmforge_vmdk.driver.Vmdk`
puts them end to end.  A sparse extent is a :class:`~vmforge.block.mapped.MappedImage`
of its own (its clusters are grains), so reads, writes and block status come
from the table lookups here.
"""

from __future__ import annotations

import os
import struct
import sys
import zlib
from array import array
from collections import OrderedDict
from collections.abc import Iterator, Sequence

from vmforge.block.driver import (
    BlockError,
    BlockStatus,
    CorruptImageError,
    Extent,
    ReadOnlyError,
)
from vmforge.block.fileio import padded, preadv_full, pwritev_full
from vmforge.block.mapped import (
    STORED,
    UNALLOCATED,
    ZEROS,
    Gather,
    MappedImage,
    Run,
    entry_runs,
    file_extents,
    split_views,
)
from vmforge_vmdk.layout import (
    AT_CAPACITY,
    AT_GD,
    AT_GRAIN,
    AT_GRAIN_OFFSET,
    AT_GTES,
    AT_RGD,
    F_MARKER,
    F_RGD,
    F_ZERO_GRAIN,
    GD_AT_END,
    GTE_ZEROED,
    HEADER_SIZE,
    MAGIC,
    MARKER_EOS,
    MARKER_FOOTER,
    MAX_GD_ENTRIES,
    MAX_GRAIN_SECTORS,
    MAX_GTES,
    MAX_SECTOR,
    SECTOR,
    Header,
    div_up,
)

_DATA = BlockStatus.DATA | BlockStatus.ALLOCATED
_ZERO = BlockStatus.ZERO | BlockStatus.ALLOCATED
_COMPRESSED = BlockStatus.DATA | BlockStatus.ALLOCATED | BlockStatus.COMPRESSED
_NONE = BlockStatus(0)
_L2_CACHE = 16
_MARKER = struct.Struct("<QI")
_FOOTER_MARKER = struct.Struct("<QII")


def _u32(raw: bytes) -> array[int]:
    """Little-endian 32-bit entries (``array("I")`` is 32-bit on vmforge's hosts)."""
    table = array("I")
    table.frombytes(raw[:len(raw) // 4 * 4])
    return table


class FlatExtent:
    """A flat extent: ``size`` bytes of a plain file from ``start``."""

    compressed = False
    flat = True
    cluster_size = 0

    def __init__(self, filename: str, fd: int, size: int, start: int, kind: str) -> None:
        self.filename = filename
        self.fd = fd
        self.size = size
        self.start = start
        self.kind = kind

    def preadv(self, offset: int, views: Sequence[memoryview]) -> None:
        preadv_full(self.fd, self.start + offset, views)

    def preadv_runs(self, runs: Sequence[tuple[int, memoryview]]) -> None:
        """Runs that follow each other in the file with one ``preadv``."""
        gather = Gather(self.fd, preadv_full)
        for offset, part in runs:
            gather.add(self.start + offset, part)
        gather.flush()

    def pwritev(self, offset: int, views: Sequence[memoryview]) -> None:
        pwritev_full(self.fd, self.start + offset, views)

    def pwritev_runs(self, runs: Sequence[tuple[int, memoryview]]) -> None:
        """Runs that follow each other in the file with one ``pwritev``."""
        gather = Gather(self.fd, pwritev_full)
        for offset, part in runs:
            gather.add(self.start + offset, part)
        gather.flush()

    def write_zeroes(self, offset: int, length: int, may_unmap: bool = False) -> None:
        zeros = memoryview(bytes(min(length, 1 << 20)))
        done = 0
        while done < length:
            n = min(len(zeros), length - done)
            pwritev_full(self.fd, self.start + offset + done, [zeros[:n]])
            done += n

    def write_compressed(self, offset: int, data: memoryview) -> None:
        self.pwritev(offset, [data])

    def block_status(self, offset: int, length: int) -> Iterator[Extent]:
        for e in file_extents(self.fd, self.start + offset, length, self.filename,
                              mapped=True):
            yield Extent(e.offset - self.start, e.length, e.status, e.host_offset, 0,
                         self.filename)

    def problems(self) -> tuple[int, list[str]]:
        return 0, []


class SparseExtent(MappedImage):
    """A hosted sparse extent (``KDMV``): monolithicSparse, a twoGbMaxExtentSparse
    part, or a compressed streamOptimized image."""

    format_name = "vmdk"
    locked_reads = True
    flat = False

    def __init__(self, filename: str, readonly: bool, fd: int, header: Header,
                 footer_at: int | None, lba_base: int) -> None:
        super().__init__(filename, readonly, fd)
        self.header = header
        self.kind = "SPARSE"
        self.cluster_size = header.granularity * SECTOR
        self.gtes = header.num_gtes
        self.compressed = header.compressed
        self.has_marker = bool(header.flags & F_MARKER)
        self.zero_grain = bool(header.flags & F_ZERO_GRAIN)
        #: the footer's offset when the grain directory is at the end (read-only)
        self.footer_at = footer_at
        self.lba_base = lba_base
        #: the image's backing file (unallocated grains do not read as zeros then)
        self.backing: str | None = None
        self.gd = array("I")
        self.rgd: array[int] | None = None
        self._tables: OrderedDict[int, array[int]] = OrderedDict()
        self._grain_cache: tuple[int, bytes] | None = None
        self.file_size = os.fstat(fd).st_size
        cs_sectors = header.granularity
        #: where the next grain goes (sectors): the file's end, rounded up to a grain
        self.next_sector = div_up(div_up(self.file_size, SECTOR), cs_sectors) * cs_sectors

    @property
    def size(self) -> int:
        return self.header.capacity * SECTOR

    @property
    def backing_filename(self) -> str | None:
        return self.backing

    # -- opening ----------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str, fd: int, readonly: bool, lba_base: int = 0) -> SparseExtent:
        """The sparse extent in the open file ``fd``, checked."""
        file_size = os.fstat(fd).st_size
        raw = os.pread(fd, HEADER_SIZE, 0)
        if raw[:4] != MAGIC:
            raise BlockError("extent not in VMDK sparse format (bad magic)", path)
        if len(raw) < 79:
            raise CorruptImageError(f"header truncated to {len(raw)} bytes", path, 0,
                                    "header")
        h = Header.unpack(raw)
        footer_at = None
        if h.gd_offset == GD_AT_END:
            h, footer_at = cls._footer(fd, path, file_size)
        if h.version > 3:
            raise BlockError(f"unsupported VMDK version {h.version}", path)
        if h.version == 3 and not readonly and not h.compressed:
            raise ReadOnlyError("VMDK version 3 must be read only", path)
        if footer_at is not None and not readonly:
            raise ReadOnlyError("a streamOptimized image with its grain directory in the "
                                "footer is read-only here", path)
        if h.num_gtes > MAX_GTES or h.num_gtes == 0:
            raise CorruptImageError(f"{h.num_gtes} grain table entries (1 to {MAX_GTES})",
                                    path, AT_GTES, "header")
        if h.granularity == 0 or h.granularity > MAX_GRAIN_SECTORS:
            raise CorruptImageError(f"grain of {h.granularity} sectors (1 to "
                                    f"{MAX_GRAIN_SECTORS})", path, AT_GRAIN, "header")
        if h.capacity >= 1 << 54:
            raise CorruptImageError(f"capacity of {h.capacity} sectors", path, AT_CAPACITY,
                                    "header")
        gd_entries = div_up(h.capacity, h.num_gtes * h.granularity)
        if gd_entries > MAX_GD_ENTRIES:
            raise CorruptImageError(f"grain directory of {gd_entries} entries is too large",
                                    path, AT_CAPACITY, "header")
        if div_up(file_size, SECTOR) < h.grain_offset:
            raise CorruptImageError(f"file truncated, expecting at least "
                                    f"{h.grain_offset * SECTOR} bytes", path,
                                    AT_GRAIN_OFFSET, "header")
        ext = cls(path, readonly, fd, h, footer_at, lba_base)
        ext.gd = ext._read_gd(h.gd_offset, gd_entries, AT_GD, "grain directory")
        if h.flags & F_RGD and footer_at is None:
            ext.rgd = ext._read_gd(h.rgd_offset, gd_entries, AT_RGD,
                                   "redundant grain directory")
        return ext

    @staticmethod
    def _footer(fd: int, path: str, file_size: int) -> tuple[Header, int]:
        """The header in the footer of a stream (footer marker, header, end-of-stream)."""
        at = file_size // SECTOR * SECTOR - 3 * SECTOR
        raw = os.pread(fd, 3 * SECTOR, at) if at >= HEADER_SIZE else b""
        if len(raw) < 3 * SECTOR:
            raise CorruptImageError("no footer where the header says the grain directory "
                                    "is", path, AT_GD, "header")
        _, fsize, ftype = _FOOTER_MARKER.unpack_from(raw, 0)
        eval_, esize, etype = _FOOTER_MARKER.unpack_from(raw, 2 * SECTOR)
        if (raw[SECTOR:SECTOR + 4] != MAGIC or fsize or ftype != MARKER_FOOTER or eval_
                or esize or etype != MARKER_EOS):
            raise CorruptImageError("invalid footer", path, at, "footer")
        h = Header.unpack(raw[SECTOR:2 * SECTOR])
        if h.gd_offset == GD_AT_END:
            raise CorruptImageError("the footer's grain directory is at the end too", path,
                                    at + SECTOR + AT_GD, "footer")
        return h, at

    def _read_gd(self, sector: int, entries: int, at: int, name: str) -> array[int]:
        n = entries * 4
        start = sector * SECTOR
        if sector > MAX_SECTOR or start + n > self.file_size:
            raise CorruptImageError(f"{name} at sector {sector} is past the end of the file",
                                    self.filename, at, "header")
        raw = os.pread(self.fd, n, start)
        if len(raw) != n:
            raise CorruptImageError(f"{name} truncated", self.filename, start, name)
        return _u32(raw)

    # -- lookups ----------------------------------------------------------------------------

    @property
    def gt_bytes(self) -> int:
        return self.gtes * 4

    def _table_at(self, gd: array[int], l1: int, name: str) -> int:
        """The byte offset of grain table ``l1`` of a directory, checked (0: none)."""
        sector = gd[l1]
        if not sector:
            return 0
        at = sector * SECTOR
        if sector < 1 or at + self.gt_bytes > self.file_size:
            gd_at = (self.header.rgd_offset if gd is self.rgd else self.header.gd_offset)
            raise CorruptImageError(f"grain table {l1} at sector {sector} is past the end "
                                    "of the file", self.filename, gd_at * SECTOR + 4 * l1,
                                    name)
        return at

    def _table(self, at: int) -> array[int]:
        table = self._tables.get(at)
        if table is not None:
            self._tables.move_to_end(at)
            return table
        raw = os.pread(self.fd, self.gt_bytes, at)
        if len(raw) != self.gt_bytes:
            raise CorruptImageError("grain table truncated", self.filename, at, "grain table")
        table = _u32(raw)
        self._tables[at] = table
        if len(self._tables) > _L2_CACHE:
            self._tables.popitem(last=False)
        return table

    def entry(self, i: int) -> tuple[int, int]:
        """Grain ``i``'s table entry and where the entry is (0: no grain table)."""
        l1, l2 = divmod(i, self.gtes)
        if l1 >= len(self.gd):
            raise CorruptImageError(f"grain {i} is beyond the grain directory",
                                    self.filename, self.header.gd_offset * SECTOR,
                                    "grain directory")
        at = self._table_at(self.gd, l1, "grain directory")
        if not at:
            return 0, 0
        return self._table(at)[l2], at + 4 * l2

    def _cluster_status(self, i: int) -> tuple[BlockStatus, int | None]:
        entry, where = self.entry(i)
        if entry == 0:
            return _NONE, None
        if entry == GTE_ZEROED and self.zero_grain:
            return _ZERO, None
        if entry < self.header.grain_offset or entry * SECTOR >= self.file_size:
            raise CorruptImageError(f"grain {i} at sector {entry} is inside the metadata "
                                    "or past the end of the file", self.filename, where,
                                    "grain table")
        if self.compressed:
            return _COMPRESSED, None
        return _DATA, entry * SECTOR

    def _status_runs(self, offset: int, length: int) -> Iterator[Run]:
        """Runs of grains alike, a grain table's entries checked at a time (reads walk
        them too); a compressed image's grains one by one (each has its own place)."""
        if self.compressed:
            yield from super()._status_runs(offset, length)
            return
        yield from self._runs_by_table(offset, length, self.cluster_size * self.gtes)

    def _table_runs(self, pos: int, stop: int) -> list[Run]:
        """:meth:`_status_runs` of ``[pos, stop)``, which one grain table maps."""
        cs, ne = self.cluster_size, self.gtes
        first = pos // cs
        l1 = first // ne
        if l1 >= len(self.gd):
            self.entry(first)             # (raises: beyond the grain directory)
        at = self._table_at(self.gd, l1, "grain directory")
        if not at:
            return [(pos, stop - pos, _NONE, None)]
        low, high, zero_grain = self.header.grain_offset, self.file_size, self.zero_grain

        def kind(i: int, entry: int) -> int:
            if not entry:
                return UNALLOCATED
            if entry == GTE_ZEROED and zero_grain:
                return ZEROS
            if entry < low or entry * SECTOR >= high:
                raise CorruptImageError(f"grain {i} at sector {entry} is inside the metadata "
                                        "or past the end of the file", self.filename,
                                        at + 4 * (i % ne), "grain table")
            return STORED

        return entry_runs(self._table(at)[first % ne:(stop - 1) // cs % ne + 1], first, pos,
                          stop, cs, kind, self.header.granularity, SECTOR)

    def _grain(self, i: int) -> bytes:
        """Compressed grain ``i``, inflated."""
        if self._grain_cache is not None and self._grain_cache[0] == i:
            return self._grain_cache[1]
        at = self.entry(i)[0] * SECTOR
        cs = self.cluster_size
        if self.has_marker:
            head = os.pread(self.fd, _MARKER.size, at)
            if len(head) < _MARKER.size:
                raise CorruptImageError("grain marker truncated", self.filename, at,
                                        "grain marker")
            length = _MARKER.unpack(head)[1]
            if not 0 < length <= 2 * cs:
                raise CorruptImageError(f"compressed grain of {length} bytes", self.filename,
                                        at, "grain marker")
            payload = os.pread(self.fd, length, at + _MARKER.size)
        else:
            payload = os.pread(self.fd, 2 * cs, at)
        try:
            d = zlib.decompressobj()
            data = d.decompress(payload, cs)
        except zlib.error as exc:
            raise CorruptImageError(f"compressed grain {i} does not inflate: {exc}",
                                    self.filename, at, "grain") from None
        self._grain_cache = (i, data)
        return data

    def _read_compressed(self, i: int, within: int, part: memoryview) -> None:
        data = self._grain(i)
        if within + part.nbytes > len(data):
            raise CorruptImageError(f"compressed grain {i} inflates to {len(data)} bytes "
                                    "only", self.filename, self.entry(i)[0] * SECTOR, "grain")
        part[:] = data[within:within + part.nbytes]

    # -- allocation -------------------------------------------------------------------------

    def _take(self, sectors: int) -> int:
        """``sectors`` at the end of the file (sector-numbered)."""
        at = self.next_sector
        if at + sectors > MAX_SECTOR:
            raise BlockError("the extent is full (32-bit sector numbers)", self.filename)
        self.next_sector += sectors
        return at

    def _ensure_tables(self, l1: int) -> None:
        """Give a grain table (and its redundant copy) to a directory entry of 0."""
        if self.gd[l1]:
            return
        gt_sectors = div_up(self.gt_bytes, SECTOR)
        zeros = bytes(gt_sectors * SECTOR)
        for gd, sector in ((self.gd, self.header.gd_offset),
                           (self.rgd, self.header.rgd_offset)):
            if gd is None:
                continue
            new = self._take(gt_sectors)
            os.pwrite(self.fd, zeros, new * SECTOR)
            os.pwrite(self.fd, struct.pack("<I", new), sector * SECTOR + 4 * l1)
            gd[l1] = new
        self.file_size = max(self.file_size, self.next_sector * SECTOR)
        g = self.header.granularity
        self.next_sector = div_up(self.next_sector, g) * g

    def set_entry(self, i: int, value: int) -> None:
        """Point grain ``i`` at ``value`` in its table and in the redundant copy."""
        l1, l2 = divmod(i, self.gtes)
        self._ensure_tables(l1)
        packed = struct.pack("<I", value)
        for at, table in self._grain_tables(l1):
            os.pwrite(self.fd, packed, at + 4 * l2)
            table[l2] = value

    def _grain_tables(self, l1: int) -> list[tuple[int, array]]:
        """Grain table ``l1`` and its redundant copy, those that exist: (file offset,
        entries)."""
        out = []
        for gd, name in ((self.gd, "grain directory"), (self.rgd, "redundant grain directory")):
            if gd is None:
                continue
            at = self._table_at(gd, l1, name)
            if at:
                out.append((at, self._table(at)))
        return out

    def _allocate(self, i: int, within: int, data: memoryview) -> None:
        if self.compressed:
            self._rewrite_compressed(i, within, data)
            return
        cs = self.cluster_size
        sector = self._take(self.header.granularity)
        pwritev_full(self.fd, sector * SECTOR, padded(cs, within, data))
        self.file_size = max(self.file_size, (sector * SECTOR) + cs)
        self.set_entry(i, sector)

    def pwritev_runs(self, runs: Sequence[tuple[int, memoryview]]) -> None:
        """The runs written as :meth:`pwritev` would, with fewer calls: whole new grains
        take their places at the end of the file as they come (the layout of one
        allocation each), and their data, with pieces that go in place, is written
        with one ``pwritev`` per stretch of the file; then their grain table
        entries, one ``pwrite`` per table and copy for entries side by side (data
        before the entries that point at it, as each allocation does).  A partial
        new grain, or one whose table does not exist yet, takes the single path."""
        if self.compressed:
            super().pwritev_runs(runs)
            return
        self._check_writable()
        checked = [(offset, self._checked_views(offset, [buf])) for offset, buf in runs]
        cs, gtes, g = self.cluster_size, self.gtes, self.header.granularity
        gather = Gather(self.fd, pwritev_full)
        new: dict[int, int] = {}   # grain -> its sector, not in its table yet

        def settle() -> None:
            gather.flush()
            if new:
                self.file_size = max(self.file_size, self.next_sector * SECTOR)
                self._set_entries(new)
                new.clear()

        with self._lock:
            for offset, views in checked:
                for i, within, part in split_views(offset, views, cs):
                    sector = new.get(i)
                    if sector is not None:
                        gather.add(sector * SECTOR + within, part)
                        continue
                    host = self._cluster_status(i)[1]
                    if host is not None:
                        gather.add(host + within, part)
                    elif part.nbytes == cs and self.gd[i // gtes] and (
                            self.rgd is None or self.rgd[i // gtes]):
                        sector = new[i] = self._take(g)
                        gather.add(sector * SECTOR, part)
                    else:
                        settle()
                        self._write_piece(i, within, part)
            settle()

    def _set_entries(self, new: dict[int, int]) -> None:
        """:meth:`set_entry` of each grain -> sector (grains whose tables exist), one
        write per table and copy: its entries from the first to the last one changed
        (those between them as they are)."""
        by_table: dict[int, list[int]] = {}
        for i in new:
            by_table.setdefault(i // self.gtes, []).append(i)
        for l1, grains in by_table.items():
            base = l1 * self.gtes
            lo, hi = min(grains) - base, max(grains) - base + 1
            for at, table in self._grain_tables(l1):
                for i in grains:
                    table[i - base] = new[i]
                span = table[lo:hi]
                if sys.byteorder == "big":
                    span.byteswap()
                os.pwrite(self.fd, span, at + 4 * lo)

    def _write_piece(self, i: int, within: int, data: memoryview) -> None:
        if self.compressed:
            self._rewrite_compressed(i, within, data)
        else:
            super()._write_piece(i, within, data)

    def grain_length(self, i: int) -> int:
        return min(self.cluster_size, self.size - i * self.cluster_size)

    def _rewrite_compressed(self, i: int, within: int, data: memoryview) -> None:
        """A compressed grain changed in part: the whole grain compressed again and
        appended (the old one is left where it was)."""
        n = self.grain_length(i)
        grain = bytearray(n)
        status, _ = self._cluster_status(i)
        if int(status) & int(BlockStatus.COMPRESSED) and (within or data.nbytes < n):
            self._read_compressed(i, 0, memoryview(grain))
        grain[within:within + data.nbytes] = data
        self.append_grain(i, zlib.compress(bytes(grain)))

    def append_grain(self, i: int, payload: bytes) -> None:
        """Append grain ``i`` compressed (``payload``) behind its marker; point at it."""
        if not self.has_marker:
            raise BlockError("compressed writes need grain markers", self.filename)
        lba = self.lba_base + i * self.header.granularity
        record = _MARKER.pack(lba, len(payload)) + payload
        sectors = div_up(len(record), SECTOR)
        sector = self._take(sectors)
        at = sector * SECTOR
        # QEMU zeroes a whole grain where it allocates, then writes the record there:
        # the file reaches at least a grain past the record's start (same file)
        end = max(self.file_size, at + self.cluster_size)
        padded = record.ljust(max(sectors * SECTOR, min(end - at, self.cluster_size)), b"\0")
        pwritev_full(self.fd, at, [memoryview(padded)])
        self.file_size = max(end, at + len(padded))
        if self._grain_cache is not None and self._grain_cache[0] == i:
            self._grain_cache = None
        self.set_entry(i, sector)

    def write_compressed(self, offset: int, data: bytes | memoryview) -> None:
        """Whole grains: compressed here (outside the lock) when the extent is."""
        if not self.compressed:
            self.write(offset, data)
            return
        self._check_writable()
        self._check_range(offset, len(data))
        i = offset // self.cluster_size
        if offset % self.cluster_size or len(data) != self.grain_length(i):
            self.write(offset, data)
            return
        payload = zlib.compress(bytes(data))
        with self._lock:
            self.append_grain(i, payload)

    def write_zeroes(self, offset: int, length: int, may_unmap: bool = False) -> None:
        """Whole grains become zeroed grains when the extent has them (as QEMU's
        ``zeroed_grain``); the rest is written with zeros where it does not read so."""
        if not self.zero_grain:
            super().write_zeroes(offset, length, may_unmap)
            return
        self._check_writable()
        self._check_range(offset, length)
        cs = self.cluster_size
        with self._lock:
            for i, within, n in self._pieces(offset, length):
                if within == 0 and n == cs:
                    if self.entry(i)[0] != GTE_ZEROED:
                        self.set_entry(i, GTE_ZEROED)
                elif not self._reads_as_zeros(i):
                    self._write_piece(i, within, memoryview(bytes(n)))

    # -- check ------------------------------------------------------------------------------

    def problems(self) -> tuple[int, list[str]]:
        """(corruptions, messages): grains past the end of the file (QEMU's check), bad
        table offsets, redundant tables that disagree with the primary ones."""
        bad, msgs = 0, []
        end = self.file_size
        for l1 in range(len(self.gd)):
            try:
                at = self._table_at(self.gd, l1, "grain directory")
                table = self._table(at) if at else None
                backup = None
                if self.rgd is not None:
                    bat = self._table_at(self.rgd, l1, "redundant grain directory")
                    backup = self._table(bat) if bat else None
            except CorruptImageError as exc:
                bad += 1
                msgs.append(f"ERROR {exc}")
                continue
            if table is None:
                continue
            for l2, entry in enumerate(table):
                i = l1 * self.gtes + l2
                if entry and not (entry == GTE_ZEROED and self.zero_grain) and (
                        entry * SECTOR >= end or entry < self.header.grain_offset):
                    bad += 1
                    msgs.append(f"ERROR {self.filename}: cluster offset for sector "
                                f"{i * self.header.granularity} points after EOF or into "
                                "the metadata")
            if backup is not None and backup != table:
                bad += 1
                msgs.append(f"ERROR {self.filename}: redundant grain table {l1} differs "
                            "from the grain table")
        return bad, msgs

