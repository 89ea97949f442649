"""The QED on-disk layout: the header, its limits, little-endian tables.

As QEMU's ``docs/interop/qed_spec.txt`` and ``block/qed.h`` describe it (all
integers little-endian)::

    0       header, 64 bytes: magic "QED\\0", cluster size, table size (in
            clusters, for L1 and L2 tables alike), header size (in clusters),
            features, compat features, autoclear features, L1 table offset,
            image size, backing file name offset and size (from the start of
            the file, inside the header clusters)
    ...     the backing file name (qemu-img puts it right after the header)
    L1      the L1 table, ``table_size`` clusters (qemu-img: at one cluster)
    ...     L2 tables (``table_size`` clusters each) and data clusters,
            appended at the end of the file, cluster-aligned

A table entry is the file offset of an L2 table (L1) or of a data cluster
(L2); 0 means not allocated (the backing file, or zeros), and an L2 entry of 1
is a zero cluster (reads as zeros whatever the backing file holds).
"""

from __future__ import annotations

import struct
import sys
from array import array

from vmforge.record import Record
from vmforge_qed.probe import MAGIC

F_BACKING_FILE = 0x01        #: the image has a backing file
F_NEED_CHECK = 0x02          #: not closed cleanly: check before writing
F_BACKING_NO_PROBE = 0x04    #: the backing file is raw (do not probe it)
KNOWN_FEATURES = F_BACKING_FILE | F_NEED_CHECK | F_BACKING_NO_PROBE
MIN_CLUSTER = 4096
MAX_CLUSTER = 64 << 20
MIN_TABLE = 1
MAX_TABLE = 16
DEFAULT_CLUSTER = 65536
DEFAULT_TABLE = 4
ZERO_CLUSTER = 1
SECTOR = 512
#: QEMU keeps the backing file name in a PATH_MAX buffer
MAX_BACKING_NAME = 4095
# magic, cluster size, table size, header size, features, compat features,
# autoclear features, L1 table offset, image size, backing name offset, size
HEADER = struct.Struct("<4sIIIQQQQQII")
HEADER_SIZE = HEADER.size   # 64

#: byte offsets of header fields, for error messages
AT_CLUSTER, AT_TABLE, AT_HEADER_SIZE, AT_FEATURES = 4, 8, 12, 16
AT_AUTOCLEAR, AT_L1, AT_IMAGE_SIZE, AT_BACKING = 32, 40, 48, 56


def is_pow2_in(n: int, lo: int, hi: int) -> bool:
    return lo <= n <= hi and n & (n - 1) == 0


def max_image_size(cluster_size: int, table_size: int) -> int:
    """The largest virtual size an L1 and its L2 tables can map."""
    entries = cluster_size * table_size // 8
    return entries * entries * cluster_size


def le64(raw: bytes) -> array[int]:
    table = array("Q", raw[:len(raw) // 8 * 8])
    if sys.byteorder == "big":
        table.byteswap()
    return table


def le64_bytes(values: array[int]) -> bytes:
    if sys.byteorder == "big":
        values = array("Q", values)
        values.byteswap()
    return values.tobytes()


class Header(Record):
    """The header's fields, host-endian (a record, as :mod:`vmforge.record` explains)."""

    __slots__ = __match_args__ = (
        "cluster_size", "table_size", "header_clusters", "features", "compat_features",
        "autoclear_features", "l1_offset", "image_size", "backing_offset", "backing_size")
    cluster_size: int
    table_size: int
    header_clusters: int
    features: int
    compat_features: int
    autoclear_features: int
    l1_offset: int
    image_size: int
    backing_offset: int
    backing_size: int

    def __init__(self, cluster_size: int, table_size: int, header_clusters: int,
                 features: int, compat_features: int, autoclear_features: int,
                 l1_offset: int, image_size: int, backing_offset: int,
                 backing_size: int) -> None:
        self.cluster_size = cluster_size
        self.table_size = table_size
        self.header_clusters = header_clusters
        self.features = features
        self.compat_features = compat_features
        self.autoclear_features = autoclear_features
        self.l1_offset = l1_offset
        self.image_size = image_size
        self.backing_offset = backing_offset
        self.backing_size = backing_size

    @classmethod
    def unpack(cls, raw: bytes) -> Header:
        return cls(*HEADER.unpack(raw[:HEADER_SIZE])[1:])

    def pack(self) -> bytes:
        return HEADER.pack(MAGIC, self.cluster_size, self.table_size, self.header_clusters,
                           self.features, self.compat_features, self.autoclear_features,
                           self.l1_offset, self.image_size, self.backing_offset,
                           self.backing_size)

    @property
    def header_bytes(self) -> int:
        return self.header_clusters * self.cluster_size

    @property
    def table_bytes(self) -> int:
        return self.table_size * self.cluster_size

    @property
    def table_entries(self) -> int:
        return self.table_bytes // 8
