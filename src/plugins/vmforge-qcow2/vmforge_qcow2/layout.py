"""Where a new image's metadata goes: QEMU 7.2's ``qcow2_co_create`` replayed.

QEMU writes a header, a one-cluster refcount table and an empty refcount
block (clusters 0, 1, 2), allocates those three clusters through its
allocator, then grows the L1 table to its size with ``qcow2_grow_l1_table``
(``qcow2_alloc_clusters`` of the table's bytes; the table is written with its
exact length).  When the L1 table reaches clusters no refcount block covers,
``alloc_refcount_block`` and ``qcow2_refcount_area`` add blocks and may move
the refcount table.  :class:`CreateAllocator` replays that allocator
(first fit from ``free_cluster_index``, the ``-EAGAIN`` retries and their
rollbacks) so that an image made here is byte for byte the one
``qemu-img create`` makes with the same options.
"""

from __future__ import annotations

import struct

from .refcount import RefcountBlockCodec


class _Again(Exception):
    """QEMU's ``-EAGAIN``: new refcount metadata was placed, search again."""


class CreateAllocator:
    """QEMU's cluster allocator, over refcounts held in memory.

    ``writes`` records what QEMU writes to the file, in order (refcount
    blocks are written at the end with their final contents: they are never
    freed while an image is created).
    """

    def __init__(self, cluster_bits: int, refcount_order: int) -> None:
        self.cb = cluster_bits
        self.cs = 1 << cluster_bits
        self.codec = RefcountBlockCodec(refcount_order)
        self.per_block = self.cs * 8 >> refcount_order
        self.block_bits = self.per_block.bit_length() - 1
        self.counts: dict[int, int] = {}
        self.free_index = 0
        # the initial image: table at cluster 1 (one cluster), block 0 at cluster 2
        self.table: list[int] = [2] + [0] * (self.cs // 8 - 1)    # cluster indices
        self.table_offset = 1
        self.blocks: set[int] = {2}
        self.writes: list[tuple[int, bytes]] = []
        self.write_table(1, self.table)

    # -- helpers --------------------------------------------------------------------------

    def write_table(self, cluster: int, table: list[int]) -> None:
        self.writes.append((cluster << self.cb,
                            struct.pack(f">{len(table)}Q", *(c << self.cb for c in table))))

    def refcount(self, c: int) -> int:
        bi = c >> self.block_bits
        if bi >= len(self.table) or not self.table[bi]:
            return 0
        return self.counts.get(c, 0)

    def max_table_index(self) -> int:
        return max((i for i, b in enumerate(self.table) if b), default=-1)

    # -- QEMU's functions ---------------------------------------------------------------

    def alloc_noref(self, n: int) -> int:
        """``alloc_clusters_noref``: first fit from ``free_cluster_index``."""
        while True:
            for _ in range(n):
                c = self.free_index
                self.free_index += 1
                if self.refcount(c):
                    break
            else:
                return self.free_index - n

    def update(self, first: int, n: int, addend: int) -> None:
        """``update_refcount`` (undoes its partial work on ``-EAGAIN``)."""
        done = 0
        old_bi = -1
        try:
            for c in range(first, first + n):
                bi = c >> self.block_bits
                if bi != old_bi:
                    try:
                        self.block_for(c)
                    except _Again:      # try the same clusters again first (QEMU)
                        self.free_index = min(self.free_index, first)
                        raise
                old_bi = bi
                v = self.counts.get(c, 0) + addend
                if v == 0 and c < self.free_index:
                    self.free_index = c
                self.counts[c] = v
                done += 1
        except _Again:
            if done:
                self.update(first, done, -addend)
            raise

    def alloc(self, n: int) -> int:
        """``qcow2_alloc_clusters``: returns the first cluster."""
        while True:
            c = self.alloc_noref(n)
            try:
                self.update(c, n, 1)
                return c
            except _Again:
                continue

    def block_for(self, c: int) -> None:
        """``alloc_refcount_block``: make sure cluster ``c`` has a refcount block."""
        bi = c >> self.block_bits
        if bi < len(self.table) and self.table[bi]:
            return
        new = self.alloc_noref(1)
        if new >> self.block_bits == bi:
            self.counts[new] = 1                # the block describes itself
        else:
            self.update(new, 1, 1)              # may raise _Again: so does QEMU
        self.blocks.add(new)
        if bi < len(self.table):
            self.table[bi] = new
            self.writes.append(((self.table_offset << self.cb) + 8 * bi,
                                struct.pack(">Q", new << self.cb)))
            raise _Again
        used = -(-max(c + 1, new + 1) // self.per_block)
        self.refcount_area(used * self.per_block, 0, False, bi, new)
        raise _Again

    def metadata_size(self, clusters: int, generous: bool) -> int:
        """``qcow2_refcount_metadata_size``: the number of refcount blocks."""
        per_table = self.cs // 8
        table = blocks = n = 0
        while True:
            last = n
            blocks = -(-(clusters + table + blocks) // self.per_block)
            table = -(-blocks // per_table)
            n = clusters + blocks + table
            if n == last and generous:
                clusters += -(-table // 2)
                n = 0
                generous = False
            if n == last:
                return blocks

    def refcount_area(self, start: int, additional: int, exact: bool, new_index: int,
                      new_block: int) -> int:
        """``qcow2_refcount_area``: blocks and a new table at cluster ``start``;
        returns the first cluster after them."""
        total = self.metadata_size(start + additional, not exact)
        area_index = start >> self.block_bits
        per_table = self.cs // 8
        size = total if exact else total + -(-total // 2)
        size = -(-size // per_table) * per_table
        table_clusters = size // per_table
        new = [0] * size
        keep = self.max_table_index() + 1 if size > self.max_table_index() else size
        new[:keep] = self.table[:keep]
        if new_block:
            new[new_index] = new_block
        extra = sum(1 for i in range(area_index, total) if not new[i])
        table_at = start + extra
        end = table_at + table_clusters
        nxt = start
        for i in range(area_index, total):
            if not new[i]:
                new[i] = nxt
                self.blocks.add(nxt)
                nxt += 1
            first = i * self.per_block
            if first < end:
                for c in range(max(first, start), min(end, first + self.per_block)):
                    self.counts[c] = 1
        self.write_table(table_at, new)
        old, old_size = self.table_offset, len(self.table)
        self.table, self.table_offset = new, table_at
        self.update(old, -(-old_size * 8 // self.cs), -1)
        return end

    # -- results --------------------------------------------------------------------------

    def block_bytes(self, bi: int) -> bytes:
        blk = bytearray(self.cs)
        base = bi << self.block_bits
        for c, v in self.counts.items():
            if v and base <= c < base + self.per_block:
                self.codec.set(blk, c - base, v)
        return bytes(blk)

    def finish(self) -> list[tuple[int, bytes]]:
        """Every write, refcount blocks last."""
        out = list(self.writes)
        for bi, b in enumerate(self.table):
            if b:
                out.append((b << self.cb, self.block_bytes(bi)))
        return out


def plan_create(cluster_bits: int, refcount_order: int,
                l1_size: int) -> tuple[CreateAllocator, int]:
    """Replay QEMU's create for an L1 table of ``l1_size`` entries: the allocator's
    state and the L1 table's offset (0 for an image without one)."""
    a = CreateAllocator(cluster_bits, refcount_order)
    a.alloc(3)
    l1_off = 0
    if l1_size:
        l1_off = a.alloc(-(-l1_size * 8 >> cluster_bits)) << cluster_bits
        a.writes.append((l1_off, bytes(8 * l1_size)))
    return a, l1_off


def plan_preallocation(a: CreateAllocator, size: int, l2_bits: int, extended_l2: bool,
                       mode: str) -> tuple[list[int], list[tuple[int, int, int]], int, int]:
    """Replay QEMU's preallocation of a new image (``preallocate_co`` for
    ``metadata``; ``qcow2_refcount_area`` at the end of the file, then the data,
    then the L2 tables for ``falloc``/``full``).

    Returns the L2 table of each L1 entry (clusters), ``(l2 cluster, first data
    cluster, count)`` per table, and the data area ``[start, end)`` to fill
    (``falloc``/``full``; empty for ``metadata``).
    """
    per_l2 = 1 << l2_bits
    nclusters = -(-size // a.cs)
    l2s: list[int] = []
    tables: list[tuple[int, int, int]] = []
    if mode == "metadata":
        for first in range(0, nclusters, per_l2):
            n = min(per_l2, nclusters - first)
            l2 = a.alloc(1)
            tables.append((l2, a.alloc(n), n))
            l2s.append(l2)
        return l2s, tables, 0, 0
    used = max((c for c, v in a.counts.items() if v), default=-1) + 1
    nb_l2 = -(-nclusters // per_l2) + 1
    start = a.refcount_area(used, nclusters + nb_l2, True, 0, 0)
    a.update(start, nclusters, 1)
    data = start
    for first in range(0, nclusters, per_l2):
        n = min(per_l2, nclusters - first)
        l2 = a.alloc(1)
        tables.append((l2, data, n))
        l2s.append(l2)
        data += n
    return l2s, tables, start, start + nclusters
