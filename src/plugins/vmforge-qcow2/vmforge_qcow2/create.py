"""Creating images: header, L1 table, refcount structure, optional preallocation."""

from __future__ import annotations

import os
from array import array

from vmforge.block import BlockError

from .header import (
    AUTOCLEAR_DATA_FILE_RAW,
    COMPAT_LAZY_REFCOUNTS,
    EXT_BACKING_FORMAT,
    EXT_DATA_FILE,
    HEADER_LEN_WITH_COMPRESSION,
    INCOMPAT_COMPRESSION,
    INCOMPAT_DATA_FILE,
    INCOMPAT_EXTL2,
    MAX_CLUSTER_BITS,
    MAX_L1_BYTES,
    MIN_CLUSTER_BITS,
    V2_HEADER_LEN,
    Extension,
    Header,
    feature_table_extension,
    l1_entries_for,
)
from .l2 import OFLAG_COPIED, table_to_bytes
from .layout import plan_create, plan_preallocation

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .driver import Qcow2


def plan_header(size: int, opts: dict[str, Any], path: str) -> Header:
    """Validate create options and build the header (without table offsets)."""
    cs = opts["cluster_size"]
    if cs & (cs - 1) or not (1 << MIN_CLUSTER_BITS) <= cs <= (1 << MAX_CLUSTER_BITS):
        raise BlockError(f"cluster_size {cs} must be a power of two between 512 and 2M", path)
    compat = str(opts["compat"])
    version = {"0.10": 2, "v2": 2, "1.1": 3, "v3": 3}.get(compat)
    if version is None:
        raise BlockError(f"compat {compat!r} must be 0.10 or 1.1", path)
    rbits = opts["refcount_bits"]
    if rbits not in (1, 2, 4, 8, 16, 32, 64):
        raise BlockError(f"refcount_bits {rbits} must be a power of two up to 64", path)
    if version == 2 and rbits != 16:
        raise BlockError("compat=0.10 images have 16-bit refcounts only", path)
    if version == 2 and opts["lazy_refcounts"]:
        raise BlockError("lazy_refcounts needs compat=1.1", path)
    if size < 0 or size >= 1 << 63:
        raise BlockError(f"size {size} is out of range", path)
    cbits = cs.bit_length() - 1
    ext = bool(opts.get("extended_l2"))
    if ext and (version == 2 or cs < 16384):
        raise BlockError("extended_l2 needs compat=1.1 and clusters of at least 16 KiB", path)
    if l1_entries_for(size, cbits, ext) > MAX_L1_BYTES // 8:
        raise BlockError(f"size {size} is too large for {cs}-byte clusters (the L1 table "
                         "would exceed 32 MiB)", path)
    h = Header(version=version, cluster_bits=cbits, size=size,
               refcount_order=rbits.bit_length() - 1,
               header_length=HEADER_LEN_WITH_COMPRESSION if version == 3 else V2_HEADER_LEN)
    if opts["lazy_refcounts"]:
        h.compatible_features |= COMPAT_LAZY_REFCOUNTS
    if ext:
        h.incompatible_features |= INCOMPAT_EXTL2
    if opts.get("data_file"):
        if version == 2:
            raise BlockError("data_file needs compat=1.1", path)
        if opts.get("data_file_raw") and opts.get("backing_file"):
            raise BlockError("data_file_raw cannot be combined with a backing file", path)
        h.incompatible_features |= INCOMPAT_DATA_FILE
        h.extensions.append(Extension(EXT_DATA_FILE, opts["data_file"].encode()))
        if opts.get("data_file_raw"):
            h.autoclear_features |= AUTOCLEAR_DATA_FILE_RAW
    elif opts.get("data_file_raw"):
        raise BlockError("data_file_raw needs data_file", path)
    ctype = str(opts.get("compression_type") or "zlib")
    if ctype not in ("zlib", "zstd"):
        raise BlockError(f"compression_type {ctype!r} must be zlib or zstd", path)
    if ctype == "zstd":
        if version == 2:
            raise BlockError("compression_type=zstd needs compat=1.1", path)
        from .compress import zstd_module
        if zstd_module() is None:
            raise BlockError("compression_type=zstd needs the zstandard package", path)
        h.compression_type = 1
        h.incompatible_features |= INCOMPAT_COMPRESSION
    if opts.get("backing_file"):
        h.backing_file = opts["backing_file"]
        if opts.get("backing_fmt"):
            h.extensions.append(Extension(EXT_BACKING_FORMAT, opts["backing_fmt"].encode()))
    if version == 3 and cs > 4096:   # QEMU leaves it out of small clusters' headers
        h.extensions.append(feature_table_extension())
    return h


def write_new_image(path: str, h: Header, prealloc: str = "off") -> None:
    """Lay out header, L1 table and refcount structure in a new file, as qemu-img does,
    and preallocate (``metadata``, ``falloc``, ``full``) where QEMU would."""
    cs = h.cluster_size
    h.l1_size = l1_entries_for(h.size, h.cluster_bits, h.extended_l2)
    alloc, h.l1_table_offset = plan_create(h.cluster_bits, h.refcount_order, h.l1_size)
    plan = None
    if prealloc != "off":
        l2_bits = h.cluster_bits - 3 - h.extended_l2
        plan = plan_preallocation(alloc, h.size, l2_bits, h.extended_l2, prealloc)
    h.refcount_table_offset = alloc.table_offset << h.cluster_bits
    h.refcount_table_clusters = len(alloc.table) * 8 // cs
    cluster0 = h.pack()
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0),
                     0o644)
    except OSError as e:
        raise BlockError(f"cannot create: {e.strerror}", path) from e
    try:
        os.pwrite(fd, cluster0 + bytes(cs - len(cluster0)), 0)
        for woff, data in alloc.finish():
            os.pwrite(fd, data, woff)
        if plan is not None:
            _write_preallocation(fd, h, plan, prealloc)
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_preallocation(fd: int, h: Header,
                         plan: tuple[list[int], list[tuple[int, int, int]], int, int],
                         mode: str) -> None:
    cb, cs = h.cluster_bits, h.cluster_size
    l2s, tables, fill_start, fill_end = plan
    if fill_end > fill_start:
        _fill_fd(fd, fill_start << cb, (fill_end - fill_start) << cb, mode)
    for l2, data, n in tables:
        tbl = array("Q", bytes(cs))
        step = 2 if h.extended_l2 else 1    # QEMU leaves the subcluster bitmaps clear
        for i in range(n):
            tbl[step * i] = ((data + i) << cb) | OFLAG_COPIED
        os.pwrite(fd, table_to_bytes(tbl), l2 << cb)
    l1 = array("Q", [(c << cb) | OFLAG_COPIED for c in l2s]) + array("Q", bytes(
        8 * (h.l1_size - len(l2s))))
    os.pwrite(fd, table_to_bytes(l1), h.l1_table_offset)
    end = max((data + n for _, data, n in tables), default=0) << cb
    if end > os.fstat(fd).st_size:
        os.ftruncate(fd, end)


def _fill_fd(fd: int, off: int, n: int, mode: str) -> None:
    if mode == "falloc":
        try:
            os.posix_fallocate(fd, off, n)
            return
        except OSError:
            pass
    chunk = bytes(min(n, 1 << 20))
    pos = 0
    while pos < n:
        k = min(len(chunk), n - pos)
        os.pwrite(fd, chunk[:k], off + pos)
        pos += k


def preallocate(img: Qcow2, mode: str) -> None:
    """Allocate every L2 table and data cluster (``metadata``), and maybe the data."""
    cs, cb = img.cs, img.cb
    per_l2 = 1 << img.l2_bits
    nclusters = -(-img.size // cs)
    end = data_end = 0
    with img.lock:
        for l1i in range(len(img.l1)):
            first = l1i * per_l2
            n = min(per_l2, nclusters - first)
            if n <= 0:
                break
            l2off = img.refs.alloc(1)
            # data-file images keep guest cluster g at offset g of the data file
            data = first << cb if img.has_data_file else img.refs.alloc(n)
            tbl = array("Q", bytes(cs))
            for i in range(n):
                if img.extl2:
                    tbl[2 * i] = (data + (i << cb)) | OFLAG_COPIED
                    tbl[2 * i + 1] = 0xFFFFFFFF        # every subcluster allocated
                else:
                    tbl[i] = (data + (i << cb)) | OFLAG_COPIED
            if mode in ("falloc", "full"):
                _fill(img, data, n << cb, mode)
            img.l2cache.write_table(l2off, tbl)
            img._set_l1(l1i, l2off | OFLAG_COPIED)
            end = max(end, l2off + cs)
            data_end = max(data_end, data + (n << cb))
        if not img.has_data_file:
            end = max(end, data_end)
        if end > img.f.end:
            img.f.truncate(end)
        if img.has_data_file and data_end > img.data.end:
            img.data.truncate(data_end)


def _fill(img: Qcow2, off: int, n: int, mode: str) -> None:
    f = img.data
    _fill_fd(f.fd, off, n, mode)
    f.end = max(f.end, off + n)


def refcount_metadata_size(clusters: int, cluster_size: int, order: int) -> int:
    """Bytes of refcount table and blocks to cover ``clusters`` (and themselves)."""
    per_table = cluster_size // 8
    per_block = cluster_size * 8 >> order
    table = blocks = n = 0
    while True:
        last = n
        blocks = -(-(clusters + table + blocks) // per_block)
        table = -(-blocks // per_table)
        n = clusters + blocks + table
        if n == last:
            return (blocks + table) * cluster_size


def prealloc_size(size: int, cluster_bits: int, order: int, extended_l2: bool = False) -> int:
    """File size of a fully allocated image (QEMU's ``qcow2_calc_prealloc_size``)."""
    cs = 1 << cluster_bits
    l2e = 16 if extended_l2 else 8
    aligned = -(-size // cs) * cs
    meta = cs
    nl2e = aligned // cs
    nl2e = -(-nl2e // (cs // l2e)) * (cs // l2e)
    meta += nl2e * l2e
    nl1e = nl2e * l2e // cs
    nl1e = -(-nl1e // (cs // 8)) * (cs // 8)
    meta += nl1e * 8
    meta += refcount_metadata_size((meta + aligned) // cs, cs, order)
    return meta + aligned


def create_data_file(image: str, name: str, size: int) -> None:
    """Create (or resize) the raw external data file (a relative ``name`` is taken
    from the current directory, as QEMU does)."""
    try:
        with open(name, "ab") as fh:
            fh.truncate(size)
    except OSError as e:
        raise BlockError(f"cannot create the data file {name!r}: {e.strerror}", image) from e
