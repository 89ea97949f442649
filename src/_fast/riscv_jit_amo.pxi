# LR, SC and the AMOs in compiled code: one host atomic where x86-64 has it
# (amoswap, amoadd; amoor, amoand, amoxor into x0: Linux's locks and bit
# operations), a lock cmpxchg loop for the rest (amoor/and/xor whose old value is
# kept, amomin/max[u]) (included by riscv_jit.pxi after riscv_jit_mem.pxi).
#
# The inline path is exec_amo's (riscv_mmu.pxi) on an aligned access to a page the
# TLB holds with no flag (plain RAM: no device, no code, no dirty log, no watchpoint;
# LR probes h.rt, SC and AMOs h.wt, as amo_addr does): the same reservation table
# updates, SC a compare-and-swap against the value LR loaded when the harts run on
# threads (a.smp), a plain store otherwise, and other harts' reservations on the
# bytes written cleared by resv_clear.  Every other case -- misaligned (the trap),
# a TLB miss or a flagged entry -- runs as before: emit_exec, a call of
# the interpreter's exec_slow.  h.pc_ and h.cnt are set first on both paths, as the
# run loop sets them for these ops: a device read later in the region (the CLINT's
# instruction-counted mtime) sees the count of the last such op, in both tiers.

cdef inline bint amo_inline(Rec *r) noexcept nogil:
    """Whether the op has an inline path: LR, SC and every AMO (funct5 in rs3:
    amoadd 0x00, amoswap 0x01, amoxor 0x04, amoor 0x08, amoand 0x0c, amomin 0x10,
    amomax 0x14, amominu 0x18, amomaxu 0x1c)."""
    cdef int op = r.op
    return (op == OP_LR_W or op == OP_LR_D or op == OP_SC_W or op == OP_SC_D or
            ((op == OP_AMO_W or op == OP_AMO_D) and
             r.rs3 in (0x00, 0x01, 0x04, 0x08, 0x0c, 0x10, 0x14, 0x18, 0x1c)))


cdef inline bint amo_one_op(Rec *r) noexcept nogil:
    """Whether the AMO is one host atomic: amoadd (xadd), amoswap (xchg); amoor,
    amoand, amoxor whose old value goes nowhere (rd = x0: Linux's set_bit,
    clear_bit, change_bit).  The others are a compare-and-swap loop."""
    return (r.rs3 == 0x00 or r.rs3 == 0x01 or
            ((r.rd == 0 or r.rd == 32) and (r.rs3 == 0x08 or r.rs3 == 0x0c or r.rs3 == 0x04)))


cdef void amo_cas_loop(Jit *a, Rec *r, bint q) noexcept nogil:
    """rax = the host address -> the AMO done as a lock cmpxchg loop (the new value
    from the old one in rax and rs2, read afresh each try), rdx = the old value,
    rax = the host address again."""
    cdef int f = r.rs3
    cdef uint8_t *again
    cdef uint8_t *retry
    mov_rr(a, RCX, RAX)                              # rcx = host address
    op_rm(a, q, X_MOV, RAX, RCX, 0)                  # rax = the old value
    again = a.p
    if f == 0x04 or f == 0x08 or f == 0x0c:
        op_rr(a, q, X_MOV, RDX, RAX)
        op_src(a, q, X_XOR if f == 0x04 else (X_OR if f == 0x08 else X_AND), RDX, r.rs2)
    else:                                            # min/max: rs2, or the old one
        op_src(a, q, X_MOV, RDX, r.rs2)
        op_rr(a, q, X_CMP, RAX, RDX)                 # old - rs2
        op0f_rr(a, q, X0F_CMOV | (CC_L if f == 0x10 else (CC_G if f == 0x14 else
                                  (CC_B if f == 0x18 else CC_A))), RDX, RAX)
    b1(a, X_LOCK)
    op0f_rm(a, q, X0F_CMPXCHG, RDX, RCX, 0)          # lock cmpxchg [rcx], rdx/edx
    retry = jcc32(a, CC_NE)                          # changed meanwhile: rax = it, again
    jmp_patch(retry, again)
    mov_rr(a, RDX, RAX)                              # rdx = the old value
    mov_rr(a, RAX, RCX)


cdef void rd_from_rdx(Jit *a, int rd, bint w) noexcept nogil:
    """Guest register ``rd`` = rdx (edx sign-extended when ``w``); x0 left alone."""
    if rd == 0 or rd == 32:
        return
    if w:
        op_rr(a, 1, X_MOVSXD, RDX, RDX)              # movsxd rdx, edx
    reg_to(a, rd, RDX)


cdef void slot_entry(Jit *a) noexcept nogil:
    """rcx = h.rs, rdx = &h.rs.addr[h.resv_slot] - 8 (the slot's pointer at [rdx + 8])."""
    op_rm(a, 1, X_MOVSXD, RDX, R15, a.o_resv_slot)   # movsxd rdx, h.resv_slot
    shift_imm(a, 1, SH_SHL, RDX, 3)
    op_rm(a, 1, X_MOV, RCX, R15, a.o_rs)             # rcx = h.rs
    op_rr(a, 1, X_ADD, RDX, RCX)


cdef void resv_others(Jit *a, int size) noexcept nogil:
    """After a write of ``size`` bytes at the host address in rax: when some hart
    holds a reservation (h.rs.nactive), resv_clear on those bytes (a call: the
    registers stored and reloaded around it)."""
    cdef uint8_t *none = resv_held(a, CC_E)
    writeback(a)
    mov_rr(a, RDI, RDX)
    mov_rr(a, RSI, RAX)
    mov_r32_imm32(a, RDX, size)
    call_abs(a, <void *>RESV_CLEAR)
    cache_load(a)
    here(a, none)


cdef void emit_amo(Jit *a, Rec *r, int64_t off, int k) noexcept nogil:
    """The ops of amo_inline: inline on plain RAM, else emit_exec (after a jump
    over it on the inline path)."""
    cdef int op = r.op, v
    cdef bint w = op == OP_LR_W or op == OP_SC_W or op == OP_AMO_W
    cdef int size = 4 if w else 8
    cdef bint q = not w                              # (REX.W: the D ops)
    cdef bint lr = op == OP_LR_W or op == OP_LR_D
    cdef uint8_t *miss
    cdef uint8_t *done
    cdef uint8_t *fail
    cdef uint8_t *held
    cdef uint8_t *lost
    cdef uint8_t *out
    sync_pc_cnt(a, off, k)                           # as the run loop does for these ops
    src_rax(a, 1, r.rs1)                             # rax = the address (no offset)
    miss = tlb_probe_index(a, a.o_rt if lr else a.o_wt, size)   # (misaligned: a miss)
    op_rm(a, 1, X_ADD, RAX, RCX, 8)                  # rax = host address
    if lr:
        op_rm(a, q, X_MOV, RDX, RAX, 0)              # rdx = the word, zero-extended
        op_rm(a, 1, X_MOV_MR, RDX, R15, a.o_resv_val)   # h.resv_val = it
        rd_from_rdx(a, r.rd, w)
        slot_entry(a)
        alu_imm(a, 1, ALU_AND, RAX, -8)              # the reservation: rax & ~7
        alu_m_imm8(a, 1, ALU_CMP, RDX, 8, 0)        # held already?
        held = jcc32(a, CC_NE)
        alu_m_imm8(a, 0, ALU_ADD, RCX, 0, 1)        # h.rs.nactive += 1
        here(a, held)
        op_rm(a, 1, X_MOV_MR, RAX, RDX, 8)           # h.rs.addr[slot] = it
    elif op == OP_SC_W or op == OP_SC_D:
        slot_entry(a)
        op_rm(a, 1, X_MOV, RCX, RDX, 8)              # rcx = h.rs.addr[slot]
        op_rr(a, 1, X_TEST, RCX, RCX)
        fail = jcc32(a, CC_E)                        # none: fails, nothing to clear
        op_rm(a, 1, X_LEA, RDX, RDX, 8)              # rdx = &h.rs.addr[slot]
        alu_m_imm8(a, 1, ALU_AND, RDX, 0, 0)        # h.rs.addr[slot] = NULL
        op_rm(a, 1, X_MOV, RDX, R15, a.o_rs)
        alu_m_imm8(a, 0, ALU_SUB, RDX, 0, 1)        # h.rs.nactive -= 1
        mov_rr(a, RDX, RAX)
        alu_imm(a, 1, ALU_AND, RDX, -8)
        op_rr(a, 1, X_CMP, RCX, RDX)                 # reserved here?
        lost = jcc32(a, CC_NE)                       # another line: fails (cleared)
        v = rget(a, r.rs2, RDX)
        if a.smp:                                    # harts on threads: as QEMU's MTTCG
            mov_rr(a, RCX, RAX)
            if v != RDX:
                mov_rr(a, RDX, v)
            op_rm(a, 1, X_MOV, RAX, R15, a.o_resv_val)   # expected: what LR loaded
            b1(a, X_LOCK)
            op0f_rm(a, q, X0F_CMPXCHG, RDX, RCX, 0)    # lock cmpxchg [rcx], edx/rdx
            mov_rr(a, RAX, RCX)                      # (flags kept: mov)
            out = jcc32(a, CC_NE)                    # changed since LR: fails
        else:
            op_rm(a, q, X_MOV_MR, v, RAX, 0)         # the store
        resv_others(a, size)
        zero32(a, RDX)
        rd_from_rdx(a, r.rd, 0)                      # rd = 0: done
        done = jmp32(a)
        here(a, fail)
        here(a, lost)
        if a.smp:
            here(a, out)
        mov_r32_imm32(a, RDX, 1)
        rd_from_rdx(a, r.rd, 0)                      # rd = 1: failed
        here(a, done)
    elif not amo_one_op(r):
        amo_cas_loop(a, r, q)
        rd_from_rdx(a, r.rd, w)
        resv_others(a, size)
    else:                                            # one host atomic
        v = rget(a, r.rs2, RDX)
        if v != RDX:
            mov_rr(a, RDX, v)
        if r.rs3 == 0x01:
            op_rm(a, q, X_XCHG, RDX, RAX, 0)         # xchg [rax], edx/rdx
        elif r.rs3 != 0x00:                          # (rd = x0: the old value unused)
            b1(a, X_LOCK)                            # lock or/and/xor [rax], edx/rdx
            op_rm(a, q, X_OR_MR if r.rs3 == 0x08 else (X_AND_MR if r.rs3 == 0x0c else X_XOR_MR),
                  RDX, RAX, 0)
        else:
            b1(a, X_LOCK)
            op0f_rm(a, q, X0F_XADD, RDX, RAX, 0)     # lock xadd [rax], edx/rdx
        rd_from_rdx(a, r.rd, w)
        resv_others(a, size)
    done = jmp32(a)
    here(a, miss)
    emit_exec(a, r, off, k)
    here(a, done)
