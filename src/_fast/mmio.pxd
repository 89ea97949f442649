# The address-space decoder: RAM slots (GuestRam) and MMIO regions.
from cpython.ref cimport PyObject
from libc.stdint cimport uint8_t, uint64_t
from vmforge._fast.guestmem cimport GuestRam

# Outcome of one access, as QEMU's MemTxResult.
cpdef enum MemTx:
    MEMTX_OK = 0
    MEMTX_UNASSIGNED = 1     # no region claims the address: reads 0, write dropped
    MEMTX_INVALID = 2        # a region claims it but refuses the size/alignment
    MEMTX_READONLY = 3       # a write to ROM: dropped

cdef struct MmioSlot:
    uint64_t base
    uint64_t last            # inclusive
    PyObject *ops            # borrowed: AddressSpace._ops keeps the reference
    int valid_min, valid_max # sizes the guest may use (1, 2, 4, 8)
    int impl_min, impl_max   # sizes the device implements
    bint unaligned           # the guest may access at unaligned addresses

cdef class AddressSpace:
    cdef readonly GuestRam ram
    cdef MmioSlot *slots
    cdef int nslots
    cdef int cap
    cdef int hint
    cdef list _ops
    cdef public object on_bad_access    # callable(kind, addr, size, is_write, value) or None
    cdef readonly unsigned long long bad_accesses

    cdef int find_mmio(self, uint64_t addr) noexcept nogil
    cdef int _bad(self, int kind, uint64_t addr, int size, bint is_write,
                  uint64_t value) except -1
    cdef int _dev_read(self, MmioSlot *s, uint64_t off, int size, uint64_t *value) except -1
    cdef int _dev_write(self, MmioSlot *s, uint64_t off, int size, uint64_t value) except -1
    cdef int _check_valid(self, MmioSlot *s, uint64_t addr, int size) noexcept nogil
    # Returns a MemTx code, or -1 with a Python exception set (raised by a device).
    cdef int read_c(self, uint64_t addr, int size, uint64_t *value) except -1
    cdef int write_c(self, uint64_t addr, int size, uint64_t value) except -1
