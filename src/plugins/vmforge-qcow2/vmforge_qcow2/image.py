"""An open qcow2 image: state, opening, the read path and block status."""

from __future__ import annotations

import os
import struct
from _thread import RLock
from array import array

from vmforge.block import BlockDriver, BlockError, BlockStatus, CorruptImageError, Extent
from vmforge.lazy import lazy_logger

from .compress import CompressedLayout, decompress_cluster
from .extl2 import _map_extended
from .fileio import ImageFile, fill_zero
from .header import (
    AUTOCLEAR_BITMAPS,
    AUTOCLEAR_DATA_FILE_RAW,
    COMPAT_LAZY_REFCOUNTS,
    INCOMPAT_CORRUPT,
    INCOMPAT_DATA_FILE,
    INCOMPAT_DIRTY,
    OFF_AUTOCLEAR,
    OFF_INCOMPAT,
    Header,
    parse_header,
)
from .l2 import (
    COMPRESSED,
    L1E_RESERVED,
    L2E_RESERVED,
    NORMAL,
    OFFSET_MASK,
    OFLAG_COPIED,
    UNALLOC,
    ZERO,
    L2Cache,
    entry_kind,
    table_from_bytes,
)
from .probe import probe as _probe
from .refcount import Refcounts
from .snapshot import Snapshot, find_snapshot, read_snapshots, table_bytes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from typing import Any

#: warnings go to the log: one line, not Python's warning with a line of source
log = lazy_logger("vmforge.block.qcow2")

#: a run of the guest range with one kind: (guest offset, length, kind, host offset, entry)
Run = tuple[int, int, int, int, int]
if TYPE_CHECKING:   # (collections.abc is the type checker's only: start-up time)
    BackingRead = Callable[[int, Sequence[memoryview]], None]


_STATUS_DATA = BlockStatus.DATA | BlockStatus.ALLOCATED
_STATUS_ZERO = BlockStatus.ZERO | BlockStatus.ALLOCATED
_STATUS_COMPRESSED = BlockStatus.DATA | BlockStatus.ALLOCATED | BlockStatus.COMPRESSED
_DATA_BIT = int(BlockStatus.DATA)
_DATA_NOT_COMPRESSED = _DATA_BIT | int(BlockStatus.COMPRESSED)


class Cursor:
    """Walks a list of byte memoryviews, handing out slices."""

    __slots__ = ("bufs", "i", "pos")

    def __init__(self, bufs: list[memoryview]) -> None:
        self.bufs = bufs
        self.i = 0
        self.pos = 0

    def take(self, n: int) -> list[memoryview]:
        out = []
        bufs = self.bufs
        while n:
            b = bufs[self.i]
            avail = b.nbytes - self.pos
            if avail <= 0:
                self.i += 1
                self.pos = 0
                continue
            k = avail if avail < n else n
            out.append(b[self.pos:self.pos + k] if k != b.nbytes else b)
            self.pos += k
            n -= k
        return out


def as_byte_views(buffers: Sequence[Any]) -> list[memoryview]:
    out = []
    for b in buffers:
        mv = b if isinstance(b, memoryview) else memoryview(b)
        if mv.format != "B" or mv.ndim != 1:
            mv = mv.cast("B")
        out.append(mv)
    return out


class Qcow2Image(BlockDriver):
    """State of an open image and everything that only reads it."""

    format_name = "qcow2"

    def __init__(self, filename: str, readonly: bool = True, *, snapshot: str | None = None,
                 l2_cache_size: int = 8 << 20, for_check: bool = False,
                 no_flush: bool = False, data_file: str | None = None) -> None:
        super().__init__(filename, readonly or snapshot is not None)
        self.f = ImageFile(filename, self.readonly, no_flush)
        #: where guest data lives: the image itself, or the external data file
        self.data = self.f
        #: QEMU's metadata_preallocation, found on the first block status
        self._prealloc_known: bool | None = None
        try:
            self._open(snapshot, l2_cache_size, for_check, data_file, no_flush)
        except BaseException:
            self.f.close()
            if self.data is not self.f:
                self.data.close()
            raise

    @property  # type: ignore[override]
    def sync(self) -> bool:
        """False: never fdatasync (the block layer's ``cache=unsafe``, the
        ``no_flush`` open option); the image and its data file alike."""
        f = self.__dict__.get("f")
        return True if f is None else not f.no_flush

    @sync.setter
    def sync(self, value: bool) -> None:
        # BlockDriver.__init__ sets it before the files are open: nothing to do then
        for name in ("f", "data"):
            file = self.__dict__.get(name)
            if file is not None:
                file.no_flush = not value

    @property
    def has_data_file(self) -> bool:
        return self.data is not self.f

    @property
    def data_file_raw(self) -> bool:
        """The data file must stay a valid raw image (zeros written, not just flagged)."""
        return self.has_data_file and bool(self.h.autoclear_features
                                           & AUTOCLEAR_DATA_FILE_RAW)

    def data_file_path(self, name: str | None = None) -> str | None:
        """The external data file's path: as recorded, a relative name taken from
        the current directory (as QEMU does; unlike backing files)."""
        return name or self.h.data_file

    def _open_data_file(self, override: str | None, no_flush: bool) -> None:
        path = self.data_file_path(override)
        if path is None:
            raise BlockError("the image keeps its data in an external data file but does "
                             "not name it: pass data_file=", self.filename)
        if self.h.compression_type or self._snaps:
            raise CorruptImageError("an image with an external data file cannot have "
                                    "compressed clusters or snapshots", self.filename, 0,
                                    "header")
        self.data = ImageFile(path, self.readonly, no_flush)

    def _open(self, snapshot: str | None, l2_cache_size: int, for_check: bool,
              data_file: str | None, no_flush: bool) -> None:
        f = self.f
        head = os.pread(f.fd, min(f.end, 1 << 21), 0)
        h = parse_header(head, self.filename, f.end)
        self.h: Header = h
        self.cb = h.cluster_bits
        self.cs = 1 << self.cb
        self.granularity = self.cs  # type: ignore[misc]
        #: extended L2 entries (32 subclusters per cluster)
        self.extl2 = h.extended_l2
        self.l2_bits = self.cb - 3 - self.extl2
        self.l2_mask = (1 << self.l2_bits) - 1
        self.clayout = CompressedLayout(self.cb)
        self.lock = RLock()
        #: optional reader of the backing chain for partial-cluster copy-on-write
        self.backing_reader: BackingRead | None = None
        self._ccache: tuple[int, bytes] | None = None
        self._marked_dirty = False
        self.corrupt = bool(h.incompatible_features & INCOMPAT_CORRUPT)
        if self.corrupt:
            if not self.readonly and not for_check:
                raise BlockError("image is marked corrupt (incompatible feature bit 1): "
                                 "refusing to open it read-write; open read-only, or "
                                 "repair it with check(repair='all')", self.filename)
            if self.readonly:
                log.warning("%s: qcow2 image is marked corrupt; reading it read-only",
                            self.filename)
        self.l1_offset = h.l1_table_offset
        self.l1 = self._read_l1(h.l1_table_offset, h.l1_size, "L1 table")
        self.l2cache = L2Cache(f, self.cb, max(4, l2_cache_size >> self.cb))
        self.refs = Refcounts(f, self.cb, h.refcount_order, h.refcount_table_offset,
                              h.refcount_table_clusters, self._write_header,
                              lazy=bool(h.compatible_features & COMPAT_LAZY_REFCOUNTS))
        self._snaps: list[Snapshot] = read_snapshots(f, h.snapshots_offset,
                                                        h.nb_snapshots, self.cs)
        self._snap_table_len = table_bytes(self._snaps, f, h.snapshots_offset)
        self.snapshot: Snapshot | None = None
        self._size = h.size // 512 * 512   # as QEMU: whole 512-byte sectors
        if snapshot is not None:
            snap = find_snapshot(self._snaps, snapshot)
            if snap is None:
                have = ", ".join(f"{s.id} ({s.name})" for s in self._snaps) or "none"
                raise BlockError(f"no snapshot with id or name {snapshot!r} (have: {have})",
                                 self.filename)
            self.snapshot = snap
            self._size = snap.disk_size if snap.disk_size is not None else h.size
            self.l1 = self._read_l1(snap.l1_table_offset, snap.l1_size,
                                    f"L1 table of snapshot {snap.id}")
        if h.incompatible_features & INCOMPAT_DATA_FILE:
            self._open_data_file(data_file, no_flush)
        if not self.readonly:
            # we maintain only "raw external data": clear every other autoclear bit
            keep = AUTOCLEAR_DATA_FILE_RAW if self.data is not self.f else 0
            # (the bitmaps bit stays until the first write: see Qcow2Writer._begin_write)
            keep |= AUTOCLEAR_BITMAPS
            if h.autoclear_features & ~keep:
                h.autoclear_features &= keep
                self._write_header(OFF_AUTOCLEAR, struct.pack(">Q", h.autoclear_features))
            if h.incompatible_features & INCOMPAT_DIRTY and not for_check:
                # refcounts may be stale (lazy refcounts): rebuild them first (QEMU too)
                r = self.check(repair="all")
                if r.check_errors or r.corruptions:
                    raise BlockError("could not repair the dirty image "
                                     f"({r.corruptions} corruptions, {r.check_errors} "
                                     "check errors left); open it read-only or with "
                                     "for_check=True", self.filename)

    def _read_l1(self, offset: int, n: int, table: str) -> array:
        if n == 0:
            return array("Q")
        raw = self.f.read_table(offset, 8 * n, table)
        return table_from_bytes(raw)

    # -- header helpers ----------------------------------------------------------

    def _write_header(self, offset: int, data: bytes) -> None:
        self.f.pwrite(offset, data)

    def _set_incompat(self, bits: int) -> None:
        self.h.incompatible_features = bits
        if self.h.version >= 3:
            self._write_header(OFF_INCOMPAT, struct.pack(">Q", bits))

    # -- public facts ------------------------------------------------------------

    @classmethod
    def probe(cls, header: bytes, filename: str) -> int:
        return _probe(header, filename)

    @property
    def size(self) -> int:
        return self._size

    @property
    def cluster_size(self) -> int:
        return self.cs

    @property
    def backing_filename(self) -> str | None:
        return self.h.backing_file

    @property
    def backing_format(self) -> str | None:
        return self.h.backing_format

    @property
    def version(self) -> int:
        return self.h.version

    def backing_path(self) -> str | None:
        """The backing file's path, relative names taken from the image's folder."""
        name = self.h.backing_file
        if not name:
            return None
        if os.path.isabs(name) or ":" in name.split("/", 1)[0]:
            return name
        return os.path.join(os.path.dirname(os.path.abspath(self.filename)), name)

    # -- mapping -------------------------------------------------------------------

    def _l2_table(self, l1: Sequence[int], l1i: int) -> tuple[int, Any]:
        """(L2 offset, table) for an L1 index; (0, None) when unallocated."""
        if l1i >= len(l1):
            return 0, None
        e = l1[l1i]
        if e & L1E_RESERVED:
            raise CorruptImageError(f"L1 entry {l1i} has reserved bits set ({e:#x})",
                                    self.filename, self.l1_offset + 8 * l1i, "L1 table")
        off = e & OFFSET_MASK
        if not off:
            return 0, None
        return off, self.l2cache.get(off, f"L1 entry {l1i}")

    def _bad_l2(self, l2off: int, i: int, ent: int, why: str) -> CorruptImageError:
        return CorruptImageError(f"entry {i} ({ent:#x}) {why}", self.filename,
                                 l2off + 8 * i, "L2 table")

    def _map(self, l1: Sequence[int], offset: int, length: int) -> list[Run]:
        """Runs of one kind covering ``[offset, offset+length)``, merged."""
        if self.extl2:
            return _map_extended(self, l1, offset, length)
        runs: list[Run] = []
        cb, cs = self.cb, self.cs
        span_bits = cb + self.l2_bits
        fend = self.f.end
        datafile = self.data is not self.f    # a raw data file may be short or sparse
        pos, end = offset, offset + length
        # current run
        r_off = r_len = r_kind = r_host = r_ent = -1
        # the entry that would continue it by a whole cluster (an entry's flags and
        # checks hold for the next when it is the same but for the offset), and the
        # bound such an entry must stay under (its cluster inside the file)
        nxt, lim, step = -1, 0, 0
        no_lim = 1 << 64
        while pos < end:
            l1i = pos >> span_bits
            t_end = min(end, (l1i + 1) << span_bits)
            l2off, tbl = self._l2_table(l1, l1i)
            if tbl is None:
                if r_kind == UNALLOC:
                    r_len += t_end - pos
                else:
                    if r_kind >= 0:
                        runs.append((r_off, r_len, r_kind, r_host, r_ent))
                    r_off, r_len, r_kind, r_host, r_ent = pos, t_end - pos, UNALLOC, 0, 0
                nxt = -1
                pos = t_end
                continue
            i = (pos >> cb) & self.l2_mask
            while pos < t_end:
                ent = tbl[i]
                if ent == nxt and ent < lim and pos + cs <= t_end:
                    r_len += cs        # the run goes on (most clusters: few checks)
                    pos += cs
                    i += 1
                    nxt += step
                    continue
                into = pos & (cs - 1)
                n = cs - into
                if n > t_end - pos:
                    n = t_end - pos
                kind = entry_kind(ent)
                if datafile and kind == UNALLOC and ent & OFLAG_COPIED:
                    kind = NORMAL      # guest cluster 0 at offset 0 of the data file
                host = 0
                if kind == NORMAL:
                    if ent & L2E_RESERVED or ent & OFFSET_MASK & (cs - 1):
                        raise self._bad_l2(l2off, i, ent, "has reserved bits set or an "
                                           "unaligned offset")
                    host = (ent & OFFSET_MASK) + into
                    if host >= fend and not datafile:
                        raise self._bad_l2(l2off, i, ent, f"points at {host:#x}, past the "
                                           f"end of the file ({fend} bytes)")
                    nxt, step = ent + cs, cs
                    lim = no_lim if datafile else (ent & ~OFFSET_MASK) + fend
                    if r_kind == NORMAL and r_host + r_len == host:
                        r_len += n
                        pos += n
                        i += 1
                        continue
                elif kind == ZERO and ent & OFFSET_MASK:
                    # preallocated zeros: qemu-img map shows where (offset), so runs
                    # merge only where the host clusters are contiguous
                    host = (ent & OFFSET_MASK) + into
                    nxt, lim, step = ent + cs, no_lim, cs
                    if r_kind == ZERO and r_host and r_host + r_len == host:
                        r_len += n
                        pos += n
                        i += 1
                        continue
                elif kind != COMPRESSED:
                    nxt, lim, step = ent, no_lim, 0
                    if kind == r_kind and not r_host:
                        r_len += n
                        pos += n
                        i += 1
                        continue
                else:
                    nxt = -1
                if r_kind >= 0:
                    runs.append((r_off, r_len, r_kind, r_host, r_ent))
                r_off, r_len, r_kind, r_host, r_ent = pos, n, kind, host, ent
                pos += n
                i += 1
        if r_kind >= 0:
            runs.append((r_off, r_len, r_kind, r_host, r_ent))
        return runs

    def _entry_at(self, l1: Sequence[int], gci: int) -> int:
        _, tbl = self._l2_table(l1, gci >> self.l2_bits)
        return 0 if tbl is None else tbl[gci & self.l2_mask]

    # -- reading -------------------------------------------------------------------------

    def _compressed(self, ent: int) -> bytes:
        cc = self._ccache
        if cc is not None and cc[0] == ent:
            return cc[1]
        host, csize = self.clayout.decode(ent)
        if host >= self.f.end or host < self.cs:
            raise CorruptImageError(f"compressed cluster descriptor {ent:#x} points at "
                                    f"{host:#x}, outside the file", self.filename, host,
                                    "L2 table")
        buf = bytearray(csize)
        self.f.preadv(host, [memoryview(buf)])
        data = decompress_cluster(bytes(buf), self.cs, self.filename, host,
                                  self.h.compression_type)
        self._ccache = (ent, data)
        return data

    def preadv(self, offset: int, buffers: Sequence[memoryview]) -> None:
        bufs = as_byte_views(buffers)
        total = sum(b.nbytes for b in bufs)
        self._check_range(offset, total)
        self._read_views(offset, bufs, total)

    def _read_views(self, offset: int, bufs: list[memoryview], total: int) -> None:
        """Read ``total`` bytes at guest ``offset`` (the range is the caller's to check)."""
        if not total:
            return
        if self.closed:
            raise BlockError("image is closed", self.filename)
        with self.lock:
            reads: list[list[Any]] = []
            self._fill_or_plan(offset, bufs, total, reads)
            for host, _, parts in reads:
                self.data.preadv(host, parts)

    def preadv_runs(self, runs: Sequence[tuple[int, memoryview]]) -> None:
        """Each run mapped in turn; the data clusters of them all that lie one after
        the other in the file read with one ``preadv`` (a batch of ``convert``)."""
        views = [(offset, as_byte_views([buf])) for offset, buf in runs]
        for offset, bufs in views:
            self._check_range(offset, bufs[0].nbytes)
        if self.closed:
            raise BlockError("image is closed", self.filename)
        with self.lock:
            reads: list[list[Any]] = []
            for offset, bufs in views:
                self._fill_or_plan(offset, bufs, bufs[0].nbytes, reads)
            for host, _, parts in reads:
                self.data.preadv(host, parts)

    def _fill_or_plan(self, offset: int, bufs: list[memoryview], total: int,
                      reads: list[list[Any]]) -> None:
        """Fill ``bufs`` (``total`` bytes from guest ``offset``) where they read as
        zeros or compressed data; add the reads of data clusters to ``reads``
        (``[host, end, parts]``, a read extended where the next begins in the file)."""
        cur = Cursor(bufs)
        for g, n, kind, host, ent in self._map(self.l1, offset, total):
            parts = cur.take(n)
            if kind == NORMAL:
                if reads and reads[-1][1] == host:
                    reads[-1][1] += n
                    reads[-1][2].extend(parts)
                else:
                    reads.append([host, host + n, parts])
            elif kind == COMPRESSED:
                data = self._compressed(ent)
                into = g & (self.cs - 1)
                for p in parts:
                    k = p.nbytes
                    p[:] = data[into:into + k]
                    into += k
            else:
                for p in parts:
                    fill_zero(p)

    def block_status(self, offset: int, length: int) -> Iterator[Extent]:
        self._check_range(offset, length)
        if not self._metadata_preallocated():
            yield from self._format_status(offset, length)
            return
        from vmforge.block.mapped import refine_by_file
        for e in self._format_status(offset, length):
            if e.status != _STATUS_DATA or e.host_offset is None:
                yield e
                continue
            # data clusters that lie in holes of the data file (or past its end)
            # read as zeros, and block status says so
            yield from refine_by_file(e, self.data.fd)

    def plain_data_fd(self, extent: Extent) -> int | None:
        """The data file's descriptor for a data extent of :meth:`block_status`
        (normal clusters: their bytes as the guest reads them, at
        ``extent.host_offset``; a hole of the file reads zeros, as here), else
        ``None`` (compressed, zero, unallocated: :meth:`preadv` reads those)."""
        if (extent.host_offset is None or self.closed
                or int(extent.status) & _DATA_NOT_COMPRESSED != _DATA_BIT):
            return None
        return self.data.fd

    def _metadata_preallocated(self) -> bool:
        """QEMU's ``qcow2_detect_metadata_preallocation``, once per open: the image
        counts as preallocated (``preallocation=metadata``) when at least
        max(10/9 of the clusters the file really occupies, that + 2) of the
        clusters within its length have a refcount."""
        if self._prealloc_known is not None:
            return self._prealloc_known
        try:
            st = os.fstat(self.f.fd)
            real = st.st_blocks * 512 // self.cs
            threshold = max(real * 10 // 9, real + 2)
            end = -(-st.st_size // self.cs)
            count = 0
            i = 0
            refs = self.refs
            with self.lock:
                while i < end and count < threshold:    # a refcount block at a time
                    first = i >> refs.shift << refs.shift
                    stop = min(end, first + refs.entries)
                    blk = refs.load(i >> refs.shift)
                    if blk is not None:
                        count += refs.codec.count_used(blk, i - first, stop - first)
                    i = stop
            known = count >= threshold
        except (OSError, BlockError):
            known = False       # QEMU: an error is no preallocation
        self._prealloc_known = known
        return known

    def _format_status(self, offset: int, length: int) -> Iterator[Extent]:
        has_backing = bool(self.h.backing_file) and self.snapshot is None
        unalloc = BlockStatus(0) if has_backing else BlockStatus.ZERO
        # (IntFlag arithmetic is slow: once here, not per extent)
        data, zero = _STATUS_DATA, _STATUS_ZERO
        pending: Extent | None = None
        for g, n, kind, host in self._runs(offset, length):
            hoff: int | None = None
            if kind == NORMAL:
                st = data
                hoff = host
            elif kind == ZERO:
                st = zero
                hoff = host or None     # preallocated zeros have a place (qemu-img too)
            elif kind == COMPRESSED:
                st = _STATUS_COMPRESSED
            else:
                st = unalloc
                hoff = host or None     # unallocated subclusters of an allocated cluster
            if pending is not None and pending.status == st and (
                    (hoff is None and pending.host_offset is None)
                    or (hoff is not None and pending.host_offset is not None
                        and pending.host_offset + pending.length == hoff)):
                pending = Extent(pending.offset, pending.length + n, st, pending.host_offset,
                                 0, self.filename)
                continue
            if pending is not None:
                yield pending
            pending = Extent(g, n, st, hoff, 0, self.filename)
        if pending is not None:
            yield pending

    def _runs(self, offset: int, length: int) -> Iterator[tuple[int, int, int, int]]:
        """``_map`` window by window (at most 4096 clusters or subclusters each), so
        that a fragmented image of any size is mapped in bounded memory."""
        window = self.cs << (7 if self.extl2 else 12)
        end = offset + length
        pos = offset
        while pos < end:
            n = min(end, (pos // window + 1) * window) - pos
            with self.lock:
                runs = self._map(self.l1, pos, n)
            for g, k, kind, host, _ent in runs:
                yield g, k, kind, host
            pos += n

    # -- the backing file (copy-on-write of partial clusters) -------------------------

    def _read_backing(self, offset: int, parts: list[memoryview]) -> None:
        """Old contents of an unallocated range, for a write covering part of a cluster.

        The driver never opens the backing file: the BlockBackend widens such
        writes to whole clusters itself.  Whoever drives this image directly may
        set ``backing_reader``; without one, the rest of the cluster reads as zeros
        (what ``preadv`` shows for it too).
        """
        if self.backing_reader is not None:
            self.backing_reader(offset, parts)
            return
        for p in parts:
            fill_zero(p)
