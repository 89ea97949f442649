"""drive-backup: a copy of the disk as it was when the job started, while the
guest goes on writing.

A copy bitmap holds the chunks still to copy (``full``: all but what reads as
zeros, ``top``: what the top image holds, the target's backing file being the
source's; ``none``: every chunk, copied only when about to be overwritten).
A write notifier on the backend copies a chunk the guest is about to
overwrite before its data lands (copy-before-write); the job's thread copies
the others in order.  Both take the job's copy lock, so a chunk is copied
once, with the data of the start.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from vmforge.block.backend import BlockBackend
from vmforge.block.bitmap import DirtyBitmap
from vmforge.block.jobs.chain import check_start, copy_extents, new_target, started, status
from vmforge.block.jobs.job import BlockJob, IoFailure, JobListener
from vmforge.block.jobs.mirror import IDLE

if TYPE_CHECKING:
    from vmforge.block.jobs.registry import JobRegistry

__all__ = ["BackupJob", "start_backup"]

#: BACKUP_CLUSTER_SIZE_DEFAULT: the least chunk of a backup
MIN_CHUNK = 65536


class BackupJob(BlockJob):
    job_type = "backup"

    def __init__(self, backend: BlockBackend, target: BlockBackend, sync: str,
                 chunk: int, target_zero: bool = True, **kw: Any) -> None:
        super().__init__(backend, **kw)
        self.target = target
        self.sync = sync
        #: a new target reads as zeros: zero ranges need no write
        self.target_zero = target_zero
        self.copy_bitmap = DirtyBitmap(backend.size, chunk)
        self._copy_lock = threading.Lock()
        self._buf = bytearray(chunk)       # (used under the copy lock)
        #: a copy-before-write that failed: the guest's write failed, the job ends
        self._cbw_error: IoFailure | None = None
        self.len = backend.size

    def start(self) -> None:
        bb = self.backend
        with bb.drained():       # the point in time: no write lands while it is fixed
            if self.sync != "top":      # every chunk (len: the disk, as QEMU's)
                self.copy_bitmap.set_all()
            else:                        # what the top holds (bdrv_is_allocated)
                for e in bb.block_status():
                    if e.depth == 0 and e.is_allocated:
                        self.copy_bitmap.set(e.offset, e.length)
            self.len = self.copy_bitmap.count()   # (sync=none too: backup_init_bcs_bitmap)
            bb.add_write_notifier(self.before_write)
            try:
                super().start()
            except BaseException:
                bb.remove_write_notifier(self.before_write)
                raise

    def before_write(self, offset: int, length: int) -> None:
        """Copy-before-write: the old data of chunks the write meets, if not yet copied.
        If that fails the guest's write fails with the error (QEMU's default
        on-cbw-error=break-guest-write), and the job ends with it."""
        g = self.copy_bitmap.granularity
        try:
            for off, n in list(self.copy_bitmap.dirty_runs(offset // g * g,
                                                           offset + length - offset // g * g)):
                for c in range(off, off + n, g):
                    self._copy(c, min(g, off + n - c))
        except IoFailure as exc:
            self._cbw_error = exc
            raise exc.cause from None

    def _copy(self, offset: int, n: int) -> bool:
        with self._copy_lock:
            if not self.copy_bitmap.is_dirty(offset, n):
                return False
            # (sync=top: a chunk the top holds part of is copied whole, through the
            # chain, so the target never holds half a cluster over its backing file)
            copy_extents(self.backend, self.target, status(self.backend, offset, n),
                         self._buf, skip_zeroes=self.target_zero and self.sync == "full")
            self.copy_bitmap.clear(offset, n)
            self.offset += n
            return True

    def run(self) -> None:
        g = self.copy_bitmap.granularity
        if self.sync == "none":      # only copy-before-write, until cancelled
            while not self.cancelled:
                self._check_cbw()
                self.pause_point()
                self.sleep(IDLE)
            return
        pos = 0
        while (run := self.copy_bitmap.next_dirty(pos, g)) is not None:
            self._check_cbw()
            self.pause_point()
            if self._copy(*run):
                self.ratelimit(run[1])
            pos = run[0] + run[1]
        self._check_cbw()
        self.target.flush()

    def _check_cbw(self) -> None:
        if self._cbw_error is not None:
            raise self._cbw_error

    def clean(self) -> None:
        self.backend.remove_write_notifier(self.before_write)
        if not self.target.closed:
            self.target.close()


def start_backup(backend: BlockBackend, target: str, *, device: str, format: str | None = None,
                 sync: str = "full", mode: str = "absolute-paths", job_id: str | None = None,
                 speed: int = 0, on_event: JobListener | None = None,
                 auto_finalize: bool = True, auto_dismiss: bool = True,
                 registry: JobRegistry | None = None, **create_opts: Any) -> BackupJob:
    """drive-backup of ``backend`` to the file ``target`` (see the module's docstring)."""
    check_start(backend, device, job_id, speed, registry)
    # (the target alone: a chunk is always written whole)
    sync, tbb = new_target(backend, target, format, sync, mode, create_opts,
                           with_backing=False)
    chunk = max(MIN_CHUNK, tbb.info()[0].cluster_size or 0)
    return started(tbb, lambda: BackupJob(
        backend, tbb, sync, chunk, mode != "existing", device=device, job_id=job_id,
        speed=speed,
        on_event=on_event, auto_finalize=auto_finalize, auto_dismiss=auto_dismiss,
        registry=registry))
