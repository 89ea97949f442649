"""Guest memory and the address space.

- :class:`GuestAddress`: a guest physical address, its own type; arithmetic on
  it is checked to stay in ``[0, 2**64)``.
- :class:`GuestMemory`: RAM ranges backed by ``mmap`` (shareable with KVM),
  read and written with bounds and overflow checks: the ``*_partial`` calls
  say how many bytes they moved, the others move everything or raise
  :class:`~vmforge.errors.GuestMemoryError`.  :meth:`GuestMemory.view` gives
  zero-copy memoryviews for device back-ends.
- :class:`AddressSpace`: RAM plus MMIO regions, overlaps refused; decode and
  dispatch are compiled (``vmforge._fast.mmio``).  Accesses nobody claims read
  as zero and are logged, rate-limited.
"""

from __future__ import annotations

import mmap
import time
from collections.abc import Iterator

from vmforge._fast import guestmem as _guestmem
from vmforge._fast import mmio as _mmio
from vmforge._fast.mmio import MemTx
from vmforge.errors import GuestAddressError, GuestMemoryError, VmforgeError
from vmforge.lazy import lazy_logger
from vmforge.record import FrozenRecord

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Protocol, TypeAlias, runtime_checkable
else:
    from vmforge.typing_runtime import Protocol, runtime_checkable

__all__ = [
    "AddressSpace",
    "BadAccessLog",
    "GuestAddress",
    "GuestMemory",
    "MemTx",
    "MmioOps",
    "QuietUnassignedLog",
    "RamAllocationError",
    "RamRegion",
    "Region",
]

log = lazy_logger("vmforge.memory")  # (logging imported by a message)

#: Anything exposing the buffer protocol (bytes, bytearray, memoryview, mmap).
Buffer: TypeAlias = bytes | bytearray | memoryview | mmap.mmap

ADDRESS_LIMIT = 1 << 64


class GuestAddress(int):
    """A guest physical address: an int in ``[0, 2**64)`` with checked arithmetic."""

    __slots__ = ()

    def __new__(cls, value: int) -> GuestAddress:
        value = int(value)
        if not 0 <= value < ADDRESS_LIMIT:
            raise GuestAddressError(f"guest address {value:#x} is outside [0, 2**64)")
        return super().__new__(cls, value)

    def checked_add(self, offset: int) -> GuestAddress:
        """``self + offset``, or :class:`GuestAddressError` if it leaves the space."""
        return GuestAddress(int(self) + offset)

    def __add__(self, other: int) -> GuestAddress:  # type: ignore[override]
        return self.checked_add(int(other))

    def __sub__(self, other: int) -> GuestAddress:  # type: ignore[override]
        return GuestAddress(int(self) - int(other))

    def __repr__(self) -> str:
        return f"GuestAddress({int(self):#x})"


class RamAllocationError(VmforgeError, OSError):
    """The host could not give the memory a RAM region asked for (``-m 1T``)."""


def _size_text(size: int) -> str:
    """``1 TiB``, ``3 MiB``, ``4097 bytes``: a size as a person reads it."""
    for shift, unit in ((60, "EiB"), (50, "PiB"), (40, "TiB"), (30, "GiB"), (20, "MiB"),
                        (10, "KiB")):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} bytes"


def _check_range(addr: int, length: int) -> None:
    if not 0 <= addr < ADDRESS_LIMIT:
        raise GuestAddressError(f"guest address {addr:#x} is outside [0, 2**64)")
    if length < 0 or addr + length > ADDRESS_LIMIT:
        raise GuestAddressError(f"range of {length} bytes at {addr:#x} runs past 2**64")


class RamRegion(FrozenRecord):
    """One RAM range as the map holds it."""

    __slots__ = __match_args__ = ("base", "size", "name", "readonly", "buffer")
    base: int
    size: int
    name: str
    readonly: bool
    buffer: Any  # the mmap (or caller's buffer) behind it

    def __init__(self, base: int, size: int, name: str, readonly: bool, buffer: Any) -> None:
        object.__setattr__(self, "base", base)
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "readonly", readonly)
        object.__setattr__(self, "buffer", buffer)

    @property
    def end(self) -> int:
        """First address after the region."""
        return self.base + self.size


class GuestMemory(_guestmem.GuestRam):
    """The guest's RAM: slots of host memory at guest physical addresses."""

    def __init__(self) -> None:
        self._regions: dict[int, RamRegion] = {}

    # -- the map ------------------------------------------------------------------

    def add_ram(self, base: int, size: int, name: str = "ram", readonly: bool = False,
                buffer: Buffer | None = None) -> RamRegion:
        """Map ``size`` bytes at ``base``: a new anonymous shared ``mmap`` unless
        ``buffer`` (writable, exactly ``size`` bytes) is given."""
        _check_range(base, size)
        if size <= 0:
            raise ValueError(f"RAM region {name!r} needs a positive size, not {size}")
        if buffer is None:
            try:
                buffer = mmap.mmap(-1, size, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
            except (OSError, OverflowError) as exc:  # ENOMEM; a size past ssize_t
                reason = getattr(exc, "strerror", None) or str(exc)
                error = RamAllocationError(f"cannot set up guest memory {name!r} "
                                           f"({_size_text(size)}): {reason}")
                error.errno = getattr(exc, "errno", None)
                raise error from exc
        elif memoryview(buffer).nbytes != size:
            raise ValueError(f"buffer for {name!r} holds {memoryview(buffer).nbytes} bytes, "
                             f"not {size}")
        try:
            self._insert_slot(base, buffer, readonly)
        except ValueError as exc:
            clash = self._overlapping(base, size)
            if clash is None:
                raise
            raise ValueError(f"RAM region {name!r} [{base:#x}, {base + size:#x}) overlaps "
                             f"{clash.name!r} [{clash.base:#x}, {clash.end:#x})") from exc
        region = RamRegion(base, size, name, readonly, buffer)
        self._regions[base] = region
        return region

    def remove_ram(self, base: int) -> RamRegion:
        """Unmap the RAM region that starts at ``base``."""
        self._remove_slot(base)
        return self._regions.pop(base)

    def _overlapping(self, base: int, size: int) -> RamRegion | None:
        for r in self._regions.values():
            if base < r.end and r.base < base + size:
                return r
        return None

    @property
    def regions(self) -> list[RamRegion]:
        """RAM regions in address order."""
        return [self._regions[b] for b, _s, _ro in self._slots()]

    def region_at(self, addr: int) -> RamRegion | None:
        """The region holding ``addr``, if any."""
        slot = self._slot_at(addr) if 0 <= addr < ADDRESS_LIMIT else None
        return self._regions[slot[0]] if slot else None

    @property
    def total_size(self) -> int:
        return sum(r.size for r in self._regions.values())

    def check_range(self, addr: int, length: int) -> bool:
        """True when every byte of ``[addr, addr+length)`` is RAM."""
        if length < 0 or not 0 <= addr < ADDRESS_LIMIT:
            return False
        return self._is_mapped(addr, length)

    def checked_offset(self, addr: int, offset: int) -> GuestAddress | None:
        """``addr + offset`` if it is in RAM, else None (rust-vmm's ``checked_offset``)."""
        total = addr + offset
        if 0 <= total < ADDRESS_LIMIT and self._slot_at(total) is not None:
            return GuestAddress(total)
        return None

    # -- bytes in and out -----------------------------------------------------------

    def read_partial(self, addr: int, buf: Buffer) -> int:
        """Fill ``buf`` from ``addr``; returns the bytes moved (stops at a hole)."""
        _check_range(addr, 0)
        return self._copy_out(addr, buf)

    def write_partial(self, addr: int, data: Buffer) -> int:
        """Copy ``data`` to ``addr``; returns the bytes moved (stops at a hole or ROM)."""
        _check_range(addr, 0)
        return self._copy_in(addr, _as_bytes(data))

    def read_into(self, addr: int, buf: Buffer) -> None:
        """Fill all of ``buf`` from ``addr`` or raise :class:`GuestMemoryError`."""
        n = memoryview(buf).nbytes
        _check_range(addr, n)
        done = self._copy_out(addr, buf)
        if done != n:
            raise GuestMemoryError(addr, n, done, "read")

    def read(self, addr: int, length: int) -> bytes:
        """``length`` bytes from ``addr`` or :class:`GuestMemoryError`."""
        buf = bytearray(length)
        self.read_into(addr, buf)
        return bytes(buf)

    def write(self, addr: int, data: Buffer) -> None:
        """Write all of ``data`` at ``addr`` or raise :class:`GuestMemoryError`.

        Nothing is written when any byte of the range is not writable RAM.
        """
        raw = _as_bytes(data)
        _check_range(addr, len(raw))
        done = self._prefix(addr, len(raw), writable=True)
        if done != len(raw):
            raise GuestMemoryError(addr, len(raw), done, "write")
        self._copy_in(addr, raw)

    def load(self, addr: int, data: Buffer) -> None:
        """Write ``data`` at ``addr`` even into read-only regions (firmware loaders)."""
        raw = _as_bytes(data)
        _check_range(addr, len(raw))
        done = self._prefix(addr, len(raw), writable=False)
        if done != len(raw):
            raise GuestMemoryError(addr, len(raw), done, "load")
        self._copy_in(addr, raw, True)

    def _prefix(self, addr: int, length: int, writable: bool) -> int:
        """How many bytes from ``addr`` are RAM (and not ROM, when ``writable``)."""
        done = 0
        while done < length:
            slot = self._slot_at(addr + done)
            if slot is None or (writable and slot[2]):
                break
            done = min(length, slot[0] + slot[1] - addr)
        return done

    def read_uint(self, addr: int, size: int) -> int:
        """A little-endian unsigned integer of ``size`` bytes."""
        return int.from_bytes(self.read(addr, size), "little")

    def write_uint(self, addr: int, size: int, value: int) -> None:
        self.write(addr, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"))

    def read_u8(self, addr: int) -> int:
        return self.read_uint(addr, 1)

    def read_u16(self, addr: int) -> int:
        return self.read_uint(addr, 2)

    def read_u32(self, addr: int) -> int:
        return self.read_uint(addr, 4)

    def read_u64(self, addr: int) -> int:
        return self.read_uint(addr, 8)

    def write_u8(self, addr: int, value: int) -> None:
        self.write_uint(addr, 1, value)

    def write_u16(self, addr: int, value: int) -> None:
        self.write_uint(addr, 2, value)

    def write_u32(self, addr: int, value: int) -> None:
        self.write_uint(addr, 4, value)

    def write_u64(self, addr: int, value: int) -> None:
        self.write_uint(addr, 8, value)

    # -- zero copy --------------------------------------------------------------------

    def view(self, addr: int, length: int, writable: bool = True) -> memoryview:
        """A memoryview of ``[addr, addr+length)``; the range must lie in one region.

        Use :meth:`views` for a range that may cross regions.
        """
        _check_range(addr, length)
        slot = self._slot_at(addr)
        if slot is None:
            raise GuestMemoryError(addr, length, 0, "view")
        base, size, readonly, mv = slot
        if addr + length > base + size:
            raise GuestMemoryError(addr, length, base + size - addr, "view")
        if writable and readonly:
            raise GuestMemoryError(addr, length, 0, "writable view of ROM")
        out = mv[addr - base: addr - base + length]
        return out.toreadonly() if not writable else out

    def views(self, addr: int, length: int, writable: bool = True) -> list[memoryview]:
        """Memoryviews covering ``[addr, addr+length)`` across adjacent regions."""
        _check_range(addr, length)
        out: list[memoryview] = []
        done = 0
        while done < length:
            slot = self._slot_at(addr + done)
            if slot is None:
                raise GuestMemoryError(addr, length, done, "view")
            base, size, _ro, _mv = slot
            n = min(length - done, base + size - (addr + done))
            out.append(self.view(addr + done, n, writable))
            done += n
        return out


def _as_bytes(data: Buffer) -> memoryview:
    mv = memoryview(data)
    return mv.cast("B") if mv.format != "B" or mv.ndim != 1 else mv


@runtime_checkable
class MmioOps(Protocol):
    """What an MMIO region calls: a device, or any object with these two methods.

    Optional attributes: ``valid_sizes`` (min, max) the guest may use,
    ``impl_sizes`` (min, max) the object implements, ``unaligned`` (bool).
    """

    def read(self, offset: int, size: int) -> int: ...

    def write(self, offset: int, size: int, value: int) -> None: ...


class Region(FrozenRecord):
    """One entry of an address space's map (what :meth:`AddressSpace.regions` lists)."""

    __slots__ = __match_args__ = ("base", "size", "kind", "name", "ops")
    base: int
    size: int
    kind: str  # "ram", "rom" or "mmio"
    name: str
    ops: Any

    def __init__(self, base: int, size: int, kind: str, name: str, ops: Any = None) -> None:
        object.__setattr__(self, "base", base)
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "ops", ops)

    @property
    def end(self) -> int:
        return self.base + self.size


def access_sizes(ops: object) -> dict[str, Any]:
    """The access-size declaration of an MMIO ops object, with QEMU's defaults."""
    valid = tuple(getattr(ops, "valid_sizes", (1, 8)))
    impl = tuple(getattr(ops, "impl_sizes", valid))
    return {
        "valid_min": int(valid[0]), "valid_max": int(valid[1]),
        "impl_min": int(impl[0]), "impl_max": int(impl[1]),
        "unaligned": bool(getattr(ops, "unaligned", False)),
    }


class BadAccessLog:
    """Rate-limited logging of accesses nobody claims (at most ``burst`` a second)."""

    KINDS = {int(MemTx.MEMTX_UNASSIGNED): "unassigned", int(MemTx.MEMTX_INVALID): "invalid",
             int(MemTx.MEMTX_READONLY): "read-only"}

    def __init__(self, name: str, burst: int = 10) -> None:
        self.name = name
        self.burst = burst
        self._window = 0.0
        self._in_window = 0
        self.suppressed = 0

    def __call__(self, kind: int, addr: int, size: int, is_write: bool, value: int) -> None:
        now = time.monotonic()
        if now - self._window >= 1.0:
            if self.suppressed:
                log.warning("%s: %d more bad accesses not shown", self.name, self.suppressed)
            self._window, self._in_window, self.suppressed = now, 0, 0
        if self._in_window >= self.burst:
            self.suppressed += 1
            return
        self._in_window += 1
        what = f"write {value:#x}" if is_write else "read"
        log.warning("%s: %s %s of %d bytes at %#x (%s)", self.name,
                    self.KINDS.get(kind, "bad"), what, size, addr,
                    "reads as 0" if not is_write else "dropped")


class QuietUnassignedLog(BadAccessLog):
    """For spaces where an access nobody decodes is normal (a PCI master abort, a
    probe of an absent PC port): those are not logged, invalid ones still are."""

    def __call__(self, kind: int, addr: int, size: int, is_write: bool, value: int) -> None:
        if kind != int(MemTx.MEMTX_UNASSIGNED):
            super().__call__(kind, addr, size, is_write, value)


class AddressSpace(_mmio.AddressSpace):
    """A guest physical address space: RAM from a :class:`GuestMemory` plus MMIO.

    ``read(addr, size)`` / ``write(addr, size, value)`` decode in C.  A device
    exception propagates to the caller; an access nobody claims reads as zero.
    """

    def __init__(self, memory: GuestMemory | None = None, name: str = "system") -> None:
        self.name = name
        self._mmio_names: dict[int, str] = {}
        self.on_bad_access = BadAccessLog(name)

    def __new__(cls, memory: GuestMemory | None = None, name: str = "system") -> AddressSpace:
        return super().__new__(cls, memory if memory is not None else GuestMemory())

    @property
    def memory(self) -> GuestMemory:
        return self.ram  # type: ignore[return-value]

    def add_ram(self, base: int, size: int, name: str = "ram", readonly: bool = False,
                buffer: Buffer | None = None) -> RamRegion:
        """Map RAM (or a ROM when ``readonly``); refuses overlaps with anything mapped."""
        self._refuse_overlap(base, size, name)
        return self.memory.add_ram(base, size, name, readonly, buffer)

    def add_mmio(self, base: int, ops: MmioOps, size: int | None = None,
                 name: str | None = None) -> MmioOps:
        """Map ``ops`` at ``base`` for ``size`` bytes (default ``ops.mmio_size``)."""
        if size is None:
            size = int(getattr(ops, "mmio_size", 0))
        name = name or getattr(ops, "name", None) or type(ops).__name__
        _check_range(base, size)
        if not (callable(getattr(ops, "read", None)) and callable(getattr(ops, "write", None))):
            raise TypeError(f"MMIO region {name!r}: {ops!r} has no read/write methods")
        self._refuse_overlap(base, size, name)
        self._insert_mmio(base, size, ops, **access_sizes(ops))
        self._mmio_names[base] = name
        return ops

    def remove_mmio(self, base: int) -> MmioOps:
        self._mmio_names.pop(base, None)
        return self._remove_mmio(base)

    def _refuse_overlap(self, base: int, size: int, name: str) -> None:
        if size <= 0:
            raise ValueError(f"region {name!r} needs a positive size, not {size}")
        for r in self.regions():
            if base < r.end and r.base < base + size:
                raise ValueError(f"region {name!r} [{base:#x}, {base + size:#x}) overlaps "
                                 f"{r.kind} {r.name!r} [{r.base:#x}, {r.end:#x})")

    def regions(self) -> list[Region]:
        """Every region, RAM and MMIO, in address order."""
        out = [Region(r.base, r.size, "rom" if r.readonly else "ram", r.name)
               for r in self.memory.regions]
        out += [Region(b, s, "mmio", self._mmio_names.get(b, type(o).__name__), o)
                for b, s, o in self._mmio_regions()]
        return sorted(out, key=lambda r: r.base)

    def __iter__(self) -> Iterator[Region]:
        return iter(self.regions())

    def describe(self) -> str:
        """A QEMU ``info mtree``-like listing."""
        return "\n".join(f"{r.base:016x}-{r.end - 1:016x} ({r.kind}) {r.name}"
                         for r in self.regions())
