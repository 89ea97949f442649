# cython: language_level=3
"""Virtqueue rings in guest memory: walking descriptor chains, publishing used entries.

One :class:`VRing` is the device side of one virtqueue, split (virtio 1.2
section 2.7, including the legacy layout, which only differs in where the
parts are placed) or packed (section 2.8).  It reads the driver's rings
straight from guest RAM (a :class:`~vmforge._fast.guestmem.GuestRam`) and
hands out :class:`Chain` objects: the chain's segments ``(guest address,
length, device-writable)`` kept in C arrays, from which zero-copy memoryviews
of guest RAM are cut for ``os.preadv``/``os.pwritev``/``recv_into``.

Everything the guest wrote is hostile: a chain is walked with a time-to-live
equal to the table size (loops and chains longer than the queue), ``next`` must
stay in the table, indirect tables are one level deep and a non-zero multiple
of 16 bytes, every segment must lie in RAM (writable ones outside ROM) without
wrapping past 2**64, a chain holds at most ``max_segments`` segments and under
2**32 bytes, readable segments come before writable ones, no segment is empty,
``avail.idx`` may not run more than the queue size ahead, and no more than the
queue size of buffers (each head or buffer id once) can be in flight.  Each
violation is a :class:`RingError` naming what and which descriptor; nothing
outside RAM is ever read or written, and no walk is unbounded.

Memory ordering: indices and flags the driver publishes are read with acquire
loads; the device writes used elements first and publishes them with a
release store (``used.idx`` for split rings, the head's flags for packed
rings); a full fence separates publishing from reading the driver's event
index, as the notification-suppression protocol requires.  The host is
little-endian like every virtio 1.x ring (x86-64, RISC-V, AArch64).

No vmforge Python module is imported here; policy (what an error does to the
device) lives in :mod:`vmforge.virtio.queue`.
"""

from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.string cimport memcpy, memset
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t

from vmforge._fast.guestmem cimport GuestRam

cdef extern from *:
    """
    static inline uint16_t vr_load_acquire_u16(const uint8_t *p) {
        return __atomic_load_n((const uint16_t *)p, __ATOMIC_ACQUIRE);
    }
    static inline void vr_store_release_u16(uint8_t *p, uint16_t v) {
        __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELEASE);
    }
    static inline void vr_fence(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
    """
    uint16_t vr_load_acquire_u16(const uint8_t *p) noexcept nogil
    void vr_store_release_u16(uint8_t *p, uint16_t v) noexcept nogil
    void vr_fence() noexcept nogil

cdef enum:
    # descriptor flags (split and packed)
    F_NEXT = 1
    F_WRITE = 2
    F_INDIRECT = 4
    F_AVAIL = 0x80         # packed only
    F_USED = 0x8000        # packed only
    # split ring flags
    USED_F_NO_NOTIFY = 1
    AVAIL_F_NO_INTERRUPT = 1
    # packed event suppression flags
    EVENT_ENABLE = 0
    EVENT_DISABLE = 1
    EVENT_DESC = 2
    MAX_INDIRECT = 65536   # descriptors in one indirect table (len < 2**20)
    # -- error codes: RingError.code; the messages are below --------------------------------
    OK = 0
    EMPTY = 1
    E_AVAIL_IDX = 2
    E_INUSE = 3
    E_HEAD_RANGE = 4
    E_HEAD_BUSY = 5
    E_TOO_LONG = 6
    E_NEXT_RANGE = 7
    E_INDIRECT_FEATURE = 8
    E_INDIRECT_NESTED = 9
    E_INDIRECT_NEXT = 10
    E_INDIRECT_SIZE = 11
    E_INDIRECT_ADDR = 12
    E_ZERO_LEN = 13
    E_ORDER = 14
    E_ADDR_WRAP = 15
    E_ADDR = 16
    E_ROM = 17
    E_TOTAL_LEN = 18
    E_TOO_MANY = 19
    E_RING_UNMAPPED = 20
    E_ID_BUSY = 21


ERROR_TEXT = {
    E_AVAIL_IDX: "avail.idx moved more than the queue size",
    E_INUSE: "more buffers in flight than the queue size",
    E_HEAD_RANGE: "head index out of range",
    E_HEAD_BUSY: "head is already in flight",
    E_TOO_LONG: "descriptor chain longer than its table (a loop?)",
    E_NEXT_RANGE: "next index out of range",
    E_INDIRECT_FEATURE: "indirect descriptor without VIRTIO_F_INDIRECT_DESC",
    E_INDIRECT_NESTED: "indirect descriptor inside an indirect table",
    E_INDIRECT_NEXT: "indirect descriptor with the NEXT flag",
    E_INDIRECT_SIZE: "indirect table size is not a non-zero multiple of 16 (or too big)",
    E_INDIRECT_ADDR: "indirect table outside RAM",
    E_ZERO_LEN: "zero-length buffer",
    E_ORDER: "device-readable descriptor after a device-writable one",
    E_ADDR_WRAP: "buffer wraps past 2**64",
    E_ADDR: "buffer outside RAM",
    E_ROM: "device-writable buffer in read-only memory",
    E_TOTAL_LEN: "chain totals 2**32 bytes or more",
    E_TOO_MANY: "chain has more segments than the device accepts",
    E_RING_UNMAPPED: "ring no longer in RAM",
    E_ID_BUSY: "buffer id is already in flight",
}


class RingError(Exception):
    """The driver broke the ring protocol: ``code``, ``desc`` (descriptor index or
    -1), ``text``.  Raised by :meth:`VRing.pop`; the ring is left unchanged."""

    def __init__(self, code, desc=-1, detail=""):
        self.code = code
        self.desc = desc
        self.text = ERROR_TEXT.get(code, f"ring error {code}") + (f" ({detail})" if detail else "")
        super().__init__(self.text)


class ChainError(Exception):
    """A chain's memory is no longer RAM, or an offset/length is outside the chain."""


cdef packed struct Desc:
    uint64_t addr
    uint32_t len
    uint16_t a         # split: flags; packed: buffer id
    uint16_t b         # split: next;  packed: flags


cdef inline uint16_t rd16(const uint8_t *p) noexcept nogil:
    cdef uint16_t v
    memcpy(&v, p, 2)
    return v


cdef inline void wr16(uint8_t *p, uint16_t v) noexcept nogil:
    memcpy(p, &v, 2)


cdef inline void wr32(uint8_t *p, uint32_t v) noexcept nogil:
    memcpy(p, &v, 4)


cdef int check_range(GuestRam ram, uint64_t addr, uint64_t length,
                     bint writable) noexcept nogil:
    """OK when ``[addr, addr+length)`` (length > 0) is RAM (and not ROM if writable)."""
    cdef int i
    cdef uint64_t room
    if length - 1 > 0xFFFFFFFFFFFFFFFFULL - addr:
        return E_ADDR_WRAP
    while True:
        i = ram.find(addr)
        if i < 0:
            return E_ADDR
        if writable and ram.slots[i].readonly:
            return E_ROM
        room = ram.slots[i].last - addr          # bytes after addr in this slot
        if length - 1 <= room:
            return OK
        length -= room + 1
        addr = ram.slots[i].last + 1


cdef class Chain:
    """One popped buffer: its id, the ring slots it took, and its segments.

    ``head`` is what the used entry carries (the split head index or the packed
    buffer id); readable segments come first (``n_readable`` of them, totalling
    ``readable_len`` bytes), then writable ones (``writable_len`` bytes).
    """

    cdef GuestRam ram
    cdef uint64_t *addr
    cdef uint32_t *len
    cdef readonly int n
    cdef readonly int n_readable
    cdef readonly int head
    cdef readonly int slots
    cdef readonly int pos          # ring position of the first descriptor
    cdef readonly bint wrap        # packed: the driver wrap counter of that position
    cdef readonly unsigned long long readable_len
    cdef readonly unsigned long long writable_len
    cdef public object token       # the device's own use (request state)

    def __dealloc__(self):
        PyMem_Free(self.addr)
        PyMem_Free(self.len)

    def __len__(self):
        return self.n

    def __repr__(self):
        return (f"Chain(head={self.head}, segments={self.n}, readable={self.readable_len}, "
                f"writable={self.writable_len})")

    def segments(self):
        """``[(guest address, length, writable), ...]`` in chain order."""
        return [(self.addr[i], self.len[i], i >= self.n_readable) for i in range(self.n)]

    cdef list _views(self, bint writable, uint64_t offset, uint64_t length):
        cdef int first = self.n_readable if writable else 0
        cdef int last = self.n if writable else self.n_readable
        cdef uint64_t total = self.writable_len if writable else self.readable_len
        cdef uint64_t a, seglen, take, room, off, piece
        cdef int i, s
        cdef list out = []
        if offset > total or length > total - offset:
            raise ChainError(f"range [{offset}, {offset + length}) outside the chain's "
                             f"{'writable' if writable else 'readable'} {total} bytes")
        for s in range(first, last):
            if length == 0:
                break
            seglen = self.len[s]
            if offset >= seglen:
                offset -= seglen
                continue
            a = self.addr[s] + offset
            take = seglen - offset
            if take > length:
                take = length
            offset = 0
            length -= take
            while take:
                i = self.ram.find(a)
                if i < 0 or (writable and self.ram.slots[i].readonly):
                    raise ChainError(f"buffer at {a:#x} is no longer RAM")
                room = self.ram.slots[i].last - a          # bytes after a in the slot
                piece = take if take - 1 <= room else room + 1
                off = a - self.ram.slots[i].base
                mv = self.ram._views[i][off:off + piece]
                out.append(mv if writable else mv.toreadonly())
                take -= piece
                a += piece
        return out

    def readable_views(self, unsigned long long offset=0, length=None):
        """Read-only memoryviews of the readable bytes ``[offset, offset+length)``."""
        cdef uint64_t n = self.readable_len - offset if length is None else length
        return self._views(False, offset, n)

    def writable_views(self, unsigned long long offset=0, length=None):
        """Writable memoryviews of the writable bytes ``[offset, offset+length)``."""
        cdef uint64_t n = self.writable_len - offset if length is None else length
        return self._views(True, offset, n)

    def read(self, unsigned long long offset=0, length=None):
        """A copy of readable bytes ``[offset, offset+length)``."""
        return b"".join(self.readable_views(offset, length))

    def write(self, data, unsigned long long offset=0):
        """Copy ``data`` into the writable bytes from ``offset``; returns bytes written
        (all of ``data``, or ChainError when it does not fit)."""
        src = memoryview(data).cast("B")
        cdef Py_ssize_t pos = 0, k
        for mv in self._views(True, offset, len(src)):
            k = len(mv)
            mv[:] = src[pos:pos + k]
            pos += k
        return pos


cdef class VRing:
    """The device side of one virtqueue in guest RAM.

    ``desc``/``driver``/``device`` are the three areas' guest addresses as the
    transport gives them (split: descriptor table, available ring, used ring;
    packed: descriptor ring, driver and device event suppression).  The
    constructor checks size, alignment and that every area is RAM (ValueError
    naming what is wrong); the used areas must be writable.
    """

    cdef GuestRam ram
    cdef readonly int size
    cdef readonly bint packed
    cdef readonly bint event_idx
    cdef readonly bint indirect
    cdef readonly int max_segments
    cdef readonly unsigned long long desc_addr
    cdef readonly unsigned long long driver_addr
    cdef readonly unsigned long long device_addr
    cdef uint8_t *desc_p
    cdef uint8_t *drv_p
    cdef uint8_t *dev_p
    cdef unsigned long long ram_gen
    # ring indices
    cdef public uint16_t last_avail      # split: free-running; packed: ring position
    cdef public uint16_t used_idx        # split: free-running shadow; packed: position
    cdef public uint16_t published       # split: what used.idx holds
    cdef public uint16_t signalled_used
    cdef public bint signalled_valid
    cdef public bint avail_wrap
    cdef public bint used_wrap
    cdef public bint notify_enabled     # device wants the driver's kicks
    cdef readonly int inflight
    cdef uint8_t *busy                   # split: per head; packed: bitmap of buffer ids
    # scratch for a walk
    cdef uint64_t *s_addr
    cdef uint32_t *s_len
    cdef uint8_t *s_wr
    cdef int err_desc

    def __cinit__(self):
        self.busy = self.s_wr = NULL
        self.s_addr = NULL
        self.s_len = NULL

    def __init__(self, GuestRam ram, int size, unsigned long long desc,
                 unsigned long long driver, unsigned long long device, *, bint packed=False,
                 bint event_idx=False, bint indirect=False, int max_segments=1024):
        self.ram = ram
        if packed:
            if not 1 <= size <= 32768:
                raise ValueError(f"packed queue size {size} is not in 1..32768")
        elif not (1 <= size <= 32768 and (size & (size - 1)) == 0):
            raise ValueError(f"split queue size {size} is not a power of 2 in 1..32768")
        self.size = size
        self.packed = packed
        self.event_idx = event_idx
        self.indirect = indirect
        self.max_segments = max(max_segments, 1)
        self.desc_addr, self.driver_addr, self.device_addr = desc, driver, device
        if packed:
            if desc & 15 or driver & 3 or device & 3:
                raise ValueError("packed ring misaligned (descriptors 16, event areas 4)")
        elif desc & 15 or driver & 1 or device & 3:
            raise ValueError("split ring misaligned (descriptors 16, avail 2, used 4)")
        if not self._resolve():
            raise ValueError("ring not in RAM (or its device-written part is read-only, "
                             "or a part spans two RAM regions)")
        nbusy = (65536 // 8) if packed else size
        self.busy = <uint8_t *>PyMem_Malloc(nbusy)
        self.s_addr = <uint64_t *>PyMem_Malloc(self.max_segments * sizeof(uint64_t))
        self.s_len = <uint32_t *>PyMem_Malloc(self.max_segments * sizeof(uint32_t))
        self.s_wr = <uint8_t *>PyMem_Malloc(self.max_segments)
        if self.busy == NULL or self.s_addr == NULL or self.s_len == NULL or self.s_wr == NULL:
            raise MemoryError()
        memset(self.busy, 0, nbusy)
        self.reset_indices()

    def __dealloc__(self):
        PyMem_Free(self.busy)
        PyMem_Free(self.s_addr)
        PyMem_Free(self.s_len)
        PyMem_Free(self.s_wr)

    def reset_indices(self):
        """Back to a freshly enabled queue (indices 0, wrap counters 1, none in flight)."""
        self.last_avail = self.used_idx = self.published = 0
        self.signalled_used = 0
        self.signalled_valid = False
        self.avail_wrap = self.used_wrap = True
        self.notify_enabled = True
        self.inflight = 0
        memset(self.busy, 0, (65536 // 8) if self.packed else self.size)

    cdef bint _resolve(self) noexcept nogil:
        """Host pointers of the three areas; False when one is not (writable) RAM."""
        cdef uint64_t n = self.size
        if self.packed:
            self.desc_p = self.ram.wptr(self.desc_addr, 16 * n)
            self.drv_p = self.ram.ptr(self.driver_addr, 4)
            self.dev_p = self.ram.wptr(self.device_addr, 4)
        else:
            self.desc_p = self.ram.ptr(self.desc_addr, 16 * n)
            self.drv_p = self.ram.ptr(self.driver_addr, 6 + 2 * n)
            self.dev_p = self.ram.wptr(self.device_addr, 6 + 8 * n)
        self.ram_gen = self.ram.generation
        if self.desc_p == NULL or self.drv_p == NULL or self.dev_p == NULL:
            return False
        # atomics need naturally aligned host addresses too
        return ((<uintptr_t>self.drv_p) & 1) == 0 and ((<uintptr_t>self.dev_p) & 3) == 0 \
            and ((<uintptr_t>self.desc_p) & 1) == 0

    cdef inline bint _live(self) noexcept nogil:
        if self.ram.generation != self.ram_gen:
            return self._resolve()
        return self.desc_p != NULL

    # -- busy map -----------------------------------------------------------------------

    cdef inline bint _is_busy(self, int id) noexcept nogil:
        if self.packed:
            return (self.busy[id >> 3] >> (id & 7)) & 1
        return self.busy[id]

    cdef inline void _set_busy(self, int id, bint on) noexcept nogil:
        if not self.packed:
            self.busy[id] = on
        elif on:
            self.busy[id >> 3] |= <uint8_t>(1 << (id & 7))
        else:
            self.busy[id >> 3] &= <uint8_t>~(1 << (id & 7))

    # -- walking ------------------------------------------------------------------------

    cdef int _add_seg(self, int *nseg, uint64_t *total, bint *seen_write,
                      uint64_t addr, uint32_t length, bint writable) noexcept nogil:
        cdef int rc
        if length == 0:
            return E_ZERO_LEN
        if not writable and seen_write[0]:
            return E_ORDER
        if writable:
            seen_write[0] = True
        rc = check_range(self.ram, addr, length, writable)
        if rc != OK:
            return rc
        total[0] += length
        if total[0] > 0xFFFFFFFFULL:
            return E_TOTAL_LEN
        if nseg[0] >= self.max_segments:
            return E_TOO_MANY
        self.s_addr[nseg[0]] = addr
        self.s_len[nseg[0]] = length
        self.s_wr[nseg[0]] = writable
        nseg[0] += 1
        return OK

    cdef int _walk_indirect(self, Desc *d, int *nseg, uint64_t *total,
                            bint *seen_write) noexcept nogil:
        """Segments of the indirect table ``d`` points at (its flags already checked)."""
        cdef uint32_t count, i, ttl
        cdef const uint8_t *table
        cdef Desc e
        cdef int rc
        cdef uint16_t flags
        if d.len == 0 or d.len & 15 or d.len // 16 > MAX_INDIRECT:
            return E_INDIRECT_SIZE
        rc = check_range(self.ram, d.addr, d.len, False)
        if rc == E_ADDR_WRAP:
            return rc
        table = self.ram.ptr(d.addr, d.len)
        if rc != OK or table == NULL:      # also: a table split across two RAM regions
            return E_INDIRECT_ADDR
        count = d.len // 16
        i = 0
        ttl = count
        while True:
            if ttl == 0:
                return E_TOO_LONG
            ttl -= 1
            memcpy(&e, table + 16 * i, 16)
            self.err_desc = i
            flags = e.b if self.packed else e.a
            if flags & F_INDIRECT:
                return E_INDIRECT_NESTED
            rc = self._add_seg(nseg, total, seen_write, e.addr, e.len, flags & F_WRITE)
            if rc != OK:
                return rc
            if self.packed:
                # packed tables are read in order, all of them; only WRITE counts
                i += 1
                if i == count:
                    return OK
                continue
            if not (flags & F_NEXT):
                return OK
            if e.b >= count:
                return E_NEXT_RANGE
            i = e.b

    cdef int _walk_split(self, uint16_t head, int *nseg, uint64_t *total) noexcept nogil:
        cdef uint32_t i = head
        cdef int ttl = self.size, rc
        cdef bint seen_write = False
        cdef Desc d
        nseg[0] = 0
        total[0] = 0
        while True:
            if ttl == 0:
                return E_TOO_LONG
            ttl -= 1
            memcpy(&d, self.desc_p + 16 * i, 16)
            self.err_desc = i
            if d.a & F_INDIRECT:
                if not self.indirect:
                    return E_INDIRECT_FEATURE
                if d.a & F_NEXT:
                    return E_INDIRECT_NEXT
                return self._walk_indirect(&d, nseg, total, &seen_write)
            rc = self._add_seg(nseg, total, &seen_write, d.addr, d.len, d.a & F_WRITE)
            if rc != OK:
                return rc
            if not (d.a & F_NEXT):
                return OK
            if d.b >= self.size:
                return E_NEXT_RANGE
            i = d.b

    cdef int _walk_packed(self, uint16_t pos, int *nseg, uint64_t *total,
                          int *slots, int *bufid) noexcept nogil:
        cdef uint32_t i = pos
        cdef int count = 0, rc
        cdef bint seen_write = False
        cdef Desc d
        nseg[0] = 0
        total[0] = 0
        while True:
            if count == self.size:
                return E_TOO_LONG
            memcpy(&d, self.desc_p + 16 * i, 16)
            self.err_desc = i
            count += 1
            slots[0] = count
            bufid[0] = d.a
            if d.b & F_INDIRECT:
                if not self.indirect:
                    return E_INDIRECT_FEATURE
                if d.b & F_NEXT:
                    return E_INDIRECT_NEXT
                return self._walk_indirect(&d, nseg, total, &seen_write)
            rc = self._add_seg(nseg, total, &seen_write, d.addr, d.len, d.b & F_WRITE)
            if rc != OK:
                return rc
            if not (d.b & F_NEXT):
                return OK
            i += 1
            if i == <uint32_t>self.size:
                i = 0

    cdef int _pop(self, int *head, int *slots, int *nseg, uint64_t *total) noexcept nogil:
        """Walk the next available chain into the scratch arrays and consume it."""
        cdef uint16_t avail_idx, n, flags
        cdef int rc, bufid
        cdef bint avail_bit, used_bit
        self.err_desc = -1
        if not self._live():
            return E_RING_UNMAPPED
        if self.packed:
            flags = vr_load_acquire_u16(self.desc_p + 16 * self.last_avail + 14)
            avail_bit = (flags & F_AVAIL) != 0
            used_bit = (flags & F_USED) != 0
            if avail_bit != self.avail_wrap or used_bit == self.avail_wrap:
                return EMPTY
            if self.inflight >= self.size:
                return E_INUSE
            rc = self._walk_packed(self.last_avail, nseg, total, slots, &bufid)
            if rc != OK:
                return rc
            if self._is_busy(bufid):
                return E_ID_BUSY
            head[0] = bufid
            self.last_avail += slots[0]
            if self.last_avail >= self.size:
                self.last_avail -= self.size
                self.avail_wrap = not self.avail_wrap
            self._set_busy(bufid, True)
            self.inflight += 1
            if self.event_idx and self.notify_enabled:
                wr16(self.dev_p, self.last_avail | (<uint16_t>self.avail_wrap << 15))
                self.ram.mark(self.device_addr, 2)
            return OK
        avail_idx = vr_load_acquire_u16(self.drv_p + 2)
        n = avail_idx - self.last_avail
        if n == 0:
            return EMPTY
        if n > self.size:
            return E_AVAIL_IDX
        if self.inflight >= self.size:
            return E_INUSE
        head[0] = rd16(self.drv_p + 4 + 2 * (self.last_avail % self.size))
        if head[0] >= self.size:
            self.err_desc = head[0]
            return E_HEAD_RANGE
        if self.busy[head[0]]:
            self.err_desc = head[0]
            return E_HEAD_BUSY
        rc = self._walk_split(head[0], nseg, total)
        if rc != OK:
            return rc
        slots[0] = 1
        self.last_avail += 1
        self.busy[head[0]] = 1
        self.inflight += 1
        if self.event_idx and self.notify_enabled:
            wr16(self.dev_p + 4 + 8 * self.size, self.last_avail)     # avail_event
            self.ram.mark(self.device_addr + 4 + 8 * self.size, 2)
        return OK

    cdef Chain _chain(self, int head, int slots, int nseg, uint64_t total, int pos,
                      bint wrap):
        cdef Chain c = Chain.__new__(Chain)
        cdef int i
        c.ram = self.ram
        c.addr = <uint64_t *>PyMem_Malloc(max(nseg, 1) * sizeof(uint64_t))
        c.len = <uint32_t *>PyMem_Malloc(max(nseg, 1) * sizeof(uint32_t))
        if c.addr == NULL or c.len == NULL:
            raise MemoryError()
        memcpy(c.addr, self.s_addr, nseg * sizeof(uint64_t))
        memcpy(c.len, self.s_len, nseg * sizeof(uint32_t))
        c.n = nseg
        c.n_readable = nseg
        c.readable_len = total
        c.writable_len = 0
        for i in range(nseg):
            if self.s_wr[i]:
                if c.n_readable == nseg:
                    c.n_readable = i
                c.writable_len += self.s_len[i]
        c.readable_len = total - c.writable_len
        c.head = head
        c.slots = slots
        c.pos = pos
        c.wrap = wrap
        c.token = None
        return c

    def pop(self):
        """The next available chain as a :class:`Chain`, None when there is none;
        :class:`RingError` when the driver broke the protocol (nothing consumed)."""
        cdef int head = 0, slots = 0, nseg = 0, rc, pos = self.last_avail
        cdef bint wrap = self.avail_wrap
        cdef uint64_t total = 0
        rc = self._pop(&head, &slots, &nseg, &total)
        if rc == EMPTY:
            return None
        if rc != OK:
            raise RingError(rc, self.err_desc,
                            f"avail.idx {self._avail_idx()}, last seen {self.last_avail}"
                            if rc == E_AVAIL_IDX else "")
        return self._chain(head, slots, nseg, total, pos, wrap)

    def pop_count(self):
        """Pop a chain and return ``(head, slots, segments, total bytes)`` without
        building a Chain (for benchmarks and bulk consumers), or None."""
        cdef int head = 0, slots = 0, nseg = 0, rc
        cdef uint64_t total = 0
        rc = self._pop(&head, &slots, &nseg, &total)
        if rc == EMPTY:
            return None
        if rc != OK:
            raise RingError(rc, self.err_desc)
        return (head, slots, nseg, total)

    def rewalk(self, int head, int pos, bint wrap):
        """Walk an in-flight chain again (after a state load) without consuming
        anything: ``head`` for split rings, ``pos``/``wrap`` for packed ones."""
        cdef int slots = 1, nseg = 0, rc, bufid = 0
        cdef uint64_t total = 0
        self.err_desc = -1
        if not self._live():
            raise RingError(E_RING_UNMAPPED)
        if self.packed:
            if not 0 <= pos < self.size:
                raise RingError(E_HEAD_RANGE, pos)
            rc = self._walk_packed(pos, &nseg, &total, &slots, &bufid)
            if rc == OK and bufid != head:
                raise RingError(E_HEAD_RANGE, pos, f"buffer id {bufid}, expected {head}")
        else:
            if not 0 <= head < self.size:
                raise RingError(E_HEAD_RANGE, head)
            rc = self._walk_split(head, &nseg, &total)
        if rc != OK:
            raise RingError(rc, self.err_desc)
        return self._chain(head, slots, nseg, total, pos, wrap)

    def mark_inflight(self, int head):
        """Count ``head`` (a split head or packed buffer id) as in flight (state load)."""
        if not 0 <= head < (65536 if self.packed else self.size) or self._is_busy(head):
            raise ValueError(f"buffer {head} cannot be in flight")
        if self.inflight >= self.size:
            raise ValueError("more buffers in flight than the queue size")
        self._set_busy(head, True)
        self.inflight += 1

    def _avail_idx(self):
        if self.packed or not self._live():
            return -1
        return rd16(self.drv_p + 2)

    def has_available(self):
        """True when the driver has made a buffer available (a cheap peek)."""
        cdef uint16_t flags
        if not self._live():
            return False
        if self.packed:
            flags = vr_load_acquire_u16(self.desc_p + 16 * self.last_avail + 14)
            return ((flags & F_AVAIL) != 0) == self.avail_wrap and \
                ((flags & F_USED) != 0) != self.avail_wrap
        return vr_load_acquire_u16(self.drv_p + 2) != self.last_avail

    # -- used side ---------------------------------------------------------------------

    cdef int _push(self, int head, int slots, uint32_t written) noexcept nogil:
        cdef uint8_t *p
        cdef uint16_t flags
        if head < 0 or head >= (65536 if self.packed else self.size) \
                or not self._is_busy(head):
            return E_HEAD_RANGE
        if not self._live():
            return E_RING_UNMAPPED
        self._set_busy(head, False)
        self.inflight -= 1
        if self.packed:
            p = self.desc_p + 16 * self.used_idx
            self.ram.mark(self.desc_addr + 16 * self.used_idx, 16)
            wr32(p + 8, written)
            wr16(p + 12, <uint16_t>head)
            flags = F_AVAIL | F_USED if self.used_wrap else 0
            if written:
                flags |= F_WRITE
            vr_store_release_u16(p + 14, flags)      # the element, then its flags
            self.used_idx += slots
            if self.used_idx >= self.size:
                self.used_idx -= self.size
                self.used_wrap = not self.used_wrap
            return OK
        p = self.dev_p + 4 + 8 * (self.used_idx % self.size)
        wr32(p, <uint32_t>head)
        wr32(p + 4, written)
        self.ram.mark(self.device_addr + 4 + 8 * (self.used_idx % self.size), 8)
        self.used_idx += 1
        return OK

    def push(self, Chain chain, unsigned int written):
        """Return ``chain`` to the driver with ``written`` bytes written.  Split rings
        publish at :meth:`flush`; packed entries are visible at once.  The pages of
        its writable part go into RAM's dirty log (when on)."""
        cdef int i
        rc = self._push(chain.head, chain.slots, written)
        if rc != OK:
            raise RingError(rc, chain.head, "not in flight")
        if self.ram.logging:
            for i in range(chain.n_readable, chain.n):
                self.ram.mark(chain.addr[i], chain.len[i])

    def push_id(self, int head, int slots, unsigned int written):
        """:meth:`push` by id and slot count (what :meth:`pop_count` returned)."""
        rc = self._push(head, slots, written)
        if rc != OK:
            raise RingError(rc, head, "not in flight")

    cdef void _flush(self) noexcept nogil:
        if not self.packed and self.published != self.used_idx and self._live():
            vr_store_release_u16(self.dev_p + 2, self.used_idx)   # elements, then idx
            self.published = self.used_idx
            self.ram.mark(self.device_addr, 4)

    def flush(self):
        """Publish the used entries pushed so far (split: one release store of idx)."""
        self._flush()

    cdef bint _need_event(self, uint16_t event, uint16_t new, uint16_t old) noexcept nogil:
        return <uint16_t>(new - event - 1) < <uint16_t>(new - old)

    def should_notify(self):
        """Flush, then decide whether the driver wants a used-buffer notification
        for what was published since the last one that was sent (EVENT_IDX,
        NO_INTERRUPT, packed event suppression).  Call once per batch."""
        cdef uint16_t old, new, avail_flags, off_wrap, eflags
        cdef int off
        cdef bint valid
        self._flush()
        if not self._live():
            return False
        vr_fence()      # used entries visible before the driver's event is read
        valid = self.signalled_valid
        old = self.signalled_used
        new = self.used_idx
        if self.packed:
            eflags = rd16(self.drv_p + 2) & 3
            off_wrap = rd16(self.drv_p)
            self.signalled_valid = True
            self.signalled_used = new
            if eflags == EVENT_DISABLE:
                return False
            if eflags != EVENT_DESC or not self.event_idx:
                return True
            if not valid:
                return True
            off = off_wrap & 0x7FFF
            if (off_wrap >> 15) != self.used_wrap:
                off -= self.size        # the event is in the previous lap of the ring
            return self._need_event(<uint16_t>off, new, old)
        if not self.event_idx:
            avail_flags = rd16(self.drv_p)
            return not (avail_flags & AVAIL_F_NO_INTERRUPT)
        self.signalled_valid = True
        self.signalled_used = new
        if not valid:
            return True
        return self._need_event(rd16(self.drv_p + 4 + 2 * self.size), new, old)

    def set_notification(self, bint enable):
        """Ask the driver for kicks (True) or not (False) (used.flags NO_NOTIFY or the
        packed device event area; with EVENT_IDX the avail event index)."""
        self.notify_enabled = enable
        if not self._live():
            return
        if self.packed:
            if not enable:
                wr16(self.dev_p + 2, EVENT_DISABLE)
            elif self.event_idx:
                wr16(self.dev_p, self.last_avail | (<uint16_t>self.avail_wrap << 15))
                wr16(self.dev_p + 2, EVENT_DESC)
            else:
                wr16(self.dev_p + 2, EVENT_ENABLE)
        elif self.event_idx:
            if enable:
                wr16(self.dev_p + 4 + 8 * self.size, self.last_avail)
        else:
            wr16(self.dev_p, 0 if enable else USED_F_NO_NOTIFY)
        self.ram.mark(self.device_addr, 4 if self.packed else 6 + 8 * self.size)
        vr_fence()      # the driver must see it before we look at the ring again
