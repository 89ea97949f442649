"""Live block jobs: mirror, stream, commit, backup, and external snapshots.

Each job runs on its own thread (never a vCPU's) against the
:class:`~vmforge.block.backend.BlockBackend` a device holds, while the guest
keeps reading and writing through it; the backend object stays the same
across a pivot or a snapshot (its layers change in place, drained first).

```python
job = start_mirror(backend, "copy.qcow2", device="hd0", format="qcow2")
job.wait_ready()            # or listen for BLOCK_JOB_READY (on_event=)
job.complete()              # the guest now runs on copy.qcow2
job.wait()
```

- ``start_mirror(backend, target, *, device, job_id=None, format=None, sync="full",
  mode="absolute-paths", speed=0, granularity=0, buf_size=0, on_event=None, **create_opts)``
  (:mod:`.mirror`), ``start_stream(backend, *, device, base=None, ...)`` (:mod:`.stream`),
  ``start_commit(backend, *, device, top=None, base=None, ...)`` (:mod:`.commit`; ``top``
  None or the active layer: active commit, ``type`` "commit" as QEMU's), ``start_backup(
  backend, target, *, device, format=None, sync="full", mode="absolute-paths", ...)``
  (:mod:`.backup`), ``snapshot_sync(backend, snapshot_file, *, format="qcow2",
  mode="absolute-paths", device=None)`` (:mod:`.snapshot`; ``device`` names the node in
  the busy error).  The starts also take ``auto_finalize``, ``auto_dismiss`` and
  ``registry`` (default: :data:`JOBS`, the process's; QMP keeps one per machine).
- :class:`BlockJob` (:mod:`.job`): ``id``, ``type``, ``device``, ``status`` (QEMU's
  JobStatus), ``offset``, ``len``, ``speed``, ``busy``, ``paused``, ``ready``,
  ``error``, ``io_status``, ``auto_finalize``, ``auto_dismiss``; ``pause``, ``resume``,
  ``set_speed``, ``complete``, ``cancel(force)``, ``finalize``, ``dismiss``,
  ``wait(timeout)``, ``info()`` (the ``query-block-jobs`` entry, QEMU 7.2's keys), and
  beyond the contract ``wait_ready(timeout)`` and ``cancel_sync()`` (force-cancel and
  wait: what ``BlockBackend.close`` does to the backend's job).  ``backend.job`` is the
  job using a backend (QEMU's op blocker: a second job or a snapshot is refused).
- Listeners (``on_event``, or ``registry.listeners`` for every job) get ``(job, event,
  data)``: ``JOB_STATUS_CHANGE`` (``id``, ``status``; ``created`` and ``running`` on the
  thread that starts the job, ``null`` on the one that dismisses it, the others on the
  job's),
  ``BLOCK_JOB_READY``, ``BLOCK_JOB_PENDING`` (``type``, ``id``; only with
  ``auto_finalize`` off, as QEMU), ``BLOCK_JOB_COMPLETED`` (with ``error`` on failure),
  ``BLOCK_JOB_CANCELLED``, ``BLOCK_JOB_ERROR`` (``device``, ``operation``, ``action``);
  data as QEMU sends it.  They are called with the job's lock held: they may call the
  job, but must not wait for another thread that does.  An I/O error ends the job as
  QEMU's ``on-error=report``: BLOCK_JOB_ERROR (``action`` "report"), then
  BLOCK_JOB_COMPLETED with the ``error``.
- :class:`JobError`: a refused operation, with QEMU's message.
- :class:`JobRegistry` (:mod:`.registry`): jobs by id (``get``, ``find`` with QEMU's
  not-found error, ``jobs``, ``query``).

What the jobs use of the backend (:mod:`vmforge.block.iohooks`): ``add_dirty_bitmap``
(:class:`vmforge.block.bitmap.DirtyBitmap`), ``add_write_notifier``, ``serialising`` /
``serialised``, ``drained`` / ``drain``, ``replace_layers``, ``reopen_layer``.
"""

from vmforge.block.jobs.backup import BackupJob, start_backup
from vmforge.block.jobs.commit import CommitJob, start_commit
from vmforge.block.jobs.job import STATUSES, BlockJob, JobError, JobListener
from vmforge.block.jobs.mirror import MirrorJob, start_mirror
from vmforge.block.jobs.registry import JOBS, JobRegistry
from vmforge.block.jobs.snapshot import snapshot_sync
from vmforge.block.jobs.stream import StreamJob, start_stream

__all__ = [
    "JOBS",
    "STATUSES",
    "BackupJob",
    "BlockJob",
    "CommitJob",
    "JobError",
    "JobListener",
    "JobRegistry",
    "MirrorJob",
    "StreamJob",
    "snapshot_sync",
    "start_backup",
    "start_commit",
    "start_mirror",
    "start_stream",
]
