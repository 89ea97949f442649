"""block-stream: pull what the backing files above ``base`` hold into the active
layer, then make ``base`` (or nothing) its backing file and drop the rest.

Chunk by chunk, with the chunk serialised against guest writes, the job copies
into the top image the ranges the top does not allocate and a layer above
``base`` does (the guest's own writes are never overwritten: a range the top
holds is skipped, and a write to the chunk waits for the copy).  Then, drained,
the top's backing file is rewritten to ``base`` as ``qemu-img rebase -u``
would, and the streamed layers leave the chain.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vmforge.block.backend import BlockBackend
from vmforge.block.jobs.chain import CHUNK, copy_extents, find_backing, status, view
from vmforge.block.jobs.job import BlockJob, JobError, JobListener

if TYPE_CHECKING:
    from vmforge.block.jobs.registry import JobRegistry

__all__ = ["StreamJob", "start_stream"]


class StreamJob(BlockJob):
    job_type = "stream"

    def __init__(self, backend: BlockBackend, base_depth: int, **kw: Any) -> None:
        super().__init__(backend, **kw)
        self.base_depth = base_depth     # len(layers) without a base
        self.len = backend.size

    def run(self) -> None:
        bb = self.backend
        chunk = max(CHUNK, int(bb.top.granularity))
        buf = bytearray(chunk)
        with bb.serialising():
            for off in range(0, bb.size, chunk):
                self.pause_point()
                n = min(chunk, bb.size - off)
                with bb.serialised(off, n):
                    self._pull(off, n, buf)
                self.offset = off + n
                self.ratelimit(n)

    def _pull(self, off: int, n: int, buf: bytearray) -> None:
        """Copy into the top what it lacks in ``[off, off+n)`` and layers above base hold."""
        bb = self.backend
        top = view(bb.layers)    # (a partial unit of the top: copy-on-write of the rest)
        copy_extents(bb, top, [e for e in status(bb, off, n) if e.is_allocated
                               and 0 < e.depth < self.base_depth], buf)

    def prepare(self) -> None:
        bb = self.backend
        with bb.drained():
            layers = list(bb.layers)
            if len(layers) == 1:
                return          # no backing file: nothing was streamed, nothing to change
            base = layers[self.base_depth] if self.base_depth < len(layers) else None
            bb.top.change_backing_file(base.filename if base else None,
                                       base.format if base else None)
            bb.flush()
            bb.replace_layers([layers[0], *layers[self.base_depth:]],
                              close=layers[1:self.base_depth])


def start_stream(backend: BlockBackend, *, device: str, base: str | None = None,
                 job_id: str | None = None, speed: int = 0,
                 on_event: JobListener | None = None, auto_finalize: bool = True,
                 auto_dismiss: bool = True, registry: JobRegistry | None = None) -> StreamJob:
    """block-stream of ``backend`` down to the backing file named ``base`` (None: all)."""
    if base is not None:
        depth = find_backing(backend, base)
        if depth is None:
            raise JobError(f"Can't find '{base}' in the backing chain")
    else:
        depth = len(backend.layers)
    if backend.readonly:
        raise JobError("Block node is read-only")
    job = StreamJob(backend, depth, device=device, job_id=job_id, speed=speed,
                    on_event=on_event, auto_finalize=auto_finalize,
                    auto_dismiss=auto_dismiss, registry=registry)
    job.start()
    return job
