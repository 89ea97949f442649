"""Extended L2 entries (subclusters), read side.

With incompatible bit 4 an L2 entry is 128 bits: the usual descriptor, then a
bitmap whose low 32 bits say which of the cluster's 32 subclusters are
allocated (data at ``host + i * subcluster``) and whose high 32 bits say
which read as zeros; neither means "ask the backing file".
"""

from __future__ import annotations

from vmforge.block import CorruptImageError

from .l2 import (
    COMPRESSED,
    NORMAL,
    OFFSET_MASK,
    OFLAG_COMPRESSED,
    OFLAG_COPIED,
    UNALLOC,
    ZERO,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from .image import Qcow2Image, Run

#: reserved bits of a standard descriptor in extended mode.  The spec reserves bit
#: 0 (the zero flag) too, but QEMU ignores it there, reading and checking: so do we
EXT_RESERVED = 0x3F000000000001FE
ALL = 0xFFFFFFFF


def _bad(img: Qcow2Image, l2off: int, i: int, why: str) -> CorruptImageError:
    return CorruptImageError(f"extended entry {i} {why}", img.filename, l2off + 16 * i,
                             "L2 table")


def _map_extended(img: Qcow2Image, l1: Sequence[int], offset: int, length: int) -> list[Run]:
    runs: list[Run] = []
    cb, cs = img.cb, img.cs
    scb = cb - 5                      # 32 subclusters per cluster
    span_bits = cb + img.l2_bits
    fend = img.f.end
    pos, end = offset, offset + length

    def add(g: int, n: int, kind: int, host: int, ent: int) -> None:
        if runs:
            rg, rn, rk, rh, re = runs[-1]
            if rk == kind and kind != COMPRESSED and rg + rn == g and (
                    (rh + rn == host) if kind == NORMAL or rh or host else True):
                runs[-1] = (rg, rn + n, rk, rh, re)
                return
        runs.append((g, n, kind, host, ent))

    while pos < end:
        l1i = pos >> span_bits
        t_end = min(end, (l1i + 1) << span_bits)
        l2off, tbl = img._l2_table(l1, l1i)
        if tbl is None:
            add(pos, t_end - pos, UNALLOC, 0, 0)
            pos = t_end
            continue
        i = (pos >> cb) & img.l2_mask
        while pos < t_end:
            ent, bm = tbl[2 * i], tbl[2 * i + 1]
            c_end = min(t_end, ((pos >> cb) + 1) << cb)
            if ent & OFLAG_COMPRESSED:
                if bm:
                    raise _bad(img, l2off, i, "is compressed but has a subcluster bitmap")
                add(pos, c_end - pos, COMPRESSED, 0, ent)
                pos = c_end
                i += 1
                continue
            if ent & EXT_RESERVED or ent & OFFSET_MASK & (cs - 1):
                raise _bad(img, l2off, i, f"({ent:#x}) has reserved bits set or an "
                           "unaligned offset")
            alloc, zero = bm & ALL, bm >> 32
            if alloc & zero:
                raise _bad(img, l2off, i, "marks subclusters both allocated and zero")
            host = ent & OFFSET_MASK
            if alloc and not host and not (img.data is not img.f and ent & OFLAG_COPIED):
                raise _bad(img, l2off, i, "has allocated subclusters but no host cluster")
            if host and host >= fend and img.data is img.f:
                raise _bad(img, l2off, i, f"points at {host:#x}, past the end of the file")
            base = pos & ~(cs - 1)
            while pos < c_end:
                sc = (pos - base) >> scb
                s_end = min(c_end, base + ((sc + 1) << scb))
                bit = 1 << sc
                if alloc & bit:
                    add(pos, s_end - pos, NORMAL, host + (pos - base), ent)
                else:   # zeros or unallocated: in an allocated cluster, with its place
                    add(pos, s_end - pos, ZERO if zero & bit else UNALLOC,
                        host + (pos - base) if host else 0, ent)
                pos = s_end
            i += 1
    return runs
