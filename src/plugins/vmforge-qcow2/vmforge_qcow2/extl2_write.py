"""Extended L2 entries (subclusters), write side.

Each cluster has a host cluster (or none) and a 64-bit bitmap: bit ``i``
says subcluster ``i`` holds data, bit ``32 + i`` that it reads as zeros,
neither that it is unallocated (backing file).  Writes allocate a whole host
cluster but mark only the subclusters they touch; a partly touched
subcluster that was unallocated is filled from ``backing_reader`` (or
zeros), like a partly touched cluster without subclusters.  The order of
metadata updates is the one of the plain write path (see ``write.py``).
"""

from __future__ import annotations

from .extl2 import ALL
from .fileio import fill_zero
from .image import Cursor
from .l2 import OFFSET_MASK, OFLAG_COMPRESSED, OFLAG_COPIED

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .write import Qcow2Writer


def _mask(s0: int, s1: int) -> int:
    """Bits ``s0 .. s1-1``."""
    return ((1 << s1) - 1) & ~((1 << s0) - 1)


def _fill_old(img: Qcow2Writer, g: int, ent: int, bm: int, buf: memoryview,
              a: int, b: int, partial: int) -> None:
    """Old contents of bytes ``[a, b)`` of guest cluster ``g`` into ``buf``.

    Allocated subclusters come from the host cluster, zero ones are zeros,
    unallocated ones that are only partly overwritten (``partial``) come from
    the backing file, the others do not matter (they are overwritten).
    """
    scb = img.cb - 5
    if ent & OFLAG_COMPRESSED:
        buf[:] = img._compressed(ent)[a:b]
        return
    alloc, zero = bm & ALL, bm >> 32
    host = ent & OFFSET_MASK
    if (host or ent & OFLAG_COPIED) and alloc & _mask(a >> scb, ((b - 1) >> scb) + 1):
        img.data.preadv(host + a, [buf])
    for sc in range(a >> scb, ((b - 1) >> scb) + 1):
        lo, hi = max(a, sc << scb), min(b, (sc + 1) << scb)
        bit = 1 << sc
        if alloc & bit:
            continue
        part = buf[lo - a:hi - a]
        if zero & bit or not partial & bit:
            fill_zero(part)
        else:
            end = min(g + hi, img.size)
            if g + lo < end:
                img._read_backing(g + lo, [part[:end - g - lo]])
            if end < g + hi:
                fill_zero(part[max(0, end - g - lo):])


def write_in_l2(img: Qcow2Writer, pos: int, end: int, cur: Cursor) -> None:
    """``pwritev`` for the part of a request inside one L2 table (extended entries)."""
    cb, cs = img.cb, img.cs
    scb = cb - 5
    l1i = pos >> (cb + img.l2_bits)
    l2off, tbl = img._l2_for_write(l1i)
    datafile = img.data is not img.f
    plan = []
    need = 0
    p = pos
    while p < end:
        i = (p >> cb) & img.l2_mask
        into = p & (cs - 1)
        n = min(cs - into, end - p)
        ent, bm = tbl[2 * i], tbl[2 * i + 1]
        inplace = bool((ent & OFFSET_MASK or datafile) and ent & OFLAG_COPIED
                       and not ent & OFLAG_COMPRESSED)
        if not inplace:
            need += 1
        plan.append((i, into, n, ent, bm, inplace))
        p += n
    base = img.refs.alloc(need) if need and not datafile else 0
    ops: list[tuple[int, list[memoryview]]] = []
    changed: list[tuple[int, int]] = []
    olds: list[int] = []
    k = 0
    op_end = -1
    for i, into, n, ent, bm, inplace in plan:
        parts = cur.take(n)
        g = ((l1i << img.l2_bits) + i) << cb
        s0, s1 = into >> scb, ((into + n - 1) >> scb) + 1
        touched = _mask(s0, s1)
        alloc, zero = bm & ALL, bm >> 32
        # subclusters written only in part, whose old contents must be kept
        partial = 0
        if into & ((1 << scb) - 1):
            partial |= 1 << s0
        if (into + n) & ((1 << scb) - 1) and into + n < cs:
            partial |= 1 << (s1 - 1)
        if inplace:
            a, b = s0 << scb, min(s1 << scb, cs)
            host = (ent & OFFSET_MASK) + a
            what = img._metadata_overlap(host, b - a)
            if what:
                raise img._signal_corruption(
                    f"extended L2 entry {i} points at {host:#x}, which overlaps {what}",
                    l2off + 16 * i, "L2 table")
            if a != into or b != into + n:
                buf = memoryview(bytearray(b - a))
                _fill_old(img, g, ent, bm, buf, a, b, partial & ~alloc)
                q = into - a
                for part in parts:
                    buf[q:q + part.nbytes] = part
                    q += part.nbytes
                parts = [buf]
            n_out = b - a
        else:
            host = g if datafile else base + k * cs
            k += 1
            if n != cs or alloc or ent & OFLAG_COMPRESSED:
                buf = memoryview(bytearray(cs))
                _fill_old(img, g, ent, bm, buf, 0, cs, partial & ~alloc)
                q = into
                for part in parts:
                    buf[q:q + part.nbytes] = part
                    q += part.nbytes
                parts = [buf]
            if ent & OFLAG_COMPRESSED:
                alloc, zero = ALL, 0          # the whole cluster now holds data
            changed.append((2 * i, host | OFLAG_COPIED))
            if ent & (OFFSET_MASK | OFLAG_COMPRESSED):
                olds.append(ent)
            n_out = cs
        new_bm = (alloc | touched) | (zero & ~touched) << 32
        if new_bm != bm or not inplace:
            changed.append((2 * i + 1, new_bm))
        if ops and op_end == host:
            ops[-1][1].extend(parts)
        else:
            ops.append((host, list(parts)))
        op_end = host + n_out
    for host, parts in ops:
        img.data.pwritev(host, parts)
    img._commit_l2(l2off, tbl, changed, olds)


def zero_range(img: Qcow2Writer, start: int, end: int, unmap: bool, full: bool = False) -> None:
    """Make ``[start, end)`` read as zeros: bitmap bits for whole subclusters,
    written zeros for parts of subclusters; ``full``: unallocate (shrinking)."""
    cb, cs = img.cb, img.cs
    scb = cb - 5
    scs = 1 << scb
    span_bits = cb + img.l2_bits
    end = min(end, -(-img.size // cs) * cs)
    writes: list[tuple[int, int]] = []
    pos = start
    while pos < end:
        l1i = pos >> span_bits
        t_end = min(end, (l1i + 1) << span_bits)
        l2off, tbl = img._l2_table(img.l1, l1i)
        changed: list[tuple[int, int]] = []
        olds: list[int] = []
        while pos < t_end:
            i = (pos >> cb) & img.l2_mask
            cstart = pos & ~(cs - 1)
            c_end = min(t_end, cstart + cs)
            ent, bm = (tbl[2 * i], tbl[2 * i + 1]) if tbl is not None else (0, 0)
            a, b = pos - cstart, c_end - cstart
            if c_end >= img.size:               # the short last cluster: all of it
                b = cs if c_end == end else b
            s0, s1 = -(-a // scs), b // scs     # whole subclusters
            cover = _mask(s0, s1) if s1 > s0 else 0
            if a % scs:
                writes.append((cstart + a, min(cstart + min(s0 * scs, b), img.size)))
            if b % scs and s1 * scs >= a:
                lo = max(a, s1 * scs)
                if lo < b:
                    writes.append((cstart + lo, min(cstart + b, img.size)))
            if full:
                if cover == ALL and (ent or bm):
                    changed += [(2 * i, 0), (2 * i + 1, 0)]
                    if ent & (OFFSET_MASK | OFLAG_COMPRESSED):
                        olds.append(ent)
            elif ent & OFLAG_COMPRESSED:
                if cover == ALL:
                    changed += [(2 * i, 0), (2 * i + 1, ALL << 32)]
                    olds.append(ent)
                elif cover:
                    writes.append((cstart + s0 * scs, cstart + s1 * scs))
            elif cover:
                alloc, zero = bm & ALL, bm >> 32
                if cover == ALL and unmap and ent & OFFSET_MASK:
                    changed += [(2 * i, 0), (2 * i + 1, ALL << 32)]
                    olds.append(ent)
                else:
                    new_bm = (alloc & ~cover) | (zero | cover) << 32
                    if new_bm != bm:
                        changed.append((2 * i + 1, new_bm))
            pos = c_end
        if changed:
            if tbl is None or not img.l1[l1i] & OFLAG_COPIED:
                l2off, tbl = img._l2_for_write(l1i)
            img._commit_l2(l2off, tbl, changed, olds)
    if not full:
        for a, b in writes:
            b = min(b, img.size)      # (the short last cluster ends at the disk's end)
            if a < b:
                img.pwritev(a, [memoryview(bytes(b - a))])
