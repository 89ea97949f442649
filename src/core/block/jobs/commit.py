"""block-commit: fold images of a chain down into a backing file.

- Intermediate (``top`` below the active layer): what ``top`` and the images
  between it and ``base`` hold is written into ``base`` (reopened writable);
  then, drained, the image above ``top`` gets ``base`` as its backing file and
  the committed images leave the chain.  The guest writes to the active layer
  meanwhile, which the job never touches.
- Active (``top`` None or the active layer): mirror-like (:class:`CopyLoop`): a
  dirty bitmap on the backend, what the layers above ``base`` hold copied into
  it, READY when in sync; complete drains, copies the rest and makes ``base``
  (writable) the top of the chain, in place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vmforge.block.backend import BlockBackend
from vmforge.block.bitmap import DirtyBitmap
from vmforge.block.jobs.chain import CHUNK, copy_extents, find_backing, status, view
from vmforge.block.jobs.job import BlockJob, JobError, JobListener, check_free
from vmforge.block.jobs.mirror import CopyLoop, default_granularity

if TYPE_CHECKING:
    from vmforge.block.jobs.registry import JobRegistry

__all__ = ["ActiveCommitJob", "CommitJob", "start_commit"]


class _BaseWritable:
    """The base reopened read-write for the job, read-only again after (unless it
    became the active layer)."""

    backend: BlockBackend
    base_depth: int
    base_rw: bool = False

    def open_base(self) -> None:
        self.backend.reopen_layer(self.base_depth, readonly=False)
        self.base_rw = True

    def close_base(self) -> None:
        if self.base_rw:
            self.base_rw = False
            self.backend.reopen_layer(self.base_depth, readonly=True)


class CommitJob(_BaseWritable, BlockJob):
    job_type = "commit"

    def __init__(self, backend: BlockBackend, top_depth: int, base_depth: int,
                 **kw: Any) -> None:
        super().__init__(backend, **kw)
        self.top_depth = top_depth
        self.base_depth = base_depth
        self.len = backend.size

    def run(self) -> None:
        layers = self.backend.layers
        src = view(layers[self.top_depth:])
        dst = view(layers[self.base_depth:])
        span = self.base_depth - self.top_depth
        if dst.size < src.size:
            dst.truncate(src.size)
        self.len = src.size
        buf = bytearray(CHUNK)
        for off in range(0, src.size, CHUNK):
            self.pause_point()
            n = min(CHUNK, src.size - off)
            copy_extents(src, dst, [e for e in status(src, off, n)
                                    if e.is_allocated and e.depth < span], buf)
            self.offset = off + n
            self.ratelimit(n)
        dst.flush()

    def prepare(self) -> None:
        bb = self.backend
        t, b = self.top_depth, self.base_depth
        with bb.drained():
            base = bb.layers[b]
            over = t - 1
            if over:
                bb.reopen_layer(over, readonly=False)
            try:
                bb.layers[over].driver.change_backing_file(base.filename, base.format)
                bb.layers[over].driver.flush()
            finally:
                if over:
                    bb.reopen_layer(over, readonly=True)
            self.close_base()
            layers = list(bb.layers)
            bb.replace_layers([*layers[:t], *layers[b:]], close=layers[t:b])

    def clean(self) -> None:
        self.close_base()


class ActiveCommitJob(_BaseWritable, CopyLoop):
    job_type = "commit"

    def __init__(self, backend: BlockBackend, base_depth: int, **kw: Any) -> None:
        super().__init__(backend, **kw)
        self.base_depth = base_depth
        base = backend.layers[base_depth]
        g = default_granularity(base.driver.info().cluster_size)
        self.setup_copy(backend, view(backend.layers[base_depth:]),
                        DirtyBitmap(backend.size, g), 0)

    def start(self) -> None:
        self.open_base()
        try:
            self.target = view(self.backend.layers[self.base_depth:])
            if self.target.size < self.backend.size:
                self.target.truncate(self.backend.size)
            self.backend.add_dirty_bitmap(self.bitmap)
            for e in self.backend.block_status():
                if e.depth < self.base_depth and e.is_allocated:
                    self.bitmap.set(e.offset, e.length)
            super().start()
        except BaseException:
            self.backend.remove_dirty_bitmap(self.bitmap)
            self.close_base()
            raise

    def pivot(self) -> None:
        bb = self.backend
        layers = list(bb.layers)
        layers[self.base_depth].driver.sync = bb.top.sync
        self.base_rw = False            # it stays writable: the new active layer
        bb.replace_layers(layers[self.base_depth:], close=layers[:self.base_depth])

    def clean(self) -> None:
        self.backend.remove_dirty_bitmap(self.bitmap)
        self.close_base()


def start_commit(backend: BlockBackend, *, device: str, top: str | None = None,
                 base: str | None = None, job_id: str | None = None, speed: int = 0,
                 on_event: JobListener | None = None, auto_finalize: bool = True,
                 auto_dismiss: bool = True, registry: JobRegistry | None = None) -> BlockJob:
    """block-commit of ``top`` (None or the active layer: active commit) into ``base``
    (None: the bottom of the chain), as QEMU resolves and refuses them."""
    check_free(backend, device)
    t: int | None = 0
    if top is not None and top != backend.filename:
        t = find_backing(backend, top)
    if t is None:
        raise JobError(f"Top image file {top if top is not None else 'NULL'} not found")
    if base is not None:
        b = find_backing(backend, base, start=t)
        if b is None:
            raise JobError(f"Can't find '{base}' in the backing chain")
    else:
        b = len(backend.layers) - 1
    if b == t:
        raise JobError("cannot commit an image into itself")
    kw: dict[str, Any] = dict(device=device, job_id=job_id, speed=speed, on_event=on_event,
                              auto_finalize=auto_finalize, auto_dismiss=auto_dismiss,
                              registry=registry)
    job: BlockJob
    if t == 0:
        job = ActiveCommitJob(backend, b, **kw)
    else:
        job = CommitJob(backend, t, b, **kw)
        job.open_base()
    try:
        job.start()
    except BaseException:
        if isinstance(job, CommitJob):
            job.close_base()
        raise
    return job
