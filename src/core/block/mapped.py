"""Building blocks for file-backed disk formats: what most drivers would write alike.

- :func:`open_image_file`: the image's descriptor, opened as drivers open it
  and closed again when the rest of ``open`` fails;
- :class:`FileImage`: a driver over one file descriptor (``fd``, a lock,
  ``flush``, ``info``, ``close``, checked vectored ranges);
- :class:`MappedImage`: a format whose table maps each *cluster* of the disk
  (QEMU's word; a format may call it a block) to a place in the file, or to
  nothing: ``preadv``, ``pwritev``, ``write_zeroes`` and ``block_status`` from
  two methods the format writes, :meth:`~MappedImage._cluster_status` (what a
  cluster is) and :meth:`~MappedImage._allocate` (give one a place);
- :func:`split`, :func:`split_views`: a range cut at cluster boundaries;
- :func:`merge_extents`: ``block_status`` runs merged into :class:`Extent`\\ s;
- :func:`file_extents`: the data and holes of a plain file (raw, fixed VHD).

A driver may use any of them or none: they are conveniences over
:mod:`vmforge.block.driver`, not part of its contract.
"""

from __future__ import annotations

import errno
import os
from _thread import RLock

from vmforge.block.driver import BlockDriver, BlockError, BlockStatus, Extent, ImageInfo
from vmforge.block.fileio import fill_zero, preadv_full, pwritev_full

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence
    from typing import Any, ClassVar

__all__ = ["STORED", "UNALLOCATED", "ZEROS", "FileImage", "Gather", "MappedImage", "Run",
           "entry_runs", "file_extents", "merge_extents", "open_image_file", "pieces_of",
           "refine_by_file", "split", "split_views"]

#: ``(offset, length, status, host offset or None)``: a piece of ``block_status``
Run = tuple[int, int, BlockStatus, int | None]

_DATA = BlockStatus.DATA | BlockStatus.ALLOCATED
_ZERO = BlockStatus.ZERO | BlockStatus.ALLOCATED
_ZERO_OR_COMPRESSED = BlockStatus.ZERO | BlockStatus.COMPRESSED
# plain ints: IntFlag's operators cost microseconds per cluster
_ZERO_BIT = int(BlockStatus.ZERO)
_ALLOCATED_BIT = int(BlockStatus.ALLOCATED)
_COMPRESSED_BIT = int(BlockStatus.COMPRESSED)
_DATA_BIT = int(BlockStatus.DATA)
_DATA_NOT_COMPRESSED = _DATA_BIT | _COMPRESSED_BIT


def split(offset: int, length: int, unit: int) -> Iterator[tuple[int, int, int]]:
    """``(index, offset within, length)`` of each ``unit``-sized piece the range touches."""
    end = offset + length
    while offset < end:
        i, within = divmod(offset, unit)
        n = min(unit - within, end - offset)
        yield i, within, n
        offset += n


def split_views(offset: int, views: Sequence[memoryview],
                unit: int) -> Iterator[tuple[int, int, memoryview]]:
    """:func:`split` over vectored buffers laid end to end from ``offset``:
    ``(index, offset within, the part of the caller's buffer)``."""
    for v in views:
        pos = 0
        for i, within, n in split(offset, v.nbytes, unit):
            yield i, within, v[pos:pos + n]
            pos += n
        offset += v.nbytes


def merge_extents(runs: Iterable[Run | tuple[int, int, BlockStatus, int | None, str | None]],
                  filename: str | None) -> Iterator[Extent]:
    """Extents from consecutive runs, neighbours merged where the status is the same
    and the host offsets continue (or both have none) in the same file; compressed
    runs stay apart.  A run may name the file its host offset is in (a fifth
    item: an extent file of a multi-file image); else it is ``filename``."""
    cur: list[Any] | None = None  # [offset, length, status, host, file]
    for run in runs:
        start, n, status, host = run[:4]
        name = run[4] if len(run) > 4 else filename
        if cur is not None and cur[2] == status and not int(status) & _COMPRESSED_BIT and (
                host is None if cur[3] is None else host == cur[3] + cur[1]) and (
                cur[4] == name):
            cur[1] += n
            continue
        if cur is not None:
            yield Extent(cur[0], cur[1], cur[2], cur[3], 0, cur[4])
        cur = [start, n, status, host, name]
    if cur is not None:
        yield Extent(cur[0], cur[1], cur[2], cur[3], 0, cur[4])


def file_extents(fd: int, offset: int, length: int, filename: str | None,
                 mapped: bool = False) -> Iterator[Extent]:
    """A plain file's ``[offset, offset+length)``: its data (``DATA``) and holes
    (``ZERO``), both allocated and at their own offset, as ``SEEK_DATA`` /
    ``SEEK_HOLE`` find them.  ``mapped``: the range is a format's data mapped
    plainly onto the file (a fixed vpc, a flat vmdk extent, a static vdi block),
    whose holes QEMU reports as zero *and* data (``BDRV_BLOCK_RAW``: the file's
    status under the format's own ``DATA``)."""
    hole_status = _ZERO | BlockStatus.DATA if mapped else _ZERO
    end = offset + length
    pos = offset
    while pos < end:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no data after pos
                raise BlockError(f"cannot map the file: {exc.strerror}", filename) from exc
            data = end
        if data > pos:  # a hole from pos
            stop = min(data, end)
            yield Extent(pos, stop - pos, hole_status, pos, 0, filename)
            pos = stop
            continue
        try:
            hole = os.lseek(fd, pos, os.SEEK_HOLE)
        except OSError:
            hole = end
        stop = min(max(hole, pos + 1), end)
        yield Extent(pos, stop - pos, _DATA, pos, 0, filename)
        pos = stop


def refine_by_file(e: Extent, fd: int) -> Iterator[Extent]:
    """A format's data extent ``e`` (stored plainly at ``e.host_offset`` of the file
    ``fd``) split where the file has holes, which read as zeros: QEMU's
    ``BDRV_BLOCK_RECURSE``, the file's status refining the format's."""
    assert e.host_offset is not None
    for f in file_extents(fd, e.host_offset, e.length, e.filename):
        status = e.status | BlockStatus.ZERO if f.is_zero else e.status
        yield Extent(e.offset + f.offset - e.host_offset, f.length, status,
                     f.offset, 0, e.filename)


#: what :func:`entry_runs` is told a table entry is
UNALLOCATED, ZEROS, STORED = 0, 1, 2
_RUN_STATUS = {UNALLOCATED: BlockStatus(0), ZEROS: _ZERO, STORED: _DATA}


def entry_runs(entries: Iterable[int], first: int, lo: int, hi: int, cs: int,
               kind: Callable[[int, int], int], step: int, unit: int = 1,
               stored_below: int | None = None) -> list[Run]:
    """A format's table entries for the clusters ``first, first + 1, ...`` (of ``cs``
    bytes) that ``[lo, hi)`` touches, as ``_status_runs`` runs over it:
    ``kind(cluster, entry)`` says what each is (``UNALLOCATED``, ``ZEROS``, ``STORED``:
    at byte ``entry * unit`` of the file; it raises for a bad entry), and stored
    clusters whose entries go up by ``step`` (``step * unit == cs``) make one run.
    One loop over a table, instead of a lookup per cluster.

    ``stored_below``: the format's promise that ``kind`` depends on the entry alone,
    and that a stored entry's successor (``+ step``) is stored too while it is below
    this bound: entries that continue the current run (the same entry again, the
    next stored one) then extend it without a call to ``kind``."""
    out: list[Run] = []
    run_kind, start, host, prev = -1, first, 0, 0
    nxt, below, no_bound = -1, 0, 1 << 64
    fast = stored_below is not None
    bound = no_bound if stored_below is None else stored_below
    i = first
    for entry in entries:
        if entry == nxt and entry < below:     # (fast: the run goes on)
            prev = entry
            i += 1
            if run_kind == STORED:
                nxt += step
            continue
        k = kind(i, entry)
        if fast:
            nxt, below = (entry + step, bound) if k == STORED else (entry, no_bound)
        if k == run_kind and (k != STORED or entry == prev + step):
            prev = entry
            i += 1
            continue
        if run_kind >= 0:
            out.append(_entry_run(start, i, run_kind, host * unit, lo, hi, cs))
        run_kind, start, host, prev = k, i, entry, entry
        i += 1
    if run_kind >= 0:
        out.append(_entry_run(start, i, run_kind, host * unit, lo, hi, cs))
    return out


def _entry_run(first: int, end: int, kind: int, host: int, lo: int, hi: int, cs: int) -> Run:
    a, b = max(first * cs, lo), min(end * cs, hi)
    return a, b - a, _RUN_STATUS[kind], host + a - first * cs if kind == STORED else None


class open_image_file:  # used as a function: ``with open_image_file(...)``
    """The image file opened read-only or read-write, for ``with``: the descriptor is
    closed again if the block raises (a header refused), kept if it completes::

        with open_image_file(path, readonly) as fd:
            return cls(path, readonly, fd, cls._read_header(fd, path))

    (a class, not :func:`contextlib.contextmanager`'s: contextlib is not imported at
    start-up)
    """

    __slots__ = ("fd",)

    def __init__(self, path: str, readonly: bool) -> None:
        try:
            self.fd = os.open(path, (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC)
        except OSError as exc:
            raise BlockError(f"cannot open: {exc.strerror}", path) from exc

    def __enter__(self) -> int:
        return self.fd

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is not None:
            os.close(self.fd)


def pieces_of(offset: int, view: memoryview, unit: int) -> Iterable[tuple[int, int, memoryview]]:
    """:func:`split_views` of one view: the view itself when it stays within one unit
    (the usual piece of a batch: no generator made)."""
    i, within = divmod(offset, unit)
    if within + view.nbytes <= unit:
        return ((i, within, view),)
    return split_views(offset, [view], unit)


class Gather:
    """Pieces that follow each other in a file, gathered for one vectored call
    (``io``: :func:`preadv_full` or :func:`pwritev_full`)."""

    def __init__(self, fd: int, io: Callable[[int, int, Sequence[memoryview]], int]) -> None:
        self.fd, self.io = fd, io
        self.at, self.end = 0, -1
        self.parts: list[memoryview] = []

    def add(self, host: int, part: memoryview) -> None:
        if host != self.end:
            self.flush()
            self.at = self.end = host
        self.parts.append(part)
        self.end += part.nbytes

    def flush(self) -> None:
        if self.parts:
            self.io(self.fd, self.at, self.parts)
            self.parts = []
            self.end = -1


class FileImage(BlockDriver):
    """A driver over one open file: ``self.fd``, and ``self._lock`` (reentrant) for
    the driver's metadata.

    ``flush`` syncs the file (metadata written through, as these drivers do it:
    only the fsync), ``close`` flushes and releases the file, ``info`` reports the
    file's allocated size (:meth:`_info` adds a format's fields).
    """

    def __init__(self, filename: str, readonly: bool, fd: int) -> None:
        super().__init__(filename, readonly)
        self.fd = fd
        self._lock = RLock()

    def _checked_views(self, offset: int, buffers: Sequence[memoryview]) -> list[memoryview]:
        """``buffers`` as byte views, their total length checked against the size."""
        views = [memoryview(b).cast("B") for b in buffers]
        self._check_range(offset, sum(v.nbytes for v in views))
        return views

    def _fsync(self) -> None:
        try:
            os.fsync(self.fd)
        except OSError as exc:
            raise BlockError(f"flush failed: {exc.strerror}", self.filename) from exc

    def flush(self) -> None:
        if not self.readonly and self.sync and not self.closed:
            self._fsync()

    def _info(self, **fields: Any) -> ImageInfo:
        """:class:`ImageInfo` of this image with the file's allocated size and ``fields``."""
        st = os.fstat(self.fd)
        return ImageInfo(self.filename, self.format_name, self.size, st.st_blocks * 512,
                         **fields)

    def info(self) -> ImageInfo:
        return self._info()

    def close(self) -> None:
        """Flush (when writable) and release the file, even when the flush fails."""
        if self.closed:
            return
        try:
            super().close()
        finally:
            self.closed = True
            os.close(self.fd)


class MappedImage(FileImage):
    """A format whose table maps clusters of ``cluster_size`` bytes to the file.

    The format implements :meth:`_cluster_status` and, when it writes,
    :meth:`_allocate` (and :meth:`_read_compressed` if it has compressed
    clusters); this class does the rest: reads piece by piece (clusters that
    are not stored read as zeros), writes in place or through ``_allocate``
    under ``self._lock``, ``write_zeroes`` that leaves clusters already reading
    as zeros alone, and ``block_status`` merged across clusters.  A format
    overrides any of them where it does better (marking zero clusters,
    allocating runs).
    """

    #: reads take ``self._lock`` too (the table lookups go through caches that change)
    locked_reads: ClassVar[bool] = False
    #: the format keeps a data cluster's bytes as the guest reads them, at the host
    #: offset block status reports (no encryption, no per-cluster transform): what
    #: :meth:`plain_data_fd` answers by; a format says so
    plain_data: ClassVar[bool] = False
    #: the unit the table maps, in bytes (set per image when it is opened)
    cluster_size: int

    # -- what the format implements -------------------------------------------------------

    def _cluster_status(self, i: int) -> tuple[BlockStatus, int | None]:
        """What cluster ``i`` is: ``DATA|ALLOCATED`` with the file offset of its first
        byte, ``ZERO|ALLOCATED`` (reads as zeros, decided here), no ``ALLOCATED``
        (not here: the backing file, else zeros) or ``COMPRESSED`` (no offset).
        Raises :class:`~vmforge.block.driver.CorruptImageError` for a bad entry."""
        raise NotImplementedError

    def _allocate(self, i: int, within: int, data: memoryview) -> None:
        """Give cluster ``i``, which has no place in the file, one holding ``data`` at
        ``within`` and whatever the cluster read as around it (zeros, or a compressed
        cluster's bytes); write the data before the table entry that points at it."""
        raise NotImplementedError

    def _read_compressed(self, i: int, within: int, part: memoryview) -> None:
        """Fill ``part`` from compressed cluster ``i`` at ``within``."""
        raise NotImplementedError

    # -- built on them --------------------------------------------------------------------

    def _pieces(self, offset: int, length: int) -> Iterator[tuple[int, int, int]]:
        """(cluster index, offset in cluster, length) for each cluster the range touches."""
        return split(offset, length, self.cluster_size)

    def preadv(self, offset: int, buffers: Sequence[memoryview]) -> None:
        views = self._checked_views(offset, buffers)
        if self.locked_reads:
            with self._lock:
                self._read_views(offset, views)
        else:
            self._read_views(offset, views)

    def preadv_runs(self, runs: Sequence[tuple[int, memoryview]]) -> None:
        """All the runs' pieces read as :meth:`preadv` reads them, pieces that follow
        each other in the file (across runs too) in one call."""
        if type(self).preadv is not MappedImage.preadv:   # a format reads its own way
            super().preadv_runs(runs)
            return
        checked = [(offset, self._checked_views(offset, [buf])) for offset, buf in runs]
        if self.locked_reads:
            with self._lock:
                self._read_runs(checked)
        else:
            self._read_runs(checked)

    def _read_views(self, offset: int, views: Sequence[memoryview]) -> None:
        self._read_runs([(offset, views)])

    def _read_runs(self, runs: Sequence[tuple[int, Sequence[memoryview]]]) -> None:
        gather = Gather(self.fd, preadv_full)
        if type(self)._status_runs is not MappedImage._status_runs:
            # the format maps runs of clusters at a time: read by its runs
            for offset, views in runs:
                for v in views:
                    self._read_by_status(offset, v, gather)
                    offset += v.nbytes
            gather.flush()
            return
        for offset, views in runs:
            for i, within, part in split_views(offset, views, self.cluster_size):
                status, host = self._cluster_status(i)
                if host is not None:
                    gather.add(host + within, part)
                elif int(status) & _COMPRESSED_BIT:
                    self._read_compressed(i, within, part)
                else:
                    fill_zero(part)
        gather.flush()

    def _read_by_status(self, offset: int, view: memoryview, gather: Gather) -> None:
        """``view`` filled from ``offset`` by the runs of :meth:`_status_runs`."""
        pos = 0
        for run in self._status_runs(offset, view.nbytes):
            n, status, host = run[1], run[2], run[3]
            part = view[pos:pos + n]
            if host is not None:
                gather.add(host, part)
            elif int(status) & _COMPRESSED_BIT:
                for i, within, piece in split_views(run[0], [part], self.cluster_size):
                    self._read_compressed(i, within, piece)
            else:
                fill_zero(part)
            pos += n

    def pwritev(self, offset: int, buffers: Sequence[memoryview]) -> None:
        self._check_writable()
        views = self._checked_views(offset, buffers)
        with self._lock:
            for i, within, part in split_views(offset, views, self.cluster_size):
                self._write_piece(i, within, part)

    def pwritev_runs(self, runs: Sequence[tuple[int, memoryview]]) -> None:
        """Each run written as :meth:`pwritev` would, in order; pieces going in place
        one after the other in the file (across runs too) as one call, before the
        next allocation (which writes a new cluster's data before its table entry)."""
        cls = type(self)
        if cls.pwritev is not MappedImage.pwritev or (
                cls._write_piece is not MappedImage._write_piece):
            super().pwritev_runs(runs)      # a format writes its own way
            return
        self._check_writable()
        checked = self._checked_runs(runs)
        with self._lock:
            self._write_runs(checked)

    def _write_runs(self, checked: list[tuple[int, memoryview]]) -> None:
        """:meth:`pwritev_runs`' loop (under the lock; :meth:`_checked_runs`' views): in
        place through one gathered ``pwritev`` per stretch of the file, a new cluster
        by :meth:`_allocate`; a cluster's place looked up once for its pieces in a row
        (again after its allocation), a run within one cluster not split."""
        cs = self.cluster_size
        gather = Gather(self.fd, pwritev_full)
        last, host = -1, None
        for offset, view in checked:
            for i, within, part in pieces_of(offset, view, cs):
                if i != last:
                    last, host = i, self._cluster_status(i)[1]
                if host is None:
                    gather.flush()
                    self._allocate(i, within, part)
                    host = self._cluster_status(i)[1]
                else:
                    gather.add(host + within, part)
        gather.flush()

    def _write_piece(self, i: int, within: int, data: memoryview) -> None:
        """Write ``data`` at ``within`` of cluster ``i``: in place, or allocated."""
        host = self._cluster_status(i)[1]
        if host is None:
            self._allocate(i, within, data)
        else:
            pwritev_full(self.fd, host + within, [data])

    def _reads_as_zeros(self, i: int) -> bool:
        """Cluster ``i`` reads as zeros already: a zero cluster, or not allocated in an
        image without a backing file."""
        status = int(self._cluster_status(i)[0])
        return bool(status & _ZERO_BIT) or (
            not status & _ALLOCATED_BIT and self.backing_filename is None)

    def write_zeroes(self, offset: int, length: int, may_unmap: bool = False) -> None:
        """Zero bytes into the clusters that do not read as zeros already."""
        self._check_writable()
        self._check_range(offset, length)
        zeros = memoryview(bytes(min(length, self.cluster_size)))
        with self._lock:
            for i, within, n in self._pieces(offset, length):
                if not self._reads_as_zeros(i):
                    self._write_piece(i, within, zeros[:n])

    def plain_data_fd(self, extent: Extent) -> int | None:
        """The descriptor of the file that holds ``extent`` (one of this image's
        :meth:`block_status`) plainly: its bytes read as the guest reads them, from
        ``extent.host_offset`` of that file (past the file's end: zeros).  ``None``
        where they do not (zeros, compressed data, another file, a format that
        transforms its data): read those through :meth:`preadv`.  What lets
        ``convert`` read data at the places block status found, without mapping
        each range a second time."""
        if (self.plain_data and extent.host_offset is not None
                and int(extent.status) & _DATA_NOT_COMPRESSED == _DATA_BIT
                and extent.filename == self.filename):
            return self.fd
        return None

    def file_holes_read_as_zero(self) -> bool:
        """Whether ``block_status`` marks the parts of data blocks that lie in holes
        of the file as zeros too, as QEMU does where its driver answers
        ``BDRV_BLOCK_RECURSE`` (a static vdi, qcow2's normal clusters); the
        formats whose QEMU driver does not keep plain data (subclasses say)."""
        return False

    def block_status(self, offset: int, length: int) -> Iterator[Extent]:
        self._check_range(offset, length)
        recurse = self.file_holes_read_as_zero()
        for e in merge_extents(self._status_runs(offset, length), self.filename):
            if (not recurse or e.host_offset is None or e.status & _ZERO_OR_COMPRESSED
                    or e.filename != self.filename):
                yield e
                continue
            yield from refine_by_file(e, self.fd)

    def _status_runs(self, offset: int, length: int) -> Iterator[Run]:
        cs = self.cluster_size
        for i, within, n in self._pieces(offset, length):
            status, host = self._cluster_status(i)
            yield i * cs + within, n, status, None if host is None else host + within

    def _runs_by_table(self, offset: int, length: int, span: int) -> Iterator[Run]:
        """:meth:`_status_runs` of a format whose tables each map ``span`` bytes: the
        runs of ``[offset, offset + length)`` a table at a time, each table's from
        ``self._table_runs(pos, stop)`` under the image's lock (qed's L2 tables,
        vmdk's grain tables)."""
        pos, end = offset, offset + length
        while pos < end:
            stop = min((pos // span + 1) * span, end)
            with self._lock:
                runs = self._table_runs(pos, stop)
            yield from runs
            pos = stop

    def _table_runs(self, pos: int, stop: int) -> list[Run]:
        """The runs of ``[pos, stop)``, which one of the format's tables maps: what a
        format that calls :meth:`_runs_by_table` defines."""
        raise NotImplementedError(f"{type(self).__name__} maps no runs by table")
