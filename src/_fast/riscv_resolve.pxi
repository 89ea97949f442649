# The hart's run loop's helpers for records it cannot run as they stand: a
# breakpoint, a record not decoded yet, an instruction crossing into the next page
# (included by riscv.pyx where they were; they use its Hart, CodePage and Rec).

cdef inline int is_bp(Hart h, uint64_t pc) noexcept nogil:
    cdef int i
    for i in range(h.nbp):
        if h.bp[i] == pc:
            return 1
    return 0


cdef Rec *resolve(Hart h, Rec *r, uint64_t pc) noexcept nogil:
    """A record that is not decoded yet, a breakpoint, or a page-crossing instruction."""
    cdef int i
    cdef uint8_t *chost = h.cur_code.host
    h.decodes += 1
    h.tmp[1].op = OP_PAGEEND
    h.tmp[2].op = OP_PAGEEND
    if r.op == OP_BREAK:
        if h.bp_skip_valid and h.bp_skip == pc:
            h.bp_skip_valid = 0
            if decode_at(h, pc, chost, &h.tmp[0]):
                return NULL
            return &h.tmp[0]
        return r
    code_mark(h.cur_code, pc)           # r.op is written below, whatever happens
    if r.op == OP_NONE and (h.nbp or h.nch):
        if is_bp(h, pc) or in_code_hook(h, pc):
            r.op = OP_BREAK
            r.len = 2
            return r
    if (pc & 0xfff) == 0xffe and (rv_ld16(chost + 0xffe) & 3) == 3:
        r.op = OP_XPAGE
        r.len = 4
        if decode_at(h, pc, chost, &h.tmp[0]):
            return NULL
        h.cur_code.xrec = h.tmp[0]          # for xpage_cached
        h.cur_code.xhi = <int32_t>(h.tmp[0].bits >> 16)
        return &h.tmp[0]
    decode_at(h, pc, chost, r)
    return r


cdef Rec *run_alone(Hart h, CodePage *cp, uint64_t pc) noexcept nogil:
    """The instruction at ``pc`` (on ``cp``) decoded into h.tmp, for the loop to run
    as a one-record page (its fetch walks the page table for a page-crossing
    instruction's upper half); NULL on a fetch fault (h.exc_* set)."""
    if decode_at(h, pc, cp.host, &h.tmp[0]):
        return NULL
    h.tmp[1].op = OP_PAGEEND
    h.tmp[2].op = OP_PAGEEND
    return &h.tmp[0]


cdef inline bint xpage_kept(Hart h, CodePage *cp, uint64_t pc) noexcept nogil:
    """Whether ``cp.xrec`` still decodes the instruction at ``pc`` (page offset 0xffe):
    the next page is in the fetch TLB and holds the same upper half there."""
    cdef uint64_t nxt = pc + 2
    cdef TlbEntry *e = &h.ft[(nxt >> 12) & 255]
    return cp.xhi >= 0 and e.tag == nxt and rv_ld16(RV_HOST(e.addend, nxt)) == <uint32_t>cp.xhi


cdef int xpage_branch(Hart h, CodePage *cp, uint64_t *pc) noexcept nogil:
    """The page-crossing instruction at ``pc[0]`` run at once when ``cp.xrec`` still
    holds it and it is a conditional branch (busybox ash's keyword search falls out
    of compiled code into one 104 times a trip of a shell loop): ``pc[0]`` becomes
    where it goes, 1.  Else 0, and the loop runs it as h.tmp.  Either way the
    instruction ends on another page or jumps, so the loop goes on at a page
    change, where it looks at ``lim``, as after h.tmp's jump or its OP_PAGEEND."""
    cdef Rec *r = &cp.xrec
    cdef uint64_t a, b
    cdef bint taken
    cdef int op = r.op
    if op < OP_BEQ or op > OP_BGEU or not xpage_kept(h, cp, pc[0]):
        return 0
    a = h.x[r.rs1]
    b = h.x[r.rs2]
    if op == OP_BEQ:
        taken = a == b
    elif op == OP_BNE:
        taken = a != b
    elif op == OP_BLT:
        taken = <int64_t>a < <int64_t>b
    elif op == OP_BGE:
        taken = <int64_t>a >= <int64_t>b
    elif op == OP_BLTU:
        taken = a < b
    else:
        taken = a >= b
    pc[0] += <uint64_t><int64_t>r.imm if taken else 4
    h.xpage_branches += 1
    return 1


cdef Rec *xpage_cached(Hart h, CodePage *cp, uint64_t pc) noexcept nogil:
    """The instruction at ``pc`` (page offset 0xffe, an OP_XPAGE record) crosses into
    the next page: its decoding kept in ``cp`` (resolve) as h.tmp when the next page
    is in the fetch TLB and still holds the same upper half there, else NULL (then
    resolve decodes it again).  Its lower half is this page's: a change to it
    forgets the record.  A hot loop through such an instruction (busybox ash's
    keyword search) would walk the page table for that half at every turn."""
    if not xpage_kept(h, cp, pc):
        return NULL
    h.tmp[0] = cp.xrec
    h.tmp[1].op = OP_PAGEEND
    h.tmp[2].op = OP_PAGEEND
    return &h.tmp[0]


cdef int jit_hot = JIT_HOT           # riscv_jit.pxi's JIT_HOT, or a test's


def _jit_set_hot(int n):
    """Compile a record at its ``n``-th taken jump (1..255) from now on; returns the
    threshold before.  The default, JIT_HOT, is tuned for a Linux boot (fewer regions
    of code run a few hundred times); the compiled tier's tests use a lower one so
    that short programs reach compiled code."""
    global jit_hot
    if not 1 <= n <= 255:
        raise ValueError("the threshold counts in a byte: 1..255")
    old, jit_hot = jit_hot, n
    return old


cdef inline void jit_heat(Hart h, CodePage *cp, Rec *r, uint64_t cbase) noexcept nogil:
    """A jump reached ``r`` (on ``cp``): compile the region there once it is hot."""
    cdef int64_t i
    if r.op == OP_JIT or not h.jit_on:
        return
    i = RV_PTR_DIFF(r, cp.recs) >> 4
    cp.heat[i] += 1
    if cp.heat[i] == jit_hot:
        jit_compile(h, cp, r, cbase)
