"""Giving space back after a shrink: QEMU's ``qcow2_shrink_reftable`` and
``qcow2_get_last_cluster`` plus the file truncation of ``qcow2_co_truncate``.

After the clusters past the new end are freed, refcount blocks that count
nothing but themselves are dropped from the refcount table (the table keeps
its size and place), and the image file is cut after the last cluster still
in use, so ``qemu-img check`` finds no leaks and the file is as long as the
one ``qemu-img resize --shrink`` leaves.
"""

from __future__ import annotations

import struct

from .refcount import REFT_OFFSET_MASK

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .write import Qcow2Writer


def shrink_reftable(img: Qcow2Writer) -> None:
    """Drop the refcount blocks that count only themselves (QEMU's order: the
    table without them is written and synced, then they are freed)."""
    refs = img.refs
    refs.write_back()
    mask = refs.entries - 1
    unused: list[int] = []
    for bi in range(len(refs.table)):
        off = refs.block_offset(bi)
        if not off:
            continue
        blk = refs.load(bi)
        assert blk is not None
        own = off >> refs.cluster_bits
        if own >> refs.shift == bi:           # the block counts itself
            copy = bytearray(blk)
            refs.codec.set(copy, own & mask, 0)
            empty = not any(copy)
        else:
            empty = not any(blk)
        if empty:
            unused.append(bi)
    if not unused:
        return
    table = refs.table[:]
    for bi in unused:
        table[bi] = 0
    raw = struct.pack(f">{len(table)}Q", *table)
    img.f.pwrite(refs.table_offset, raw + bytes(refs.table_clusters * refs.cs - len(raw)))
    img.f.sync()
    for bi in unused:
        off = refs.table[bi] & REFT_OFFSET_MASK
        own = off >> refs.cluster_bits
        if own >> refs.shift != bi:          # counted by another (used) block
            refs.update(own, 1, -1)
            refs.hint = min(refs.hint, own)
        refs.cache.pop(bi, None)
        refs.dirty.discard(bi)
        refs.table[bi] = 0
    refs._blocks = None


def last_used_cluster(img: Qcow2Writer) -> int:
    """The last cluster of the file with a refcount above zero (-1: none)."""
    refs = img.refs
    c = -(-img.f.end >> refs.cluster_bits) - 1
    while c >= 0:
        bi = c >> refs.shift
        blk = refs.load(bi) if refs.block_offset(bi) else None
        if blk is None:                      # a whole range without a block: all free
            c = (bi << refs.shift) - 1
            continue
        i = c & (refs.entries - 1)
        while i >= 0 and refs.codec.get(blk, i) == 0:
            i -= 1
        if i >= 0:
            return (bi << refs.shift) + i
        c = (bi << refs.shift) - 1
    return -1


def give_back_space(img: Qcow2Writer) -> None:
    """After a shrink freed clusters: drop unused refcount blocks, cut the file."""
    shrink_reftable(img)
    refs = img.refs
    refs.write_back()
    end = (last_used_cluster(img) + 1) << refs.cluster_bits
    if end < img.f.end:
        img.f.sync()
        img.f.truncate(end)
        refs.alloc_end = min(refs.alloc_end, end >> refs.cluster_bits)
