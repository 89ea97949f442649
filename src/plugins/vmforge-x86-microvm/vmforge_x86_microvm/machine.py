"""The ``microvm`` machine: QEMU 7.2's x86 ``microvm`` board on KVM (``-accel kvm``).

QEMU's layout with ``acpi=off``: RAM from 0 (up to 3 GiB, the rest at 4 GiB);
an 8250 UART at port 0x3f8 on IRQ 4 (``-serial``); eight virtio-mmio
transports at 0xfeb00000 + 512 i on IRQ 5 + i, the ones in use announced on
the kernel command line (``virtio_mmio.device=512@0x...:IRQ``, as QEMU does);
the in-kernel irqchip (PIC, I/O APIC at 0xfec00000, a LAPIC per vCPU) and PIT;
an Intel MP table at 0x9fc00 announcing the vCPUs and the I/O APIC;
``-device isa-debug-exit``.  No firmware runs: vmforge enters the kernel itself,
as Firecracker does.  ``-kernel`` takes:

- an ELF with a Xen PVH entry note (Linux's ``vmlinux``, small PVH guests):
  32-bit protected mode, paging off, ``ebx`` = the ``hvm_start_info``, as QEMU's
  ``-kernel`` runs it (through its firmware);
- a Linux bzImage: the 64-bit boot protocol (long mode, the first GiB mapped
  1:1, ``rsi`` = the zero page with the e820 map, command line, initrd);
- any other file: a flat binary loaded at 1 MiB and entered there in 64-bit
  long mode at CPL0 (the first GiB mapped 1:1, ``rsi`` = an ``hvm_start_info``
  as for PVH, ``rsp`` just below 0x9000).
"""

from __future__ import annotations

import os

from vmforge.accel.kvm import Vcpu
from vmforge.accel.kvm.machine import KvmMachine
from vmforge.accel.kvm.x86 import (
    GDT_ENTRIES,
    enter_long_mode,
    enter_protected_mode,
    identity_page_tables,
)
from vmforge.config import MachineProp
from vmforge.devspec import cmdline_devices
from vmforge.loader import is_elf, load_raw
from vmforge.loader.linux_x86 import is_bzimage, load_bzimage
from vmforge.loader.pvh import NoPvhEntry, load_pvh, write_start_info
from vmforge.machine import MachineError
from vmforge.virtio import VirtioDevice
from vmforge.virtio.mmio import QUEUE_NOTIFY, VirtioMmioTransport
from vmforge_x86_microvm import layout as L
from vmforge_x86_microvm.mptable import build_mptable

__all__ = ["Microvm"]

#: the GDT the Linux 64-bit boot protocol asks for: flat code at 0x10, data at 0x18
_LINUX_GDT = (0, 0, GDT_ENTRIES[1], GDT_ENTRIES[2])
_APIC_LVT0 = 0x350          # offset of LVT LINT0 in the KVM_GET_LAPIC page
_LVT_MASKED = 1 << 16



class Microvm(KvmMachine):
    """QEMU's x86 ``microvm`` on KVM."""

    name = "microvm"
    description = "x86 microvm (QEMU 7.2's 'microvm', acpi=off) on KVM"
    default_memory = 128 << 20
    max_cpus = 64
    tss_addr = L.KVM_TSS                    # (reserved in the memory map: layout.e820_map)
    identity_map_addr = L.KVM_IDENTITY_MAP
    #: QEMU 7.2's microvm options, as far as a machine without firmware or ACPI
    #: honours them (the refused values name what vmforge has)
    properties = {
        "acpi": MachineProp(str, "off", "ACPI tables: vmforge's microvm has none (QEMU's "
                            "acpi=off layout)", choices=("off",)),
        "ioapic2": MachineProp(str, "off", "a second I/O APIC (only with ACPI in QEMU)",
                               choices=("off", "auto")),
        "pit": MachineProp(str, "auto", "the i8254 timer (KVM's, in the kernel)",
                           choices=("on", "off", "auto")),
        "pic": MachineProp(str, "auto", "the i8259 interrupt controllers (KVM's, always "
                           "there with its irqchip)", choices=("on", "auto")),
        "rtc": MachineProp(str, "auto", "the mc146818 RTC (QEMU: none under KVM unless on)",
                           choices=("off", "auto")),
        "isa-serial": MachineProp(bool, True, "the 8250 UART at 0x3f8"),
        "auto-kernel-cmdline": MachineProp(bool, True, "announce the virtio-mmio transports "
                                           "in use on the kernel command line"),
        "x-option-roms": MachineProp(bool, True, "accepted: no firmware, no option ROMs"),
    }

    def build(self) -> None:
        for base, size in L.ram_ranges(self.memory_size):
            self.add_ram(base, size, "ram" if base == 0 else "ram-above-4g")
        self.uart = None
        if self.props["isa-serial"]:
            self.uart = self.create_device("ns16550a")
            self.uart.set_chardev(self.serial_chardev(0))
            self.add_device(self.uart)
            self.io.add_mmio(L.UART_PORT, self.uart, 8, "serial")
            self.uart.base = L.UART_PORT
        self.virtio = self._plug_devices()
        for i, slot in enumerate(self.virtio):         # 512-byte windows, as QEMU's
            self.add_device(slot)
            slot.base = L.VIRTIO_MMIO_BASE + i * L.VIRTIO_MMIO_SIZE
            self.space.add_mmio(slot.base, slot, L.VIRTIO_MMIO_SIZE, "virtio-mmio")
        self.create_vm(pit=self.props["pit"] != "off")
        if self.uart is not None:
            self.irq_connect(self.uart.irq, L.UART_IRQ)
        for i, slot in enumerate(self.virtio):
            self.irq_connect(slot.irq, L.VIRTIO_IRQ_BASE + i, irqfd=True)
            if slot.backend is not None:
                self._notify_through_eventfd(slot)
        self.create_vcpus()
        self._load_images()

    # -- devices ---------------------------------------------------------------------------

    def _plug_devices(self) -> list[VirtioMmioTransport]:
        """-device/-drive: virtio devices fill the transports from the top down, as
        QEMU does (the first device in the last one); port I/O devices (those with
        an ``iobase``, as ``isa-debug-exit``) are placed in the port space."""
        cfg = self.config
        self.open_netdevs()
        devices = cmdline_devices(cfg.drives, cfg.devices, cfg.chardevs, self.create_device,
                                  self._own_chardevs.append)
        plugged: dict[int, VirtioDevice] = {}
        try:
            for dev in devices:
                if hasattr(dev, "iobase"):
                    self.add_device(dev)
                    continue
                if not isinstance(dev, VirtioDevice):
                    raise MachineError(f"microvm: -device {dev.name}: only virtio-mmio and "
                                       "ISA port devices can be plugged (no PCI bus)")
                if len(plugged) == L.VIRTIO_COUNT:
                    raise MachineError(f"microvm: more than {L.VIRTIO_COUNT} virtio devices")
                plugged[L.VIRTIO_COUNT - 1 - len(plugged)] = dev
        except Exception:
            for dev in devices:
                if not dev.realized:
                    dev.unrealize()
            raise
        # QEMU 7.2's default for virtio-mmio is the legacy interface (Version 1):
        # microvm keeps it unless -global virtio-mmio.force-legacy=off
        given = self.config.globals.get("virtio-mmio", {})
        legacy = {} if {"force_legacy", "legacy"} & set(given) else {"force_legacy": True}
        out = []
        for i in range(L.VIRTIO_COUNT):
            slot = self.create_device("virtio-mmio", backend=plugged.get(i), **legacy)
            assert isinstance(slot, VirtioMmioTransport)
            out.append(slot)
        return out

    def _notify_through_eventfd(self, slot: VirtioMmioTransport) -> None:
        addr = L.VIRTIO_MMIO_BASE + self.virtio.index(slot) * L.VIRTIO_MMIO_SIZE + QUEUE_NOTIFY
        for q in range(len(slot.backend.queue_max_sizes())):
            self.notify_by_eventfd(addr, 4, q,
                                   lambda q=q, slot=slot: slot.write(QUEUE_NOTIFY, 4, q))

    def virtio_cmdline(self) -> str:
        """QEMU's announcements of the transports in use (``microvm_fix_kernel_cmdline``),
        in its order: the system bus lists the transports last made first."""
        if not self.props["auto-kernel-cmdline"]:
            return ""
        return "".join(f" virtio_mmio.device=512@{L.VIRTIO_MMIO_BASE + i * 512:#x}:"
                       f"{L.VIRTIO_IRQ_BASE + i}"
                       for i, slot in reversed(list(enumerate(self.virtio)))
                       if slot.backend is not None)

    # -- images ------------------------------------------------------------------------------

    def reload_images(self) -> None:
        self._load_images()

    def _load_images(self) -> None:
        cfg = self.config
        if cfg.bios not in (None, "default", "none"):
            raise MachineError("microvm: -bios is not supported: vmforge enters the kernel "
                               "itself (PVH, the Linux boot protocol or a flat binary)")
        if cfg.kernel is None:
            raise MachineError("microvm: give a guest with -kernel (a PVH ELF, a bzImage or "
                               "a flat binary)")
        if not os.path.exists(cfg.kernel):
            raise MachineError(f"microvm: {cfg.kernel}: no such file")
        if cfg.initrd is not None and not os.path.exists(cfg.initrd):
            raise MachineError(f"microvm: {cfg.initrd}: no such file")
        mem = self.space.memory
        cmdline = cfg.append + self.virtio_cmdline()
        e820 = L.e820_map(self.memory_size)
        self._write_mptable()
        self._boot: tuple[str, int, int] = ("", 0, 0)
        if is_elf(cfg.kernel):
            try:            # (the ELF is read once: a vmlinux is tens of MB)
                boot = load_pvh(mem, cfg.kernel, e820=e820, cmdline=cmdline,
                                initrd=cfg.initrd, start_info_addr=L.PVH_START_INFO,
                                cmdline_addr=L.CMDLINE)
            except NoPvhEntry:
                raise MachineError(f"microvm: {cfg.kernel}: an ELF without a PVH entry note "
                                   "(XEN_ELFNOTE_PHYS32_ENTRY); vmforge boots ELF kernels "
                                   "through PVH, as QEMU's -kernel") from None
            self._boot = ("pvh", boot.entry, boot.start_info)
        elif is_bzimage(cfg.kernel):
            lin = load_bzimage(mem, cfg.kernel, e820=e820, cmdline=cmdline, initrd=cfg.initrd,
                               boot_params_addr=L.BOOT_PARAMS, cmdline_addr=L.CMDLINE)
            self._boot = ("linux64", lin.entry64, lin.boot_params)
        else:
            end = L.KERNEL_LOAD + load_raw(mem, cfg.kernel, L.KERNEL_LOAD)
            info = write_start_info(mem, e820=e820, cmdline=cmdline, initrd=cfg.initrd,
                                    start_info_addr=L.PVH_START_INFO, cmdline_addr=L.CMDLINE,
                                    kernel_start=L.KERNEL_LOAD, kernel_end=end,
                                    name=cfg.kernel)
            self._boot = ("long", L.KERNEL_LOAD, info)
        if self._boot[0] != "pvh":   # long mode: a GDT (boot.rst's for Linux) and 1:1 tables
            gdt = _LINUX_GDT if self._boot[0] == "linux64" else GDT_ENTRIES
            mem.write(L.GDT, b"".join(e.to_bytes(8, "little") for e in gdt))
            self._cr3 = identity_page_tables(mem, L.PAGE_TABLES, user=False)

    def _write_mptable(self) -> None:
        self.space.memory.write(L.MPTABLE, build_mptable(
            self.config.smp, base=L.MPTABLE, ioapic_addr=L.IOAPIC_ADDR, apic_addr=L.LAPIC_ADDR))

    # -- vCPUs ------------------------------------------------------------------------------

    def setup_vcpus(self) -> None:
        mode, entry, arg = self._boot
        bsp = self.vcpus[0]
        _mask_lint0(bsp)
        if mode == "pvh":
            enter_protected_mode(bsp, entry, ebx=arg)
        else:
            regs = bsp.get_regs()
            regs.rsi = arg
            regs.rbp = L.BOOT_STACK
            enter_long_mode(bsp, self._cr3, rip=entry, rsp=L.BOOT_STACK, gdt=L.GDT,
                            regs=regs)
            if mode == "linux64":
                s = bsp.get_sregs()
                s.cs.selector = 0x10
                for seg in (s.ds, s.es, s.fs, s.gs, s.ss):
                    seg.selector = 0x18
                s.gdt.limit = 8 * len(_LINUX_GDT) - 1
                bsp.set_sregs(s)



def _mask_lint0(vcpu: Vcpu) -> None:
    """KVM resets the BSP's LINT0 to ExtINT, unmasked; a guest QEMU starts finds it
    masked like every other LVT entry (its firmware leaves it so): so here too."""
    regs = bytearray(vcpu.get_lapic())
    regs[_APIC_LVT0:_APIC_LVT0 + 4] = _LVT_MASKED.to_bytes(4, "little")
    vcpu.set_lapic(bytes(regs))
