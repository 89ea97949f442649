"""The SiFive PLIC as on QEMU's riscv ``virt`` board (``hw/intc/sifive_plic.c``).

Layout (QEMU 7.2 virt): source priorities at 0x0 (4 bytes per source, source 0
reads 0), pending bits at 0x1000, per-context enable words at 0x2000 + 0x80 *
context, per-context threshold at 0x200000 + 0x1000 * context and claim /
complete 4 bytes after it.  Context ``2 * hart`` is the hart's M mode (drives
MEIP), ``2 * hart + 1`` its S mode (drives SEIP).  Accesses are 32-bit only.

Sources are level-triggered as the PLIC spec's gateway describes them and as
Linux expects: an asserted source is pending; claiming it clears pending and
marks it claimed, and a claimed source does not pend again until its
completion; on completion a source whose line is still asserted pends again.
(QEMU 7.2 re-pends only when the device sets its line again; vmforge lines
tell only level changes, so the PLIC remembers each input's level.)

Devices may change their lines from I/O threads while a hart claims on the CPU
thread: the state is changed under one lock (outputs are driven under it too,
so a hart's ``set_irq_line`` must not call back into the PLIC).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from vmforge.device import Device, Prop
from vmforge.fdt import DeviceTree, FdtNode, FdtPlacement
from vmforge.irq import IrqLine
from vmforge.lazy import lazy_logger
from vmforge.migration.record import StateError, check_header, get_int, get_ints, header
from vmforge_riscv_devices.hart import MIP_MEIP, MIP_SEIP, HartIrqInputs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar

__all__ = ["Plic"]

log = lazy_logger("vmforge_riscv_devices.plic")  # (logging imported by a message)

PRIORITY_BASE = 0x0
PENDING_BASE = 0x1000
ENABLE_BASE = 0x2000
ENABLE_STRIDE = 0x80
CONTEXT_BASE = 0x200000
CONTEXT_STRIDE = 0x1000
CONTEXT_THRESHOLD = 0x0
CONTEXT_CLAIM = 0x4
#: sources including the never-used source 0 (QEMU 7.2 virt's VIRT_IRQCHIP_NUM_SOURCES)
NUM_SOURCES = 96
#: priority levels 1..7 (QEMU 7.2 virt's VIRT_IRQCHIP_NUM_PRIO - 1)
NUM_PRIORITIES = 7


class Plic(Device):
    """Platform-level interrupt controller; implements ``InterruptController``.

    ``meip[h]`` and ``seip[h]`` are hart ``h``'s output lines; connect them with
    :meth:`connect_hart` (a hart with ``set_irq_line(bit, level)``) or wire the
    :class:`~vmforge.irq.IrqLine` objects yourself.
    """

    name: ClassVar[str] = "riscv-plic"
    mmio_size: ClassVar[int] = 0x600000
    valid_sizes: ClassVar[tuple[int, int]] = (4, 4)
    impl_sizes: ClassVar[tuple[int, int]] = (4, 4)

    num_harts = Prop(int, 1, "harts served (two contexts each: M and S)")
    num_sources = Prop(int, NUM_SOURCES, "sources including source 0")
    num_priorities = Prop(int, NUM_PRIORITIES, "highest priority level")

    def __init__(self, **props: Any) -> None:
        super().__init__(**props)
        if not 1 <= self.num_harts <= (self.mmio_size - CONTEXT_BASE) // (2 * CONTEXT_STRIDE):
            raise ValueError(f"riscv-plic: {self.num_harts} harts do not fit the window")
        if not 2 <= self.num_sources <= 1024:
            raise ValueError(f"riscv-plic: num_sources must be 2..1024, not {self.num_sources}")
        self.num_contexts = 2 * self.num_harts
        self.words = (self.num_sources + 31) // 32
        self.meip = [self.irq_line(f"plic-meip{h}") for h in range(self.num_harts)]
        self.seip = [self.irq_line(f"plic-seip{h}") for h in range(self.num_harts)]
        self._outputs = [line for h in range(self.num_harts)
                         for line in (self.meip[h], self.seip[h])]
        self._inputs: dict[int, IrqLine] = {}
        self.level = [False] * self.num_sources  # what each source's line says
        self._lock = threading.RLock()
        self._clear()

    def _clear(self) -> None:
        self.priority = [0] * self.num_sources
        # bit n of each mask is source n
        self.pending = 0
        self.claimed = 0
        self.enable = [0] * self.num_contexts
        self.threshold = [0] * self.num_contexts

    # -- wiring ----------------------------------------------------------------------------

    def connect_hart(self, hart_index: int, hart: HartIrqInputs) -> None:
        """Drive ``hart.set_irq_line(MEIP/SEIP, level)`` from this hart's contexts."""
        set_line: Callable[[int, bool], None] = hart.set_irq_line
        self.meip[hart_index].connect(lambda _n, lv: set_line(MIP_MEIP, lv))
        self.seip[hart_index].connect(lambda _n, lv: set_line(MIP_SEIP, lv))

    def set_irq(self, number: int, level: bool) -> None:
        """Source ``number``'s line is now at ``level`` (level-triggered)."""
        if not 0 < number < self.num_sources:
            log.warning("riscv-plic: no source %d", number)
            return
        level = bool(level)
        bit = 1 << number
        with self._lock:
            self.level[number] = level
            if self.claimed & bit:
                return  # the gateway holds it until completion
            if level != bool(self.pending & bit):
                self.pending ^= bit
                self._update()

    def line(self, number: int) -> IrqLine:
        """A line wired to source ``number`` (the same line when asked again)."""
        if not 0 < number < self.num_sources:
            raise ValueError(f"riscv-plic: no source {number} (1..{self.num_sources - 1})")
        line = self._inputs.get(number)
        if line is None:
            line = self._inputs[number] = IrqLine(self.set_irq, number, f"plic-src{number}")
        return line

    # -- state --------------------------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self._clear()
            # lines still asserted by devices pend again (their sources are not claimed)
            self.pending = sum(1 << n for n in range(1, self.num_sources) if self.level[n])
            self._update()

    def best(self, context: int) -> int:
        """The source a claim on ``context`` would return now (0: none)."""
        best_irq, best_prio = 0, self.threshold[context]
        cand = self.pending & ~self.claimed & self.enable[context]
        priority = self.priority
        while cand:
            low = cand & -cand
            n = low.bit_length() - 1
            if priority[n] > best_prio:  # ties: the lowest source number wins
                best_irq, best_prio = n, priority[n]
            cand ^= low
        return best_irq

    def _update(self) -> None:
        for ctx, out in enumerate(self._outputs):
            out.set(self.best(ctx) != 0)

    def claim(self, context: int) -> int:
        with self._lock:
            irq = self.best(context)
            if irq:
                self.pending &= ~(1 << irq)
                self.claimed |= 1 << irq
            self._update()
            return irq

    def complete(self, context: int, irq: int) -> None:
        # QEMU ignores the enable bits here; Linux enables a masked source around
        # its completion anyway, so both agree with the spec's "ignored if disabled"
        with self._lock:
            if not 0 < irq < self.num_sources or not self.claimed >> irq & 1:
                return
            self.claimed &= ~(1 << irq)
            if self.level[irq]:
                self.pending |= 1 << irq
            self._update()

    STATE_VERSION: ClassVar[int] = 1

    def save_state(self) -> dict[str, Any]:
        """Priorities, pending/claimed bits, enables, thresholds, input levels."""
        with self._lock:
            rec = header(self.name, self.STATE_VERSION)
            rec.update(num_sources=self.num_sources, num_contexts=self.num_contexts,
                       priority=list(self.priority), pending=self.pending,
                       claimed=self.claimed, enable=list(self.enable),
                       threshold=list(self.threshold), level=[int(v) for v in self.level])
            return rec

    def check_state(self, record: Any) -> None:
        """``StateError`` unless :meth:`load_state` would take ``record``."""
        rec = check_header(record, self.name, self.STATE_VERSION)
        where = f"{self.name} state"
        n, ctx = self.num_sources, self.num_contexts
        get_int(rec, "num_sources", n, n, where)
        get_int(rec, "num_contexts", ctx, ctx, where)
        mask = (1 << n) - 2            # source 0 does not exist
        for key in ("pending", "claimed"):
            value = get_int(rec, key, 0, mask, where)
            if value & ~mask:
                raise StateError(f"{where}: {key} has bits of sources that do not exist")
        for i, value in enumerate(get_ints(rec, "enable", ctx, 0, mask, where)):
            if value & ~mask:
                raise StateError(f"{where}: enable[{i}] has bits of sources that do not exist")
        get_ints(rec, "priority", n, 0, self.num_priorities, where)
        get_ints(rec, "threshold", ctx, 0, self.num_priorities, where)
        get_ints(rec, "level", n, 0, 1, where)

    def load_state(self, record: dict[str, Any]) -> None:
        """Check, then take, a :meth:`save_state` record; the outputs follow."""
        self.check_state(record)
        with self._lock:
            self.priority = list(record["priority"])
            self.pending = record["pending"]
            self.claimed = record["claimed"]
            self.enable = list(record["enable"])
            self.threshold = list(record["threshold"])
            self.level = [bool(v) for v in record["level"]]
            self._update()

    # -- MMIO -----------------------------------------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        if PRIORITY_BASE <= offset < PRIORITY_BASE + 4 * self.num_sources:
            return self.priority[(offset - PRIORITY_BASE) >> 2]
        if PENDING_BASE <= offset < PENDING_BASE + 4 * self.words:
            word = (offset - PENDING_BASE) >> 2
            return self.pending >> (32 * word) & 0xFFFFFFFF
        if ENABLE_BASE <= offset < ENABLE_BASE + ENABLE_STRIDE * self.num_contexts:
            ctx, word = divmod(offset - ENABLE_BASE, ENABLE_STRIDE)
            word >>= 2
            return self.enable[ctx] >> (32 * word) & 0xFFFFFFFF if word < self.words else 0
        if CONTEXT_BASE <= offset < CONTEXT_BASE + CONTEXT_STRIDE * self.num_contexts:
            ctx, reg = divmod(offset - CONTEXT_BASE, CONTEXT_STRIDE)
            if reg == CONTEXT_THRESHOLD:
                return self.threshold[ctx]
            if reg == CONTEXT_CLAIM:
                return self.claim(ctx)
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        with self._lock:
            self._write(offset, value & 0xFFFFFFFF)

    def _write(self, offset: int, value: int) -> None:
        if PRIORITY_BASE <= offset < PRIORITY_BASE + 4 * self.num_sources:
            n = (offset - PRIORITY_BASE) >> 2
            if n != 0:
                self.priority[n] = self._legal_priority(value, self.priority[n])
                self._update()
        elif ENABLE_BASE <= offset < ENABLE_BASE + ENABLE_STRIDE * self.num_contexts:
            ctx, word = divmod(offset - ENABLE_BASE, ENABLE_STRIDE)
            word >>= 2
            if word < self.words:
                if word == 0:
                    value &= ~1  # source 0 does not exist
                last = self.num_sources - 32 * word
                if last < 32:
                    value &= (1 << last) - 1
                shift = 32 * word
                self.enable[ctx] = self.enable[ctx] & ~(0xFFFFFFFF << shift) | value << shift
                self._update()
        elif CONTEXT_BASE <= offset < CONTEXT_BASE + CONTEXT_STRIDE * self.num_contexts:
            ctx, reg = divmod(offset - CONTEXT_BASE, CONTEXT_STRIDE)
            if reg == CONTEXT_THRESHOLD:
                self.threshold[ctx] = self._legal_priority(value, self.threshold[ctx])
                self._update()
            elif reg == CONTEXT_CLAIM:
                self.complete(ctx, value)
        # pending bits are read-only; anything else is ignored

    def _legal_priority(self, value: int, old: int) -> int:
        top = self.num_priorities
        if (top + 1) & top == 0:  # a power of two of levels: WARL bits, as QEMU
            return value & top
        return value if value <= top else old

    # -- device tree ----------------------------------------------------------------------------

    def fdt_node(self, tree: DeviceTree, parent: FdtNode, place: FdtPlacement) -> FdtNode:
        """``plic@ADDR`` with ``interrupts-extended`` to each hart's M and S inputs.

        Labels the node ``plic`` so other devices find its phandle.  Needs the
        harts' interrupt controllers labelled ``cpu{N}-intc``.
        """
        node = parent.add(f"plic@{place.base:x}")
        tree.label("plic", node)
        tree.phandle(node)
        node.set("#interrupt-cells", 1)
        node.set("#address-cells", 0)
        node.set("compatible", ["sifive,plic-1.0.0", "riscv,plic0"])
        node.set("interrupt-controller", True)
        cells: list[int] = []
        for h in range(self.num_harts):
            intc = tree.phandle_of(f"cpu{h}-intc")
            cells += [intc, MIP_MEIP, intc, MIP_SEIP]
        node.set("interrupts-extended", cells)
        tree.reg(node, (place.base, place.size))
        node.set("riscv,ndev", self.num_sources - 1)
        return node
