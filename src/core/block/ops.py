"""Whole-image operations behind ``vmforge img``: convert, compare, commit, rebase.

They work on opened :class:`~vmforge.block.backend.BlockBackend` objects and
drive everything from ``block_status``: ranges that read as zeros are never
read, and are written only when the target does not already read as zeros.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from vmforge.block.backend import BlockBackend
from vmforge.block.driver import BlockError, BlockStatus, UnsupportedOperation
from vmforge.block.fileio import fill_zero, page_aligned_buffer, preadv_full

TYPE_CHECKING = False
if TYPE_CHECKING:     # (at run time: imported where used, not at every start-up)
    import collections
    import concurrent.futures
    import mmap
    import queue

__all__ = [
    "CHUNK",
    "CompareResult",
    "allocated_ranges",
    "commit",
    "compare",
    "convert",
    "iter_allocated_ranges",
    "rebase",
]

#: the largest single read or write of these operations
CHUNK = 2 << 20
#: how far ahead ``block_status`` is asked at a time
WINDOW = 256 << 20
#: what a range of the sources holds, for convert
DATA, ZERO, BACKING = 0, 1, 2
# BlockStatus's bits as plain ints (per extent: flag objects' operators cost more)
_DATA, _ZERO = int(BlockStatus.DATA), int(BlockStatus.ZERO)
_ALLOCATED = int(BlockStatus.ALLOCATED)

Progress = Callable[[int, int], None]
#: ``convert --salvage``: told of each 512-byte sector that could not be read (its
#: offset in its own source, the error); the sector is copied as zeros
ReadErrorHandler = Callable[[int, BaseException], None]
SECTOR = 512


class _Sources:
    """Several images read one after the other, as one (``convert A B C DST``)."""

    def __init__(self, backends: Sequence[BlockBackend]) -> None:
        self.parts: list[tuple[int, BlockBackend]] = []
        base = 0
        for bb in backends:
            self.parts.append((base, bb))
            base += bb.size
        self.size = base
        self.on_read_error: ReadErrorHandler | None = None

    def extents(self, offset: int, length: int,
                top_only: bool = False) -> Iterator[tuple[int, int, int, int, int]]:
        """``(offset, length, DATA | ZERO | BACKING, fd, host)`` covering the range, in
        order.  ``fd`` is -1, or a file holding a ``DATA`` extent plainly from byte
        ``host`` on (the layer's driver says so: ``plain_data_fd``), to be read there
        instead of through the image (mapped once, not twice).

        ``top_only``: what the top images do not allocate is ``BACKING`` (the
        target's own backing file supplies it: ``convert -B``).
        """
        end = offset + length
        for base, bb in self.parts:
            lo, hi = max(offset, base), min(end, base + bb.size)
            if lo >= hi:
                continue
            plain_fd = [getattr(la.driver, "plain_data_fd", None) for la in bb.layers]
            for e in bb.block_status(lo - base, hi - lo):
                st = int(e.status)
                if top_only and (e.depth > 0 or not st & _ALLOCATED):
                    yield base + e.offset, e.length, BACKING, -1, 0
                elif st & _ZERO and not st & _DATA:
                    yield base + e.offset, e.length, ZERO, -1, 0
                else:
                    find = plain_fd[e.depth]
                    fd = -1 if find is None else find(e)
                    if fd is None:
                        fd = -1
                    yield base + e.offset, e.length, DATA, fd, e.host_offset or 0

    def readinto(self, offset: int, mv: memoryview) -> None:
        end = offset + mv.nbytes
        for base, bb in self.parts:
            lo, hi = max(offset, base), min(end, base + bb.size)
            if lo < hi:
                try:
                    bb.preadv(lo - base, [mv[lo - offset:hi - offset]])
                except (OSError, BlockError):
                    if self.on_read_error is None:
                        raise
                    self._salvage(bb, lo - base, mv[lo - offset:hi - offset])

    def read_runs(self, runs: list[tuple[int, memoryview]]) -> None:
        """:meth:`readinto` of each ``(offset, view)``, each source's in one call
        (:meth:`BlockBackend.preadv_runs`); a failure reads them again one by one,
        so that ``on_read_error`` hears of each bad sector."""
        i = 0
        while i < len(runs):
            base, bb = next((b, bb) for b, bb in self.parts if runs[i][0] < b + bb.size)
            j = i
            while j < len(runs) and runs[j][0] < base + bb.size:
                j += 1
            try:
                bb.preadv_runs([(off - base, mv) for off, mv in runs[i:j]])
            except (OSError, BlockError):
                if self.on_read_error is None:
                    raise
                for off, mv in runs[i:j]:
                    self.readinto(off, mv)
            i = j

    def _salvage(self, bb: BlockBackend, offset: int, mv: memoryview) -> None:
        """Read sector by sector; what fails reads as zeros (qemu-img's --salvage)."""
        assert self.on_read_error is not None
        for pos in range(0, mv.nbytes, SECTOR):
            piece = mv[pos:pos + SECTOR]
            try:
                bb.preadv(offset + pos, [piece])
            except (OSError, BlockError) as exc:
                piece[:] = bytes(piece.nbytes)
                self.on_read_error(offset + pos, exc)


def convert(sources: Sequence[BlockBackend], target: BlockBackend, *,
            target_is_zero: bool = True, min_sparse: int = 4096, compress: bool = False,
            workers: int = 2, progress: Progress | None = None,
            top_only: bool = False, on_read_error: ReadErrorHandler | None = None) -> None:
    """Copy the guest-visible contents of ``sources`` (one after the other) to ``target``.

    ``target_is_zero``: the target already reads as zeros (a new image), so
    zero ranges are skipped, not written.  ``min_sparse``: data chunks are
    scanned for zero runs of this many bytes (aligned), which are treated as
    zero ranges; 0 writes every byte (a fully allocated target).
    ``compress`` writes whole clusters with the driver's ``write_compressed``
    on a pool of ``workers`` threads.  ``top_only`` copies only what the
    sources' top images allocate (the target has a backing file with the
    rest: ``convert -B``); their zero ranges are then written as zeros.
    ``on_read_error`` (``--salvage``): a failed read is retried sector by sector,
    and each sector that fails is reported to it and copied as zeros.
    """
    if top_only and compress:
        raise UnsupportedOperation("compressed writes into an image with a backing file")
    src = _Sources(sources)
    src.on_read_error = on_read_error
    if target.size < src.size:
        raise BlockError(f"target is smaller ({target.size} bytes) than the source "
                         f"({src.size} bytes)", target.filename)
    done = 0
    # qemu-img's -p counts the data it copies against all there is to copy, found by
    # a first pass over the block status (convert_iteration_sectors): a sparse
    # image's zeros and what a backing file holds take no share of the bar
    total = _planned(src, min_sparse, top_only) if progress is not None else 0

    def advance(n: int) -> None:
        """``n`` more bytes of what the bar counts are copied (a zero range skipped or
        kept by the backing file counts for nothing: no call)."""
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    if progress is not None:
        progress(0, total)
    if compress:
        _convert_compressed(src, target, workers, advance)
    else:
        _convert_plain(src, target, target_is_zero and not top_only, min_sparse, advance,
                       top_only)
    target.flush()


class _Writer:
    """One thread that performs the target's writes in order, so that reading the
    source and scanning for zeros overlap with writing (the syscalls release the GIL).
    The target is touched by this thread only.

    Writes are queued in batches (:meth:`submit`), each with the pooled buffer
    (:meth:`buffer`) its data lives in, which goes back to the pool once the
    batch is written: fresh buffers would cost a page fault per 4 KiB, and one
    hand-over per small extent would cost more than the write."""

    def __init__(self, target: BlockBackend, depth: int = 4) -> None:
        import queue  # (here: compare, map and info do without threads)
        import threading

        self.target = target
        self.queue: queue.Queue[tuple[list[tuple[int, memoryview | None, int]],
                                      mmap.mmap | None] | None] = queue.Queue(maxsize=depth)
        self.free: queue.Queue[mmap.mmap] = queue.Queue()
        #: buffers not made yet: made when first needed (bytearray() zeroes its
        #: memory: 12 MiB of page faults up front would cost a small convert ~20 ms)
        self.spare = depth + 2
        self.batch: list[tuple[int, memoryview | None, int]] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="convert-w", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            batch, buf = item
            i = 0
            while i < len(batch) and self.error is None:   # drain after a failure
                # data runs in a row: one call (the driver may merge them)
                j = i
                while j < len(batch) and batch[j][1] is not None:
                    j += 1
                off, n = batch[i][0], batch[i][2]
                try:
                    if j > i:
                        n = batch[j - 1][0] + batch[j - 1][2] - off   # (the span, if it fails)
                        self.target.pwritev_runs([(o, d) for o, d, _ in batch[i:j]
                                                  if d is not None])
                        i = j
                    else:
                        self.target.write_zeroes(off, n, may_unmap=True)
                        i += 1
                except OSError as exc:  # e.g. ENOSPC: say which file and where
                    self.error = BlockError(f"write of {n} bytes at offset {off} failed: "
                                            f"{exc.strerror or exc}", self.target.filename)
                    self.error.__cause__ = exc
                except BaseException as exc:  # re-raised in the caller's thread
                    self.error = exc
            if buf is not None:
                self.free.put(buf)

    def buffer(self) -> mmap.mmap:
        """A pooled CHUNK-sized buffer; it goes back with the batch it is submitted with."""
        import queue

        self._check()
        try:
            return self.free.get_nowait()
        except queue.Empty:
            if self.spare:
                self.spare -= 1
                return page_aligned_buffer(CHUNK)
            return self.free.get()

    def write(self, off: int, data: memoryview) -> None:
        self.batch.append((off, data, data.nbytes))

    def zeroes(self, off: int, n: int) -> None:
        self.batch.append((off, None, n))

    def submit(self, buf: mmap.mmap | None = None) -> None:
        """Queue the writes added since the last submit; then ``buf`` is free again."""
        self._check()
        if self.batch or buf is not None:
            self.queue.put((self.batch, buf))
            self.batch = []

    def _check(self) -> None:
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Finish the queued writes and stop the thread; raises the first write error."""
        if self.batch and self.error is None:
            self.queue.put((self.batch, None))
            self.batch = []
        self.queue.put(None)
        self.thread.join()
        self._check()


def _convert_plain(src: _Sources, target: BlockBackend, target_is_zero: bool,
                   min_sparse: int, advance: Callable[..., None], top_only: bool) -> None:
    writer = _Writer(target)
    try:
        _copy_plain(src, writer, target_is_zero, min_sparse, advance, top_only)
    finally:
        writer.close()


def _planned(src: _Sources, min_sparse: int, top_only: bool) -> int:
    """Bytes the progress bar counts: data, and zeros too when every byte is
    written (no ``-S``); never what the backing file keeps."""
    total = 0
    for w in range(0, src.size, WINDOW):
        for _off, length, state, _fd, _host in src.extents(w, min(WINDOW, src.size - w),
                                                          top_only):
            if state == DATA or (state == ZERO and not min_sparse):
                total += length
    return total


def _copy_plain(src: _Sources, writer: _Writer, target_is_zero: bool, min_sparse: int,
                advance: Callable[..., None], top_only: bool) -> None:
    from vmforge._fast.zeroscan import zero_runs  # (here: compare does without it)

    buf: mmap.mmap | None = None
    fill = 0                 # bytes of buf in use
    #: the pieces of the buffer, in order: (offset, view, counted by the progress bar)
    pending: list[tuple[int, memoryview, bool]] = []
    #: the pieces read through the sources (their images map them)
    runs: list[tuple[int, memoryview]] = []
    #: the pieces read from the files block status found them in: (fd, host, offset, view)
    plain: list[tuple[int, int, int, memoryview]] = []
    counted_zeros = not min_sparse

    def flush() -> None:
        """Read the buffer's data (pieces next to each other in a file in one call),
        scan it, queue its writes in order (a new qcow2 allocates in the order it is
        written), hand it over."""
        if plain:
            _read_plain(src, plain)
            plain.clear()
        if runs:
            src.read_runs(runs)
            runs.clear()
        done = 0
        for off, mv, counted in pending:
            if not min_sparse:
                writer.write(off, mv)
            else:
                for a, b, zero in zero_runs(mv, off, min_sparse):
                    if not zero:
                        writer.write(off + a, mv[a:b])
                    elif not target_is_zero:
                        writer.zeroes(off + a, b - a)
            if counted:
                done += mv.nbytes
        if done:
            advance(done)
        pending.clear()
        writer.submit(buf)

    # the extents as they come (block status is lazy: a raw file's are found by lseek
    # one by one), so that the first write starts early; the writing thread waits
    # until then (256 MiB of a raw file's extents asked first cost tens of ms)
    for off, length, state, fd, host in src.extents(0, src.size, top_only):
        if state == BACKING:
            continue
        is_zero = state == ZERO
        if is_zero and min_sparse:
            if not target_is_zero:
                if buf is not None:
                    flush()        # the writes before, first (the target's layout)
                    buf = None
                writer.zeroes(off, length)
            continue
        end = off + length
        while off < end:
            n = min(CHUNK, end - off)
            if buf is None or fill + n > CHUNK:   # small extents share a buffer
                if buf is not None:
                    flush()
                buf, fill = writer.buffer(), 0
            mv = memoryview(buf)[fill:fill + n]
            if is_zero:
                fill_zero(mv)
                pending.append((off, mv, counted_zeros))
            else:
                if fd >= 0:
                    plain.append((fd, host, off, mv))
                    host += n
                else:
                    runs.append((off, mv))
                pending.append((off, mv, True))
            fill += n
            off += n
    if buf is not None:
        flush()


def _read_plain(src: _Sources, pieces: list[tuple[int, int, int, memoryview]]) -> None:
    """Fill each ``(fd, host, offset, view)`` from ``host`` of file ``fd``, pieces that
    follow each other in the same file in one call; a failure reads them again
    through the sources (``on_read_error`` hears of each bad sector)."""
    i, count = 0, len(pieces)
    while i < count:
        fd, host, _, mv = pieces[i]
        parts = [mv]
        end = host + mv.nbytes
        j = i + 1
        while j < count and pieces[j][0] == fd and pieces[j][1] == end:
            v = pieces[j][3]
            parts.append(v)
            end += v.nbytes
            j += 1
        try:
            preadv_full(fd, host, parts)
        except OSError:
            if src.on_read_error is None:
                raise
            for _, _, off, v in pieces[i:j]:
                src.readinto(off, v)
        i = j


def _runs(clusters: list[int], g: int, size: int) -> Iterator[tuple[int, int]]:
    """Adjacent cluster offsets merged into ``(start, end)`` byte runs."""
    if not clusters:
        return
    start = prev = clusters[0]
    for c in clusters[1:]:
        if c == prev + g:
            prev = c
        else:
            yield start, min(prev + g, size)
            start = prev = c
    yield start, min(prev + g, size)


def _convert_compressed(src: _Sources, target: BlockBackend, workers: int,
                        advance: Callable[..., None]) -> None:
    import collections
    import concurrent.futures

    drv = target.top
    if not drv.supports_compressed_writes:
        raise UnsupportedOperation(f"format {drv.format_name} does not support compressed "
                                   "writes", target.filename)
    g = max(512, int(drv.granularity))
    pending: collections.deque[tuple[concurrent.futures.Future[None], int]] = collections.deque()

    def reap(block: bool) -> None:
        while pending and (block or pending[0][0].done()):
            fut, n = pending.popleft()
            fut.result()
            advance(n)

    with concurrent.futures.ThreadPoolExecutor(max(1, workers),
                                               thread_name_prefix="convert-c") as pool:
        try:
            for w in range(0, src.size, WINDOW):
                wend = min(w + WINDOW, src.size)
                data_clusters: list[int] = []
                for off, length, state, _fd, _host in src.extents(w, wend - w):
                    if state == ZERO:
                        continue
                    for c in range(off // g * g, off + length, g):
                        if not data_clusters or c > data_clusters[-1]:
                            data_clusters.append(c)
                for run_start, run_end in _runs(data_clusters, g, src.size):
                    # one read per run of adjacent clusters: per-cluster reads cost a
                    # GIL hand-over each while the workers compress
                    run = bytearray(run_end - run_start)
                    src.readinto(run_start, memoryview(run))
                    for c in range(run_start, run_end, g):
                        piece = bytes(run[c - run_start: min(c + g, run_end) - run_start])
                        n = len(piece)
                        if piece.count(0) == n:
                            advance(n)
                            continue
                        pending.append((pool.submit(drv.write_compressed, c, piece), n))
                        if len(pending) >= 4 * workers:
                            pending[0][0].result()
                        reap(False)
            reap(True)
        except BaseException:
            for fut, _ in pending:
                fut.cancel()
            raise


class CompareResult:
    """What ``compare`` found: ``identical``, else the first differing ``offset``."""

    __slots__ = ("identical", "offset", "size_mismatch", "status_mismatch")

    def __init__(self, identical: bool, offset: int | None = None,
                 size_mismatch: bool = False, status_mismatch: bool = False) -> None:
        self.identical = identical
        self.offset = offset
        self.size_mismatch = size_mismatch
        self.status_mismatch = status_mismatch

    def __repr__(self) -> str:
        return (f"CompareResult(identical={self.identical}, offset={self.offset}, "
                f"size_mismatch={self.size_mismatch}, "
                f"status_mismatch={self.status_mismatch})")


def compare(a: BlockBackend, b: BlockBackend, *, strict: bool = False) -> CompareResult:
    """Compare two images as the guest sees them (qemu-img compare).

    Images of different sizes are identical if the extra part of the larger
    one reads as zeros, unless ``strict`` (then also block status must agree).
    A differing offset is reported at 512-byte granularity, as qemu-img does.
    """
    if a.size != b.size and strict:
        return CompareResult(False, None, size_mismatch=True)
    common = min(a.size, b.size)
    off = 0
    while off < common:
        span = min(common - off, CHUNK)  # a driver may map the whole range it is asked
        ea = next(a.block_status(off, span))
        eb = next(b.block_status(off, span))
        n = min(ea.end, eb.end, off + CHUNK) - off
        za, zb = ea.is_zero and not ea.is_data, eb.is_zero and not eb.is_data
        if strict and (ea.is_allocated != eb.is_allocated or za != zb):
            return CompareResult(False, off, status_mismatch=True)
        if not (za and zb):
            da = bytes(n) if za else a.read(off, n)
            db = bytes(n) if zb else b.read(off, n)
            if da != db:
                return CompareResult(False, _first_difference(da, db, off),
                                     size_mismatch=a.size != b.size)
        off += n
    bigger = a if a.size > b.size else b
    where = _first_nonzero(bigger, common, bigger.size - common)
    if where is not None:
        return CompareResult(False, where, size_mismatch=True)
    return CompareResult(True, size_mismatch=a.size != b.size)


def _first_difference(x: bytes, y: bytes, base: int) -> int:
    i = next(i for i in range(0, len(x), 512) if x[i:i + 512] != y[i:i + 512])
    return base + i


def _first_nonzero(bb: BlockBackend, offset: int, length: int) -> int | None:
    if length <= 0:
        return None
    for e in bb.block_status(offset, length):
        if e.is_zero and not e.is_data:
            continue
        for off in range(e.offset, e.end, CHUNK):
            n = min(CHUNK, e.end - off)
            data = bb.read(off, n)
            if data.count(0) != n:
                return _first_difference(data, bytes(n), off)
    return None


def allocated_ranges(bb: BlockBackend) -> list[tuple[int, int]]:
    """``(offset, length)`` of the ranges holding data anywhere in the chain."""
    return list(iter_allocated_ranges(bb))


def iter_allocated_ranges(bb: BlockBackend) -> Iterator[tuple[int, int]]:
    """``allocated_ranges`` one at a time, in order (what ``measure`` is given: a
    fragmented image has millions of them)."""
    start = end = -1
    for e in bb.block_status():
        if e.is_data:
            if e.offset == end:
                end += e.length
                continue
            if end > start:
                yield start, end - start
            start, end = e.offset, e.end
    if end > start:
        yield start, end - start


def commit(top: BlockBackend, base: BlockBackend, progress: Progress | None = None) -> None:
    """Write what ``top`` (depth 0 of its chain) allocates into ``base``, its backing file.

    The base grows to the top's size if smaller.  Afterwards the top is
    emptied when its driver can (``make_empty``, as qemu-img commit does), so
    everything reads from the base again; a format without it keeps its
    clusters, which read the same as the base now.  (``discard`` would not do:
    a discarded range may read as zeros, not as the backing file.)
    """
    if base.size < top.size:
        base.truncate(top.size)
    extents = [e for e in top.block_status() if e.depth == 0 and e.is_allocated]
    total = sum(e.length for e in extents)
    done = 0
    for e in extents:
        for off in range(e.offset, e.end, CHUNK):
            n = min(CHUNK, e.end - off)
            if e.is_zero and not e.is_data:
                base.write_zeroes(off, n)
            else:
                base.write(off, top.read(off, n))
            done += n
            if progress is not None:
                progress(done, total)
    base.flush()
    make_empty = getattr(top.top, "make_empty", None)
    if not top.readonly and make_empty is not None:
        make_empty()
        top.flush()


def rebase(top: BlockBackend, new_backing: BlockBackend | None, filename: str | None,
           fmt: str | None, progress: Progress | None = None) -> None:
    """Make ``new_backing`` (recorded as ``filename``/``fmt``) the backing file of
    ``top`` without changing what the guest reads (qemu-img rebase, safe mode).

    Where the top does not allocate a range and the old chain reads differently
    from the new backing file, the old contents are copied into the top first.
    """
    if len(top.layers) > 1:
        size = top.size
        for e in list(top.block_status()):
            if e.depth == 0 and e.is_allocated:
                continue
            for off in range(e.offset, e.end, CHUNK):
                n = min(CHUNK, e.end - off)
                old = top.read(off, n)
                new = _read_or_zeros(new_backing, off, n)
                if old != new:
                    top.write(off, old)
                if progress is not None:
                    progress(off + n, size)
    elif new_backing is not None:
        # no old backing file: unallocated ranges read zeros and must go on doing so
        for e in list(top.block_status()):
            if not e.is_allocated:
                top.top.write_zeroes(e.offset, e.length)
    top.top.change_backing_file(filename, fmt)
    top.flush()


def _read_or_zeros(bb: BlockBackend | None, offset: int, length: int) -> bytes:
    if bb is None or offset >= bb.size:
        return bytes(length)
    n = min(length, bb.size - offset)
    return bb.read(offset, n) + bytes(length - n)
