"""A pure-Python reference of the address-space decoder.

Same behaviour and interface as :class:`vmforge.memory.AddressSpace` (whose
decode is compiled in ``vmforge._fast.mmio``), written for clarity: the tests
run on both, and the benchmarks compare them.  Not for production use.
"""

from __future__ import annotations

import bisect
import mmap
from collections.abc import Callable
from typing import Any

from vmforge.memory import MemTx, Region, access_sizes

__all__ = ["ReferenceAddressSpace"]

_MASK64 = (1 << 64) - 1


def _mask(size: int) -> int:
    return (1 << (8 * size)) - 1


class _Slot:
    __slots__ = ("base", "impl_max", "impl_min", "kind", "last", "name", "ops", "readonly",
                 "unaligned", "valid_max", "valid_min", "view")
    base: int
    last: int
    kind: str
    name: str
    ops: Any                # an MMIO region's device (read/write), None for RAM
    view: memoryview        # a RAM region's bytes
    readonly: bool
    valid_min: int
    valid_max: int
    impl_min: int
    impl_max: int
    unaligned: bool

    def __init__(self, base: int, size: int, kind: str, name: str) -> None:
        self.base, self.last, self.kind, self.name = base, base + size - 1, kind, name


class ReferenceAddressSpace:
    """RAM and MMIO regions in sorted lists; decode with ``bisect``."""

    def __init__(self, name: str = "system") -> None:
        self.name = name
        self._slots: list[_Slot] = []
        self._bases: list[int] = []
        self.bad_accesses = 0
        self.on_bad_access: Callable[[int, int, int, bool, int], None] | None = None

    # -- the map --------------------------------------------------------------------

    def _insert(self, slot: _Slot) -> None:
        for s in self._slots:
            if slot.base <= s.last and s.base <= slot.last:
                raise ValueError(f"region {slot.name!r} [{slot.base:#x}, {slot.last + 1:#x}) "
                                 f"overlaps {s.kind} {s.name!r} [{s.base:#x}, {s.last + 1:#x})")
        i = bisect.bisect(self._bases, slot.base)
        self._bases.insert(i, slot.base)
        self._slots.insert(i, slot)

    def add_ram(self, base: int, size: int, name: str = "ram", readonly: bool = False,
                buffer: Any = None) -> Any:
        if size <= 0 or base < 0 or base + size > 1 << 64:
            raise ValueError(f"region {name!r} needs a positive size inside the 64-bit space")
        buffer = buffer if buffer is not None else mmap.mmap(-1, size)
        slot = _Slot(base, size, "rom" if readonly else "ram", name)
        slot.view, slot.readonly = memoryview(buffer).cast("B"), readonly
        self._insert(slot)
        return buffer

    def add_mmio(self, base: int, ops: Any, size: int | None = None,
                 name: str | None = None) -> Any:
        size = int(getattr(ops, "mmio_size", 0)) if size is None else size
        name = name or getattr(ops, "name", None) or type(ops).__name__
        if size <= 0 or base < 0 or base + size > 1 << 64:
            raise ValueError(f"region {name!r} needs a positive size inside the 64-bit space")
        sizes = access_sizes(ops)
        for lo, hi in (("valid_min", "valid_max"), ("impl_min", "impl_max")):
            if not (sizes[lo] in (1, 2, 4, 8) and sizes[hi] in (1, 2, 4, 8)
                    and sizes[lo] <= sizes[hi]):
                raise ValueError(f"{name}: access sizes ({sizes[lo]}, {sizes[hi]}) must be "
                                 "1/2/4/8, min <= max")
        slot = _Slot(base, size, "mmio", name)
        slot.ops = ops
        for key, value in sizes.items():
            setattr(slot, key, value)
        self._insert(slot)
        return ops

    def regions(self) -> list[Region]:
        return [Region(s.base, s.last - s.base + 1, s.kind, s.name,
                       getattr(s, "ops", None) if s.kind == "mmio" else None)
                for s in self._slots]

    def _find(self, addr: int) -> _Slot | None:
        i = bisect.bisect(self._bases, addr) - 1
        if i >= 0 and addr <= self._slots[i].last:
            return self._slots[i]
        return None

    # -- decode -----------------------------------------------------------------------

    def _bad(self, kind: MemTx, addr: int, size: int, is_write: bool, value: int) -> MemTx:
        self.bad_accesses += 1
        if self.on_bad_access is not None:
            self.on_bad_access(int(kind), addr, size, is_write, value)
        return kind

    @staticmethod
    def _valid(s: _Slot, addr: int, size: int) -> bool:
        return (s.valid_min <= size <= s.valid_max
                and (s.unaligned or addr % size == 0)
                and addr + size - 1 <= s.last)

    def read_tx(self, addr: int, size: int) -> tuple[int, MemTx]:
        if size not in (1, 2, 4, 8):
            raise ValueError(f"access size {size} is not 1, 2, 4 or 8")
        addr &= _MASK64
        s = self._find(addr)
        if s is None:
            return 0, self._bad(MemTx.MEMTX_UNASSIGNED, addr, size, False, 0)
        if s.kind != "mmio":
            if addr + size - 1 <= s.last:
                off = addr - s.base
                return int.from_bytes(s.view[off:off + size], "little"), MemTx.MEMTX_OK
            value, worst = 0, MemTx.MEMTX_OK  # the access leaves the RAM: byte by byte
            for i in range(size):
                b, r = self.read_tx(addr + i, 1)
                value |= b << (8 * i)
                worst = max(worst, r)
            return value, MemTx(worst)
        if not self._valid(s, addr, size):
            return 0, self._bad(MemTx.MEMTX_INVALID, addr, size, False, 0)
        off = addr - s.base
        if size < s.impl_min:
            aligned = off & ~(s.impl_min - 1)
            word = s.ops.read(aligned, s.impl_min) & _MASK64
            return (word >> (8 * (off - aligned))) & _mask(size), MemTx.MEMTX_OK
        step = min(size, s.impl_max)
        value = 0
        for i in range(0, size, step):
            value |= (s.ops.read(off + i, step) & _mask(step)) << (8 * i)
        return value, MemTx.MEMTX_OK

    def read(self, addr: int, size: int) -> int:
        return self.read_tx(addr, size)[0]

    def write(self, addr: int, size: int, value: int) -> int:
        if size not in (1, 2, 4, 8):
            raise ValueError(f"access size {size} is not 1, 2, 4 or 8")
        addr &= _MASK64
        value &= _mask(size)
        s = self._find(addr)
        if s is None:
            return self._bad(MemTx.MEMTX_UNASSIGNED, addr, size, True, value)
        if s.kind != "mmio":
            if s.readonly:
                return self._bad(MemTx.MEMTX_READONLY, addr, size, True, value)
            if addr + size - 1 <= s.last:
                off = addr - s.base
                s.view[off:off + size] = value.to_bytes(size, "little")
                return MemTx.MEMTX_OK
            return max(self.write(addr + i, 1, value >> (8 * i)) for i in range(size))
        if not self._valid(s, addr, size):
            return self._bad(MemTx.MEMTX_INVALID, addr, size, True, value)
        off = addr - s.base
        if size < s.impl_min:
            aligned = off & ~(s.impl_min - 1)
            s.ops.write(aligned, s.impl_min, value << (8 * (off - aligned)))
            return MemTx.MEMTX_OK
        step = min(size, s.impl_max)
        for i in range(0, size, step):
            s.ops.write(off + i, step, (value >> (8 * i)) & _mask(step))
        return MemTx.MEMTX_OK
