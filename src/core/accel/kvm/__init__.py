"""A libkvm-style layer over ``/dev/kvm`` (x86-64), usable without any machine.

``Kvm`` (the system: API version, capabilities, supported CPUID and MSRs) ->
``Vm`` (memory slots straight from a :class:`~vmforge.memory.GuestMemory`,
read-only slots, dirty logging, in-kernel or split irqchip and PIT, IRQ lines,
ioeventfd, irqfd, TSS and identity-map addresses) -> ``Vcpu`` (registers,
special registers, FPU, MSRs, CPUID, LAPIC, MP state, XSAVE, XCRs, debug
registers, vCPU events, guest debug, interrupt and NMI injection, ``run``).
The README's "The KVM layer" section has a runnable example: a guest doing port
and MMIO I/O at CPL3 (where a nested KVM runs it natively) with a Python
callbacks object (tests/kvm/test_kvm_example.py runs it as written).

``run`` calls ``KVM_RUN`` without the GIL and decodes the exit in C
(``vmforge._fast.kvm``), handing what KVM cannot do itself to the callbacks
(see :class:`Callbacks`): port and MMIO reads are answered before the guest
is entered again; string port I/O arrives element by element, or in bulk to
``pio_in_string``/``pio_out_string``.  An exception in a callback stops that
vCPU and propagates out of ``run`` (or :meth:`VcpuThread.result` for a vCPU on
its own thread, :meth:`Vcpu.start`); ``KVM_EXIT_INTERNAL_ERROR``,
``FAIL_ENTRY`` and exits the layer does not know raise :class:`KvmExitError`
carrying the reason, suberror and registers.  :meth:`Vcpu.stop` ends a run
from another thread (``immediate_exit`` and a signal to the vCPU's thread);
Ctrl-C raises ``KeyboardInterrupt`` from ``run`` on the main thread.
"""
from __future__ import annotations

import enum
import os
import struct
import threading
from collections.abc import Iterable
from typing import Any, Protocol

from vmforge._fast import kvm as _kvm
from vmforge.accel.kvm.state import CpuidEntry, DTable, Fpu, Regs, Segment, Sregs
from vmforge.errors import VmforgeError

__all__ = [
    "IRQCHIP_IOAPIC",
    "IRQCHIP_PIC_MASTER",
    "IRQCHIP_PIC_SLAVE",
    "Callbacks",
    "CpuidEntry",
    "DTable",
    "Fpu",
    "Kvm",
    "KvmError",
    "KvmExitError",
    "MemorySlot",
    "Regs",
    "Segment",
    "Sregs",
    "Vcpu",
    "VcpuExit",
    "VcpuThread",
    "Vm",
    "kvm_available",
]

DEVICE = "/dev/kvm"
#: ``KVM_IRQCHIP_*``: the in-kernel irqchip's chips, for :meth:`Vm.set_gsi_routing`
IRQCHIP_PIC_MASTER, IRQCHIP_PIC_SLAVE, IRQCHIP_IOAPIC = 0, 1, 2
_IRQ_ROUTING_IRQCHIP = 1     # KVM_IRQ_ROUTING_IRQCHIP
PAGE_SIZE = 4096
IOCTLS: dict[str, int] = dict(_kvm.IOCTLS)


class KvmError(VmforgeError):
    """KVM refused something or is not usable here."""


class VcpuExit(enum.IntEnum):
    """Why :meth:`Vcpu.run` returned."""

    STOPPED = _kvm.EXIT_STOPPED
    HLT = _kvm.EXIT_HLT
    SHUTDOWN = _kvm.EXIT_SHUTDOWN
    DEBUG = _kvm.EXIT_DEBUG
    SYSTEM_EVENT = _kvm.EXIT_SYSTEM_EVENT


class KvmExitError(KvmError):
    """The vCPU stopped on an exit nobody can handle (internal error, failed entry, an
    unknown exit): ``reason`` (number), ``name``, ``suberror``, ``info`` (the decoded
    ``kvm_run`` fields) and ``regs`` at the time."""

    def __init__(self, info: dict[str, Any], regs: Regs | None) -> None:
        self.info = info
        self.reason: int = info["reason"]
        self.name: str = info["name"]
        self.suberror: int | None = info.get("suberror")
        self.regs = regs
        detail = ", ".join(f"{k}={_hex(v)}" for k, v in info.items() if k not in ("reason",
                                                                                 "name"))
        where = f"; rip={regs.rip:#x} rsp={regs.rsp:#x} rflags={regs.rflags:#x}" if regs else ""
        super().__init__(f"KVM_EXIT_{self.name} (exit reason {self.reason})"
                         f"{': ' + detail if detail else ''}{where}")


def _hex(v: Any) -> str:
    if isinstance(v, int):
        return f"{v:#x}"
    if isinstance(v, list):
        return "[" + " ".join(f"{x:#x}" for x in v) + "]"
    return str(v)


class Callbacks(Protocol):
    """What a callbacks object may define (each is optional: a missing port or MMIO
    read returns all ones, a missing write is dropped, a missing ``halt``/``shutdown``/
    ``debug`` ends the run; string port I/O goes to ``pio_in_string``/
    ``pio_out_string`` in one call when they exist, else element by element).
    ``halt``, ``shutdown`` and ``debug`` return true to enter the guest again."""

    def pio_in(self, port: int, size: int) -> int: ...
    def pio_out(self, port: int, size: int, value: int) -> None: ...
    def pio_in_string(self, port: int, size: int, count: int) -> bytes: ...
    def pio_out_string(self, port: int, size: int, data: bytes) -> None: ...
    def mmio_read(self, addr: int, size: int) -> int: ...
    def mmio_write(self, addr: int, size: int, value: int) -> None: ...
    def halt(self, vcpu: Vcpu) -> bool: ...
    def shutdown(self, vcpu: Vcpu) -> bool: ...
    def debug(self, vcpu: Vcpu, info: dict[str, Any]) -> bool: ...
    def pre_run(self, vcpu: Vcpu) -> None: ...
    def post_run(self, vcpu: Vcpu) -> None: ...
    def irq_window(self, vcpu: Vcpu) -> None: ...
    def tpr_access(self, vcpu: Vcpu, rip: int, is_write: bool) -> None: ...


def kvm_available(path: str = DEVICE) -> str | None:
    """None when ``path`` can be opened read-write, else why not."""
    if not os.path.exists(path):
        return f"{path} does not exist (no KVM on this host)"
    if not os.access(path, os.R_OK | os.W_OK):
        return f"{path} is not accessible to this user (join the kvm group)"
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CLOEXEC))
    except OSError as exc:
        return f"{path} cannot be opened: {exc.strerror}"
    return None


class _Fd:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _ioctl(self, name: str, arg: int = 0) -> int:
        try:
            return int(_kvm.ioctl_int(self.fd, IOCTLS[name], arg))
        except OSError as exc:
            raise KvmError(f"{name}({arg:#x}): {exc.strerror}") from exc


class Kvm(_Fd):
    """The KVM system device: API version, capabilities, supported CPUID and MSRs."""

    def __init__(self, path: str = DEVICE) -> None:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise KvmError(f"cannot open {path}: {exc.strerror}") from exc
        super().__init__(fd)
        version = self.api_version
        if version != _kvm.API_VERSION:
            self.close()
            raise KvmError(f"KVM API version {version}, this layer speaks "
                           f"{_kvm.API_VERSION}")
        self.vcpu_mmap_size = self._ioctl("KVM_GET_VCPU_MMAP_SIZE")

    def __enter__(self) -> Kvm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def api_version(self) -> int:
        return self._ioctl("KVM_GET_API_VERSION")

    def check_extension(self, cap: int | str) -> int:
        """``KVM_CHECK_EXTENSION``: 0 when absent, else 1 or a capability's value.
        ``cap`` is a number or a name without ``KVM_CAP_`` (``"IRQFD"``)."""
        number = _kvm.CAPS[cap] if isinstance(cap, str) else cap
        return self._ioctl("KVM_CHECK_EXTENSION", number)

    def capabilities(self) -> dict[str, int]:
        """The capabilities this layer knows by name, with their values."""
        return {name: self.check_extension(number) for name, number in _kvm.CAPS.items()}

    def supported_cpuid(self) -> list[CpuidEntry]:
        """``KVM_GET_SUPPORTED_CPUID``."""
        try:
            return [CpuidEntry(*e) for e in _kvm.get_supported_cpuid(self.fd)]
        except OSError as exc:
            raise KvmError(f"KVM_GET_SUPPORTED_CPUID: {exc.strerror}") from exc

    def msr_index_list(self) -> list[int]:
        """``KVM_GET_MSR_INDEX_LIST``."""
        return list(_kvm.get_msr_index_list(self.fd))

    def create_vm(self) -> Vm:
        return Vm(self, self._ioctl("KVM_CREATE_VM"))


class MemorySlot:
    """One ``KVM_SET_USER_MEMORY_REGION`` slot and the buffer that backs it."""

    def __init__(self, slot: int, base: int, size: int, flags: int, view: memoryview) -> None:
        self.slot = slot
        self.base = base
        self.size = size
        self.flags = flags
        self.view = view  # pins the host memory while KVM maps it

    @property
    def readonly(self) -> bool:
        return bool(self.flags & _kvm.MEM_READONLY)

    @property
    def log_dirty(self) -> bool:
        return bool(self.flags & _kvm.MEM_LOG_DIRTY_PAGES)


class Vm(_Fd):
    """A virtual machine: memory slots, interrupt controllers, eventfds, vCPUs."""

    def __init__(self, kvm: Kvm, fd: int) -> None:
        super().__init__(fd)
        self.kvm = kvm
        self.slots: dict[int, MemorySlot] = {}
        self.vcpus: list[Vcpu] = []
        self.has_irqchip = False

    def close(self) -> None:
        for v in self.vcpus:
            v.close()
        super().close()

    def __enter__(self) -> Vm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- memory --------------------------------------------------------------------

    def set_memory(self, slot: int, base: int, buffer: Any, readonly: bool = False,
                   log_dirty: bool = False) -> MemorySlot:
        """Map ``buffer`` (writable host memory, page-aligned, whole pages; an ``mmap``)
        at guest physical ``base`` as ``slot``; KVM uses the memory itself, no copy."""
        view = memoryview(buffer).cast("B")
        size = view.nbytes
        if size == 0 or size % PAGE_SIZE or base % PAGE_SIZE:
            raise KvmError(f"slot {slot}: base {base:#x} and size {size:#x} must be "
                           "whole pages")
        addr = _kvm.buffer_address(view)
        if addr % PAGE_SIZE:
            raise KvmError(f"slot {slot}: host buffer at {addr:#x} is not page-aligned")
        if readonly and not self.kvm.check_extension("READONLY_MEM"):
            raise KvmError("this KVM has no read-only memory slots (KVM_CAP_READONLY_MEM)")
        flags = ((_kvm.MEM_READONLY if readonly else 0)
                 | (_kvm.MEM_LOG_DIRTY_PAGES if log_dirty else 0))
        try:
            _kvm.set_user_memory_region(self.fd, slot, flags, base, size, addr)
        except OSError as exc:
            raise KvmError(f"KVM_SET_USER_MEMORY_REGION slot {slot} at {base:#x}: "
                           f"{exc.strerror}") from exc
        ms = MemorySlot(slot, base, size, flags, view)
        self.slots[slot] = ms
        return ms

    def remove_memory(self, slot: int) -> None:
        """Delete a slot (size 0) and let go of its buffer."""
        ms = self.slots.pop(slot)
        _kvm.set_user_memory_region(self.fd, slot, 0, ms.base, 0, 0)

    def map_memory(self, mem: Any, log_dirty: bool = False, first_slot: int = 0) -> list[
            MemorySlot]:
        """One slot per RAM region of a :class:`~vmforge.memory.GuestMemory` (ROM regions
        become read-only slots where KVM has them)."""
        out = []
        slot = first_slot
        for region in mem.regions:
            readonly = region.readonly and bool(self.kvm.check_extension("READONLY_MEM"))
            out.append(self.set_memory(slot, region.base, region.buffer, readonly=readonly,
                                       log_dirty=log_dirty))
            slot += 1
        return out

    def dirty_pages(self, slot: int) -> list[int]:
        """Page numbers (within the slot) written since the last call; the slot must
        log dirty pages (``log_dirty=True``)."""
        ms = self.slots[slot]
        if not ms.log_dirty:
            raise KvmError(f"slot {slot} does not log dirty pages")
        bitmap = _kvm.get_dirty_log(self.fd, slot, ms.size // PAGE_SIZE)
        bits = int.from_bytes(bitmap, "little")
        out = []
        while bits:
            low = bits & -bits
            out.append(low.bit_length() - 1)
            bits ^= low
        return out

    # -- x86 set-up ------------------------------------------------------------------

    def set_tss_addr(self, addr: int) -> None:
        """``KVM_SET_TSS_ADDR`` (three pages Intel's real-mode emulation needs); the
        address travels as an unsigned long, so ``0xfffbd000`` is fine."""
        self._ioctl("KVM_SET_TSS_ADDR", addr)

    def set_identity_map_addr(self, addr: int) -> None:
        """``KVM_SET_IDENTITY_MAP_ADDR`` (one page, before the first vCPU)."""
        _kvm.set_identity_map_addr(self.fd, addr)

    def enable_cap(self, cap: int | str, *args: int, flags: int = 0) -> None:
        """``KVM_ENABLE_CAP`` on the VM (``vm.enable_cap("SPLIT_IRQCHIP", 24)`` before
        any vCPU for an in-kernel LAPIC with PIC and IOAPIC left to user space)."""
        number = _kvm.CAPS[cap] if isinstance(cap, str) else cap
        try:
            _kvm.enable_cap(self.fd, number, flags, args)
        except OSError as exc:
            raise KvmError(f"KVM_ENABLE_CAP {cap}: {exc.strerror}") from exc
        if cap == "SPLIT_IRQCHIP":
            self.has_irqchip = True

    def create_irqchip(self) -> None:
        """The in-kernel PIC pair, IOAPIC and local APICs (before any vCPU)."""
        self._ioctl("KVM_CREATE_IRQCHIP")
        self.has_irqchip = True

    def create_pit(self, speaker_dummy: bool = True) -> None:
        """The in-kernel i8254 PIT (``KVM_CREATE_PIT2``; after the irqchip)."""
        _kvm.create_pit2(self.fd, 1 if speaker_dummy else 0)

    def set_irq_line(self, irq: int, level: int) -> None:
        """``KVM_IRQ_LINE``: drive GSI ``irq`` to ``level`` (0 or 1)."""
        try:
            _kvm.irq_line(self.fd, irq, level)
        except OSError as exc:
            raise KvmError(f"KVM_IRQ_LINE {irq}={level}: {exc.strerror}") from exc

    def pulse_irq(self, irq: int) -> None:
        """An edge on GSI ``irq``: high, then low."""
        self.set_irq_line(irq, 1)
        self.set_irq_line(irq, 0)

    def set_gsi_routing(self, routes: Iterable[tuple[int, int, int]]) -> None:
        """``KVM_SET_GSI_ROUTING``: replace the GSI table with ``(gsi, irqchip, pin)``
        routes (irqchip: :data:`IRQCHIP_PIC_MASTER`, :data:`IRQCHIP_PIC_SLAVE`,
        :data:`IRQCHIP_IOAPIC`; a GSI may have several).  Each entry is the kernel's
        ``struct kvm_irq_routing_entry`` (gsi, type, flags, pad, then a 32-byte
        union whose irqchip member is irqchip, pin) after the 8-byte header."""
        entries = list(routes)
        size = _kvm.SIZES["kvm_irq_routing_entry"]
        buf = bytearray(_kvm.SIZES["kvm_irq_routing"] + size * len(entries))
        struct.pack_into("<II", buf, 0, len(entries), 0)
        for i, (gsi, chip, pin) in enumerate(entries):
            struct.pack_into("<IIIIII", buf, 8 + i * size, gsi, _IRQ_ROUTING_IRQCHIP, 0, 0,
                             chip, pin)
        try:
            _kvm.ioctl_int(self.fd, IOCTLS["KVM_SET_GSI_ROUTING"], _kvm.buffer_address(buf))
        except OSError as exc:
            raise KvmError(f"KVM_SET_GSI_ROUTING: {exc.strerror}") from exc

    def route_irqs_as_qemu(self) -> None:
        """The PC's routing QEMU sets (``kvm_pc_setup_irq_routing``): ISA IRQs 0..15 to
        the two PICs (but 2, the cascade), GSIs 1..23 to the same I/O APIC pin,
        and GSI 0 (the PIT) to pin 2, where MP tables and ACPI's override put it."""
        routes = [(i, IRQCHIP_PIC_MASTER, i) for i in range(8) if i != 2]
        routes += [(i, IRQCHIP_PIC_SLAVE, i - 8) for i in range(8, 16)]
        routes += [(i, IRQCHIP_IOAPIC, 2 if i == 0 else i) for i in range(24) if i != 2]
        self.set_gsi_routing(routes)

    def ioeventfd(self, fd: int, addr: int, size: int, pio: bool = False,
                  datamatch: int | None = None, deassign: bool = False) -> None:
        """Let a guest write of ``size`` bytes at ``addr`` (a port when ``pio``) signal
        the eventfd ``fd`` inside KVM, with no exit to user space; ``datamatch``
        limits it to one value."""
        flags = ((_kvm.IOEVENTFD_FLAG_PIO if pio else 0)
                 | (_kvm.IOEVENTFD_FLAG_DATAMATCH if datamatch is not None else 0)
                 | (_kvm.IOEVENTFD_FLAG_DEASSIGN if deassign else 0))
        try:
            _kvm.ioeventfd(self.fd, addr, size, fd, datamatch or 0, flags)
        except OSError as exc:
            raise KvmError(f"KVM_IOEVENTFD at {addr:#x}: {exc.strerror}") from exc

    def irqfd(self, fd: int, gsi: int, resamplefd: int | None = None,
              deassign: bool = False) -> None:
        """Let a write to the eventfd ``fd`` raise GSI ``gsi`` (needs the irqchip)."""
        flags = ((_kvm.IRQFD_FLAG_DEASSIGN if deassign else 0)
                 | (_kvm.IRQFD_FLAG_RESAMPLE if resamplefd is not None else 0))
        try:
            _kvm.irqfd(self.fd, fd, gsi, flags, -1 if resamplefd is None else resamplefd)
        except OSError as exc:
            raise KvmError(f"KVM_IRQFD gsi {gsi}: {exc.strerror}") from exc

    def stop(self) -> None:
        """End the run of every vCPU (each one's current or next ``run``)."""
        for v in self.vcpus:
            v.stop()

    # -- vCPUs --------------------------------------------------------------------------

    def create_vcpu(self, index: int | None = None) -> Vcpu:
        vid = len(self.vcpus) if index is None else index
        vcpu = Vcpu(self, self._ioctl("KVM_CREATE_VCPU", vid), vid)
        self.vcpus.append(vcpu)
        return vcpu


class Vcpu(_Fd):
    """One virtual CPU: its state and the run loop (one host thread per vCPU)."""

    def __init__(self, vm: Vm, fd: int, index: int) -> None:
        super().__init__(fd)
        self.vm = vm
        self.index = index
        self._runner = _kvm.VcpuRunner(fd, vm.kvm.vcpu_mmap_size)
        self._lock = threading.Lock()

    def close(self) -> None:
        if self.fd >= 0:
            self._runner.close()
            super().close()

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(self.fd, *args)
        except OSError as exc:
            raise KvmError(f"vCPU {self.index}: {what}: {exc.strerror}") from exc

    # -- state ------------------------------------------------------------------------

    def get_regs(self) -> Regs:
        return Regs(*self._call("KVM_GET_REGS", _kvm.get_regs))

    def set_regs(self, regs: Regs) -> None:
        self._call("KVM_SET_REGS", _kvm.set_regs, regs.as_tuple())

    def get_sregs(self) -> Sregs:
        return Sregs.from_raw(self._call("KVM_GET_SREGS", _kvm.get_sregs))

    def set_sregs(self, sregs: Sregs) -> None:
        self._call("KVM_SET_SREGS", _kvm.set_sregs, sregs.to_raw())

    def get_fpu(self) -> Fpu:
        return Fpu(**self._call("KVM_GET_FPU", _kvm.get_fpu))

    def set_fpu(self, fpu: Fpu) -> None:
        self._call("KVM_SET_FPU", _kvm.set_fpu, fpu.to_raw())

    def get_msrs(self, indices: Iterable[int]) -> dict[int, int]:
        """The MSRs asked for; :class:`KvmError` names the first KVM refuses."""
        wanted = list(indices)
        got: dict[int, int] = self._call("KVM_GET_MSRS", _kvm.get_msrs, wanted)
        if len(got) != len(wanted):
            raise KvmError(f"vCPU {self.index}: KVM_GET_MSRS refused MSR "
                           f"{wanted[len(got)]:#x}")
        return got

    def set_msrs(self, values: dict[int, int]) -> None:
        done = self._call("KVM_SET_MSRS", _kvm.set_msrs, dict(values))
        if done != len(values):
            raise KvmError(f"vCPU {self.index}: KVM_SET_MSRS refused MSR "
                           f"{list(values)[done]:#x}")

    def set_cpuid(self, entries: Iterable[CpuidEntry]) -> None:
        """``KVM_SET_CPUID2`` (usually ``kvm.supported_cpuid()``, perhaps edited)."""
        self._call("KVM_SET_CPUID2", _kvm.set_cpuid2, [e.as_tuple() for e in entries])

    def get_lapic(self) -> bytes:
        """The local APIC's register page (1 KiB; needs the in-kernel irqchip)."""
        return bytes(self._call("KVM_GET_LAPIC", _kvm.get_lapic))

    def set_lapic(self, regs: bytes) -> None:
        self._call("KVM_SET_LAPIC", _kvm.set_lapic, bytes(regs))

    def get_mp_state(self) -> int:
        """``KVM_MP_STATE_RUNNABLE`` (0), ``UNINITIALIZED`` (1), ``INIT_RECEIVED`` (2),
        ``HALTED`` (3), ``SIPI_RECEIVED`` (4)..."""
        return int(self._call("KVM_GET_MP_STATE", _kvm.get_mp_state))

    def set_mp_state(self, state: int) -> None:
        self._call("KVM_SET_MP_STATE", _kvm.set_mp_state, state)

    def get_debugregs(self) -> dict[str, int]:
        """``KVM_GET_DEBUGREGS``: ``db0``..``db3``, ``dr6``, ``dr7``, ``flags``."""
        values = self._call("KVM_GET_DEBUGREGS", _kvm.get_debugregs)
        return dict(zip(("db0", "db1", "db2", "db3", "dr6", "dr7", "flags"), values,
                        strict=True))

    def set_debugregs(self, regs: dict[str, int]) -> None:
        names = ("db0", "db1", "db2", "db3", "dr6", "dr7", "flags")
        self._call("KVM_SET_DEBUGREGS", _kvm.set_debugregs,
                   tuple(regs.get(n, 0) for n in names))

    def get_xcrs(self) -> dict[int, int]:
        """``KVM_GET_XCRS``: ``{0: XCR0}`` on x86."""
        return dict(self._call("KVM_GET_XCRS", _kvm.get_xcrs))

    def set_xcrs(self, values: dict[int, int]) -> None:
        self._call("KVM_SET_XCRS", _kvm.set_xcrs, dict(values))

    def get_xsave(self) -> bytes:
        """The 4 KiB XSAVE area, as the kernel lays it out (``KVM_GET_XSAVE``)."""
        return bytes(self._call("KVM_GET_XSAVE", _kvm.get_xsave))

    def set_xsave(self, area: bytes) -> None:
        self._call("KVM_SET_XSAVE", _kvm.set_xsave, bytes(area))

    def get_vcpu_events(self) -> bytes:
        """Pending exceptions, interrupts, NMI and SMM state (``struct
        kvm_vcpu_events``, kept opaque: save it and give it back)."""
        return bytes(self._call("KVM_GET_VCPU_EVENTS", _kvm.get_vcpu_events))

    def set_vcpu_events(self, events: bytes) -> None:
        self._call("KVM_SET_VCPU_EVENTS", _kvm.set_vcpu_events, bytes(events))

    def interrupt(self, vector: int) -> None:
        """``KVM_INTERRUPT``: deliver external interrupt ``vector`` at the next entry
        (only without the in-kernel irqchip; the guest must be able to take it:
        :attr:`ready_for_interrupt_injection`, or ask with
        :attr:`request_interrupt_window` and do it from ``irq_window``)."""
        self._call("KVM_INTERRUPT", _kvm.interrupt, vector)

    def nmi(self) -> None:
        """``KVM_NMI``: queue a non-maskable interrupt."""
        self._call("KVM_NMI", lambda fd: _kvm.ioctl_int(fd, IOCTLS["KVM_NMI"]))

    @property
    def request_interrupt_window(self) -> bool:
        return bool(self._runner.request_interrupt_window)

    @request_interrupt_window.setter
    def request_interrupt_window(self, value: bool) -> None:
        self._runner.request_interrupt_window = value

    @property
    def ready_for_interrupt_injection(self) -> bool:
        """As of the last exit: the guest can take an interrupt at the next entry."""
        return bool(self._runner.ready_for_interrupt_injection)

    def set_guest_debug(self, enable: bool = True, single_step: bool = False,
                        hw_breakpoints: Iterable[int] = (), sw_breakpoints: bool = False
                        ) -> None:
        """``KVM_SET_GUEST_DEBUG``: single-stepping, up to four hardware execution
        breakpoints, and ``int3`` as a breakpoint for the host (``sw_breakpoints``);
        each stop is a ``debug(vcpu, info)`` callback (``info`` has ``exception``,
        ``pc``, ``dr6``, ``dr7``)."""
        bps = list(hw_breakpoints)
        if len(bps) > 4:
            raise ValueError("x86 has four hardware breakpoints")
        control = 0
        dregs = [0] * 8
        if enable:
            control = _kvm.GUESTDBG_ENABLE
            if single_step:
                control |= _kvm.GUESTDBG_SINGLESTEP
            if sw_breakpoints:
                control |= _kvm.GUESTDBG_USE_SW_BP
            if bps:
                control |= _kvm.GUESTDBG_USE_HW_BP
                for i, addr in enumerate(bps):
                    dregs[i] = addr
                    dregs[7] |= 1 << (2 * i)        # local enable, execute, 1 byte
        self._call("KVM_SET_GUEST_DEBUG", _kvm.set_guest_debug, control, dregs)

    # -- running -----------------------------------------------------------------------

    @property
    def exits(self) -> int:
        """``KVM_RUN`` returns so far (each one an exit to user space)."""
        return int(self._runner.exits)

    def run(self, callbacks: object = None) -> VcpuExit:
        """Run the guest until a halt, shutdown or debug exit the callbacks do not
        absorb, or :meth:`stop`; see the module's description."""
        with self._lock:
            reason = self._runner.run(callbacks, self)
        try:
            return VcpuExit(reason)
        except ValueError:
            pass
        info = self._runner.exit_info()
        try:
            regs: Regs | None = self.get_regs()
        except KvmError:
            regs = None
        raise KvmExitError(info, regs)

    def start(self, callbacks: object = None) -> VcpuThread:
        """Run on a new thread (one per vCPU); :meth:`VcpuThread.result` gives the
        exit or raises what ended the run (a callback's exception included)."""
        t = VcpuThread(self, callbacks)
        t.start()
        return t

    def stop(self) -> None:
        """End the current (or next) :meth:`run` from any thread."""
        self._runner.stop()

    def clear_stop(self) -> None:
        """Forget a :meth:`stop` that no run consumed (call only while not running)."""
        self._runner.clear_stop()

    def last_exit(self) -> dict[str, Any]:
        """The decoded fields of the last exit (reason, name, and the exit's own)."""
        return dict(self._runner.exit_info())

    # -- saved records (vmforge.accel.kvm.records; the vCPU stopped) ---------------------

    def save_state(self) -> dict[str, Any]:
        from vmforge.accel.kvm.records import save_vcpu
        return save_vcpu(self)

    def check_state(self, record: Any) -> None:
        from vmforge.accel.kvm.records import check_vcpu
        check_vcpu(self, record)

    def load_state(self, record: dict[str, Any]) -> None:
        from vmforge.accel.kvm.records import load_vcpu
        load_vcpu(self, record)


class VcpuThread(threading.Thread):
    """A vCPU's :meth:`Vcpu.run` on its own thread."""

    def __init__(self, vcpu: Vcpu, callbacks: object) -> None:
        super().__init__(name=f"vcpu{vcpu.index}", daemon=True)
        self.vcpu = vcpu
        self.callbacks = callbacks
        self._exit: VcpuExit | None = None
        self._error: BaseException | None = None

    def run(self) -> None:
        try:
            self._exit = self.vcpu.run(self.callbacks)
        except BaseException as exc:  # handed to whoever asks for the result
            self._error = exc

    def result(self, timeout: float | None = None) -> VcpuExit:
        """Wait for the run to end; its exit, or the exception that ended it."""
        self.join(timeout)
        if self.is_alive():
            raise TimeoutError(f"vCPU {self.vcpu.index} still running after {timeout} s")
        if self._error is not None:
            raise self._error
        assert self._exit is not None
        return self._exit
