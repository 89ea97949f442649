"""The qcow format driver: QEMU's copy-on-write format, version 1.

Layout (all integers big-endian), as QEMU's ``block/qcow.c`` reads and writes
it::

    0       header (48 bytes): magic "QFI\\xfb", version 1, backing file name
            offset and length, mtime, virtual size, cluster bits, L2 bits,
            encryption method, L1 table offset
    48      the backing file name (not NUL-terminated), then the L1 table at
            the next multiple of 8, in whole sectors of zeros
    ...     L2 tables and data clusters, appended at cluster-aligned offsets;
            compressed clusters appended byte-aligned

An L1 entry is the file offset of an L2 table (0: none).  An L2 entry is the
file offset of a cluster (0: not allocated here: the backing file, or zeros),
or, with bit 63 set, a compressed cluster: its byte size in the next
``cluster_bits`` bits down, its offset in the bits below (raw deflate with a
4 KiB window).

An allocation writes the zeroed L2 table before the L1 entry, and a cluster's
data before the L2 entry that points at it.  There is no refcount: a crash
leaks at worst the space it appended.
"""

from __future__ import annotations

import os
import struct
import sys
import zlib
from array import array
from collections import OrderedDict

from vmforge.block.driver import (
    BlockError,
    BlockStatus,
    CorruptImageError,
    CreateOption,
    ImageInfo,
    UnsupportedOperation,
)
from vmforge.block.fileio import padded, pwritev_full
from vmforge.block.mapped import (
    STORED,
    UNALLOCATED,
    MappedImage,
    entry_runs,
    open_image_file,
)
from vmforge_qcow.probe import MAGIC
from vmforge_qcow.probe import probe as _probe

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any, Self

    from vmforge.block.mapped import Run

VERSION = 1
SECTOR = 512
COMPRESSED = 1 << 63
MAX_BACKING_NAME = 1023
# magic, version, backing file offset, backing file size, mtime, size,
# cluster bits, l2 bits, padding, crypt method, l1 table offset
_HEADER = struct.Struct(">4sIQIIQBBHIQ")
HEADER_SIZE = _HEADER.size
_L2_CACHE = 16
#: QEMU's bound on the L1 table (INT_MAX bytes)
MAX_L1_ENTRIES = 0x7FFFFFFF // 8

_DATA = BlockStatus.DATA | BlockStatus.ALLOCATED
_COMPRESSED = BlockStatus.DATA | BlockStatus.ALLOCATED | BlockStatus.COMPRESSED
_NONE = BlockStatus(0)


def _align(n: int, unit: int) -> int:
    return -(-n // unit) * unit


def _be64(raw: bytes) -> array[int]:
    table = array("Q", raw)
    if sys.byteorder == "little":
        table.byteswap()
    return table


class Qcow(MappedImage):
    """A qcow (version 1) image."""

    format_name = "qcow"
    #: an uncompressed cluster is kept as the guest reads it, at the offset block
    #: status gives (encrypted images are refused)
    plain_data = True
    locked_reads = True
    supports_backing = True
    supports_compressed_writes = True
    granularity = 4096
    create_options = {
        "backing_file": CreateOption("backing_file", str, None, "file name of a base image"),
        "backing_fmt": CreateOption(
            "backing_fmt", str, None,
            "format of the base image (accepted as qemu-img does; qcow cannot record it, "
            "so the base is probed when opened)"),
    }

    def __init__(self, filename: str, readonly: bool, fd: int, header: tuple[Any, ...],
                 backing: str | None) -> None:
        super().__init__(filename, readonly, fd)
        (_, _, self._backing_at, self._backing_len, _, self.header_size_field,
         self.cluster_bits, self.l2_bits, _, _, self.l1_offset) = header
        self._size = self.header_size_field // SECTOR * SECTOR
        self._backing = backing
        self.cluster_size = 1 << self.cluster_bits
        self.granularity = self.cluster_size
        self.l2_size = 1 << self.l2_bits
        self.offset_mask = (1 << (63 - self.cluster_bits)) - 1
        shift = self.cluster_bits + self.l2_bits
        self.l1_size = (self.header_size_field + (1 << shift) - 1) >> shift
        self.l1 = array("Q")
        self._l2_cache: OrderedDict[int, array[int]] = OrderedDict()
        self._file_end = os.fstat(fd).st_size
        self._cache: tuple[int, bytes] | None = None   # the last decompressed cluster

    # -- class level ---------------------------------------------------------------------

    @classmethod
    def probe(cls, header: bytes, filename: str) -> int:
        return _probe(header, filename)

    @classmethod
    def create(cls, path: str, size: int, **options: Any) -> None:
        opts = cls.parse_create_options(options)
        size = _align(size, SECTOR)
        if size <= 0:
            raise BlockError("image size is too small, cannot be zero length", path)
        if size >= 1 << 63:
            raise BlockError(f"size {size} is too large", path)
        name = (opts["backing_file"] or "").encode()
        if len(name) > MAX_BACKING_NAME:
            raise BlockError(f"backing file name is longer than {MAX_BACKING_NAME} bytes",
                             path)
        # as qemu-img: 512-byte clusters over a backing file (less to copy on write),
        # else 4 KiB; an L2 table is 32 KiB or 4 KiB
        cluster_bits, l2_bits = (9, 12) if name else (12, 9)
        header_size = _align(HEADER_SIZE + len(name), 8)
        shift = cluster_bits + l2_bits
        l1_size = (size + (1 << shift) - 1) >> shift
        if l1_size > MAX_L1_ENTRIES:
            raise BlockError(f"size {size} is too large for a qcow image", path)
        header = _HEADER.pack(MAGIC, VERSION, HEADER_SIZE if name else 0, len(name), 0, size,
                              cluster_bits, l2_bits, 0, 0, header_size)
        try:
            with open(path, "wb") as f:
                f.write(header + name)
                f.truncate(header_size + _align(8 * l1_size, SECTOR))
        except OSError as exc:
            raise BlockError(f"cannot create: {exc.strerror}", path) from exc

    @classmethod
    def open(cls, path: str, *, readonly: bool = True, **options: Any) -> Self:
        with open_image_file(path, readonly) as fd:
            header, backing = cls._read_header(fd, path)
            drv = cls(path, readonly, fd, header, backing)
            drv._read_l1()
            return drv

    @staticmethod
    def _read_header(fd: int, path: str) -> tuple[tuple[Any, ...], str | None]:
        raw = os.pread(fd, HEADER_SIZE, 0)
        if raw[:4] != MAGIC:
            raise BlockError("image not in qcow format (bad magic)", path)
        if len(raw) < HEADER_SIZE:
            raise CorruptImageError(f"header truncated to {len(raw)} bytes", path, 0, "header")
        header = _HEADER.unpack(raw)
        _, version, back_at, back_len, _, size, cbits, l2bits, _, crypt, _ = header
        if version != VERSION:
            hint = "; use the qcow2 format" if version in (2, 3) else ""
            raise BlockError(f"qcow (v1) does not support qcow version {version}{hint}", path)
        if size <= 1:
            raise CorruptImageError(f"image size {size} is too small (must be at least 2 "
                                    "bytes)", path, 24, "header")
        if not 9 <= cbits <= 16:
            raise CorruptImageError(f"cluster bits {cbits}: the cluster size must be between "
                                    "512 and 64k", path, 32, "header")
        if not 6 <= l2bits <= 13:
            raise CorruptImageError(f"L2 bits {l2bits}: the L2 table size must be between "
                                    "512 and 64k", path, 33, "header")
        if crypt:
            raise BlockError(f"encrypted qcow images (method {crypt}) are not supported",
                             path)
        shift = cbits + l2bits
        if size > (1 << 63) - (1 << shift) or (size + (1 << shift) - 1) >> shift > MAX_L1_ENTRIES:
            raise CorruptImageError(f"image size {size} is too large", path, 24, "header")
        backing = None
        if back_at:
            file_size = os.fstat(fd).st_size
            if back_len > MAX_BACKING_NAME or back_at + back_len > file_size:
                raise CorruptImageError(f"backing file name of {back_len} bytes at "
                                        f"{back_at:#x} is too long or past the end of the "
                                        "file", path, 16, "header")
            try:
                backing = os.pread(fd, back_len, back_at).decode() or None
            except UnicodeDecodeError:
                raise CorruptImageError("backing file name is not UTF-8", path, back_at,
                                        "header") from None
        return header, backing

    def _read_l1(self) -> None:
        n = self.l1_size
        if self.l1_offset < HEADER_SIZE or self.l1_offset + 8 * n > self._file_end:
            raise CorruptImageError(f"L1 table of {n} entries at {self.l1_offset:#x} is "
                                    "outside the file", self.filename, 40, "header")
        self.l1 = _be64(os.pread(self.fd, 8 * n, self.l1_offset))
        if len(self.l1) != n:
            raise CorruptImageError("L1 table truncated", self.filename, self.l1_offset,
                                    "L1 table")

    # -- the image -----------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self._size

    @property
    def backing_filename(self) -> str | None:
        return self._backing

    @property
    def _meta_end(self) -> int:
        """The end of the header, the backing name and the L1 table."""
        return self.l1_offset + 8 * self.l1_size

    def _l2(self, l1_index: int) -> array[int] | None:
        """The L2 table of an L1 entry (None: not allocated), checked and cached."""
        l2_at = self.l1[l1_index]
        if not l2_at:
            return None
        table = self._l2_cache.get(l2_at)
        if table is not None:
            self._l2_cache.move_to_end(l2_at)
            return table
        nbytes = 8 * self.l2_size
        if l2_at < self._meta_end or l2_at + nbytes > self._file_end:
            raise CorruptImageError(f"L2 table at {l2_at:#x} overlaps the header or is past "
                                    "the end of the file", self.filename,
                                    self.l1_offset + 8 * l1_index, "L1 table")
        table = _be64(os.pread(self.fd, nbytes, l2_at))
        self._l2_cache[l2_at] = table
        if len(self._l2_cache) > _L2_CACHE:
            self._l2_cache.popitem(last=False)
        return table

    def _entry(self, cluster: int) -> int:
        """The L2 entry of a cluster of the disk (0: not allocated here)."""
        l1_index, l2_index = divmod(cluster, self.l2_size)
        table = self._l2(l1_index)
        return 0 if table is None else table[l2_index]

    def _host(self, cluster: int, entry: int) -> int:
        """The file offset of an uncompressed cluster's entry, checked."""
        if entry % SECTOR or entry < self._meta_end:
            l1_index, l2_index = divmod(cluster, self.l2_size)
            raise CorruptImageError(f"cluster {cluster} at {entry:#x} is unaligned or "
                                    "overlaps the header", self.filename,
                                    self.l1[l1_index] + 8 * l2_index, "L2 table")
        return entry

    def _decompress(self, cluster: int, entry: int) -> bytes:
        cached = self._cache
        if cached is not None and cached[0] == entry:
            return cached[1]
        cs = self.cluster_size
        at = entry & self.offset_mask
        nbytes = (entry >> (63 - self.cluster_bits)) & (cs - 1)
        l1_index, l2_index = divmod(cluster, self.l2_size)
        where = self.l1[l1_index] + 8 * l2_index
        if at < self._meta_end or at + nbytes > self._file_end:
            raise CorruptImageError(f"compressed cluster {cluster} of {nbytes} bytes at "
                                    f"{at:#x} is outside the data area", self.filename, where,
                                    "L2 table")
        try:
            out = zlib.decompressobj(-12).decompress(os.pread(self.fd, nbytes, at), cs)
        except zlib.error as exc:
            raise CorruptImageError(f"compressed cluster {cluster} at {at:#x} does not "
                                    f"inflate: {exc}", self.filename, where, "L2 table") from None
        if len(out) != cs:
            raise CorruptImageError(f"compressed cluster {cluster} at {at:#x} inflates to "
                                    f"{len(out)} bytes, not {cs}", self.filename, where,
                                    "L2 table")
        self._cache = (entry, out)
        return out

    def _cluster_status(self, i: int) -> tuple[BlockStatus, int | None]:
        with self._lock:
            entry = self._entry(i)
        if not entry:
            return _NONE, None
        if entry & COMPRESSED:
            return _COMPRESSED, None
        return _DATA, self._host(i, entry)

    def _status_runs(self, offset: int, length: int) -> Iterator[Run]:
        """Runs of clusters alike an L2 table at a time (a missing one's whole range at
        once), not a lookup per cluster: 4 KiB clusters make 16 K of them per 64 MiB."""
        yield from self._runs_by_table(offset, length, self.cluster_size * self.l2_size)

    def _table_runs(self, pos: int, stop: int) -> list[Run]:
        """:meth:`_status_runs` of ``[pos, stop)``, which one L2 table maps."""
        cs, ne = self.cluster_size, self.l2_size
        l1_index = pos // (cs * ne)
        table = self._l2(l1_index)
        if table is None:
            return [(pos, stop - pos, _NONE, None)]
        first = pos // cs
        entries = table[first % ne:(stop - 1) // cs % ne + 1]
        if any(e & COMPRESSED for e in entries):      # (a compressed cluster each alone)
            return list(super()._status_runs(pos, stop - pos))
        low, where = self._meta_end, self.l1[l1_index]

        def kind(i: int, entry: int) -> int:
            if not entry:
                return UNALLOCATED
            if entry % SECTOR or entry < low:
                raise CorruptImageError(f"cluster {i} at {entry:#x} is unaligned or "
                                        "overlaps the header", self.filename,
                                        where + 8 * (i % ne), "L2 table")
            return STORED

        return entry_runs(entries, first, pos, stop, cs, kind, cs)

    def _read_compressed(self, i: int, within: int, part: memoryview) -> None:
        part[:] = self._decompress(i, self._entry(i))[within:within + part.nbytes]

    def _allocate(self, i: int, within: int, data: memoryview) -> None:
        entry = self._entry(i)
        cs = self.cluster_size
        # a new cluster: zeros around the data (the backend copied the backing file's
        # bytes in for a partial write), or what a compressed cluster held
        if entry and data.nbytes != cs:
            block = bytearray(self._decompress(i, entry))
            block[within:within + data.nbytes] = data
            parts = [memoryview(block)]
        else:
            parts = padded(cs, within, data)
        table = self._l2_for_write(i // self.l2_size)
        host = _align(self._file_end, cs)
        pwritev_full(self.fd, host, parts)
        self._file_end = host + cs
        self._set_l2(table, i, host)

    def _l2_for_write(self, l1_index: int) -> array[int]:
        table = self._l2(l1_index)
        if table is not None:
            return table
        nbytes = 8 * self.l2_size
        l2_at = _align(self._file_end, self.cluster_size)
        os.pwrite(self.fd, bytes(nbytes), l2_at)   # the table first, then the L1 entry
        self._file_end = l2_at + nbytes
        self.l1[l1_index] = l2_at
        os.pwrite(self.fd, struct.pack(">Q", l2_at), self.l1_offset + 8 * l1_index)
        table = array("Q", bytes(nbytes))
        self._l2_cache[l2_at] = table
        return table

    def _set_l2(self, table: array[int], cluster: int, entry: int) -> None:
        l1_index, l2_index = divmod(cluster, self.l2_size)
        table[l2_index] = entry
        os.pwrite(self.fd, struct.pack(">Q", entry), self.l1[l1_index] + 8 * l2_index)

    def write_compressed(self, offset: int, data: bytes | memoryview) -> None:
        self._check_writable()
        cs = self.cluster_size
        n = memoryview(data).nbytes
        self._check_range(offset, n)
        if offset % cs or not (n == cs or (n < cs and offset + n == self._size)):
            raise BlockError(f"compressed writes are whole clusters of {cs} bytes "
                             f"(got {n} bytes at {offset})", self.filename)
        block = bytes(data) + bytes(cs - n)
        # as QEMU: default level, a 4 KiB window, no zlib header (outside the lock)
        comp = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -12, 9)
        out = comp.compress(block) + comp.flush()
        with self._lock:
            i = offset // cs
            if len(out) >= cs or self._entry(i):   # incompressible, or already allocated
                self._write_piece(i, 0, memoryview(block)[:n])
                return
            table = self._l2_for_write(i // self.l2_size)
            host = self._file_end
            if host > self.offset_mask:
                raise BlockError("the file is too large for a compressed cluster's offset",
                                 self.filename)
            os.pwrite(self.fd, out, host)
            self._file_end = host + len(out)
            self._set_l2(table, i, COMPRESSED | len(out) << (63 - self.cluster_bits) | host)

    def change_backing_file(self, filename: str | None, fmt: str | None) -> None:
        """Rewrite the backing file name in the room before the L1 table (qcow has no
        field for its format: ``fmt`` is not recorded)."""
        self._check_writable()
        name = (filename or "").encode()
        if HEADER_SIZE + len(name) > self.l1_offset or len(name) > MAX_BACKING_NAME:
            raise UnsupportedOperation(
                f"no room for a backing file name of {len(name)} bytes before the L1 table "
                f"at {self.l1_offset:#x}", self.filename)
        with self._lock:
            os.pwrite(self.fd, name, HEADER_SIZE)
            os.pwrite(self.fd, struct.pack(">QI", HEADER_SIZE if name else 0, len(name)), 8)
            self._backing = filename or None

    def info(self) -> ImageInfo:
        return self._info(cluster_size=self.cluster_size, backing_filename=self._backing)
