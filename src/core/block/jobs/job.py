"""The block job base: QEMU's job state machine, a thread per job, speed limits.

A job's thread runs :meth:`BlockJob.run` (the kind's copy loop), which calls
:meth:`BlockJob.pause_point` between steps (pausing there, raising
:class:`Cancelled` once force-cancelled) and :meth:`BlockJob.ratelimit` after
each copy.  When ``run`` returns, the job goes through QEMU's ending
(``job_completed``): *waiting*, *pending* (with ``auto_finalize`` off:
``BLOCK_JOB_PENDING``, and it stays there until :meth:`finalize`), the kind's
``prepare`` and ``commit`` (a mirror's pivot), ``BLOCK_JOB_COMPLETED``,
*concluded*, and with ``auto_dismiss`` *null*; a failure or a forced cancel goes
through *aborting* and the kind's ``abort`` instead.  Every transition is a
``JOB_STATUS_CHANGE`` event; listeners are called on the job's thread.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from vmforge.block.backend import BlockBackend
from vmforge.block.driver import BlockError
from vmforge.errors import VmforgeError

if TYPE_CHECKING:
    from vmforge.block.jobs.registry import JobRegistry

__all__ = ["STATUSES", "BlockJob", "Cancelled", "IoFailure", "JobError", "JobListener",
           "RateLimit", "check_free", "io"]

log = logging.getLogger(__name__)

JobListener = Callable[["BlockJob", str, dict[str, Any]], None]

#: QEMU's JobStatus, in its order
STATUSES = ("undefined", "created", "running", "paused", "ready", "standby", "waiting",
            "pending", "aborting", "concluded", "null")
_STT = {   # job.c JobSTT: the transitions allowed from each status
    "undefined": {"created"},
    "created": {"running", "aborting", "null"},
    "running": {"paused", "ready", "waiting", "aborting"},
    "paused": {"running"},
    "ready": {"standby", "waiting", "aborting"},
    "standby": {"ready"},
    "waiting": {"pending", "aborting"},
    "pending": {"aborting", "concluded"},
    "aborting": {"aborting", "concluded"},
    "concluded": {"null"},
    "null": set(),
}
_VERBS = {   # job.c JobVerbTable: the statuses that accept each verb
    "cancel": {"created", "running", "paused", "ready", "standby", "waiting", "pending"},
    "pause": {"created", "running", "paused", "ready", "standby"},
    "resume": {"created", "running", "paused", "ready", "standby"},
    "set-speed": {"created", "running", "paused", "ready", "standby"},
    "complete": {"ready", "standby"},
    "finalize": {"pending"},
    "dismiss": {"concluded"},
}
#: BLOCK_JOB_SLICE_TIME: the rate limit's accounting period
SLICE_NS = 100_000_000


class JobError(VmforgeError):
    """A refused job operation, with QEMU's message."""


class Cancelled(Exception):
    """Raised at a pause point of a force-cancelled job."""


class IoFailure(Exception):
    """An I/O error of a job's copy: which side (``read``/``write``) and the error."""

    def __init__(self, operation: str, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.operation = operation
        self.cause = cause


@contextlib.contextmanager
def io(operation: str) -> Iterator[None]:
    """Errors of the I/O inside become :class:`IoFailure` of ``operation``."""
    try:
        yield
    except (OSError, BlockError) as exc:
        raise IoFailure(operation, exc) from exc


class RateLimit:
    """QEMU's ``util/throttle`` ratelimit: bytes per second, accounted in slices."""

    def __init__(self) -> None:
        self.slice_quota = 0
        self.slice_ns = SLICE_NS
        self.slice_start = self.slice_end = 0
        self.dispatched = 0

    def set_speed(self, speed: int) -> None:
        self.slice_quota = max(int(speed * self.slice_ns / 1e9), 1) if speed else 0

    def delay_ns(self, n: int) -> int:
        """Account ``n`` bytes; how long to wait before the next ones (ns)."""
        if not self.slice_quota:
            return 0
        now = time.monotonic_ns()
        if self.slice_end < now:
            self.slice_start, self.slice_end, self.dispatched = now, now + self.slice_ns, 0
        if self.dispatched == 0 or self.dispatched + n <= self.slice_quota:
            self.dispatched += n
            return 0
        slices = self.dispatched / self.slice_quota
        self.slice_end = self.slice_start + int(slices * self.slice_ns)
        return self.slice_end - now


class BlockJob:
    """One running block job (see the package's docstring for the API)."""

    #: QEMU's JobType name of the kind
    job_type: ClassVar[str] = ""

    def __init__(self, backend: BlockBackend, *, device: str, job_id: str | None = None,
                 speed: int = 0, on_event: JobListener | None = None,
                 auto_finalize: bool = True, auto_dismiss: bool = True,
                 registry: JobRegistry | None = None) -> None:
        from vmforge.block.jobs.registry import JOBS

        self.backend = backend
        self.type = self.job_type
        self.device = device
        self.id = job_id if job_id is not None else device
        self.status = "undefined"
        self.offset = 0
        self.len = 0
        self.speed = 0
        self.error: str | None = None
        self.io_status = "ok"
        self.auto_finalize = auto_finalize
        self.auto_dismiss = auto_dismiss
        self.busy = False
        self.listeners: list[JobListener] = [on_event] if on_event else []
        self.registry = registry if registry is not None else JOBS
        self._cond = threading.Condition()
        self._pause_count = 0
        self._user_paused = False
        self._cancelled = False
        self._force_cancel = False
        self._should_complete = False
        self._finalize_requested = False
        self._limit = RateLimit()
        self._thread: threading.Thread | None = None
        self._started = False
        if speed < 0:
            raise JobError("Invalid parameter 'speed'")
        if job_id is not None and not _id_wellformed(job_id):
            raise JobError(f"Invalid job ID '{job_id}'")
        check_free(backend, device)
        self.speed = speed
        self._limit.set_speed(speed)

    # -- for QMP -----------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        return self._pause_count > 0

    @property
    def ready(self) -> bool:
        return self.status in ("ready", "standby")

    def info(self) -> dict[str, Any]:
        """The ``query-block-jobs`` entry (QEMU's BlockJobInfo, its key order)."""
        d: dict[str, Any] = {
            "type": self.type, "device": self.id, "len": self.len, "offset": self.offset,
            "busy": self.busy, "paused": self.paused, "speed": self.speed,
            "io-status": self.io_status, "ready": self.ready, "status": self.status,
            "auto-finalize": self.auto_finalize, "auto-dismiss": self.auto_dismiss,
        }
        if self.error is not None:
            d["error"] = self.error
        return d

    def pause(self) -> None:
        with self._cond:
            self._verb("pause")
            if self._user_paused:
                raise JobError("Job is already paused")
            self._user_paused = True
            self._pause_count += 1
            self._cond.notify_all()
            # QEMU enters the job at once: it is paused when the command returns
            self._settle(lambda: self.status not in ("running", "ready"))

    def resume(self) -> None:
        with self._cond:
            self._verb("resume")
            if not self._user_paused or self._pause_count <= 0:
                raise JobError("Can't resume a job that was not paused")
            self._user_paused = False
            self._pause_count -= 1
            self._cond.notify_all()
            self._settle(lambda: self._pause_count > 0
                         or self.status not in ("paused", "standby"))

    def set_speed(self, speed: int) -> None:
        with self._cond:
            self._verb("set-speed")
            if speed < 0:
                raise JobError("Invalid parameter 'speed'")
            self.speed = speed
            self._limit.set_speed(speed)
            self._cond.notify_all()

    def _settle(self, done: Callable[[], bool], timeout: float = 10) -> None:
        """Wait (the condition held) until the job's thread has reacted, unless this is
        that thread or the thread has not started its work."""
        if not self._started or threading.current_thread() is self._thread:
            return
        self._cond.wait_for(lambda: done() or self.status in ("concluded", "null"),
                            timeout)

    def complete(self) -> None:
        with self._cond:
            self._verb("complete")
            if self._cancelled or not self.can_complete():
                raise JobError(f"The active block job '{self.id}' cannot be completed")
            self._should_complete = True
            self._cond.notify_all()

    def can_complete(self) -> bool:
        """Whether the kind has a complete step (mirror, active commit)."""
        return False

    def cancel(self, force: bool = False) -> None:
        """QEMU's block-job-cancel: a ready mirror without ``force`` completes without a
        pivot; otherwise the job ends as cancelled."""
        with self._cond:
            if self._user_paused and not force:
                raise JobError(f"The block job for device '{self.id}' is currently paused")
            self._verb("cancel")
            force = force or not self.ready
            if not self._cancelled or force:
                self._cancelled = True
                self._force_cancel |= force
            self._cond.notify_all()

    def cancel_sync(self, timeout: float | None = 60) -> None:
        """Force-cancel and wait for the end, whatever the state (QEMU's
        job_cancel_sync, as when its disk goes away); nothing to do once concluded."""
        with self._cond:
            if self.status in _VERBS["cancel"]:
                self._cancelled = self._force_cancel = True
            elif self.status == "concluded" and self.auto_dismiss:
                self._dismiss_locked()
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self.wait(timeout)

    def finalize(self) -> None:
        with self._cond:
            self._verb("finalize")
            self._finalize_requested = True
            self._cond.notify_all()

    def dismiss(self) -> None:
        with self._cond:
            self._verb("dismiss")
            self._dismiss_locked()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the job has concluded (or is gone); True if it has."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self.status not in ("concluded", "null"):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the job is ready (True) or has ended (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self.status not in ("ready", "standby", "concluded", "null"):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cond.wait(left)
            return self.ready

    def _verb(self, verb: str) -> None:
        if self.status not in _VERBS[verb]:
            raise JobError(f"Job '{self.id}' in state '{self.status}' cannot accept command "
                           f"verb '{verb}'")

    def _dismiss_locked(self) -> None:
        self.registry.remove(self)
        self._transition("null")

    # -- starting and the thread ------------------------------------------------------

    def start(self) -> None:
        """Register the job and start its thread; created -> running on the caller's
        thread (QEMU's job_create and job_start: a query right after shows it running)."""
        self.registry.add(self)
        self.backend.job = self
        self._thread = threading.Thread(target=self._main, name=f"job-{self.id}", daemon=True)
        with self._cond:
            self._transition("created")
            self._started = True
            self.busy = True
            self._transition("running")
        self._thread.start()

    def _main(self) -> None:
        ret_error: str | None = None
        try:
            if self._force_cancel:
                raise Cancelled
            self.run()
            if self._cancelled and self._force_cancel:
                raise Cancelled
        except Cancelled:
            pass
        except IoFailure as exc:   # QEMU's on-error=report: the event, then the job ends
            log.debug("job %s failed", self.id, exc_info=True)
            ret_error = _message(exc.cause)
            self._emit("BLOCK_JOB_ERROR", {"device": self.id, "operation": exc.operation,
                                           "action": "report"})
        except Exception as exc:
            log.debug("job %s failed", self.id, exc_info=True)
            ret_error = _message(exc)
        self.busy = False
        self._finish(ret_error)

    def _finish(self, ret_error: str | None) -> None:
        cancelled = self._cancelled and self._force_cancel
        if ret_error is None and not cancelled:
            with self._cond:
                self._transition("waiting")
                self._transition("pending")
            if not self.auto_finalize:    # (job_transition_to_pending: only then)
                self._emit("BLOCK_JOB_PENDING", {"type": self.type, "id": self.id})
            with self._cond:
                while not self.auto_finalize and not self._finalize_requested:
                    if self._cancelled:
                        cancelled = self._force_cancel = True
                        break
                    self._cond.wait()
            if not cancelled:
                try:
                    self.prepare()
                except Exception as exc:
                    log.debug("job %s: prepare failed", self.id, exc_info=True)
                    ret_error = _message(exc)
        if cancelled and ret_error is None:
            ret_error = os.strerror(errno.ECANCELED)
        if ret_error is not None:
            self.error = ret_error
            with self._cond:
                self._transition("aborting")
            try:
                self.abort()
            except Exception:
                log.warning("job %s: cleaning up after the failure failed", self.id,
                            exc_info=True)
        self._cleanup()
        data = {"type": self.type, "device": self.id, "len": self.len,
                "offset": self.offset, "speed": self.speed}
        if not self._started:
            pass            # (QEMU: events only for a job that started)
        elif cancelled:
            self._emit("BLOCK_JOB_CANCELLED", data)
        else:
            if ret_error is not None:
                data["error"] = ret_error
            self._emit("BLOCK_JOB_COMPLETED", data)
        with self._cond:
            self._transition("concluded")
            if self.auto_dismiss:
                self._dismiss_locked()

    def _cleanup(self) -> None:
        try:
            self.clean()
        except Exception:
            log.warning("job %s: clean-up failed", self.id, exc_info=True)
        if self.backend.job is self:
            self.backend.job = None

    # -- for the kinds -----------------------------------------------------------------

    def run(self) -> None:
        """The copy loop; returns when the work is done (or soft-cancelled)."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Before COMPLETED, on success (a mirror's pivot)."""

    def abort(self) -> None:
        """After a failure or a forced cancel."""

    def clean(self) -> None:
        """Always, last (detach bitmaps and notifiers, close the target)."""

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @property
    def should_complete(self) -> bool:
        return self._should_complete

    def pause_point(self) -> None:
        """Stop here while paused; raise :class:`Cancelled` once force-cancelled."""
        if self._force_cancel:
            raise Cancelled
        if not self._pause_count:
            return
        with self._cond:
            if self._pause_count and not self._force_cancel:
                self.busy = False
                self._transition("standby" if self.status == "ready" else "paused")
                while self._pause_count and not self._force_cancel:
                    self._cond.wait()
                self._transition("ready" if self.status == "standby" else "running")
                self.busy = True
        if self._force_cancel:
            raise Cancelled

    def sleep(self, seconds: float) -> None:
        """Sleep (not busy), woken early by pause, cancel, complete or a new speed."""
        with self._cond:
            self._sleep_locked(seconds)

    def _sleep_locked(self, seconds: float) -> None:
        self.busy = False
        if not (self._cancelled or self._pause_count or self._should_complete):
            self._cond.wait(seconds)
        self.busy = True

    def ratelimit(self, n: int) -> None:
        """Account ``n`` bytes copied and sleep as the speed limit asks (QEMU's
        block_job_ratelimit_processed_bytes then block_job_ratelimit_sleep).  The
        delay is read with the condition held, as set_speed changes the limit with
        it held: a new speed (0: none) can never slip in between the reading and
        the wait and leave the job asleep for the old speed's delay."""
        with self._cond:
            self._limit.delay_ns(n)
        while True:
            with self._cond:
                delay = self._limit.delay_ns(0)
                if not delay or self._cancelled:
                    return
                self._sleep_locked(delay / 1e9)
            if self._pause_count:
                return

    def set_ready(self) -> None:
        with self._cond:
            if self.status == "running":
                self._transition("ready")
            else:
                return
        self._emit("BLOCK_JOB_READY", {"type": self.type, "device": self.id, "len": self.len,
                                       "offset": self.offset, "speed": self.speed})

    def _transition(self, status: str) -> None:
        """Change status (the caller holds the condition) and tell the listeners."""
        if status not in _STT[self.status]:
            raise AssertionError(f"job {self.id}: {self.status} -> {status}")
        self.status = status
        self._cond.notify_all()
        self._emit("JOB_STATUS_CHANGE", {"id": self.id, "status": status})

    def _emit(self, event: str, data: dict[str, Any]) -> None:
        for listener in (*self.listeners, *self.registry.listeners):
            try:
                listener(self, event, data)
            except Exception:
                log.warning("job %s: a listener of %s failed", self.id, event, exc_info=True)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.status} {self.offset}/{self.len}>"


def check_free(backend: BlockBackend, device: str) -> None:
    """JobError if a job already uses ``backend`` (QEMU's op blocker)."""
    if backend.job is not None:
        raise JobError(f"Node '{device}' is busy: block device is in use by block job: "
                       f"{backend.job.type}")


def _id_wellformed(job_id: str) -> bool:
    """QEMU's id_wellformed: a letter, then letters, digits, '-', '.', '_'."""
    return bool(job_id) and job_id[0].isascii() and job_id[0].isalpha() and all(
        c.isascii() and (c.isalnum() or c in "-._") for c in job_id)


def _message(exc: BaseException) -> str:
    """An error as QEMU words a job's: the errno's text for an OS error."""
    if isinstance(exc, OSError) and exc.strerror and not isinstance(exc, VmforgeError):
        return exc.strerror
    return str(exc)
