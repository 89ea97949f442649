# cython: language_level=3
"""MMIO decode: find the region for a guest physical address and dispatch.

RAM hits are served in C from the slot's host pointer.  A device region is
called as ``ops.read(offset, size) -> int`` / ``ops.write(offset, size, value)``
with the sizes the device implements: the decoder splits a wide access into
several narrower ones (little-endian) and widens a narrow one to the smallest
implemented size, aligned down (a widened write carries the value shifted into
place, other bytes zero, as QEMU does: no read-modify-write).

An access no region claims, or one a region refuses (size or alignment outside
what it declares valid), reads as zero, drops a write, and is reported to
``on_bad_access``; it never raises.  An exception raised by a device propagates.
"""

from cpython.mem cimport PyMem_Malloc, PyMem_Realloc, PyMem_Free
from cpython.ref cimport PyObject
from libc.string cimport memcpy, memmove
from libc.stdint cimport uint8_t, uint64_t
from vmforge._fast.guestmem cimport GuestRam

cdef inline uint64_t size_mask(int size) noexcept nogil:
    if size >= 8:
        return 0xFFFFFFFFFFFFFFFFULL
    return (<uint64_t>1 << (size * 8)) - 1

cdef inline bint is_pow2_size(int size) noexcept nogil:
    return size == 1 or size == 2 or size == 4 or size == 8


cdef class AddressSpace:
    """RAM (a ``GuestRam``) plus a sorted table of MMIO regions."""

    def __cinit__(self, GuestRam ram not None, *args, **kwargs):
        self.ram = ram
        self.cap = 16
        self.nslots = 0
        self.hint = 0
        self.bad_accesses = 0
        self.on_bad_access = None
        self.slots = <MmioSlot *>PyMem_Malloc(self.cap * sizeof(MmioSlot))
        if self.slots == NULL:
            raise MemoryError()
        self._ops = []

    def __dealloc__(self):
        PyMem_Free(self.slots)

    # -- table changes (slow path) ---------------------------------------------

    def _insert_mmio(self, unsigned long long base, unsigned long long size, object ops,
                     int valid_min=1, int valid_max=8, int impl_min=1, int impl_max=8,
                     bint unaligned=False):
        cdef uint64_t last
        cdef int i, pos
        if size == 0:
            raise ValueError("an MMIO region must not be empty")
        if size - 1 > 0xFFFFFFFFFFFFFFFFULL - base:
            raise ValueError(f"MMIO region at {base:#x} of {size:#x} bytes wraps past 2**64")
        if not (is_pow2_size(valid_min) and is_pow2_size(valid_max) and valid_min <= valid_max):
            raise ValueError(f"valid access sizes ({valid_min}, {valid_max}) must be 1/2/4/8, min <= max")
        if not (is_pow2_size(impl_min) and is_pow2_size(impl_max) and impl_min <= impl_max):
            raise ValueError(f"implemented access sizes ({impl_min}, {impl_max}) must be 1/2/4/8, min <= max")
        last = base + size - 1
        pos = self.nslots
        for i in range(self.nslots):
            if not (last < self.slots[i].base or base > self.slots[i].last):
                raise ValueError(
                    f"MMIO region [{base:#x}, {last:#x}] overlaps "
                    f"[{self.slots[i].base:#x}, {self.slots[i].last:#x}]")
            if base < self.slots[i].base and pos == self.nslots:
                pos = i
        if self.nslots == self.cap:
            newp = <MmioSlot *>PyMem_Realloc(self.slots, 2 * self.cap * sizeof(MmioSlot))
            if newp == NULL:
                raise MemoryError()
            self.slots = newp
            self.cap *= 2
        memmove(&self.slots[pos + 1], &self.slots[pos], (self.nslots - pos) * sizeof(MmioSlot))
        self._ops.insert(pos, ops)
        self.slots[pos].base = base
        self.slots[pos].last = last
        self.slots[pos].ops = <PyObject *>ops
        self.slots[pos].valid_min = valid_min
        self.slots[pos].valid_max = valid_max
        self.slots[pos].impl_min = impl_min
        self.slots[pos].impl_max = impl_max
        self.slots[pos].unaligned = unaligned
        self.nslots += 1
        self.hint = 0

    def _remove_mmio(self, unsigned long long base):
        cdef int i
        for i in range(self.nslots):
            if self.slots[i].base == base:
                memmove(&self.slots[i], &self.slots[i + 1],
                        (self.nslots - i - 1) * sizeof(MmioSlot))
                self.nslots -= 1
                self.hint = 0
                return self._ops.pop(i)
        raise KeyError(f"no MMIO region starts at {base:#x}")

    def _mmio_regions(self):
        """``(base, size, ops)`` of every MMIO region, in address order."""
        return [(self.slots[i].base, self.slots[i].last - self.slots[i].base + 1, self._ops[i])
                for i in range(self.nslots)]

    # -- decode -------------------------------------------------------------------

    cdef int find_mmio(self, uint64_t addr) noexcept nogil:
        cdef int lo = 0, hi = self.nslots - 1, mid
        cdef int h = self.hint
        if h < self.nslots and self.slots[h].base <= addr <= self.slots[h].last:
            return h
        while lo <= hi:
            mid = (lo + hi) >> 1
            if addr < self.slots[mid].base:
                hi = mid - 1
            elif addr > self.slots[mid].last:
                lo = mid + 1
            else:
                self.hint = mid
                return mid
        return -1

    cdef int _bad(self, int kind, uint64_t addr, int size, bint is_write,
                  uint64_t value) except -1:
        self.bad_accesses += 1
        if self.on_bad_access is not None:
            self.on_bad_access(kind, addr, size, is_write, value)
        return kind

    cdef int _dev_read(self, MmioSlot *s, uint64_t off, int size, uint64_t *value) except -1:
        """Read ``size`` bytes at region offset ``off`` using implemented sizes."""
        cdef object ops = <object>s.ops
        cdef uint64_t v = 0, part, aligned
        cdef int step, i
        if size < s.impl_min:
            aligned = off & ~(<uint64_t>(s.impl_min - 1))
            part = <uint64_t>(ops.read(aligned, s.impl_min) & 0xFFFFFFFFFFFFFFFF)
            value[0] = (part >> ((off - aligned) * 8)) & size_mask(size)
            return 0
        step = size if size <= s.impl_max else s.impl_max
        i = 0
        while i < size:
            part = <uint64_t>(ops.read(off + i, step) & 0xFFFFFFFFFFFFFFFF)
            v |= (part & size_mask(step)) << (i * 8)
            i += step
        value[0] = v
        return 0

    cdef int _dev_write(self, MmioSlot *s, uint64_t off, int size, uint64_t value) except -1:
        cdef object ops = <object>s.ops
        cdef uint64_t aligned
        cdef int step, i
        value &= size_mask(size)
        if size < s.impl_min:
            aligned = off & ~(<uint64_t>(s.impl_min - 1))
            ops.write(aligned, s.impl_min, value << ((off - aligned) * 8))
            return 0
        step = size if size <= s.impl_max else s.impl_max
        i = 0
        while i < size:
            ops.write(off + i, step, (value >> (i * 8)) & size_mask(step))
            i += step
        return 0

    cdef int _check_valid(self, MmioSlot *s, uint64_t addr, int size) noexcept nogil:
        if size < s.valid_min or size > s.valid_max:
            return 0
        if not s.unaligned and (addr & (size - 1)) != 0:
            return 0
        if size - 1 > s.last - addr:        # runs past the end of the region
            return 0
        return 1

    cdef int read_c(self, uint64_t addr, int size, uint64_t *value) except -1:
        cdef uint8_t *p = self.ram.ptr(addr, size)
        cdef uint64_t v = 0, b
        cdef int i, r, worst
        cdef MmioSlot *s
        if p != NULL:
            memcpy(&v, p, size)
            value[0] = v
            return MEMTX_OK
        i = self.find_mmio(addr)
        if i >= 0:
            s = &self.slots[i]
            if self._check_valid(s, addr, size):
                return self._dev_read(s, addr - s.base, size, value)
            value[0] = 0
            return self._bad(MEMTX_INVALID, addr, size, False, 0)
        if self.ram.find(addr) >= 0 and size > 1:
            # RAM that ends inside the access: take it a byte at a time
            worst = MEMTX_OK
            for i in range(size):
                r = self.read_c(addr + <uint64_t>i, 1, &b)
                if r > worst:
                    worst = r
                v |= (b & 0xFF) << (8 * i)
            value[0] = v
            return worst
        value[0] = 0
        return self._bad(MEMTX_UNASSIGNED, addr, size, False, 0)

    cdef int write_c(self, uint64_t addr, int size, uint64_t value) except -1:
        cdef uint8_t *p = self.ram.wptr(addr, size)
        cdef int i, r, worst
        cdef MmioSlot *s
        if p != NULL:
            memcpy(p, &value, size)
            return MEMTX_OK
        i = self.find_mmio(addr)
        if i >= 0:
            s = &self.slots[i]
            if self._check_valid(s, addr, size):
                return self._dev_write(s, addr - s.base, size, value)
            return self._bad(MEMTX_INVALID, addr, size, True, value)
        i = self.ram.find(addr)
        if i >= 0:
            if self.ram.slots[i].readonly:
                return self._bad(MEMTX_READONLY, addr, size, True, value)
            if size > 1:
                worst = MEMTX_OK
                for i in range(size):
                    r = self.write_c(addr + <uint64_t>i, 1, (value >> (8 * i)) & 0xFF)
                    if r > worst:
                        worst = r
                return worst
        return self._bad(MEMTX_UNASSIGNED, addr, size, True, value)

    # -- Python face --------------------------------------------------------------

    def read(self, unsigned long long addr, int size):
        """Read ``size`` (1, 2, 4, 8) bytes at ``addr``, little-endian."""
        cdef uint64_t v = 0
        if not is_pow2_size(size):
            raise ValueError(f"access size {size} is not 1, 2, 4 or 8")
        self.read_c(addr, size, &v)
        return v

    def write(self, unsigned long long addr, int size, unsigned long long value):
        """Write the low ``size`` bytes of ``value`` at ``addr``; returns a MemTx code."""
        if not is_pow2_size(size):
            raise ValueError(f"access size {size} is not 1, 2, 4 or 8")
        return self.write_c(addr, size, value & size_mask(size))

    def read_tx(self, unsigned long long addr, int size):
        """``(value, MemTx)`` for one read: callers that must tell a bus error."""
        cdef uint64_t v = 0
        if not is_pow2_size(size):
            raise ValueError(f"access size {size} is not 1, 2, 4 or 8")
        r = self.read_c(addr, size, &v)
        return v, MemTx(r)


def access_loop(AddressSpace space, unsigned long long addr, int size,
                unsigned long long count, bint is_write=False):
    """Decode ``count`` accesses from C (the CPU's path); returns the last value read.

    A measuring aid for benchmarks: it is exactly the path an interpreter takes.
    """
    cdef uint64_t v = 0, n
    for n in range(count):
        if is_write:
            space.write_c(addr, size, n)
        else:
            space.read_c(addr, size, &v)
    return v
