# cython: language_level=3
"""Guest RAM slots: host buffers mapped at guest physical addresses.

Every lookup is overflow-safe: a range ``[addr, addr + length)`` is accepted
only when it lies inside mapped slots, and ``addr + length`` is never computed
in a way that can wrap past 2**64.

The dirty log (live migration): while it is on, each slot has a bitmap of
its 4 KiB pages; writers mark the pages they change (:meth:`GuestRam.mark`:
the hart's store slow path, device writes), the migration takes and clears it
(``_log_take``).  Bits are set and taken with atomic operations, so an I/O
thread may mark while the machine's thread takes.
"""

from cpython.mem cimport PyMem_Malloc, PyMem_Realloc, PyMem_Free
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memmove, memset
from libc.stdint cimport uint8_t, uint64_t

cdef extern from *:
    """
    #define gm_or64(p, v) __atomic_fetch_or((p), (v), __ATOMIC_RELAXED)
    #define gm_xchg64(p) __atomic_exchange_n((p), 0, __ATOMIC_ACQ_REL)
    #define gm_ld64(p) __atomic_load_n((p), __ATOMIC_RELAXED)
    """
    void gm_or64(uint64_t *p, uint64_t v) noexcept nogil
    uint64_t gm_xchg64(uint64_t *p) noexcept nogil
    uint64_t gm_ld64(uint64_t *p) noexcept nogil


cdef inline uint64_t log_words(uint64_t size) noexcept nogil:
    """64-bit words of the dirty bitmap of a slot of ``size`` bytes."""
    return (((size - 1) >> 12) >> 6) + 1


cdef class GuestRam:
    """A sorted, non-overlapping table of RAM slots (the RAM map)."""

    def __cinit__(self):
        self.cap = 8
        self.nslots = 0
        self.hint = 0
        self.generation = 0
        self.slots = <RamSlot *>PyMem_Malloc(self.cap * sizeof(RamSlot))
        if self.slots == NULL:
            raise MemoryError()
        self._views = []

    def __dealloc__(self):
        cdef int i
        for i in range(self.nslots):
            free(self.slots[i].dirty)
        PyMem_Free(self.slots)

    # -- map changes (slow path) -------------------------------------------------

    def _insert_slot(self, unsigned long long base, object buffer, bint readonly=False):
        """Map ``buffer`` (writable, C-contiguous) at ``base``; overlaps are refused."""
        pinned = memoryview(buffer).cast("B")     # holds the export: no close/resize
        cdef unsigned char[::1] view = pinned
        cdef uint64_t size = view.shape[0]
        cdef uint64_t last
        cdef int i, pos
        if size == 0:
            raise ValueError("a RAM slot must not be empty")
        if size - 1 > 0xFFFFFFFFFFFFFFFFULL - base:
            raise ValueError(f"RAM slot at {base:#x} of {size:#x} bytes wraps past 2**64")
        last = base + size - 1
        pos = self.nslots
        for i in range(self.nslots):
            if not (last < self.slots[i].base or base > self.slots[i].last):
                raise ValueError(
                    f"RAM slot [{base:#x}, {last:#x}] overlaps "
                    f"[{self.slots[i].base:#x}, {self.slots[i].last:#x}]")
            if base < self.slots[i].base and pos == self.nslots:
                pos = i
        if self.nslots == self.cap:
            newp = <RamSlot *>PyMem_Realloc(self.slots, 2 * self.cap * sizeof(RamSlot))
            if newp == NULL:
                raise MemoryError()
            self.slots = newp
            self.cap *= 2
        memmove(&self.slots[pos + 1], &self.slots[pos], (self.nslots - pos) * sizeof(RamSlot))
        self.slots[pos].base = base
        self.slots[pos].size = size
        self.slots[pos].last = last
        self.slots[pos].host = &view[0]
        self.slots[pos].readonly = readonly
        self.slots[pos].dirty = NULL
        if self.logging:
            self.slots[pos].dirty = <uint64_t *>calloc(log_words(size), 8)
            if self.slots[pos].dirty == NULL:
                raise MemoryError()
        self.nslots += 1
        self._views.insert(pos, pinned)
        self.hint = 0
        self.generation += 1

    def _remove_slot(self, unsigned long long base):
        """Unmap the slot that starts at ``base``; returns its buffer view."""
        cdef int i
        for i in range(self.nslots):
            if self.slots[i].base == base:
                free(self.slots[i].dirty)
                memmove(&self.slots[i], &self.slots[i + 1],
                        (self.nslots - i - 1) * sizeof(RamSlot))
                self.nslots -= 1
                self.hint = 0
                self.generation += 1
                return self._views.pop(i)
        raise KeyError(f"no RAM slot starts at {base:#x}")

    # -- lookups (hot path, no GIL needed) ---------------------------------------

    cdef int find(self, uint64_t addr) noexcept nogil:
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

    cdef uint8_t *ptr(self, uint64_t addr, uint64_t length) noexcept nogil:
        """Host pointer for ``[addr, addr+length)`` inside one slot, else NULL."""
        cdef int i = self.find(addr)
        if i < 0:
            return NULL
        if length == 0 or length - 1 <= self.slots[i].last - addr:
            return self.slots[i].host + (addr - self.slots[i].base)
        return NULL

    cdef uint8_t *wptr(self, uint64_t addr, uint64_t length) noexcept nogil:
        """Like ``ptr`` but NULL for read-only slots."""
        cdef int i = self.find(addr)
        if i < 0 or self.slots[i].readonly:
            return NULL
        if length == 0 or length - 1 <= self.slots[i].last - addr:
            return self.slots[i].host + (addr - self.slots[i].base)
        return NULL

    cdef uint64_t copy_out(self, uint64_t addr, uint8_t *dst, uint64_t length) noexcept nogil:
        """Copy guest bytes to ``dst`` until ``length`` or the first unmapped byte."""
        cdef uint64_t done = 0, chunk, room
        cdef int i
        while done < length:
            i = self.find(addr)
            if i < 0:
                break
            room = self.slots[i].last - addr          # bytes after addr in the slot
            chunk = length - done
            if chunk - 1 > room:
                chunk = room + 1
            memcpy(dst + done, self.slots[i].host + (addr - self.slots[i].base), chunk)
            done += chunk
            if self.slots[i].last == 0xFFFFFFFFFFFFFFFFULL:
                break
            addr = self.slots[i].last + 1
        return done

    # -- the dirty log --------------------------------------------------------------

    cdef void mark(self, uint64_t addr, uint64_t length) noexcept nogil:
        """Note the pages of ``[addr, addr+length)`` as written (no-op unless logging)."""
        cdef int i
        cdef uint64_t first, last, pg
        if not self.logging or length == 0:
            return
        while True:
            i = self.find(addr)
            if i < 0 or self.slots[i].dirty == NULL:
                return
            first = (addr - self.slots[i].base) >> 12
            if length - 1 <= self.slots[i].last - addr:
                last = (addr + length - 1 - self.slots[i].base) >> 12
            else:
                last = (self.slots[i].size - 1) >> 12
            pg = first
            while pg <= last:
                gm_or64(&self.slots[i].dirty[pg >> 6], (<uint64_t>1) << (pg & 63))
                pg += 1
            if length - 1 <= self.slots[i].last - addr or \
                    self.slots[i].last == 0xFFFFFFFFFFFFFFFFULL:
                return
            length -= self.slots[i].last - addr + 1
            addr = self.slots[i].last + 1

    cdef bint page_dirty(self, uint64_t addr) noexcept nogil:
        """True when the page of ``addr`` is marked in the log (False: not logging)."""
        cdef int i = self.find(addr)
        cdef uint64_t pg
        if i < 0 or self.slots[i].dirty == NULL:
            return False
        pg = (addr - self.slots[i].base) >> 12
        return (gm_ld64(&self.slots[i].dirty[pg >> 6]) >> (pg & 63)) & 1

    def _log_start(self):
        """Start the dirty log with every page clean."""
        cdef int i
        for i in range(self.nslots):
            if self.slots[i].dirty == NULL:
                self.slots[i].dirty = <uint64_t *>calloc(log_words(self.slots[i].size), 8)
                if self.slots[i].dirty == NULL:
                    raise MemoryError()
            else:
                memset(self.slots[i].dirty, 0, log_words(self.slots[i].size) * 8)
        self.logging = 1
        self.dirty_gen += 1

    def _log_stop(self):
        """Stop the dirty log (the bitmaps stay allocated: writers on other threads
        may still look at them)."""
        self.logging = 0
        self.dirty_gen += 1

    def _log_take(self, unsigned long long base):
        """The dirty bitmap of the slot at ``base`` (bit ``n`` of byte ``n // 8``: page
        ``n``), cleared as it is read; None when the slot was never logged."""
        cdef int i, w
        cdef uint64_t n, v
        cdef bytearray out
        cdef unsigned char *o
        for i in range(self.nslots):
            if self.slots[i].base == base:
                break
        else:
            raise KeyError(f"no RAM slot starts at {base:#x}")
        if self.slots[i].dirty == NULL:
            return None
        n = log_words(self.slots[i].size)
        out = bytearray(n * 8)
        o = out
        for w in range(<int>n):
            v = gm_xchg64(&self.slots[i].dirty[w])
            memcpy(o + 8 * w, &v, 8)      # little-endian host: bit n of byte n // 8
        self.dirty_gen += 1
        return bytes(out)

    def _log_mark(self, unsigned long long addr, unsigned long long length):
        """Mark ``[addr, addr+length)`` dirty (writers outside the compiled paths)."""
        self.mark(addr, length)

    cdef uint64_t copy_in(self, uint64_t addr, const uint8_t *src, uint64_t length,
                          bint force) noexcept nogil:
        """Copy ``src`` into guest memory until ``length``, an unmapped byte or a ROM
        (``force`` writes ROMs too: loaders use it)."""
        cdef uint64_t done = 0, chunk, room
        cdef int i
        while done < length:
            i = self.find(addr)
            if i < 0 or (self.slots[i].readonly and not force):
                break
            room = self.slots[i].last - addr
            chunk = length - done
            if chunk - 1 > room:
                chunk = room + 1
            memcpy(self.slots[i].host + (addr - self.slots[i].base), src + done, chunk)
            self.mark(addr, chunk)
            done += chunk
            if self.slots[i].last == 0xFFFFFFFFFFFFFFFFULL:
                break
            addr = self.slots[i].last + 1
        return done

    # -- Python face of the primitives ----------------------------------------------

    def _copy_out(self, unsigned long long addr, object dest):
        """Fill the writable buffer ``dest`` from ``addr``; returns bytes copied."""
        cdef unsigned char[::1] d = memoryview(dest).cast("B")
        if d.shape[0] == 0:
            return 0
        with nogil:
            n = self.copy_out(addr, &d[0], d.shape[0])
        return n

    def _copy_in(self, unsigned long long addr, const unsigned char[::1] src, bint force=False):
        """Copy ``src`` to ``addr``; returns bytes copied."""
        if src.shape[0] == 0:
            return 0
        with nogil:
            n = self.copy_in(addr, &src[0], src.shape[0], force)
        return n

    def _slot_at(self, unsigned long long addr):
        """``(base, size, readonly, view)`` of the slot holding ``addr``, or None."""
        cdef int i = self.find(addr)
        if i < 0:
            return None
        return (self.slots[i].base, self.slots[i].size, bool(self.slots[i].readonly),
                self._views[i])

    def _slots(self):
        """All slots as ``(base, size, readonly)``, in address order."""
        return [(self.slots[i].base, self.slots[i].size, bool(self.slots[i].readonly))
                for i in range(self.nslots)]

    def _is_mapped(self, unsigned long long addr, unsigned long long length):
        """True when every byte of ``[addr, addr+length)`` is RAM."""
        cdef uint64_t done = 0, room
        cdef int i
        if length == 0:
            return True
        if length - 1 > 0xFFFFFFFFFFFFFFFFULL - addr:
            return False
        while done < length:
            i = self.find(addr + done)
            if i < 0:
                return False
            room = self.slots[i].last - (addr + done) + 1
            if room == 0:          # the slot reaches 2**64 - 1
                return True
            done += room
        return True
