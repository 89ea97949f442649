# MMU, TLBs and the memory slow paths (included by riscv.pyx).
#
# Translation: bare, Sv39 and Sv48 with A/D bits set by the hardware walk.  Three
# direct-mapped 256-entry TLBs (read, write, fetch) cache 4 KiB translations, one
# set of the three per translation context (riscv_tlb.pxi: per privilege, and per
# address space for U).  A TLB entry's tag carries
# flags that force the slow path: TLB_IO (device memory, no host pointer),
# TLB_CODE (a write entry for a page with decoded instructions, which stores
# must patch) and TLB_NOTDIRTY (while RAM's dirty log is on: a write entry for
# a page not yet marked; the slow path marks it and drops the flag, QEMU's
# TLB_NOTDIRTY).  Other writes to RAM (A/D bits, AMOs, SC) mark the log directly.
#
# Decoded code: riscv_code.pxi.
#
# Misaligned loads and stores are emulated (split into bytes when they cross a
# page; in RAM they are simply performed); device regions see the access as the
# guest made it and may refuse it (access fault).  LR/SC and AMOs must be
# naturally aligned (address-misaligned exception otherwise), as in QEMU.

from libc.string cimport memcmp, memcpy, memset
from libc.stdlib cimport calloc, free, malloc

cdef enum:
    ACC_R = 0
    ACC_W = 1
    ACC_X = 2
    EV_EXC = 1          # slow path: exception (exc_cause/exc_tval set)
    EV_STOP = 2         # slow path: stop the run (stop_reason set)
    EV_JUMP = 3
    EV_CHECK = 4
    EV_PAGE = 5

cdef enum:
    NCODE = 1024        # decoded-code pages per hart: 256 sets of 4 ways
    CODE_WAYS = 4
    CODE_SETS = NCODE // CODE_WAYS

cdef extern from *:
    """
    #define rv_ctz64(x) __builtin_ctzll(x)
    #define rv_clz64(x) __builtin_clzll(x)
    """
    int rv_ctz64(uint64_t x) noexcept nogil
    int rv_clz64(uint64_t x) noexcept nogil

cdef extern from *:
    """
    #define RV_TLB_EMPTY 0xFFFFFFFFFFFFFFFFULL
    #define RV_TLB_IO    0x10ULL
    #define RV_TLB_CODE  0x20ULL
    #define RV_TLB_WATCH 0x40ULL
    #define RV_TLB_NOTDIRTY 0x80ULL
    #define RV_TLB_FLAGS 0xF0ULL
    #define RV_NOPAGE    0xFFFFFFFFFFFFFFFFULL
    #define RV_PAGE_MASK (~0xFFFULL)
    #define RV_PPN_MASK  0xFFFFFFFFFFFULL
    static inline uint64_t rv_ld64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
    static inline uint32_t rv_ld32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
    static inline uint16_t rv_ld16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
    static inline void rv_st64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
    static inline void rv_st32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
    static inline void rv_st16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
    #define RV_HOST(addend, va) ((uint8_t *)(uintptr_t)((addend) + (va)))
    """
    uint64_t RV_TLB_EMPTY, RV_TLB_IO, RV_TLB_CODE, RV_TLB_WATCH, RV_TLB_NOTDIRTY, RV_TLB_FLAGS
    uint64_t RV_NOPAGE
    uint64_t RV_PAGE_MASK
    uint64_t RV_PPN_MASK
    uint64_t rv_ld64(const uint8_t *p) noexcept nogil
    uint32_t rv_ld32(const uint8_t *p) noexcept nogil
    uint16_t rv_ld16(const uint8_t *p) noexcept nogil
    void rv_st64(uint8_t *p, uint64_t v) noexcept nogil
    void rv_st32(uint8_t *p, uint32_t v) noexcept nogil
    void rv_st16(uint8_t *p, uint16_t v) noexcept nogil
    uint8_t *RV_HOST(uint64_t addend, uint64_t va) noexcept nogil

cdef inline int fault_cause(int acc, int page) noexcept nogil:
    if acc == ACC_X:
        return 12 if page else 1
    if acc == ACC_R:
        return 13 if page else 5
    return 15 if page else 7


cdef inline void resv_clear(ResvTable *t, uint8_t *host, int size) noexcept nogil:
    cdef uintptr_t lo = (<uintptr_t>host) & ~(<uintptr_t>7)
    cdef uintptr_t hi = (<uintptr_t>host + size - 1) & ~(<uintptr_t>7)
    cdef int i
    for i in range(t.nharts):
        if t.addr[i] != NULL and lo <= <uintptr_t>t.addr[i] <= hi:
            t.addr[i] = NULL
            t.nactive -= 1


cdef int translate(Hart h, uint64_t va, int acc, uint64_t *pa) noexcept nogil:
    """Virtual to physical for an access of kind ``acc``; 0 or the exception cause."""
    cdef int priv = h.priv
    cdef uint64_t mode = h.satp >> 60
    cdef int levels, lvl, vabits
    cdef uint64_t base, pte, pte_addr, need, ppn, mask, g = 0
    cdef uint8_t *p
    if acc != ACC_X and priv == PRV_M and (h.mstatus & MSTATUS_MPRV):
        priv = (h.mstatus >> 11) & 3
    h.leaf_mask = 0xfff
    h.leaf_g = 0
    if priv == PRV_M or mode == 0:
        pa[0] = va
        return 0
    levels = 3 if mode == 8 else 4
    vabits = 12 + 9 * levels
    if (<int64_t>(va << (64 - vabits)) >> (64 - vabits)) != <int64_t>va:
        return fault_cause(acc, 1)
    base = (h.satp & RV_PPN_MASK) << 12
    lvl = levels - 1
    while lvl >= 0:
        pte_addr = base + ((va >> (12 + 9 * lvl)) & 511) * 8
        p = h.ram.ptr(pte_addr, 8)
        if p == NULL:
            return fault_cause(acc, 0)
        pte = rv_ld64(p)
        if not (pte & PTE_V) or ((pte & (PTE_R | PTE_W)) == PTE_W):
            return fault_cause(acc, 1)
        g |= pte & PTE_G
        if pte & (PTE_R | PTE_X):
            if pte >> 54:
                return fault_cause(acc, 1)
            if priv == PRV_U:
                if not (pte & PTE_U):
                    return fault_cause(acc, 1)
            elif pte & PTE_U:
                if acc == ACC_X or not (h.mstatus & MSTATUS_SUM):
                    return fault_cause(acc, 1)
            if acc == ACC_X:
                if not (pte & PTE_X):
                    return fault_cause(acc, 1)
            elif acc == ACC_R:
                if not (pte & PTE_R) and not ((h.mstatus & MSTATUS_MXR) and (pte & PTE_X)):
                    return fault_cause(acc, 1)
            elif not (pte & PTE_W):
                return fault_cause(acc, 1)
            ppn = (pte >> 10) & RV_PPN_MASK
            mask = (<uint64_t>1 << (9 * lvl)) - 1
            if ppn & mask:
                return fault_cause(acc, 1)          # misaligned superpage
            need = PTE_A | (PTE_D if acc == ACC_W else 0)
            if (pte & need) != need:
                p = h.ram.wptr(pte_addr, 8)
                if p == NULL:
                    return fault_cause(acc, 0)
                if not pte_update(p, pte, pte | need):
                    continue                        # another hart changed it: again
                h.ram.mark(pte_addr, 8)
            h.leaf_mask = (mask << 12) | 0xfff
            h.leaf_g = g != 0
            pa[0] = (ppn << 12) | (va & h.leaf_mask)
            return 0
        if pte & (PTE_A | PTE_D | PTE_U) or pte >> 54:
            return fault_cause(acc, 1)              # reserved bits of a non-leaf PTE
        base = ((pte >> 10) & RV_PPN_MASK) << 12
        lvl -= 1
    return fault_cause(acc, 1)


cdef int tlb_fill(Hart h, uint64_t va, int acc, TlbEntry *e) noexcept nogil:
    """Translate ``va`` and cache its page in ``e``; 0 or the exception cause."""
    cdef uint64_t pa = 0, ppage, vpage = va & RV_PAGE_MASK
    cdef int r = translate(h, va, acc, &pa)
    cdef uint8_t *host
    cdef CodePage *cp
    tlb_log(h, e)
    h.tlb_fills += 1
    if h.hooks_on & HOOK_MMU:
        call_mmu_hook(h, va, acc, r, pa)
    if r:
        return r
    if not h.leaf_g:
        tlb_filled_s(h, e)
    if h.leaf_mask != 0xfff:                # (tlb_flush_page)
        if (va & ~h.leaf_mask) < h.big_lo:
            h.big_lo = va & ~h.leaf_mask
        if (va | h.leaf_mask) > h.big_hi:
            h.big_hi = va | h.leaf_mask
    ppage = pa & RV_PAGE_MASK
    if acc == ACC_W:
        h.wrows |= (<uint64_t>1) << ((e - &h.wtlb[0][0]) >> 8)
    host = h.ram.wptr(ppage, 4096) if acc == ACC_W else h.ram.ptr(ppage, 4096)
    e.ppage = ppage
    if host == NULL:
        e.tag = vpage | RV_TLB_IO
        e.addend = 0
        if h.nw and watch_page(h, vpage, acc):
            e.tag |= RV_TLB_WATCH
        return 0
    e.tag = vpage
    e.addend = <uint64_t>(<uintptr_t>host) - vpage
    if acc == ACC_W:
        cp = code_lookup(h, ppage)
        if cp != NULL:
            e.tag |= RV_TLB_CODE
            e.pad = <uint64_t><uintptr_t>cp.xmap
        if h.ram.logging and not h.ram.page_dirty(ppage):
            e.tag |= RV_TLB_NOTDIRTY
    if h.nw and watch_page(h, vpage, acc):
        e.tag |= RV_TLB_WATCH
    return 0


cdef void dirty_rearm(Hart h) noexcept nogil:
    """The dirty log started, stopped or was taken: write entries of pages not
    marked get TLB_NOTDIRTY while it is on, none keeps it once it is off."""
    cdef int i, c
    cdef TlbEntry *e
    cdef bint on = h.ram.logging
    h.dirty_gen = h.ram.dirty_gen
    for c in range(NDATA):
        if not (h.wrows >> c) & 1:
            continue
        for i in range(512):
            e = write_way(h, c, i)
            if e.tag == RV_TLB_EMPTY or e.tag & RV_TLB_IO:
                continue
            if on and not h.ram.page_dirty(e.ppage):
                e.tag |= RV_TLB_NOTDIRTY
            else:
                e.tag &= ~RV_TLB_NOTDIRTY


cdef int map_check(Hart h) noexcept nogil:
    # the RAM map changed under us (a device remapped memory): drop host pointers
    if h.ram.generation != h.ram_gen:
        h.ram_gen = h.ram.generation
        tlb_flush(h)
        code_flush(h)
        h.lim = 0
    if h.ram.dirty_gen != h.dirty_gen:
        dirty_rearm(h)
    return 0


cdef int phys_read(Hart h, uint64_t pa, int size, uint64_t *v, int acc, uint64_t va) noexcept nogil:
    cdef uint8_t *p = h.ram.ptr(pa, size)
    cdef int r = 0
    v[0] = 0
    if p != NULL:
        memcpy(v, p, size)
        return 0
    with gil:
        try:
            if h.io_lock is None:
                r = h.space.read_c(pa, size, v)
            else:
                with h.io_lock:         # harts on threads: the machine's big lock
                    r = h.space.read_c(pa, size, v)
        except BaseException as ex:
            h.pyexc = ex
            r = -1
    map_check(h)
    if r < 0:
        h.stop_reason = STOP_PYEXC
        return EV_STOP
    if r == 1 or r == 2:
        if h.hooks_on & HOOK_UNMAPPED:
            r = call_unmapped_hook(h, pa, size, 0, v)
            if r < 0:
                return EV_STOP
            if r:
                return 0
        h.exc_cause = fault_cause(acc, 0)
        h.exc_tval = va
        return EV_EXC
    return 0


cdef int phys_write(Hart h, uint64_t pa, int size, uint64_t v, uint64_t va) noexcept nogil:
    cdef uint8_t *p = h.ram.wptr(pa, size)
    cdef int r = 0
    if p != NULL:
        memcpy(p, &v, size)
        h.ram.mark(pa, size)
        code_invalidate(h, pa, size)
        if h.rs.nactive:
            resv_clear(h.rs, p, size)
        return 0
    with gil:
        try:
            if h.io_lock is None:
                r = h.space.write_c(pa, size, v)
            else:
                with h.io_lock:
                    r = h.space.write_c(pa, size, v)
        except BaseException as ex:
            h.pyexc = ex
            r = -1
    map_check(h)
    if r < 0:
        h.stop_reason = STOP_PYEXC
        return EV_STOP
    if r == 1 or r == 2:
        if h.hooks_on & HOOK_UNMAPPED:
            r = call_unmapped_hook(h, pa, size, 1, &v)
            if r < 0:
                return EV_STOP
            if r:
                return 0
        h.exc_cause = 7
        h.exc_tval = va
        return EV_EXC
    return 0


cdef inline bint victim_swap(Hart h, TlbEntry *e, uint64_t vpage, bint read) noexcept nogil:
    """A TLB miss on ``e`` (of rtlb, or wtlb when not ``read``): 1 when its second way
    (rvict or wvict, the same place in its row) or, for a read, the context's row of
    rfar holds ``vpage``, swapped into ``e``; else 0 with ``e``'s entry pushed into
    the second way (and, for a read, the second way's into rfar) before the refill
    overwrites ``e``.  All are forgotten with the TLBs (tlb_log; tlb_flush clears
    rfar; tlb_flush_page)."""
    cdef TlbEntry *w = e + NDATA * 256       # (&h.rvict[c][i] for &h.rtlb[c][i], and w)
    cdef TlbEntry *far = NULL
    cdef TlbEntry t
    cdef int i, row = 0
    if (w.tag & ~RV_TLB_FLAGS) == vpage:
        t = w[0]
        w[0] = e[0]
        e[0] = t
        tlb_log(h, e)
        h.victim_hits += 1
        return 1
    if read:
        row = <int>((e - &h.rtlb[0][0]) >> 8)
        far = h.rfar[row]
        for i in range(8):
            if (far[i].tag & ~RV_TLB_FLAGS) == vpage:
                t = far[i]
                far[i] = w[0]
                w[0] = e[0]
                e[0] = t
                tlb_log(h, e)
                tlb_log(h, w)
                h.victim_hits += 1
                return 1
    if e.tag != RV_TLB_EMPTY:
        if read and w.tag != RV_TLB_EMPTY:
            far[h.rfar_next & 7] = w[0]
            h.rfar_next += 1
            h.frows |= (<uint64_t>1) << row
        w[0] = e[0]
        tlb_log(h, w)
    return 0


cdef int load_slow(Hart h, uint64_t va, int size, uint64_t *v) noexcept nogil:
    cdef TlbEntry *e = &h.rt[(va >> 12) & 255]
    cdef uint64_t vpage = va & RV_PAGE_MASK, b
    cdef int r, i
    if (va & 0xfff) + size > 4096:           # crosses a page: a byte at a time
        v[0] = 0
        for i in range(size):
            r = load_slow(h, va + i, 1, &b)
            if r:
                return r
            v[0] |= b << (8 * i)
        return 0
    if (e.tag & ~RV_TLB_FLAGS) != vpage and not victim_swap(h, e, vpage, 1):
        r = tlb_fill(h, va, ACC_R, e)
        if r:
            h.exc_cause = r
            h.exc_tval = va
            return EV_EXC
    if e.tag & RV_TLB_WATCH:
        r = watch_check(h, va, size, 0, 0, 0)
        if r:
            return r
        if e.tag & RV_TLB_IO:
            r = phys_read(h, e.ppage | (va & 0xfff), size, v, ACC_R, va)
        else:
            v[0] = 0
            memcpy(v, RV_HOST(e.addend, va), size)
            r = 0
        return r if r else watch_check(h, va, size, 0, v[0], 1)
    if not (e.tag & RV_TLB_IO):
        v[0] = 0
        memcpy(v, RV_HOST(e.addend, va), size)
        return 0
    return phys_read(h, e.ppage | (va & 0xfff), size, v, ACC_R, va)


cdef int store_slow(Hart h, uint64_t va, int size, uint64_t v) noexcept nogil:
    cdef TlbEntry *e = &h.wt[(va >> 12) & 255]
    cdef uint64_t vpage = va & RV_PAGE_MASK, pa
    cdef uint8_t *host
    cdef int r, i
    h.jexit = 1                              # unless it is a plain store into RAM
    if (va & 0xfff) + size > 4096:           # crosses a page: check both, then bytes
        r = translate(h, va, ACC_W, &pa)
        if r == 0:
            r = translate(h, (va + size - 1) & RV_PAGE_MASK, ACC_W, &pa)
            if r:
                va = (va + size - 1) & RV_PAGE_MASK
        if r:
            h.exc_cause = r
            h.exc_tval = va
            return EV_EXC
        for i in range(size):
            r = store_slow(h, va + i, 1, (v >> (8 * i)) & 0xff)
            if r:
                return r
        h.jexit = 1
        return 0
    if (e.tag & ~RV_TLB_FLAGS) != vpage and not victim_swap(h, e, vpage, 0):
        r = tlb_fill(h, va, ACC_W, e)
        if r:
            h.exc_cause = r
            h.exc_tval = va
            return EV_EXC
    if e.tag & RV_TLB_WATCH:
        r = watch_check(h, va, size, 1, v, 0)
        if r:
            return r
        if (e.tag & ~RV_TLB_FLAGS) != vpage:    # a hook changed the mappings
            r = tlb_fill(h, va, ACC_W, e)
            if r:
                h.exc_cause = r
                h.exc_tval = va
                return EV_EXC
    if e.tag & RV_TLB_IO:
        return phys_write(h, e.ppage | (va & 0xfff), size, v, va)
    host = RV_HOST(e.addend, va)
    memcpy(host, &v, size)
    if e.tag & RV_TLB_NOTDIRTY:
        h.ram.mark(e.ppage, 4096)
        e.tag &= ~RV_TLB_NOTDIRTY
    h.jexit = (e.tag & RV_TLB_WATCH) != 0   # hooks may have changed anything
    if e.tag & RV_TLB_CODE and code_store(h, e, va, size):
        h.jexit = 1
    if h.rs.nactive:
        resv_clear(h.rs, host, size)
    return 0


cdef int fetch16(Hart h, uint64_t va, uint32_t *out) noexcept nogil:
    """The halfword at ``va`` (the second half of a page-crossing instruction), through
    the fetch TLB, whose entry then lets the hart keep the instruction's decoding
    (xpage_kept) even when it never runs on into that page (a branch back)."""
    cdef TlbEntry *e = &h.ft[(va >> 12) & 255]
    cdef int r
    if (e.tag & ~RV_TLB_FLAGS) != (va & RV_PAGE_MASK):
        r = tlb_fill(h, va, ACC_X, e)
        if r:
            return r
    if e.tag & RV_TLB_IO:
        return 1                             # no execution from device memory
    out[0] = rv_ld16(RV_HOST(e.addend, va))
    return 0


cdef int fetch_page(Hart h, uint64_t pc, CodePage **out) noexcept nogil:
    """The decoded-code page holding ``pc``; 0 or the exception cause."""
    cdef TlbEntry *e = &h.ft[(pc >> 12) & 255]
    cdef uint64_t vpage = pc & RV_PAGE_MASK
    cdef int r
    cdef CodePage *cp
    if (e.tag & ~RV_TLB_FLAGS) != vpage:
        r = tlb_fill(h, pc, ACC_X, e)
        if r:
            return r
    if e.tag & RV_TLB_IO:
        return 1                             # no execution from device memory
    cp = h.fc[(pc >> 12) & 255]
    if cp != NULL and cp.ppage == e.ppage:   # still that page's (not reused, not flushed)
        out[0] = cp
        return 0
    cp = code_page(h, e.ppage, RV_HOST(e.addend, vpage))
    if cp == NULL:
        return 1
    h.fc[(pc >> 12) & 255] = cp
    out[0] = cp
    return 0


# ---- A extension -------------------------------------------------------------------

cdef int amo_addr(Hart h, uint64_t va, int size, int is_lr, uint64_t *pa) noexcept nogil:
    """The physical address of an LR (read), SC or AMO (write) at ``va``: from the
    data TLB's entry when it holds the page with no flag (a page walk granted
    that access in this context: sfence.vma and context changes flush or switch
    it), else by a walk.  0, or EV_EXC with the cause set."""
    cdef int r
    cdef TlbEntry *e = &(h.rt if is_lr else h.wt)[(va >> 12) & 255]
    if va & (size - 1):
        h.exc_cause = 4 if is_lr else 6
        h.exc_tval = va
        return EV_EXC
    if e.tag == (va & RV_PAGE_MASK):
        pa[0] = e.ppage | (va & 0xfff)
    else:
        r = translate(h, va, ACC_R if is_lr else ACC_W, pa)
        if r:
            h.exc_cause = r
            h.exc_tval = va
            return EV_EXC
    if h.nw:        # an AMO or SC reads and writes; LR reads
        r = watch_check(h, va, size, 0, 0, 0)
        if r == 0 and not is_lr:
            r = watch_check(h, va, size, 1, 0, 0)
        if r == 0:
            r = watch_check(h, va, size, 0, 0, 1)
        return r
    return 0


cdef inline uint64_t amo_fn(int f, uint64_t a, uint64_t b, int w) noexcept nogil:
    if w:
        a = <uint64_t><int64_t><int32_t>a
        b = <uint64_t><int64_t><int32_t>b
    if f == 0x00: return a + b
    if f == 0x01: return b
    if f == 0x04: return a ^ b
    if f == 0x0c: return a & b
    if f == 0x08: return a | b
    if f == 0x10: return a if <int64_t>a < <int64_t>b else b
    if f == 0x14: return a if <int64_t>a > <int64_t>b else b
    if w:
        a &= 0xffffffffU
        b &= 0xffffffffU
    if f == 0x18: return a if a < b else b
    return a if a > b else b


cdef int exec_amo(Hart h, Rec *r) noexcept nogil:
    cdef int op = r.op
    cdef int w = op == OP_LR_W or op == OP_SC_W or op == OP_AMO_W
    cdef int size = 4 if w else 8
    cdef uint64_t va = h.x[r.rs1], pa, old = 0, new
    cdef uint8_t *p
    cdef int res
    cdef int slot = h.resv_slot
    if op == OP_LR_W or op == OP_LR_D:
        res = amo_addr(h, va, size, 1, &pa)
        if res:
            return res
        p = h.ram.ptr(pa, size)
        if p == NULL:
            h.exc_cause = 5
            h.exc_tval = va
            return EV_EXC
        old = rv_ld32(p) if w else rv_ld64(p)
        h.resv_val = old
        if h.rs.addr[slot] == NULL:
            h.rs.nactive += 1
        h.rs.addr[slot] = <uint8_t *>((<uintptr_t>p) & ~(<uintptr_t>7))
        h.x[r.rd] = <uint64_t><int64_t><int32_t>old if w else old
        return 0
    res = amo_addr(h, va, size, 0, &pa)
    if res:
        return res
    p = h.ram.wptr(pa, size)
    if op == OP_SC_W or op == OP_SC_D:
        if p == NULL:
            h.exc_cause = 7
            h.exc_tval = va
            return EV_EXC
        if h.rs.addr[slot] != NULL and h.rs.addr[slot] == <uint8_t *>((<uintptr_t>p) & ~(<uintptr_t>7)):
            h.rs.addr[slot] = NULL
            h.rs.nactive -= 1
            if h.smp:                   # other harts run meanwhile: as QEMU's MTTCG
                if not rv_cas(p, h.resv_val, h.x[r.rs2], w):
                    h.x[r.rd] = 1
                    return 0
            elif w:
                rv_st32(p, <uint32_t>h.x[r.rs2])
            else:
                rv_st64(p, h.x[r.rs2])
            h.ram.mark(pa, size)
            code_invalidate(h, pa, size)
            if h.rs.nactive:
                resv_clear(h.rs, p, size)
            h.x[r.rd] = 0
        else:
            if h.rs.addr[slot] != NULL:
                h.rs.addr[slot] = NULL
                h.rs.nactive -= 1
            h.x[r.rd] = 1
        return 0
    # AMOs
    if p != NULL:
        old = amo_ram(p, r.rs3, h.x[r.rs2], w)      # one host atomic (riscv_atomic.pxi)
        h.ram.mark(pa, size)
        code_invalidate(h, pa, size)
        if h.rs.nactive:
            resv_clear(h.rs, p, size)
    else:
        res = amo_io(h, pa, size, r.rs3, h.x[r.rs2], w, va, &old)
        if res:
            return res
    h.x[r.rd] = <uint64_t><int64_t><int32_t>old if w else old
    return 0


cdef int amo_io(Hart h, uint64_t pa, int size, int f, uint64_t b, int w, uint64_t va,
                uint64_t *old) noexcept nogil:
    """An AMO on device memory: its read and its write in one section of the big lock
    (harts on threads: no other hart's device access comes between them, as QEMU
    runs such an AMO exclusively); the lock is reentrant, so the accesses take it again."""
    cdef int res
    cdef uint64_t new
    with gil:
        lock = h.io_lock
        if lock is not None:
            lock.acquire()
        try:
            res = phys_read(h, pa, size, old, ACC_W, va)
            if res == 0:
                new = amo_fn(f, old[0], b, w)
                res = phys_write(h, pa, size, new if not w else new & 0xffffffffU, va)
        finally:
            if lock is not None:
                lock.release()
    return res
