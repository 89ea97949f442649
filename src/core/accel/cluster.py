"""Several RISC-V harts run as one machine's CPUs: slices, WFI, shared time.

:class:`HartCluster` is what a RISC-V board's ``Machine.run_cpus`` calls.  It
runs each hart for a slice in turn (the GIL is released inside each slice),
keeps the harts' ``mtime`` in step, treats a hart stopped by ``wfi`` as halted
until an enabled interrupt is pending, and, when every hart is halted, moves
time forward to the earliest armed ``mtimecmp`` so an idle guest does not wait
for nothing (QEMU's ``-icount sleep=off``).  Guest time counts retired
instructions: ``time_div`` instructions per tick of the 10 MHz timebase.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from vmforge.accel.interp import RiscvHart, RunResult, StopReason
from vmforge.machine import Machine

__all__ = ["HartCluster", "HartMachine"]

MIP_MTIP = 1 << 7
MIE_MTIE = 1 << 7
#: ``mtimecmp`` of a timer nobody armed (OpenSBI writes it to stop the timer)
NEVER = (1 << 64) - 1


class HartCluster:
    """``n`` harts on one address space, sharing LR/SC reservations and time."""

    def __init__(self, space: Any, n: int = 1, *, slice_instructions: int = 200_000,
                 time_div: int = 1, warp_idle: bool = True) -> None:
        if n < 1:
            raise ValueError("a cluster needs at least one hart")
        first = RiscvHart(space, 0, time_div=time_div)
        self.harts: list[RiscvHart] = [first] + [first.sibling(i) for i in range(1, n)]
        for h in self.harts[1:]:
            h.time_div = time_div
        self.slice_instructions = slice_instructions
        self.warp_idle = warp_idle
        self.halted = [False] * n
        #: called with (hart, result) for stops the cluster does not handle itself
        #: (breakpoints, stop_on exceptions); returning normally resumes the cluster
        self.on_stop: Callable[[RiscvHart, RunResult], None] | None = None
        self.total_instructions = 0

    def __len__(self) -> int:
        return len(self.harts)

    def reset(self, pc: int, args: Sequence[tuple[int, int]] = ()) -> None:
        """Every hart to M-mode at ``pc``; ``args`` = (register, value) pairs set on
        each hart after reset (a0 = hartid is set for you)."""
        for i, h in enumerate(self.harts):
            h.reset(pc)
            h.x[10] = i
            for reg, value in args:
                h.x[reg] = value
            h.mtime = 0
            h.mtimecmp = NEVER
        self.halted = [False] * len(self.harts)

    @property
    def mtime(self) -> int:
        return max(h.mtime for h in self.harts)

    def _sync_time(self) -> int:
        now = self.mtime
        for h in self.harts:
            if h.mtime != now:
                h.mtime = now
        return now

    def _wakeable(self, hart: RiscvHart) -> bool:
        return bool(hart.csr("mip") & hart.csr("mie"))

    def run_slice(self) -> bool:
        """Run every hart that is not halted for one slice; True when all are halted."""
        for i, hart in enumerate(self.harts):
            if self.halted[i]:
                if not self._wakeable(hart):
                    continue
                self.halted[i] = False
            result = hart.run(self.slice_instructions)
            self.total_instructions += result.executed
            if result.reason is StopReason.WFI:
                self.halted[i] = not self._wakeable(hart)
            elif result.reason in (StopReason.BREAKPOINT, StopReason.EXCEPTION,
                                   StopReason.DEVICE_ERROR) and self.on_stop is not None:
                self.on_stop(hart, result)
        self._sync_time()
        # a hart that halted early in the round may have been woken since: by an
        # IPI or interrupt from a later hart, or by time moving on in the sync
        for i, hart in enumerate(self.harts):
            if self.halted[i] and self._wakeable(hart):
                self.halted[i] = False
        if all(self.halted) and self.warp_idle:
            self._warp_to_next_timer()
        return all(self.halted)

    def _warp_to_next_timer(self) -> None:
        now = self.mtime
        deadlines = [h.mtimecmp for h in self.harts
                     if h.csr("mie") & MIE_MTIE and h.mtimecmp != NEVER]
        future = [d for d in deadlines if d > now]
        if future and len(future) == len(deadlines):
            target = min(future)
            for h in self.harts:
                h.mtime = target
            for i, h in enumerate(self.harts):
                if self._wakeable(h):
                    self.halted[i] = False

    def request_stop(self) -> None:
        """Make the running slice end soon (thread-safe)."""
        for h in self.harts:
            h.request_stop()


class HartMachine(Machine):
    """A machine whose CPUs are a :class:`HartCluster` (every RISC-V board).

    ``build()`` calls :meth:`make_cluster` and sets ``reset_pc``, where the harts
    start (with ``a0`` = hart id); the base runs them.
    """

    accels = ("interp",)
    reset_pc: int = 0
    cluster: HartCluster | None = None

    def make_cluster(self, **options: Any) -> HartCluster:
        """``config.smp`` harts on the machine's address space."""
        self.cluster = HartCluster(self.space, self.config.smp, **options)
        self.cpus = self.cluster.harts
        return self.cluster

    def reset_cpus(self) -> None:
        assert self.cluster is not None, "build() must call make_cluster()"
        self.cluster.reset(self.reset_pc)

    def kick_cpus(self) -> None:
        if self.cluster is not None:
            self.cluster.request_stop()

    def run_cpus(self) -> bool:
        assert self.cluster is not None, "build() must call make_cluster()"
        return self.cluster.run_slice()
