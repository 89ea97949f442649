"""``check -r all`` rebuilding the refcount structure as QEMU 7.2 does
(``rebuild_refcount_structure``, ``rebuild_refcounts_write_refblocks``,
``alloc_clusters_imrt`` of ``block/qcow2-refcount.c``).

The computed refcounts (every reference the check found, the old refcount
table and blocks included) are the in-memory table.  Each refcount block
that holds a nonzero count gets the first free cluster from the start of
its range on, and is written as a slice of the in-memory table; the new
table then takes the first free clusters from the start of the file, the
blocks covering it are written again, until the table stops growing.  The
old structure is leaked on purpose; the recount that follows frees it.
"""

from __future__ import annotations

import bisect
import struct

from .header import OFF_REFTABLE
from .refcount import RefcountBlockCodec, Refcounts

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .write import Qcow2Writer


class _Imrt:
    """The in-memory refcount table (cluster -> count, growing at the end)."""

    def __init__(self, counts: dict[int, int], nb: int) -> None:
        self.counts = counts
        self.nb = nb
        self.used = sorted(c for c, v in counts.items() if v)

    def next_used(self, c: int, end: int) -> int | None:
        i = bisect.bisect_left(self.used, c)
        return self.used[i] if i < len(self.used) and self.used[i] < end else None

    def in_range(self, a: int, b: int) -> list[int]:
        return self.used[bisect.bisect_left(self.used, a):bisect.bisect_left(self.used, b)]

    def alloc(self, n: int, first_free: list[int]) -> int:
        """``alloc_clusters_imrt``: ``n`` free clusters from ``first_free[0]`` on."""
        c = first_free[0]
        run = 0
        first_gap = True
        while c < self.nb and run < n:
            if not self.counts.get(c):
                run += 1
                if first_gap:
                    first_free[0] = c
                    first_gap = False
            else:
                run = 0
            c += 1
        if run < n:
            self.nb = max(self.nb, c + n - run)
        c -= run
        for i in range(n):
            self.counts[c + i] = 1
            bisect.insort(self.used, c + i)
        return c


def rebuild_refcounts(img: Qcow2Writer, computed: dict[int, int], nb_clusters: int,
                      order: int | None = None) -> None:
    """Write a new refcount structure for ``computed`` and switch the header to it
    (``order``: at that refcount width, switched in the same header write)."""
    cb, cs = img.cb, img.cs
    order = img.h.refcount_order if order is None else order
    codec = RefcountBlockCodec(order)
    per_block = cs * 8 // codec.bits
    bits = per_block.bit_length() - 1
    imrt = _Imrt(dict(computed), nb_clusters)
    table: list[int] = []

    def write_blocks(first: int, end: int) -> bool:
        grown = False
        first_free = [0]
        # clusters with a count, in order, within [first, end) (end may move)
        c = first
        while c < end:
            nxt = imrt.next_used(c, end)
            if nxt is None:
                break
            c = nxt
            bi = c >> bits
            start = bi << bits
            if bi < len(table) and table[bi]:
                off = table[bi]
            else:
                first_free[0] = max(first_free[0], start)
                blk_c = imrt.alloc(1, first_free)
                off = blk_c << cb
                if blk_c >= end:
                    end = blk_c + 1
                if len(table) <= bi:
                    want = -(-((bi + 1) * 8) // cs) * cs // 8
                    table.extend([0] * (want - len(table)))
                    grown = True
                table[bi] = off
            blk = bytearray(cs)
            for k in imrt.in_range(start, start + per_block):
                codec.set(blk, k - start, min(imrt.counts[k], codec.max))
            img.f.pwrite(off, blk)
            c = start + per_block
        return grown

    write_blocks(0, imrt.nb)
    while True:
        tcl = -(-len(table) * 8 // cs)
        table_c = imrt.alloc(tcl, [0])
        if not write_blocks(table_c, table_c + tcl):
            break
    raw = struct.pack(f">{len(table)}Q", *table)
    img.f.pwrite(table_c << cb, raw)
    img.f.sync()
    if order == img.h.refcount_order:
        img._write_header(OFF_REFTABLE, struct.pack(">QI", table_c << cb, tcl))
        img.h.refcount_table_offset, img.h.refcount_table_clusters = table_c << cb, tcl
    else:                                   # table and width change in one write
        img.h.refcount_table_offset, img.h.refcount_table_clusters = table_c << cb, tcl
        img.h.refcount_order = order
        img.f.pwrite(0, img.h.pack())
        img.f.sync()
    img.refs = Refcounts(img.f, cb, order, table_c << cb, tcl,
                         img._write_header, lazy=img.refs.lazy)

