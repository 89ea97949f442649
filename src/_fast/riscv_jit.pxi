# The RISC-V hart's second tier: hot blocks of integer code compiled to x86-64.
#
# The interpreter counts taken jumps to each record of a code page; a record
# reached JIT_HOT times becomes the head of a compiled block (op OP_JIT, the
# code's address in the record's imm/bits bytes).  A block is straight-line
# RV64I/M code, loads and stores included, running on until an unconditional
# jump, an instruction it does not compile, the end of the page or JIT_MAX
# instructions; conditional branches leave it when taken.  Every exit to a pc
# on the same page jumps straight into that record's block when it has one
# (no return to the interpreter) unless the instruction budget ``lim`` is
# reached, so a hot loop runs without leaving machine code.
#
# Guest state stays in the Hart (x[] in memory, as in the interpreter); the
# code keeps in callee-saved registers: rbx = &x[0], rbp = the page's records,
# r12 = the page's virtual base, r14 = instructions retired in this run()
# (the interpreter's cnt), r15 = the Hart.  Loads and stores probe the same
# TLBs inline; a miss calls load_slow/store_slow, and the block then returns
# to the interpreter (with the event, or at the next instruction: a store may
# have changed code or the memory map).  So the JIT changes no semantics: it
# runs what the interpreter would, with the same counts, and every other
# instruction (CSRs, FP, atomics, system, division) stays in the interpreter.
#
# Invalidation: decoded records are dropped when their page is reused, on
# code_flush and on stores into the page (code_invalidate); OP_JIT heads go
# with them (jit_unlink), so no stale block is ever entered.  The code buffer
# is per hart; when full, every head is unlinked and it starts over.

from posix.mman cimport mmap, munmap, PROT_READ, PROT_WRITE, PROT_EXEC, MAP_PRIVATE, MAP_ANONYMOUS

cdef extern from *:
    """
    typedef int (*rv_jit_entry_t)(void *code, void *hart, uint64_t *x, void *recs,
                                  uint64_t cbase, uint64_t cnt);
    #define RV_JIT_CALL(tramp, code, h, x, recs, cbase, cnt) \
        (((rv_jit_entry_t)(tramp))((code), (void *)(h), (x), (void *)(recs), (cbase), (cnt)))
    #define RV_PTR_DIFF(a, b) ((int64_t)((char *)(a) - (char *)(b)))
    #if defined(__x86_64__) && defined(__linux__)
    #define RV_JIT_HOST 1
    #else
    #define RV_JIT_HOST 0
    #endif
    """
    int RV_JIT_CALL(uint8_t *tramp, uint8_t *code, Hart h, uint64_t *x, Rec *recs,
                    uint64_t cbase, uint64_t cnt) noexcept nogil
    int64_t RV_PTR_DIFF(void *a, void *b) noexcept nogil
    int RV_JIT_HOST

cdef enum:
    JIT_HOT = 8                 # taken jumps to a record before it is compiled
    JIT_MAX = 64                # instructions per block
    JIT_BYTES = 16 << 20        # code buffer per hart
    JIT_ROOM = 24 << 10         # the most one block can take (checked before compiling)

# x86-64 registers
cdef enum:
    RAX = 0
    RCX = 1
    RDX = 2
    RBX = 3
    RSP = 4
    RBP = 5
    RSI = 6
    RDI = 7
    R11 = 11
    R12 = 12
    R14 = 14
    R15 = 15

# condition codes (jcc = 0x0f 0x80+cc, setcc = 0x0f 0x90+cc)
cdef enum:
    CC_B = 0x2
    CC_AE = 0x3
    CC_E = 0x4
    CC_NE = 0x5
    CC_L = 0xc
    CC_GE = 0xd


cdef struct Asm:
    uint8_t *p
    # field offsets inside the Hart object
    int32_t o_lim, o_jpc, o_jcnt, o_jv, o_rt, o_wt, o_rs


cdef inline void b1(Asm *a, int v) noexcept nogil:
    a.p[0] = <uint8_t>v
    a.p += 1

cdef inline void d4(Asm *a, int64_t v) noexcept nogil:
    cdef int32_t w = <int32_t>v
    memcpy(a.p, &w, 4)
    a.p += 4

cdef inline void q8(Asm *a, uint64_t v) noexcept nogil:
    memcpy(a.p, &v, 8)
    a.p += 8

cdef inline void rex(Asm *a, int w, int reg, int rm) noexcept nogil:
    cdef int v = 0x40 | (8 if w else 0) | (4 if reg & 8 else 0) | (1 if rm & 8 else 0)
    if v != 0x40:
        b1(a, v)

cdef inline void mem(Asm *a, int reg, int base, int32_t disp) noexcept nogil:
    """ModRM (+SIB) for [base + disp32]."""
    b1(a, 0x80 | ((reg & 7) << 3) | (base & 7))
    if (base & 7) == RSP:
        b1(a, 0x24)
    d4(a, disp)

cdef inline void op_rm(Asm *a, int w, int opc, int reg, int base, int32_t disp) noexcept nogil:
    """``opc reg, [base+disp]`` (or the store direction, by opcode); one-byte opcodes."""
    rex(a, w, reg, base)
    b1(a, opc)
    mem(a, reg, base, disp)

cdef inline void op_rr(Asm *a, int w, int opc, int reg, int rm) noexcept nogil:
    rex(a, w, reg, rm)
    b1(a, opc)
    b1(a, 0xc0 | ((reg & 7) << 3) | (rm & 7))

cdef inline void ldx(Asm *a, int reg, int i) noexcept nogil:
    op_rm(a, 1, 0x8b, reg, RBX, 8 * i)              # mov reg, x[i]

cdef inline void ldx32(Asm *a, int reg, int i) noexcept nogil:
    op_rm(a, 0, 0x8b, reg, RBX, 8 * i)              # mov reg32, x[i]

cdef inline void stx(Asm *a, int reg, int i) noexcept nogil:
    op_rm(a, 1, 0x89, reg, RBX, 8 * i)              # mov x[i], reg

cdef inline void imm64(Asm *a, int reg, int64_t v) noexcept nogil:
    if -0x80000000 <= v <= 0x7fffffff:
        rex(a, 1, 0, reg)
        b1(a, 0xc7)
        b1(a, 0xc0 | (reg & 7))
        d4(a, v)                                    # mov reg, simm32
    else:
        rex(a, 1, 0, reg)
        b1(a, 0xb8 | (reg & 7))
        q8(a, <uint64_t>v)                          # mov reg, imm64

cdef inline void alu_imm(Asm *a, int w, int ext, int reg, int32_t v) noexcept nogil:
    rex(a, w, 0, reg)
    b1(a, 0x81)
    b1(a, 0xc0 | (ext << 3) | (reg & 7))
    d4(a, v)

cdef inline void shift_imm(Asm *a, int w, int ext, int reg, int n) noexcept nogil:
    rex(a, w, 0, reg)
    b1(a, 0xc1)
    b1(a, 0xc0 | (ext << 3) | (reg & 7))
    b1(a, n)

cdef inline void movsxd_rax(Asm *a) noexcept nogil:
    b1(a, 0x48); b1(a, 0x63); b1(a, 0xc0)           # movsxd rax, eax

cdef inline void setcc_rax(Asm *a, int cc) noexcept nogil:
    b1(a, 0x0f); b1(a, 0x90 | cc); b1(a, 0xc0)      # setcc al
    b1(a, 0x0f); b1(a, 0xb6); b1(a, 0xc0)           # movzx eax, al

cdef inline uint8_t *jcc32(Asm *a, int cc) noexcept nogil:
    """A forward jcc; returns where to patch (see ``here``)."""
    b1(a, 0x0f); b1(a, 0x80 | cc)
    d4(a, 0)
    return a.p

cdef inline uint8_t *jmp32(Asm *a) noexcept nogil:
    b1(a, 0xe9)
    d4(a, 0)
    return a.p

cdef inline void here(Asm *a, uint8_t *after) noexcept nogil:
    """Point the rel32 that ends at ``after`` at the current position."""
    cdef int32_t rel = <int32_t>(a.p - after)
    memcpy(after - 4, &rel, 4)

cdef inline void jmp_to(Asm *a, uint8_t *target) noexcept nogil:
    b1(a, 0xe9)
    d4(a, <int64_t>(target - (a.p + 4)))


cdef void exit_at(Asm *a, uint8_t *epilogue, int64_t off, int k) noexcept nogil:
    """Leave for the interpreter at page offset ``off``; ``k`` more retired (eax = 0)."""
    if k:
        alu_imm(a, 1, 0, R14, k)                    # add r14, k
    op_rr(a, 1, 0x8b, RAX, R12)                     # mov rax, r12
    if off:
        alu_imm(a, 1, 0, RAX, <int32_t>off)         # add rax, off
    op_rm(a, 1, 0x89, RAX, R15, a.o_jpc)            # h.jpc = rax
    b1(a, 0x31); b1(a, 0xc0)                        # xor eax, eax
    jmp_to(a, epilogue)


cdef void exit_event(Asm *a, uint8_t *epilogue, int64_t off, int k) noexcept nogil:
    """Leave with the event in eax, the instruction at ``off`` not retired."""
    if k:
        alu_imm(a, 1, 0, R14, k)
    op_rr(a, 1, 0x8b, RCX, R12)
    if off:
        alu_imm(a, 1, 0, RCX, <int32_t>off)
    op_rm(a, 1, 0x89, RCX, R15, a.o_jpc)
    jmp_to(a, epilogue)


cdef void goto_pc(Asm *a, uint8_t *epilogue, int64_t off, int k) noexcept nogil:
    """Continue at page offset ``off``: into its block when it has one and the
    budget allows, else back to the interpreter."""
    cdef uint8_t *p1
    cdef uint8_t *p2
    cdef uint8_t *p3
    if off < 0 or off >= 4096:
        exit_at(a, epilogue, off, k)
        return
    if k:
        alu_imm(a, 1, 0, R14, k)
    op_rm(a, 1, 0x3b, R14, R15, a.o_lim)            # cmp r14, h.lim
    p1 = jcc32(a, CC_AE)
    b1(a, 0x0f); b1(a, 0xb7)                        # movzx eax, word [rbp + off*8]
    mem(a, RAX, RBP, <int32_t>(off * 8))
    alu_imm(a, 0, 7, RAX, OP_JIT)                   # cmp eax, OP_JIT
    p2 = jcc32(a, CC_NE)
    b1(a, 0xff)                                     # jmp [rbp + off*8 + 8]
    mem(a, 4, RBP, <int32_t>(off * 8 + 8))
    here(a, p1)
    here(a, p2)
    exit_at(a, epilogue, off, 0)


cdef void goto_rax(Asm *a, uint8_t *epilogue, int k) noexcept nogil:
    """Continue at the virtual pc in rax (jalr)."""
    cdef uint8_t *p1
    cdef uint8_t *p2
    cdef uint8_t *p3
    alu_imm(a, 1, 0, R14, k)
    op_rr(a, 1, 0x8b, RDX, RAX)                     # mov rdx, rax
    op_rr(a, 1, 0x2b, RDX, R12)                     # sub rdx, r12
    alu_imm(a, 1, 7, RDX, 4096)                     # cmp rdx, 4096
    p1 = jcc32(a, CC_AE)
    op_rm(a, 1, 0x3b, R14, R15, a.o_lim)
    p2 = jcc32(a, CC_AE)
    shift_imm(a, 1, 4, RDX, 3)                      # shl rdx, 3
    op_rr(a, 1, 0x03, RDX, RBP)                     # add rdx, rbp
    b1(a, 0x0f); b1(a, 0xb7)                        # movzx ecx, word [rdx]
    mem(a, RCX, RDX, 0)
    alu_imm(a, 0, 7, RCX, OP_JIT)
    p3 = jcc32(a, CC_NE)
    b1(a, 0xff)                                     # jmp [rdx + 8]
    mem(a, 4, RDX, 8)
    here(a, p1)
    here(a, p2)
    here(a, p3)
    op_rm(a, 1, 0x89, RAX, R15, a.o_jpc)            # h.jpc = rax
    b1(a, 0x31); b1(a, 0xc0)
    jmp_to(a, epilogue)


cdef void call_abs(Asm *a, void *fn) noexcept nogil:
    imm64(a, R11, <int64_t><uintptr_t>fn)
    b1(a, 0x41); b1(a, 0xff); b1(a, 0xd3)           # call r11


cdef int resv_clear_call(ResvTable *t, uint8_t *host, int size) noexcept nogil:
    resv_clear(t, host, size)
    return 0


cdef void tlb_probe(Asm *a, int32_t o_tlb, int size) noexcept nogil:
    """rax = guest address; leaves rcx = the TLB entry and ZF clear on a miss."""
    op_rr(a, 1, 0x8b, RCX, RAX)                     # mov rcx, rax
    shift_imm(a, 1, 5, RCX, 12)                     # shr rcx, 12
    alu_imm(a, 0, 4, RCX, 255)                      # and ecx, 255
    b1(a, 0x48); b1(a, 0x8d); b1(a, 0x0c); b1(a, 0x49)   # lea rcx, [rcx + rcx*2]
    shift_imm(a, 1, 4, RCX, 3)                      # shl rcx, 3  (24-byte entries)
    op_rm(a, 1, 0x03, RCX, R15, o_tlb)              # add rcx, h.rt / h.wt
    op_rr(a, 1, 0x8b, RDX, RAX)                     # mov rdx, rax
    alu_imm(a, 1, 4, RDX, <int32_t>~(0x1000 - size))    # and rdx, ~(0xfff & ~(size-1))
    op_rm(a, 1, 0x3b, RDX, RCX, 0)                  # cmp rdx, [rcx] (tag)


cdef int emit_load(Asm *a, uint8_t *epilogue, Rec *r, int64_t off, int k) noexcept nogil:
    cdef int size, op = r.op
    cdef uint8_t *miss
    cdef uint8_t *done
    size = 8 if op == OP_LD else (4 if op == OP_LW or op == OP_LWU else
                                  (2 if op == OP_LH or op == OP_LHU else 1))
    ldx(a, RAX, r.rs1)
    alu_imm(a, 1, 0, RAX, r.imm)                    # a = x[rs1] + imm
    tlb_probe(a, a.o_rt, size)
    miss = jcc32(a, CC_NE)
    op_rm(a, 1, 0x03, RAX, RCX, 8)                  # add rax, addend: the host address
    if op == OP_LD:
        op_rm(a, 1, 0x8b, RAX, RAX, 0)
    elif op == OP_LW:
        op_rm(a, 1, 0x63, RAX, RAX, 0)              # movsxd
    elif op == OP_LWU:
        op_rm(a, 0, 0x8b, RAX, RAX, 0)
    elif op == OP_LH:
        b1(a, 0x48); b1(a, 0x0f); b1(a, 0xbf); mem(a, RAX, RAX, 0)
    elif op == OP_LHU:
        b1(a, 0x0f); b1(a, 0xb7); mem(a, RAX, RAX, 0)
    elif op == OP_LB:
        b1(a, 0x48); b1(a, 0x0f); b1(a, 0xbe); mem(a, RAX, RAX, 0)
    else:
        b1(a, 0x0f); b1(a, 0xb6); mem(a, RAX, RAX, 0)
    if r.rd != 32:
        stx(a, RAX, r.rd)
    done = jmp32(a)
    # miss: load_slow(h, a, size, &h.jv), then leave (with its event, or after it)
    here(a, miss)
    op_rr(a, 1, 0x8b, RSI, RAX)                     # rsi = a
    op_rr(a, 1, 0x8b, RDI, R15)                     # rdi = h
    b1(a, 0xba); d4(a, size)                        # mov edx, size
    op_rm(a, 1, 0x8d, RCX, R15, a.o_jv)             # lea rcx, h.jv
    call_abs(a, <void *>load_slow)
    b1(a, 0x85); b1(a, 0xc0)                        # test eax, eax
    miss = jcc32(a, CC_NE)
    op_rm(a, 1, 0x8b, RAX, R15, a.o_jv)
    if op == OP_LW:
        movsxd_rax(a)
    elif op == OP_LH:
        b1(a, 0x48); b1(a, 0x0f); b1(a, 0xbf); b1(a, 0xc0)    # movsx rax, ax
    elif op == OP_LB:
        b1(a, 0x48); b1(a, 0x0f); b1(a, 0xbe); b1(a, 0xc0)    # movsx rax, al
    if r.rd != 32:
        stx(a, RAX, r.rd)
    exit_at(a, epilogue, off + r.len, k + 1)
    here(a, miss)
    exit_event(a, epilogue, off, k)
    here(a, done)
    return 0


cdef int emit_store(Asm *a, uint8_t *epilogue, Rec *r, int64_t off, int k) noexcept nogil:
    cdef int size, op = r.op
    cdef uint8_t *miss
    cdef uint8_t *done
    cdef uint8_t *noresv
    size = 8 if op == OP_SD else (4 if op == OP_SW else (2 if op == OP_SH else 1))
    ldx(a, RAX, r.rs1)
    alu_imm(a, 1, 0, RAX, r.imm)
    tlb_probe(a, a.o_wt, size)
    miss = jcc32(a, CC_NE)
    op_rm(a, 1, 0x03, RAX, RCX, 8)                  # rax = host address
    ldx(a, RCX, r.rs2)
    if op == OP_SD:
        op_rm(a, 1, 0x89, RCX, RAX, 0)
    elif op == OP_SW:
        op_rm(a, 0, 0x89, RCX, RAX, 0)
    elif op == OP_SH:
        b1(a, 0x66); op_rm(a, 0, 0x89, RCX, RAX, 0)
    else:
        op_rm(a, 0, 0x88, RCX, RAX, 0)              # mov [rax], cl
    # reservations of other harts on these bytes: resv_clear when any is held
    op_rm(a, 1, 0x8b, RDI, R15, a.o_rs)             # rdi = h.rs
    b1(a, 0x83); b1(a, 0x3f); b1(a, 0x00)           # cmp dword [rdi], 0  (nactive)
    noresv = jcc32(a, CC_E)
    op_rr(a, 1, 0x8b, RSI, RAX)
    b1(a, 0xba); d4(a, size)
    call_abs(a, <void *>resv_clear_call)
    here(a, noresv)
    done = jmp32(a)
    here(a, miss)
    op_rr(a, 1, 0x8b, RSI, RAX)
    op_rr(a, 1, 0x8b, RDI, R15)
    b1(a, 0xba); d4(a, size)
    ldx(a, RCX, r.rs2)
    if size == 4:
        op_rr(a, 0, 0x8b, RCX, RCX)                 # mov ecx, ecx (zero-extend)
    elif size == 2:
        b1(a, 0x0f); b1(a, 0xb7); b1(a, 0xc9)       # movzx ecx, cx
    elif size == 1:
        b1(a, 0x0f); b1(a, 0xb6); b1(a, 0xc9)       # movzx ecx, cl
    call_abs(a, <void *>store_slow)
    b1(a, 0x85); b1(a, 0xc0)
    miss = jcc32(a, CC_NE)
    exit_at(a, epilogue, off + r.len, k + 1)
    here(a, miss)
    exit_event(a, epilogue, off, k)
    here(a, done)
    return 0


cdef inline int alu3(Asm *a, int w, int opc, Rec *r) noexcept nogil:
    """rd = rs1 <op> rs2 (opc: the ``r, r/m`` form), 32-bit ops sign-extended."""
    if r.rd == 32:
        return 0
    if w:
        ldx(a, RAX, r.rs1)
    else:
        ldx32(a, RAX, r.rs1)
    op_rm(a, w, opc, RAX, RBX, 8 * r.rs2)
    if not w:
        movsxd_rax(a)
    stx(a, RAX, r.rd)
    return 0


cdef inline int alui(Asm *a, int w, int ext, Rec *r) noexcept nogil:
    if r.rd == 32:
        return 0
    if w:
        ldx(a, RAX, r.rs1)
    else:
        ldx32(a, RAX, r.rs1)
    alu_imm(a, w, ext, RAX, r.imm)
    if not w:
        movsxd_rax(a)
    stx(a, RAX, r.rd)
    return 0


cdef inline int shifti(Asm *a, int w, int ext, Rec *r) noexcept nogil:
    if r.rd == 32:
        return 0
    if w:
        ldx(a, RAX, r.rs1)
    else:
        ldx32(a, RAX, r.rs1)
    shift_imm(a, w, ext, RAX, r.imm)
    if not w:
        movsxd_rax(a)
    stx(a, RAX, r.rd)
    return 0


cdef inline int shiftr(Asm *a, int w, int ext, Rec *r) noexcept nogil:
    if r.rd == 32:
        return 0
    if w:
        ldx(a, RAX, r.rs1)
    else:
        ldx32(a, RAX, r.rs1)
    ldx(a, RCX, r.rs2)
    rex(a, w, 0, RAX)
    b1(a, 0xd3); b1(a, 0xc0 | (ext << 3))           # shl/shr/sar rax, cl (count masked)
    if not w:
        movsxd_rax(a)
    stx(a, RAX, r.rd)
    return 0


cdef inline int setcmp(Asm *a, Rec *r, int cc, int with_imm) noexcept nogil:
    if r.rd == 32:
        return 0
    ldx(a, RAX, r.rs1)
    if with_imm:
        alu_imm(a, 1, 7, RAX, r.imm)
    else:
        op_rm(a, 1, 0x3b, RAX, RBX, 8 * r.rs2)
    setcc_rax(a, cc)
    stx(a, RAX, r.rd)
    return 0


cdef inline int jit_simple(int op) noexcept nogil:
    """Ops compiled inline that neither jump nor touch memory."""
    return ((OP_ADDI <= op <= OP_SRAW) or op == OP_LUI or op == OP_AUIPC or op == OP_MUL or
            op == OP_MULW or op == OP_MULH or op == OP_MULHU or op == OP_DIVU or
            op == OP_REMU or op == OP_NOP or op == OP_MV or op == OP_LI)


cdef int emit_simple(Asm *a, Rec *r, int64_t off) noexcept nogil:
    cdef int op = r.op
    cdef uint8_t *pz
    cdef uint8_t *pd
    if op == OP_ADDI:
        return alui(a, 1, 0, r)
    if op == OP_ANDI:
        return alui(a, 1, 4, r)
    if op == OP_ORI:
        return alui(a, 1, 1, r)
    if op == OP_XORI:
        return alui(a, 1, 6, r)
    if op == OP_ADDIW:
        return alui(a, 0, 0, r)
    if op == OP_SLTI:
        return setcmp(a, r, CC_L, 1)
    if op == OP_SLTIU:
        return setcmp(a, r, CC_B, 1)
    if op == OP_SLT:
        return setcmp(a, r, CC_L, 0)
    if op == OP_SLTU:
        return setcmp(a, r, CC_B, 0)
    if op == OP_ADD:
        return alu3(a, 1, 0x03, r)
    if op == OP_SUB:
        return alu3(a, 1, 0x2b, r)
    if op == OP_AND:
        return alu3(a, 1, 0x23, r)
    if op == OP_OR:
        return alu3(a, 1, 0x0b, r)
    if op == OP_XOR:
        return alu3(a, 1, 0x33, r)
    if op == OP_ADDW:
        return alu3(a, 0, 0x03, r)
    if op == OP_SUBW:
        return alu3(a, 0, 0x2b, r)
    if op == OP_SLLI:
        return shifti(a, 1, 4, r)
    if op == OP_SRLI:
        return shifti(a, 1, 5, r)
    if op == OP_SRAI:
        return shifti(a, 1, 7, r)
    if op == OP_SLLIW:
        return shifti(a, 0, 4, r)
    if op == OP_SRLIW:
        return shifti(a, 0, 5, r)
    if op == OP_SRAIW:
        return shifti(a, 0, 7, r)
    if op == OP_SLL:
        return shiftr(a, 1, 4, r)
    if op == OP_SRL:
        return shiftr(a, 1, 5, r)
    if op == OP_SRA:
        return shiftr(a, 1, 7, r)
    if op == OP_SLLW:
        return shiftr(a, 0, 4, r)
    if op == OP_SRLW:
        return shiftr(a, 0, 5, r)
    if op == OP_SRAW:
        return shiftr(a, 0, 7, r)
    if r.rd == 32 or op == OP_NOP:
        return 0
    if op == OP_LUI or op == OP_LI:
        imm64(a, RAX, r.imm)
    elif op == OP_MV:
        ldx(a, RAX, r.rs1)
    elif op == OP_AUIPC:
        imm64(a, RAX, off + <int64_t>r.imm)
        op_rr(a, 1, 0x03, RAX, R12)                 # add rax, r12
    elif op == OP_MUL or op == OP_MULW:
        if op == OP_MUL:
            ldx(a, RAX, r.rs1)
        else:
            ldx32(a, RAX, r.rs1)
        rex(a, op == OP_MUL, RAX, RBX)
        b1(a, 0x0f); b1(a, 0xaf); mem(a, RAX, RBX, 8 * r.rs2)    # imul rax, x[rs2]
        if op == OP_MULW:
            movsxd_rax(a)
    elif op == OP_MULH or op == OP_MULHU:
        ldx(a, RAX, r.rs1)
        op_rm(a, 1, 0xf7, 5 if op == OP_MULH else 4, RBX, 8 * r.rs2)   # (i)mul x[rs2]
        op_rr(a, 1, 0x8b, RAX, RDX)
    else:                                           # DIVU / REMU, zero divisor as RISC-V
        ldx(a, RCX, r.rs2)
        ldx(a, RAX, r.rs1)
        op_rr(a, 1, 0x85, RCX, RCX)                 # test rcx, rcx
        pz = jcc32(a, CC_E)
        b1(a, 0x31); b1(a, 0xd2)                    # xor edx, edx
        op_rr(a, 1, 0xf7, 6, RCX)                   # div rcx
        if op == OP_REMU:
            op_rr(a, 1, 0x8b, RAX, RDX)
        pd = jmp32(a)
        here(a, pz)
        if op == OP_DIVU:
            imm64(a, RAX, -1)                       # x / 0 = all ones; x % 0 = x
        here(a, pd)
    stx(a, RAX, r.rd)
    return 0


cdef int branch_cc(int op) noexcept nogil:
    """The x86 condition under which a branch is NOT taken."""
    if op == OP_BEQ:
        return CC_NE
    if op == OP_BNE:
        return CC_E
    if op == OP_BLT:
        return CC_GE
    if op == OP_BGE:
        return CC_L
    if op == OP_BLTU:
        return CC_AE
    return CC_B


cdef uint8_t *jit_init(Hart h) noexcept nogil:
    """Map the code buffer and write the entry trampoline and common epilogue."""
    cdef void *m
    cdef Asm a
    m = mmap(NULL, JIT_BYTES, PROT_READ | PROT_WRITE | PROT_EXEC,
             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    if m == <void *>-1:
        return NULL
    h.jit_buf = <uint8_t *>m
    a.p = h.jit_buf
    # entry(code=rdi, h=rsi, x=rdx, recs=rcx, cbase=r8, cnt=r9)
    b1(&a, 0x53); b1(&a, 0x55)                      # push rbx, rbp
    b1(&a, 0x41); b1(&a, 0x54)                      # push r12
    b1(&a, 0x41); b1(&a, 0x55)                      # push r13
    b1(&a, 0x41); b1(&a, 0x56)                      # push r14
    b1(&a, 0x41); b1(&a, 0x57)                      # push r15
    alu_imm(&a, 1, 5, RSP, 8)                       # sub rsp, 8: calls see rsp % 16 == 0
    op_rr(&a, 1, 0x8b, R15, RSI)
    op_rr(&a, 1, 0x8b, RBX, RDX)
    op_rr(&a, 1, 0x8b, RBP, RCX)
    op_rr(&a, 1, 0x8b, R12, 8)                      # mov r12, r8
    op_rr(&a, 1, 0x8b, R14, 9)                      # mov r14, r9
    b1(&a, 0xff); b1(&a, 0xe7)                      # jmp rdi
    h.jit_epilogue = a.p
    a.o_jcnt = <int32_t>RV_PTR_DIFF(&h.jcnt, <void *>h)
    op_rm(&a, 1, 0x89, R14, R15, a.o_jcnt)          # h.jcnt = r14
    alu_imm(&a, 1, 0, RSP, 8)
    b1(&a, 0x41); b1(&a, 0x5f)
    b1(&a, 0x41); b1(&a, 0x5e)
    b1(&a, 0x41); b1(&a, 0x5d)
    b1(&a, 0x41); b1(&a, 0x5c)
    b1(&a, 0x5d); b1(&a, 0x5b)
    b1(&a, 0xc3)
    h.jit_start = <uint8_t *>((<uintptr_t>a.p + 63) & ~(<uintptr_t>63))
    h.jit_free = h.jit_start
    return h.jit_buf


cdef void jit_unlink(CodePage *cp) noexcept nogil:
    """Forget the compiled blocks of a page (their heads decode again when reached)."""
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


cdef void jit_unlink_all(Hart h) noexcept nogil:
    cdef int i
    for i in range(NCODE):
        if h.ctab[i] != NULL:
            jit_unlink(h.ctab[i])


cdef int jit_compile(Hart h, CodePage *cp, Rec *head, uint64_t cbase) noexcept nogil:
    """Compile the block that starts at ``head``; 1 when it is now OP_JIT."""
    cdef Asm a
    cdef uint8_t *code
    cdef int64_t off = RV_PTR_DIFF(head, cp.recs) >> 3, start = off
    cdef int k = 0, op
    cdef Rec *r
    cdef uint8_t *skip
    if not RV_JIT_HOST or not h.jit_on or h.nbp:
        return 0
    if h.jit_buf == NULL and jit_init(h) == NULL:
        h.jit_on = 0
        return 0
    if h.jit_free + JIT_ROOM > h.jit_buf + JIT_BYTES:
        jit_unlink_all(h)                            # full: start over
        h.jit_free = h.jit_start
        h.jit_resets += 1
    a.p = h.jit_free
    a.o_lim = <int32_t>RV_PTR_DIFF(<void *>&h.lim, <void *>h)
    a.o_jpc = <int32_t>RV_PTR_DIFF(&h.jpc, <void *>h)
    a.o_jcnt = <int32_t>RV_PTR_DIFF(&h.jcnt, <void *>h)
    a.o_jv = <int32_t>RV_PTR_DIFF(&h.jv, <void *>h)
    a.o_rt = <int32_t>RV_PTR_DIFF(&h.rt, <void *>h)
    a.o_wt = <int32_t>RV_PTR_DIFF(&h.wt, <void *>h)
    a.o_rs = <int32_t>RV_PTR_DIFF(&h.rs, <void *>h)
    code = a.p
    while True:
        if off >= 4096 or k >= JIT_MAX:
            break
        r = &cp.recs[off >> 1]
        if r.op == OP_NONE:                          # decode ahead, as the loop would
            if off == 0xffe and (rv_ld16(cp.host + 0xffe) & 3) == 3:
                break                                # crosses the page: the interpreter's
            code_mark(cp, cbase + <uint64_t>off)
            if decode_at(h, cbase + <uint64_t>off, cp.host, r):
                r.op = OP_NONE
                break
        op = r.op
        if op == OP_JIT:                             # another block: jump into it
            break
        if jit_simple(op):
            emit_simple(&a, r, off)
        elif OP_LB <= op <= OP_LWU:
            emit_load(&a, h.jit_epilogue, r, off, k)
        elif OP_SB <= op <= OP_SD:
            emit_store(&a, h.jit_epilogue, r, off, k)
        elif OP_BEQ <= op <= OP_BGEU:
            ldx(&a, RAX, r.rs1)
            op_rm(&a, 1, 0x3b, RAX, RBX, 8 * r.rs2)
            skip = jcc32(&a, branch_cc(op))
            goto_pc(&a, h.jit_epilogue, off + r.imm, k + 1)
            here(&a, skip)
        elif op == OP_J:
            goto_pc(&a, h.jit_epilogue, off + r.imm, k + 1)
            k += 1
            off = -1
            break
        elif op == OP_JAL:
            if r.rd != 32:
                imm64(&a, RAX, off + r.len)
                op_rr(&a, 1, 0x03, RAX, R12)
                stx(&a, RAX, r.rd)
            goto_pc(&a, h.jit_epilogue, off + r.imm, k + 1)
            k += 1
            off = -1
            break
        elif op == OP_JALR:
            ldx(&a, RAX, r.rs1)
            alu_imm(&a, 1, 0, RAX, r.imm)
            alu_imm(&a, 1, 4, RAX, -2)               # and rax, ~1
            if r.rd != 32:
                imm64(&a, RCX, off + r.len)
                op_rr(&a, 1, 0x03, RCX, R12)
                stx(&a, RCX, r.rd)
            goto_rax(&a, h.jit_epilogue, k + 1)
            k += 1
            off = -1
            break
        else:
            break                                    # the interpreter's from here
        k += 1
        off += r.len
    if k == 0:
        return 0
    if off >= 0:                                     # fell out of the block
        goto_pc(&a, h.jit_epilogue, off, k)
    h.jit_free = <uint8_t *>((<uintptr_t>a.p + 15) & ~(<uintptr_t>15))
    h.jit_blocks += 1
    head.op = OP_JIT
    memcpy(<uint8_t *>head + 8, &code, 8)
    cp.njit += 1
    return 1


cdef void jit_free(Hart h) noexcept nogil:
    if h.jit_buf != NULL:
        munmap(h.jit_buf, JIT_BYTES)
        h.jit_buf = NULL
