# The C functions compiled code calls on its slow paths (included by riscv_jit.pxi;
# their types and addresses: riscv_jit_contract.pxi).  Those that run an access
# tell the code that called them, in h.jexit, whether the region may go on after
# the instruction (store_slow does so itself).

cdef int resv_clear_call(ResvTable *t, uint8_t *host, int size) noexcept nogil:
    resv_clear(t, host, size)
    return 0


cdef int exec_call(Hart h, Rec *r) noexcept nogil:
    """exec_slow for compiled code (exec_compiled: LR, SC, AMOs, F/D loads and
    stores), h.pc_ and h.cnt set as the run loop sets them; h.jexit
    set unless the access went to RAM through a TLB entry of its page with no flag
    (no device, no code, no watchpoint, no MMU hook): only then does the region go
    on."""
    cdef int op = r.op, res
    cdef bint amo = op_is(op, P_AMO), writes = op_is(op, P_AMO) and op != OP_LR_W and op != OP_LR_D
    cdef uint64_t va = h.x[r.rs1] + (0 if amo else <uint64_t><int64_t>r.imm)
    cdef int size = 4 if op == OP_LR_W or op == OP_SC_W or op == OP_AMO_W or op == OP_FLW else 8
    cdef TlbEntry *e
    h.jexit = 1
    h.exec_calls += 1
    res = exec_slow(h, r)
    if res or (h.hooks_on & HOOK_MMU):
        return res
    if op == OP_FSW or op == OP_FSD:
        return 0                            # (store_slow set h.jexit)
    e = &(h.wt if writes else h.rt)[(va >> 12) & 255]
    if amo and (e.tag & ~RV_TLB_FLAGS) != (va & RV_PAGE_MASK):
        # LR, SC and AMOs translate without filling the entry: fill it as a load
        # or store would have, to see what the page is (and to find it there next
        # time: emit_amo's inline path)
        if tlb_fill(h, va, ACC_W if writes else ACC_R, e):
            return 0                        # (h.jexit stays set)
    h.jexit = e.tag != (va & RV_PAGE_MASK) or (va & 0xfff) + <uint64_t>size > 4096
    return 0


cdef int load_slow_call(Hart h, uint64_t va, int size, uint64_t *v) noexcept nogil:
    """load_slow for compiled code; h.jexit set unless the value was read from RAM
    within one page, with no watchpoint and no MMU hook (a hook or a device may have
    changed anything; the other hooks are called on traps and unmapped accesses,
    which set it anyway): only then does the region go on after the load."""
    cdef int r = load_slow(h, va, size, v)
    cdef TlbEntry *e = &h.rt[(va >> 12) & 255]
    h.jexit = (r != 0 or (h.hooks_on & HOOK_MMU) != 0 or (va & 0xfff) + <uint64_t>size > 4096 or
               (e.tag & RV_TLB_FLAGS) != 0 or e.tag != (va & RV_PAGE_MASK))
    return r
