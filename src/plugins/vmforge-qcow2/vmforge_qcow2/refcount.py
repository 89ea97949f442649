"""Reference counts: the refcount table, refcount blocks, cluster allocation.

Refcounts are increased (and written) before a new cluster is referenced by
anything, and decreased only after the last reference to a cluster is gone,
so a crash can leak clusters but never leave a referenced cluster free.
With lazy refcounts the blocks are written back at ``flush`` instead (the
image carries the dirty bit meanwhile).
"""

from __future__ import annotations

import struct
from array import array

from vmforge.block import BlockError, CorruptImageError
from vmforge.block.fileio import punch_hole

from .fileio import ImageFile
from .header import MAX_HOST_OFFSET, MAX_REFTABLE_BYTES, OFF_REFTABLE
from .l2 import table_from_bytes, table_to_bytes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections import OrderedDict
    from collections.abc import Callable
else:   # the class collections gives (importing the collections package costs start-up)
    from _collections import OrderedDict

REFT_OFFSET_MASK = 0xFFFFFFFFFFFFFE00
#: an ``array`` type code per entry width in bytes (only zero tests: any byte order)
_ARRAY_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}


class RefcountBlockCodec:
    """Read and write entries of one width (1..64 bits) in a block's bytes."""

    def __init__(self, order: int) -> None:
        self.order = order
        self.bits = 1 << order
        self.max = (1 << self.bits) - 1
        self.width = self.bits // 8  # bytes per entry, 0 for sub-byte widths

    def get(self, blk: bytearray, i: int) -> int:
        w = self.width
        if w == 2:
            return blk[2 * i] << 8 | blk[2 * i + 1]
        if w == 1:
            return blk[i]
        if w:
            return int.from_bytes(blk[i * w:i * w + w], "big")
        per = 8 // self.bits
        return blk[i // per] >> (self.bits * (i % per)) & self.max

    def set(self, blk: bytearray, i: int, value: int) -> None:
        w = self.width
        if w == 2:
            blk[2 * i] = value >> 8
            blk[2 * i + 1] = value & 0xFF
        elif w == 1:
            blk[i] = value
        elif w:
            blk[i * w:i * w + w] = value.to_bytes(w, "big")
        else:
            per = 8 // self.bits
            shift = self.bits * (i % per)
            blk[i // per] = (blk[i // per] & ~(self.max << shift) & 0xFF) | value << shift

    def count_used(self, blk: bytearray, i0: int, i1: int) -> int:
        """How many entries of ``[i0, i1)`` are nonzero (in C for whole-byte widths)."""
        w = self.width
        if w:
            return i1 - i0 - array(_ARRAY_CODES[w], bytes(blk[i0 * w:i1 * w])).count(0)
        return sum(self.get(blk, i) != 0 for i in range(i0, i1))

    def byte_range(self, i0: int, i1: int) -> tuple[int, int]:
        """Bytes holding entries ``[i0, i1)``."""
        if self.width:
            return i0 * self.width, i1 * self.width
        per = 8 // self.bits
        return i0 // per, -(-i1 // per)

    def next_used(self, blk: bytearray, i: int, n: int) -> int:
        """First index >= i whose entry is nonzero, or n."""
        w = self.width
        if w:
            pos = i * w
            end = n * w
            while pos < end:
                # skip zero bytes in C, 4 KiB at a time: the chunk as a big-endian
                # integer is 0, or its length in bytes says where its first nonzero
                # byte is (bytearray.lstrip calls memchr once per byte it strips)
                stop = min(pos + 4096, end)
                v = int.from_bytes(blk[pos:stop], "big")
                if v:
                    return (stop - (v.bit_length() + 7) // 8) // w
                pos = stop
            return n
        while i < n and not self.get(blk, i):
            i += 1
        return i

    def next_free(self, blk: bytearray, i: int, n: int) -> int:
        """First index >= i whose entry is zero, or n."""
        w = self.width
        if w:
            pat = bytes(w)
            pos = i * w
            while True:
                pos = blk.find(pat, pos)
                if pos < 0:
                    return n
                if pos % w == 0:
                    return pos // w
                pos += w - pos % w
        while i < n and self.get(blk, i):
            i += 1
        return i


class Refcounts:
    """The refcount structure of an open image."""

    def __init__(self, f: ImageFile, cluster_bits: int, order: int, table_offset: int,
                 table_clusters: int, write_header: Callable[[int, bytes], None],
                 lazy: bool = False, cache_bytes: int = 4 << 20) -> None:
        self.f = f
        self.cluster_bits = cluster_bits
        self.cs = 1 << cluster_bits
        self.codec = RefcountBlockCodec(order)
        self.entries = self.cs * 8 // self.codec.bits
        self.shift = self.entries.bit_length() - 1
        self.table_offset = table_offset
        self.table_clusters = table_clusters
        self.write_header = write_header
        self.lazy = lazy
        raw = f.read_table(table_offset, table_clusters * self.cs, "refcount table")
        self.table = table_from_bytes(raw)
        self._blocks: set[int] | None = None
        self.cache: OrderedDict[int, bytearray] = OrderedDict()
        self.cache_max = max(4, cache_bytes >> cluster_bits)
        self.dirty: set[int] = set()
        self.hint = 0
        #: the host cluster compressed data is being packed into (-1: none)
        self.byte_cluster = -1
        self.alloc_end = 0  # clusters below this may be allocated but not yet written

    # -- blocks ---------------------------------------------------------------

    def block_offset(self, bi: int) -> int:
        if bi >= len(self.table):
            return 0
        ent = self.table[bi]
        off = ent & REFT_OFFSET_MASK
        if ent & 0x1FF:
            raise CorruptImageError(f"refcount table entry {bi} has reserved bits set "
                                    f"({ent:#x})", self.f.filename,
                                    self.table_offset + 8 * bi, "refcount table")
        if off % self.cs:
            raise CorruptImageError(f"refcount block {bi} offset {off:#x} is not cluster "
                                    "aligned", self.f.filename, self.table_offset + 8 * bi,
                                    "refcount table")
        return off

    def load(self, bi: int) -> bytearray | None:
        blk = self.cache.get(bi)
        if blk is not None:
            self.cache.move_to_end(bi)
            return blk
        off = self.block_offset(bi)
        if not off:
            return None
        blk = bytearray(self.f.read_table(off, self.cs, f"refcount block {bi}"))
        self._insert(bi, blk)
        return blk

    def _insert(self, bi: int, blk: bytearray) -> None:
        self.cache[bi] = blk
        while len(self.cache) > self.cache_max:
            old, oblk = self.cache.popitem(last=False)
            if old in self.dirty:
                self.f.pwrite(self.block_offset(old), oblk)
                self.dirty.discard(old)

    def get(self, cluster: int) -> int:
        blk = self.load(cluster >> self.shift)
        if blk is None:
            return 0
        return self.codec.get(blk, cluster & (self.entries - 1))

    def write_back(self) -> None:
        """Write dirty blocks (lazy refcounts, deferred increments)."""
        for bi in sorted(self.dirty):
            self.f.pwrite(self.block_offset(bi), self.cache[bi])
        self.dirty.clear()

    # -- updates ----------------------------------------------------------------

    def update(self, cluster: int, count: int, delta: int, defer: bool = False) -> None:
        """Add ``delta`` to the refcounts of ``count`` clusters from ``cluster``.

        Checks every entry before changing any: an overflow or a drop below
        zero raises and changes nothing.  ``defer``: leave the changed blocks
        dirty for the next ``write_back`` instead of writing them now (the
        writer's barrier writes them before any L2 entry that needs them).
        """
        if 0 < delta <= self.codec.max and self._fill_free(cluster, count, delta, defer):
            return
        codec, mask = self.codec, self.entries - 1
        end = cluster + count
        c = cluster
        while c < end:  # validate
            bi = c >> self.shift
            stop = min(end, (bi + 1) << self.shift)
            blk = self.load(bi)
            if blk is None:
                if delta < 0:
                    raise CorruptImageError(f"freeing cluster {c} which has no refcount "
                                            "block", self.f.filename, c << self.cluster_bits,
                                            "refcount table")
                raise BlockError(f"internal: no refcount block for cluster {c}",
                                 self.f.filename)
            for i in range(c & mask, ((stop - 1) & mask) + 1):
                v = codec.get(blk, i) + delta
                if v < 0:
                    raise CorruptImageError(
                        f"refcount of cluster {(bi << self.shift) + i} would drop below "
                        "zero", self.f.filename, self.block_offset(bi), f"refcount block {bi}")
                if v > codec.max:
                    raise BlockError(f"refcount overflow: cluster {(bi << self.shift) + i} "
                                     f"would exceed {codec.max} ({codec.bits}-bit refcounts)",
                                     self.f.filename)
            c = stop
        c = cluster
        while c < end:  # apply
            bi = c >> self.shift
            stop = min(end, (bi + 1) << self.shift)
            blk = self.load(bi)
            assert blk is not None
            i0, i1 = c & mask, ((stop - 1) & mask) + 1
            freed = False
            for i in range(i0, i1):
                v = codec.get(blk, i) + delta
                codec.set(blk, i, v)
                if v == 0:
                    freed = True
                    if (bi << self.shift) + i == self.byte_cluster:
                        self.byte_cluster = -1
            if freed and c < self.hint:
                self.hint = c
            if self.lazy or defer:
                self.dirty.add(bi)
            else:
                b0, b1 = codec.byte_range(i0, i1)
                self.f.pwrite(self.block_offset(bi) + b0, blk[b0:b1])
            c = stop

    def _fill_free(self, cluster: int, count: int, value: int, defer: bool) -> bool:
        """:meth:`update` of clusters whose refcounts are all 0 (new clusters): each
        block's part set to ``value`` at once (in C), not entry by entry.  False, and
        nothing changed, where an entry is not 0, a block is missing or the entries
        are narrower than a byte: the general path then decides."""
        codec, mask, w = self.codec, self.entries - 1, self.codec.width
        if not w:
            return False
        parts: list[tuple[int, bytearray, int, int]] = []
        end = cluster + count
        c = cluster
        while c < end:
            bi = c >> self.shift
            stop = min(end, (bi + 1) << self.shift)
            blk = self.load(bi)
            i0, i1 = c & mask, ((stop - 1) & mask) + 1
            if blk is None or codec.count_used(blk, i0, i1):
                return False
            parts.append((bi, blk, i0, i1))
            c = stop
        entry = value.to_bytes(w, "big")
        for bi, blk, i0, i1 in parts:
            blk[i0 * w:i1 * w] = entry * (i1 - i0)
            if self.lazy or defer:
                self.dirty.add(bi)
            else:
                self.f.pwrite(self.block_offset(bi) + i0 * w, blk[i0 * w:i1 * w])
        return True

    def set_value(self, cluster: int, value: int) -> None:
        """Set one refcount (check repair); the block must exist."""
        self.update(cluster, 1, value - self.get(cluster))

    # -- allocation -------------------------------------------------------------

    def _scan(self, start: int, n: int) -> int:
        """First cluster >= start that begins a run of ``n`` free clusters."""
        codec, mask = self.codec, self.entries - 1
        c = start
        run_start, run = c, 0
        while True:
            bi = c >> self.shift
            block_end = (bi + 1) << self.shift
            blk = self.load(bi) if bi < len(self.table) else None
            if blk is None:
                if run == 0:
                    run_start = c
                run += block_end - c
                if run >= n:
                    return run_start
                c = block_end
                continue
            i = c & mask
            entries = self.entries
            while i < entries:
                if run == 0:
                    i = codec.next_free(blk, i, entries)
                    if i >= entries:
                        break
                    run_start = (bi << self.shift) + i
                    run = 1
                    i += 1
                else:
                    # the rest of the run in this block at once (in C for whole-byte
                    # widths), not entry by entry: a batch of convert asks for hundreds
                    stop = min(entries, i + n - run)
                    j = min(codec.next_used(blk, i, stop), stop)
                    run += j - i
                    if j < stop:        # entry j is in use: the run starts again after it
                        run = 0
                        j += 1
                    i = j
                if run >= n:
                    return run_start
            c = block_end

    def alloc(self, n: int, defer: bool = False) -> int:
        """Allocate ``n`` contiguous clusters (refcount 1); returns the host offset.

        ``defer``: the new refcounts stay dirty in the cache (see ``update``).
        """
        if n <= 0:
            raise ValueError("alloc of no clusters")
        for _ in range(64 + 4 * (n // self.entries + 1)):
            first = self._scan(max(self.hint, 1), 1)
            c = first if n == 1 else self._scan(first, n)
            if (c + n) << self.cluster_bits > MAX_HOST_OFFSET:
                raise BlockError("image file would exceed the qcow2 host offset limit "
                                 "(2^56 bytes)", self.f.filename)
            missing = [bi for bi in range(c >> self.shift, ((c + n - 1) >> self.shift) + 1)
                       if not self.block_offset(bi)]
            if missing:
                self._create_block(missing[0])
                continue
            self.update(c, n, +1, defer)
            if c == first:
                self.hint = c + n
            else:
                self.hint = first
            self.alloc_end = max(self.alloc_end, c + n)
            return c << self.cluster_bits
        raise BlockError("internal: cluster allocation did not converge", self.f.filename)

    def alloc_next(self, n: int, defer: bool = False) -> int | None:
        """:meth:`alloc` of ``n`` clusters (the same clusters, refcounts and hint) where
        it would take them from the first free cluster on, all under one refcount
        block that exists (so that one allocation of ``n`` places them where
        allocations of their parts one after the other would); else None, and
        nothing done.  The free run is scanned for once."""
        if n <= 0:
            raise ValueError("alloc of no clusters")
        first = self._scan(max(self.hint, 1), 1)
        bi = first >> self.shift
        if (bi != (first + n - 1) >> self.shift or not self.block_offset(bi)
                or (n > 1 and self._scan(first, n) != first)):
            return None
        if (first + n) << self.cluster_bits > MAX_HOST_OFFSET:
            raise BlockError("image file would exceed the qcow2 host offset limit "
                             "(2^56 bytes)", self.f.filename)
        self.update(first, n, +1, defer)
        self.hint = first + n
        self.alloc_end = max(self.alloc_end, first + n)
        return first << self.cluster_bits

    def free(self, offset: int, nbytes: int, discard: bool = False) -> None:
        """Drop one reference to every cluster touched by ``[offset, offset+nbytes)``;
        ``discard``: those left unreferenced are punched out of the file too."""
        c0 = offset >> self.cluster_bits
        c1 = (offset + nbytes - 1) >> self.cluster_bits
        self.update(c0, c1 - c0 + 1, -1)
        if discard:
            self.discard_unused(c0, c1 - c0 + 1)

    def discard_unused(self, cluster: int, count: int) -> None:
        """Punch the clusters of ``[cluster, cluster+count)`` whose refcount is 0 out of
        the file, runs at a time (QEMU passes the discards of freed clusters down to
        the file for discard requests, zero writes that may unmap, snapshot deletion:
        the space goes back).  Only once nothing on disk points at them."""
        codec, mask, cb = self.codec, self.entries - 1, self.cluster_bits
        end = min(cluster + count, -(-self.f.end >> cb))   # (a last cluster in part too)
        c = cluster
        while c < end:
            bi = c >> self.shift
            stop = min(end, (bi + 1) << self.shift)
            blk = self.load(bi) if bi < len(self.table) else None
            if blk is None:
                c = stop
                continue
            base, i, last = bi << self.shift, c & mask, ((stop - 1) & mask) + 1
            while i < last:
                i = min(codec.next_free(blk, i, last), last)
                if i >= last:
                    break
                j = min(codec.next_used(blk, i, last), last)
                if not punch_hole(self.f.fd, (base + i) << cb, (j - i) << cb):
                    return                 # the file system keeps the data: so do we
                i = j
            c = stop

    def _create_block(self, bi: int) -> None:
        """Give cluster range ``bi`` a refcount block (growing the table if needed)."""
        if bi >= len(self.table):
            self.grow_table(bi)
            return
        b = self._scan(max(self.hint, 1), 1)
        bb = b >> self.shift
        blk = bytearray(self.cs)
        if bb == bi:  # the block describes itself
            self.codec.set(blk, b & (self.entries - 1), 1)
        elif self.block_offset(bb):
            self.update(b, 1, +1)
        else:
            self._create_block(bb)
            return
        self.f.pwrite(b << self.cluster_bits, blk)
        self.f.sync()               # the block is on disk before the table points at it
        self._set_entry(bi, b << self.cluster_bits)
        self._insert(bi, blk)
        self.alloc_end = max(self.alloc_end, b + 1)

    def is_block(self, offset: int) -> bool:
        """Whether the cluster at ``offset`` holds a refcount block."""
        if self._blocks is None:
            self._blocks = {e & REFT_OFFSET_MASK for e in self.table if e}
        return offset in self._blocks

    def _set_entry(self, bi: int, off: int) -> None:
        self.table[bi] = off
        self._blocks = None
        self.f.pwrite(self.table_offset + 8 * bi, struct.pack(">Q", off))

    def end_cluster(self) -> int:
        """A cluster index past everything allocated or written."""
        return max(-(-self.f.end >> self.cluster_bits), self.alloc_end, 1)

    def grow_table(self, min_index: int) -> None:
        """Move the refcount table to the end of the image, with room for ``min_index``.

        The new table and any refcount blocks it needs are placed after
        everything in use and describe themselves; the header is switched
        over in one write, then the old table is freed.
        """
        start = self.end_cluster()
        want = max(min_index + 1, len(self.table) * 2)
        per_cluster = self.cs // 8
        while True:
            tcl = -(-want // per_cluster)
            first_bi = start >> self.shift
            nb = 0
            while True:  # blocks needed for [start, start + tcl + nb)
                last_bi = (start + tcl + nb - 1) >> self.shift
                need = sum(1 for bi in range(first_bi, last_bi + 1)
                           if not self.block_offset(bi))
                if need == nb:
                    break
                nb = need
            last_bi = (start + tcl + nb - 1) >> self.shift
            if last_bi < want and tcl * self.cs <= MAX_REFTABLE_BYTES:
                break
            if tcl * self.cs > MAX_REFTABLE_BYTES:
                raise BlockError("refcount table would exceed its maximum size "
                                 f"({MAX_REFTABLE_BYTES} bytes)", self.f.filename)
            want = last_bi + 1
        want = tcl * per_cluster
        table = self.table + array("Q", bytes(8 * (want - len(self.table))))
        new_blocks: dict[int, bytearray] = {}
        nxt = start + tcl
        for bi in range(first_bi, last_bi + 1):
            if not self.block_offset(bi):
                new_blocks[bi] = bytearray(self.cs)
                table[bi] = nxt << self.cluster_bits
                nxt += 1
        used = list(range(start, nxt))
        mask = self.entries - 1
        for c in used:
            bi = c >> self.shift
            if bi in new_blocks:
                self.codec.set(new_blocks[bi], c & mask, 1)
            else:
                self.update(c, 1, +1)
        for bi, blk in new_blocks.items():
            self.f.pwrite(table[bi], blk)
        self.f.pwrite(start << self.cluster_bits, table_to_bytes(table))
        old_off, old_cl = self.table_offset, self.table_clusters
        self.write_back()
        self.f.sync()               # new blocks and table before the header switches
        self.write_header(OFF_REFTABLE, struct.pack(">QI", start << self.cluster_bits, tcl))
        self.f.sync()               # the switch before the old table is freed
        self.table, self.table_offset, self.table_clusters = table, start << self.cluster_bits, tcl
        self._blocks = None
        for bi, blk in new_blocks.items():
            self._insert(bi, blk)
        self.alloc_end = max(self.alloc_end, nxt)
        self.update(old_off >> self.cluster_bits, old_cl, -1)


def build_structure(counts: dict[int, int], n_clusters: int, start: int, cluster_bits: int,
                    order: int) -> tuple[int, int, list[tuple[int, bytes]]]:
    """Lay out a fresh refcount table and blocks at cluster ``start``.

    ``counts`` maps cluster -> refcount for clusters in use (below
    ``n_clusters``).  The new structure covers itself.  Returns the table
    offset, its size in clusters and the ``(offset, bytes)`` writes to do
    (blocks first, then the table).
    """
    cs = 1 << cluster_bits
    codec = RefcountBlockCodec(order)
    entries = cs * 8 // codec.bits
    per_cluster = cs // 8
    total = max(n_clusters, start + 2)
    while True:
        nblocks = -(-total // entries)
        tcl = -(-nblocks // per_cluster)
        new_total = max(n_clusters, start + tcl + nblocks)
        if new_total <= total:
            break
        total = new_total
    nblocks = -(-total // entries)
    counts = dict(counts)
    for c in range(start, start + tcl + nblocks):
        counts[c] = counts.get(c, 0) + 1
    blocks = [bytearray(cs) for _ in range(nblocks)]
    for c, v in counts.items():
        if v > codec.max:
            raise BlockError(f"refcount of cluster {c} is {v}, above the {codec.bits}-bit "
                             "maximum")
        if v:
            codec.set(blocks[c // entries], c % entries, v)
    table = [0] * (tcl * per_cluster)
    writes: list[tuple[int, bytes]] = []
    for i, blk in enumerate(blocks):
        off = (start + tcl + i) << cluster_bits
        table[i] = off
        writes.append((off, bytes(blk)))
    writes.append((start << cluster_bits, struct.pack(f">{len(table)}Q", *table)))
    return start << cluster_bits, tcl, writes
