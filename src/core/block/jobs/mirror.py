"""drive-mirror: copy a running disk to a new image, stay in sync, pivot onto it.

A dirty bitmap on the source backend records what the guest writes; the job
first marks what the sync mode copies (``full``: all the chain reads that is
not zeros, ``top``: what the top image holds, ``none``: nothing), then copies
dirty chunks (clearing each before reading it) until none is left: READY.  It
keeps copying what the guest writes.  :meth:`MirrorJob.complete` lets the
ending drain the backend, copy the rest and swap the backend's chain for the
target's, in place.  A cancel once ready completes without the pivot (the
target is a copy of the disk at that moment), before it leaves the source as
it was (``BLOCK_JOB_CANCELLED``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vmforge.block.backend import BlockBackend
from vmforge.block.bitmap import DirtyBitmap
from vmforge.block.jobs.chain import (
    CHUNK,
    check_start,
    copy_extents,
    new_target,
    started,
    status,
    view,
)
from vmforge.block.jobs.job import BlockJob, JobError, JobListener

if TYPE_CHECKING:
    from vmforge.block.jobs.registry import JobRegistry

__all__ = ["MirrorJob", "start_mirror"]

#: how long an idle job sleeps before looking at the bitmap again
IDLE = 0.02


def default_granularity(cluster_size: int | None) -> int:
    """QEMU's bdrv_get_default_bitmap_granularity: the target's cluster size within
    [4 KiB, 64 KiB], 64 KiB for a format without clusters."""
    if not cluster_size:
        return 65536
    return min(65536, max(4096, cluster_size))


def check_granularity(granularity: int) -> None:
    if granularity and not 512 <= granularity <= 64 << 20:
        raise JobError("Parameter 'granularity' expects a value in range [512B, 64MB]")
    if granularity & (granularity - 1):
        raise JobError("Parameter 'granularity' expects a power of 2")


class CopyLoop(BlockJob):
    """A job that copies the dirty chunks of ``source`` to ``target`` until in sync,
    READY, then keeps in sync until completed or cancelled (mirror, active commit)."""

    def setup_copy(self, source: BlockBackend, target: BlockBackend, bitmap: DirtyBitmap,
                   buf_size: int) -> None:
        self.source = source
        self.target = target
        self.bitmap = bitmap
        g = bitmap.granularity
        self.buf_size = max(g, -(-(buf_size or CHUNK) // g) * g)
        self._buf = bytearray(self.buf_size)

    def copy_chunk(self, offset: int, length: int) -> None:
        """Copy one dirty run (cleared first: a write meanwhile marks it again)."""
        self.bitmap.clear(offset, length)
        copy_extents(self.source, self.target, status(self.source, offset, length), self._buf)

    def run(self) -> None:
        pos = 0
        self.len = self.offset + self.bitmap.count()
        while True:
            self.pause_point()
            run = self.bitmap.next_dirty(pos, self.buf_size)
            if run is None and pos:
                pos = 0
                continue
            if run is None:
                self.len = self.offset
                self.set_ready()
                if self.should_complete or self.cancelled:
                    return
                self.sleep(IDLE)
                continue
            off, n = run
            self.copy_chunk(off, n)
            pos = off + n
            self.offset += n
            self.len = self.offset + self.bitmap.count()
            self.ratelimit(n)

    def catch_up(self) -> None:
        """Copy every dirty chunk (the backend drained by the caller)."""
        while (run := self.bitmap.next_dirty(0, self.buf_size)) is not None:
            self.copy_chunk(*run)
            self.offset += run[1]
        self.len = self.offset

    def can_complete(self) -> bool:
        return True

    def prepare(self) -> None:
        """Once completed (not cancelled): drained, copy the rest, then :meth:`pivot`."""
        if not self.should_complete or self.cancelled:
            return
        bb = self.source
        with bb.drained():
            self.catch_up()
            self.target.flush()
            bb.flush()          # (mirror sync=none: the new chain reads the old top afresh)
            bb.remove_dirty_bitmap(self.bitmap)
            self.pivot()

    def pivot(self) -> None:
        """Make the target the backend's chain (the backend drained, in sync)."""
        raise NotImplementedError


class MirrorJob(CopyLoop):
    job_type = "mirror"

    def __init__(self, backend: BlockBackend, target: BlockBackend, target_view: BlockBackend,
                 sync: str, granularity: int, buf_size: int, zero_target: bool = False,
                 **kw: Any) -> None:
        super().__init__(backend, **kw)
        self.sync = sync
        #: an existing target of a full mirror: every chunk is written (zeros too)
        self.zero_target = zero_target
        self.target_bb = target
        bitmap = DirtyBitmap(backend.size, granularity)
        self.setup_copy(backend, target_view, bitmap, buf_size)

    def start(self) -> None:
        self.source.add_dirty_bitmap(self.bitmap)   # from now on, every write is seen
        if self.sync == "full" and self.zero_target:
            self.bitmap.set_all()
        elif self.sync == "full":     # what the chain allocates (mirror_dirty_init)
            for e in self.source.block_status():
                if e.is_allocated:
                    self.bitmap.set(e.offset, e.length)
        elif self.sync == "top":
            for e in self.source.block_status():
                if e.depth == 0 and e.is_allocated:
                    self.bitmap.set(e.offset, e.length)
        try:
            super().start()
        except BaseException:
            self.source.remove_dirty_bitmap(self.bitmap)
            raise

    def pivot(self) -> None:
        bb = self.source
        path, fmt = self.target_bb.filename, self.target_bb.format
        self.target_bb.close()
        new = BlockBackend.open(path, fmt, readonly=False)
        new.layers[0].driver.sync = bb.top.sync
        bb.replace_layers(new.layers, close=list(bb.layers))

    def clean(self) -> None:
        self.source.remove_dirty_bitmap(self.bitmap)
        if not self.target_bb.closed:
            self.target_bb.close()


def start_mirror(backend: BlockBackend, target: str, *, device: str, job_id: str | None = None,
                 format: str | None = None, sync: str = "full", mode: str = "absolute-paths",
                 speed: int = 0, granularity: int = 0, buf_size: int = 0,
                 on_event: JobListener | None = None, auto_finalize: bool = True,
                 auto_dismiss: bool = True, registry: JobRegistry | None = None,
                 **create_opts: Any) -> MirrorJob:
    """drive-mirror of ``backend`` to the file ``target`` (see the module's docstring)."""
    check_granularity(granularity)
    if buf_size < 0:
        raise JobError("Parameter 'buf-size' expects a non-negative value")
    check_start(backend, device, job_id, speed, registry)
    sync, tbb = new_target(backend, target, format, sync, mode, create_opts,
                           with_backing=sync != "none")
    if sync == "none":     # what the target does not hold: the live source
        tview = view([tbb.layers[0], *backend.layers])
    else:
        tview = view(tbb.layers)
    g = granularity or default_granularity(tbb.info()[0].cluster_size)
    return started(tbb, lambda: MirrorJob(
        backend, tbb, tview, sync, g, buf_size, mode == "existing", device=device,
        job_id=job_id, speed=speed,
        on_event=on_event, auto_finalize=auto_finalize, auto_dismiss=auto_dismiss,
        registry=registry))
