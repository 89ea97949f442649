"""Shared pieces of the PCI tests (a plain module next to them, put on sys.path by
conftest.py): QEMU 7.2 riscv64 virt's PCIe map, a rig (CPU address space, RAM,
host bridge), recording MMIO ops, a small test function, and QEMU as the oracle."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace
from typing import Any

from vmforge.memory import AddressSpace
from vmforge.pci import GpexHost, PciDevice, regs
from vmforge.pci.guest import Ecam, Window
from vmforge.testing.virtio_driver import DeviceLoop

# QEMU 7.2 riscv64 virt's map (hw/riscv/virt.c), with 256 MiB of RAM
RAM, RAM_SIZE = 0x8000_0000, 4 << 20
ECAM, ECAM_SIZE = 0x3000_0000, 0x1000_0000
MMIO, MMIO_SIZE = 0x4000_0000, 0x4000_0000
PIO, PIO_SIZE = 0x0300_0000, 0x1_0000
HIGH, HIGH_SIZE = 0x4_0000_0000, 0x4_0000_0000
PCIE_IRQ = 0x20


class Rig(SimpleNamespace):
    """A host bridge in a CPU address space, its INTx levels and an MSI log."""

    def windows(self) -> dict[str, Window]:
        return {"mem": Window(MMIO, MMIO_SIZE), "io": Window(0x1000, PIO_SIZE - 0x1000),
                "pref64": Window(HIGH, HIGH_SIZE)}


def make_rig(msi: bool = False) -> Rig:
    space = AddressSpace(name="cpu")
    space.add_ram(RAM, RAM_SIZE)
    levels: dict[int, bool] = {}
    messages: list[tuple[int, int]] = []
    host = GpexHost(ecam_size=ECAM_SIZE, mmio=(MMIO, MMIO_SIZE), pio=(PIO, PIO_SIZE),
                    high_mmio=(HIGH, HIGH_SIZE),
                    msi_handler=(lambda a, d: messages.append((a, d))) if msi else None)
    host.map(space, ECAM)
    for i, line in enumerate(host.irqs):
        line.connect(lambda n, level: levels.__setitem__(n, level), PCIE_IRQ + i)
    loop = DeviceLoop()
    machine = SimpleNamespace(space=space, call_soon=loop.call_soon)
    host.realize(machine)
    return Rig(space=space, host=host, bus=host.bus, ecam=Ecam(space, ECAM), levels=levels,
               messages=messages, loop=loop, machine=machine)




class Qemu:
    """``qemu-system-riscv64 -M virt`` (7.2) as the oracle."""

    def __init__(self, binary: str, tmp: Any) -> None:
        self.binary = binary
        self.tmp = tmp

    def config_spaces(self, slots: int, *args: str) -> dict[int, bytes]:
        """The 256-byte configuration space of functions 00.0 .. slots-1.0, read
        through QEMU's ECAM window on a stopped machine."""
        cmds = "".join(f"xp /64wx {ECAM + (s << 15):#x}\n" for s in range(slots)) + "quit\n"
        res = subprocess.run([self.binary, "-M", "virt", "-m", "256M", "-bios", "none",
                              "-display", "none", "-serial", "none", "-nodefaults", "-S",
                              "-monitor", "stdio", *args], input=cmds, capture_output=True,
                             text=True, timeout=60, check=True)
        words: dict[int, list[int]] = {}
        for line in res.stdout.replace("\r", "").splitlines():
            head, sep, rest = line.partition(": ")
            if not sep or not head.strip().startswith("00"):
                continue
            addr = int(head.strip().split()[-1], 16)
            slot = (addr - ECAM) >> 15
            words.setdefault(slot, []).extend(int(w, 16) for w in rest.split())
        return {s: b"".join(w.to_bytes(4, "little") for w in ws) for s, ws in words.items()}

    def dumpdtb(self, *args: str) -> bytes:
        out = self.tmp / "virt.dtb"
        subprocess.run([self.binary, "-M", f"virt,dumpdtb={out}", "-m", "256M", "-display",
                        "none", "-serial", "none", "-monitor", "none", *args], check=True,
                       capture_output=True, timeout=60)
        return out.read_bytes()



class Regs:
    """MMIO ops that answer ``value + offset`` and remember writes."""

    valid_sizes = (1, 8)
    impl_sizes = (1, 8)

    def __init__(self, value: int = 0) -> None:
        self.value = value
        self.writes: list[tuple[int, int, int]] = []

    def read(self, offset: int, size: int) -> int:
        return (self.value + offset) & ((1 << (8 * size)) - 1)

    def write(self, offset: int, size: int, value: int) -> None:
        self.writes.append((offset, size, value))


class Nic(PciDevice):
    """A conventional function with a memory and an I/O BAR, INTA."""

    name = "test-nic"
    vendor_id = 0x8086
    device_id = 0x100E
    revision = 3
    class_code = regs.CLASS_NETWORK_ETHERNET
    interrupt_pin = 1

    def __init__(self, **props: Any) -> None:
        super().__init__(**props)
        self.io = Regs(0x1000)
        self.mem = Regs(0x2000)
        self.register_bar(0, 0x20000, regs.BASE_ADDRESS_SPACE_MEMORY, self.mem)
        self.register_bar(1, 0x40, regs.BASE_ADDRESS_SPACE_IO, self.io)
