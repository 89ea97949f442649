"""Creating and deleting internal snapshots (``qemu-img snapshot -c / -d``).

A snapshot is a copy of the active L1 table; every L2 table and data
cluster of the active tree gains one reference (QEMU counts references per
tree), so the active image copies on write from then on.

Crash order when creating: raise refcounts; sync; clear OFLAG_COPIED in the
active tree; sync; write the new snapshot table; sync; switch the header;
sync; free the old table.  Deleting: switch to a table without the entry
first, then drop the references, then set OFLAG_COPIED where refcounts came
back to 1.  Reverting: raise the snapshot tree's refcounts; sync; clear
OFLAG_COPIED in its L2 tables (now shared); sync; write the active L1
without OFLAG_COPIED; sync; drop the old tree's references; set OFLAG_COPIED
where refcounts are 1.  A crash in between leaks clusters, nothing worse
(``qemu-img check -r leaks`` repairs the image, flags included), and never
leaves OFLAG_COPIED on a cluster a snapshot shares.
"""

from __future__ import annotations

import collections
import struct
import time
from array import array

from vmforge.block import BlockError, CorruptImageError

from .l2 import (
    COMPRESSED,
    OFFSET_MASK,
    OFLAG_COPIED,
    entry_kind,
    table_from_bytes,
    table_to_bytes,
)
from .snapshot import _ENTRY, Snapshot, find_snapshot, read_snapshots

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .write import Qcow2Writer

OFF_NB_SNAPSHOTS = 60   # nb_snapshots (4) and snapshots_offset (8) are adjacent


def _entry_bytes(s: Snapshot) -> bytes:
    sid, name = s.id.encode(), s.name.encode()
    extra = struct.pack(">QQ", s.vm_state_size, s.disk_size or 0)
    extra += struct.pack(">q", s.icount if s.icount is not None else -1)
    head = _ENTRY.pack(s.l1_table_offset, s.l1_size, len(sid), len(name), s.date_sec,
                       s.date_nsec, s.vm_clock_nsec, min(s.vm_state_size, 0xFFFFFFFF),
                       len(extra))
    out = head + extra + sid + name
    return out + bytes(-len(out) % 8)


def _write_table(img: Qcow2Writer, snaps: list[Snapshot]) -> None:
    """Write a new snapshot table, switch the header to it, free the old one."""
    data = b"".join(_entry_bytes(s) for s in snaps)
    cs = img.cs
    old_off, old_len = img.h.snapshots_offset, _table_len(img)
    new = img.refs.alloc(-(-len(data) // cs)) if data else 0
    if data:
        img.f.pwrite(new, data + bytes(-len(data) % cs))
    img.f.sync()
    img._write_header(OFF_NB_SNAPSHOTS, struct.pack(">IQ", len(snaps), new))
    img.f.sync()
    img.h.nb_snapshots, img.h.snapshots_offset = len(snaps), new
    if old_len:     # (punched out of the file, as QEMU's snapshot discards)
        img.refs.free(old_off, old_len, discard=True)
    img._snaps = read_snapshots(img.f, new, len(snaps), cs)
    img._snap_table_len = len(data)


def _table_len(img: Qcow2Writer) -> int:
    if not img._snaps:
        return 0
    from .snapshot import table_bytes
    return table_bytes(img._snaps, img.f, img.h.snapshots_offset)


def _tree_refcounts(img: Qcow2Writer, l1: array, delta: int) -> list[int]:
    """Add ``delta`` to every L2 table and data cluster reached from ``l1``; the
    clusters changed, in order.

    All counts are gathered and checked first (an overflow, or a drop below
    zero, changes nothing); the blocks are then updated in memory and written
    once at the end.
    """
    counts = _tree_counts(img, l1)
    _validate(img, counts, delta)
    refs = img.refs
    lazy, refs.lazy = refs.lazy, True
    try:
        for c in sorted(counts):
            refs.update(c, 1, delta * counts[c])
    finally:
        refs.lazy = lazy
        if not lazy:
            refs.write_back()
    return sorted(counts)


def _validate(img: Qcow2Writer, counts: collections.Counter[int], delta: int) -> None:
    refs = img.refs
    for c, k in counts.items():
        v = refs.get(c) + delta * k
        if v < 0:
            raise CorruptImageError(f"refcount of cluster {c} would drop below zero",
                                    img.filename, c << img.cb, "refcount block")
        if v > refs.codec.max:
            raise BlockError(f"refcount overflow: cluster {c} would need a refcount of {v} "
                             f"({refs.codec.bits}-bit refcounts)", img.filename)


def _tree_counts(img: Qcow2Writer, l1: array) -> collections.Counter[int]:
    """How many references the tree under ``l1`` holds on each cluster."""
    cb, cs = img.cb, img.cs
    counts: collections.Counter[int] = collections.Counter()
    for i, e in enumerate(l1):
        off = e & OFFSET_MASK
        if not off:
            continue
        tbl = table_from_bytes(img.f.read_table(off, cs, f"L2 table (L1 entry {i})"))
        for ent in (tbl[::2] if img.extl2 else tbl):
            if not ent:
                continue
            if entry_kind(ent) == COMPRESSED:
                c0, n = img.clayout.clusters(ent)
                for c in range(c0, c0 + n):
                    counts[c] += 1
            elif ent & OFFSET_MASK:
                counts[(ent & OFFSET_MASK) >> cb] += 1
        counts[off >> cb] += 1
    return counts


def _fix_copied(img: Qcow2Writer) -> None:
    """OFLAG_COPIED in the active tree := refcount == 1."""
    refs, cb, cs = img.refs, img.cb, img.cs
    for i, e in enumerate(img.l1):
        off = e & OFFSET_MASK
        if not off:
            continue
        tbl = table_from_bytes(img.f.read_table(off, cs, f"L2 table (L1 entry {i})"))
        changed = False
        for j, ent in enumerate(tbl):
            if img.extl2 and j & 1:
                continue           # subcluster bitmaps
            if not ent & OFFSET_MASK or entry_kind(ent) == COMPRESSED:
                continue
            want = refs.get((ent & OFFSET_MASK) >> cb) == 1
            if want != bool(ent & OFLAG_COPIED):
                tbl[j] = ent | OFLAG_COPIED if want else ent & ~OFLAG_COPIED
                changed = True
        if changed:
            img.f.pwrite(off, table_to_bytes(tbl))
        want = refs.get(off >> cb) == 1
        if want != bool(e & OFLAG_COPIED):
            img._set_l1(i, e | OFLAG_COPIED if want else e & ~OFLAG_COPIED, defer=False)
    img.l2cache.tables.clear()


def _clear_copied(img: Qcow2Writer, l1: array) -> None:
    """Clear OFLAG_COPIED in the L2 tables under ``l1`` (their clusters are shared)."""
    cs = img.cs
    seen: set[int] = set()
    for i, e in enumerate(l1):
        off = e & OFFSET_MASK
        if not off or off in seen:
            continue
        seen.add(off)
        raw = img.f.read_table(off, cs, f"L2 table (L1 entry {i})")
        tbl = table_from_bytes(raw)
        step = 2 if img.extl2 else 1
        for j in range(0, len(tbl), step):
            if tbl[j] & OFLAG_COPIED:
                tbl[j] &= ~OFLAG_COPIED
        new = table_to_bytes(tbl)
        if new != raw:
            img.f.pwrite(off, new)


def create_snapshot(img: Qcow2Writer, name: str, vm_state_size: int = 0,
                    vm_clock_nsec: int = 0, icount: int | None = None) -> Snapshot:
    """Take an internal snapshot of the active image."""
    if not name:
        raise BlockError("a snapshot needs a name", img.filename)
    with img.lock:
        img._begin_write()
        if any(s.name == name for s in img._snaps):
            raise BlockError(f"a snapshot named {name!r} exists already", img.filename)
        img._barrier()
        img.refs.write_back()
        _validate(img, _tree_counts(img, img.l1), +1)   # before anything changes
        cs = img.cs
        n = len(img.l1)
        l1_off = 0
        if n:
            l1_off = img.refs.alloc(-(-8 * n // cs))
            raw = table_to_bytes(img.l1)
            img.f.pwrite(l1_off, raw + bytes(-len(raw) % cs))
        _tree_refcounts(img, img.l1, +1)
        img.refs.write_back()
        img.f.sync()
        _fix_copied(img)
        img.f.sync()
        ids = [int(s.id) for s in img._snaps if s.id.isdigit()]
        now = time.time_ns()
        snap = Snapshot(str(max(ids, default=0) + 1), name, l1_off, n, vm_state_size,
                        now // 1_000_000_000, now % 1_000_000_000, vm_clock_nsec,
                        img.size, icount)
        _write_table(img, [*img._snaps, snap])
        return img._snaps[-1]


def delete_snapshot(img: Qcow2Writer, key: str) -> None:
    """Delete the snapshot with this id or name and release its clusters."""
    with img.lock:
        img._begin_write()
        snap = find_snapshot(img._snaps, key)
        if snap is None:
            raise BlockError(f"no snapshot with id or name {key!r}", img.filename)
        img._barrier()
        img.refs.write_back()
        l1 = img._read_l1(snap.l1_table_offset, snap.l1_size, f"L1 of snapshot {snap.id}")
        _write_table(img, [s for s in img._snaps if s is not snap])
        freed = _tree_refcounts(img, l1, -1)
        if snap.l1_size:
            img.refs.free(snap.l1_table_offset, 8 * snap.l1_size, discard=True)
        img.refs.write_back()
        i = 0
        while i < len(freed):   # what only the snapshot held goes back (as QEMU)
            j = i + 1
            while j < len(freed) and freed[j] == freed[j - 1] + 1:
                j += 1
            img.refs.discard_unused(freed[i], j - i)
            i = j
        img.f.sync()
        _fix_copied(img)
        img.f.sync()


def revert_snapshot(img: Qcow2Writer, key: str) -> None:
    """Make the active image the snapshot's disk state (``qemu-img snapshot -a``)."""
    with img.lock:
        img._begin_write()
        snap = find_snapshot(img._snaps, key)
        if snap is None:
            raise BlockError(f"no snapshot with id or name {key!r}", img.filename)
        size = snap.disk_size if snap.disk_size is not None else img.size
        if size != img.size:
            raise BlockError(f"snapshot {snap.id} has size {size}, the image {img.size}: "
                             "reverting across a resize is not supported", img.filename)
        img._barrier()
        img.refs.write_back()
        new_l1 = img._read_l1(snap.l1_table_offset, snap.l1_size, f"L1 of snapshot {snap.id}")
        if len(new_l1) > len(img.l1):
            raise BlockError(f"snapshot {snap.id} has a larger L1 table than the image",
                             img.filename)
        old_l1 = array("Q", img.l1)
        _tree_refcounts(img, new_l1, +1)
        img.refs.write_back()
        img.f.sync()
        # every cluster of the snapshot's tree is now shared (refcount >= 2): no
        # OFLAG_COPIED may reach the active tree, or the next write would go in
        # place, into the snapshot (the stored L1 and its L2 tables may carry them)
        _clear_copied(img, new_l1)
        img.f.sync()
        l1 = array("Q", (e & ~OFLAG_COPIED for e in new_l1))
        l1 += array("Q", bytes(8 * (len(img.l1) - len(new_l1))))
        img.f.pwrite(img.l1_offset, table_to_bytes(l1))
        img.f.sync()
        img.l1 = l1
        img.l2cache.tables.clear()
        _tree_refcounts(img, old_l1, -1)
        img.refs.write_back()
        img.f.sync()
        _fix_copied(img)
        img.f.sync()
