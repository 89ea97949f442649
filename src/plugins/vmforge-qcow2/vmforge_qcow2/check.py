"""Consistency check and repair (``qemu-img check [-r leaks|all]``).

Walks every reference (header, active and snapshot L1/L2 trees, data and
compressed clusters, refcount table and blocks, snapshot table), computes
the refcount each cluster should have and compares with the stored one:

- stored > computed: a leak (fixed by ``"leaks"`` and ``"all"``);
- stored < computed, stored > 0: a corruption (fixed by ``"all"``);
- stored == 0 but referenced, or a broken refcount block: a corruption;
  ``"all"`` rebuilds the whole refcount structure at the end of the file.

Then the OFLAG_COPIED flags of the active tree are compared with the
refcounts (fixed by ``"all"``).  Entries pointing outside the file or at
unaligned offsets are corruptions that are reported, not fixed (QEMU does
the same, except that it zeroes misaligned preallocated zero clusters).
"""

from __future__ import annotations

import collections
import struct
from array import array
from collections.abc import Sequence

from vmforge.block import BlockError, CheckResult, CorruptImageError, ReadOnlyError

from .header import (
    AUTOCLEAR_BITMAPS,
    EXT_BITMAPS,
    INCOMPAT_CORRUPT,
    INCOMPAT_DIRTY,
)
from .l2 import (
    COMPRESSED,
    L1E_RESERVED,
    L2E_RESERVED,
    NORMAL,
    OFFSET_MASK,
    OFLAG_COMPRESSED,
    OFLAG_COPIED,
    OFLAG_ZERO,
    ZERO,
    table_from_bytes,
    table_to_bytes,
)
from .rebuild import rebuild_refcounts
from .refcount import REFT_OFFSET_MASK
from .snapshot import table_bytes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .write import Qcow2Writer

MAX_MESSAGES = 200
#: references a check follows before giving up (a hostile image can make the
#: trees share tables endlessly); far above what a real image of any size needs
WORK_LIMIT = 1 << 27
#: kinds of L2 entries besides those of .l2, as QEMU's check tells them apart
_ZERO_PLAIN, _UNALLOCATED = -2, -1


class _TooMuchWork(Exception):
    pass


class _Walk:
    """One pass over the image's references."""

    def __init__(self, img: Qcow2Writer, res: CheckResult) -> None:
        self.img = img
        self.res = res
        self.cs, self.cb = img.cs, img.cb
        self.fend = img.f.end
        self.nfile = -(-self.fend // self.cs)
        # per-cluster computed refcounts: dense for ordinary files, sparse for huge
        # (e.g. sparse) ones, so a hostile file size cannot force a huge allocation
        self.counts: Any = (array("I", [0]) * self.nfile if self.nfile <= 1 << 24
                            else collections.defaultdict(int))
        self.meta: dict[int, str] = {}
        # active tree, for the OFLAG_COPIED pass: (l1 index, l2 offset), (l2 offset, index, entry)
        self.active_l2: list[tuple[int, int]] = []
        self.active_data: list[tuple[int, int, int]] = []
        self.misaligned_zero: list[tuple[int, int]] = []
        self.rebuild = False
        self.l2_seen: set[int] = set()
        self.allocated = self.fragmented = self.compressed = 0
        #: clusters each L2 table references (replayed when another tree shares it)
        self.l2_incs: dict[int, tuple[list[int], int]] = {}
        self.work = 0

    def say(self, msg: str) -> None:
        if len(self.res.messages) < MAX_MESSAGES:
            self.res.messages.append(msg)

    def inc(self, off: int, nbytes: int, what: str, meta: bool = False,
            record: list[int] | None = None) -> bool:
        c0 = off >> self.cb
        c1 = (off + max(nbytes, 1) - 1) >> self.cb
        self.work += c1 - c0 + 1
        if self.work > WORK_LIMIT:
            raise _TooMuchWork
        if c1 >= self.nfile:
            self.res.corruptions += 1
            self.say(f"ERROR {what} at {off:#x} ({nbytes} bytes) lies past the end of the "
                     f"file ({self.fend} bytes)")
            return False
        for c in range(c0, c1 + 1):
            if meta:
                if c in self.meta:
                    self.say(f"ERROR {what} at {c << self.cb:#x} overlaps {self.meta[c]}")
                self.meta[c] = what
            elif c in self.meta:
                self.say(f"ERROR {what} at {c << self.cb:#x} overlaps {self.meta[c]}")
            self.counts[c] += 1
            if record is not None:
                record.append(c)
        return True

    def run(self) -> None:
        img, h, cs = self.img, self.img.h, self.cs
        self.inc(0, cs, "header", meta=True)
        self.inc(img.refs.table_offset, img.refs.table_clusters * cs, "refcount table",
                 meta=True)
        for bi, ent in enumerate(img.refs.table):
            off = ent & REFT_OFFSET_MASK
            if not ent:
                continue
            if ent & 0x1FF or off % cs:
                self.res.corruptions += 1
                self.rebuild = True
                self.say(f"ERROR refcount block {bi} at {off:#x} is not cluster aligned; "
                         "refcount table entry corrupted")
                continue
            if not self.inc(off, cs, f"refcount block {bi}", meta=True):
                self.rebuild = True
        if h.nb_snapshots:
            try:
                n = table_bytes(img._snaps, img.f, h.snapshots_offset)
                self.inc(h.snapshots_offset, n, "snapshot table", meta=True)
            except CorruptImageError as e:
                self.res.check_errors += 1
                self.say(f"ERROR snapshot table: {e}")
        if h.autoclear_features & AUTOCLEAR_BITMAPS:
            self.walk_bitmaps()
        self.walk_l1(img.l1_offset, img.l1 if img.snapshot is None else
                     img._read_l1(h.l1_table_offset, h.l1_size, "L1 table"), "L1 table", True)
        for s in img._snaps:
            try:
                l1 = img._read_l1(s.l1_table_offset, s.l1_size, f"snapshot {s.id} L1")
            except CorruptImageError as e:
                self.res.corruptions += 1
                self.say(f"ERROR {e}")
                continue
            self.walk_l1(s.l1_table_offset, l1, f"L1 table of snapshot {s.id}", False)

    def walk_bitmaps(self) -> None:
        """Clusters of persistent dirty bitmaps (only while the extension is valid)."""
        ext = self.img.h.ext(EXT_BITMAPS)
        if ext is None or len(ext.data) < 24:
            return
        nb, _, dir_size, dir_off = struct.unpack_from(">IIQQ", ext.data)
        try:
            raw = self.img.f.read_table(dir_off, min(dir_size, 64 << 20), "bitmap directory")
        except CorruptImageError as e:
            self.res.corruptions += 1
            self.say(f"ERROR {e}")
            return
        self.inc(dir_off, len(raw), "bitmap directory", meta=True)
        pos = 0
        for k in range(nb):
            if pos + 24 > len(raw):
                self.res.corruptions += 1
                self.say(f"ERROR bitmap directory entry {k} runs past the directory")
                return
            t_off, t_size, _flags, _type, _gran, name_len, extra = struct.unpack_from(
                ">QIIBBHI", raw, pos)
            size = 24 + extra + name_len
            pos += size + (-size % 8)
            if not t_size:
                continue
            try:
                table = table_from_bytes(self.img.f.read_table(t_off, 8 * t_size,
                                                               "bitmap table"))
            except CorruptImageError as e:
                self.res.corruptions += 1
                self.say(f"ERROR {e}")
                continue
            self.inc(t_off, 8 * t_size, f"bitmap table {k}", meta=True)
            for ent in table:
                if ent & OFFSET_MASK:
                    self.inc(ent & OFFSET_MASK, self.cs, f"bitmap {k} data")

    def walk_l1(self, l1_off: int, l1: Sequence[int], name: str, active: bool) -> None:
        """QEMU's check_refcounts_l1: every L2 table counts, whatever its entry says."""
        cs = self.cs
        if l1:
            self.inc(l1_off, 8 * len(l1), name, meta=True)
        for i, e in enumerate(l1):
            off = e & OFFSET_MASK
            if not off:
                continue           # (reserved bits without an offset: QEMU says nothing)
            if e & L1E_RESERVED:
                self.res.corruptions += 1
                self.say(f"ERROR {name} entry {i} has reserved bits set: {e:#x}")
            if off % cs:
                self.res.corruptions += 1
                self.say(f"ERROR {name} entry {i}: L2 table at {off:#x} is not cluster "
                         "aligned; L1 entry corrupted")
                continue
            if off in self.l2_seen:
                # an L2 table shared by several trees (snapshots) counts once per tree,
                # and so do the clusters it references and the errors it holds
                incs, errors = self.l2_incs.get(off, ([], 0))
                self.work += len(incs) + 1
                if self.work > WORK_LIMIT:
                    raise _TooMuchWork
                self.counts[off >> self.cb] += 1
                for c in incs:
                    self.counts[c] += 1
                self.res.corruptions += errors
                if active:
                    self.active_l2.append((i, off))
                continue
            self.l2_seen.add(off)
            if not self.inc(off, cs, f"L2 table (from {name} entry {i})", meta=True):
                continue
            if active:
                self.active_l2.append((i, off))
            try:
                tbl = table_from_bytes(self.img.f.read_table(off, cs, "L2 table"))
            except CorruptImageError as e2:
                self.res.check_errors += 1
                self.say(f"ERROR {e2}")
                continue
            record: list[int] = []
            before = self.res.corruptions
            self.walk_l2(off, tbl, active, record)
            self.l2_incs[off] = (record, self.res.corruptions - before)

    def walk_l2(self, off: int, tbl: Sequence[int], active: bool, record: list[int]) -> None:
        """QEMU's check_refcounts_l2, entry by entry (and its error counts)."""
        cs, cb, res = self.cs, self.cb, self.res
        ext = self.img.extl2
        datafile = self.img.data is not self.img.f
        clayout = self.img.clayout
        next_contig = 0
        step = 2 if ext else 1
        for j in range(0, len(tbl), step):
            ent = tbl[j]
            bm = tbl[j + 1] if ext else 0
            if not ent and not bm:
                continue
            where = f"L2 table {off:#x} entry {j // step}"
            if not ent & OFLAG_COMPRESSED and ent & L2E_RESERVED:
                res.corruptions += 1
                self.say(f"ERROR {where} has reserved bits set: {ent:#x}")
            host = ent & OFFSET_MASK
            if ent & OFLAG_COMPRESSED:
                kind = COMPRESSED
            elif ent & OFLAG_ZERO and not ext:
                kind = ZERO if host else _ZERO_PLAIN
            elif host or (datafile and ent & OFLAG_COPIED):
                kind = NORMAL
            else:
                kind = _UNALLOCATED
            if kind == COMPRESSED:
                if ent & OFLAG_COPIED:
                    res.corruptions += 1
                    self.say(f"ERROR {where}: compressed cluster has the copied flag set")
                if datafile:
                    res.corruptions += 1
                    self.say(f"ERROR {where}: compressed cluster in an image with a data "
                             "file")
                    continue
                if bm:
                    res.corruptions += 1
                    self.say(f"ERROR {where}: compressed cluster with a non-zero subcluster "
                             f"bitmap ({bm:#x})")
                    continue
                c0, n = clayout.clusters(ent)
                self.inc(c0 << cb, n << cb, f"compressed cluster ({where})", record=record)
                if active:
                    self.allocated += 1
                    self.compressed += 1
                    self.fragmented += 1
            elif kind in (NORMAL, ZERO):
                if (bm >> 32) & bm:
                    res.corruptions += 1
                    self.say(f"ERROR {where}: allocated cluster has corrupted subcluster "
                             f"allocation bitmap ({bm:#x})")
                if host % cs:
                    res.corruptions += 1
                    has_data = bool(bm & 0xFFFFFFFF) if ext else kind == NORMAL
                    if has_data:
                        self.say(f"ERROR {where}: data cluster at {host:#x} is not "
                                 "properly aligned; L2 entry corrupted")
                    else:
                        if active:
                            self.misaligned_zero.append((off, j))
                        self.say(f"ERROR {where}: preallocated cluster at {host:#x} is not "
                                 "properly aligned; L2 entry corrupted")
                if active:
                    self.allocated += 1
                    if next_contig and host != next_contig:
                        self.fragmented += 1
                    next_contig = host + cs
                    self.active_data.append((off, j, ent))
                if not datafile:       # data-file clusters are not refcounted
                    self.inc(host, cs, f"data cluster ({where})", record=record)
            elif kind == _UNALLOCATED and bm & 0xFFFFFFFF:
                res.corruptions += 1
                self.say(f"ERROR {where}: unallocated cluster has a non-zero subcluster "
                         f"allocation bitmap ({bm:#x})")


def check_image(img: Qcow2Writer, repair: str | None) -> CheckResult:
    """The body of ``Qcow2.check``."""
    if repair not in (None, "leaks", "all"):
        raise ValueError(f"repair must be None, 'leaks' or 'all', not {repair!r}")
    if repair and img.readonly:
        raise ReadOnlyError("repairing needs the image open read-write", img.filename)
    with img.lock:
        if not img.readonly:
            img._barrier()
            img.refs.write_back()
        res = _check_once(img, repair)
        if repair and (res.leaks_fixed or res.corruptions_fixed):
            again = _check_once(img, None)
            again.leaks_fixed, again.corruptions_fixed = res.leaks_fixed, res.corruptions_fixed
            again.messages = res.messages + again.messages
            res = again
        if repair and res.corruptions == 0 and res.check_errors == 0:
            # consistent now: clear the corrupt bit, and the dirty bit unless this
            # session's lazy refcounts still rely on it (QEMU: mark clean/consistent)
            bits = img.h.incompatible_features & ~INCOMPAT_CORRUPT
            if not img._marked_dirty:
                bits &= ~INCOMPAT_DIRTY
            if bits != img.h.incompatible_features:
                img.f.sync()
                img._set_incompat(bits)
            img.corrupt = False
        return res


def _check_once(img: Qcow2Writer, repair: str | None) -> CheckResult:
    res = CheckResult(img.filename, "qcow2")
    w = _Walk(img, res)
    try:
        w.run()
    except _TooMuchWork:
        res.check_errors += 1
        res.messages.append(f"ERROR check aborted: the image references more than "
                            f"{WORK_LIMIT} clusters")
        return res
    fix_leaks = repair in ("leaks", "all")
    fix_all = repair == "all"
    highest = 0
    # compare stored and computed refcounts, only where either is nonzero (a sparse
    # file can be huge; the work stays proportional to what the image holds)
    stored = _stored_refcounts(img, w, res)
    computed = w.counts
    _check_refblocks(img, w, res)
    clusters = set(stored)
    clusters.update(_nonzero(computed))
    order = sorted(c for c in clusters if c < w.nfile)  # past the end: ignored (QEMU too)
    highest = order[-1] if order else 0
    # as QEMU: compare without fixing first; repair only when no rebuild is needed
    before = (res.corruptions, res.leaks, len(res.messages))
    for c in order:
        if stored.get(c, 0) != computed[c]:
            _mismatch(img, w, res, c, stored.get(c, 0), computed[c], False, False)
    if w.rebuild and fix_all:
        _rebuild(img, w, res)
    elif w.rebuild and fix_leaks:
        w.say("ERROR need to rebuild refcount structures")
        res.check_errors += 1
        raise CheckFailed(res)
    elif fix_leaks and (res.leaks or res.corruptions):
        res.corruptions, res.leaks = before[0], before[1]
        del res.messages[before[2]:]
        for c in order:
            if stored.get(c, 0) != computed[c]:
                _mismatch(img, w, res, c, stored.get(c, 0), computed[c], fix_leaks, fix_all)
    # -r leaks repairs the flags too when nothing but leaks was wrong (QEMU: "only if
    # that seems safe": the refcounts are then accurate)
    _check_copied(img, w, res, fix_all or (fix_leaks and not (
        res.corruptions or res.check_errors or res.leaks)))
    res.image_end_offset = (highest + 1) * img.cs
    if hasattr(res, "total_clusters"):   # cluster statistics (newer CheckResult)
        res.total_clusters = -(-img.size // img.cs)
        res.allocated_clusters = w.allocated
        res.fragmented_clusters = w.fragmented
        res.compressed_clusters = w.compressed
    return res


def count_references(img: Qcow2Writer) -> tuple[dict[int, int], int]:
    """Every cluster's references (what the refcounts should be), and the file's
    length in clusters."""
    res = CheckResult(img.filename, "qcow2")
    w = _Walk(img, res)
    w.run()
    if res.corruptions or res.check_errors:
        raise CorruptImageError(f"{res.corruptions + res.check_errors} problems found; "
                                "run check first", img.filename)
    return {c: w.counts[c] for c in _nonzero(w.counts)}, w.nfile


class CheckFailed(BlockError):
    """A repair that cannot be done (QEMU: ``Check failed: Input/output error``);
    ``result`` holds what the check found."""

    def __init__(self, result: CheckResult) -> None:
        self.result = result
        super().__init__("Check failed: Input/output error")


def _check_refblocks(img: Qcow2Writer, w: _Walk, res: CheckResult) -> None:
    """A refcount block referenced by anything else as well (QEMU's check_refblocks):
    only a rebuild can repair it."""
    for bi, ent in enumerate(img.refs.table):
        off = ent & REFT_OFFSET_MASK
        if not off or ent & 0x1FF or off % img.cs or off >> img.cb >= w.nfile:
            continue
        n = w.counts[off >> img.cb]
        if n != 1:
            res.corruptions += 1
            w.rebuild = True
            w.say(f"ERROR refcount block {bi} refcount={n}")


def _nonzero(counts: Any) -> list[int]:
    if isinstance(counts, dict):
        return [c for c, v in counts.items() if v]
    return [c for c, v in enumerate(counts) if v]


def _stored_refcounts(img: Qcow2Writer, w: _Walk, res: CheckResult) -> dict[int, int]:
    """cluster -> stored refcount, for every nonzero entry of every distinct block."""
    refs = img.refs
    out: dict[int, int] = {}
    seen: set[int] = set()
    codec, n = refs.codec, refs.entries
    for bi, ent in enumerate(refs.table):
        off = ent & REFT_OFFSET_MASK
        if not off or ent & 0x1FF or off % img.cs:
            continue   # (the walk reported misaligned entries)
        if off in seen:
            res.corruptions += 1
            w.rebuild = True
            w.say(f"ERROR refcount block {bi} at {off:#x} is also used by another range")
            continue
        seen.add(off)
        try:
            blk = refs.load(bi)
        except CorruptImageError as e:
            res.check_errors += 1
            w.rebuild = True
            w.say(f"ERROR cannot read refcount block {bi}: {e}")
            continue
        if blk is None or blk.count(0) == len(blk):
            continue
        base = bi << refs.shift
        i = codec.next_used(blk, 0, n)
        while i < n:
            out[base + i] = codec.get(blk, i)
            i = codec.next_used(blk, i + 1, n)
    return out


def _mismatch(img: Qcow2Writer, w: _Walk, res: CheckResult, c: int, stored: int,
              computed: int, fix_leaks: bool, fix_all: bool) -> None:
    if stored == 0:
        w.rebuild = True
        res.corruptions += 1
        w.say(f"ERROR cluster {c} refcount=0 reference={computed}")
        return
    fixable = (stored > computed and fix_leaks) or (stored < computed and fix_all)
    if fixable and not w.rebuild:
        try:
            img.refs.set_value(c, computed)
        except BlockError as e:
            w.say(f"ERROR could not fix the refcount of cluster {c}: {e}")
        else:
            if stored > computed:
                res.leaks_fixed += 1
            else:
                res.corruptions_fixed += 1
            w.say(f"Repairing cluster {c} refcount={stored} reference={computed}")
            return
    if stored > computed:
        res.leaks += 1
        w.say(f"Leaked cluster {c} refcount={stored} reference={computed}")
    else:
        res.corruptions += 1
        w.say(f"ERROR cluster {c} refcount={stored} reference={computed}")


def _rebuild(img: Qcow2Writer, w: _Walk, res: CheckResult) -> None:
    """A new refcount structure (``-r all``), then QEMU's recount: the old structure
    is leaked and freed; what was wrong before and is right now counts as fixed."""
    w.say("Rebuilding refcount structure")
    rebuild_refcounts(img, {c: w.counts[c] for c in _nonzero(w.counts)}, w.nfile)
    old = (res.corruptions, res.leaks)
    res.corruptions = res.leaks = 0
    w2 = _Walk(img, res)
    w2.run()
    scratch = CheckResult(img.filename, "qcow2")
    stored = _stored_refcounts(img, w2, scratch)
    clusters = set(stored)
    clusters.update(_nonzero(w2.counts))
    for c in sorted(c for c in clusters if c < w2.nfile):
        if stored.get(c, 0) != w2.counts[c]:
            _mismatch(img, w2, scratch, c, stored.get(c, 0), w2.counts[c], True, False)
    if w2.rebuild:
        w.say("ERROR rebuilt refcount structure is still broken")
    if res.corruptions < old[0]:
        res.corruptions_fixed += old[0] - res.corruptions
    if res.leaks < old[1]:
        res.leaks_fixed += old[1] - res.leaks
    res.leaks += scratch.leaks
    w.rebuild = False


def _check_copied(img: Qcow2Writer, w: _Walk, res: CheckResult, fix: bool) -> None:
    """OFLAG_COPIED must be set exactly when the refcount is 1 (active tree only)."""
    if img.snapshot is not None:
        return
    refs = img.refs
    for i, off in w.active_l2:
        try:
            rc = refs.get(off >> img.cb)
        except CorruptImageError:
            continue
        e = img.l1[i]
        if (rc == 1) != bool(e & OFLAG_COPIED):
            if fix:
                img._set_l1(i, (e | OFLAG_COPIED) if rc == 1 else (e & ~OFLAG_COPIED),
                            defer=False)
                res.corruptions_fixed += 1
                w.say(f"Repairing OFLAG_COPIED L2 cluster: l1_index={i} l1_entry={e:#x} "
                      f"refcount={rc}")
            else:
                res.corruptions += 1
                w.say(f"ERROR OFLAG_COPIED L2 cluster: l1_index={i} l1_entry={e:#x} "
                      f"refcount={rc}")
    by_table: dict[int, list[tuple[int, int]]] = {}
    datafile = img.data is not img.f
    for off, j, ent in w.active_data:
        try:       # data-file clusters count as referenced once (QEMU too)
            rc = 1 if datafile else refs.get((ent & OFFSET_MASK) >> img.cb)
        except CorruptImageError:
            continue
        if (rc == 1) != bool(ent & OFLAG_COPIED):
            if fix:
                new = (ent | OFLAG_COPIED) if rc == 1 else (ent & ~OFLAG_COPIED)
                by_table.setdefault(off, []).append((j, new))
                res.corruptions_fixed += 1
                w.say(f"Repairing OFLAG_COPIED data cluster: l2_entry={ent:#x} refcount={rc}")
            else:
                res.corruptions += 1
                w.say(f"ERROR OFLAG_COPIED data cluster: l2_entry={ent:#x} refcount={rc}")
    if fix:
        for off, j in w.misaligned_zero:
            by_table.setdefault(off, []).append((j, OFLAG_ZERO))
            res.corruptions -= 1
            res.corruptions_fixed += 1
    for off, changes in by_table.items():
        tbl = table_from_bytes(img.f.read_table(off, img.cs, "L2 table"))
        for j, new in changes:
            tbl[j] = new
        img.f.pwrite(off, table_to_bytes(tbl))
        img.l2cache.drop(off)
