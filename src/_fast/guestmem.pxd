# Guest RAM as host memory: a sorted table of slots, each one host buffer.
from libc.stdint cimport uint8_t, uint64_t

cdef struct RamSlot:
    uint64_t base       # guest physical address of the first byte
    uint64_t size       # bytes, > 0
    uint64_t last       # base + size - 1 (no overflow at the top of the space)
    uint8_t *host       # first byte in host memory
    bint readonly       # a ROM: the guest's writes are refused
    uint64_t *dirty     # dirty log: one bit per 4 KiB page from base (NULL: never logged)

cdef class GuestRam:
    cdef RamSlot *slots
    cdef int nslots
    cdef int cap
    cdef int hint                  # last slot hit
    cdef list _views               # memoryviews pinning each slot's buffer, slot order
    cdef readonly unsigned long long generation   # bumped on every map change
    cdef readonly int logging                     # the dirty log is on
    cdef readonly unsigned long long dirty_gen    # bumped when the log starts, stops or is taken

    cdef int find(self, uint64_t addr) noexcept nogil
    cdef uint8_t *ptr(self, uint64_t addr, uint64_t length) noexcept nogil
    cdef uint8_t *wptr(self, uint64_t addr, uint64_t length) noexcept nogil
    cdef uint64_t copy_out(self, uint64_t addr, uint8_t *dst, uint64_t length) noexcept nogil
    cdef void mark(self, uint64_t addr, uint64_t length) noexcept nogil
    cdef bint page_dirty(self, uint64_t addr) noexcept nogil
    cdef uint64_t copy_in(self, uint64_t addr, const uint8_t *src, uint64_t length,
                          bint force) noexcept nogil
