"""The base of machines whose CPUs are KVM vCPUs: one host thread per vCPU.

A board subclasses :class:`KvmMachine`, places RAM (``add_ram``), devices in
the memory space (``add_device(dev, base)``) and in the port space
(:attr:`io`, ``io.add_mmio(port, dev, size)``), then calls
:meth:`KvmMachine.create_vm` and :meth:`KvmMachine.create_vcpus`, and sets each
vCPU's start state in :meth:`KvmMachine.setup_vcpus`.

- Each vCPU runs ``KVM_RUN`` on its own thread, outside the GIL; what KVM hands
  back (port I/O, MMIO outside RAM) is decoded in C and reaches the devices
  under :attr:`big_lock` (QEMU's big lock), which the machine's own thread
  also holds while it runs timers and the calls I/O threads queued.
- Interrupt lines go to the in-kernel irqchip (``KVM_IRQ_LINE``, or a
  resampling irqfd: :meth:`KvmMachine.irq_connect`); virtio-mmio queue
  notifications arrive through ioeventfd (:meth:`KvmMachine.notify_by_eventfd`),
  with no trip through a vCPU's loop.
- A triple fault is a reset request (``-no-reboot``: the end, status 0), a
  pause or a shutdown stops every vCPU (``immediate_exit`` plus a signal), an
  exception on a vCPU thread ends the machine and comes out of :meth:`run`.
"""

from __future__ import annotations

import bisect
import os
import selectors
import threading
from collections.abc import Callable
from typing import Any, ClassVar

from vmforge.accel.kvm import Kvm, KvmError, Vcpu, VcpuThread, Vm, kvm_available
from vmforge.accel.kvm.stats import KvmStats
from vmforge.accel.locks import released
from vmforge.machine import Machine, MachineError, ShutdownReason
from vmforge.memory import AddressSpace, QuietUnassignedLog

__all__ = ["KvmMachine"]


class _Exits:
    """The callbacks object the vCPUs run with: every device access under the
    machine's lock, port I/O to :attr:`KvmMachine.io`, MMIO to its space."""

    def __init__(self, machine: KvmMachine) -> None:
        self.m = machine
        self.lock = machine.big_lock
        self.io = machine.io
        self.space = machine.space
        self._edges: list[int] | None = None      # port regions' bounds, once built

    def _straddles(self, port: int, size: int) -> bool:
        """Whether ``[port, port + size)`` crosses the edge of a port region."""
        if size == 1:
            return False
        if self._edges is None:
            self._edges = sorted({e for r in self.io.regions() for e in (r.base, r.end)})
        i = bisect.bisect_right(self._edges, port)
        return i < len(self._edges) and self._edges[i] < port + size

    def pio_in(self, port: int, size: int) -> int:
        """A port nobody claims reads as all ones (QEMU's ``unassigned_io_read``:
        what a PC's bus gives, and what a probe for an absent device expects).  An
        access across the edge of a device's ports is split into bytes, as QEMU's
        memory core splits it."""
        with self.lock:
            if self._straddles(port, size):
                return sum(self.pio_in(port + i, 1) << (8 * i) for i in range(size))
            misses = self.io.bad_accesses
            value = int(self.io.read(port, size))
            if self.io.bad_accesses != misses:
                return (1 << (8 * size)) - 1
            return value

    def pio_out(self, port: int, size: int, value: int) -> None:
        with self.lock:
            if self._straddles(port, size):
                for i in range(size):
                    self.io.write(port + i, 1, (value >> (8 * i)) & 0xFF)
                return
            self.io.write(port, size, value)

    def mmio_read(self, addr: int, size: int) -> int:
        with self.lock:
            return int(self.space.read(addr, size))

    def mmio_write(self, addr: int, size: int, value: int) -> None:
        with self.lock:
            self.space.write(addr, size, value)

    def shutdown(self, vcpu: Vcpu) -> bool:
        """A triple fault: the machine resets (or ends with ``-no-reboot``)."""
        self.m.cpu_reset_request(vcpu)
        return False

    def halt(self, vcpu: Vcpu) -> bool:
        """Only without the in-kernel irqchip does KVM hand ``hlt`` back."""
        return not self.m.stopping


class KvmMachine(Machine):
    """A machine on ``-accel kvm``: one :class:`~vmforge.accel.kvm.Vcpu` per CPU,
    each on its own thread."""

    accels: ClassVar[tuple[str, ...]] = ("kvm",)
    #: KVM's TSS (3 pages) and identity-map page on Intel hosts: where QEMU puts
    #: them (the board reserves them in its memory map)
    tss_addr: ClassVar[int] = 0xFEFFD000
    identity_map_addr: ClassVar[int] = 0xFEFFC000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: the I/O port space (x86 ``in``/``out``), 64 Ki ports; probing ports nobody
        #: claims is what PC software does (PCI, legacy devices): logged only with
        #: ``-d guest_errors``, as QEMU
        self.io = AddressSpace(name="io")
        if "guest_errors" not in self.config.trace:
            self.io.on_bad_access = QuietUnassignedLog("io")
        self.big_lock = threading.RLock()
        self.kvm: Kvm | None = None
        self.vm: Vm | None = None
        self.vcpus: list[Vcpu] = []
        self._threads: list[VcpuThread] = []
        self._exits: _Exits | None = None
        self._stats: list[KvmStats] | None = None
        #: eventfds the I/O thread watches: (fd, handler, run on the I/O thread
        #: itself rather than on the machine's)
        self._eventfds: list[tuple[int, Callable[[], None], bool]] = []
        self._irqfds: list[int] = []
        self._selector: selectors.DefaultSelector | None = None
        self._io_thread: threading.Thread | None = None
        self._io_wake_r, self._io_wake_w = -1, -1
        #: notifications the I/O thread took from their eventfds and queued for the
        #: machine's thread, by eventfd (:meth:`flush_notifies` runs them at once)
        self._notified: dict[int, Callable[[], None]] = {}
        self._notify_lock = threading.Lock()
        self.has_pit = False

    # -- assembly (from build) ----------------------------------------------------------

    def create_vm(self, pit: bool = True) -> Vm:
        """Open ``/dev/kvm`` and make the VM (call after the RAM is placed: it is
        handed to KVM as memory slots), with the in-kernel irqchip and (``pit``) PIT."""
        why = kvm_available()
        if why is not None:
            raise MachineError(f"machine {self.name!r}: -accel kvm: {why}")
        try:
            self.kvm = Kvm()
            self.vm = self.kvm.create_vm()
            self.vm.set_tss_addr(self.tss_addr)
            self.vm.set_identity_map_addr(self.identity_map_addr)
            self.vm.create_irqchip()
            self.vm.route_irqs_as_qemu()
            if pit:
                self.vm.create_pit()
            self.has_pit = pit
            self.vm.map_memory(self.space.memory)
        except KvmError as exc:
            raise MachineError(f"machine {self.name!r}: {exc}") from None
        return self.vm

    def create_vcpus(self) -> list[Vcpu]:
        assert self.vm is not None and self.kvm is not None
        cpuid = self.kvm.supported_cpuid()
        for i in range(self.config.smp):
            vcpu = self.vm.create_vcpu(i)
            vcpu.set_cpuid(self.vcpu_cpuid(i, cpuid))
            self.vcpus.append(vcpu)
        self.cpus = self.vcpus
        try:        # opened now: the ioctl would wait for a running vCPU
            self._stats = [KvmStats(self.vm.fd)] + [KvmStats(v.fd) for v in self.vcpus]
        except OSError:
            self._stats = None
        return self.vcpus

    def kvm_stats(self) -> list[KvmStats] | None:
        """KVM's statistics files: the VM's, then each vCPU's (None: the host has none)."""
        return self._stats

    def vcpu_cpuid(self, index: int, supported: list[Any]) -> list[Any]:
        """The CPUID a vCPU shows: the ``-cpu`` model (default ``qemu64``, QEMU's
        default; ``host``: everything KVM supports), see
        :mod:`vmforge.accel.kvm.cpu_model`."""
        from vmforge.accel.kvm.cpu_model import cpuid_for

        model = str(self.config.extra.get("cpu", "qemu64"))
        try:
            return cpuid_for(model, supported, index, self.config.smp)
        except ValueError as exc:
            raise MachineError(str(exc)) from None

    def irq_connect(self, line: Any, gsi: int, irqfd: bool = False) -> None:
        """Wire a device's interrupt line to GSI ``gsi`` of the in-kernel irqchip: by
        ``KVM_IRQ_LINE`` (the level as it changes), or with ``irqfd`` through a
        resampling irqfd (``KVM_IRQFD`` with a resample eventfd), QEMU's way for
        level interrupts: a rising line is one eventfd write, which asserts the GSI
        inside KVM; the guest's EOI de-asserts it and signals the resample eventfd,
        on which the I/O thread asserts it again if the line is still up.  Right
        whether the guest programs the pin edge- or level-triggered."""
        if not irqfd or self.kvm is None or not self.kvm.check_extension("IRQFD_RESAMPLE"):
            line.connect(self._set_gsi, gsi)
            return
        assert self.vm is not None
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        resample = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            self.vm.irqfd(fd, gsi, resamplefd=resample)
        except KvmError:
            os.close(fd)
            os.close(resample)
            raise
        self._irqfds.append(fd)            # (resample: closed with the I/O fds)

        def still_up() -> None:            # (on the I/O thread)
            if line.level:
                os.eventfd_write(fd, 1)

        def sink(_gsi: int, level: bool) -> None:
            if level:
                os.eventfd_write(fd, 1)

        self._eventfds.append((resample, still_up, True))
        line.connect(sink, gsi)

    def _set_gsi(self, gsi: int, level: int) -> None:
        if self.vm is not None:
            self.vm.set_irq_line(gsi, 1 if level else 0)

    def notify_by_eventfd(self, addr: int, size: int, datamatch: int | None,
                          handler: Callable[[], None], pio: bool = False) -> None:
        """A guest write at ``addr`` (``datamatch``: of that value) signals an eventfd
        inside KVM; an I/O thread sees it and runs ``handler`` on the machine's
        thread (QEMU's ioeventfd: the vCPU goes on without an exit)."""
        assert self.vm is not None
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            self.vm.ioeventfd(fd, addr, size, pio=pio, datamatch=datamatch)
        except KvmError:
            os.close(fd)
            raise
        self._eventfds.append((fd, handler, False))

    # -- life cycle -----------------------------------------------------------------------

    def setup_vcpus(self) -> None:
        """Put every vCPU in its start state (subclasses: entry point, registers)."""

    def reset_cpus(self) -> None:
        self.setup_vcpus()          # (reset() stopped the vCPU threads first)

    def reset(self, reason: str = "user") -> None:
        self._stop_vcpus()
        with self.big_lock:
            super().reset(reason)

    def cpu_reset_request(self, vcpu: Vcpu) -> None:
        """A vCPU asked for a reset (a triple fault)."""
        self.request_reset()

    @property
    def stopping(self) -> bool:
        return self.stopped or self.paused or self._reset_requested

    def kick_cpus(self) -> None:
        # vCPUs take interrupts from the irqchip without a kick; they are stopped
        # only to pause, reset or end the machine
        if self.stopping:
            for t in self._threads:
                t.vcpu.stop()

    def run(self, timeout: float | None = None) -> int:
        """As :meth:`Machine.run`; what ended a vCPU thread (a callback's exception,
        an exit KVM could not handle) comes out of here."""
        try:
            status = super().run(timeout)
            self._stop_vcpus()
        except BaseException as exc:
            self._error = exc
            self._stop_vcpus(quietly=True)
            raise
        return status

    def _stop_vcpus(self, quietly: bool = False) -> None:
        """End every vCPU thread; what ended one badly is raised (``quietly``: not,
        and a thread that does not end within 5 s is left behind, when tearing down)."""
        for t in self._threads:
            t.vcpu.stop()
        # (a Ctrl-C may come between making the threads and starting the last of them)
        started = [t for t in self._threads if t.ident is not None]
        for t in started:
            t.join(5 if quietly else None)
        threads, self._threads = started, []
        if quietly:
            return
        for vcpu in self.vcpus:
            vcpu.clear_stop()
        for t in threads:
            self._raise_from(t)

    def _raise_from(self, t: VcpuThread) -> None:
        try:
            t.result(0)
        except KvmError as exc:
            raise MachineError(f"machine {self.name!r}: vCPU {t.vcpu.index}: {exc}") from exc

    def run_cpus(self) -> bool:
        """Start the vCPU threads (again after a pause or reset); then the machine's
        thread only waits for events: True, "halted"."""
        if self._exits is None:
            self._exits = _Exits(self)
            self._start_io_thread()
        for t in self._threads:
            if not t.is_alive():
                self._threads.remove(t)
                self._raise_from(t)
                if not self.stopping:     # a vCPU ended on its own (KVM_EXIT_HLT...)
                    self.request_shutdown(ShutdownReason.POWEROFF, 0)
                return True
        if not self._threads and not self.stopping:
            for vcpu in self.vcpus:
                self._threads.append(_Watched(self, vcpu, self._exits))
            for t in self._threads:
                t.start()
        return True

    # -- migration: the in-kernel devices' record, the dirty log ---------------------------

    def park_cpus(self) -> None:
        """End the vCPU threads (they start again when the machine runs) from the
        machine's thread, which may hold :attr:`big_lock` (a queued call): it lets
        go of it while it waits, so a vCPU finishing an I/O exit can take it."""
        for t in self._threads:
            t.vcpu.stop()
        with released(self.big_lock):
            self._stop_vcpus()

    def save_board_state(self) -> dict[str, Any]:
        """The in-kernel PICs, I/O APIC, PIT and clock (:mod:`vmforge.accel.kvm.records`);
        the vCPU threads end first (parked: they start again when the machine runs)."""
        from vmforge.accel.kvm.records import save_vm

        self.park_cpus()
        assert self.vm is not None
        return save_vm(self.vm, self.has_pit)

    def check_board_state(self, record: Any) -> None:
        from vmforge.accel.kvm.records import check_vm

        check_vm(record, self.has_pit)

    def load_board_state(self, record: dict[str, Any]) -> None:
        from vmforge.accel.kvm.records import load_vm

        self.park_cpus()
        assert self.vm is not None
        load_vm(self.vm, record, self.has_pit)

    def dirty_log(self) -> Any:
        """The dirty log of guest RAM for live migration: KVM's and the devices'."""
        from vmforge.migration.kvm_dirty import KvmDirtyLog

        assert self.vm is not None
        return KvmDirtyLog(self.space.memory, self.vm)

    def monitor_info(self, what: str) -> str | None:
        """``info registers|cpus|kvm|stats`` (the vCPUs are stopped to read their
        state and go on at the next slice)."""
        from vmforge.accel.kvm.monitor import kvm_info

        if what in ("registers", "cpus"):
            self._stop_vcpus()
        return kvm_info(self, what)

    def close(self) -> None:
        self._stop_vcpus(quietly=True)
        self._stop_io_thread()
        super().close()
        for stats in self.kvm_stats() or ():
            stats.close()
        self._stats = None
        for vcpu in self.vcpus:
            vcpu.close()
        self.vcpus = []
        if self.vm is not None:
            self.vm.close()
            self.vm = None
        if self.kvm is not None:
            self.kvm.close()
            self.kvm = None

    # -- the I/O thread: ioeventfds --------------------------------------------------------

    def _start_io_thread(self) -> None:
        if not self._eventfds:
            return
        self._selector = selectors.DefaultSelector()
        self._io_wake_r, self._io_wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._selector.register(self._io_wake_r, selectors.EVENT_READ, None)
        for fd, handler, inline in self._eventfds:
            self._selector.register(fd, selectors.EVENT_READ, (handler, inline))
        self._io_thread = threading.Thread(target=self._io_loop, name=f"{self.name}-io",
                                           daemon=True)
        self._io_thread.start()

    def _io_loop(self) -> None:
        sel = self._selector
        assert sel is not None
        while True:
            for key, _ in sel.select():
                if key.data is None:
                    return
                handler, inline = key.data
                with self._notify_lock:
                    if not self._take_notify(key.fd, handler, inline):
                        continue
                if inline:
                    handler()
                else:
                    self.call_soon(self._run_notified)

    def _take_notify(self, fd: int, handler: Callable[[], None], inline: bool) -> bool:
        """Read eventfd ``fd`` (under :attr:`_notify_lock`): whether it was signalled;
        a kick for the machine's thread is then noted for :meth:`_run_notified`."""
        try:
            os.eventfd_read(fd)
        except BlockingIOError:
            return False
        if not inline:
            self._notified[fd] = handler
        return True

    def _run_notified(self) -> None:
        with self._notify_lock:
            handlers = list(self._notified.values())
            self._notified.clear()
        for handler in handlers:
            handler()

    def flush_notifies(self) -> None:
        """Run, now, the notifications the guest has signalled on ioeventfds and
        the machine's thread has not yet handled (the machine's thread, vCPUs
        parked; QEMU does the same as it stops ioeventfd): a queue kick made just
        before a pause is then in the device state a migration or snapshot saves,
        not handled afterwards on the source only."""
        with self._notify_lock:
            for fd, handler, inline in self._eventfds:
                if self._take_notify(fd, handler, inline) and inline:
                    handler()
        self._run_notified()

    def _stop_io_thread(self) -> None:
        if self._io_thread is not None:
            os.write(self._io_wake_w, b"x")
            self._io_thread.join(5)
            self._io_thread = None
        if self._selector is not None:
            self._selector.close()
            self._selector = None
            os.close(self._io_wake_r)
            os.close(self._io_wake_w)
        for fd, _, _ in self._eventfds:
            os.close(fd)
        self._eventfds = []
        for fd in self._irqfds:
            os.close(fd)
        self._irqfds = []


class _Watched(VcpuThread):
    """A vCPU thread that wakes the machine's thread when its run ends."""

    def __init__(self, machine: KvmMachine, vcpu: Vcpu, callbacks: object) -> None:
        super().__init__(vcpu, callbacks)
        self.machine = machine

    def run(self) -> None:
        try:
            super().run()
        finally:
            if self._error is not None:
                self.machine.request_shutdown(ShutdownReason.ERROR, 1)
            self.machine.kick()
