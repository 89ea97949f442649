"""The ``virt`` board's device tree, built from the devices actually placed.

:func:`build_virt_fdt` writes what QEMU 7.2 writes for the parts vmforge
models: the root (``riscv-virtio``), ``/cpus`` with one ``cpu@N`` and its
``interrupt-controller`` per hart plus ``cpu-map``, ``/memory``, ``/chosen``
(``stdout-path``, ``bootargs``, initrd, ``rng-seed``), and ``/soc`` with a node
for each placed device, asked of the device itself (``fdt_node``).

Intended differences from QEMU 7.2's tree (a test checks the rest):

- ``riscv,isa`` names what vmforge's hart implements,
  ``rv64imafdc_zicsr_zifencei_zihintpause_zba_zbb_zbc_zbs_sstc``: QEMU 7.2's
  default CPU string in its order, without H;
- ``riscv,ndev`` is 95, the number of usable sources (QEMU 7.2 writes 96, the
  count including source 0; later QEMU writes 95);
- no ``/pmu``, ``/fw-cfg``, ``/flash``, ``/platform-bus`` or ``pci`` nodes
  (not modelled); no ``rng-seed`` unless one is given.
"""

from __future__ import annotations

from collections.abc import Sequence

from vmforge.fdt import DeviceTree, FdtNode, FdtPlacement
from vmforge.record import FrozenRecord, Record
from vmforge_riscv_devices.clint import TIMEBASE_FREQ
from vmforge_riscv_virt import board

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Placed", "VirtFdtConfig", "build_virt_fdt", "standard_placements", "uart_fdt_node"]

DEFAULT_ISA = "rv64imafdc_zicsr_zifencei_zihintpause_zba_zbb_zbc_zbs_sstc"


class Placed(FrozenRecord):
    """A device the board mapped: where, and which PLIC sources it raises."""

    __slots__ = __match_args__ = ("device", "base", "size", "irqs")
    device: Any
    base: int
    size: int
    irqs: tuple[int, ...]

    def __init__(self, device: Any, base: int, size: int, irqs: tuple[int, ...] = ()) -> None:
        object.__setattr__(self, "device", device)
        object.__setattr__(self, "base", base)
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "irqs", irqs)


class VirtFdtConfig(Record):
    """What the device tree says beyond the devices."""

    __slots__ = __match_args__ = ("num_harts", "mem_base", "mem_size", "isa", "mmu_type",
                                  "bootargs", "initrd", "stdout_path", "rng_seed",
                                  "extra_reserved")
    num_harts: int
    mem_base: int
    mem_size: int
    isa: str
    mmu_type: str
    bootargs: str | None
    initrd: tuple[int, int] | None          # (start, end)
    stdout_path: str | None                 # default: the first ns16550a placed
    rng_seed: bytes | None
    extra_reserved: list[tuple[int, int]]

    def __init__(self, num_harts: int = 1, mem_base: int = board.MEMMAP["dram"].base,
                 mem_size: int = 128 << 20, isa: str = DEFAULT_ISA,
                 mmu_type: str = "riscv,sv48", bootargs: str | None = None,
                 initrd: tuple[int, int] | None = None, stdout_path: str | None = None,
                 rng_seed: bytes | None = None,
                 extra_reserved: list[tuple[int, int]] | None = None) -> None:
        self.num_harts = num_harts
        self.mem_base = mem_base
        self.mem_size = mem_size
        self.isa = isa
        self.mmu_type = mmu_type
        self.bootargs = bootargs
        self.initrd = initrd
        self.stdout_path = stdout_path
        self.rng_seed = rng_seed
        self.extra_reserved = [] if extra_reserved is None else extra_reserved


def _is_interrupt_controller(device: Any) -> bool:
    return callable(getattr(device, "set_irq", None)) and callable(getattr(device, "line", None))


def uart_fdt_node(tree: DeviceTree, parent: FdtNode, place: FdtPlacement,
                  device: Any = None) -> FdtNode:
    """``serial@ADDR`` for an ns16550a (its plugin does not write its own node yet)."""
    node = tree.device_node(parent, "serial", place, "ns16550a")
    node.set("clock-frequency", board.UART_CLOCK_FREQ)
    regshift = int(getattr(device, "regshift", 0) or 0)
    if regshift:
        node.set("reg-shift", regshift)
    return node


def _add_cpus(tree: DeviceTree, cfg: VirtFdtConfig) -> None:
    cpus = tree.root.add("cpus")
    cpus.set("#address-cells", 1)
    cpus.set("#size-cells", 0)
    cpus.set("timebase-frequency", TIMEBASE_FREQ)
    cpu_nodes = []
    for h in range(cfg.num_harts):
        cpu = cpus.add(f"cpu@{h}")
        tree.label(f"cpu{h}", cpu)
        tree.phandle(cpu)
        cpu.set("device_type", "cpu")
        cpu.set("reg", h)
        cpu.set("status", "okay")
        cpu.set("compatible", "riscv")
        cpu.set("riscv,isa", cfg.isa)
        cpu.set("mmu-type", cfg.mmu_type)
        intc = cpu.add("interrupt-controller")
        tree.label(f"cpu{h}-intc", intc)
        intc.set("#interrupt-cells", 1)
        intc.set("interrupt-controller", True)
        intc.set("compatible", "riscv,cpu-intc")
        tree.phandle(intc)
        cpu_nodes.append(cpu)
    cluster = cpus.add("cpu-map").add("cluster0")
    for h, cpu in enumerate(cpu_nodes):
        cluster.add(f"core{h}").set("cpu", tree.phandle(cpu))


def _add_chosen(tree: DeviceTree, cfg: VirtFdtConfig, stdout: str | None) -> None:
    chosen = tree.root.add("chosen")
    if stdout:
        chosen.set("stdout-path", stdout)
    if cfg.bootargs is not None:
        chosen.set("bootargs", cfg.bootargs)
    if cfg.rng_seed is not None:
        chosen.set("rng-seed", bytes(cfg.rng_seed))
    if cfg.initrd is not None:
        start, end = cfg.initrd
        for name, value in (("linux,initrd-start", start), ("linux,initrd-end", end)):
            if value < 1 << 32:
                chosen.set(name, value)  # one cell, as QEMU 7.2 writes it
            else:
                chosen.set_u64(name, value)


def build_virt_fdt(cfg: VirtFdtConfig, placed: Sequence[Placed]) -> DeviceTree:
    """The device tree of a ``virt`` board with ``placed`` devices on ``/soc``.

    Interrupt controllers (devices with ``set_irq`` and ``line``) are written
    first so that the others' ``interrupt-parent`` can name them; a device
    without ``fdt_node`` is written by a known fallback (the ns16550a) or left out.
    """
    tree = DeviceTree()
    root = tree.root
    root.set("#address-cells", 2)
    root.set("#size-cells", 2)
    root.set("compatible", "riscv-virtio")
    root.set("model", "riscv-virtio,qemu")
    tree.reserved.extend(cfg.extra_reserved)

    _add_cpus(tree, cfg)
    memory = root.add(f"memory@{cfg.mem_base:x}")
    memory.set("device_type", "memory")
    tree.reg(memory, (cfg.mem_base, cfg.mem_size))

    soc = root.add("soc")
    soc.set("#address-cells", 2)
    soc.set("#size-cells", 2)
    soc.set("compatible", "simple-bus")
    soc.set("ranges", True)

    controllers = [p for p in placed if _is_interrupt_controller(p.device)]
    others = [p for p in placed if not _is_interrupt_controller(p.device)]
    irq_parent: int | None = None
    stdout = cfg.stdout_path
    for p in controllers + others:
        place = FdtPlacement(p.base, p.size, p.irqs, irq_parent if p.irqs else None)
        if hasattr(p.device, "fdt_node"):
            node = p.device.fdt_node(tree, soc, place)
        elif getattr(p.device, "name", "") == "ns16550a":
            node = uart_fdt_node(tree, soc, place, p.device)
        else:
            continue
        if p in controllers and irq_parent is None:
            irq_parent = tree.phandle(node)
        if stdout is None and node.name.startswith("serial@"):
            stdout = node.path
    _add_chosen(tree, cfg, stdout)
    return tree


def standard_placements(plic: Any, clint: Any, test: Any, rtc: Any, uart: Any,
                        virtio: Sequence[Any] = (), pcie: Any = None) -> list[Placed]:
    """The QEMU 7.2 ``virt`` map for the given devices (``virtio``: the slots
    from the lowest address up)."""
    mm = board.MEMMAP
    out = [
        Placed(plic, *mm["plic"]),
        Placed(clint, *mm["clint"]),
        Placed(test, *mm["test"]),
        Placed(rtc, *mm["rtc"], irqs=(board.RTC_IRQ,)),
        Placed(uart, *mm["uart0"], irqs=(board.UART0_IRQ,)),
    ]
    # highest address first, as in QEMU's blob: Linux probes the slots in this
    # order, so the first device (QEMU fills the slots top-down) is /dev/vda
    for i, slot in reversed(list(enumerate(virtio))):
        out.append(Placed(slot, mm["virtio"].base + i * mm["virtio"].size, mm["virtio"].size,
                          irqs=(board.VIRTIO_IRQ + i,)))
    if pcie is not None:        # the ECAM host; INTA..INTD on four PLIC sources
        out.append(Placed(pcie, *mm["pcie_ecam"],
                          irqs=tuple(board.PCIE_IRQ + i for i in range(4))))
    return out
