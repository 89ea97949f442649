"""The write path: allocation, copy-on-write, zeroing, discard, compression, resize.

Ordering on every allocating write (what keeps a crash from corrupting):
refcounts of new clusters are raised and written first (``Refcounts.alloc``),
then the data, then the L2 entries that point at it, then (for a new L2
table) the L1 entry; references to old clusters are dropped last.
"""

from __future__ import annotations

import struct
from array import array

from vmforge.block import BlockError, CorruptImageError, UnsupportedOperation

from . import batch, extl2_write, resize
from .compress import compress_cluster
from .fileio import fill_zero
from .header import (
    AUTOCLEAR_BITMAPS,
    INCOMPAT_CORRUPT,
    INCOMPAT_DIRTY,
    MAX_L1_BYTES,
    OFF_AUTOCLEAR,
    OFF_L1_SIZE,
    OFF_SIZE,
    l1_entries_for,
)
from .image import Cursor, Qcow2Image, as_byte_views, log
from .l2 import (
    COMPRESSED,
    NORMAL,
    OFFSET_MASK,
    OFLAG_COMPRESSED,
    OFLAG_COPIED,
    OFLAG_ZERO,
    UNALLOC,
    ZERO,
    copied_entries,
    entry_kind,
    table_to_bytes,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any


def _add_op(ops: list[list[Any]], host: int, end: int, parts: list[memoryview]) -> None:
    """Add the write of ``parts`` at ``[host, end)`` of the file to ``ops``: to the
    last one where it ends at ``host``."""
    if ops and ops[-1][1] == host:
        last = ops[-1]
        last[1] = end
        last[2].extend(parts)
    else:
        ops.append([host, end, parts])


class Qcow2Writer(Qcow2Image):
    """Everything that changes an image.

    Metadata is written back in a fixed order at *barriers* (``flush``,
    ``close``, ``check``, resizing, or when enough piles up), like QEMU's
    qcow2 caches with their flush dependencies:

    1. new refcounts and new data are already written (refcounts first);
       sync;
    2. dirty L2 entries are written; sync;
    3. dirty L1 entries are written; sync;
    4. references dropped since the last barrier are released (refcounts
       decreased), so a freed cluster is never still referenced on disk.

    A crash (or power loss) at any point leaves the image as of an earlier
    barrier plus leaked clusters, never a referenced cluster with a refcount
    too low.
    """

    _free_byte_offset = 0
    #: the persistent bitmaps are kept by the opener (a BlockBackend marks writes in them
    #: and stores them back on close: vmforge.block.bitmap), so writes leave them valid
    bitmaps_tracked = False
    #: during :meth:`pwritev_runs`: the data writes ``[host, end, parts]`` not done yet
    _batched: list[list[Any]] | None = None
    #: during :meth:`pwritev_runs`: ``[host offset, clusters]`` allocated for the
    #: batch at once, handed out in order (:meth:`_alloc_data`)
    _reserved: list[int] | None = None
    #: write metadata back when this many L2 tables or frees are pending
    MAX_PENDING = 4096

    def _pending(self) -> tuple[dict[int, list[int]], set[int], list[tuple[int, int, bool]]]:
        try:
            return self._dirty_l2, self._dirty_l1, self._pending_free
        except AttributeError:
            self._dirty_l2: dict[int, list[int]] = {}
            self._dirty_l1: set[int] = set()
            #: (host offset, bytes, discard: punched out of the file once unreferenced)
            self._pending_free: list[tuple[int, int, bool]] = []
            return self._dirty_l2, self._dirty_l1, self._pending_free

    def _barrier(self) -> None:
        """Write back deferred metadata in crash-safe order (see the class doc)."""
        dirty_l2, dirty_l1, frees = self._pending()
        if self.readonly or not (dirty_l2 or dirty_l1 or frees):
            return
        if not self.refs.lazy:     # lazy refcounts: written at close (dirty bit set)
            self.refs.write_back()  # the writes' deferred increments, before their L2s
        if self.data is not self.f:
            self.data.sync()
        self.f.sync()
        if dirty_l2:
            for off in sorted(dirty_l2):
                i0, i1 = dirty_l2[off]
                self.l2cache.write_entries(off, i0, i1)
            dirty_l2.clear()
            self.l2cache.dirty.clear()
            self.f.sync()
        if dirty_l1:
            for i in sorted(dirty_l1):
                self.f.pwrite(self.l1_offset + 8 * i, struct.pack(">Q", self.l1[i]))
            dirty_l1.clear()
            self.f.sync()
        if frees:
            self._pending_free = []
            for off, n, discard in frees:
                self.refs.free(off, n, discard)

    def _maybe_barrier(self) -> None:
        if self._batched is not None:
            return                 # after the batch's data is written (pwritev_runs)
        dirty_l2, _, frees = self._pending()
        if (len(dirty_l2) >= max(1, self.l2cache.max_tables // 2)
                or len(frees) >= self.MAX_PENDING):
            self._barrier()

    # -- guards --------------------------------------------------------------------

    def _begin_write(self) -> None:
        self._check_writable()
        if self.snapshot is not None:
            raise BlockError("a snapshot is opened read-only", self.filename)
        if self.corrupt:
            raise CorruptImageError("image is marked corrupt; writes are refused",
                                    self.filename)
        if self.h.autoclear_features & AUTOCLEAR_BITMAPS and not self.bitmaps_tracked:
            # bitmaps are not tracked here: as the spec asks of such a writer, say
            # they are inconsistent before the guest data changes
            log.warning("%s: persistent dirty bitmaps are not tracked; this write makes "
                        "them inconsistent (QEMU then ignores them)", self.filename)
            self.h.autoclear_features &= ~AUTOCLEAR_BITMAPS
            self._write_header(OFF_AUTOCLEAR, struct.pack(">Q", self.h.autoclear_features))
            self.f.sync()
        if self.refs.lazy and not self._marked_dirty:
            self._set_incompat(self.h.incompatible_features | INCOMPAT_DIRTY)
            self.f.sync()
            self._marked_dirty = True

    def _metadata_overlap(self, host: int, n: int) -> str | None:
        """Name the metadata that ``[host, host+n)`` would overwrite, if any."""
        if self.data is not self.f:
            return None            # guest data lives in the external data file
        cs = self.cs
        if host < cs:
            return "the header"
        h = self.h
        spans = [("the L1 table", self.l1_offset, 8 * len(self.l1)),
                 ("the refcount table", self.refs.table_offset, self.refs.table_clusters * cs)]
        if h.nb_snapshots:
            spans.append(("the snapshot table", h.snapshots_offset, self._snap_table_len))
            spans.extend((f"the L1 table of snapshot {s.id}", s.l1_table_offset, 8 * s.l1_size)
                         for s in self._snaps)
        for what, off, size in spans:
            if size and host < off + size and off < host + n:
                return what
        c = host & ~(cs - 1)
        while c < host + n:
            if c in self.l2cache:
                return "an L2 table"
            if self.refs.is_block(c):
                return "a refcount block"
            c += cs
        return None

    def _signal_corruption(self, msg: str, offset: int, table: str) -> CorruptImageError:
        """Mark the image corrupt (like QEMU) and return the error to raise."""
        self.corrupt = True
        if self.h.version >= 3:
            self._set_incompat(self.h.incompatible_features | INCOMPAT_CORRUPT)
        return CorruptImageError(msg + "; image marked corrupt", self.filename, offset, table)

    # -- L1 / L2 -----------------------------------------------------------------------

    def _set_l1(self, l1i: int, ent: int, defer: bool = True) -> None:
        self.l1[l1i] = ent
        if defer:
            self._pending()[1].add(l1i)
        else:
            self.f.pwrite(self.l1_offset + 8 * l1i, struct.pack(">Q", ent))

    def _l2_for_write(self, l1i: int) -> tuple[int, array]:
        """The L2 table for ``l1i``, owned by the active image (allocated or copied)."""
        l2off, tbl = self._l2_table(self.l1, l1i)
        if tbl is not None and self.l1[l1i] & OFLAG_COPIED:
            return l2off, tbl
        new = self.refs.alloc(1)
        table = array("Q", tbl) if tbl is not None else array("Q", bytes(self.cs))
        self.l2cache.write_table(new, table)   # a new cluster: nothing points here yet
        self._set_l1(l1i, new | OFLAG_COPIED)
        if l2off:
            self._pending()[2].append((l2off, self.cs, False))
            self.l2cache.drop(l2off)
        return new, table

    def _free_entry(self, ent: int, discard: bool = False) -> None:
        """Drop (at the next barrier) the reference an old L2 entry held; ``discard``:
        punch the cluster out of the file if that was the last (QEMU's discard
        passthrough of requests; copy-on-write's frees are not passed down)."""
        if self.data is not self.f:
            return                 # data-file clusters are not refcounted
        frees = self._pending()[2]
        if ent & OFLAG_COMPRESSED:
            c0, n = self.clayout.clusters(ent)
            frees.append((c0 << self.cb, n << self.cb, discard))
            if self._ccache is not None and self._ccache[0] == ent:
                self._ccache = None
        elif ent & OFFSET_MASK:
            frees.append((ent & OFFSET_MASK, self.cs, discard))

    def _kind(self, ent: int) -> int:
        """``entry_kind``, knowing that offset 0 is a data-file cluster when COPIED."""
        kind = entry_kind(ent)
        if kind == UNALLOC and ent & OFLAG_COPIED and self.data is not self.f:
            return NORMAL
        return kind

    def _old_cluster(self, gci: int, ent: int, buf: memoryview) -> None:
        """Fill ``buf`` with the current contents of guest cluster ``gci``."""
        kind = self._kind(ent)
        if kind == NORMAL:
            self.data.preadv(ent & OFFSET_MASK, [buf])
        elif kind == COMPRESSED:
            buf[:] = self._compressed(ent)
        elif kind == UNALLOC and self.h.backing_file:
            g = gci << self.cb
            n = min(self.cs, self.size - g)
            self._read_backing(g, [buf[:n]])
            if n < self.cs:
                fill_zero(buf[n:])
        else:
            fill_zero(buf)

    # -- writes ---------------------------------------------------------------------------

    def pwritev(self, offset: int, buffers: Sequence[memoryview]) -> None:
        bufs = as_byte_views(buffers)
        total = sum(b.nbytes for b in bufs)
        self._check_range(offset, total)
        self._write_views(offset, bufs, total)

    def _write_views(self, offset: int, bufs: list[memoryview], total: int) -> None:
        """Write ``total`` bytes at guest ``offset`` (the range is the caller's to
        check: the VM state lives past the disk, see :mod:`.vmstate`)."""
        if not total:
            return
        with self.lock:
            self._begin_write()
            cur = Cursor(bufs)
            span_bits = self.cb + self.l2_bits
            pos, end = offset, offset + total
            write_in_l2 = self._write_in_l2_ext if self.extl2 else self._write_in_l2
            while pos < end:
                t_end = min(end, ((pos >> span_bits) + 1) << span_bits)
                write_in_l2(pos, t_end, cur)
                pos = t_end

    def pwritev_runs(self, runs: Sequence[tuple[int, memoryview]]) -> None:
        """Each run allocated and mapped in turn, as :meth:`pwritev` would, but the
        data of them all written at the end, runs that follow each other in the
        file as one write (a fresh image allocates clusters one after the other),
        and the barrier check after that (never an L2 entry before its data)."""
        if self.extl2 or len(runs) < 2:
            super().pwritev_runs(runs)
            return
        views = [(offset, [view]) for offset, view in self._checked_runs(runs)]
        span_bits = self.cb + self.l2_bits
        with self.lock:
            self._begin_write()
            if batch.write_new_runs(self, views):
                self._maybe_barrier()
                return
            batched: list[list[Any]] = []
            self._batched = batched
            self._reserved = batch.reserve(self, views)
            try:
                for offset, bufs in views:
                    cur = Cursor(bufs)
                    pos, end = offset, offset + bufs[0].nbytes
                    while pos < end:
                        t_end = min(end, ((pos >> span_bits) + 1) << span_bits)
                        self._write_in_l2(pos, t_end, cur)
                        pos = t_end
            finally:
                self._batched = self._reserved = None
                for host, _, parts in batched:   # what was mapped gets its data
                    self.data.pwritev(host, parts)
            self._maybe_barrier()

    def _alloc_data(self, n: int) -> int:
        """``n`` new clusters in a row for data: from the batch's reservation, else
        allocated now (refcounts written at the next barrier)."""
        r = self._reserved
        if r is not None and r[1] >= n:
            base = r[0]
            r[0] += n << self.cb
            r[1] -= n
            return base
        return self.refs.alloc(n, defer=True)

    def _write_in_l2_ext(self, pos: int, end: int, cur: Cursor) -> None:
        extl2_write.write_in_l2(self, pos, end, cur)

    def _write_in_l2(self, pos: int, end: int, cur: Cursor) -> None:
        cb, cs = self.cb, self.cs
        l1i = pos >> (cb + self.l2_bits)
        l2off, tbl = self._l2_for_write(l1i)
        datafile = self.data is not self.f
        if not datafile and not (pos | end) & (cs - 1):
            i0 = (pos >> cb) & self.l2_mask
            count = (end - pos) >> cb
            if tbl[i0:i0 + count].count(0) == count:
                # whole clusters none of which is allocated (a new image's): new
                # clusters in a row, their entries set at once, as the loop below would
                base = self._alloc_data(count)
                self._queue_writes([[base, base + (end - pos), cur.take(end - pos)]])
                tbl[i0:i0 + count] = copied_entries(base, count, cs)
                self._l2_changed(l2off, i0, i0 + count)
                return
        plan = []
        need = 0
        p = pos
        while p < end:
            i = (p >> cb) & self.l2_mask
            into = p & (cs - 1)
            n = min(cs - into, end - p)
            ent = tbl[i]
            inplace = (ent & OFLAG_COPIED and not ent & (OFLAG_COMPRESSED | OFLAG_ZERO)
                       and (ent & OFFSET_MASK or datafile))
            if not inplace:
                need += 1
            plan.append((i, into, n, ent, inplace))
            p += n
        # refcounts written at the barrier, before the L2 entries that point here
        base = self._alloc_data(need) if need and not datafile else 0
        ops: list[list[Any]] = []       # [host, end, parts]: one write each
        olds: list[int] = []
        changed: list[tuple[int, int]] = []
        k = 0
        # the data going to the file as it is, while its clusters follow each other
        # there: taken from the cursor at once, not a slice per cluster
        span_host = span_end = -1
        for i, into, n, ent, inplace in plan:
            if inplace:
                host = (ent & OFFSET_MASK) + into
                what = self._metadata_overlap(host, n)
                if what:
                    raise self._signal_corruption(
                        f"L2 entry {i} points at {host:#x}, which overlaps {what}",
                        l2off + 8 * i, "L2 table")
            else:
                # a data file keeps guest cluster g at offset g (no allocation)
                host = ((l1i << self.l2_bits) + i) << cb if datafile else base + k * cs
                k += 1
                changed.append((i, host | OFLAG_COPIED))
                if ent & (OFFSET_MASK | OFLAG_COMPRESSED):
                    olds.append(ent)
                if n != cs:      # a new cluster written in part: what it held around it
                    if span_end > span_host:
                        _add_op(ops, span_host, span_end, cur.take(span_end - span_host))
                        span_host = span_end = -1
                    buf = memoryview(bytearray(cs))
                    self._old_cluster((l1i << self.l2_bits) + i, ent, buf)
                    q = into
                    for part in cur.take(n):
                        buf[q:q + part.nbytes] = part
                        q += part.nbytes
                    _add_op(ops, host, host + cs, [buf])
                    continue
            if host == span_end:
                span_end += n
                continue
            if span_end > span_host:
                _add_op(ops, span_host, span_end, cur.take(span_end - span_host))
            span_host, span_end = host, host + n
        if span_end > span_host:
            _add_op(ops, span_host, span_end, cur.take(span_end - span_host))
        self._queue_writes(ops)
        self._commit_l2(l2off, tbl, changed, olds)

    def _queue_writes(self, ops: list[list[Any]]) -> None:
        """The data writes ``[host, end, parts]`` of a mapping: done now, or (in
        :meth:`pwritev_runs`) added to the batch's, joined where they continue one."""
        batched = self._batched
        if batched is None:
            for host, _, parts in ops:
                self.data.pwritev(host, parts)
            return
        for op in ops:
            if batched and batched[-1][1] == op[0]:
                last = batched[-1]
                last[1] = op[1]
                last[2].extend(op[2])
            else:
                batched.append(op)

    def _commit_l2(self, l2off: int, tbl: array, changed: list[tuple[int, int]],
                   olds: list[int], discard: bool = False) -> None:
        if not changed:
            return
        for i, e in changed:
            tbl[i] = e
        for ent in olds:
            self._free_entry(ent, discard)
        self._l2_changed(l2off, changed[0][0], changed[-1][0] + 1)

    def _l2_changed(self, l2off: int, i0: int, i1: int) -> None:
        """Entries ``[i0, i1)`` of the cached L2 table at ``l2off`` changed: written
        back at the next barrier (which may be now)."""
        self._mark_l2(l2off, i0, i1)
        self._maybe_barrier()

    def _mark_l2(self, l2off: int, i0: int, i1: int) -> None:
        """Entries ``[i0, i1)`` of the cached L2 table at ``l2off`` changed: written
        back at the next barrier."""
        dirty_l2 = self._pending()[0]
        d = dirty_l2.get(l2off)
        if d is None:
            dirty_l2[l2off] = [i0, i1]
            self.l2cache.dirty.add(l2off)
        else:
            if i0 < d[0]:
                d[0] = i0
            if i1 > d[1]:
                d[1] = i1

    # -- zeroes and discard ----------------------------------------------------------------

    def _reads_as_zero(self, gci: int) -> bool:
        kind = self._kind(self._entry_at(self.l1, gci))
        return kind == ZERO or (kind == UNALLOC and not self.h.backing_file)

    def write_zeroes(self, offset: int, length: int, may_unmap: bool = False) -> None:
        self._check_range(offset, length)
        if not length:
            return
        with self.lock:
            self._begin_write()
            if self.data_file_raw:
                self._zero_data_file(offset, offset + length)
            if self.extl2:
                extl2_write.zero_range(self, offset, offset + length, may_unmap)
                return
            cs, end = self.cs, offset + length
            a = -(-offset // cs) * cs          # first full cluster
            b = end // cs * cs                 # end of the last full cluster
            if end == self.size:
                b = -(-end // cs) * cs         # the short last cluster counts as full
            if a >= b:
                self._zero_partial(offset, end)
                return
            self._zero_partial(offset, a)
            self._zero_partial(b, end)
            self._zero_clusters(a, b, unmap=may_unmap)

    def _zero_partial(self, start: int, end: int) -> None:
        """Write zeros over parts of clusters that do not already read as zeros.  A
        cluster that already reads as zeros becomes a zero cluster on a v3 image, as
        QEMU widens such a request to the whole cluster (qcow2_co_pwrite_zeroes: the
        rest of it reads as zero) and sets its zero flag."""
        cs = self.cs
        while start < end:
            stop = min(end, (start | (cs - 1)) + 1)
            if not self._reads_as_zero(start >> self.cb):
                self.pwritev(start, [memoryview(bytes(stop - start))])
            elif self.h.version >= 3 and not self.data_file_raw:
                c = start >> self.cb << self.cb
                self._zero_clusters(c, c + cs, unmap=False)
            start = stop

    def _zero_clusters(self, start: int, end: int, unmap: bool, discard: bool = False,
                       full: bool = False) -> None:
        """Make whole clusters ``[start, end)`` read as zeros (v3) or unallocated.

        ``full``: make them unallocated whatever the version (shrinking).
        """
        cb = self.cb
        span_bits = cb + self.l2_bits
        v3 = self.h.version >= 3 and not full
        has_backing = bool(self.h.backing_file) and not full
        if not v3 and not discard and has_backing:
            # v2 cannot express zeros over a backing file
            self._write_zero_data(start, min(end, self.size))
            return
        pos = start
        while pos < end:
            t_end = min(end, ((pos >> span_bits) + 1) << span_bits)
            l1i = pos >> span_bits
            l2off, tbl = self._l2_table(self.l1, l1i)
            if tbl is None and not (v3 and (has_backing or not discard)):
                pos = t_end       # unallocated and nothing below: already zero
                continue
            changed: list[tuple[int, int]] = []
            olds: list[int] = []
            keep_data: list[int] = []
            i0 = (pos >> cb) & self.l2_mask
            i1 = i0 + ((t_end - pos + self.cs - 1) >> cb)
            for i in range(i0, i1):
                ent = tbl[i] if tbl is not None else 0
                kind = self._kind(ent)
                if v3:
                    if kind == ZERO and not (unmap and ent & OFFSET_MASK):
                        continue
                    if kind == UNALLOC and not has_backing and discard:
                        continue  # (a write of zeros marks them, as QEMU's
                        #          zero_in_l2_slice; a discard leaves them)
                    if kind == NORMAL and not unmap and ent & OFLAG_COPIED:
                        new = ent | OFLAG_ZERO           # keep the preallocation
                    else:
                        new = OFLAG_ZERO
                        if ent & (OFFSET_MASK | OFLAG_COMPRESSED):
                            olds.append(ent)
                else:
                    if kind in (UNALLOC, ZERO):
                        continue
                    if not discard and not unmap and has_backing:
                        keep_data.append(i)
                        continue
                    new = 0       # v2, nothing below: QEMU discards (zeroize -> discard)
                    olds.append(ent)
                changed.append((i, new))
            if changed:
                if tbl is None or not self.l1[l1i] & OFLAG_COPIED:
                    l2off, tbl = self._l2_for_write(l1i)
                self._commit_l2(l2off, tbl, changed, olds, discard=True)
            base = l1i << span_bits
            for i in keep_data:
                g = base + (i << cb)
                self._write_zero_data(g, min(g + self.cs, self.size))
            pos = t_end

    def _zero_data_file(self, start: int, end: int) -> None:
        """Keep a raw data file raw: zeros go into it as well as into the L2 flags."""
        chunk = memoryview(bytes(min(end - start, 1 << 20)))
        while start < end:
            n = min(chunk.nbytes, end - start)
            self.data.pwrite(start, chunk[:n])
            start += n

    def _write_zero_data(self, start: int, end: int) -> None:
        chunk = memoryview(bytes(min(end - start, 1 << 20)))
        while start < end:
            n = min(chunk.nbytes, end - start)
            self.pwritev(start, [chunk[:n]])
            start += n

    def discard(self, offset: int, length: int) -> None:
        """Whole clusters in the range become zero (v3) or unallocated (v2)."""
        self._check_range(offset, length)
        with self.lock:
            self._begin_write()
            if self.data_file_raw:
                self._zero_data_file(offset, offset + length)
            if self.extl2:     # whole subclusters read as zeros, as QEMU does
                scs = self.cs >> 5
                a, end = -(-offset // scs) * scs, offset + length
                b = end // scs * scs if end != self.size else end
                if a < b:
                    extl2_write.zero_range(self, a, b, unmap=True)
                return
            cs = self.cs
            a = -(-offset // cs) * cs
            end = offset + length
            b = end // cs * cs if end != self.size else -(-end // cs) * cs
            if a < b:
                self._zero_clusters(a, b, unmap=True, discard=True)

    def make_empty(self) -> None:
        """Unallocate every cluster, so the whole disk reads from the backing file
        again (QEMU's ``bdrv_make_empty``: what ``qemu-img commit`` does to the top
        afterwards; ``discard`` would make the clusters read as zeros instead): where
        QEMU can, a new empty image in the same file (:mod:`.empty`), else every
        cluster freed."""
        from . import empty

        with self.lock:
            self._begin_write()
            if empty.can_empty_completely(self):     # QEMU's way: a new empty image
                empty.empty_completely(self)
                return
            end = -(-self.size // self.cs) * self.cs
            if self.extl2:
                extl2_write.zero_range(self, 0, end, unmap=True, full=True)
            else:
                self._zero_clusters(0, end, unmap=True, discard=True, full=True)
            self._barrier()

    # -- compressed writes -----------------------------------------------------------------

    def write_compressed(self, offset: int, data: bytes | memoryview) -> None:
        self._check_writable()
        mv = memoryview(data).cast("B")
        n = mv.nbytes
        cs = self.cs
        if offset % cs or not (n == cs or (n < cs and offset + n == self.size)):
            raise BlockError(f"compressed writes take one whole cluster at a cluster "
                             f"boundary (got {n} bytes at {offset})", self.filename)
        self._check_range(offset, n)
        raw = bytes(mv) if n == cs else bytes(mv) + bytes(cs - n)
        # outside the lock: zlib and zstd release the GIL
        comp = compress_cluster(raw, cs, self.h.compression_type)
        with self.lock:
            if comp is None or self.data is not self.f:   # (data files: never compressed)
                self.pwritev(offset, [mv])
                return
            self._begin_write()
            l1i = offset >> (self.cb + self.l2_bits)
            l2off, tbl = self._l2_for_write(l1i)
            host = self._alloc_bytes(len(comp))
            self.f.pwrite(host, comp)
            i = (offset >> self.cb) & self.l2_mask
            cent = self.clayout.encode(host, len(comp))
            if self.extl2:
                old = tbl[2 * i]
                changes = [(2 * i, cent), (2 * i + 1, 0)]
            else:
                old = tbl[i]
                changes = [(i, cent)]
            olds = [old] if old & (OFFSET_MASK | OFLAG_COMPRESSED) else []
            self._commit_l2(l2off, tbl, changes, olds)

    def _alloc_bytes(self, n: int) -> int:
        """Byte-granular allocation for compressed data (QEMU's ``alloc_bytes``).

        Compressed clusters are packed into the current partly used host
        cluster while it is still ours: ``Refcounts.byte_cluster`` is reset when
        that cluster is freed, so it can never be a reused data cluster.
        """
        cs, cb, refs = self.cs, self.cb, self.refs
        fb = self._free_byte_offset
        c = fb >> cb
        if fb % cs and refs.byte_cluster == c and 0 < refs.get(c) < refs.codec.max:
            cend = (c + 1) << cb
            if fb + n <= cend:
                refs.update(c, 1, +1)
                self._set_free_byte(fb + n)
                return fb
            extra = -(-(fb + n - cend) // cs)
            new = refs.alloc(extra)
            if new == cend:
                refs.update(c, 1, +1)
                self._set_free_byte(fb + n)
                return fb
            refs.update(new >> cb, extra, -1)
        new = refs.alloc(-(-n // cs))
        self._set_free_byte(new + n)
        return new

    def _set_free_byte(self, off: int) -> None:
        if off % self.cs:
            self._free_byte_offset = off
            self.refs.byte_cluster = off >> self.cb
        else:
            self._free_byte_offset = 0
            self.refs.byte_cluster = -1

    # -- resize ---------------------------------------------------------------------------

    def truncate(self, size: int) -> None:
        """Change the virtual size; shrinking drops the clusters past the new end."""
        if size < 0 or size >= 1 << 63:
            raise BlockError(f"size {size} is out of range", self.filename)
        if size % 512:
            raise BlockError(f"the new size {size} must be a multiple of 512 (QEMU counts "
                             "qcow2 sizes in sectors)", self.filename)
        with self.lock:
            self._begin_write()
            self._barrier()
            old = self.size
            if size == old:
                return
            if self._snaps:
                raise UnsupportedOperation("resizing an image with internal snapshots is "
                                           "not supported", self.filename)
            cs = self.cs
            if size < old:
                a = -(-size // cs) * cs
                if self.extl2:
                    if a < old:
                        extl2_write.zero_range(self, a, old, unmap=True, full=True)
                else:
                    self._zero_clusters(a, -(-old // cs) * cs, unmap=True, full=True)
                self._free_l2_past(l1_entries_for(size, self.cb, self.extl2))
                # the entries past the end are gone on disk before the size says so:
                # a crash in between must not leave old data to reappear on a regrow
                self._barrier()
                resize.give_back_space(self)
                self._set_size(size)
                return
            need = l1_entries_for(size, self.cb, self.extl2)
            if need > MAX_L1_BYTES // 8:
                raise BlockError(f"size {size} needs an L1 table above QEMU's limit",
                                 self.filename)
            if need > len(self.l1):
                self._grow_l1(need)
            self._set_size(size)
            tail = min(-(-old // cs) * cs, size)
            if old % cs and tail > old:      # stale bytes past the old end
                if self.extl2:
                    extl2_write.zero_range(self, old, tail, unmap=False)
                else:
                    self._zero_partial(old, tail)
            if self.h.backing_file and size > tail:  # do not uncover the backing file
                self.write_zeroes(tail, size - tail)

    def _set_size(self, size: int) -> None:
        if self.data is not self.f:
            self.data.truncate(size)      # the data file follows the disk (QEMU too)
        self.f.pwrite(OFF_SIZE, struct.pack(">Q", size))
        self.h.size = size
        self._size = size

    def _free_l2_past(self, first: int) -> None:
        """Free L2 tables of L1 entries ``first..`` (all their entries are unallocated)."""
        for l1i in range(first, len(self.l1)):
            off = self.l1[l1i] & OFFSET_MASK
            if off:
                self._set_l1(l1i, 0)
                self._pending()[0].pop(off, None)   # its entries need not be written
                self.l2cache.dirty.discard(off)
                self.l2cache.drop(off)
                self._pending()[2].append((off, self.cs, False))

    def _grow_l1(self, need: int) -> None:
        self._barrier()            # the new table copies the L1 as it is on disk
        cs = self.cs
        nbytes = need * 8
        ncl = -(-nbytes // cs)
        new = self.refs.alloc(ncl)
        l1 = self.l1 + array("Q", bytes(8 * (need - len(self.l1))))
        raw = table_to_bytes(l1)
        self.f.pwrite(new, raw + bytes(ncl * cs - len(raw)))
        old_off, old_n = self.l1_offset, len(self.l1)
        self.f.sync()
        self.f.pwrite(OFF_L1_SIZE, struct.pack(">IQ", need, new))
        self.f.sync()
        self.l1, self.l1_offset = l1, new
        self.h.l1_size, self.h.l1_table_offset = need, new
        if old_n:
            self.refs.free(old_off, old_n * 8)
