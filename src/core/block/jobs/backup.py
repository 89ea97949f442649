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
from typing import Any

from vmforge.block.backend import BlockBackend
from vmforge.block.bitmap import DirtyBitmap
from vmforge.block.driver import BlockError
from vmforge.block.jobs.chain import make_target, view
from vmforge.block.jobs.job import BlockJob, JobError, JobListener, io
from vmforge.block.jobs.mirror import IDLE, SYNC_MODES

__all__ = ["BackupJob", "start_backup"]

#: BACKUP_CLUSTER_SIZE_DEFAULT: the least chunk of a backup
MIN_CHUNK = 65536


class BackupJob(BlockJob):
    job_type = "backup"

    def __init__(self, backend: BlockBackend, target: BlockBackend, sync: str,
                 chunk: int, **kw: Any) -> None:
        super().__init__(backend, **kw)
        self.target = target
        self.sync = sync
        self.copy_bitmap = DirtyBitmap(backend.size, chunk)
        self._copy_lock = threading.Lock()
        self._buf = bytearray(chunk)
        self._cbw_buf = bytearray(chunk)
        self.len = backend.size

    def start(self) -> None:
        bb = self.backend
        with bb.drained():       # the point in time: no write lands while it is fixed
            if self.sync == "none":
                self.copy_bitmap.set_all()
            else:
                for e in bb.block_status():
                    if self.sync == "top" and (e.depth > 0 or not e.is_allocated):
                        continue
                    if not (e.is_zero and not e.is_data) or self.sync == "top":
                        self.copy_bitmap.set(e.offset, e.length)
            self.len = self.copy_bitmap.count() if self.sync != "none" else 0
            bb.add_write_notifier(self.before_write)
            try:
                super().start()
            except BaseException:
                bb.remove_write_notifier(self.before_write)
                raise

    def before_write(self, offset: int, length: int) -> None:
        """Copy-before-write: the old data of chunks the write meets, if not yet copied."""
        g = self.copy_bitmap.granularity
        for off, n in list(self.copy_bitmap.dirty_runs(offset // g * g,
                                                       offset + length - offset // g * g)):
            for c in range(off, off + n, g):
                self._copy(c, min(g, off + n - c), self._cbw_buf, cbw=True)

    def _copy(self, offset: int, n: int, buf: bytearray, cbw: bool = False) -> bool:
        with self._copy_lock:
            if not self.copy_bitmap.is_dirty(offset, n):
                return False
            mv = memoryview(buf)[:n]
            # (sync=top: a chunk the top holds part of is copied whole, through the
            # chain, so the target never holds half a cluster over its backing file)
            with io("read"):
                extents = list(self.backend.block_status(offset, n))
            for e in extents:
                piece = mv[e.offset - offset:e.end - offset]
                if e.is_zero and not e.is_data:
                    with io("write"):
                        self.target.write_zeroes(e.offset, e.length)
                    continue
                with io("read"):
                    self.backend.preadv(e.offset, [piece])
                with io("write"):
                    self.target.pwritev(e.offset, [piece])
            self.copy_bitmap.clear(offset, n)
            if self.sync == "none":
                self.len += n
            self.offset += n
            return True

    def run(self) -> None:
        g = self.copy_bitmap.granularity
        if self.sync == "none":      # only copy-before-write, until cancelled
            while not self.cancelled:
                self.pause_point()
                self.sleep(IDLE)
            return
        pos = 0
        while (run := self.copy_bitmap.next_dirty(pos, g)) is not None:
            self.pause_point()
            if self._copy(run[0], run[1], self._buf):
                self.ratelimit(run[1])
            pos = run[0] + run[1]
        self.target.flush()

    def clean(self) -> None:
        self.backend.remove_write_notifier(self.before_write)
        if not self.target.closed:
            self.target.close()


def start_backup(backend: BlockBackend, target: str, *, device: str, format: str | None = None,
                 sync: str = "full", mode: str = "absolute-paths", job_id: str | None = None,
                 speed: int = 0, on_event: JobListener | None = None,
                 auto_finalize: bool = True, auto_dismiss: bool = True,
                 registry: Any = None, **create_opts: Any) -> BackupJob:
    """drive-backup of ``backend`` to the file ``target`` (see the module's docstring)."""
    from vmforge.block.jobs.mirror import _check_id

    if sync not in SYNC_MODES:
        raise JobError(f"Parameter 'sync' does not accept value '{sync}'")
    if speed < 0:
        raise JobError("Invalid parameter 'speed'")
    if backend.job is not None:
        raise JobError(f"Node '{device}' is busy: block device is in use by block job: "
                       f"{backend.job.type}")
    _check_id(registry, job_id if job_id is not None else device)
    if sync == "top" and len(backend.layers) == 1:
        sync = "full"
    if format is None and mode != "existing":
        format = backend.format
    backing = {"full": None, "top": backend.layers[1] if len(backend.layers) > 1 else None,
               "none": backend.layers[0]}[sync]
    fmt = make_target(target, format, mode, backend.size, backing=backing,
                      source=backend, **create_opts)
    try:     # the target alone: a chunk is always written whole
        tbb = BlockBackend.open(target, fmt or None, readonly=False, backing=False)
    except BlockError as exc:
        raise JobError(str(exc)) from exc
    try:
        info = tbb.info()[0]
        chunk = max(MIN_CHUNK, info.cluster_size or 0)
        job = BackupJob(backend, view(tbb.layers), sync, chunk, device=device, job_id=job_id,
                        speed=speed, on_event=on_event, auto_finalize=auto_finalize,
                        auto_dismiss=auto_dismiss, registry=registry)
        job.target = tbb
        job.start()
    except BaseException:
        if not tbb.closed:
            tbb.close()
        raise
    return job
