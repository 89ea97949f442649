"""The goldfish RTC (``hw/rtc/goldfish_rtc.c``): nanoseconds since the Unix
epoch, an alarm and one interrupt line.

Registers (32-bit): TIME_LOW 0x00 (reading it latches the high half for
TIME_HIGH 0x04), ALARM_LOW 0x08 (writing it arms the alarm), ALARM_HIGH 0x0c,
IRQ_ENABLED 0x10, CLEAR_ALARM 0x14, ALARM_STATUS 0x18, CLEAR_INTERRUPT 0x1c.

Time is the host's wall clock plus an offset the guest changes by writing
TIME_LOW/TIME_HIGH (``clock=host``, QEMU's default), or, with ``clock=vm``,
the wall time when the machine was built plus the machine's guest clock
(stands still while the machine is paused; deterministic under tests).  The
alarm is a machine timer armed for the moment the RTC reaches it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from vmforge.clock import Timer, TimerQueue, VirtualClock
from vmforge.device import Device, Prop
from vmforge.fdt import DeviceTree, FdtNode, FdtPlacement
from vmforge.migration.record import check_header, get_bool, get_int, header

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar

__all__ = ["GoldfishRtc"]

TIME_LOW = 0x00
TIME_HIGH = 0x04
ALARM_LOW = 0x08
ALARM_HIGH = 0x0C
IRQ_ENABLED = 0x10
CLEAR_ALARM = 0x14
ALARM_STATUS = 0x18
CLEAR_INTERRUPT = 0x1C

_U32 = 0xFFFFFFFF
_U64 = (1 << 64) - 1


def _deposit(old: int, shift: int, value: int) -> int:
    return (old & ~(_U32 << shift) | (value & _U32) << shift) & _U64


class GoldfishRtc(Device):
    """Goldfish real-time clock; its interrupt output is :attr:`irq`."""

    name: ClassVar[str] = "goldfish-rtc"
    mmio_size: ClassVar[int] = 0x1000
    valid_sizes: ClassVar[tuple[int, int]] = (4, 4)
    impl_sizes: ClassVar[tuple[int, int]] = (4, 4)

    clock = Prop(str, "host", "host: wall clock; vm: follows the guest clock")

    def __init__(self, vm_clock: VirtualClock | None = None, timers: TimerQueue | None = None,
                 wall_ns: Callable[[], int] = time.time_ns, **props: Any) -> None:
        super().__init__(**props)
        if self.clock not in ("host", "vm"):
            raise ValueError(f"goldfish-rtc: clock must be host or vm, not {self.clock!r}")
        self.irq = self.irq_line(self.name)
        self.wall_ns = wall_ns
        self.vm_clock: VirtualClock | None = None
        self._timer: Timer | None = None
        self.tick_offset = 0
        self.time_high = 0
        self.alarm_next = 0
        self.alarm_running = False
        self.irq_pending = False
        self.irq_enabled = False
        if vm_clock is not None:
            self._attach(vm_clock, timers or TimerQueue(vm_clock))

    def _attach(self, vm_clock: VirtualClock, timers: TimerQueue) -> None:
        self.vm_clock = vm_clock
        self._timer = timers.timer(self._alarm_fired)
        if self.clock == "vm":
            self.tick_offset = self.wall_ns() - vm_clock.now_ns()

    def realize(self, machine: Any) -> None:
        if self.vm_clock is None:
            self._attach(machine.clock, machine.timers)
        super().realize(machine)

    def reset(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.alarm_next = 0
        self.alarm_running = False
        self.irq_pending = False
        self.irq_enabled = False
        self._update()

    # -- time --------------------------------------------------------------------------------

    def _source_ns(self) -> int:
        if self.clock == "vm":
            if self.vm_clock is None:
                raise RuntimeError("goldfish-rtc: clock=vm needs a machine clock")
            return self.vm_clock.now_ns()
        return self.wall_ns()

    def now(self) -> int:
        """The RTC's time: nanoseconds since the epoch."""
        return (self.tick_offset + self._source_ns()) & _U64

    def _update(self) -> None:
        self.irq.set(self.irq_pending and self.irq_enabled)

    def _fire(self) -> None:
        self.alarm_running = False
        self.irq_pending = True
        self._update()

    def _alarm_fired(self) -> None:
        if self.now() < self.alarm_next:
            self._arm()  # the host clock ran slower than the guest clock: wait on
        else:
            self._fire()

    def _arm(self) -> None:
        delay = self.alarm_next - self.now()
        if self._timer is None or self.vm_clock is None:
            return
        self._timer.arm(self.vm_clock.now_ns() + delay)

    def _set_alarm(self) -> None:
        if self.alarm_next <= self.now():
            self._clear_alarm()
            self._fire()
        else:
            self.alarm_running = True
            self._arm()

    def _clear_alarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.alarm_running = False

    # -- state -----------------------------------------------------------------------------------

    STATE_VERSION: ClassVar[int] = 1

    def save_state(self) -> dict[str, Any]:
        """The RTC's time (not its offset: QEMU's ``tick_offset_vmstate``), the alarm,
        the interrupt state."""
        rec = header(self.name, self.STATE_VERSION)
        rec.update(time=self.now(), time_high=self.time_high, alarm_next=self.alarm_next,
                   alarm_running=self.alarm_running, irq_pending=self.irq_pending,
                   irq_enabled=self.irq_enabled)
        return rec

    def check_state(self, record: Any) -> None:
        """``StateError`` unless :meth:`load_state` would take ``record``."""
        rec = check_header(record, self.name, self.STATE_VERSION)
        where = f"{self.name} state"
        for key in ("time", "alarm_next"):
            get_int(rec, key, 0, _U64, where)
        get_int(rec, "time_high", 0, _U32, where)
        for key in ("alarm_running", "irq_pending", "irq_enabled"):
            get_bool(rec, key, where)

    def load_state(self, record: dict[str, Any]) -> None:
        """Check, then take, a :meth:`save_state` record: the RTC goes on from the
        saved time, a running alarm is re-armed on the machine's clock."""
        self.check_state(record)
        if self._timer is not None:
            self._timer.cancel()
        self.tick_offset = (record["time"] - self._source_ns()) & _U64
        self.time_high = record["time_high"]
        self.alarm_next = record["alarm_next"]
        self.alarm_running = record["alarm_running"]
        self.irq_pending = record["irq_pending"]
        self.irq_enabled = record["irq_enabled"]
        if self.alarm_running:
            self._arm()
        self._update()

    # -- MMIO ------------------------------------------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        if offset == TIME_LOW:
            now = self.now()
            self.time_high = now >> 32
            return now & _U32
        if offset == TIME_HIGH:
            return self.time_high
        if offset == ALARM_LOW:
            return self.alarm_next & _U32
        if offset == ALARM_HIGH:
            return self.alarm_next >> 32
        if offset == IRQ_ENABLED:
            return int(self.irq_enabled)
        if offset == ALARM_STATUS:
            return int(self.alarm_running)
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        if offset in (TIME_LOW, TIME_HIGH):
            current = self.now()
            new = _deposit(current, 0 if offset == TIME_LOW else 32, value)
            self.tick_offset = (self.tick_offset + new - current) & _U64
        elif offset == ALARM_LOW:
            self.alarm_next = _deposit(self.alarm_next, 0, value)
            self._set_alarm()
        elif offset == ALARM_HIGH:
            self.alarm_next = _deposit(self.alarm_next, 32, value)
        elif offset == IRQ_ENABLED:
            self.irq_enabled = bool(value & 1)
            self._update()
        elif offset == CLEAR_ALARM:
            self._clear_alarm()
        elif offset == CLEAR_INTERRUPT:
            self.irq_pending = False
            self._update()

    def fdt_node(self, tree: DeviceTree, parent: FdtNode, place: FdtPlacement) -> FdtNode:
        """``rtc@ADDR``, ``compatible = "google,goldfish-rtc"``, one interrupt."""
        return tree.device_node(parent, "rtc", place, "google,goldfish-rtc")
