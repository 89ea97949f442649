"""The jobs of a process by id, as ``query-block-jobs`` lists them."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vmforge.block.jobs.job import BlockJob, JobListener

__all__ = ["JOBS", "JobRegistry"]


class JobRegistry:
    """Jobs by id, in the order they started; ``listeners`` hear every job's events."""

    def __init__(self) -> None:
        self._jobs: dict[str, BlockJob] = {}
        self._lock = threading.Lock()
        self.listeners: list[JobListener] = []

    def add(self, job: BlockJob) -> None:
        from vmforge.block.jobs.job import JobError

        with self._lock:
            if job.id in self._jobs:
                raise JobError(f"Job ID '{job.id}' already in use")
            self._jobs[job.id] = job

    def check_id(self, job_id: str) -> None:
        """JobError if ``job_id`` is taken (checked before a target is created)."""
        from vmforge.block.jobs.job import JobError

        if job_id in self._jobs:
            raise JobError(f"Job ID '{job_id}' already in use")

    def remove(self, job: BlockJob) -> None:
        with self._lock:
            if self._jobs.get(job.id) is job:
                del self._jobs[job.id]

    def get(self, job_id: str) -> BlockJob | None:
        return self._jobs.get(job_id)

    def find(self, job_id: str) -> BlockJob:
        """The job, or QEMU's error for an unknown one (DeviceNotActive)."""
        from vmforge.block.jobs.job import JobError

        job = self._jobs.get(job_id)
        if job is None:
            raise JobError(f"Block job '{job_id}' not found")
        return job

    def jobs(self) -> list[BlockJob]:
        with self._lock:
            return list(self._jobs.values())

    def query(self) -> list[dict[str, object]]:
        """``query-block-jobs``'s return value."""
        return [job.info() for job in self.jobs()]


#: the process's registry (a test or a second machine may pass its own)
JOBS = JobRegistry()
