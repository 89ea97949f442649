"""A batch of writes (``pwritev_runs``) planned at once: where its new clusters go.

convert hands the writer a buffer's data runs at a time; on a new image their
clusters are all unallocated and go one after the other in the file.  These
find that out for the whole batch (a table segment at a time, the counting in
C), so that the writer does not plan, allocate and map run by run.
"""

from __future__ import annotations

from .l2 import OFFSET_MASK, OFLAG_COMPRESSED, OFLAG_COPIED, OFLAG_ZERO, copied_entries

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .write import Qcow2Writer


def write_new_runs(img: Qcow2Writer, views: list[tuple[int, list[memoryview]]]) -> bool:
    """A batch of runs of whole clusters, in order, none of whose clusters is
    allocated, in L2 tables the image owns (a new image's, after its first batch):
    their clusters taken in a row where one allocation per run would put them
    (:func:`reserve`'s condition), their entries set a table segment at a time,
    their data written in one call, then marked for the barrier: the places,
    entries and file of the run by run path, without its per-run work.  False,
    and nothing done, for any other batch."""
    if img.data is not img.f:
        return False
    found = _in_one_new_table(img, views)
    if found is None:
        found = _table_segments(img, views)
        if found is None:
            return False
    segs, need = found
    l1 = img.l1
    base = img.refs.alloc_next(need, defer=True) if need >= 2 else None
    if base is None:                # (refcounts written at the barrier)
        return False
    ents = copied_entries(base, need, img.cs)
    k, last = 0, -1
    l2off = lo = hi = 0
    for l1i, i0, count in segs:
        if l1i != last:
            if last >= 0:
                img._mark_l2(l2off, lo, hi)     # the entries changed in the last table
            last, lo = l1i, i0
            l2off, tbl = img._l2_table(l1, l1i)
        tbl[i0:i0 + count] = ents[k:k + count]     # type: ignore[index]
        k += count
        hi = i0 + count
    img._mark_l2(l2off, lo, hi)
    img.data.pwritev(base, [b for _, bufs in views for b in bufs])
    return True


Segments = tuple[list[tuple[int, int, int]], int]


def _in_one_new_table(img: Qcow2Writer, views: list[tuple[int, list[memoryview]]]
                      ) -> Segments | None:
    """The batch's table segments ``(l1i, first entry, count)`` and their clusters, if
    it lies in one L2 table the image owns whose entries over the batch's whole span
    are unallocated (a new image's): one count for the span, not one per run; None
    for any other batch (:func:`_table_segments` decides)."""
    cb, l1, l2_mask = img.cb, img.l1, img.l2_mask
    span_bits = cb + img.l2_bits
    first, (last, last_bufs) = views[0][0], views[-1]
    end = last + last_bufs[0].nbytes
    l1i = first >> span_bits
    if (end - 1) >> span_bits != l1i or l1i >= len(l1) or not l1[l1i] & OFLAG_COPIED:
        return None
    tbl = img._l2_table(l1, l1i)[1]
    a, b = (first >> cb) & l2_mask, (((end - 1) >> cb) & l2_mask) + 1
    if tbl is None or tbl[a:b].count(0) != b - a:
        return None
    mask = img.cs - 1
    segs: list[tuple[int, int, int]] = []
    need = done = 0
    for offset, bufs in views:
        n = bufs[0].nbytes
        if (offset | n) & mask or not n or offset < done:
            return None             # partial clusters, out of order: run by run
        done = offset + n
        segs.append((l1i, (offset >> cb) & l2_mask, n >> cb))
        need += n >> cb
    return segs, need


def _table_segments(img: Qcow2Writer, views: list[tuple[int, list[memoryview]]]
                    ) -> Segments | None:
    """The batch's table segments and their clusters, table by table and run by run;
    None unless every cluster is unallocated, in a table the image owns, and the runs
    whole clusters in order."""
    cb, l1, l2_bits, l2_mask = img.cb, img.l1, img.l2_bits, img.l2_mask
    mask = img.cs - 1
    segs: list[tuple[int, int, int]] = []      # (l1i, first entry, count)
    need = done = 0
    last, tbl = -1, None
    for offset, bufs in views:
        n = bufs[0].nbytes
        if (offset | n) & mask or not n or offset < done:
            return None            # partial clusters, out of order: run by run
        done = offset + n
        gci, g_end = offset >> cb, done >> cb
        while gci < g_end:
            l1i = gci >> l2_bits
            if l1i != last:
                if l1i >= len(l1) or not l1[l1i] & OFLAG_COPIED:
                    return None
                last, tbl = l1i, img._l2_table(l1, l1i)[1]
                if tbl is None:
                    return None
            t_end = (l1i + 1) << l2_bits
            if t_end > g_end:
                t_end = g_end
            i0, count = gci & l2_mask, t_end - gci
            if tbl[i0:i0 + count].count(0) != count:   # type: ignore[index]
                return None
            segs.append((l1i, i0, count))
            need += count
            gci = t_end
    return segs, need


def reserve(img: Qcow2Writer, views: list[tuple[int, list[memoryview]]]) -> list[int] | None:
    """The new clusters a batch of runs needs, allocated at once where that gives
    them the places one allocation per run would (each run's clusters right after
    the last's: free clusters in a row from the first free one, under one refcount
    block, in L2 tables the image owns already, so that none is allocated
    between them); else None (one allocation per run)."""
    if img.data is not img.f:
        return None
    cb, l1, l2_bits, l2_mask = img.cb, img.l1, img.l2_bits, img.l2_mask
    need = 0
    done = 0            # the clusters below this one are counted
    for offset, bufs in views:
        gci, g_end = offset >> cb, ((offset + bufs[0].nbytes - 1) >> cb) + 1
        if gci < done:
            if gci < done - 1:
                return None     # runs out of order: (convert's never are)
            gci = done          # a cluster the last run ended in
        while gci < g_end:        # an L2 table at a time: one lookup per table
            l1i = gci >> l2_bits
            if l1i >= len(l1) or not l1[l1i] & OFLAG_COPIED:
                return None
            t_end = min(g_end, (l1i + 1) << l2_bits)
            tbl = img._l2_table(l1, l1i)[1]
            if tbl is None:
                need += t_end - gci
            else:
                seg = tbl[gci & l2_mask:((t_end - 1) & l2_mask) + 1]
                free = seg.count(0)        # unallocated (in C): all new
                need += free
                if free != len(seg):
                    for ent in seg:
                        if ent and not (ent & OFLAG_COPIED and ent & OFFSET_MASK and
                                        not ent & (OFLAG_COMPRESSED | OFLAG_ZERO)):
                            need += 1
            gci = t_end
        done = g_end
    base = img.refs.alloc_next(need, defer=True) if need >= 2 else None
    return None if base is None else [base, need]
