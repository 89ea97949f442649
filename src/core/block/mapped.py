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
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

from vmforge.block.driver import BlockDriver, BlockError, BlockStatus, Extent, ImageInfo
from vmforge.block.fileio import fill_zero, preadv_full, pwritev_full

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar

__all__ = ["FileImage", "MappedImage", "Run", "file_extents", "merge_extents",
           "open_image_file", "refine_by_file", "split", "split_views"]

#: ``(offset, length, status, host offset or None)``: a piece of ``block_status``
Run = tuple[int, int, BlockStatus, int | None]

_DATA = BlockStatus.DATA | BlockStatus.ALLOCATED
_ZERO = BlockStatus.ZERO | BlockStatus.ALLOCATED
_ZERO_OR_COMPRESSED = BlockStatus.ZERO | BlockStatus.COMPRESSED
# plain ints: IntFlag's operators cost microseconds per cluster
_ZERO_BIT = int(BlockStatus.ZERO)
_ALLOCATED_BIT = int(BlockStatus.ALLOCATED)
_COMPRESSED_BIT = int(BlockStatus.COMPRESSED)


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


@contextmanager
def open_image_file(path: str, readonly: bool) -> Iterator[int]:
    """The image file opened read-only or read-write, for ``with``: the descriptor is
    closed again if the block raises (a header refused), kept if it completes::

        with open_image_file(path, readonly) as fd:
            return cls(path, readonly, fd, cls._read_header(fd, path))
    """
    try:
        fd = os.open(path, (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC)
    except OSError as exc:
        raise BlockError(f"cannot open: {exc.strerror}", path) from exc
    try:
        yield fd
    except BaseException:
        os.close(fd)
        raise


class _Gather:
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
        self._lock = threading.RLock()

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
        gather = _Gather(self.fd, preadv_full)
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
        checked = [(offset, self._checked_views(offset, [buf])) for offset, buf in runs]
        gather = _Gather(self.fd, pwritev_full)
        with self._lock:
            for offset, views in checked:
                for i, within, part in split_views(offset, views, self.cluster_size):
                    host = self._cluster_status(i)[1]
                    if host is None:
                        gather.flush()
                        self._allocate(i, within, part)
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
