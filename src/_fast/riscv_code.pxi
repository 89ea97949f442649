# The decoded-code cache of a hart and its invalidation (included by riscv.pyx
# after riscv_mmu.pxi).
#
# Decoded code: CodePages of 2048 records (+2 sentinels), 256 sets of 4 ways
# keyed by physical page; the fetch TLB remembers each entry's CodePage.  A
# store into such a page takes the slow path (TLB_CODE) but invalidates only
# what covers the bytes it writes: the records decoded there and the compiled
# blocks with an instruction there (CodePage.jcover, riscv_jit.pxi); a store
# beside code is only a store, and compiled code goes on after it.  Bytes
# written behind the hart's back (devices' DMA, other harts) are found by
# fence.i, which compares each page with the bytes its records were decoded
# from (CodePage.snap) and forgets what changed (code_sync).  CodePage.xmap marks
# every halfword a record or a compiled block may hold (conservatively: set when
# decoded; cleared when the page is reused, and for the halfwords a store reached
# that no record nor compiled instruction holds any more, xmap_trim); compiled
# stores into a code page look it up (the write-TLB entry points at it) and store
# straight away when they write none of those halfwords (riscv_jit.pxi, emit_stub).

cdef inline int code_set(uint64_t ppage) noexcept nogil:
    cdef uint64_t n = ppage >> 12
    return <int>((n ^ (n >> 8) ^ (n >> 16)) & (CODE_SETS - 1)) * CODE_WAYS


cdef inline CodePage *code_lookup(Hart h, uint64_t ppage) noexcept nogil:
    """The decoded-code page of physical page ``ppage`` if there is one, else NULL."""
    cdef int base = code_set(ppage), w
    cdef CodePage *cp
    for w in range(CODE_WAYS):
        cp = h.ctab[base + w]
        if cp != NULL and cp.ppage == ppage:
            return cp
    return NULL


cdef inline void code_snap(CodePage *cp, int off) noexcept nogil:
    """Keep the bytes an instruction at page offset ``off`` is decoded from (see
    code_sync): up to 4 of them, inside the page."""
    if off <= 4092:
        memcpy(cp.snap + off, cp.host + off, 4)
    else:
        memcpy(cp.snap + off, cp.host + off, 4096 - off)


cdef inline void code_mark(CodePage *cp, uint64_t pc) noexcept nogil:
    """Note that the record of ``pc`` was written (see CodePage.used)."""
    cdef int i = (pc & 0xfff) >> 1
    cp.used[i >> 6] |= (<uint64_t>1) << (i & 63)
    cp.xmap[i] = 1                      # (its length is not known yet: 4 bytes)
    if i < 2047:
        cp.xmap[i + 1] = 1
    code_snap(cp, <int>(pc & 0xffe))

cdef void code_flush(Hart h) noexcept nogil:
    cdef int i, c
    cdef TlbEntry *e
    jit_unlink_all(h)               # a page being run keeps its records: no stale blocks
    for i in range(NCODE):
        if h.ctab[i] != NULL:
            h.ctab[i].ppage = RV_NOPAGE
    for c in range(NDATA):              # no page holds decoded code any more
        if not (h.wrows >> c) & 1:
            continue
        for i in range(512):
            e = write_way(h, c, i)
            if e.tag != RV_TLB_EMPTY:
                e.tag &= ~RV_TLB_CODE
    h.code_flushes += 1


cdef CodePage *code_page(Hart h, uint64_t ppage, uint8_t *host) noexcept nogil:
    """The decoded-code page for physical page ``ppage``, created empty if needed."""
    cdef int base = code_set(ppage), w, victim = -1, i, c
    cdef uint64_t bits, old = RV_NOPAGE
    cdef CodePage *cp
    cdef TlbEntry *e
    for w in range(CODE_WAYS):
        cp = h.ctab[base + w]
        if cp != NULL and cp.ppage == ppage:
            if cp.sync_gen != h.sync_gen:
                code_check(h, cp)
            return cp
        if victim < 0 and (cp == NULL or cp.ppage == RV_NOPAGE):
            victim = w
    if victim < 0:
        victim = <int>(h.code_inits & (CODE_WAYS - 1))   # round robin over the set
    cp = h.ctab[base + victim]
    if cp == NULL:
        cp = <CodePage *>calloc(1, sizeof(CodePage))
        if cp == NULL:
            return NULL
        cp.recs[2048].op = OP_PAGEEND
        cp.recs[2049].op = OP_PAGEEND
        h.ctab[base + victim] = cp
    else:                               # forget what was decoded there: those records only
        old = cp.ppage
        for w in range(32):
            bits = cp.used[w]
            while bits:
                cp.recs[w * 64 + rv_ctz64(bits)].op = OP_NONE
                bits &= bits - 1
            cp.used[w] = 0
    cp.njit = 0
    memset(cp.jcover, 0, sizeof(cp.jcover))
    memset(cp.xmap, 0, sizeof(cp.xmap))
    cp.ppage = ppage
    cp.host = host
    cp.xhi = -1
    cp.xlive = 0
    cp.sync_gen = h.sync_gen
    memcpy(cp.snap, host, 4096)
    h.code_inits += 1
    # stores to this page must now invalidate its records: route them to the slow
    # path; stores to the page it held before need not any more
    for c in range(NDATA):
        if not (h.wrows >> c) & 1:
            continue
        for i in range(512):
            e = write_way(h, c, i)
            if e.tag == RV_TLB_EMPTY:
                continue
            if e.ppage == ppage:
                e.tag |= RV_TLB_CODE
                e.pad = <uint64_t><uintptr_t>cp.xmap
            elif e.ppage == old:
                e.tag &= ~RV_TLB_CODE
    return cp


cdef int xmap_live(CodePage *cp) noexcept nogil:
    """1 while a record or a compiled block holds a halfword of the page.  xmap
    bytes set for instructions gone since (a region unlinked, a record forgotten
    beside them) are cleared on the way."""
    cdef int w, k
    if cp.njit <= 0:                # no region left (code_forget took the last head)
        memset(cp.jcover, 0, sizeof(cp.jcover))
    for k in range(-1, 256):
        w = cp.xlive if k < 0 else k            # the word found last time first
        if rv_ld64(cp.xmap + 8 * w):
            xmap_trim(cp, 8 * w, 8 * w + 7)
            if rv_ld64(cp.xmap + 8 * w):
                cp.xlive = w
                return 1
    return 0


cdef int code_store(Hart h, TlbEntry *e, uint64_t va, int size) noexcept nogil:
    """A store of ``size`` bytes at ``va`` through write-TLB entry ``e`` (TLB_CODE,
    RAM) was made: forget the decoded instructions it touched.  1 when it touched
    one.  A page left with none (Linux reused a page of code for data) stops
    being a code page: its stores take the fast path again (before, they all went
    through here for as long as the decoded page lived)."""
    cdef CodePage *cp = code_lookup(h, e.ppage)
    cdef TlbEntry *w
    cdef int c, i
    cdef uint64_t ppage = e.ppage
    h.code_stores += 1
    if cp == NULL:
        e.tag &= ~RV_TLB_CODE
        return 0
    if code_forget(cp, <int>(va & 0xfff), size):
        return 1
    if not xmap_live(cp):
        cp.ppage = RV_NOPAGE            # (code_page reuses it first)
        for c in range(NDATA):
            if not (h.wrows >> c) & 1:
                continue
            for i in range(512):
                w = write_way(h, c, i)
                if w.tag != RV_TLB_EMPTY and w.ppage == ppage:
                    w.tag &= ~RV_TLB_CODE
    return 0


cdef int code_forget(CodePage *cp, int off, int size) noexcept nogil:
    """Bytes [off, off + size) of the page changed: forget the records and the
    compiled blocks holding any of them.  1 when there was one, 0 when none of
    the bytes was translated."""
    cdef int first = off >> 1, last = (off + size - 1) >> 1, i, hit = 0
    cdef Rec *r
    if last > 2047:
        last = 2047
    i = first - 1 if first > 0 else 0       # a 4-byte instruction just before
    while i <= last:
        r = &cp.recs[i]
        if r.op != OP_NONE and (i >= first or r.len == 4):
            if r.op == OP_JIT:
                cp.njit -= 1
            r.op = OP_NONE
            hit = 1
        i += 1
    if cp.njit > 0 and jit_forget(cp, first, last):
        hit = 1
    xmap_trim(cp, first - 1 if first > 0 else 0, last + 1 if last < 2047 else 2047)
    return hit


cdef inline void xmap_trim(CodePage *cp, int first, int last) noexcept nogil:
    """Clear the xmap bytes of halfwords ``first``..``last`` that no record and no
    compiled instruction holds any more: a page whose code was overwritten by data
    (a physical page Linux reused, data beside code) stops sending compiled stores
    to the slow path once each place was written."""
    cdef int i
    cdef Rec *r
    for i in range(first, last + 1):
        if not cp.xmap[i] or (cp.jcover[i >> 6] >> (i & 63)) & 1:
            continue
        if cp.recs[i].op != OP_NONE:
            continue
        if i > 0:
            r = &cp.recs[i - 1]
            if r.op != OP_NONE and r.len == 4:
                continue
        cp.xmap[i] = 0


cdef int code_invalidate(Hart h, uint64_t pa, int size) noexcept nogil:
    """A store of ``size`` bytes at physical ``pa``: forget decoded instructions it
    touches.  1 when it touched one (code changed), else 0."""
    cdef CodePage *cp = code_lookup(h, pa & RV_PAGE_MASK)
    if cp == NULL:
        return 0
    return code_forget(cp, <int>(pa & 0xfff), size)


cdef void code_sync(Hart h) noexcept nogil:
    """fence.i: the hart's own stores into code were caught as they happened; bytes
    changed behind its back (a device's DMA, another hart) are those that differ
    from the ones its records were decoded from.  Each decoded page is compared
    when the hart next enters it (code_page, code_check), not here: most are not
    entered again before the next fence.i (Linux runs one per program started).
    The pages the fetch TLBs lead to are forgotten (h.fcode) so that the run loop
    and compiled code (cross_page) reach them through code_page."""
    h.sync_gen += 1
    memset(h.fcode, 0, sizeof(h.fcode))


cdef void code_check(Hart h, CodePage *cp) noexcept nogil:
    """The hart enters ``cp`` after a fence.i: forget the records and compiled
    blocks on bytes that changed since they were decoded (code_sync)."""
    cdef int w, lo, hi
    cdef uint64_t d
    cp.sync_gen = h.sync_gen
    h.code_checks += 1
    if memcmp(cp.snap, cp.host, 4096) == 0:
        return
    for w in range(0, 4096, 8):
        d = rv_ld64(cp.snap + w) ^ rv_ld64(cp.host + w)
        if d:
            lo = rv_ctz64(d) >> 3
            hi = 7 - (rv_clz64(d) >> 3)
            code_forget(cp, w + lo, hi - lo + 1)
    memcpy(cp.snap, cp.host, 4096)


cdef void jit_unlink(CodePage *cp) noexcept nogil:
    """Forget the compiled regions of a page (their heads decode again when reached)."""
    cdef int w
    cdef uint64_t bits
    cdef Rec *r
    if not cp.njit:
        return
    for w in range(32):
        bits = cp.used[w]
        while bits:
            r = &cp.recs[w * 64 + rv_ctz64(bits)]
            if r.op == OP_JIT:
                r.op = OP_NONE
            bits &= bits - 1
    cp.njit = 0
    memset(cp.jcover, 0, sizeof(cp.jcover))


cdef inline uint64_t jit_lines(int first, int last) noexcept nogil:
    """The mask of 64-byte lines holding halfwords ``first``..``last`` of a page."""
    cdef int lo = first >> 5, hi = last >> 5
    cdef uint64_t upto = (<uint64_t>-1) if hi == 63 else (((<uint64_t>1) << (hi + 1)) - 1)
    return upto & ~(((<uint64_t>1) << lo) - 1)


cdef int jit_forget(CodePage *cp, int first, int last) noexcept nogil:
    """Halfwords ``first``..``last`` of the page changed: unlink the regions with an
    instruction on their lines (the 8 bytes before a region's code hold the mask of
    its lines, see jit_compile).  1 when one of them held compiled code, else 0."""
    cdef int i, w
    cdef uint64_t bits, lines
    cdef Rec *r
    for i in range(first, last + 1):
        if (cp.jcover[i >> 6] >> (i & 63)) & 1:
            break
    else:
        return 0
    lines = jit_lines(first, last)
    for w in range(32):
        bits = cp.used[w]
        while bits:
            r = &cp.recs[w * 64 + rv_ctz64(bits)]
            if r.op == OP_JIT and (rv_ld64((<uint8_t **>(<uint8_t *>r + 8))[0] - 8) & lines):
                r.op = OP_NONE
                cp.njit -= 1
            bits &= bits - 1
    if cp.njit <= 0:
        cp.njit = 0
        memset(cp.jcover, 0, sizeof(cp.jcover))
    return 1


cdef void jit_unlink_all(Hart h) noexcept nogil:
    cdef int i
    for i in range(NCODE):
        if h.ctab[i] != NULL:
            jit_unlink(h.ctab[i])
