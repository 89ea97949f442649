"""The qed consistency check and its repairs (QEMU's ``block/qed-check.c``, plus
reclaiming leaked space).

Every cluster of the file is referenced once at most: the header, the L1
table, the L2 tables the L1 table names and the data clusters the L2 tables
name.  An entry pointing outside the file or at an unaligned offset is a
corruption (``check -r all`` clears it: the cluster then reads from the
backing file, or as zeros); a cluster referenced twice is a corruption no
repair can settle.  A cluster nobody references is a leak.  QED has no free
list, so ``check -r leaks`` reclaims leaks by moving the clusters at the end
of the file into the holes (data first, then the pointer to it) and cutting
the file after the last cluster in use.
"""

from __future__ import annotations

import os
from array import array

from vmforge.block.driver import BlockError, CheckResult, CorruptImageError
from vmforge.record import Record
from vmforge_qed.layout import F_NEED_CHECK, ZERO_CLUSTER, le64_bytes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from vmforge_qed.driver import Qed


class _Scan(Record):
    __slots__ = __match_args__ = ("used", "data_owner", "table_start", "table_owner")
    used: bytearray
    data_owner: dict[int, int]      # cluster -> disk cluster
    table_start: dict[int, int]     # last cluster -> first
    table_owner: dict[int, int]     # first cluster -> L1 index

    def __init__(self, used: bytearray) -> None:
        self.used = used
        self.data_owner = {}
        self.table_start = {}
        self.table_owner = {}


def _scan(drv: Qed, res: CheckResult, fix: bool) -> _Scan:
    h, cs = drv.header, drv.cluster_size
    n = drv.file_end // cs
    scan = _Scan(bytearray(n))
    used = scan.used

    def mark(at: int, count: int, what: str) -> bool:
        c = at // cs
        if any(used[c:c + count]):
            res.corruptions += 1
            res.messages.append(f"ERROR {what} at {at:#x} overlaps another cluster in use")
            return False
        used[c:c + count] = b"\1" * len(used[c:c + count])
        return True

    used[0:h.header_clusters] = b"\1" * len(used[0:h.header_clusters])
    mark(h.l1_offset, h.table_size, "the L1 table")
    l1_fixed = False
    for idx, at in enumerate(drv.l1):
        if not at:
            continue
        where = h.l1_offset + 8 * idx
        if not drv.table_ok(at):
            if fix:
                drv.l1[idx] = 0
                l1_fixed = True
                res.corruptions_fixed += 1
                res.messages.append(f"Repairing L1 entry {idx} at {where:#x}: invalid L2 "
                                    f"table offset {at:#x} cleared")
            else:
                res.corruptions += 1
                res.messages.append(f"ERROR L1 entry {idx} at {where:#x}: L2 table offset "
                                    f"{at:#x} is unaligned or outside the file")
            continue
        if not mark(at, h.table_size, f"the L2 table of L1 entry {idx}"):
            continue
        scan.table_owner[at // cs] = idx
        scan.table_start[at // cs + h.table_size - 1] = at // cs
        try:
            table = drv.read_table(at)
        except CorruptImageError as exc:
            res.check_errors += 1
            res.messages.append(f"ERROR {exc}")
            continue
        changed = False
        base = idx * drv.entries
        for j, entry in enumerate(table):
            if entry <= ZERO_CLUSTER:
                continue
            if not drv.cluster_ok(entry):
                if fix:
                    table[j] = 0
                    changed = True
                    res.corruptions_fixed += 1
                    res.messages.append(f"Repairing L2 entry {j} at {at + 8 * j:#x}: invalid "
                                        f"cluster offset {entry:#x} cleared")
                else:
                    res.corruptions += 1
                    res.messages.append(f"ERROR L2 entry {j} at {at + 8 * j:#x}: cluster "
                                        f"offset {entry:#x} is unaligned or outside the file")
                continue
            if mark(entry, 1, f"cluster {base + j}"):
                scan.data_owner[entry // cs] = base + j
        if changed:
            os.pwrite(drv.fd, le64_bytes(table), at)
            drv.forget_tables()
    if l1_fixed:
        os.pwrite(drv.fd, le64_bytes(drv.l1), h.l1_offset)
        drv.forget_tables()
    return scan


def _leaks(drv: Qed, scan: _Scan) -> int:
    return scan.used[drv.header.header_clusters:].count(0)


def check(drv: Qed, repair: str | None) -> CheckResult:
    """Check ``drv``; ``repair``: None, ``"leaks"`` or ``"all"`` (also clears bad entries)."""
    if repair is not None and repair not in ("leaks", "all"):
        raise ValueError(f"repair mode {repair!r} is not leaks or all")
    writable = not drv.readonly
    res = CheckResult(drv.filename, drv.format_name)
    scan = _scan(drv, res, fix=repair == "all" and writable)
    res.leaks = _leaks(drv, scan)
    if res.leaks and repair and writable:
        before = res.leaks
        if res.corruptions == 0 and res.check_errors == 0:
            _reclaim(drv, scan)
        else:
            _cut_tail(drv, scan)   # moving clusters is unsafe with corruptions about
        res.leaks = _leaks(drv, scan)
        res.leaks_fixed = before - res.leaks
    if res.leaks:
        res.messages.append(f"{res.leaks} leaked clusters were found on the image.")
    drv.keep_need_check = res.corruptions > 0 or res.check_errors > 0
    if (repair and writable and res.corruptions == 0 and res.check_errors == 0
            and drv.header.features & F_NEED_CHECK):
        drv.flush()   # writes through, then clears the need-check flag
    cs = drv.cluster_size
    # no image_end_offset: QEMU's qed check reports none (qemu-img prints no such line)
    res.total_clusters = -(-drv.size // cs)
    res.allocated_clusters = len(scan.data_owner)
    return res


def drop_clusters_from(drv: Qed, first: int) -> None:
    """Unmap every cluster from ``first`` on (their space is leaked: reclaim it)."""
    per = drv.entries
    for idx in range(first // per, len(drv.l1)):
        if not drv.l1[idx]:
            continue
        start = max(first, idx * per)
        if start == idx * per:
            drv.set_l1(idx, 0)
        else:
            drv.set_entries(start, array("Q", bytes(8 * ((idx + 1) * per - start))))


def reclaim(drv: Qed) -> None:
    """Reclaim leaked clusters after a shrink (when the image is otherwise sound)."""
    res = CheckResult(drv.filename, drv.format_name)
    scan = _scan(drv, res, fix=False)
    if res.corruptions == 0 and res.check_errors == 0:
        _reclaim(drv, scan)


def _cut_tail(drv: Qed, scan: _Scan) -> None:
    """Cut the file after its last cluster in use."""
    used, cs = scan.used, drv.cluster_size
    last = len(used) - 1
    while last >= 0 and not used[last]:
        last -= 1
    if last + 1 < len(used):
        try:
            os.ftruncate(drv.fd, (last + 1) * cs)
        except OSError as exc:
            raise BlockError(f"cannot cut the file: {exc.strerror}", drv.filename) from exc
        del used[last + 1:]
        drv.file_end = (last + 1) * cs


def _copy(drv: Qed, src: int, dst: int, nbytes: int) -> None:
    data = os.pread(drv.fd, nbytes, src)
    if len(data) != nbytes:
        raise BlockError(f"short read of {nbytes} bytes at {src:#x}", drv.filename)
    os.pwrite(drv.fd, data, dst)
    if drv.sync:
        os.fsync(drv.fd)   # the copy is durable before the pointer moves to it


def _reclaim(drv: Qed, scan: _Scan) -> None:
    """Move the clusters at the end of the file into the holes, then cut the file."""
    used, cs, ts = scan.used, drv.cluster_size, drv.header.table_size
    while True:
        _cut_tail(drv, scan)
        last = len(used) - 1
        hole = used.find(0)
        if hole < 0 or hole >= last:
            return
        if last in scan.data_owner:
            cluster = scan.data_owner.pop(last)
            _copy(drv, last * cs, hole * cs, cs)
            drv.set_entries(cluster, array("Q", [hole * cs]))
            scan.data_owner[hole] = cluster
            used[hole], used[last] = 1, 0
            continue
        start = scan.table_start.get(last)
        if start is None:            # the L1 table or the header: it stays
            return
        run = used.find(bytes(ts))
        if run < 0 or run >= start:
            return
        idx = scan.table_owner.pop(start)
        _copy(drv, start * cs, run * cs, ts * cs)
        drv.set_l1(idx, run * cs)
        drv.forget_tables()
        del scan.table_start[last]
        scan.table_owner[run] = idx
        scan.table_start[run + ts - 1] = run
        used[run:run + ts] = b"\1" * ts
        used[start:start + ts] = bytes(ts)
