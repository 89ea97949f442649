# Ways into a compiled region at its other labels (included by riscv_jit.pxi).
#
# A region holds every instruction of its page that the compiled ops reach from its
# head, so a record that gets hot later inside it (a loop head, a return site, a
# branch target reached from elsewhere) would compile much of the same code again:
# 45% of the regions of a Linux boot were headed inside an older one.  Instead, such
# a record gets an entry stub into the region that holds it, when its instruction
# is a label there (a.target: counts are settled there and rcx is what every jump
# to it leaves, so any way in is as good as the region's own jumps): the stub loads
# the region's cached registers from x[] as the region's own entry does, points rcx
# at an entry of the table the label expects one of (probe_again compares a tag
# with any entry of that table, a match being that page's translation) and, where
# the region keeps that entry's addend in a register (a.rad: whenever rcx holds an
# entry, that register holds its addend), loads it from the entry, and jumps
# to the label.  No semantics change: the region's code from that label is what the
# region runs whenever it jumps there.
#
# Each region keeps a descriptor after its code (never executed: its ways out all
# end in jumps): its cached registers and its labels, sorted.  The 8 bytes before a
# region's code hold the mask of the lines it translated (jit_forget), the 8 before
# those the descriptor's address; a stub has the same two words before it, so a
# store that unlinks the region unlinks its stubs too, and a stub leads to its
# region's descriptor as the head does.  The code buffer is never freed under a
# live record (a reset unlinks every record first), so a descriptor lives as long
# as anything that leads to it.

cdef struct EntryLabel:
    int16_t idx                 # the label's halfword in the page
    uint8_t carry               # the table (1: h.rt, 2: h.wt) rcx must point into, or 0
    uint8_t pad
    int32_t off                 # its code's address - the region's code address (RX)

cdef struct EntryDesc:
    uint8_t *code               # the region's code (RX view)
    int32_t nlab
    int16_t lo, hi              # halfwords of the region's first and last instruction
    signed char host_of[32]     # the region's register cache (riscv_jit_regs.pxi)
    signed char rad             # the register keeping rcx's entry's addend (a.rad), or -1
    EntryLabel labels[1]        # nlab of them, by idx (the struct is followed by the rest)

cdef enum:
    ENTRY_STUB_MAX = 16 + 10 * 8 + 8 + 8 + 8    # the two words, the loads, rcx, its
                                                # addend, the jump


cdef int entry_desc_size(Jit *a) noexcept nogil:
    """Bytes the descriptor of the region being compiled takes (a.target marked)."""
    cdef int i, n = 0
    for i in range(a.lo, a.hi + 1):
        if a.state[i] == IN_REGION and a.target[i]:
            n += 1
    return <int>sizeof(EntryDesc) + n * <int>sizeof(EntryLabel) + 8     # (<= DESC_MAX)


cdef void entry_desc_write(Jit *a, uint8_t *code, uint8_t *slot) noexcept nogil:
    """Write the descriptor of the region just emitted (its code at ``code``, RX view)
    at a.p, 8-aligned, and its address (RX view) into ``slot`` (RW view)."""
    cdef EntryDesc *d
    cdef uint8_t *where
    cdef int i, n = 0
    cdef int64_t addr
    a.p = <uint8_t *>((<uintptr_t>a.p + 7) & ~(<uintptr_t>7))
    d = <EntryDesc *>a.p
    d.code = code
    d.lo = <int16_t>a.lo
    d.hi = <int16_t>a.hi
    for i in range(32):
        d.host_of[i] = a.host_of[i]
    d.rad = <signed char>a.rad
    for i in range(a.lo, a.hi + 1):
        if a.state[i] == IN_REGION and a.target[i]:
            d.labels[n].idx = <int16_t>i
            d.labels[n].carry = a.carry[i]
            d.labels[n].pad = 0
            d.labels[n].off = <int32_t>RV_PTR_DIFF(a.label[i] - a.wdelta, code)
            n += 1
    d.nlab = n
    where = a.p - a.wdelta
    a.p += sizeof(EntryDesc) + n * sizeof(EntryLabel)
    addr = <int64_t><uintptr_t>where
    memcpy(slot, &addr, 8)


cdef EntryLabel *entry_find(CodePage *cp, int idx, EntryDesc **desc) noexcept nogil:
    """A label at halfword ``idx`` in a live region of ``cp`` (found by its heads and
    stubs), its region's descriptor in ``desc[0]``; NULL when none has one."""
    cdef int w, lo, hi, mid
    cdef uint64_t bits
    cdef Rec *r
    cdef uint8_t *c
    cdef EntryDesc *d
    if not (cp.jcover[idx >> 6] >> (idx & 63)) & 1:
        return NULL
    for w in range(32):
        bits = cp.used[w]
        while bits:
            r = &cp.recs[w * 64 + rv_ctz64(bits)]
            bits &= bits - 1
            if r.op != OP_JIT:
                continue
            c = (<uint8_t **>(<uint8_t *>r + 8))[0]
            d = (<EntryDesc **>(c - 16))[0]
            if d == NULL or idx < d.lo or idx > d.hi:
                continue
            lo = 0
            hi = d.nlab - 1
            while lo <= hi:
                mid = (lo + hi) >> 1
                if d.labels[mid].idx == idx:
                    desc[0] = d
                    return &d.labels[mid]
                if d.labels[mid].idx < idx:
                    lo = mid + 1
                else:
                    hi = mid - 1
    return NULL


cdef int jit_enter_covered(Hart h, CodePage *cp, Rec *head, int64_t start) noexcept nogil:
    """Make ``head`` (page offset ``start``) a way into a region that holds it as a
    label, if there is one: 1 when it now is OP_JIT (a stub), else 0."""
    cdef Jit *a = <Jit *>h.jit_work
    cdef uint8_t *code
    cdef uint8_t *stub
    cdef EntryLabel *lab
    cdef EntryDesc *d
    cdef int g, op = head.op, i = <int>(start >> 1)
    if (cp.jcover[i >> 6] >> (i & 63)) & 1:
        h.jit_covered += 1                          # (headed inside a region)
    if op == OP_NONE or op == OP_XPAGE or op == OP_BREAK or op == OP_JIT or start >= 0xffe:
        return 0
    lab = entry_find(cp, i, &d)
    if lab == NULL:
        return 0
    if h.jit_free + ENTRY_STUB_MAX > h.jit_buf + jit_limit:
        return 0                                    # (the full compile starts over)
    code = d.code
    jit_open(h, a)
    a.p = jit_writable(a, h.jit_free)
    a.o_x = <int32_t>RV_PTR_DIFF(<void *>&h.x[0], <void *>h)
    q8(a, (<uint64_t *>(code - 16))[0])             # the descriptor
    q8(a, (<uint64_t *>(code - 8))[0])              # the lines (jit_forget)
    stub = a.p - a.wdelta
    for g in range(1, 32):
        if d.host_of[g] >= 0:
            ldx(a, d.host_of[g], g)
    if lab.carry:
        op_rm(a, 1, X_MOV, RCX, R15, <int32_t>RV_PTR_DIFF(&h.rt if lab.carry == 1 else &h.wt,
                                                          <void *>h))
        if d.rad >= 0:              # the region's accesses take rcx's addend from it
            op_rm(a, 1, X_MOV, d.rad, RCX, 8)
    jmp_to(a, jit_writable(a, code + lab.off))
    h.jit_free = <uint8_t *>((<uintptr_t>(a.p - a.wdelta) + 15) & ~(<uintptr_t>15))
    jit_close(h, a)
    h.jit_stubs += 1
    # so that unlinking finds it (code_mark without its snapshot: the region's
    # instructions were decoded from the bytes snapped when it was compiled)
    cp.used[i >> 6] |= (<uint64_t>1) << (i & 63)
    head.op = OP_JIT
    memcpy(<uint8_t *>head + 8, &stub, 8)
    cp.njit += 1
    return 1
