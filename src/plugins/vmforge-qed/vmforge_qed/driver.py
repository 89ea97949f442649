"""The qed format driver: QEMU Enhanced Disk images, read and write.

The layout is in :mod:`vmforge_qed.layout`.  Writes follow QEMU's order: a
write into clusters not yet allocated appends the data clusters, then (when
the L2 table is missing) a new L2 table holding their entries, then the L1
entry; so the same writes lay out the same file as QEMU.  Before the first
allocation the header gets the need-check flag; a flush (and so a clean close)
clears it.  A read-write open of an image that still has the flag (a crash)
checks it first, repairing what it can, as QEMU does.
"""

from __future__ import annotations

import os
from array import array
from collections import OrderedDict
from collections.abc import Iterator, Sequence

from vmforge.block.driver import (
    BlockError,
    BlockStatus,
    CheckResult,
    CorruptImageError,
    CreateOption,
    ImageInfo,
    UnsupportedOperation,
)
from vmforge.block.fileio import padded, pwritev_full
from vmforge.block.mapped import (
    STORED,
    UNALLOCATED,
    ZEROS,
    MappedImage,
    Run,
    entry_runs,
    open_image_file,
)
from vmforge_qed import check as _check
from vmforge_qed.layout import (
    AT_BACKING,
    AT_CLUSTER,
    AT_FEATURES,
    AT_HEADER_SIZE,
    AT_IMAGE_SIZE,
    AT_L1,
    AT_TABLE,
    DEFAULT_CLUSTER,
    DEFAULT_TABLE,
    F_BACKING_FILE,
    F_BACKING_NO_PROBE,
    F_NEED_CHECK,
    HEADER_SIZE,
    KNOWN_FEATURES,
    MAGIC,
    MAX_BACKING_NAME,
    MAX_CLUSTER,
    MAX_TABLE,
    MIN_CLUSTER,
    MIN_TABLE,
    SECTOR,
    ZERO_CLUSTER,
    Header,
    is_pow2_in,
    le64,
    le64_bytes,
    max_image_size,
)
from vmforge_qed.probe import probe as _probe

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Self

_L2_CACHE = 16
_DATA = BlockStatus.DATA | BlockStatus.ALLOCATED
_ZERO = BlockStatus.ZERO | BlockStatus.ALLOCATED
_NONE = BlockStatus(0)


def _fmt_is_raw(fmt: str | None) -> bool:
    return fmt == "raw"


class Qed(MappedImage):
    """A QED image."""

    format_name = "qed"
    locked_reads = True
    plain_data = True
    supports_backing = True
    granularity = DEFAULT_CLUSTER
    create_options = {
        "backing_file": CreateOption("backing_file", str, None, "file name of a base image"),
        "backing_fmt": CreateOption(
            "backing_fmt", str, None,
            "format of the base image (qed records only raw: other formats are probed)"),
        "cluster_size": CreateOption("cluster_size", int, DEFAULT_CLUSTER,
                                     "cluster size in bytes (a power of 2, 4K to 64M)"),
        "table_size": CreateOption("table_size", int, DEFAULT_TABLE,
                                   "L1/L2 table size in clusters (a power of 2, 1 to 16)"),
    }

    def __init__(self, filename: str, readonly: bool, fd: int, header: Header,
                 backing: str | None) -> None:
        super().__init__(filename, readonly, fd)
        self.header = header
        self._backing = backing
        self.cluster_size = header.cluster_size
        self.granularity = header.cluster_size  # type: ignore[misc]
        self.entries = header.table_entries
        self.l1 = array("Q")
        self._l2_cache: OrderedDict[int, array[int]] = OrderedDict()
        #: a check found corruptions it could not repair: flushes keep the need-check flag
        self.keep_need_check = False
        #: where the next cluster goes: the file's length rounded down to a cluster
        self.file_end = os.fstat(fd).st_size // self.cluster_size * self.cluster_size

    # -- class level ---------------------------------------------------------------------

    @classmethod
    def probe(cls, header: bytes, filename: str) -> int:
        return _probe(header, filename)

    @classmethod
    def create(cls, path: str, size: int, **options: Any) -> None:
        opts = cls.parse_create_options(options)
        cs, ts = opts["cluster_size"], opts["table_size"]
        if not is_pow2_in(cs, MIN_CLUSTER, MAX_CLUSTER):
            raise BlockError(f"QED cluster size {cs} must be a power of 2 within "
                             f"[{MIN_CLUSTER}, {MAX_CLUSTER}]", path)
        if not is_pow2_in(ts, MIN_TABLE, MAX_TABLE):
            raise BlockError(f"QED table size {ts} must be a power of 2 within "
                             f"[{MIN_TABLE}, {MAX_TABLE}]", path)
        size = -(-size // SECTOR) * SECTOR
        if size > max_image_size(cs, ts):
            raise BlockError(f"QED image size {size} is larger than "
                             f"{max_image_size(cs, ts)} bytes with these cluster and "
                             "table sizes", path)
        name = (opts["backing_file"] or "").encode()
        features = 0
        if name:
            features = F_BACKING_FILE
            if _fmt_is_raw(opts["backing_fmt"]):
                features |= F_BACKING_NO_PROBE
            if HEADER_SIZE + len(name) > cs or len(name) > MAX_BACKING_NAME:
                raise BlockError(f"backing file name of {len(name)} bytes does not fit in "
                                 "the header cluster", path)
        header = Header(cs, ts, 1, features, 0, 0, cs, size, HEADER_SIZE if name else 0,
                        len(name))
        try:
            with open(path, "wb") as f:
                f.write(header.pack() + name)
                f.truncate(cs + header.table_bytes)   # the L1 table: zeros
        except OSError as exc:
            raise BlockError(f"cannot create: {exc.strerror}", path) from exc

    @classmethod
    def open(cls, path: str, *, readonly: bool = True, **options: Any) -> Self:
        with open_image_file(path, readonly) as fd:
            file_size = os.fstat(fd).st_size
            header, backing = cls._read_header(fd, path, file_size)
            drv = cls(path, readonly, fd, header, backing)
            drv._read_l1()
            if not readonly:
                drv._open_for_write(bool(options.get("for_check")))
            return drv

    @staticmethod
    def _read_header(fd: int, path: str, file_size: int) -> tuple[Header, str | None]:
        raw = os.pread(fd, HEADER_SIZE, 0)
        if raw[:4] != MAGIC:
            raise BlockError("image not in QED format (bad magic)", path)
        if len(raw) < HEADER_SIZE:
            raise CorruptImageError(f"header truncated to {len(raw)} bytes", path, 0,
                                    "header")
        h = Header.unpack(raw)
        if h.features & ~KNOWN_FEATURES:
            raise BlockError(f"QED image uses unsupported feature bits "
                             f"{h.features & ~KNOWN_FEATURES:#x}", path)
        if not is_pow2_in(h.cluster_size, MIN_CLUSTER, MAX_CLUSTER):
            raise CorruptImageError(f"cluster size {h.cluster_size} is not a power of 2 "
                                    f"within [{MIN_CLUSTER}, {MAX_CLUSTER}]", path,
                                    AT_CLUSTER, "header")
        if not is_pow2_in(h.table_size, MIN_TABLE, MAX_TABLE):
            raise CorruptImageError(f"table size {h.table_size} is not a power of 2 within "
                                    f"[{MIN_TABLE}, {MAX_TABLE}]", path, AT_TABLE, "header")
        if h.header_clusters < 1 or h.header_bytes > max(file_size, h.cluster_size):
            raise CorruptImageError(f"header size of {h.header_clusters} clusters is zero "
                                    "or larger than the file", path, AT_HEADER_SIZE,
                                    "header")
        limit = max_image_size(h.cluster_size, h.table_size)
        if h.image_size % SECTOR or h.image_size > limit:
            raise CorruptImageError(f"image size {h.image_size} is not a multiple of "
                                    f"{SECTOR} or larger than {limit}", path, AT_IMAGE_SIZE,
                                    "header")
        end = file_size // h.cluster_size * h.cluster_size
        if (h.l1_offset % h.cluster_size or h.l1_offset < h.header_bytes
                or h.l1_offset + h.table_bytes > end):
            raise CorruptImageError(f"L1 table at {h.l1_offset:#x} is unaligned, inside the "
                                    "header or past the end of the file", path, AT_L1,
                                    "header")
        backing = None
        if h.features & F_BACKING_FILE:
            if (h.backing_offset + h.backing_size > h.header_bytes
                    or h.backing_size > MAX_BACKING_NAME):
                raise CorruptImageError(f"backing file name of {h.backing_size} bytes at "
                                        f"{h.backing_offset:#x} is outside the header",
                                        path, AT_BACKING, "header")
            try:
                backing = os.pread(fd, h.backing_size, h.backing_offset).decode()
            except UnicodeDecodeError:
                raise CorruptImageError("backing file name is not UTF-8", path,
                                        h.backing_offset, "header") from None
            if len(backing.encode()) != h.backing_size or "\0" in backing:
                raise CorruptImageError("backing file name is truncated or holds a NUL",
                                        path, h.backing_offset, "header")
        elif h.features & F_BACKING_NO_PROBE:
            raise CorruptImageError("backing format flag without a backing file", path,
                                    AT_FEATURES, "header")
        return h, backing or None

    def _read_l1(self) -> None:
        h = self.header
        raw = os.pread(self.fd, h.table_bytes, h.l1_offset)
        if len(raw) != h.table_bytes:
            raise CorruptImageError("L1 table truncated", self.filename, h.l1_offset,
                                    "L1 table")
        self.l1 = le64(raw)

    def _open_for_write(self, for_check: bool) -> None:
        h = self.header
        if h.autoclear_features:   # unknown autoclear bits are knocked out (QEMU)
            h.autoclear_features = 0
            self._write_header()
        if h.features & F_NEED_CHECK and not for_check:
            # not closed cleanly: check and repair before writing anything (QEMU)
            self.check(repair="all")

    # -- the image -----------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self.header.image_size

    @property
    def backing_filename(self) -> str | None:
        return self._backing

    @property
    def backing_format(self) -> str | None:
        return "raw" if self.header.features & F_BACKING_NO_PROBE else None

    @property
    def needs_check(self) -> bool:
        """The need-check flag is set (the image was not closed cleanly)."""
        return bool(self.header.features & F_NEED_CHECK)

    def _write_header(self) -> None:
        os.pwrite(self.fd, self.header.pack(), 0)

    def _mark_dirty(self) -> None:
        """Set the need-check flag before the first metadata change (QEMU's order)."""
        if not self.header.features & F_NEED_CHECK:
            self.header.features |= F_NEED_CHECK
            self._write_header()

    def table_ok(self, offset: int) -> bool:
        """A table offset is aligned, past the header and inside the file."""
        h = self.header
        return (offset % h.cluster_size == 0 and offset >= h.header_bytes
                and offset + h.table_bytes <= self.file_end)

    def cluster_ok(self, offset: int) -> bool:
        """A data cluster offset is aligned, past the header and inside the file."""
        h = self.header
        return (offset % h.cluster_size == 0 and h.header_bytes <= offset < self.file_end)

    def read_table(self, offset: int) -> array[int]:
        table = le64(os.pread(self.fd, self.header.table_bytes, offset))
        if len(table) != self.entries:
            raise CorruptImageError("L2 table truncated", self.filename, offset, "L2 table")
        return table

    def _l2(self, l1_index: int) -> array[int] | None:
        """The L2 table of an L1 entry (None: not allocated), checked and cached."""
        at = self.l1[l1_index]
        if not at:
            return None
        table = self._l2_cache.get(at)
        if table is not None:
            self._l2_cache.move_to_end(at)
            return table
        if not self.table_ok(at):
            raise CorruptImageError(f"L2 table at {at:#x} is unaligned, inside the header or "
                                    "past the end of the file", self.filename,
                                    self.header.l1_offset + 8 * l1_index, "L1 table")
        table = self.read_table(at)
        self._l2_cache[at] = table
        if len(self._l2_cache) > _L2_CACHE:
            self._l2_cache.popitem(last=False)
        return table

    def forget_tables(self) -> None:
        """Drop cached L2 tables (after a repair rewrote them)."""
        self._l2_cache.clear()

    def _entry(self, cluster: int) -> int:
        l1_index, l2_index = divmod(cluster, self.entries)
        table = self._l2(l1_index)
        if table is None:
            return 0
        entry = table[l2_index]
        if entry > ZERO_CLUSTER and not self.cluster_ok(entry):
            raise CorruptImageError(f"cluster {cluster} at {entry:#x} is unaligned, inside "
                                    "the header or past the end of the file", self.filename,
                                    self.l1[l1_index] + 8 * l2_index, "L2 table")
        return entry

    def _cluster_status(self, i: int) -> tuple[BlockStatus, int | None]:
        entry = self._entry(i)
        if entry == 0:
            return _NONE, None
        if entry == ZERO_CLUSTER:
            return _ZERO, None
        return _DATA, entry

    def pwritev(self, offset: int, buffers: Sequence[memoryview]) -> None:
        """Writes in place, or runs of new clusters inside one L2 table (as QEMU)."""
        self._check_writable()
        views = self._checked_views(offset, buffers)
        data = views[0] if len(views) == 1 else memoryview(b"".join(views))
        with self._lock:
            self._write(offset, data)

    def _write(self, offset: int, data: memoryview) -> None:
        cs, total, pos = self.cluster_size, data.nbytes, 0
        while pos < total:
            i, within = divmod(offset + pos, cs)
            entry = self._entry(i)
            if entry > ZERO_CLUSTER:                    # allocated: in place
                n = min(cs - within, total - pos)
                pwritev_full(self.fd, entry + within, [data[pos:pos + n]])
                pos += n
                continue
            # a run of clusters to allocate, inside one L2 table (as QEMU)
            last = min((offset + total - 1) // cs, (i // self.entries + 1) * self.entries - 1)
            j = i + 1
            while j <= last and self._entry(j) <= ZERO_CLUSTER:
                j += 1
            n = min((j - i) * cs - within, total - pos)
            # zeros around the data
            self._allocate_run(i, j - i, padded((j - i) * cs, within, data[pos:pos + n]))
            pos += n

    def _allocate_run(self, first: int, count: int, block: list[memoryview] | None) -> None:
        """Point ``count`` clusters from ``first`` (one L2 table) at new clusters
        holding ``block`` (their bytes, as buffers to write one after the other), or
        (``block`` None) make them zero clusters."""
        cs = self.cluster_size
        self._mark_dirty()
        if block is None:
            entries = array("Q", [ZERO_CLUSTER] * count)
        else:
            host = self.file_end
            pwritev_full(self.fd, host, block)
            self.file_end = host + count * cs
            entries = array("Q", range(host, host + count * cs, cs))
        self.set_entries(first, entries)

    def set_entries(self, first: int, entries: array[int]) -> None:
        """Write L2 entries for clusters from ``first`` (inside one L2 table),
        appending the table (then its L1 entry) when it is missing."""
        l1_index, l2_index = divmod(first, self.entries)
        table = self._l2(l1_index)
        if table is None:
            table = array("Q", bytes(self.header.table_bytes))
            table[l2_index:l2_index + len(entries)] = entries
            at = self.file_end
            pwritev_full(self.fd, at, [memoryview(le64_bytes(table))])
            self.file_end = at + self.header.table_bytes
            self.set_l1(l1_index, at)
            self._l2_cache[at] = table
            return
        table[l2_index:l2_index + len(entries)] = entries
        pwritev_full(self.fd, self.l1[l1_index] + 8 * l2_index,
                     [memoryview(le64_bytes(entries))])

    def set_l1(self, l1_index: int, value: int) -> None:
        self.l1[l1_index] = value
        os.pwrite(self.fd, le64_bytes(array("Q", [value])),
                  self.header.l1_offset + 8 * l1_index)

    def write_zeroes(self, offset: int, length: int, may_unmap: bool = False) -> None:
        self._check_writable()
        self._check_range(offset, length)
        cs = self.cluster_size
        zeros = memoryview(bytes(min(length, cs)))
        with self._lock:
            run: list[int] = []   # consecutive unallocated clusters to mark zero
            for i, within, n in self._pieces(offset, length):
                entry = self._entry(i)
                whole = within == 0 and (n == cs or i * cs + n == self.size)
                if entry > ZERO_CLUSTER:
                    pwritev_full(self.fd, entry + within, [zeros[:n]])
                elif entry == 0 and self._backing:
                    if not whole:
                        self._write(i * cs + within, zeros[:n])
                        continue
                    if run and (run[-1] + 1 != i or i % self.entries == 0):
                        self._allocate_run(run[0], len(run), None)
                        run = []
                    run.append(i)
                # a zero cluster, or unallocated with no backing file: reads zeros already
            if run:
                self._allocate_run(run[0], len(run), None)

    def _status_runs(self, offset: int, length: int) -> Iterator[Run]:
        """Runs of clusters alike (unallocated, zero, or data one after the other in
        the file), an L2 table's entries checked at a time; a missing L2 table's
        whole range at once.  (Reads walk these too: per-cluster lookups cost more
        than the copy's syscalls.)"""
        yield from self._runs_by_table(offset, length, self.cluster_size * self.entries)

    def _table_runs(self, pos: int, stop: int) -> list[Run]:
        """:meth:`_status_runs` of ``[pos, stop)``, which one L2 table maps."""
        cs, ne = self.cluster_size, self.entries
        l1_index = pos // (cs * ne)
        table = self._l2(l1_index)
        if table is None:
            return [(pos, stop - pos, _NONE, None)]
        low, high = self.header.header_bytes, self.file_end

        def kind(i: int, entry: int) -> int:
            if entry <= ZERO_CLUSTER:
                return ZEROS if entry else UNALLOCATED
            if entry % cs or not low <= entry < high:
                raise CorruptImageError(
                    f"cluster {i} at {entry:#x} is unaligned, inside the header or "
                    "past the end of the file", self.filename,
                    self.l1[l1_index] + 8 * (i % ne), "L2 table")
            return STORED

        first = pos // cs
        # (a stored entry's successor is aligned and past the header too: only the
        # file's end bounds it)
        return entry_runs(table[first % ne:(stop - 1) // cs % ne + 1], first, pos, stop, cs,
                          kind, cs, stored_below=high)

    def truncate(self, size: int) -> None:
        """Grow (new clusters read as zeros, marked zero over a backing file) or
        shrink (clusters past the end are dropped and their space reclaimed)."""
        self._check_writable()
        h, cs = self.header, self.cluster_size
        if size < 0 or size % SECTOR or size > max_image_size(cs, h.table_size):
            raise BlockError(f"QED image size {size} is not a multiple of {SECTOR} or "
                             f"larger than {max_image_size(cs, h.table_size)}", self.filename)
        with self._lock:
            old = h.image_size
            if size > old and self._backing and old % cs:
                if self._entry(old // cs) == 0:
                    raise UnsupportedOperation(
                        "cannot grow an image with a backing file from a size that is not "
                        "a multiple of the cluster size when its last cluster is not "
                        "allocated", self.filename)
            self._mark_dirty()
            if size < old:
                _check.drop_clusters_from(self, -(-size // cs))
            edge = min(old, size)
            if edge % cs and size != old:   # past the smaller size, the cluster reads zeros
                entry = self._entry(edge // cs)
                if entry > ZERO_CLUSTER:
                    tail = cs - edge % cs
                    pwritev_full(self.fd, entry + edge % cs, [memoryview(bytes(tail))])
            h.image_size = size
            self._write_header()
            if size > old and self._backing:
                first, stop = -(-old // cs), -(-size // cs)
                while first < stop:
                    n = min(stop, (first // self.entries + 1) * self.entries) - first
                    self._allocate_run(first, n, None)
                    first += n
            if size < old:
                _check.reclaim(self)

    def check(self, repair: str | None = None) -> CheckResult:
        with self._lock:
            return _check.check(self, repair)

    def change_backing_file(self, filename: str | None, fmt: str | None) -> None:
        self._check_writable()
        h = self.header
        name = (filename or "").encode()
        if HEADER_SIZE + len(name) > h.header_bytes or len(name) > MAX_BACKING_NAME:
            raise UnsupportedOperation(f"no room for a backing file name of {len(name)} "
                                       "bytes in the header", self.filename)
        with self._lock:
            os.pwrite(self.fd, name, HEADER_SIZE)
            h.features &= ~(F_BACKING_FILE | F_BACKING_NO_PROBE)
            if name:
                h.features |= F_BACKING_FILE | (F_BACKING_NO_PROBE if _fmt_is_raw(fmt) else 0)
            h.backing_offset, h.backing_size = (HEADER_SIZE, len(name)) if name else (0, 0)
            self._write_header()
            self._backing = filename or None

    def flush(self) -> None:
        if self.readonly or self.closed:
            return
        with self._lock:
            try:
                if self.sync:
                    os.fsync(self.fd)
                if self.header.features & F_NEED_CHECK and not self.keep_need_check:
                    # metadata is written through: the image is consistent again
                    self.header.features &= ~F_NEED_CHECK
                    self._write_header()
                    if self.sync:
                        os.fsync(self.fd)
            except OSError as exc:
                raise BlockError(f"flush failed: {exc.strerror}", self.filename) from exc

    def info(self) -> ImageInfo:
        return self._info(cluster_size=self.cluster_size, backing_filename=self._backing,
                          backing_format=self.backing_format, dirty=self.needs_check)
