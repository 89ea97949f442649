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
  None or the active layer: active commit), ``start_backup(backend, target, *, device,
  format=None, sync="full", mode="absolute-paths", ...)`` (:mod:`.backup`),
  ``snapshot_sync(backend, snapshot_file, *, format="qcow2", mode="absolute-paths")``
  (:mod:`.snapshot`).  All also take ``auto_finalize``, ``auto_dismiss`` and
  ``registry`` (default: :data:`JOBS`, the process's).
- :class:`BlockJob` (:mod:`.job`): ``id``, ``type``, ``device``, ``status`` (QEMU's
  JobStatus), ``offset``, ``len``, ``speed``, ``busy``, ``paused``, ``ready``,
  ``error``, ``auto_finalize``, ``auto_dismiss``; ``pause``, ``resume``,
  ``set_speed``, ``complete``, ``cancel(force)``, ``finalize``, ``dismiss``,
  ``wait(timeout)``, ``info()`` (the ``query-block-jobs`` entry, QEMU 7.2's keys).
- Listeners (``on_event``, or ``JOBS.listeners`` for every job) are called on the
  job's thread with ``(job, event, data)``: ``JOB_STATUS_CHANGE`` (``id``,
  ``status``), ``BLOCK_JOB_READY``, ``BLOCK_JOB_PENDING`` (``type``, ``id``; only
  with ``auto_finalize`` off, as QEMU),
  ``BLOCK_JOB_COMPLETED`` (with ``error`` on failure), ``BLOCK_JOB_CANCELLED``;
  ``BLOCK_JOB_ERROR`` (``device``, ``operation``, ``action``); data as QEMU sends it.
  An I/O error ends the job as QEMU's ``on-error=report``: BLOCK_JOB_ERROR
  (``action`` "report"), then BLOCK_JOB_COMPLETED with the ``error``.
- :class:`JobError`: a refused operation, with QEMU's message.
- :class:`JobRegistry` (:mod:`.registry`): jobs by id (``find``, ``jobs``, ``query``).
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
