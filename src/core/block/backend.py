"""An opened image with its backing chain: what devices and ``vmforge img`` use.

:class:`BlockBackend` opens the top image (by ``format`` or by probing), then
each backing file the previous layer names, read-only, until a layer has
none.  It reads through the chain (a range a layer has not allocated comes
from the next layer; past the end of a backing file it reads zeros), writes to
the top (copy-on-write of partly written units, see
:mod:`vmforge.block.driver`), and reports the chain's ``block_status`` with the
depth of the layer that decided each extent.
"""

from __future__ import annotations

import os
from _thread import allocate_lock

from vmforge.block.driver import (
    BlockDriver,
    BlockError,
    BlockStatus,
    Extent,
    ImageInfo,
)
from vmforge.block.iohooks import Gate, IoHooks, WriteNotifier
from vmforge.block.layers import (
    Layer,
    _close_layer,
    _file_id,
    close_layers,
    create_image,
    open_driver,
    resolve_backing,
)
from vmforge.block.probe import PROBE_SIZE, RAW_FORMAT, probe_format, probe_header
from vmforge.lazy import lazy_contextmanager, lazy_logger

TYPE_CHECKING = False
if TYPE_CHECKING:       # (typing costs ~4 ms of start-up: names for the type checker only)
    import contextlib
    from collections.abc import Iterable, Iterator, Sequence
    from typing import Any, Self

    from vmforge.block.bitmap import DirtyBitmap

__all__ = ["CACHE_MODES", "MAX_CHAIN_DEPTH", "BlockBackend", "Layer", "close_layers",
           "create_image", "open_driver", "resolve_backing"]

log = lazy_logger(__name__)

#: how much of the disk ``block_status`` asks the drivers about at a time
STATUS_WINDOW = 256 << 20
#: the longest backing chain opened (the top counts): guards against runaway chains
MAX_CHAIN_DEPTH = 64
#: QEMU's cache modes; only ``unsafe`` changes anything here (no fsync on flush)
CACHE_MODES = ("writeback", "unsafe", "writethrough", "none", "directsync")


class BlockBackend:
    """An image and its backing chain, opened.  ``layers[0]`` is the top."""

    def __init__(self, layers: Sequence[Layer]) -> None:
        if not layers:
            raise ValueError("a BlockBackend needs at least one layer")
        self.layers = list(layers)
        self.closed = False
        # copy-on-write reads a unit, merges and writes it back: writes that may do that
        # are serialised so that two I/O threads cannot lose each other's bytes
        self._cow_lock = allocate_lock()
        #: a raw image whose format was guessed: block 0 must stay raw-looking
        self._guard_block0 = False
        #: requests in flight and drained sections (:meth:`drained`)
        self._gate = Gate()
        #: bitmaps, write notifiers, serialised ranges: None while nothing is attached
        self._hooks: IoHooks | None = None
        #: the block job using this backend (QEMU's op blockers), set by the job
        self.job: Any = None
        #: the image's persistent bitmaps being tracked, and the layer they belong to
        self._persistent: tuple[Layer, list[DirtyBitmap]] | None = None

    # -- opening ---------------------------------------------------------------------

    @classmethod
    def open(cls, path: str, format: str | None = None, *, readonly: bool = True,
             force_share: bool = False, backing: bool = True,
             max_depth: int = MAX_CHAIN_DEPTH, cache: str = "writeback",
             guessed_raw: bool = False, persistent_bitmaps: bool = False,
             **options: Any) -> Self:
        """Open ``path`` and (unless ``backing`` is False) its backing chain.

        ``format`` None probes, and never guesses raw for a writable open unless
        ``guessed_raw`` (QEMU's ``-hda disk.img``): then a raw guess is opened with a
        warning and writes that would make block 0 look like another format are
        refused, as QEMU does.  ``force_share`` is qemu-img's ``-U``;
        ``cache="unsafe"`` makes flushes skip fsync (the driver's ``sync``);
        ``persistent_bitmaps``: track the top image's enabled persistent dirty bitmaps
        while open (a disk a guest writes, as QEMU's ``-drive``;
        :func:`vmforge.block.bitmap.load_persistent`);
        without it a write invalidates them, as the format's driver says.  ``options`` go
        to the top driver's ``open``.
        """
        if cache not in CACHE_MODES:
            raise ValueError(f"cache mode {cache!r} is not one of {', '.join(CACHE_MODES)}")
        guard = False
        if format is None and guessed_raw and not readonly and os.path.exists(path):
            format = probe_format(path)
            if format == RAW_FORMAT:
                guard = True
                log.warning("Image format was not specified for '%s' and probing guessed "
                            "raw: writes to block 0 that would make it look like another "
                            "format are refused (give format=raw to lift this)", path)
        top = open_driver(path, format, readonly=readonly, force_share=force_share, **options)
        top.driver.sync = cache != "unsafe"
        layers = [top]
        try:
            if backing:
                cls._open_chain(layers, force_share, max_depth)
        except BaseException:
            for layer in layers:
                _close_layer(layer)
            raise
        bb = cls(layers)
        bb._guard_block0 = guard
        if persistent_bitmaps and not readonly:
            bb._load_persistent()
        return bb

    @staticmethod
    def _open_chain(layers: list[Layer], force_share: bool, max_depth: int) -> None:
        if not layers[0].driver.backing_filename:
            return          # (nothing to follow; the top may be no file: an NBD export)
        seen = {_file_id(layers[0].filename): layers[0].filename}
        while True:
            cur = layers[-1]
            name = cur.driver.backing_filename
            if not name:
                return
            path = resolve_backing(cur.filename, name)
            if len(layers) >= max_depth:
                raise BlockError(f"backing chain is longer than {max_depth} images "
                                 f"(stopped at backing file {name!r})", layers[0].filename)
            if not os.path.exists(path):
                raise BlockError(f"could not open backing file {path!r}: No such file "
                                 "or directory", cur.filename)
            fid = _file_id(path)
            if fid in seen:
                chain = " -> ".join([*(la.filename for la in layers), path])
                raise BlockError(f"backing chain loop: {chain}", layers[0].filename)
            seen[fid] = path
            fmt = cur.driver.backing_format
            try:
                layers.append(open_driver(path, fmt, readonly=True, force_share=force_share,
                                          backing=True))
            except BlockError as exc:
                raise BlockError(f"could not open backing file: {exc}", cur.filename) from exc

    # -- the image -------------------------------------------------------------------

    @property
    def top(self) -> BlockDriver:
        return self.layers[0].driver

    @property
    def filename(self) -> str:
        return self.top.filename

    @property
    def format(self) -> str:
        return self.layers[0].format

    @property
    def readonly(self) -> bool:
        return self.top.readonly

    @property
    def size(self) -> int:
        return self.top.size

    def chain(self) -> list[BlockDriver]:
        """The drivers of the chain, top first."""
        return [la.driver for la in self.layers]

    def info(self) -> list[ImageInfo]:
        """``info()`` of every layer, top first."""
        return [la.driver.info() for la in self.layers]

    # -- reading ---------------------------------------------------------------------

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset``, as the guest sees them."""
        buf = bytearray(length)
        self.preadv(offset, [memoryview(buf)])
        return bytes(buf)

    def preadv(self, offset: int, buffers: Sequence[memoryview]) -> None:
        """Fill ``buffers`` in order from ``offset`` through the chain."""
        self._gate.enter()
        try:
            self._preadv(offset, buffers)
        finally:
            self._gate.leave()

    def _preadv(self, offset: int, buffers: Sequence[memoryview]) -> None:
        views = [memoryview(b).cast("B") for b in buffers]
        total = sum(v.nbytes for v in views)
        self._check_range(offset, total)
        if not total:
            return
        if len(self.layers) == 1 or self._top_holds(offset, total):
            self.top.preadv(offset, views)   # one vectored read (a guest's 256 pages)
            return
        for v in views:
            if v.nbytes:
                self._read_layer(0, offset, v)
            offset += v.nbytes

    def preadv_runs(self, runs: Sequence[tuple[int, memoryview]]) -> None:
        """Fill each ``(offset, buffer)`` of ``runs`` through the chain, as :meth:`preadv`
        on each would (:meth:`BlockDriver.preadv_runs`)."""
        self._gate.enter()
        try:
            if len(self.layers) != 1:
                for offset, buf in runs:
                    self._preadv(offset, [buf])
                return
            views = [(offset, memoryview(buf).cast("B")) for offset, buf in runs]
            for offset, buf in views:
                self._check_range(offset, buf.nbytes)
            self.top.preadv_runs([(offset, buf) for offset, buf in views if buf.nbytes])
        finally:
            self._gate.leave()

    def preadv_nowait(self, offset: int, buffers: Sequence[memoryview]) -> bool:
        """:meth:`preadv` if the top layer alone holds the range and its driver can
        read it without waiting (:meth:`BlockDriver.preadv_nowait`); else False."""
        views = [memoryview(b).cast("B") for b in buffers]
        total = sum(v.nbytes for v in views)
        self._check_range(offset, total)
        if not total:
            return True
        if self._gate.quiesced:
            return False        # drained: a worker's read waits, this thread must not
        self._gate.enter()
        try:
            if len(self.layers) > 1 and not self._top_holds(offset, total):
                return False
            return self.top.preadv_nowait(offset, views)
        finally:
            self._gate.leave()

    def _top_holds(self, offset: int, length: int) -> bool:
        """True when the top layer alone decides all of ``[offset, offset+length)``."""
        covered = offset
        for ext in self.top.block_status(offset, length):
            if not ext.is_allocated or ext.offset > covered:
                return False
            covered = max(covered, ext.end)
            if covered >= offset + length:
                return True
        return covered >= offset + length

    def readinto(self, offset: int, buf: bytearray | memoryview) -> None:
        """Fill ``buf`` from ``offset``."""
        self.preadv(offset, [memoryview(buf)])

    def _read_layer(self, depth: int, offset: int, mv: memoryview) -> None:
        drv = self.layers[depth].driver
        if depth == len(self.layers) - 1:
            drv.preadv(offset, [mv])
            return
        below = self.layers[depth + 1].driver
        end = offset + mv.nbytes
        run_start = run_end = offset  # a run of allocated extents, read at once
        for ext in drv.block_status(offset, mv.nbytes):
            a, b = max(ext.offset, offset), min(ext.end, end)
            if b <= a:
                continue
            if ext.is_allocated:
                if a != run_end:
                    self._flush_run(drv, offset, mv, run_start, run_end)
                    run_start = a
                run_end = b
                continue
            self._flush_run(drv, offset, mv, run_start, run_end)
            run_start = run_end = b
            part = min(b, below.size)
            if a < part:
                self._read_layer(depth + 1, a, mv[a - offset:part - offset])
            if b > max(a, part):
                lo = max(a, part)
                mv[lo - offset:b - offset] = bytes(b - lo)
        self._flush_run(drv, offset, mv, run_start, run_end)

    @staticmethod
    def _flush_run(drv: BlockDriver, base: int, mv: memoryview, start: int, end: int) -> None:
        if end > start:
            drv.preadv(start, [mv[start - base:end - base]])

    # -- block status ------------------------------------------------------------------

    def block_status(self, offset: int = 0, length: int | None = None) -> Iterator[Extent]:
        """Extents of the chain over ``[offset, offset+length)``, adjacent alike ones merged.

        ``depth`` is the layer that decided each extent (its ``filename`` too);
        a range no layer allocates reads as zeros: ``ZERO`` without
        ``ALLOCATED``, at the depth of the deepest layer asked.
        """
        if length is None:
            length = self.size - offset
        self._check_range(offset, length)
        pending: Extent | None = None
        end = offset + length
        pos = offset
        while pos < end:   # window by window: a driver may map all it is asked at once
            n = min(end, (pos // STATUS_WINDOW + 1) * STATUS_WINDOW) - pos
            for ext in self._status(0, pos, n):
                if pending is None:
                    pending = ext
                elif _mergeable(pending, ext):
                    pending = Extent(pending.offset, pending.length + ext.length, pending.status,
                                     pending.host_offset, pending.depth, pending.filename)
                else:
                    yield pending
                    pending = ext
            pos += n
        if pending is not None:
            yield pending

    def _status(self, depth: int, offset: int, length: int) -> Iterator[Extent]:
        drv = self.layers[depth].driver
        last = depth == len(self.layers) - 1
        end = offset + length
        pos = offset
        for ext in drv.block_status(offset, length):
            a, b = max(ext.offset, pos), min(ext.end, end)
            if b <= a:
                continue
            pos = b
            if (a == ext.offset and b == ext.end and ext.is_allocated and ext.depth == depth
                    and ext.filename == drv.filename):
                yield ext          # as it is (the common case: no copy)
                continue
            host = ext.host_offset + (a - ext.offset) if ext.host_offset is not None else None
            if ext.is_allocated:      # (the file the data is in: an extent file may be
                yield Extent(a, b - a, ext.status, host, depth,   # another than the image)
                             ext.filename or drv.filename)
                continue
            if last:     # (the offset stays: qemu-img map shows it for such ranges)
                st = _READS_ZERO.get(ext.status)
                if st is None:   # (IntFlag arithmetic is slow: once per status)
                    st = _READS_ZERO[ext.status] = (ext.status & ~BlockStatus.DATA
                                                    ) | BlockStatus.ZERO
                yield Extent(a, b - a, st, host, depth, drv.filename)
                continue
            below = self.layers[depth + 1].driver.size
            if a < below:
                yield from self._status(depth + 1, a, min(b, below) - a)
            if b > below:
                lo = max(a, below)
                yield Extent(lo, b - lo, BlockStatus.ZERO, None, depth, drv.filename)
        if pos < end:
            raise BlockError(f"block_status of {drv.format_name} stopped at offset {pos}, "
                             f"short of {end}", drv.filename)

    def is_allocated_above(self, offset: int, length: int, depth: int) -> bool:
        """Whether any layer above ``depth`` allocates part of the range."""
        return any(e.depth < depth and e.is_allocated for e in self.block_status(offset, length))

    # -- writing -----------------------------------------------------------------------

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` at ``offset`` into the top image."""
        self.pwritev(offset, [memoryview(data)])

    def pwritev(self, offset: int, buffers: Sequence[memoryview]) -> None:
        """Write ``buffers`` in order at ``offset`` into the top image.

        With a backing file, a unit of the top's ``granularity`` that the write
        covers only in part and that the top has not allocated is widened to
        the whole unit, filled from the chain (copy-on-write).
        """
        self._check_writable()
        views = [memoryview(b).cast("B") for b in buffers]
        total = sum(v.nbytes for v in views)
        self._check_range(offset, total)
        if not total:
            return
        self._gate.enter()
        try:
            if self._hooks is None:
                self._pwritev(offset, views, total)
            else:
                self._hooks.write(offset, total, lambda: self._pwritev(offset, views, total))
        finally:
            self._gate.leave()

    def _pwritev(self, offset: int, views: list[memoryview], total: int) -> None:
        if self._guard_block0 and offset < PROBE_SIZE:
            self._check_block0(offset, views)
        if len(self.layers) == 1:
            self.top.pwritev(offset, views)
            return
        with self._cow_lock:
            self._pwritev_cow(offset, views, total)

    def pwritev_runs(self, runs: Sequence[tuple[int, memoryview]]) -> None:
        """Write each ``(offset, bytes)`` of ``runs`` in order into the top image, as
        :meth:`pwritev` on each would (:meth:`BlockDriver.pwritev_runs`)."""
        if len(self.layers) != 1 or self._guard_block0 or self._hooks is not None:
            for offset, data in runs:
                self.pwritev(offset, [data])
            return
        self._check_writable()
        views = [(offset, memoryview(data).cast("B")) for offset, data in runs]
        for offset, data in views:
            self._check_range(offset, data.nbytes)
        self._gate.enter()
        try:
            if self._hooks is not None or len(self.layers) != 1:   # attached meanwhile
                for offset, data in views:
                    self._pwritev_hooked(offset, [data], data.nbytes)
                return
            self.top.pwritev_runs([(offset, data) for offset, data in views if data.nbytes])
        finally:
            self._gate.leave()

    def _pwritev_hooked(self, offset: int, views: list[memoryview], total: int) -> None:
        if self._hooks is None:
            self._pwritev(offset, views, total)
        else:
            self._hooks.write(offset, total, lambda: self._pwritev(offset, views, total))

    def _check_block0(self, offset: int, views: list[memoryview]) -> None:
        """A guessed raw image: refuse a write after which block 0 probes as another
        format (QEMU's raw_check_write), so the guest cannot turn it into one."""
        head = bytearray(min(PROBE_SIZE, self.size))
        self._preadv(0, [memoryview(head)])
        pos = offset
        for v in views:
            if pos >= len(head):
                break
            n = min(v.nbytes, len(head) - pos)
            head[pos:pos + n] = v[:n]
            pos += v.nbytes
        if probe_header(bytes(head), self.filename) != RAW_FORMAT:
            raise BlockError("write to block 0 refused: the image's format was guessed "
                             "(raw) and the data would make it look like another format",
                             self.filename)

    def _pwritev_cow(self, offset: int, views: list[memoryview], total: int) -> None:
        g = max(1, int(self.top.granularity))
        end = offset + total
        lo = offset // g * g
        hi = min(-(-end // g) * g, self.size)
        t0 = end // g * g  # the unit holding the end (when end < hi, end is inside it)
        head = lo < offset and self._unallocated_in_top(lo, min(lo + g, hi))
        tail = end < hi and self._unallocated_in_top(t0, hi)
        if not head and not tail:
            self.top.pwritev(offset, views)
            return
        start = lo if head else offset
        stop = hi if tail else end
        buf = bytearray(stop - start)
        mv = memoryview(buf)
        if head:
            self._read_layer(0, lo, mv[: min(lo + g, stop) - lo])
        if tail and not (head and t0 == lo):  # one unit: already read as the head
            self._read_layer(0, t0, mv[t0 - start:])
        pos = offset - start
        for v in views:
            mv[pos:pos + v.nbytes] = v
            pos += v.nbytes
        self.top.pwritev(start, [mv])

    def _unallocated_in_top(self, offset: int, end: int) -> bool:
        return any(not e.is_allocated for e in self.top.block_status(offset, end - offset))

    def write_zeroes(self, offset: int, length: int, may_unmap: bool = False) -> None:
        """Make the range read as zeros (partial units go through copy-on-write)."""
        self._check_writable()
        self._check_range(offset, length)
        if not length:
            return
        self._gate.enter()
        try:
            if self._hooks is None:
                self._write_zeroes(offset, length, may_unmap)
            else:
                self._hooks.write(offset, length,
                                  lambda: self._write_zeroes(offset, length, may_unmap))
        finally:
            self._gate.leave()

    def _write_zeroes(self, offset: int, length: int, may_unmap: bool) -> None:
        if len(self.layers) == 1:
            self.top.write_zeroes(offset, length, may_unmap)
            return
        g = max(1, int(self.top.granularity))
        end = offset + length
        a = min(-(-offset // g) * g, end)
        b = max(end // g * g, a)
        if end == self.size:
            b = end
        with self._cow_lock:
            if a > offset:
                self._pwritev_cow(offset, [memoryview(bytes(a - offset))], a - offset)
            if b > a:
                self.top.write_zeroes(a, b - a, may_unmap)
            if end > b:
                self._pwritev_cow(b, [memoryview(bytes(end - b))], end - b)

    def discard(self, offset: int, length: int) -> None:
        self._check_writable()
        self._gate.enter()
        try:
            if self._hooks is None:
                self.top.discard(offset, length)
            else:
                self._hooks.write(offset, length, lambda: self.top.discard(offset, length))
        finally:
            self._gate.leave()

    def flush(self) -> None:
        self._gate.enter()
        try:
            if not self.readonly:
                self.top.flush()
        finally:
            self._gate.leave()

    def truncate(self, size: int) -> None:
        """Change the virtual size of the top image."""
        self._check_writable()
        self._gate.enter()
        try:
            if self._hooks is None:
                self.top.truncate(size)
            else:
                self._hooks.resized(self.size, size, lambda: self.top.truncate(size))
        finally:
            self._gate.leave()

    # -- what block jobs attach ----------------------------------------------------------

    def drained(self) -> contextlib.AbstractContextManager[None]:
        """A section in which no other thread's request runs: those in flight have
        finished, new ones wait until it ends.  The draining thread may issue
        requests inside (a pivot's last copy); drained sections nest."""
        return self._gate.drained()

    def drain(self) -> None:
        """Wait until the requests in flight have finished (QEMU's bdrv_drain)."""
        with self.drained():
            pass

    def _hooks_changed(self, change: Any) -> None:
        """Apply ``change`` to the hooks (made if needed) while drained, so that every
        request after it sees them; the hooks go when nothing is left attached."""
        with self.drained():
            hooks = self._hooks or IoHooks()
            change(hooks)
            self._hooks = None if hooks.empty() else hooks

    def add_dirty_bitmap(self, bitmap: DirtyBitmap) -> None:
        """Mark ``bitmap`` on every write from now on (writes in flight finish first)."""
        self._hooks_changed(lambda h: h.bitmaps.append(bitmap))

    def remove_dirty_bitmap(self, bitmap: DirtyBitmap) -> None:
        self._hooks_changed(lambda h: bitmap in h.bitmaps and h.bitmaps.remove(bitmap))

    @property
    def dirty_bitmaps(self) -> list[DirtyBitmap]:
        return list(self._hooks.bitmaps) if self._hooks else []

    def add_write_notifier(self, notifier: WriteNotifier) -> None:
        """Call ``notifier(offset, length)`` before each write's data lands."""
        self._hooks_changed(lambda h: h.notifiers.append(notifier))

    def remove_write_notifier(self, notifier: WriteNotifier) -> None:
        self._hooks_changed(lambda h: notifier in h.notifiers and h.notifiers.remove(notifier))

    @lazy_contextmanager
    def serialising(self) -> Iterator[None]:
        """While inside, :meth:`serialised` ranges and overlapping writes exclude
        each other (a job that copies into ranges the guest may write)."""
        def more(h: IoHooks) -> None:
            h.serialisers += 1

        def less(h: IoHooks) -> None:
            h.serialisers -= 1
        self._hooks_changed(more)
        try:
            yield
        finally:
            self._hooks_changed(less)

    def serialised(self, offset: int, length: int) -> contextlib.AbstractContextManager[None]:
        """Hold ``[offset, offset+length)``: overlapping writes of other threads wait
        until the section ends, and it waits for those in progress (inside
        :meth:`serialising`)."""
        if self._hooks is None:
            raise BlockError("serialised() outside serialising()", self.filename)
        return self._hooks.tracker.serialised(offset, length)

    def _load_persistent(self) -> None:
        """Track the top image's persistent bitmaps (:func:`load_persistent`)."""
        from vmforge.block.bitmap import load_persistent  # (here: a disk a guest writes)

        bitmaps = load_persistent(self.top)
        if bitmaps:
            self._persistent = (self.layers[0], bitmaps)
            for bm in bitmaps:
                self.add_dirty_bitmap(bm)

    def persistent_bitmaps(self) -> list[DirtyBitmap]:
        """The top image's persistent bitmaps being tracked (stored into it on close)."""
        kept = self._persistent
        return list(kept[1]) if kept is not None and kept[0] is self.layers[0] else []

    def track_persistent(self, bitmap: DirtyBitmap, add: bool = True) -> None:
        """Start (``add``) or stop tracking ``bitmap`` as one of the top image's
        persistent bitmaps (QMP's block-dirty-bitmap-add/remove with persistent)."""
        top = self.layers[0]
        if self._persistent is None or self._persistent[0] is not top:
            self._persistent = (top, [])
        if add:
            self._persistent[1].append(bitmap)
            self.add_dirty_bitmap(bitmap)
        else:
            self._persistent[1].remove(bitmap)
            self.remove_dirty_bitmap(bitmap)

    def _store_persistent(self, closing: list[Layer]) -> None:
        """Store the tracked bitmaps into their image if it is among ``closing``."""
        kept = self._persistent
        if kept is None or not any(la is kept[0] for la in closing):
            return
        from vmforge.block.bitmap import store_persistent

        self._persistent = None
        for bm in kept[1]:
            self.remove_dirty_bitmap(bm)
        try:
            store_persistent(kept[0].driver, kept[1])
        except (BlockError, OSError) as exc:   # (QEMU too: the image is closed anyway)
            log.warning("%s: could not store the persistent dirty bitmaps: %s",
                        kept[0].filename, exc)

    def replace_layers(self, layers: Sequence[Layer], close: Iterable[Layer] = ()) -> None:
        """Swap the chain in place, drained (the object devices hold stays the same),
        then close the ``close`` layers (those no longer used)."""
        if not layers:
            raise ValueError("a BlockBackend needs at least one layer")
        close = list(close)
        with self.drained():
            if layers[0] is not self.layers[0]:
                self._guard_block0 = False      # (a guessed raw top is gone)
            self._store_persistent(close)
            self.layers[:] = list(layers)
            close_layers(close)

    def reopen_layer(self, depth: int, readonly: bool) -> Layer:
        """Reopen the image at ``depth`` read-only or read-write, drained, with the lock
        that goes with it (a read-only layer below the top: a backing file's)."""
        with self.drained():
            old = self.layers[depth]
            sync = old.driver.sync
            self._store_persistent([old])
            _close_layer(old)
            try:
                new = open_driver(old.filename, old.format, readonly=readonly,
                                  backing=readonly and depth > 0)
            except BaseException:
                back = open_driver(old.filename, old.format, readonly=old.driver.readonly,
                                   backing=old.driver.readonly and depth > 0)
                back.driver.sync = sync
                self.layers[depth] = back
                raise
            new.driver.sync = sync
            self.layers[depth] = new
            return new

    # -- closing -----------------------------------------------------------------------

    def close(self) -> None:
        """Close every layer (flushing the top first) and drop the locks; a block job
        on the backend is cancelled first and waited for (QEMU's job_cancel_sync)."""
        if self.closed:
            return
        if self.job is not None:
            self.job.cancel_sync()
        self._store_persistent(self.layers)
        self.closed = True
        close_layers(self.layers)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.close()
            return
        try:          # the error that ended the block is the one to report
            self.close()
        except Exception as close_error:
            log.debug("closing after an error failed too: %s", close_error)

    def __repr__(self) -> str:
        chain = " -> ".join(f"{la.filename} ({la.format})" for la in self.layers)
        return f"<BlockBackend {chain} {'ro' if self.readonly else 'rw'}>"

    # -- helpers -----------------------------------------------------------------------

    def _check_range(self, offset: int, length: int) -> None:
        self.top._check_range(offset, length)

    def _check_writable(self) -> None:
        if self.closed:
            raise BlockError("image is closed", self.filename)
        self.top._check_writable()


#: the status of an unallocated range of the last layer, by the driver's status
_READS_ZERO: dict[BlockStatus, BlockStatus] = {}


def _mergeable(a: Extent, b: Extent) -> bool:
    if (a.end != b.offset or a.status != b.status or a.depth != b.depth
            or a.filename != b.filename):
        return False
    if a.host_offset is None or b.host_offset is None:
        return a.host_offset is None and b.host_offset is None
    return a.host_offset + a.length == b.host_offset
