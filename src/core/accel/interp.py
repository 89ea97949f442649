"""The software CPU: RISC-V RV64GC harts in C (``vmforge._fast.riscv``).

A :class:`RiscvHart` runs over an :class:`~vmforge.memory.AddressSpace`::

    hart = RiscvHart(space, hartid=0, pc=0x8000_0000)
    result = hart.run(1_000_000)      # -> RunResult(reason, pc, executed, cause, tval)

``run`` releases the GIL and returns on the first block boundary (taken branch
or jump, code-page change, privileged-state change) at or after the budget, on
``wfi`` with nothing pending (``StopReason.WFI``: the caller waits for an
interrupt, then calls ``run`` again), at a breakpoint (before executing it), on
an exception whose cause is in :attr:`RiscvHart.stop_on` (before taking the
trap; ``stop_on_ecall=True`` adds the three ecall causes), or on
:meth:`request_stop` from another thread.  ``run(n, exact=True)`` and
:meth:`RiscvHart.step` count exactly (each instruction decoded and run alone:
for debuggers and tests, not for speed).  An exception raised by a Python
device during MMIO propagates out of ``run`` with the hart stopped at the
instruction that made the access; so does one raised by a signal handler
(Ctrl-C: Python's signals are looked at every 16 M instructions).

Two tiers: an interpreter over pre-decoded instructions runs everything; the
code a jump reaches often (32 times) is compiled, with what it reaches in its
page by integer, load/store and jump instructions, to x86-64 (on x86-64 Linux;
``riscv_jit.pxi``).  Compiled code keeps guest registers in host registers,
probes the same TLBs, counts the same instructions and returns to the
interpreter for anything else (CSRs, FP, atomics, traps, device accesses), so
results and ``instret`` do not depend on it.  ``hart.jit = False`` (or
``VMFORGE_JIT=0`` in the environment) keeps a hart on the interpreter alone.

Harts sharing one RAM must share one :class:`ReservationSet` (pass the first
hart's ``reservations`` to the others, or use :meth:`RiscvHart.sibling`) so a
store by one clears the others' LR reservations; run them from one thread.

Time: by default ``mtime`` counts instructions: it advances ``time_mul /
time_div`` ticks per retired instruction of this hart (:meth:`set_icount`);
:meth:`use_host_clock` makes it follow the host's monotonic clock instead
(sampled for the timer interrupt every 32 K instructions, read afresh by the
``time`` CSR).  When ``mtime`` reaches ``mtimecmp`` MTIP is pending.  A machine that models the
CLINT elsewhere sets ``mtimecmp`` and reads ``mtime`` here, or drives MTIP with
:meth:`set_irq_line`.  ``set_irq_line(bit, level)`` drives any mip bit from
outside (MSIP 3, MTIP 7, MEIP 11, SEIP 9 for the PLIC's S-mode context).

Misaligned loads and stores are emulated (in RAM they just happen; across
pages they are split into bytes after checking both pages); LR/SC and AMOs
must be naturally aligned.

What the hart is: RV64IMAFDC (RV64GC), Zicsr, Zifencei, Zicntr, ``pause``;
privileged spec 1.12 with M, S and U, Sv39 and Sv48 (A/D bits set by the
walk; 16 ASID bits in satp), medeleg/mideleg, vectored or direct mtvec/stvec,
the six standard interrupts in the standard priority order.  Not there: PMP checks (the CSRs
hold what is written, which is enough for OpenSBI), debug triggers (the CSRs
say there are none), H, V, B and other extensions, Svpbmt/Svnapot (PTE bits
63:54 set raise a page fault).

Caches and what invalidates them: decoded instructions are kept per physical
page and patched when this hart stores into them, dropped on ``fence.i`` and
when the RAM map changes; TLBs are kept per address space (a satp value: eight
of them, the least recently used one cleared for a new one), flushed by
``sfence.vma`` (all, one ASID's or one page's) and MXR changes.  Code written
into RAM from outside the hart (a loader, DMA, another hart) is seen after the
guest's ``fence.i`` (as the ISA requires) or :meth:`RiscvHart.flush_caches`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator

from vmforge._fast import riscv as _riscv

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NamedTuple

    from vmforge.memory import AddressSpace
else:
    from vmforge.typing_runtime import NamedTuple

__all__ = ["CSR", "ReservationSet", "RiscvHart", "RunResult", "StopReason"]

ReservationSet = _riscv.ReservationSet


class StopReason(enum.IntEnum):
    """Why :meth:`RiscvHart.run` returned."""

    BUDGET = 1
    WFI = 2
    BREAKPOINT = 3
    EXCEPTION = 4
    DEVICE_ERROR = 5
    REQUEST = 6
    WATCHPOINT = 7      # before a watched access (see :meth:`RiscvHart.watch_hit`)


#: CSR names the Python face understands (any number works too).
CSR: dict[str, int] = {
    "fflags": 0x001, "frm": 0x002, "fcsr": 0x003,
    "cycle": 0xC00, "time": 0xC01, "instret": 0xC02,
    "sstatus": 0x100, "sie": 0x104, "stvec": 0x105, "scounteren": 0x106,
    "senvcfg": 0x10A, "sscratch": 0x140, "sepc": 0x141, "scause": 0x142,
    "stval": 0x143, "sip": 0x144, "satp": 0x180,
    "mvendorid": 0xF11, "marchid": 0xF12, "mimpid": 0xF13, "mhartid": 0xF14,
    "mconfigptr": 0xF15,
    "mstatus": 0x300, "misa": 0x301, "medeleg": 0x302, "mideleg": 0x303,
    "mie": 0x304, "mtvec": 0x305, "mcounteren": 0x306, "menvcfg": 0x30A,
    "mcountinhibit": 0x320, "mscratch": 0x340, "mepc": 0x341, "mcause": 0x342,
    "mtval": 0x343, "mip": 0x344, "mcycle": 0xB00, "minstret": 0xB02,
    **{f"pmpcfg{i}": 0x3A0 + i for i in range(0, 16, 2)},
    **{f"pmpaddr{i}": 0x3B0 + i for i in range(64)},
}

#: Exception causes, for ``stop_on``.
CAUSE = {
    "misaligned_fetch": 0, "fetch_access": 1, "illegal_instruction": 2,
    "breakpoint": 3, "misaligned_load": 4, "load_access": 5,
    "misaligned_store": 6, "store_access": 7, "ecall_u": 8, "ecall_s": 9,
    "ecall_m": 11, "fetch_page_fault": 12, "load_page_fault": 13,
    "store_page_fault": 15,
}

#: Interrupt bits of mip, for ``set_irq_line``.
IRQ = {"ssi": 1, "msi": 3, "sti": 5, "mti": 7, "sei": 9, "mei": 11}


class RunResult(NamedTuple):
    """What one :meth:`RiscvHart.run` did (a named tuple: cheap, as run() is hot)."""

    reason: StopReason
    pc: int
    executed: int       # instructions retired during this run
    cause: int | None = None    # the exception cause (reason EXCEPTION)
    tval: int | None = None


_REASONS = {int(r): r for r in StopReason}


class RiscvHart(_riscv.Hart):
    """One RV64GC hart (IMAFDC, Zicsr, Zifencei, Zicntr; M/S/U; Sv39/Sv48)."""

    #: called after an interrupt line or ``mtimecmp`` changes (a hart on a thread
    #: of its own sleeping in ``wfi`` is woken: vmforge.accel.mttcg)
    wake: Callable[[], None] | None = None

    def __init__(self, space: AddressSpace, hartid: int = 0,
                 reservations: _riscv.ReservationSet | None = None, *, pc: int = 0,
                 stop_on: Iterable[int] = (), stop_on_ecall: bool = False,
                 time_div: int = 1) -> None:
        self._bps: list[int] = []
        self.reset(pc)
        self.time_div = time_div
        causes = set(stop_on)
        if stop_on_ecall:
            causes |= {8, 9, 11}
        self.stop_on = causes

    def sibling(self, hartid: int) -> RiscvHart:
        """Another hart on the same address space and reservation set."""
        return type(self)(self.space, hartid, self.reservations)

    def reset(self, pc: int = 0) -> None:
        """Reset to M-mode at ``pc``; breakpoints stay."""
        self.reset_state(pc)
        self._sync_bps()

    # -- running -----------------------------------------------------------------

    def run(self, max_instructions: int = 1 << 62, exact: bool = False) -> RunResult:
        """Run for about ``max_instructions`` (see the module doc for stops);
        ``exact=True`` stops after exactly that many (slower: no decoded-code cache)."""
        before = self._get_instret()
        if self._bps and self._get_pc() in self._bps:
            self._resume_over(self._get_pc())    # execute the instruction under it once
        code = self._run(max_instructions, exact)
        if code == 4:                            # StopReason.EXCEPTION
            cause, tval = self._exc_info()
            return RunResult(_REASONS[code], self._get_pc(), self._get_instret() - before,
                             cause, tval)
        return RunResult(_REASONS[code], self._get_pc(), self._get_instret() - before)

    def step(self) -> RunResult:
        """Execute exactly one instruction (or take the trap it raises)."""
        return self.run(1, exact=True)

    def request_stop(self) -> None:
        """Stop a running :meth:`run` at its next block boundary (thread-safe)."""
        self._request_stop()

    def take_exception(self, cause: int, tval: int = 0) -> None:
        """Enter the trap handler as the hart would have (after a stop on ``cause``)."""
        self._take_exc(cause, tval)

    # -- breakpoints -----------------------------------------------------------------

    def add_breakpoint(self, pc: int) -> None:
        if pc not in self._bps:
            self._bps.append(pc)
            self._sync_bps()

    def remove_breakpoint(self, pc: int) -> None:
        self._bps.remove(pc)
        self._sync_bps()

    @property
    def breakpoints(self) -> tuple[int, ...]:
        return tuple(self._bps)

    def _sync_bps(self) -> None:
        # resuming at a breakpoint executes the instruction under it once
        self._set_breakpoints(self._bps, self.pc, self.pc in self._bps)

    # -- watchpoints and hooks (driven by vmforge.debug.hooks.Hooks) --------------------

    def watch_hit(self) -> tuple[int, int, bool]:
        """``(address, size, is_write)`` of the access a stop on
        ``StopReason.WATCHPOINT`` was about to make (the instruction did not run)."""
        return self._watch_hit()

    def step_over_watch(self) -> RunResult:
        """Execute the instruction a watchpoint stopped, letting its access through."""
        self._set_watch_skip(True)
        return self.step()

    # -- registers ---------------------------------------------------------------------

    @property
    def pc(self) -> int:
        return self._get_pc()

    @pc.setter
    def pc(self, value: int) -> None:
        self._set_pc(value & ((1 << 64) - 1))
        if value in self._bps:
            self._resume_over(value)

    @property
    def x(self) -> _RegFile:
        """Integer registers: ``hart.x[5]``, ``hart.x[5] = 1`` (x0 reads 0)."""
        return _RegFile(self._get_x, self._set_x)

    @property
    def f(self) -> _RegFile:
        """FP registers as raw 64-bit patterns (binary32 values NaN-boxed)."""
        return _RegFile(self._get_f, self._set_f)

    @property
    def priv(self) -> int:
        """Current privilege: 0 U, 1 S, 3 M."""
        return self._get_priv()

    @priv.setter
    def priv(self, value: int) -> None:
        self._set_priv(value)

    @property
    def instret(self) -> int:
        return self._get_instret()

    def csr(self, name: str | int) -> int:
        """Read a CSR by name or number (as M-mode would)."""
        num = CSR[name] if isinstance(name, str) else name
        ok, value = self._csr_read(num)
        if not ok:
            raise KeyError(f"no CSR {name!r}")
        return value

    def set_csr(self, name: str | int, value: int) -> None:
        """Write a CSR by name or number (WARL rules apply, as for M-mode software)."""
        num = CSR[name] if isinstance(name, str) else name
        if not self._csr_write(num, value & ((1 << 64) - 1)):
            raise KeyError(f"no CSR {name!r}")

    # -- interrupts and time -------------------------------------------------------

    def set_irq_line(self, bit: int, level: bool) -> None:
        """Drive mip bit ``bit`` (3 MSIP, 7 MTIP, 9 SEIP, 11 MEIP...) from a device."""
        self._set_irq(bit, bool(level))
        if self.wake is not None:
            self.wake()

    @property
    def mtime(self) -> int:
        return self._time()

    @mtime.setter
    def mtime(self, value: int) -> None:
        self._set_time(value)

    @property
    def mtimecmp(self) -> int:
        return self._get_mtimecmp()

    @mtimecmp.setter
    def mtimecmp(self, value: int) -> None:
        self._set_mtimecmp(value & ((1 << 64) - 1))
        if self.wake is not None:
            self.wake()

    @property
    def stimecmp(self) -> int:
        """Sstc's supervisor timer comparator (the ``stimecmp`` CSR)."""
        return self._get_stimecmp()

    def armed_timers(self) -> list[int]:
        """The comparators that can interrupt this hart when ``mtime`` reaches them:
        ``mtimecmp`` under mie.MTIE, ``stimecmp`` under mie.STIE and menvcfg.STCE."""
        mie = self.csr("mie")
        armed = [self.mtimecmp] if mie & 1 << 7 and self.mtimecmp != (1 << 64) - 1 else []
        if mie & 1 << 5 and self.csr("menvcfg") >> 63:
            armed.append(self.stimecmp)
        return armed

    @property
    def time_div(self) -> int:
        return self._get_time_div()

    @time_div.setter
    def time_div(self, value: int) -> None:
        self._set_time_div(value)

    def set_icount(self, time_mul: int, time_div: int) -> None:
        """Instruction-counted time: ``mtime`` advances ``time_mul / time_div``
        ticks per retired instruction (keeps the current ``mtime``)."""
        self._set_icount(time_mul, time_div)

    def use_host_clock(self, origin_ns: int, tick_ns: int = 100) -> None:
        """Host time: ``mtime`` = (``time.monotonic_ns()`` - ``origin_ns``) //
        ``tick_ns`` plus what the guest wrote to it (100 ns: a 10 MHz timebase)."""
        self._set_host_clock(origin_ns, tick_ns)

    def freeze_host_clock(self) -> None:
        """Host time stands still (a paused machine) until :meth:`use_host_clock`."""
        self._freeze_host_clock()

    @property
    def trace_traps(self) -> bool:
        """Record every trap taken (``-d int``); :meth:`take_trap_trace` drains them."""
        return bool(getattr(self, "_trace_on", False))

    @trace_traps.setter
    def trace_traps(self, on: bool) -> None:
        self._trace_on = bool(on)
        self._set_trace_int(bool(on))

    def take_trap_trace(self) -> tuple[list[str], int]:
        """The traps recorded since the last call as QEMU's ``-d int`` lines
        (``riscv_cpu_do_interrupt: ...``), and how many did not fit (256 are kept
        per call: a trap storm shows as its first traps and a count)."""
        recs, dropped = self._take_trap_trace()
        hartid = self.csr("mhartid")
        return [format_trap(hartid, *rec[:3]) for rec in recs], dropped

    @property
    def host_clock_origin(self) -> int | None:
        """The origin of :meth:`use_host_clock`, or None on instruction-counted time."""
        return self._host_origin()

    @property
    def stop_on(self) -> frozenset[int]:
        """Exception causes that make :meth:`run` return instead of trapping."""
        mask = self._get_stop_causes()
        return frozenset(i for i in range(64) if mask >> i & 1)

    @stop_on.setter
    def stop_on(self, causes: Iterable[int]) -> None:
        mask = 0
        for c in causes:
            if not 0 <= c < 64:
                raise ValueError(f"exception cause {c} out of range")
            mask |= 1 << c
        self._set_stop_causes(mask)

    def flush_caches(self) -> None:
        """Drop TLBs and decoded code (after changing memory behind the hart's back)."""
        self._flush()

    # -- state (vmforge.migration.hart) ------------------------------------------------

    def save_state(self) -> dict[str, Any]:
        """The hart's record (registers, CSRs, time) while it is not running."""
        from vmforge.migration.hart import save_hart

        return save_hart(self)

    def check_state(self, record: Any) -> None:
        """``StateError`` unless :meth:`load_state` would take ``record``."""
        from vmforge.migration.hart import check_hart

        check_hart(self, record)

    def load_state(self, record: dict[str, Any]) -> None:
        """Take a :meth:`save_state` record (``StateError`` and nothing changed when it
        does not fit); the reservation is dropped, TLBs and decoded code flushed."""
        from vmforge.migration.hart import load_hart

        load_hart(self, record)
        self._sync_bps()


_EXC_NAMES = ("misaligned_fetch", "fault_fetch", "illegal_instruction", "breakpoint",
              "misaligned_load", "fault_load", "misaligned_store", "fault_store",
              "user_ecall", "supervisor_ecall", "hypervisor_ecall", "machine_ecall",
              "exec_page_fault", "load_page_fault", "reserved", "store_page_fault")
_IRQ_NAMES = ("u_software", "s_software", "vs_software", "m_software", "u_timer", "s_timer",
              "vs_timer", "m_timer", "u_external", "s_external", "vs_external", "m_external")


def format_trap(hartid: int, cause: int, epc: int, tval: int) -> str:
    """One trap as QEMU 7.2's ``-d int`` prints it (target/riscv/cpu_helper.c)."""
    is_irq = cause >> 63
    code = cause & ((1 << 63) - 1)
    names = _IRQ_NAMES if is_irq else _EXC_NAMES
    desc = names[code] if code < len(names) else "(unknown)"
    return (f"riscv_cpu_do_interrupt: hart:{hartid}, async:{is_irq}, cause:{code:016x}, "
            f"epc:0x{epc:016x}, tval:0x{tval:016x}, desc={desc}")


class _RegFile:
    __slots__ = ("_get", "_set")

    def __init__(self, get: Callable[[int], int], set_: Callable[[int, int], None]) -> None:
        self._get = get
        self._set = set_

    def __getitem__(self, i: int) -> int:
        if not 0 <= i < 32:
            raise IndexError(i)
        return self._get(i)

    def __setitem__(self, i: int, value: int) -> None:
        if not 0 <= i < 32:
            raise IndexError(i)
        self._set(i, value & ((1 << 64) - 1))

    def __len__(self) -> int:
        return 32

    def __iter__(self) -> Iterator[int]:
        return (self._get(i) for i in range(32))

    def __repr__(self) -> str:
        return "[" + ", ".join(f"{v:#x}" for v in self) + "]"
