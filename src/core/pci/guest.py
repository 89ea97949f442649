"""A guest-side PCI and virtio-pci driver in Python, to test host bridges and
devices without a guest (as :mod:`vmforge.testing.virtio_driver` does for mmio).

Everything goes through the CPU's view, an :class:`~vmforge.memory.AddressSpace`:
configuration cycles through the ECAM window, BAR accesses through the host
bridge's windows, rings in guest RAM::

    ecam = Ecam(space, 0x3000_0000)
    found = enumerate_bus(ecam)                           # [(slot, fn, vendor, device)]
    bars = assign_bars(ecam, 1, 0, mem=Window(0x4000_0000, 0x4000_0000),
                       io=Window(0x0, 0x1_0000), pref64=Window(0x4_0000_0000, 1 << 34))
    drv = VirtioPciDriver(space, memory, ecam, 1, bars, pio_base=0x0300_0000)
    queues = drv.setup()                                  # as Linux's virtio_pci_modern
    queues[0].add_sgs([], [64]); queues[0].kick()

BAR sizing and assignment follow Linux (``__pci_read_base``: decoding off,
write all-ones, read the mask back, restore; then each BAR at the lowest
address of its window aligned to its size; ``pci_enable_device`` sets I/O,
memory and bus-master).  Nothing here is fast; it is written for clarity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vmforge.pci import regs
from vmforge.testing.virtio_driver import GuestAllocator, SplitQueueDriver
from vmforge.virtio import spec

__all__ = ["BarInfo", "Ecam", "VirtioPciDriver", "Window", "assign_bars", "enumerate_bus",
           "size_bars"]

_U32 = 0xFFFFFFFF


class Ecam:
    """Configuration cycles through an ECAM window at ``base``."""

    def __init__(self, space: Any, base: int) -> None:
        self.space = space
        self.base = base

    def address(self, bus: int, slot: int, fn: int, reg: int) -> int:
        return self.base + (bus << 20 | regs.devfn(slot, fn) << 12 | reg)

    def read(self, slot: int, fn: int, reg: int, size: int = 4, bus: int = 0) -> int:
        return int(self.space.read(self.address(bus, slot, fn, reg), size))

    def write(self, slot: int, fn: int, reg: int, size: int, value: int, bus: int = 0) -> None:
        self.space.write(self.address(bus, slot, fn, reg), size, value)

    def capabilities(self, slot: int, fn: int = 0) -> list[tuple[int, int]]:
        """``(offset, id)`` walking the list as Linux's ``pci_find_capability``."""
        if not self.read(slot, fn, regs.STATUS, 2) & regs.STATUS_CAP_LIST:
            return []
        out: list[tuple[int, int]] = []
        pos = self.read(slot, fn, regs.CAPABILITY_LIST, 1)
        ttl = 48
        while pos >= regs.HEADER_SIZE and ttl:
            pos &= ~3
            ent = self.read(slot, fn, pos, 2)
            if ent & 0xFF == 0xFF:
                break
            out.append((pos, ent & 0xFF))
            pos = ent >> 8
            ttl -= 1
        return out


def enumerate_bus(ecam: Ecam, bus: int = 0) -> list[tuple[int, int, int, int]]:
    """``(slot, function, vendor, device)`` of every function that answers."""
    found = []
    for slot in range(32):
        for fn in range(8):
            ident = ecam.read(slot, fn, regs.VENDOR_ID, 4, bus)
            if ident & 0xFFFF in (0xFFFF, 0):
                if fn == 0:
                    break
                continue
            found.append((slot, fn, ident & 0xFFFF, ident >> 16))
            if fn == 0 and not ecam.read(slot, 0, regs.HEADER_TYPE, 1, bus) & 0x80:
                break
    return found


@dataclass
class BarInfo:
    """What sizing found for one BAR, and where it was put."""

    index: int
    size: int
    io: bool
    is_64: bool
    prefetch: bool
    address: int | None = None


def size_bars(ecam: Ecam, slot: int, fn: int = 0) -> list[BarInfo]:
    """Size every BAR the way Linux's ``__pci_read_base`` does."""
    cmd = ecam.read(slot, fn, regs.COMMAND, 2)
    ecam.write(slot, fn, regs.COMMAND, 2, cmd & ~(regs.COMMAND_IO | regs.COMMAND_MEMORY))
    out: list[BarInfo] = []
    i = 0
    while i < regs.NUM_BARS:
        reg = regs.bar_offset(i)
        orig = ecam.read(slot, fn, reg)
        ecam.write(slot, fn, reg, 4, _U32)
        mask = ecam.read(slot, fn, reg)
        ecam.write(slot, fn, reg, 4, orig)
        io = bool(orig & regs.BASE_ADDRESS_SPACE_IO)
        is_64 = not io and bool(orig & regs.BASE_ADDRESS_MEM_TYPE_64)
        if is_64:
            orig_hi = ecam.read(slot, fn, reg + 4)
            ecam.write(slot, fn, reg + 4, 4, _U32)
            mask |= ecam.read(slot, fn, reg + 4) << 32
            ecam.write(slot, fn, reg + 4, 4, orig_hi)
        low_bits = 0x3 if io else 0xF
        bits = mask & ~low_bits & ((1 << 64) - 1 if is_64 else _U32)
        if io and not bits >> 16:
            bits |= 0xFFFF0000  # a 16-bit I/O BAR (Linux: upper bits as ones)
        if bits:
            size = (bits & -bits)
            out.append(BarInfo(i, size, io, is_64, bool(orig & regs.BASE_ADDRESS_MEM_PREFETCH)))
        i += 2 if is_64 else 1
    ecam.write(slot, fn, regs.COMMAND, 2, cmd)
    return out


@dataclass
class Window:
    """A bus address range BARs are given from (a bump allocator)."""

    base: int
    size: int
    next: int = field(default=-1)

    def take(self, size: int) -> int:
        start = self.base if self.next < 0 else self.next
        addr = (start + size - 1) // size * size
        if addr + size > self.base + self.size:
            raise MemoryError(f"window {self.base:#x}+{self.size:#x} is full")
        self.next = addr + size
        return addr


def assign_bars(ecam: Ecam, slot: int, fn: int, mem: Window, io: Window | None = None,
                pref64: Window | None = None, enable: bool = True) -> dict[int, BarInfo]:
    """Size, place and (``enable``) turn on decoding and bus mastering, as Linux does;
    64-bit prefetchable BARs go to ``pref64`` when given.  Returns BARs by index."""
    out: dict[int, BarInfo] = {}
    for bar in size_bars(ecam, slot, fn):
        if bar.io:
            if io is None:
                continue
            window = io
        elif bar.is_64 and bar.prefetch and pref64 is not None:
            window = pref64
        else:
            window = mem
        bar.address = window.take(bar.size)
        reg = regs.bar_offset(bar.index)
        ecam.write(slot, fn, reg, 4, bar.address & _U32 | (1 if bar.io else 0))
        if bar.is_64:
            ecam.write(slot, fn, reg + 4, 4, bar.address >> 32)
        out[bar.index] = bar
    if enable:
        cmd = ecam.read(slot, fn, regs.COMMAND, 2)
        ecam.write(slot, fn, regs.COMMAND, 2, cmd | regs.COMMAND_IO | regs.COMMAND_MEMORY
                   | regs.COMMAND_MASTER)
    return out


# -- virtio-pci ---------------------------------------------------------------------------------
VIRTIO_CAP_COMMON, VIRTIO_CAP_NOTIFY, VIRTIO_CAP_ISR, VIRTIO_CAP_DEVICE = 1, 2, 3, 4
VIRTIO_CAP_PCI_CFG = 5  # a window into the BARs through configuration space
COMMON = {"dfselect": (0x00, 4), "df": (0x04, 4), "gfselect": (0x08, 4), "gf": (0x0C, 4),
          "msix_config": (0x10, 2), "num_queues": (0x12, 2), "status": (0x14, 1),
          "generation": (0x15, 1), "q_select": (0x16, 2), "q_size": (0x18, 2),
          "q_msix": (0x1A, 2), "q_enable": (0x1C, 2), "q_notify_off": (0x1E, 2),
          "q_desc": (0x20, 8), "q_avail": (0x28, 8), "q_used": (0x30, 8)}
LEGACY = {"host_features": (0x00, 4), "guest_features": (0x04, 4), "q_pfn": (0x08, 4),
          "q_num": (0x0C, 2), "q_sel": (0x0E, 2), "q_notify": (0x10, 2), "status": (0x12, 1),
          "isr": (0x13, 1)}


class VirtioPciDriver:
    """Initialises a virtio-pci function as Linux's ``virtio_pci_modern`` (or, with
    ``legacy=True`` or no modern capabilities, ``virtio_pci_legacy``) does."""

    def __init__(self, space: Any, memory: Any, ecam: Ecam, slot: int,
                 bars: dict[int, BarInfo], *, fn: int = 0, pio_base: int = 0,
                 alloc: GuestAllocator | None = None, legacy: bool = False) -> None:
        self.space, self.memory, self.ecam = space, memory, ecam
        self.slot, self.fn = slot, fn
        self.bars, self.pio_base = bars, pio_base
        if alloc is None:
            region = memory.regions[0]
            alloc = GuestAllocator(region.base, region.size)
        self.alloc = alloc
        self.caps = self.find_virtio_caps()
        self.legacy = legacy or VIRTIO_CAP_COMMON not in self.caps
        self.features = 0
        self.queues: list[Any] = []

    # -- locating the structures ---------------------------------------------------------------

    def find_virtio_caps(self) -> dict[int, dict[str, int]]:
        """The first vendor capability of each type whose BAR is assigned (Linux's
        ``virtio_pci_find_capability``), with its CPU address."""
        found: dict[int, dict[str, int]] = {}
        e, s, f = self.ecam, self.slot, self.fn
        for pos, cap_id in e.capabilities(s, f):
            if cap_id != regs.CAP_ID_VNDR:
                continue
            cfg_type = e.read(s, f, pos + 3, 1)
            bar = e.read(s, f, pos + 4, 1)
            if cfg_type in found or (bar not in self.bars and cfg_type != VIRTIO_CAP_PCI_CFG):
                continue
            offset, length = e.read(s, f, pos + 8), e.read(s, f, pos + 12)
            info = {"pos": pos, "bar": bar, "offset": offset, "length": length}
            if bar in self.bars:
                info["address"] = self.bar_cpu_address(bar) + offset
            if cfg_type == VIRTIO_CAP_NOTIFY:
                info["multiplier"] = e.read(s, f, pos + 16)
            found[cfg_type] = info
        return found

    def bar_cpu_address(self, index: int) -> int:
        bar = self.bars[index]
        assert bar.address is not None
        return self.pio_base + bar.address if bar.io else bar.address

    # -- register access ------------------------------------------------------------------------

    def common(self, name: str, value: int | None = None) -> int:
        off, size = COMMON[name]
        addr = self.caps[VIRTIO_CAP_COMMON]["address"] + off
        if value is None:
            if size == 8:
                return self.space.read(addr, 4) | self.space.read(addr + 4, 4) << 32
            return int(self.space.read(addr, size))
        if size == 8:  # vp_iowrite64_twopart
            self.space.write(addr, 4, value & _U32)
            self.space.write(addr + 4, 4, value >> 32)
        else:
            self.space.write(addr, size, value)
        return value

    def legacy_reg(self, name: str, value: int | None = None) -> int:
        off, size = LEGACY[name]
        addr = self.bar_cpu_address(0) + off
        if value is None:
            return int(self.space.read(addr, size))
        self.space.write(addr, size, value)
        return value

    def status(self, value: int | None = None) -> int:
        return self.legacy_reg("status", value) if self.legacy else self.common("status", value)

    def read_isr(self) -> int:
        """What the interrupt handler does first: read (and so clear) the ISR."""
        if self.legacy:
            return self.legacy_reg("isr")
        return int(self.space.read(self.caps[VIRTIO_CAP_ISR]["address"], 1))

    def config(self, offset: int, size: int) -> int:
        if self.legacy:
            msix = self._msix_enabled()
            return int(self.space.read(self.bar_cpu_address(0) + (24 if msix else 20) + offset,
                                       size))
        return int(self.space.read(self.caps[VIRTIO_CAP_DEVICE]["address"] + offset, size))

    def _msix_enabled(self) -> bool:
        for pos, cap_id in self.ecam.capabilities(self.slot, self.fn):
            if cap_id == regs.CAP_ID_MSIX:
                return bool(self.ecam.read(self.slot, self.fn, pos + 2, 2)
                            & regs.MSIX_FLAGS_ENABLE)
        return False

    # -- initialisation -------------------------------------------------------------------------

    def device_features(self) -> int:
        if self.legacy:
            return self.legacy_reg("host_features")
        self.common("dfselect", 0)
        low = self.common("df")
        self.common("dfselect", 1)
        return low | self.common("df") << 32

    def negotiate(self, accept: int | None = None) -> bool:
        self.status(0)
        while self.status():  # vp_reset waits for the status to read 0
            pass
        self.status(spec.STATUS_ACKNOWLEDGE)
        self.status(spec.STATUS_ACKNOWLEDGE | spec.STATUS_DRIVER)
        offered = self.device_features()
        self.features = offered if accept is None else offered & accept
        if self.legacy:
            self.legacy_reg("guest_features", self.features & _U32)
            return True
        self.common("gfselect", 0)
        self.common("gf", self.features & _U32)
        self.common("gfselect", 1)
        self.common("gf", self.features >> 32)
        self.status(spec.STATUS_ACKNOWLEDGE | spec.STATUS_DRIVER | spec.STATUS_FEATURES_OK)
        return bool(self.status() & spec.STATUS_FEATURES_OK)

    def setup_queue(self, index: int, size: int | None = None,
                    vector: int | None = None) -> SplitQueueDriver:
        kw = {"event_idx": bool(self.features >> spec.VIRTIO_F_EVENT_IDX & 1),
              "indirect": bool(self.features >> spec.VIRTIO_F_INDIRECT_DESC & 1)}
        if self.legacy:
            self.legacy_reg("q_sel", index)
            num = self.legacy_reg("q_num")
            if not num or self.legacy_reg("q_pfn"):
                raise RuntimeError(f"queue {index} unavailable")
            def legacy_notify() -> None:
                self.legacy_reg("q_notify", index)

            q = SplitQueueDriver(self.memory, self.alloc, num, legacy_align=4096,
                                 notify=legacy_notify, **kw)
            self.legacy_reg("q_pfn", q.desc >> 12)
            return q
        if index >= self.common("num_queues"):
            raise RuntimeError(f"queue {index} does not exist")
        self.common("q_select", index)
        num = self.common("q_size")
        if not num or self.common("q_enable"):
            raise RuntimeError(f"queue {index} unavailable or already active")
        if num & (num - 1):
            raise RuntimeError(f"bad queue size {num}")
        num = min(num, size or num)
        notify_cap = self.caps[VIRTIO_CAP_NOTIFY]
        off = self.common("q_notify_off")
        if off * notify_cap["multiplier"] + 2 > notify_cap["length"]:
            raise RuntimeError(f"notify offset {off} out of the notify region")
        notify_addr = notify_cap["address"] + off * notify_cap["multiplier"]
        q = SplitQueueDriver(self.memory, self.alloc, num,
                             notify=lambda: self.space.write(notify_addr, 2, index), **kw)
        self.common("q_size", num)
        self.common("q_desc", q.desc)
        self.common("q_avail", q.avail)
        self.common("q_used", q.used)
        if vector is not None:
            if self.common("q_msix", vector) != self.common("q_msix"):
                raise RuntimeError(f"queue {index}: vector {vector} refused")
        return q

    def setup(self, accept: int | None = None, nqueues: int | None = None,
              size: int | None = None, vectors: bool = False) -> list[SplitQueueDriver]:
        """Reset, negotiate, create the queues, enable them, DRIVER_OK.  With
        ``vectors`` the configuration takes MSI-X vector 0 and queue N vector N + 1."""
        if not self.negotiate(accept):
            raise RuntimeError("device refused FEATURES_OK")
        if vectors and not self.legacy:
            self.common("msix_config", 0)
        count = nqueues if nqueues is not None else (
            1 if self.legacy else self.common("num_queues"))
        self.queues = [self.setup_queue(i, size, (i + 1) if vectors else None)
                       for i in range(count)]
        if not self.legacy:
            for i in range(count):
                self.common("q_select", i)
                self.common("q_enable", 1)
        self.status(self.status() | spec.STATUS_DRIVER_OK)
        return self.queues
