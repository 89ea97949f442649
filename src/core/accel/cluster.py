"""Several RISC-V harts run as one machine's CPUs: slices, WFI, shared time.

:class:`HartCluster` is what a RISC-V board's ``Machine.run_cpus`` calls.  It
runs each hart for a slice in turn (the GIL is released inside each slice),
treats a hart stopped by ``wfi`` as halted until an enabled interrupt is
pending, and keeps the harts' ``mtime`` one clock.  Two kinds of time:

- host time (:meth:`HartCluster.use_host_time`, what machines use unless asked
  otherwise, as QEMU): ``mtime`` follows the machine's clock; when every hart
  is halted the machine sleeps until :meth:`HartCluster.idle_delay_ns` or an
  event.
- instruction-counted time (the default of a bare cluster, and ``-icount``):
  ``mtime`` advances ``time_mul / time_div`` ticks per retired instruction,
  harts are kept in step after each round, and when every hart is halted time
  moves to the earliest armed ``mtimecmp`` (at once, QEMU's ``-icount
  sleep=off``, or after waiting that long in host time, ``sleep=on``).

A stopped timer (``mtimecmp`` all ones, or MTIE clear) is no deadline.

On ``-accel interp,thread=multi`` (QEMU's MTTCG) a :class:`HartMachine` runs each
hart on a host thread of its own instead (:mod:`vmforge.accel.mttcg`);
``thread=single`` keeps the round robin above.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from vmforge.accel.interp import RiscvHart, RunResult, StopReason
from vmforge.accel.mttcg import HartThreads
from vmforge.machine import Machine, MachineError, ShutdownReason

TYPE_CHECKING = False
if TYPE_CHECKING:   # the debugging modules are imported when used (-d, hooks, gdb)
    import logging  # (so is logging: -d int, -d cpu)
    from typing import Any

    from vmforge.debug.hooks import Hooks
    from vmforge.debug.trace import CpuTrace

__all__ = ["HartCluster", "HartMachine"]

MIP_MTIP = 1 << 7
#: instructions a hart runs before the machine's loop takes its turn again
SLICE = 200_000
#: ... on host time, where that loop has nothing to do at each turn: calls from other
#: threads (console input, I/O completions, the monitor) end the slice at once
#: (call_soon kicks the harts) and each hart watches its own timers.  Each turn
#: costs some microseconds of Python: a tenth as many turns made the guest's shell
#: loop, md5sum and gzip 4-5% faster.
HOST_TIME_SLICE = 2_000_000
#: ``mtimecmp`` of a timer nobody armed (OpenSBI writes it to stop the timer)
NEVER = (1 << 64) - 1


class HartCluster:
    """``n`` harts on one address space, sharing LR/SC reservations and time."""

    def __init__(self, space: Any, n: int = 1, *, slice_instructions: int = SLICE,
                 time_div: int = 1, warp_idle: bool = True, time_mul: int = 1) -> None:
        if n < 1:
            raise ValueError("a cluster needs at least one hart")
        first = RiscvHart(space, 0, time_div=time_div)
        self.harts: list[RiscvHart] = [first] + [first.sibling(i) for i in range(1, n)]
        for h in self.harts:
            h.set_icount(time_mul, time_div)
            h.pause_ends_run = n > 1    # a spin-wait's pause ends the hart's turn
        self.slice_instructions = slice_instructions
        self.warp_idle = warp_idle
        self.host_time = False
        self.tick_ns = 100
        self.halted = [False] * n
        #: called with (hart, result) for stops the cluster does not handle itself
        #: (breakpoints, stop_on exceptions); returning normally resumes the cluster
        self.on_stop: Callable[[RiscvHart, RunResult], None] | None = None
        self.total_instructions = 0
        #: where ``-d int`` lines go (None: traps are not recorded)
        self.trace_log: logging.Logger | None = None

    def __len__(self) -> int:
        return len(self.harts)

    def use_host_time(self, origin_ns: int, tick_ns: int = 100) -> None:
        """``mtime`` = (``time.monotonic_ns()`` - ``origin_ns``) // ``tick_ns`` on
        every hart (plus what the guest wrote); call again with the new origin
        when the machine's clock resumes after a pause."""
        self.host_time = True
        self.tick_ns = tick_ns
        for h in self.harts:
            h.use_host_clock(origin_ns, tick_ns)

    def trace_traps(self, log: logging.Logger | None) -> None:
        """Log every trap of every hart to ``log`` (QEMU's ``-d int``), or stop."""
        self.trace_log = log
        if log is not None:                 # (a hart keeps 256 traps a slice)
            self.slice_instructions = min(self.slice_instructions, SLICE)
        for h in self.harts:
            h.trace_traps = log is not None

    def _log_traps(self, hart: RiscvHart) -> None:
        assert self.trace_log is not None
        lines, dropped = hart.take_trap_trace()
        for line in lines:
            self.trace_log.info("%s", line)
        if dropped:
            self.trace_log.info("hart %d: %d more traps in this slice not shown "
                                "(a trap storm)", hart.csr("mhartid"), dropped)

    def freeze_host_time(self) -> None:
        """Host time stands still on every hart (the machine is paused)."""
        for h in self.harts:
            h.freeze_host_clock()

    def use_icount(self, time_mul: int, time_div: int, *, warp_idle: bool = True) -> None:
        """Instruction-counted time: ``time_mul / time_div`` ticks per instruction."""
        self.host_time = False
        self.warp_idle = warp_idle
        for h in self.harts:
            h.set_icount(time_mul, time_div)

    def reset(self, pc: int, args: Sequence[tuple[int, int]] = ()) -> None:
        """Every hart to M-mode at ``pc``; ``args`` = (register, value) pairs set on
        each hart after reset (a0 = hartid is set for you)."""
        for i, h in enumerate(self.harts):
            h.reset(pc)
            h.x[10] = i
            for reg, value in args:
                h.x[reg] = value
            h.mtimecmp = NEVER          # (reset drops guest writes to mtime: on host
            # time mtime is the machine's clock again, instruction-counted it is 0)
        self.halted = [False] * len(self.harts)

    @property
    def mtime(self) -> int:
        if self.host_time:
            return self.harts[0].mtime
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
            if self.trace_log is not None:
                self._log_traps(hart)
            if result.reason is StopReason.WFI:
                self.halted[i] = not self._wakeable(hart)
            elif result.reason in (StopReason.BREAKPOINT, StopReason.EXCEPTION,
                                   StopReason.DEVICE_ERROR, StopReason.WATCHPOINT) \
                    and self.on_stop is not None:
                self.on_stop(hart, result)
        if not self.host_time:
            self._sync_time()
        # a hart that halted early in the round may have been woken since: by an
        # IPI or interrupt from a later hart, or by time moving on
        for i, hart in enumerate(self.harts):
            if self.halted[i] and self._wakeable(hart):
                self.halted[i] = False
        if all(self.halted) and not self.host_time and self.warp_idle:
            self._warp_to(self._next_deadline())
        return all(self.halted)

    def _next_deadline(self) -> int | None:
        """The earliest armed ``mtimecmp`` in the future (ticks), if every armed
        one is in the future (else an interrupt is already due)."""
        now = self.mtime
        deadlines = self._armed()
        future = [d for d in deadlines if d > now]
        if future and len(future) == len(deadlines):
            return min(future)
        return None

    def idle_delay_ns(self) -> int | None:
        """While every hart is halted: guest ns until the next hart timer fires
        (None: no timer armed; 0: due).  A timer that came due after the harts
        were found halted (host time runs on) is 0, not "none armed": the
        machine would otherwise sleep until some other event, its hart waiting
        in ``wfi`` for an interrupt already pending."""
        deadlines = self._armed()
        if not deadlines:
            return None
        return max(0, min(deadlines) - self.mtime) * self.tick_ns

    def _armed(self) -> list[int]:
        """Every hart's armed timer comparators (ticks)."""
        return [d for h in self.harts for d in h.armed_timers()]

    def advance_idle(self, ns: int) -> None:
        """Instruction-counted time: ``ns`` of idle time passed (``sleep=on``);
        time moves on by as much, at most to the next timer."""
        if self.host_time or ns <= 0:
            return
        target = self._next_deadline()
        if target is None:
            return
        self._warp_to(min(target, self.mtime + ns // self.tick_ns))

    def _warp_to(self, target: int | None) -> None:
        if target is None:
            return
        for h in self.harts:
            h.mtime = target
        for i, h in enumerate(self.harts):
            if self._wakeable(h):
                self.halted[i] = False

    def request_stop(self) -> None:
        """Make the running slice end soon (thread-safe)."""
        for h in self.harts:
            h.request_stop()


def _trace_writer(name: str) -> Callable[[str], None]:
    """Write whole trace records to where the logger ``name`` writes (its stream
    straight away when it has one: the exec trace writes a record per block)."""
    import logging

    log = logging.getLogger(name)
    for handler in log.handlers:
        if isinstance(handler, logging.StreamHandler):
            stream = handler.stream
            return lambda text: stream.write(text + "\n")
    return lambda text: log.info("%s", text)


class HartMachine(Machine):
    """A machine whose CPUs are a :class:`HartCluster` (every RISC-V board).

    ``build()`` calls :meth:`make_cluster` and sets ``reset_pc``, where the harts
    start (with ``a0`` = hart id); the base runs them.  Guest time follows the
    machine's clock unless ``config.icount`` asks for instruction counting;
    ``timebase_freq`` is the harts' ``mtime`` rate.

    ``config.extra["accel_thread"]`` (``-accel interp,thread=multi|single``):
    ``multi`` runs each hart on a host thread of its own (:attr:`hart_threads`,
    with :attr:`big_lock` a real lock around every device access), the default
    for more than one hart on host time where :attr:`threads_by_default`;
    ``single`` (and ``-icount``) has the harts take turns on the machine's thread.
    """

    accels = ("interp",)
    reset_pc: int = 0
    cluster: HartCluster | None = None
    timebase_freq: int = 10_000_000
    #: ``-d in_asm/exec/cpu`` (vmforge.debug.trace), when asked for
    cpu_trace: CpuTrace | None = None
    #: the harts' host threads on ``thread=multi`` (None: one thread, round robin)
    hart_threads: HartThreads | None = None
    #: boards whose harts take threads of their own with ``-smp`` > 1 unless told
    #: ``thread=single`` (riscv-virt; not spike, whose HTIF is polled between slices)
    threads_by_default: bool = False

    def make_cluster(self, **options: Any) -> HartCluster:
        """``config.smp`` harts on the machine's address space."""
        self.cluster = HartCluster(self.space, self.config.smp, **options)
        self.cpus = self.cluster.harts
        tick_ns = max(1, 1_000_000_000 // self.timebase_freq)
        icount = self.config.icount
        if icount is not None:
            mul, div = icount.ticks_per_instruction(tick_ns)
            self.cluster.tick_ns = tick_ns
            self.cluster.use_icount(mul, div, warp_idle=not icount.sleep)
        elif "time_div" not in options:
            self.cluster.use_host_time(self._clock_origin(), tick_ns)
            if "slice_instructions" not in options:
                self.cluster.slice_instructions = HOST_TIME_SLICE
        if self._threaded(icount is not None or "time_div" in options):
            self.big_lock = threading.RLock()
            self.hart_threads = HartThreads(self.cluster, self.big_lock, self._hart_failed)
        if "int" in self.config.trace:
            import logging

            self.cluster.trace_traps(logging.getLogger("vmforge.trace.int"))
        self._plug_guest_events()
        if self.config.trace:
            self._trace_cpus()
        return self.cluster

    def _trace_cpus(self) -> None:
        """``-d mmu``, ``-d in_asm/exec/cpu``: :mod:`vmforge.debug.trace`."""
        from vmforge.debug.trace import CPU_CATEGORIES, CpuTrace, MmuTrace

        assert self.cluster is not None
        if "mmu" in self.config.trace:
            MmuTrace(self.cluster.harts, self.space.memory, _trace_writer("vmforge.trace.cpu"))
        if any(t in CPU_CATEGORIES and t != "mmu" for t in self.config.trace):
            self.cpu_trace = CpuTrace(self.hooks, self.cluster.harts, self.space.memory,
                                      self.config.trace, _trace_writer("vmforge.trace.cpu"),
                                      self.config.extra.get("dfilter"))

    def _threaded(self, counted_time: bool) -> bool:
        """Whether the harts get a host thread each: ``thread=multi``, or by
        default with more than one hart on host time (as QEMU's MTTCG)."""
        mode = self.config.extra.get("accel_thread")
        if mode is None:
            return self.threads_by_default and self.config.smp > 1 and not counted_time
        if mode != "multi":
            return False
        if counted_time:
            raise MachineError(f"machine {self.name!r}: -accel interp,thread=multi: "
                               "instruction-counted time (-icount) needs thread=single")
        return True

    def _hart_failed(self, exc: BaseException) -> None:
        """A hart thread ended with ``exc`` (raised again by :meth:`run_cpus`)."""
        self.request_shutdown(ShutdownReason.ERROR, 1)

    def _plug_guest_events(self) -> None:
        """Route illegal instructions and unmapped accesses to plugins that
        implement their hook specifications (else they cost nothing)."""
        hook = self._hooks()
        if hook.vmforge_guest_illegal_instruction.get_hookimpls():
            self.hooks.invalid_insn(
                lambda hart, address, bits: hook.vmforge_guest_illegal_instruction(
                    machine=self, hart=hart, address=address, bits=bits))
        if hook.vmforge_guest_unmapped_access.get_hookimpls():
            self.hooks.mmio_unmapped(
                lambda hart, address, size, is_write, value:
                hook.vmforge_guest_unmapped_access(machine=self, hart=hart, address=address,
                                                   size=size, is_write=is_write, value=value))

    @property
    def hooks(self) -> Hooks:
        """Python hooks and watchpoints on the harts (:mod:`vmforge.debug.hooks`)."""
        assert self.cluster is not None, "build() must call make_cluster()"
        hooks = self.__dict__.get("_debug_hooks")
        if hooks is None:
            from vmforge.debug.hooks import Hooks

            hooks = self.__dict__["_debug_hooks"] = Hooks(self.cluster.harts,
                                                          self.space.memory)
        return hooks

    def _clock_origin(self) -> int:
        origin = self.clock.origin_ns()
        if origin is None:                      # not running yet: where it will resume
            origin = time.monotonic_ns() - self.clock.now_ns()
        return origin

    def clock_resumed(self, origin_ns: int) -> None:
        if self.cluster is not None and self.cluster.host_time:
            self.cluster.use_host_time(origin_ns, self.cluster.tick_ns)

    def clock_paused(self) -> None:
        self.park_cpus()
        if self.cluster is not None and self.cluster.host_time:
            self.cluster.freeze_host_time()

    def cpu_idle_delay_ns(self) -> int | None:
        if self.cluster is None or self.hart_threads is not None:
            return None         # (threads: each hart waits for its own timers)
        return self.cluster.idle_delay_ns()

    def cpu_idle_passed(self, ns: int) -> None:
        if self.cluster is not None:
            self.cluster.advance_idle(ns)

    def reset_cpus(self) -> None:
        assert self.cluster is not None, "build() must call make_cluster()"
        self.cluster.reset(self.reset_pc)

    def reset(self, reason: str = "user") -> None:
        self.park_cpus()
        super().reset(reason)

    def park_cpus(self) -> None:
        """End the hart threads and wait for them (``thread=multi``; they start
        again when the machine runs): before anything reads or changes the harts'
        state from outside (saving, loading, resetting, a paused machine's calls)."""
        if self.hart_threads is not None:
            self.hart_threads.park()

    def monitor_info(self, what: str) -> str | None:
        """``info registers|cpus`` read parked harts (on threads: they go on at the
        run loop's next turn, as QEMU's monitor has its vCPUs synchronised); the
        monitor prints the rest itself."""
        if what in ("registers", "cpus"):
            self.park_cpus()
        return None

    def run_pending_calls(self) -> int:
        if self.hart_threads is not None and self._soon and (self.paused or self.stopped):
            self.park_cpus()        # (a debugger's, the monitor's calls see still harts)
        return super().run_pending_calls()

    def kick_cpus(self) -> None:
        if self.hart_threads is not None:
            # the harts take interrupts without a kick; they stop only to pause,
            # reset or end the machine
            if self.stopped or self.paused or self._reset_requested:
                self.hart_threads.stop()
        elif self.cluster is not None:
            self.cluster.request_stop()

    def run_cpus(self) -> bool:
        assert self.cluster is not None, "build() must call make_cluster()"
        if self.hart_threads is not None:
            self.hart_threads.raise_error()     # what ended a hart thread
            self.hart_threads.start()
            return True     # the machine's thread waits for events; the harts run
        return self.cluster.run_slice()

    def run(self, timeout: float | None = None) -> int:
        """As :meth:`Machine.run`; what ended a hart thread comes out of here."""
        try:
            status = super().run(timeout)
        finally:
            if self.hart_threads is not None:
                self.hart_threads.park(5)
        if self.hart_threads is not None and self.hart_threads.error is not None:
            self._error = self.hart_threads.error
            self.hart_threads.raise_error()
        return status

    def close(self) -> None:
        if self.hart_threads is not None:
            self.hart_threads.park(5)
        super().close()
