# The TLB sets of a hart and their flushes (included by riscv.pyx after
# riscv_mmu.pxi, which fills them).
#
# One set of read, write and fetch TLBs per translation context: the data sets
# of S and of M, then per bank a U set and an "S with mstatus.SUM" set (Linux
# sets SUM around each access to user memory); the fetch sets of S and M, then a
# U set per bank.  A bank holds the translations of one satp value (mode, ASID
# and page table): writing satp selects the bank of the new value, or clears the
# least recently used one for it, so that a context switch does not flush the
# address spaces it comes back to.  satp keeps all 16 ASID bits, so Linux runs
# its ASID allocator: it writes satp at a switch and flushes nothing, and when
# an address space's mappings change it names it (sfence.vma with an ASID),
# running or not.  The S sets are shared by every bank: they hold global
# translations (the kernel's) unless s_local says one was not global (or was
# made while satp was bare), and then they are cleared at a bank switch.  M's
# data set holds only M-mode's own accesses, never translated.
#
# Sets are cleared by writing their tags EMPTY; a full flush clears just the
# entries filled since the previous one when tlb_log kept them all.

cdef inline int d_user(int b) noexcept nogil:
    return 2 + 2 * b


cdef inline int d_sum(int b) noexcept nogil:
    return 3 + 2 * b


cdef enum:
    D_S = 0             # data sets (rtlb, rvict, wtlb, wvict rows)
    D_M = 1
    F_S = 0             # fetch sets (ftlb, fcode rows); U of bank b: 2 + b
    F_M = 1

cdef extern from *:
    """
    #define RV_SATP_NONE 0xFFFFFFFFFFFFFFFFULL  /* a bank key no satp value has (mode 15) */
    """
    uint64_t SATP_NONE "RV_SATP_NONE"


cdef void tlb_select(Hart h) noexcept nogil:
    """Point rt/wt/ft at the TLB sets of the current privilege and address space
    (data: after MPRV; S with mstatus.SUM has sets of its own)."""
    cdef int dp = h.priv, dc
    if h.satp != h.bank_key[h.bank]:
        tlb_bank(h)
    if dp == PRV_M and (h.mstatus & MSTATUS_MPRV):
        dp = (h.mstatus >> 11) & 3
    if dp == PRV_M:
        dc = D_M
    elif dp == PRV_S:
        dc = d_sum(h.bank) if h.mstatus & MSTATUS_SUM else D_S
    else:
        dc = d_user(h.bank)
    h.rt = h.rtlb[dc]
    h.wt = h.wtlb[dc]
    dc = F_M if h.priv == PRV_M else (F_S if h.priv == PRV_S else 2 + h.bank)
    h.ft = h.ftlb[dc]
    h.fc = h.fcode[dc]


cdef inline TlbEntry *write_way(Hart h, int c, int i) noexcept nogil:
    """Entry ``i`` (0..511) of data row ``c``'s write ways: wtlb's, then wvict's."""
    return &h.wtlb[c][i] if i < 256 else &h.wvict[c][i - 256]


cdef inline void forget_page(TlbEntry *e, uint64_t vpage) noexcept nogil:
    if (e.tag & ~RV_TLB_FLAGS) == vpage:
        e.tag = RV_TLB_EMPTY


cdef void tlb_clear_far(Hart h, int c) noexcept nogil:
    """Empty data row ``c`` of rfar."""
    cdef int i
    for i in range(8):
        h.rfar[c][i].tag = RV_TLB_EMPTY
    h.frows &= ~((<uint64_t>1) << c)


cdef void tlb_clear_data(Hart h, int c) noexcept nogil:
    cdef int i
    for i in range(256):
        h.rtlb[c][i].tag = RV_TLB_EMPTY
        h.rvict[c][i].tag = RV_TLB_EMPTY
        h.wtlb[c][i].tag = RV_TLB_EMPTY
        h.wvict[c][i].tag = RV_TLB_EMPTY
    tlb_clear_far(h, c)
    h.wrows &= ~((<uint64_t>1) << c)


cdef void tlb_clear_fetch(Hart h, int c) noexcept nogil:
    cdef int i
    for i in range(256):
        h.ftlb[c][i].tag = RV_TLB_EMPTY


cdef inline bint bank_filled(Hart h, int b) noexcept nogil:
    """Whether bank ``b`` took an entry since its last clear (its bank_slots)."""
    return (h.bank_slots[b][0] | h.bank_slots[b][1] | h.bank_slots[b][2] |
            h.bank_slots[b][3]) != 0


cdef inline bint bank_of_asid(Hart h, int b, uint64_t asid) noexcept nogil:
    """Whether bank ``b`` holds the translations of a satp value with ASID ``asid``."""
    return h.bank_key[b] != SATP_NONE and ((h.bank_key[b] >> 44) & 0xFFFF) == asid


cdef void tlb_clear_bank(Hart h, int b) noexcept nogil:
    """Forget the translations of bank ``b``: the entries filled since its last
    clear (blog) when they were few, else its every entry.  (A pipeline of more
    processes than banks reuses one at each switch: it cleared 1,800 tags.)"""
    cdef int i, c
    cdef TlbEntry *base = &h.rtlb[0][0]
    if h.blog_n[b] < 0:
        tlb_clear_data(h, d_user(b))
        tlb_clear_data(h, d_sum(b))
        tlb_clear_fetch(h, 2 + b)
    else:
        for i in range(h.blog_n[b]):
            base[h.blog[b][i]].tag = RV_TLB_EMPTY
        for c in range(d_user(b), d_sum(b) + 1):
            if (h.frows >> c) & 1:
                tlb_clear_far(h, c)
            h.wrows &= ~((<uint64_t>1) << c)
    h.blog_n[b] = 0
    memset(h.bank_slots[b], 0, sizeof(h.bank_slots[b]))
    h.bank_seq[b] = h.fence_seq             # (nothing left to forget)


cdef void tlb_clear_s(Hart h) noexcept nogil:
    """The S sets may hold a translation of the address space being left."""
    tlb_clear_data(h, D_S)
    tlb_clear_fetch(h, F_S)
    h.s_local = 0


cdef void tlb_bank(Hart h) noexcept nogil:
    """satp changed: select the bank holding its translations, or clear the least
    recently used one for it."""
    cdef int b, pick = -1
    for b in range(NBANK):
        if h.bank_key[b] == h.satp:
            pick = b
            break
    if pick >= 0:
        bank_catch_up(h, pick)
    else:
        pick = 0 if h.bank else 1
        for b in range(NBANK):
            if b != h.bank and h.bank_used[b] < h.bank_used[pick]:
                pick = b
        tlb_clear_bank(h, pick)
        h.bank_key[pick] = h.satp
    if h.s_local:
        tlb_clear_s(h)
    h.bank = pick
    h.bank_clock += 1
    h.bank_used[pick] = h.bank_clock


cdef void tlb_forget_banks(Hart h) noexcept nogil:
    """Every translation forgotten and no bank tied to a satp value (a reset, a
    restored state); tlb_select then takes a bank for satp."""
    cdef int b
    h.tlog_on = 0                           # (every entry)
    tlb_flush(h)
    for b in range(NBANK):
        h.bank_key[b] = SATP_NONE
        h.bank_used[b] = 0


cdef inline void tlb_log(Hart h, TlbEntry *e) noexcept nogil:
    """Entry ``e`` (of rtlb, rvict, wtlb, wvict or ftlb) is about to hold a
    translation: note it for tlb_flush, and for tlb_clear_bank when it is a bank's.
    Past a log's room, the next flush (clear) forgets every entry."""
    cdef int64_t off = e - &h.rtlb[0][0], f = e - &h.ftlb[0][0]
    cdef int c, b, slot
    if h.tlog_n < 256 and 0 <= off < 65536:
        h.tlog[h.tlog_n] = <uint16_t>off
        h.tlog_n += 1
    else:
        h.tlog_on = 0
    if 0 <= f < NFETCH * 256:
        b = <int>(f >> 8) - 2                   # (fetch rows: S, M, then U of each bank)
        slot = <int>(f & 255)
    elif 0 <= off < 4 * NDATA * 256:
        c = <int>((off % (NDATA * 256)) >> 8)   # (data rows: S, M, then U and SUM of each)
        b = (c - 2) >> 1 if c >= 2 else -1
        slot = <int>(off & 255)
    else:
        return
    if b < 0:
        return                                  # (an S or M set: no bank's)
    h.bank_slots[b][slot >> 6] |= (<uint64_t>1) << (slot & 63)
    if h.blog_n[b] >= 0:
        if h.blog_n[b] < 128:
            h.blog[b][h.blog_n[b]] = <uint16_t>off
            h.blog_n[b] += 1
        else:
            h.blog_n[b] = -1


cdef inline void tlb_filled_s(Hart h, TlbEntry *e) noexcept nogil:
    """tlb_fill put a translation that is not global in ``e``: note it when ``e``
    belongs to an S set (shared by the banks)."""
    if (0 <= e - &h.rtlb[D_S][0] < 256 or 0 <= e - &h.wtlb[D_S][0] < 256
            or 0 <= e - &h.ftlb[F_S][0] < 256):
        h.s_local = 1


cdef void tlb_flush(Hart h) noexcept nogil:
    """Forget every translation, of every bank (sfence.vma without address nor
    ASID).  Most come a few dozen fills apart: the entries filled since the last
    one are forgotten alone (tlb_log), not every set."""
    cdef int i, c
    cdef TlbEntry *base = &h.rtlb[0][0]
    if h.tlog_on:
        for i in range(h.tlog_n):
            base[h.tlog[i]].tag = RV_TLB_EMPTY
        for c in range(NDATA):
            if (h.frows >> c) & 1:
                tlb_clear_far(h, c)
    else:                               # (the banks filled since: by their own logs)
        for c in range(2):                  # D_S, D_M (and F_S, F_M)
            tlb_clear_data(h, c)
            tlb_clear_fetch(h, c)
        for c in range(NBANK):
            if bank_filled(h, c):
                tlb_clear_bank(h, c)
    memset(h.bank_slots, 0, sizeof(h.bank_slots))
    for c in range(NBANK):
        h.blog_n[c] = 0
        h.bank_seq[c] = h.fence_seq
    h.tlog_n = 0
    h.tlog_on = 1
    h.wrows = h.frows = 0
    h.s_local = 0
    h.big_lo = RV_NOPAGE
    h.big_hi = 0
    h.tlb_flushes += 1


cdef void tlb_flush_asid(Hart h, uint64_t asid) noexcept nogil:
    """sfence.vma with an ASID and no address: forget the translations of the banks
    of that ASID (their global ones too: more than needed), and the S sets' if
    they hold some that are not global."""
    cdef int b
    for b in range(NBANK):
        if bank_of_asid(h, b, asid & 0xFFFF):
            tlb_clear_bank(h, b)
    if h.s_local:
        tlb_clear_s(h)
    h.tlb_flushes += 1


cdef inline void forget_data_page(Hart h, int c, int i, uint64_t vpage) noexcept nogil:
    """Data row ``c``'s entries of page ``vpage`` (slot ``i``) forgotten."""
    cdef int j
    forget_page(&h.rtlb[c][i], vpage)
    forget_page(&h.rvict[c][i], vpage)
    forget_page(&h.wtlb[c][i], vpage)
    forget_page(&h.wvict[c][i], vpage)
    if (h.frows >> c) & 1:
        for j in range(8):
            forget_page(&h.rfar[c][j], vpage)


cdef inline void bank_forget_page(Hart h, int b, int i, uint64_t vpage) noexcept nogil:
    """Bank ``b``'s entries of page ``vpage`` (slot ``i``) forgotten, if it filled that
    slot since its last clear."""
    if (h.bank_slots[b][i >> 6] >> (i & 63)) & 1:
        forget_data_page(h, d_user(b), i, vpage)
        forget_data_page(h, d_sum(b), i, vpage)
        forget_page(&h.ftlb[2 + b][i], vpage)


cdef void bank_catch_up(Hart h, int b) noexcept nogil:
    """Bank ``b`` is selected again: the pages fenced since it was last in use
    (fence_log) go from it, or all of it when more than the log holds were."""
    cdef uint64_t n = h.bank_seq[b], vpage
    if h.fence_seq - n > 256:
        tlb_clear_bank(h, b)
        return
    while n != h.fence_seq:
        vpage = h.fence_log[n & 255]
        bank_forget_page(h, b, <int>((vpage >> 12) & 255), vpage)
        n += 1
    h.bank_seq[b] = n


cdef void tlb_flush_page(Hart h, uint64_t va, int64_t asid) noexcept nogil:
    """sfence.vma with an address: forget the translations of its page in the S
    sets and in the banks of ASID ``asid``, or (-1: rs2 = x0) of every address
    space.  Linux sends one of these after each page fault it serves, and each
    look at a bank reads 9 lines of one cache set (its rows are 8 KiB apart): the
    bank in use forgets the page at once, the others when they are selected again
    (bank_catch_up; most belong to processes that have exited).  A fence naming an
    ASID reaches that ASID's banks at once; the others' entries of the page can
    only be global ones, which it leaves alone.  When the page lies in a superpage
    the TLBs hold parts of, everything goes (as QEMU does).  M-mode's sets hold no
    translation."""
    cdef uint64_t vpage = va & RV_PAGE_MASK
    cdef int i = (va >> 12) & 255, b
    if h.big_lo <= va <= h.big_hi:
        tlb_flush(h)
        return
    forget_data_page(h, D_S, i, vpage)
    forget_page(&h.ftlb[F_S][i], vpage)
    if asid < 0:
        h.fence_log[h.fence_seq & 255] = vpage
        h.fence_seq += 1
        bank_forget_page(h, h.bank, i, vpage)
        h.bank_seq[h.bank] = h.fence_seq    # (the bank in use is always caught up)
        return
    for b in range(NBANK):
        if bank_of_asid(h, b, <uint64_t>asid):
            bank_forget_page(h, b, i, vpage)
