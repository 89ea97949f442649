# The compiled tier's jumps (included by riscv_jit.pxi): to a pc known when compiling
# (goto_pc: on in the region, into the region headed there, or back to the run
# loop), and the ways out whose target is known only when they run: a jalr's
# (goto_rax) and another page's (cross_page), into the region headed there when
# there is one, else back to the run loop.

cdef void jump_label(Jit *a, int cc, int64_t off) noexcept nogil:
    """jmp (``cc`` < 0) or jcc to the region's instruction at ``off``; patched once
    the whole region is placed when that instruction is still ahead."""
    cdef uint8_t *lbl = a.label[off >> 1]
    cdef uint8_t *after = jmp32(a) if cc < 0 else jcc32(a, cc)
    if lbl != NULL:
        jmp_patch(after, lbl)
    else:
        a.pend_at[a.npend] = after
        a.pend_off[a.npend] = <int>off
        a.npend += 1


cdef uint8_t *chain_into(Jit *a, int32_t disp) noexcept nogil:
    """rdx + disp = a record: jump into its region if it heads one; returns the jcc
    taken when it does not (rcx clobbered)."""
    cdef uint8_t *miss
    op0f_rm(a, 0, X0F_MOVZX16, RCX, RDX, disp)      # movzx ecx, word [rdx + disp]: op
    alu_imm(a, 0, ALU_CMP, RCX, OP_JIT)                   # cmp ecx, OP_JIT
    miss = jcc32(a, CC_NE)
    jmp_m(a, RDX, disp + 8)                         # jmp [rdx + disp + 8]: its code
    return miss


cdef void goto_pc(Jit *a, int64_t off, int k, int jumped) noexcept nogil:
    """Continue at page offset ``off``, ``k`` more retired, after a taken jump
    (``jumped``) or by falling through.  As in the interpreter (the rule above
    run_loop), a jump looks at ``lim`` first: below it, on to the region's
    instruction there or into the region headed there, else back to the
    interpreter (eax 0: it looks too).  A fall-through does not look: on in the
    region, into the region headed there, or back with JIT_WENT_ON."""
    cdef uint8_t *p1 = NULL
    cdef uint8_t *p2
    if k:
        alu_imm(a, 1, ALU_ADD, R14, k)
    if 0 <= off < 4096 and a.state[off >> 1] == IN_REGION:
        if a.label[off >> 1] == NULL:
            join_note(a, <int>(off >> 1))           # a jump ahead: what rcx holds there
        carry_fix(a, off)
        if not jumped:
            jump_label(a, -1, off)                  # (around code the region lacks)
            return
        op_rm(a, 1, X_CMP, R14, R15, a.o_lim)        # cmp r14, h.lim
        jump_label(a, CC_B, off)                    # jb label
        cold(a, COLD_EXIT, off, 0, jmp32(a))        # else out, after the main line
        return
    writeback(a)
    if off < 0 or off >= 4096:                      # another page: looks as the loop does
        imm64(a, RAX, off)
        op_rm(a, 1, X_ADD, RAX, R15, a.o_cbase)      # rax = the target's pc
        cross_page(a)
        return
    if jumped:
        op_rm(a, 1, X_CMP, R14, R15, a.o_lim)        # cmp r14, h.lim
        p1 = jcc32(a, CC_AE)
    op_rm(a, 1, X_MOV, RDX, R15, a.o_recs)           # rdx = the page's records
    p2 = chain_into(a, <int32_t>(off * 8))
    here(a, p2)
    if not jumped:
        exit_on(a, off, 0, why_at(a, off))
        return
    here(a, p1)
    exit_at(a, off, 0, why_at(a, off))


cdef void goto_rax(Jit *a, int k) noexcept nogil:
    """Continue at the virtual pc in rax (jalr); dirty registers already stored."""
    cdef uint8_t *p1
    cdef uint8_t *p2
    cdef uint8_t *p3
    if k:
        alu_imm(a, 1, ALU_ADD, R14, k)
    mov_rr(a, RDX, RAX)
    op_rm(a, 1, X_SUB, RDX, R15, a.o_cbase)          # rdx = rax - cbase
    alu_imm(a, 1, ALU_CMP, RDX, 4096)
    p1 = jcc32(a, CC_AE)                            # another page
    op_rm(a, 1, X_CMP, R14, R15, a.o_lim)
    p2 = jcc32(a, CC_AE)
    shift_imm(a, 1, SH_SHL, RDX, 3)                      # rdx = the records + off*8
    op_rm(a, 1, X_ADD, RDX, R15, a.o_recs)
    p3 = chain_into(a, 0)
    here(a, p2)
    here(a, p3)
    count_exit(a, WHY_JALR)
    op_rm(a, 1, X_MOV_MR, RAX, R15, a.o_jpc)
    zero32(a, RAX)
    jmp_to(a, a.epi)
    here(a, p1)
    cross_page(a)


cdef void cross_page(Jit *a) noexcept nogil:
    """Continue at the pc in rax, on another page (a jump there or a fall off this
    one; ``k`` added, dirty registers stored).  As the run loop's page change: below
    ``lim``, with the fetch TLB's entry for that page (no flag) and the decoded page
    it caches (h.fc, still that physical page's, as fetch_page checks), into the
    region headed there, that page becoming the one being run (h.jcbase, h.jrecs);
    else back to the loop (eax 0, h.jpc = rax), which looks at ``lim`` and changes
    pages itself."""
    cdef uint8_t *out[5]
    cdef int i
    op_rm(a, 1, X_CMP, R14, R15, a.o_lim)            # cmp r14, h.lim
    out[0] = jcc32(a, CC_AE)
    mov_rr(a, RDX, RAX)
    shift_imm(a, 1, SH_SHR, RDX, 12)
    movzx_r32_r8(a, RDX, RDX)                       # edx = the TLB index
    shift_imm(a, 1, SH_SHL, RDX, 5)
    op_rm(a, 1, X_ADD, RDX, R15, a.o_ft)             # rdx = &h.ft[index]
    mov_rr(a, RCX, RAX)
    alu_imm(a, 1, ALU_AND, RCX, -4096)                   # rcx = the virtual page
    op_rm(a, 1, X_CMP, RCX, RDX, 0)                  # its tag, no flag?
    out[1] = jcc32(a, CC_NE)
    op_rm(a, 1, X_MOV, RCX, RDX, 16)                 # rcx = its physical page
    op_rm(a, 1, X_SUB, RDX, R15, a.o_ft)
    shift_imm(a, 1, SH_SHR, RDX, 2)                      # rdx = index * 8
    op_rm(a, 1, X_ADD, RDX, R15, a.o_fc)
    op_rm(a, 1, X_MOV, RDX, RDX, 0)                  # rdx = h.fc[index]
    op_rr(a, 1, X_TEST, RDX, RDX)
    out[2] = jcc32(a, CC_E)
    op_rm(a, 1, X_CMP, RCX, RDX, a.o_cp_page)        # still that page's?
    out[3] = jcc32(a, CC_NE)
    op_rm(a, 1, X_LEA, RDX, RDX, a.o_cp_recs)        # its records
    op_rm(a, 1, X_MOV_MR, RDX, R15, a.o_recs)
    mov_rr(a, RCX, RAX)
    alu_imm(a, 1, ALU_AND, RCX, -4096)
    op_rm(a, 1, X_MOV_MR, RCX, R15, a.o_cbase)
    mov_rr(a, RCX, RAX)
    alu_imm(a, 0, ALU_AND, RCX, 0xfff)
    shift_imm(a, 1, SH_SHL, RCX, 3)                      # the record: recs + off*8
    op_rr(a, 1, X_ADD, RDX, RCX)
    out[4] = chain_into(a, 0)
    for i in range(5):
        here(a, out[i])
    count_exit(a, WHY_PAGE)
    op_rm(a, 1, X_MOV_MR, RAX, R15, a.o_jpc)
    zero32(a, RAX)
    jmp_to(a, a.epi)
