"""The VM state of an internal snapshot (``savevm``), where QEMU keeps it.

QEMU writes a snapshot's VM state into the active image past the disk, at
``qcow2_vm_state_offset``: the first byte the L1 table would map after the
disk (L1 entries for the disk size, times the bytes one L1 entry maps); the
snapshot then copies the L1 table, VM state included, and the VM state is
discarded from the active image (``qcow2_snapshot_create``).  ``loadvm``
reads it back from the same place, through the snapshot's L1 table.  The
snapshot's entry records ``vm_state_size`` and ``vm_clock_nsec``.
"""

from __future__ import annotations

import mmap
from collections.abc import Sequence

from vmforge.block import BlockError

from .header import MAX_L1_BYTES, l1_entries_for
from .image import as_byte_views
from .snapshot import Snapshot, find_snapshot

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .write import Qcow2Writer

__all__ = ["read_vm_state", "save_vm_snapshot", "vm_state_offset"]


def vm_state_offset(img: Qcow2Writer) -> int:
    """Where the VM state starts (QEMU's ``qcow2_vm_state_offset``)."""
    return l1_entries_for(img.size, img.cb, img.extl2) << (img.cb + img.l2_bits)


def _write_vmstate(img: Qcow2Writer, chunks: Sequence[bytes | memoryview]) -> int:
    bufs = as_byte_views([memoryview(c) for c in chunks if len(c)])
    total = sum(b.nbytes for b in bufs)
    start = vm_state_offset(img)
    need = l1_entries_for(start + total, img.cb, img.extl2)
    if need > MAX_L1_BYTES // 8:
        raise BlockError(f"a VM state of {total} bytes needs an L1 table above QEMU's "
                         "limit", img.filename)
    with img.lock:
        img._begin_write()
        if need > len(img.l1):
            img._grow_l1(need)
    img._write_views(start, bufs, total)
    return total


def _discard_vmstate(img: Qcow2Writer, size: int) -> None:
    """Drop the VM state from the active image (the snapshot keeps it)."""
    from . import extl2_write

    start = vm_state_offset(img)
    end = start + -(-size // img.cs) * img.cs
    with img.lock:
        img._begin_write()
        if img.extl2:
            extl2_write.zero_range(img, start, end, unmap=True)
        else:
            img._zero_clusters(start, end, unmap=True, discard=True)
        img._barrier()
        img.refs.write_back()
        img.f.sync()


def save_vm_snapshot(img: Qcow2Writer, name: str, chunks: Sequence[bytes | memoryview],
                     vm_clock_nsec: int, icount: int | None = None) -> Snapshot:
    """An internal snapshot of the disk with ``chunks`` as its VM state (a snapshot
    of that name is replaced, as QEMU's ``savevm`` does)."""
    from .snapshot_write import create_snapshot, delete_snapshot

    img._check_writable()
    for old in [s for s in img._snaps if s.name == name]:
        delete_snapshot(img, old.id)
    size = _write_vmstate(img, chunks)
    snap = create_snapshot(img, name, size, vm_clock_nsec, icount)
    _discard_vmstate(img, size)
    return snap


def read_vm_state(img: Qcow2Writer, key: str) -> mmap.mmap:
    """The VM state of snapshot ``key``, read through the snapshot's own L1 table
    (the disk is not reverted: ``loadvm`` checks the state first)."""
    snap = find_snapshot(img._snaps, key)
    if snap is None:
        raise BlockError(f"no snapshot with id or name {key!r}", img.filename)
    if not snap.vm_state_size:
        raise BlockError("This is a disk-only snapshot. Revert to it offline using "
                         "qemu-img", img.filename)
    buf = mmap.mmap(-1, snap.vm_state_size)     # pages come zeroed when first written
    with img.lock:
        l1 = img._read_l1(snap.l1_table_offset, snap.l1_size, f"L1 of snapshot {snap.id}")
        active = img.l1
        img.l1 = l1              # the reads map through the snapshot's tree
        try:
            img._read_views(vm_state_offset(img), [memoryview(buf)], len(buf))
        finally:
            img.l1 = active
    return buf
