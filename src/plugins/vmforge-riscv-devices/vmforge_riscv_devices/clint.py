"""The CLINT of QEMU's RISC-V boards (``virt``, ``spike``): an ACLINT MSWI at
0x0 and an ACLINT MTIMER at 0x4000 (``hw/intc/riscv_aclint.c``), in one 64 KiB
window.

- ``msip[h]`` at ``4 * h``: bit 0 drives hart ``h``'s MSIP (32-bit accesses).
- ``mtimecmp[h]`` at ``0x4000 + 8 * h`` and ``mtime`` at ``0xbff8``: 64-bit
  registers that also take 32-bit halves (low at +0, high at +4).
- ``mtime`` counts at ``timebase_freq`` (10 MHz) from the machine's
  :class:`~vmforge.clock.VirtualClock`: ``clock.now_ns() * freq // 1e9`` plus
  whatever offset guest writes to ``mtime`` made.
- MTIP of hart ``h`` is high while ``mtime >= mtimecmp[h]``: a write that puts
  ``mtimecmp`` in the past raises it at once; otherwise it is lowered and a
  machine timer is armed for the guest-clock instant ``mtime`` gets there.

Like QEMU 7.2, ``mtimecmp`` starts at 0 and MTIP stays low until the guest
writes ``mtimecmp`` or ``mtime`` (firmware sets ``mtimecmp`` before enabling
the timer interrupt).
"""

from __future__ import annotations

from collections.abc import Callable

from vmforge.clock import Timer, TimerQueue, VirtualClock
from vmforge.device import Device, Prop
from vmforge.fdt import DeviceTree, FdtNode, FdtPlacement
from vmforge.migration.record import check_header, get_int, get_ints, header
from vmforge_riscv_devices.hart import MIP_MSIP, MIP_MTIP, HartIrqInputs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar

__all__ = ["TIMEBASE_FREQ", "Clint", "HartClint"]

MSIP_BASE = 0x0
MTIMECMP_BASE = 0x4000
MTIME = 0xBFF8
MAX_HARTS = 4095  # 0x4000 bytes of msip words, minus one
_U32 = 0xFFFFFFFF
_U64 = (1 << 64) - 1
NS_PER_S = 1_000_000_000
#: the default ``mtime`` ticks per second (QEMU's: one tick per 100 ns of guest
#: time), what a device tree gives as ``timebase-frequency``
TIMEBASE_FREQ = 10_000_000


class Clint(Device):
    """Software and timer interrupts for ``num_harts`` harts.

    Outputs: ``msip[h]`` and ``mtip[h]`` (:class:`~vmforge.irq.IrqLine`); wire
    them with :meth:`connect_hart` or by hand.  The clock and timers come from
    the machine at realize (or from ``clock=`` / ``timers=`` for a bare device).
    """

    name: ClassVar[str] = "riscv-clint"
    mmio_size: ClassVar[int] = 0x10000
    valid_sizes: ClassVar[tuple[int, int]] = (4, 8)
    impl_sizes: ClassVar[tuple[int, int]] = (4, 8)

    num_harts = Prop(int, 1, "harts served")
    timebase_freq = Prop(int, TIMEBASE_FREQ, "mtime ticks per second")

    def __init__(self, clock: VirtualClock | None = None, timers: TimerQueue | None = None,
                 **props: Any) -> None:
        super().__init__(**props)
        if not 1 <= self.num_harts <= MAX_HARTS:
            raise ValueError(f"riscv-clint: num_harts must be 1..{MAX_HARTS}")
        if self.timebase_freq <= 0:
            raise ValueError("riscv-clint: timebase_freq must be positive")
        self.msip = [self.irq_line(f"clint-msip{h}") for h in range(self.num_harts)]
        self.mtip = [self.irq_line(f"clint-mtip{h}") for h in range(self.num_harts)]
        self.clock: VirtualClock | None = None
        self._timers: list[Timer] = []
        self.time_delta = 0
        self.mtimecmp = [0] * self.num_harts
        if clock is not None:
            self._attach(clock, timers or TimerQueue(clock))

    def _attach(self, clock: VirtualClock, timers: TimerQueue) -> None:
        self.clock = clock
        self._timers = [timers.timer(self._expiry(h)) for h in range(self.num_harts)]

    def _expiry(self, hart: int) -> Callable[[], None]:
        return lambda: self._check(hart)

    def realize(self, machine: Any) -> None:
        if self.clock is None:
            self._attach(machine.clock, machine.timers)
        super().realize(machine)

    def connect_hart(self, hart_index: int, hart: HartIrqInputs) -> None:
        """Drive ``hart.set_irq_line(MSIP/MTIP, level)`` for hart ``hart_index``."""
        set_line: Callable[[int, bool], None] = hart.set_irq_line
        self.msip[hart_index].connect(lambda _n, lv: set_line(MIP_MSIP, lv))
        self.mtip[hart_index].connect(lambda _n, lv: set_line(MIP_MTIP, lv))

    def reset(self) -> None:
        for h in range(self.num_harts):
            self.msip[h].set(False)
            self.mtip[h].set(False)
            self.mtimecmp[h] = 0
            if self._timers:
                self._timers[h].cancel()

    # -- time ------------------------------------------------------------------------------

    def _clock_ns(self) -> int:
        if self.clock is None:
            raise RuntimeError("riscv-clint: no clock (realize it on a machine or pass clock=)")
        return self.clock.now_ns()

    def _ticks(self, ns: int) -> int:
        return ns * self.timebase_freq // NS_PER_S

    @property
    def mtime(self) -> int:
        """The current ``mtime`` (what the hart's ``time`` CSR should read)."""
        return (self._ticks(self._clock_ns()) + self.time_delta) & _U64

    def set_mtime(self, value: int) -> None:
        self.time_delta = (value - self._ticks(self._clock_ns())) & _U64
        for h in range(self.num_harts):
            self._check(h)

    def set_mtimecmp(self, hart: int, value: int) -> None:
        self.mtimecmp[hart] = value & _U64
        self._check(hart)

    def _check(self, hart: int) -> None:
        """Raise MTIP if due, else lower it and arm the timer for the deadline."""
        now_ns = self._clock_ns()
        mtime = (self._ticks(now_ns) + self.time_delta) & _U64
        cmp = self.mtimecmp[hart]
        if cmp <= mtime:
            self.mtip[hart].set(True)
            if self._timers:
                self._timers[hart].cancel()
            return
        self.mtip[hart].set(False)
        if not self._timers:
            return
        ticks = cmp - mtime
        # first guest-clock ns at which mtime has advanced by ``ticks``
        target = (self._ticks(now_ns) + ticks) * NS_PER_S
        deadline = -(-target // self.timebase_freq)
        if deadline - now_ns >= 1 << 62:
            self._timers[hart].cancel()  # centuries away: never
        else:
            self._timers[hart].arm(deadline)

    # -- state ---------------------------------------------------------------------------------

    STATE_VERSION: ClassVar[int] = 1

    def save_state(self) -> dict[str, Any]:
        """MSIP levels, comparators, and the offset guest writes gave ``mtime``."""
        rec = header(self.name, self.STATE_VERSION)
        rec.update(msip=[int(line.level) for line in self.msip], mtimecmp=list(self.mtimecmp),
                   time_delta=self.time_delta)
        return rec

    def check_state(self, record: Any) -> None:
        """``StateError`` unless :meth:`load_state` would take ``record``."""
        rec = check_header(record, self.name, self.STATE_VERSION)
        where = f"{self.name} state"
        get_ints(rec, "msip", self.num_harts, 0, 1, where)
        get_ints(rec, "mtimecmp", self.num_harts, 0, _U64, where)
        get_int(rec, "time_delta", 0, _U64, where)

    def load_state(self, record: dict[str, Any]) -> None:
        """Check, then take, a :meth:`save_state` record (the machine's clock is
        restored first: deadlines are re-armed on it)."""
        self.check_state(record)
        self.time_delta = record["time_delta"]
        for h in range(self.num_harts):
            self.msip[h].set(bool(record["msip"][h]))
            self.set_mtimecmp(h, record["mtimecmp"][h])

    # -- MMIO ----------------------------------------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        if offset < MTIMECMP_BASE:
            hart, sub = divmod(offset - MSIP_BASE, 4)
            if size == 4 and sub == 0 and hart < self.num_harts:
                return int(self.msip[hart].level)
            return 0
        if MTIMECMP_BASE <= offset < MTIMECMP_BASE + 8 * self.num_harts:
            hart, sub = divmod(offset - MTIMECMP_BASE, 8)
            value = self.mtimecmp[hart]
        elif offset in (MTIME, MTIME + 4):
            value, sub = self.mtime, offset - MTIME
        else:
            return 0
        if sub == 4:
            return value >> 32 if size == 4 else 0
        return value & _U32 if size == 4 else value

    def write(self, offset: int, size: int, value: int) -> None:
        if offset < MTIMECMP_BASE:
            hart, sub = divmod(offset - MSIP_BASE, 4)
            if size == 4 and sub == 0 and hart < self.num_harts:
                self.msip[hart].set(bool(value & 1))
            return
        if MTIMECMP_BASE <= offset < MTIMECMP_BASE + 8 * self.num_harts:
            hart, sub = divmod(offset - MTIMECMP_BASE, 8)
            new = self._merge(self.mtimecmp[hart], sub, size, value)
            if new is not None:
                self.set_mtimecmp(hart, new)
        elif offset in (MTIME, MTIME + 4):
            new = self._merge(self.mtime, offset - MTIME, size, value)
            if new is not None:
                self.set_mtime(new)

    @staticmethod
    def _merge(old: int, sub: int, size: int, value: int) -> int | None:
        if size == 8:
            return value & _U64 if sub == 0 else None
        if sub == 0:
            return (old & ~_U32) | (value & _U32)
        return (old & _U32) | ((value & _U32) << 32)

    # -- device tree ----------------------------------------------------------------------------

    def fdt_node(self, tree: DeviceTree, parent: FdtNode, place: FdtPlacement) -> FdtNode:
        """``clint@ADDR`` with ``interrupts-extended`` to each hart's MSIP and MTIP.

        Needs the harts' interrupt controllers labelled ``cpu{N}-intc``.
        """
        node = parent.add(f"clint@{place.base:x}")
        node.set("compatible", ["sifive,clint0", "riscv,clint0"])
        tree.reg(node, (place.base, place.size))
        cells: list[int] = []
        for h in range(self.num_harts):
            intc = tree.phandle_of(f"cpu{h}-intc")
            cells += [intc, MIP_MSIP, intc, MIP_MTIP]
        node.set("interrupts-extended", cells)
        return node


class HartClint(Clint):
    """The CLINT with the harts' own time: ``mtime`` is the cluster's, and
    ``mtimecmp[h]`` is hart ``h``'s comparator, so the hart raises MTIP itself,
    at the exact tick, without a host timer.  The comparators are reset with
    the harts (``HartCluster.reset``: no timer until the guest sets one)."""

    def __init__(self, cluster: Any, **props: Any) -> None:
        super().__init__(num_harts=len(cluster), **props)
        self.cluster = cluster

    @property
    def mtime(self) -> int:
        return self.cluster.mtime

    def set_mtime(self, value: int) -> None:
        for hart in self.cluster.harts:
            hart.mtime = value & _U64

    def set_mtimecmp(self, hart: int, value: int) -> None:
        self.mtimecmp[hart] = value & _U64
        self.cluster.harts[hart].mtimecmp = value & _U64

    def _check(self, hart: int) -> None:
        """The hart compares ``mtime`` with ``mtimecmp`` itself."""

