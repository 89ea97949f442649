"""The ``riscv-virt`` machine: QEMU 7.2's riscv64 ``virt`` board on vmforge's CPU.

RAM at 0x80000000; CLINT, PLIC, ns16550a UART (IRQ 10), SiFive test finisher,
goldfish RTC (IRQ 11), eight virtio-mmio slots (IRQs 1..8); a reset ROM at
0x1000 that enters the firmware with ``a0`` = hart id, ``a1`` = the device
tree and ``a2`` = OpenSBI's ``fw_dynamic_info``.  The device tree is generated
from the devices actually placed.

- ``-bios default``: Debian's OpenSBI (package ``opensbi``); ``-bios none``:
  the kernel runs directly in M-mode from the DRAM base; ``-bios FILE``.
- ``-kernel``: an ELF or a raw image (a Linux ``Image``, U-Boot); it goes at
  0x80200000 behind firmware, as on QEMU.  ``-initrd``, ``-append``, ``-dtb``.
- ``-smp N`` harts with their own CLINT and PLIC contexts.
"""

from __future__ import annotations

import os

from vmforge.accel.cluster import HartMachine
from vmforge.device import Device
from vmforge.devspec import PCI_ALIASES, cmdline_devices
from vmforge.loader import EM_RISCV, is_elf, load_elf, load_raw, read_linux_image_header
from vmforge.machine import MachineError
from vmforge.pci import PciDevice, hotplug
from vmforge.virtio import VirtioDevice
from vmforge.virtio.mmio import VirtioMmioTransport
from vmforge_riscv_devices.clint import HartClint
from vmforge_riscv_devices.goldfish_rtc import GoldfishRtc
from vmforge_riscv_devices.plic import Plic
from vmforge_riscv_devices.sifive_test import SifiveTest
from vmforge_riscv_virt import board
from vmforge_riscv_virt.fdt_virt import VirtFdtConfig, build_virt_fdt, standard_placements
from vmforge_riscv_virt.rom import reset_rom

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["RiscvVirt", "find_default_bios"]

#: where Debian's ``opensbi`` package installs the generic platform firmware
OPENSBI_DIRS = ("/usr/lib/riscv64-linux-gnu/opensbi/generic",)
#: QEMU's default for virt is fw_dynamic; fw_jump works too (the ROM passes both)
OPENSBI_IMAGES = ("fw_dynamic.bin", "fw_jump.bin")


def find_default_bios() -> str:
    """Debian's OpenSBI for the generic platform, or a clear error."""
    for d in OPENSBI_DIRS:
        for name in OPENSBI_IMAGES:
            path = os.path.join(d, name)
            if os.path.exists(path):
                return path
    raise MachineError("riscv-virt: -bios default needs OpenSBI: install the Debian package "
                       "'opensbi', or pass -bios FILE / -bios none")


class RiscvVirt(HartMachine):
    """The riscv64 ``virt`` board."""

    name = "riscv-virt"
    description = "RISC-V virt board, compatible with QEMU 7.2's riscv64 'virt'"
    default_memory = 128 << 20
    max_cpus = 8
    reset_pc = board.MEMMAP["mrom"].base
    threads_by_default = True       # -smp > 1: a host thread per hart (QEMU's MTTCG)

    def build(self) -> None:
        cfg = self.config
        mm = board.MEMMAP
        self.add_ram(mm["dram"].base, self.memory_size)
        cluster = self.make_cluster()

        self.plic = Plic(num_harts=cfg.smp)
        self.clint = HartClint(cluster)
        self.test = SifiveTest(self)
        self.rtc = GoldfishRtc()
        self.uart = self.create_device("ns16550a")
        self.uart.set_chardev(self.serial_chardev(0))
        self.pcie = board.pcie_host(self.memory_size)
        self.virtio = self._plug_devices()
        self.placed = standard_placements(self.plic, self.clint, self.test, self.rtc,
                                          self.uart, self.virtio, self.pcie)
        for p in self.placed:
            self.add_device(p.device, p.base)
            if p.device is self.pcie:       # INTA..INTD to four PLIC sources
                for line, irq in zip(self.pcie.irqs, p.irqs, strict=True):
                    line.connect(self.plic.set_irq, irq)
                continue
            for irq in p.irqs:
                p.device.irq.connect(self.plic.set_irq, irq)
        for h, hart in enumerate(cluster.harts):
            self.plic.connect_hart(h, hart)
            self.clint.connect_hart(h, hart)
        mrom = board.MEMMAP["mrom"]
        self.add_ram(mrom.base, mrom.size, "mrom", readonly=True)
        self._load_images()

    def _plug_devices(self) -> list[VirtioMmioTransport]:
        """The devices of -device/-drive: ``*-pci`` ones on the PCIe bus (slots from
        1 up, or ``addr=``), the others in the eight virtio-mmio slots, filled from
        the top down as QEMU does (the first device in the last slot, which Linux
        probes first: the first disk is /dev/vda).  Returns the slots."""
        cfg = self.config
        self.open_netdevs()
        wanted_bus: dict[int, str | None] = {}

        def create(driver: str, **props: Any) -> Device:   # id= and bus= are qdev's
            ident, bus = props.pop("id", None), props.pop("bus", None)
            dev = self.create_device(driver, **props)
            try:
                hotplug.register(self, dev, ident)
            except hotplug.PlugError as exc:
                dev.unrealize()
                raise MachineError(f"riscv-virt: -device {driver}: {exc}") from None
            wanted_bus[id(dev)] = bus
            return dev

        devices = cmdline_devices(cfg.drives, cfg.devices, cfg.chardevs, create,
                                  self._own_chardevs.append, aliases=PCI_ALIASES,
                                  spare_drives=True)    # for device_add on a root port
        try:
            on_mmio = [d for d in devices if not isinstance(d, PciDevice)]
            if len(on_mmio) > board.VIRTIO_COUNT:
                raise MachineError(f"riscv-virt: {len(on_mmio)} virtio-mmio devices but only "
                                   f"{board.VIRTIO_COUNT} slots (use the -pci variants)")
            plugged: dict[int, VirtioDevice] = {}
            for dev in devices:
                if isinstance(dev, PciDevice):
                    try:
                        hotplug.plug_pci(self.pcie.bus, dev, wanted_bus.get(id(dev)),
                                         hotplugged=False)
                    except hotplug.PlugError as exc:
                        raise MachineError(f"riscv-virt: -device {dev.name}: {exc}") from None
                    continue
                if not isinstance(dev, VirtioDevice):
                    raise MachineError(f"riscv-virt: -device {dev.name}: only virtio and PCI "
                                       "devices can be plugged")
                plugged[board.VIRTIO_COUNT - 1 - len(plugged)] = dev
            slots = [self._transport(plugged.get(i)) for i in range(board.VIRTIO_COUNT)]
        except MachineError:
            for dev in devices:     # opened images and back-ends are let go
                dev.unrealize()
            raise
        return slots

    def _transport(self, dev: VirtioDevice | None) -> VirtioMmioTransport:
        slot = self.create_device("virtio-mmio", backend=dev)
        assert isinstance(slot, VirtioMmioTransport)
        return slot

    def reload_images(self) -> None:
        self._load_images()

    # -- images ------------------------------------------------------------------------

    def _load(self, path: str, addr: int) -> tuple[int, int]:
        """Load an ELF (at its own addresses) or a raw file at ``addr``: (entry, end)."""
        if not os.path.exists(path):
            raise MachineError(f"riscv-virt: {path}: no such file")
        if is_elf(path):
            image = load_elf(self.space.memory, path, machine=EM_RISCV,
                             want_symbols=self.cpu_trace is not None)
            if self.cpu_trace is not None:
                self.cpu_trace.add_symbols(path, image.symbol_table)
            return image.entry, image.high
        size = load_raw(self.space.memory, path, addr)
        header = read_linux_image_header(path)
        if header is not None and header.image_size > size:
            size = header.image_size  # the kernel's BSS follows the file
        return addr, addr + size

    def _load_images(self) -> None:
        cfg = self.config
        mem = self.space.memory
        dram = board.MEMMAP["dram"].base
        bios = cfg.bios or "default"
        kernel_entry = 0
        if bios == "none":
            if cfg.kernel is None:
                raise MachineError("riscv-virt: -bios none needs -kernel")
            start, kernel_end = self._load(cfg.kernel, dram)
            kernel_entry = start
        else:
            fw = find_default_bios() if bios == "default" else bios
            start, fw_end = self._load(fw, dram)
            kernel_end = fw_end
            if cfg.kernel is not None:
                # QEMU: the kernel at the next 2 MiB boundary after the firmware
                addr = max(board.KERNEL_BOOT_ADDRESS, (fw_end + (2 << 20) - 1) & ~((2 << 20) - 1))
                kernel_entry, kernel_end = self._load(cfg.kernel, addr)
        initrd = None
        if cfg.initrd is not None:
            if not os.path.exists(cfg.initrd):
                raise MachineError(f"riscv-virt: {cfg.initrd}: no such file")
            base = board.initrd_start(kernel_entry or start, self.memory_size)
            base = max(base, (kernel_end + 0xFFF) & ~0xFFF)
            size = load_raw(mem, cfg.initrd, base)
            initrd = (base, base + size)
        if cfg.dtb is not None:
            with open(cfg.dtb, "rb") as f:
                blob = f.read()
        else:
            fdt_cfg = VirtFdtConfig(num_harts=cfg.smp, mem_base=dram, mem_size=self.memory_size,
                                    bootargs=cfg.append, initrd=initrd)
            blob = build_virt_fdt(fdt_cfg, self.placed).to_dtb()
        self.fdt_addr = board.fdt_load_addr(dram, self.memory_size, len(blob))
        if initrd is not None and self.fdt_addr < initrd[1]:
            raise MachineError("riscv-virt: the initrd and the device tree do not fit in RAM; "
                               "give more memory with -m")
        mem.load(self.fdt_addr, blob)
        rom = reset_rom(start, self.fdt_addr, kernel_entry)
        mem.load(board.MEMMAP["mrom"].base, rom)
        self.kernel_entry = kernel_entry
