# The compiled tier's loads and stores (included by riscv_jit.pxi): the guest
# address, the inline TLB probe, and the out-of-line slow paths (stubs) emitted
# after a region's main line.

# -- memory -------------------------------------------------------------------------------

cdef void address(Jit *a, Rec *r) noexcept nogil:
    """rax = x[rs1] + imm."""
    if a.host_of[r.rs1] >= 0:
        op_rm(a, 1, X_LEA, RAX, a.host_of[r.rs1], r.imm)    # lea rax, [reg + imm]
    else:
        src_rax(a, 1, r.rs1)
        if r.imm:
            alu_imm(a, 1, ALU_ADD, RAX, r.imm)


cdef uint8_t *tlb_probe(Jit *a, int32_t o_tlb, int size) noexcept nogil:
    """rax = guest address -> rax = host address, or a jump (returned) on a miss
    (rax still the guest address there)."""
    cdef uint8_t *miss
    op_rr(a, 0, X_MOV, RCX, RAX)                     # mov ecx, eax
    shift_imm(a, 0, SH_SHR, RCX, 7)                      # shr ecx, 7
    alu_imm(a, 0, ALU_AND, RCX, 255 << 5)                 # and ecx, 255 << 5: 32-byte entries
    op_rm(a, 1, X_ADD, RCX, R15, o_tlb)              # add rcx, h.rt / h.wt
    mov_rr(a, RDX, RAX)
    alu_imm(a, 1, ALU_AND, RDX, <int32_t>~(0x1000 - size))    # and rdx, ~(0xfff & ~(size-1))
    op_rm(a, 1, X_CMP, RDX, RCX, 0)                  # cmp rdx, [rcx] (tag)
    miss = jcc32(a, CC_NE)
    op_rm(a, 1, X_ADD, RAX, RCX, 8)                  # add rax, addend
    return miss


cdef int access_size(int op) noexcept nogil:
    if op == OP_LD or op == OP_SD:
        return 8
    if op == OP_LW or op == OP_LWU or op == OP_SW:
        return 4
    if op == OP_LH or op == OP_LHU or op == OP_SH:
        return 2
    return 1


cdef void load_into(Jit *a, int op, int dst, int base) noexcept nogil:
    """dst = the ``op``-sized value at [base], extended as RISC-V says."""
    if op == OP_LD:
        op_rm(a, 1, X_MOV, dst, base, 0)
    elif op == OP_LW:
        op_rm(a, 1, X_MOVSXD, dst, base, 0)             # movsxd
    elif op == OP_LWU:
        op_rm(a, 0, X_MOV, dst, base, 0)
    elif op == OP_LH:
        op0f_rm(a, 1, X0F_MOVSX16, dst, base, 0)
    elif op == OP_LHU:
        op0f_rm(a, 0, X0F_MOVZX16, dst, base, 0)
    elif op == OP_LB:
        op0f_rm(a, 1, X0F_MOVSX8, dst, base, 0)
    else:
        op0f_rm(a, 0, X0F_MOVZX8, dst, base, 0)


cdef void stub(Jit *a, int kind, Rec *r, int64_t off, int k, uint8_t *patch) noexcept nogil:
    cdef Stub *t = &a.stubs[a.nstubs]
    a.nstubs += 1
    t.kind = kind
    t.r = r
    t.off = off
    t.k = k
    t.patch = patch


cdef void emit_load(Jit *a, Rec *r, int64_t off, int k) noexcept nogil:
    cdef int size = access_size(r.op), rd = r.rd
    address(a, r)
    stub(a, STUB_LOAD, r, off, k, tlb_probe(a, a.o_rt, size))
    if rd != 32 and a.host_of[rd] >= 0:
        load_into(a, r.op, a.host_of[rd], RAX)
    else:
        load_into(a, r.op, RAX, RAX)                # (x0: the access all the same)
        if rd != 32:
            stx(a, RAX, rd)


cdef void emit_store(Jit *a, Rec *r, int64_t off, int k) noexcept nogil:
    cdef int size = access_size(r.op), v
    cdef Stub *slow = &a.stubs[a.nstubs]
    address(a, r)
    stub(a, STUB_STORE, r, off, k, tlb_probe(a, a.o_wt, size))
    slow.hit = a.p
    v = rget(a, r.rs2, RDX)                         # (rdx is free once the probe is done)
    if size == 1:
        store8(a, v, RAX, 0)
    elif size == 2:
        store16(a, v, RAX, 0)
    else:
        op_rm(a, size == 8, X_MOV_MR, v, RAX, 0)
    # a reservation held by some hart: clear the ones on these bytes (a way out)
    op_rm(a, 1, X_MOV, RDX, R15, a.o_rs)             # rdx = h.rs
    alu_m_imm8(a, 0, ALU_CMP, RDX, 0, 0)            # cmp dword [rdx], 0  (nactive)
    stub(a, STUB_RESV, r, off, k, jcc32(a, CC_NE))
    slow.back = a.p


cdef void store_beside_code(Jit *a, Stub *t, int size) noexcept nogil:
    """A store's TLB miss (rax = guest address, rcx = its entry, rdx = the address as
    compared): when the entry is its aligned page's with TLB_CODE alone and the
    page's xmap marks none of the halfwords written, store as on a hit; else go on
    to the slow path with rax the guest address again."""
    cdef uint8_t *other
    cdef uint8_t *busy
    alu_imm(a, 1, ALU_OR, RDX, <int32_t>RV_TLB_CODE)     # or rdx, TLB_CODE
    op_rm(a, 1, X_CMP, RDX, RCX, 0)                  # cmp rdx, [rcx] (tag)
    other = jcc32(a, CC_NE)
    op_rm(a, 1, X_MOV, RDX, RCX, 24)                 # rdx = the page's xmap (pad)
    op_rm(a, 1, X_MOV, RCX, RCX, 8)                  # rcx = addend
    op_rr(a, 1, X_ADD, RCX, RAX)                     # rcx = host address
    alu_imm(a, 0, ALU_AND, RAX, 0xfff)                    # eax = the halfword in the page
    shift_imm(a, 0, SH_SHR, RAX, 1)
    cmp_idx_imm8(a, size >> 1 if size > 1 else 1, RDX, RAX, 0)   # any xmap byte of it set?
    busy = jcc32(a, CC_NE)
    mov_rr(a, RAX, RCX)
    jmp_to(a, t.hit)
    here(a, busy)
    address(a, t.r)                                 # the guest address again
    here(a, other)


cdef void emit_stub(Jit *a, Stub *t) noexcept nogil:
    """The slow path of a load or store.  A store that was a plain store into RAM
    (no translated byte hit, no device, no watchpoint: h.jexit clear) goes on in
    the region, its registers reloaded; the others leave it."""
    cdef Rec *r = t.r
    cdef int size = access_size(r.op)
    cdef uint8_t *fail
    cdef uint8_t *out
    here(a, t.patch)
    if t.kind == STUB_STORE:
        store_beside_code(a, t, size)
    writeback(a)
    if t.kind == STUB_RESV:      # rax = host address, rdx = h.rs
        mov_rr(a, RDI, RDX)
        mov_rr(a, RSI, RAX)
        mov_r32_imm32(a, RDX, size)
        call_abs(a, <void *>RESV_CLEAR)
        exit_on(a, t.off + r.len, t.k + 1)
        return
    # rax = guest address: load_slow(h, a, size, &h.jv) / store_slow(h, a, size, value),
    # then leave with its event, or after the instruction (a store may have hit code
    # or a device that changed the memory map), or go on after a plain store
    if t.kind == STUB_LOAD:
        op_rm(a, 1, X_LEA, RCX, R15, a.o_jv)         # lea rcx, h.jv
    else:
        op_rm(a, 1, X_MOV, RCX, RBX, 8 * r.rs2)      # the value, as just stored back
        if size == 4:
            op_rr(a, 0, X_MOV, RCX, RCX)             # mov ecx, ecx (zero-extend)
        elif size == 2:
            op0f_rr(a, 0, X0F_MOVZX16, RCX, RCX)    # movzx ecx, cx
        elif size == 1:
            movzx_r32_r8(a, RCX, RCX)
    mov_rr(a, RSI, RAX)
    mov_rr(a, RDI, R15)
    mov_r32_imm32(a, RDX, size)
    if t.kind == STUB_LOAD:
        call_abs(a, <void *>LOAD_SLOW)
    else:
        call_abs(a, <void *>STORE_SLOW)
    op_rr(a, 0, X_TEST, RAX, RAX)
    fail = jcc32(a, CC_NE)
    if t.kind == STUB_STORE:
        alu_m_imm8(a, 0, ALU_CMP, R15, a.o_jexit, 0)   # cmp dword h.jexit, 0
        out = jcc32(a, CC_NE)
        cache_load(a)                               # (the call clobbered the pool)
        jmp_to(a, t.back)
        here(a, out)
    if t.kind == STUB_LOAD and r.rd != 32:
        op_rm(a, 1, X_LEA, RAX, R15, a.o_jv)         # rax = &h.jv: extend as a fresh load
        load_into(a, r.op, RAX, RAX)
        stx(a, RAX, r.rd)
    exit_on(a, t.off + r.len, t.k + 1)
    here(a, fail)
    exit_event(a, t.off, t.k)
