"""Emptying a whole image as ``qemu-img commit`` leaves its top (QEMU 7.2's
``qcow2_make_empty`` and ``make_completely_empty`` of ``block/qcow2.c``).

Where it can, QEMU does not free cluster by cluster: it marks the image dirty,
writes a new empty refcount table in cluster 1, its one refcount block in
cluster 2 and an empty L1 table from cluster 3 on, points the header at them,
counts those clusters and the header's, marks the image clean and truncates the
file after the L1 table.  So can vmforge, with the same result byte for byte.
That needs a version 3 image (the dirty bit) with nothing else that holds
clusters: no internal snapshot, no persistent bitmap, no encryption, no
external data file, and an L1 table that fits one refcount block with the three
other clusters.  Otherwise the caller frees every cluster (discards them).
"""

from __future__ import annotations

import struct
from array import array

from .header import AUTOCLEAR_BITMAPS, EXT_BITMAPS, INCOMPAT_DIRTY, OFF_L1_TABLE
from .l2 import L2Cache
from .refcount import Refcounts

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .write import Qcow2Writer

#: the header's l1_table_offset (8 bytes), refcount_table_offset (8) and
#: refcount_table_clusters (4), one after the other from OFF_L1_TABLE
_TABLES = struct.Struct(">QQI")


def _l1_clusters(img: Qcow2Writer) -> int:
    return -(-img.h.l1_size * 8 // img.cs)


def can_empty_completely(img: Qcow2Writer) -> bool:
    """Whether :func:`empty_completely` may rewrite ``img`` (QEMU's conditions)."""
    h = img.h
    bitmaps = h.ext(EXT_BITMAPS) is not None and bool(h.autoclear_features & AUTOCLEAR_BITMAPS)
    return (h.version >= 3 and not img._snaps and not bitmaps and not h.crypt_method
            and img.data is img.f and 3 + _l1_clusters(img) <= img.refs.entries)


def empty_completely(img: Qcow2Writer) -> None:
    """Make ``img`` an image with no cluster allocated (see the module doc); the caller
    holds its lock, has begun a write and checked :func:`can_empty_completely`."""
    f, h, cs = img.f, img.h, img.cs
    l1_clusters = _l1_clusters(img)
    dirty_l2, dirty_l1, frees = img._pending()      # (all of it goes)
    dirty_l2.clear()
    dirty_l1.clear()
    frees.clear()
    img._set_incompat(h.incompatible_features | INCOMPAT_DIRTY)    # refcounts broken now
    f.sync()
    f.pwrite(img.l1_offset, bytes(l1_clusters * cs))
    f.pwrite(cs, bytes((2 + l1_clusters) * cs))
    img._write_header(OFF_L1_TABLE, _TABLES.pack(3 * cs, cs, 1))
    f.sync()
    f.pwrite(cs, struct.pack(">Q", 2 * cs))         # the first refcount block
    f.sync()
    refs = Refcounts(f, img.cb, h.refcount_order, cs, 1, img._write_header,
                     lazy=img.refs.lazy)
    block = bytearray(cs)
    for c in range(3 + l1_clusters):                # header, table, block, L1
        refs.codec.set(block, c, 1)
    f.pwrite(2 * cs, block)
    f.sync()
    h.l1_table_offset, h.refcount_table_offset, h.refcount_table_clusters = 3 * cs, cs, 1
    img.l1_offset = 3 * cs
    img.l1 = array("Q", bytes(8 * h.l1_size))
    img.l2cache = L2Cache(f, img.cb, img.l2cache.max_tables)
    img.refs = refs
    img._ccache = None
    img._prealloc_known = None
    img._free_byte_offset = 0
    img._set_incompat(h.incompatible_features & ~INCOMPAT_DIRTY)   # right again
    img._marked_dirty = False
    f.sync()
    f.truncate((3 + l1_clusters) * cs)
