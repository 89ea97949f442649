"""The qcow2 header and its extensions: parse (validating), serialize.

Layout follows QEMU's ``docs/interop/qcow2.txt``.  Everything that parses
bytes from the file checks bounds first and raises
:class:`~vmforge.block.CorruptImageError` naming the field and offset.
"""

from __future__ import annotations

import struct

from vmforge.block import BlockError, CorruptImageError
from vmforge.record import Record

from .probe import MAGIC

MIN_CLUSTER_BITS = 9
MAX_CLUSTER_BITS = 21           # QEMU's implementation limit (2 MiB)
MAX_L1_BYTES = 32 << 20         # QEMU: QCOW_MAX_L1_SIZE
MAX_REFTABLE_BYTES = 8 << 20    # QEMU: QCOW_MAX_REFTABLE_SIZE
MAX_BACKING_NAME = 1023
MAX_SNAPSHOTS = 65536
MAX_HOST_OFFSET = 1 << 56       # L2 entries hold bits 9..55

# incompatible feature bits
INCOMPAT_DIRTY = 1 << 0
INCOMPAT_CORRUPT = 1 << 1
INCOMPAT_DATA_FILE = 1 << 2
INCOMPAT_COMPRESSION = 1 << 3
INCOMPAT_EXTL2 = 1 << 4
#: bits we understand (compression type: known, but only zlib is implemented)
INCOMPAT_KNOWN = (INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_COMPRESSION
                  | INCOMPAT_EXTL2 | INCOMPAT_DATA_FILE)
# compatible feature bits
COMPAT_LAZY_REFCOUNTS = 1 << 0
# autoclear bits
AUTOCLEAR_BITMAPS = 1 << 0
AUTOCLEAR_DATA_FILE_RAW = 1 << 1

# header extension types
EXT_END = 0x00000000
EXT_BACKING_FORMAT = 0xE2792ACA
EXT_FEATURE_TABLE = 0x6803F857
EXT_BITMAPS = 0x23852875
EXT_CRYPTO = 0x0537BE77
EXT_DATA_FILE = 0x44415441

V2_HEADER_LEN = 72
V3_HEADER_LEN = 104
HEADER_LEN_WITH_COMPRESSION = 112

#: QEMU's own feature name table (what ``qemu-img create`` writes)
FEATURE_NAMES: tuple[tuple[int, int, str], ...] = (
    (0, 0, "dirty bit"),
    (0, 1, "corrupt bit"),
    (0, 2, "external data file"),
    (0, 3, "compression type"),
    (0, 4, "extended L2 entries"),
    (1, 0, "lazy refcounts"),
    (2, 0, "bitmaps"),
    (2, 1, "raw external data"),
)

_V2 = struct.Struct(">4sIQIIQIIQQIIQ")
_V3 = struct.Struct(">QQQII")
assert _V2.size == V2_HEADER_LEN and _V2.size + _V3.size == V3_HEADER_LEN

# byte offsets of fields that are updated in place
OFF_SIZE = 24
OFF_L1_SIZE = 36                # l1_size (4) and l1_table_offset (8) are adjacent
OFF_L1_TABLE = 40               # l1_table_offset (8), then OFF_REFTABLE's two fields
OFF_REFTABLE = 48               # refcount_table_offset (8) and _clusters (4) adjacent
OFF_SNAPSHOTS = 60              # nb_snapshots (4) and snapshots_offset (8) adjacent
OFF_INCOMPAT = 72
OFF_COMPAT = 80
OFF_AUTOCLEAR = 88


class Extension(Record):
    """A header extension as stored (unknown ones are kept verbatim; a record, as
    :mod:`vmforge.record` explains: no dataclass on ``vmforge img``'s path)."""

    __slots__ = __match_args__ = ("type", "data")
    type: int
    data: bytes

    def __init__(self, type: int, data: bytes) -> None:
        self.type = type
        self.data = data

    def pack(self) -> bytes:
        pad = -len(self.data) % 8
        return struct.pack(">II", self.type, len(self.data)) + self.data + bytes(pad)


class Header(Record):
    """The fields of a qcow2 header, plus extensions and backing name (a record)."""

    __slots__ = __match_args__ = (
        "version", "backing_file_offset", "backing_file_size", "cluster_bits", "size",
        "crypt_method", "l1_size", "l1_table_offset", "refcount_table_offset",
        "refcount_table_clusters", "nb_snapshots", "snapshots_offset",
        "incompatible_features", "compatible_features", "autoclear_features",
        "refcount_order", "header_length", "compression_type", "extra_header",
        "extensions", "backing_file")
    version: int
    backing_file_offset: int
    backing_file_size: int
    cluster_bits: int
    size: int
    crypt_method: int
    l1_size: int
    l1_table_offset: int
    refcount_table_offset: int
    refcount_table_clusters: int
    nb_snapshots: int
    snapshots_offset: int
    incompatible_features: int
    compatible_features: int
    autoclear_features: int
    refcount_order: int
    header_length: int
    compression_type: int
    #: bytes of the header beyond the fields we know (v3 only), kept verbatim
    extra_header: bytes
    extensions: list[Extension]
    backing_file: str | None

    def __init__(
            self, version: int = 3, backing_file_offset: int = 0,
            backing_file_size: int = 0, cluster_bits: int = 16, size: int = 0,
            crypt_method: int = 0, l1_size: int = 0, l1_table_offset: int = 0,
            refcount_table_offset: int = 0, refcount_table_clusters: int = 0,
            nb_snapshots: int = 0, snapshots_offset: int = 0,
            incompatible_features: int = 0, compatible_features: int = 0,
            autoclear_features: int = 0, refcount_order: int = 4,
            header_length: int = V3_HEADER_LEN, compression_type: int = 0,
            extra_header: bytes = b"", extensions: list[Extension] | None = None,
            backing_file: str | None = None) -> None:
        self.version = version
        self.backing_file_offset = backing_file_offset
        self.backing_file_size = backing_file_size
        self.cluster_bits = cluster_bits
        self.size = size
        self.crypt_method = crypt_method
        self.l1_size = l1_size
        self.l1_table_offset = l1_table_offset
        self.refcount_table_offset = refcount_table_offset
        self.refcount_table_clusters = refcount_table_clusters
        self.nb_snapshots = nb_snapshots
        self.snapshots_offset = snapshots_offset
        self.incompatible_features = incompatible_features
        self.compatible_features = compatible_features
        self.autoclear_features = autoclear_features
        self.refcount_order = refcount_order
        self.header_length = header_length
        self.compression_type = compression_type
        self.extra_header = extra_header
        self.extensions = [] if extensions is None else extensions
        self.backing_file = backing_file

    @property
    def cluster_size(self) -> int:
        return 1 << self.cluster_bits

    @property
    def refcount_bits(self) -> int:
        return 1 << self.refcount_order

    @property
    def data_file(self) -> str | None:
        """The external data file's name as recorded (None: none, or not named)."""
        e = self.ext(EXT_DATA_FILE)
        return e.data.decode("utf-8", "replace") if e is not None else None

    @property
    def extended_l2(self) -> bool:
        return bool(self.incompatible_features & INCOMPAT_EXTL2)

    def ext(self, kind: int) -> Extension | None:
        for e in self.extensions:
            if e.type == kind:
                return e
        return None

    @property
    def backing_format(self) -> str | None:
        e = self.ext(EXT_BACKING_FORMAT)
        return e.data.decode("utf-8", "replace") if e is not None else None

    def feature_names(self) -> dict[tuple[int, int], str]:
        """(type, bit) -> name from the image's feature name table (or QEMU's)."""
        out = {(t, b): n for t, b, n in FEATURE_NAMES}
        e = self.ext(EXT_FEATURE_TABLE)
        if e is not None:
            for i in range(0, len(e.data) - 47, 48):
                t, b = e.data[i], e.data[i + 1]
                name = e.data[i + 2:i + 48].split(b"\0", 1)[0].decode("utf-8", "replace")
                if name:
                    out[(t, b)] = name
        return out

    def pack(self) -> bytes:
        """Header, extensions, end marker, backing name: the bytes of cluster 0.

        Sets ``backing_file_offset``/``size`` to where the name lands.
        """
        exts = b"".join(e.pack() for e in self.extensions) + bytes(8)
        if self.version == 2:
            hlen = V2_HEADER_LEN
        else:
            hlen = max(self.header_length, V3_HEADER_LEN)
        name = (self.backing_file or "").encode()
        if name:
            self.backing_file_offset = hlen + len(exts)
            self.backing_file_size = len(name)
        else:
            self.backing_file_offset = self.backing_file_size = 0
        head = _V2.pack(MAGIC, self.version, self.backing_file_offset,
                        self.backing_file_size, self.cluster_bits, self.size,
                        self.crypt_method, self.l1_size, self.l1_table_offset,
                        self.refcount_table_offset, self.refcount_table_clusters,
                        self.nb_snapshots, self.snapshots_offset)
        if self.version >= 3:
            head += _V3.pack(self.incompatible_features, self.compatible_features,
                             self.autoclear_features, self.refcount_order, hlen)
            tail = bytearray(self.extra_header.ljust(hlen - V3_HEADER_LEN, b"\0"))
            if hlen > V3_HEADER_LEN:
                tail[0] = self.compression_type
            head += bytes(tail[:hlen - V3_HEADER_LEN])
        out = head + exts + name
        if len(out) > self.cluster_size:
            raise BlockError(f"header, extensions and backing file name need {len(out)} "
                             f"bytes, more than one cluster ({self.cluster_size})")
        return out


def _corrupt(msg: str, filename: str, offset: int, table: str = "header") -> CorruptImageError:
    return CorruptImageError(msg, filename, offset, table)


def describe_bits(mask: int, kind: int, names: dict[tuple[int, int], str]) -> str:
    """``"bit 5, bit 9 (foo)"`` for the set bits of ``mask``."""
    parts = []
    for bit in range(64):
        if mask >> bit & 1:
            name = names.get((kind, bit))
            parts.append(f"bit {bit} ({name})" if name else f"bit {bit}")
    return ", ".join(parts)


def parse_header(buf: bytes, filename: str, file_size: int) -> Header:
    """Parse and validate the header in ``buf`` (the start of the file).

    ``buf`` should hold at least the first cluster (or the whole file when it
    is smaller).  Checks everything that can be checked without reading tables.
    """
    if len(buf) < V2_HEADER_LEN:
        raise _corrupt(f"file is {len(buf)} bytes, too short for a qcow2 header",
                       filename, 0)
    (magic, version, bf_off, bf_size, cbits, size, crypt, l1_size, l1_off, rt_off,
     rt_clusters, nb_snap, snap_off) = _V2.unpack_from(buf, 0)
    if magic != MAGIC:
        raise BlockError("not a qcow2 image (bad magic)", filename)
    if version not in (2, 3):
        raise BlockError(f"qcow2 version {version} is not supported (only 2 and 3)",
                         filename)
    if not MIN_CLUSTER_BITS <= cbits <= MAX_CLUSTER_BITS:
        raise _corrupt(f"cluster_bits {cbits} is outside {MIN_CLUSTER_BITS}.."
                       f"{MAX_CLUSTER_BITS}", filename, 20)
    h = Header(version=version, backing_file_offset=bf_off, backing_file_size=bf_size,
               cluster_bits=cbits, size=size, crypt_method=crypt, l1_size=l1_size,
               l1_table_offset=l1_off, refcount_table_offset=rt_off,
               refcount_table_clusters=rt_clusters, nb_snapshots=nb_snap,
               snapshots_offset=snap_off)
    cs = h.cluster_size
    if version == 2:
        h.header_length = V2_HEADER_LEN
        h.refcount_order = 4
    else:
        if len(buf) < V3_HEADER_LEN:
            raise _corrupt("file too short for a version 3 header", filename, 0)
        (h.incompatible_features, h.compatible_features, h.autoclear_features,
         h.refcount_order, h.header_length) = _V3.unpack_from(buf, V2_HEADER_LEN)
        if h.header_length < V3_HEADER_LEN or h.header_length % 8:
            raise _corrupt(f"header_length {h.header_length} is below 104 or not a "
                           "multiple of 8", filename, 100)
        if h.header_length > cs or h.header_length > len(buf):
            raise _corrupt(f"header_length {h.header_length} exceeds the first cluster "
                           "or the file", filename, 100)
        h.extra_header = bytes(buf[V3_HEADER_LEN:h.header_length])
        if h.header_length > V3_HEADER_LEN:
            h.compression_type = buf[V3_HEADER_LEN]
        if h.refcount_order > 6:
            raise _corrupt(f"refcount_order {h.refcount_order} is above 6", filename, 96)
    if h.size >= 1 << 63:
        raise _corrupt(f"virtual size {h.size} is not below 2^63", filename, OFF_SIZE)
    h.extensions = _parse_extensions(buf, h, filename)
    names = h.feature_names()
    unknown = h.incompatible_features & ~INCOMPAT_KNOWN
    if unknown:
        raise BlockError("unsupported incompatible qcow2 feature(s): "
                         + describe_bits(unknown, 0, names), filename)
    if h.crypt_method:
        raise BlockError(f"encrypted qcow2 images (crypt_method {h.crypt_method}) are "
                         "not supported", filename)
    if h.ext(EXT_DATA_FILE) is not None and not h.incompatible_features & INCOMPAT_DATA_FILE:
        raise _corrupt("external data file name without the external data file bit",
                       filename, h.header_length, "header extensions")
    if bool(h.incompatible_features & INCOMPAT_COMPRESSION) != (h.compression_type != 0):
        raise _corrupt(f"compression type {h.compression_type} does not agree with "
                       "incompatible feature bit 3", filename, V3_HEADER_LEN)
    if h.compression_type == 1:
        from .compress import zstd_module
        if zstd_module() is None:
            raise BlockError("compression type 1 (zstd) needs the zstandard package "
                             "(pip install 'vmforge-qcow2[zstd]')", filename)
    elif h.compression_type != 0:
        raise BlockError(f"compression type {h.compression_type} is not supported "
                         "(0, zlib, and 1, zstd, are)", filename)
    # backing file name
    if bf_off:
        if bf_size > MAX_BACKING_NAME:
            raise _corrupt(f"backing file name length {bf_size} is above "
                           f"{MAX_BACKING_NAME}", filename, 16)
        if bf_off + bf_size > min(cs, len(buf)):
            raise _corrupt(f"backing file name ({bf_size} bytes at {bf_off:#x}) lies "
                           "outside the first cluster", filename, 8)
        h.backing_file = bytes(buf[bf_off:bf_off + bf_size]).decode("utf-8", "replace")
    # table placement (offsets and sizes; the contents are checked later)
    if l1_size > MAX_L1_BYTES // 8:
        raise _corrupt(f"L1 table has {l1_size} entries, above QEMU's limit of "
                       f"{MAX_L1_BYTES // 8}", filename, OFF_L1_SIZE, "header")
    if h.extended_l2 and cbits < 14:
        raise _corrupt(f"extended L2 entries need clusters of at least 16 KiB "
                       f"(cluster_bits {cbits})", filename, 20)
    need = l1_entries_for(h.size, cbits, h.extended_l2)
    if l1_size < need:
        raise _corrupt(f"L1 table has {l1_size} entries, the virtual size {h.size} "
                       f"needs {need}", filename, OFF_L1_SIZE)
    check_table(filename, "L1 table", l1_off, l1_size * 8, cs, file_size,
                allow_empty=l1_size == 0)
    if rt_clusters == 0 or rt_clusters * cs > MAX_REFTABLE_BYTES:
        raise _corrupt(f"refcount table of {rt_clusters} clusters is empty or above "
                       f"{MAX_REFTABLE_BYTES} bytes", filename, OFF_REFTABLE + 8)
    check_table(filename, "refcount table", rt_off, rt_clusters * cs, cs, file_size)
    if nb_snap > MAX_SNAPSHOTS:
        raise _corrupt(f"{nb_snap} snapshots, above the limit of {MAX_SNAPSHOTS}",
                       filename, OFF_SNAPSHOTS)
    if nb_snap:
        check_table(filename, "snapshot table", snap_off, nb_snap * 40, cs, file_size)
    overlap = _ranges_overlap([
        ("header", 0, cs),
        ("L1 table", l1_off, l1_size * 8),
        ("refcount table", rt_off, rt_clusters * cs),
    ])
    if overlap:
        raise _corrupt(overlap, filename, rt_off, "header")
    return h


def check_table(filename: str, table: str, offset: int, nbytes: int, cs: int,
                file_size: int, allow_empty: bool = False) -> None:
    """A table must be cluster-aligned, past the header, and inside the file."""
    if allow_empty and nbytes == 0:
        return
    if offset % cs or offset == 0:
        raise CorruptImageError(f"{table} offset {offset:#x} is zero or not cluster "
                                "aligned", filename, offset, table)
    if offset + nbytes > file_size:
        raise CorruptImageError(f"{table} ({nbytes} bytes at {offset:#x}) ends past the "
                                f"end of the file ({file_size} bytes)", filename, offset,
                                table)


def _ranges_overlap(ranges: list[tuple[str, int, int]]) -> str | None:
    live = [r for r in ranges if r[2] > 0]
    for i, (na, a, la) in enumerate(live):
        for nb, b, lb in live[i + 1:]:
            if a < b + lb and b < a + la:
                return f"{na} at {a:#x} overlaps {nb} at {b:#x}"
    return None


def _parse_extensions(buf: bytes, h: Header, filename: str) -> list[Extension]:
    out: list[Extension] = []
    pos = h.header_length
    end = min(h.cluster_size, len(buf))
    if h.backing_file_offset:
        end = min(end, h.backing_file_offset)
    seen: set[int] = set()
    while True:
        if pos >= end:  # no end marker: the area simply ends (as QEMU reads it)
            break
        if pos + 8 > end:
            raise _corrupt("header extensions run past the first cluster or into the "
                           "backing file name", filename, pos, "header extensions")
        kind, length = struct.unpack_from(">II", buf, pos)
        if kind == EXT_END:
            break
        if pos + 8 + length > end:
            raise _corrupt(f"header extension {kind:#x} of {length} bytes runs past the "
                           "first cluster", filename, pos, "header extensions")
        data = bytes(buf[pos + 8:pos + 8 + length])
        if kind in seen and kind in (EXT_BACKING_FORMAT, EXT_FEATURE_TABLE, EXT_DATA_FILE,
                                     EXT_BITMAPS, EXT_CRYPTO):
            raise _corrupt(f"header extension {kind:#x} appears twice", filename, pos,
                           "header extensions")
        seen.add(kind)
        out.append(Extension(kind, data))
        pos += 8 + length + (-length % 8)
    return out


def l1_entries_for(size: int, cluster_bits: int, extended_l2: bool = False) -> int:
    """L1 entries needed to map ``size`` bytes."""
    per_l2 = 1 << (2 * cluster_bits - 3 - extended_l2)
    return -(-size // per_l2)


def feature_table_extension() -> Extension:
    data = b"".join(struct.pack(">BB46s", t, b, n.encode()) for t, b, n in FEATURE_NAMES)
    return Extension(EXT_FEATURE_TABLE, data)
