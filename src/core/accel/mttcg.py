"""Each hart of a :class:`~vmforge.accel.cluster.HartCluster` on a host thread of
its own (QEMU's multi-threaded TCG, ``-accel interp,thread=multi``; riscv-virt's
default with ``-smp`` > 1 on host time, ``thread=single`` keeps the round robin).

A hart thread calls :meth:`RiscvHart.run` for a slice at a time; the run loop is
C without the GIL, so harts run in parallel.  What makes that safe:

- memory: the harts' plain loads and stores are the host's (x86-64's TSO is
  stronger than RVWMO); ``fence`` with a write before and a read after is
  ``mfence``; AMOs are host atomics; SC is a compare-and-swap against the value
  LR loaded, as QEMU's MTTCG (each hart keeps its reservation to itself: a
  store of another hart is seen by the CAS, not by a shared table); A/D bits
  go into PTEs by compare-and-swap (``riscv_atomic.pxi``, on by ``hart.smp``).
- devices: every access a hart makes outside RAM takes the machine's big lock
  (``hart.io_lock``), which the machine's thread also holds while it runs
  timers and queued calls, as QEMU's BQL.  Devices change another hart's mip
  by ``set_irq_line`` (an atomic word store of the GIL-holding caller; the
  target notices at its next block boundary and, parked in ``wfi``, is woken).
- remote fences (SBI RFENCE, IPIs through the CLINT): each hart runs its own
  ``sfence.vma`` / ``fence.i`` on its own thread, so no hart touches another's
  TLBs or decoded code; decoded code is per hart and keyed by physical page, and
  code another hart wrote is seen after this hart's ``fence.i`` (snapshots of
  decoded pages), as the ISA requires.
- ``wfi``: the thread sleeps on an event until an interrupt line, an
  ``mtimecmp`` write or its own timer's deadline (at most :data:`IDLE_POLL_S`).
- stops: pausing, resetting, ending the machine, saving or loading its state,
  the gdbstub and the monitor's register reads all run with the threads ended
  (:meth:`HartThreads.park`); they start again when the machine runs.

Time is the host's: instruction-counted time (``-icount``) needs one thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from vmforge._fast.riscv import own_reservations
from vmforge.accel.interp import RiscvHart, StopReason
from vmforge.accel.locks import released

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from vmforge.accel.cluster import HartCluster

__all__ = ["IDLE_POLL_S", "HartThreads"]

#: the longest a hart parked in ``wfi`` sleeps before looking at its timers again
IDLE_POLL_S = 0.05
#: how often :meth:`HartThreads.park` asks a hart thread that has not ended again
_REQUEST_AGAIN_S = 0.02

_HANDED_ON = (StopReason.BREAKPOINT, StopReason.EXCEPTION, StopReason.DEVICE_ERROR,
              StopReason.WATCHPOINT)


class HartThreads:
    """The host threads of a cluster's harts; ``lock`` is the machine's big lock.

    :meth:`start` starts one thread per hart (no-op while they run), :meth:`stop`
    asks them to end (from any thread, also a hart's own: it does not wait),
    :meth:`park` ends them and waits (never from a hart thread).  An exception
    out of a hart (a device's) ends every thread; ``on_error`` is called with it
    on that thread and :meth:`raise_error` raises it again.
    """

    def __init__(self, cluster: HartCluster, lock: Any,
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        self.cluster = cluster
        self.lock = lock
        self.on_error = on_error
        self.error: BaseException | None = None
        self._threads: list[threading.Thread] = []
        self._events = [threading.Event() for _ in cluster.harts]
        self._stopping = False
        self._count_lock = threading.Lock()
        for hart, event in zip(cluster.harts, self._events, strict=True):
            own_reservations(hart)      # (no line every store reads is shared)
            hart.smp = 1
            hart.io_lock = lock
            hart.wake = event.set

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def start(self) -> None:
        """Start the hart threads unless they run (or one ended with an error)."""
        if self._threads or self.error is not None:
            return
        self._stopping = False
        for i, hart in enumerate(self.cluster.harts):
            t = threading.Thread(target=self._run, args=(i, hart),
                                 name=f"vmforge-hart{i}", daemon=True)
            self._threads.append(t)
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """Make every hart thread end soon (any thread; does not wait)."""
        self._stopping = True
        for hart, event in zip(self.cluster.harts, self._events, strict=True):
            hart.request_stop()
            event.set()

    def park(self, timeout: float | None = None) -> None:
        """End the hart threads and wait for them.  The caller may hold the big
        lock (a queued call): it is let go of while waiting, so a hart finishing
        a device access can take it."""
        me = threading.current_thread()
        if me in self._threads:
            raise RuntimeError("a hart thread cannot park the hart threads")
        self.stop()
        if not self._threads:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        with released(self.lock):
            for t in self._threads:
                while t.is_alive():
                    wait = _REQUEST_AGAIN_S
                    if deadline is not None:
                        wait = min(wait, deadline - time.monotonic())
                        if wait <= 0:
                            break
                    t.join(wait)
                    # a run that began after its thread read _stopping and before
                    # request_stop ran starts with no stop requested: ask again
                    self.stop()
        self._threads = [t for t in self._threads if t.is_alive()]

    def raise_error(self) -> None:
        """Raise what ended a hart thread, if anything (once)."""
        exc, self.error = self.error, None
        if exc is not None:
            raise exc

    # -- one hart's thread -----------------------------------------------------------

    def _run(self, i: int, hart: RiscvHart) -> None:
        cluster = self.cluster
        event = self._events[i]
        budget = cluster.slice_instructions
        try:
            while not self._stopping:
                if cluster.halted[i]:
                    event.clear()
                    if not cluster._wakeable(hart):
                        event.wait(self._idle_wait(hart))
                        continue
                    cluster.halted[i] = False
                result = hart.run(budget)
                with self._count_lock:
                    cluster.total_instructions += result.executed
                if cluster.trace_log is not None:
                    with self.lock:
                        cluster._log_traps(hart)
                if result.reason is StopReason.WFI:
                    cluster.halted[i] = not cluster._wakeable(hart)
                elif result.reason in _HANDED_ON and cluster.on_stop is not None:
                    with self.lock:
                        cluster.on_stop(hart, result)
        except BaseException as exc:        # a device's, a hook's: the machine ends
            self.error = exc
            self.stop()
            if self.on_error is not None:
                self.on_error(exc)

    def _idle_wait(self, hart: RiscvHart) -> float:
        """Seconds until the hart's earliest armed timer (at most IDLE_POLL_S)."""
        armed = hart.armed_timers()
        if not armed:
            return IDLE_POLL_S
        ticks = min(armed) - hart.mtime
        if ticks <= 0:
            return 0.001            # due: the next look at mip finds it
        return min(IDLE_POLL_S, ticks * self.cluster.tick_ns / 1e9)
