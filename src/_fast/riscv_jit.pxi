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
    JIT_ROOM = 64 << 10         # the most one block can take (checked before compiling)
    NPOOL = 6                   # host registers that cache guest registers in a block

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

# the pool: caller-saved but for r13; every call happens on a way out, after write-back
cdef int POOL[NPOOL]
POOL[:] = [8, 9, 10, 11, 13, 7]


cdef struct Jit:
    uint8_t *p
    uint8_t *epi                # the common epilogue (h.jcnt = r14, return eax)
    # field offsets inside the Hart object
    int32_t o_lim, o_jpc, o_jcnt, o_jv, o_rt, o_wt, o_rs
    # the register cache: guest register -> host register (-1: in memory)
    signed char host_of[33]
    uint8_t dirty[33]               # cached and written somewhere in the block
    int64_t start                   # the block's page offset
    uint8_t *top                    # its code after the entry loads


cdef inline void b1(Jit *a, int v) noexcept nogil:
    a.p[0] = <uint8_t>v
    a.p += 1

cdef inline void d4(Jit *a, int64_t v) noexcept nogil:
    cdef int32_t w = <int32_t>v
    memcpy(a.p, &w, 4)
    a.p += 4

cdef inline void q8(Jit *a, uint64_t v) noexcept nogil:
    memcpy(a.p, &v, 8)
    a.p += 8

cdef inline void rex(Jit *a, int w, int reg, int rm) noexcept nogil:
    cdef int v = 0x40 | (8 if w else 0) | (4 if reg & 8 else 0) | (1 if rm & 8 else 0)
    if v != 0x40:
        b1(a, v)

cdef inline void mem(Jit *a, int reg, int base, int32_t disp) noexcept nogil:
    """ModRM (+SIB) for [base + disp32]."""
    b1(a, 0x80 | ((reg & 7) << 3) | (base & 7))
    if (base & 7) == RSP:
        b1(a, 0x24)
    d4(a, disp)

cdef inline void op_rm(Jit *a, int w, int opc, int reg, int base, int32_t disp) noexcept nogil:
    """``opc reg, [base+disp]`` (or the store direction, by opcode); one-byte opcodes."""
    rex(a, w, reg, base)
    b1(a, opc)
    mem(a, reg, base, disp)

cdef inline void op0f_rm(Jit *a, int w, int opc, int reg, int base, int32_t disp) noexcept nogil:
    """``0f opc reg, [base+disp]`` (movzx, movsx, imul)."""
    rex(a, w, reg, base)
    b1(a, 0x0f)
    b1(a, opc)
    mem(a, reg, base, disp)

cdef inline void op_rr(Jit *a, int w, int opc, int reg, int rm) noexcept nogil:
    rex(a, w, reg, rm)
    b1(a, opc)
    b1(a, 0xc0 | ((reg & 7) << 3) | (rm & 7))

cdef inline void mov_rr(Jit *a, int dst, int src) noexcept nogil:
    op_rr(a, 1, 0x8b, dst, src)

cdef inline void ldx(Jit *a, int reg, int i) noexcept nogil:
    op_rm(a, 1, 0x8b, reg, RBX, 8 * i)              # mov reg, x[i]

cdef inline void stx(Jit *a, int reg, int i) noexcept nogil:
    op_rm(a, 1, 0x89, reg, RBX, 8 * i)              # mov x[i], reg

cdef inline void imm64(Jit *a, int reg, int64_t v) noexcept nogil:
    if -0x80000000 <= v <= 0x7fffffff:
        rex(a, 1, 0, reg)
        b1(a, 0xc7)
        b1(a, 0xc0 | (reg & 7))
        d4(a, v)                                    # mov reg, simm32
    else:
        rex(a, 1, 0, reg)
        b1(a, 0xb8 | (reg & 7))
        q8(a, <uint64_t>v)                          # mov reg, imm64

cdef inline void alu_imm(Jit *a, int w, int ext, int reg, int32_t v) noexcept nogil:
    rex(a, w, 0, reg)
    b1(a, 0x81)
    b1(a, 0xc0 | (ext << 3) | (reg & 7))
    d4(a, v)

cdef inline void shift_imm(Jit *a, int w, int ext, int reg, int n) noexcept nogil:
    rex(a, w, 0, reg)
    b1(a, 0xc1)
    b1(a, 0xc0 | (ext << 3) | (reg & 7))
    b1(a, n)

cdef inline void movsxd_rax(Jit *a) noexcept nogil:
    b1(a, 0x48); b1(a, 0x63); b1(a, 0xc0)           # movsxd rax, eax

cdef inline uint8_t *jcc32(Jit *a, int cc) noexcept nogil:
    """A forward jcc; returns where to patch (see ``here``)."""
    b1(a, 0x0f); b1(a, 0x80 | cc)
    d4(a, 0)
    return a.p

cdef inline uint8_t *jmp32(Jit *a) noexcept nogil:
    b1(a, 0xe9)
    d4(a, 0)
    return a.p

cdef inline void here(Jit *a, uint8_t *after) noexcept nogil:
    """Point the rel32 that ends at ``after`` at the current position."""
    cdef int32_t rel = <int32_t>(a.p - after)
    memcpy(after - 4, &rel, 4)

cdef inline void jmp_to(Jit *a, uint8_t *target) noexcept nogil:
    b1(a, 0xe9)
    d4(a, <int64_t>(target - (a.p + 4)))


# -- the register cache -------------------------------------------------------------------
#
# Before emitting, a block is scanned: the guest registers it uses most get a host
# register each for the whole block (loaded on entry), the rest are read into
# temporaries and written straight to memory.  Every way out stores the cached
# registers the block writes anywhere (so a loop back to the block's own start
# may keep them in registers: see goto_pc).

cdef void cache_plan(Jit *a, Hart h, CodePage *cp, int64_t off, uint64_t cbase) noexcept nogil:
    """Choose the cached registers of the block at ``off`` (same walk as jit_compile)."""
    cdef int uses[33]
    cdef int i, j, k = 0, op, best, n = 0
    cdef Rec *r
    for i in range(33):
        uses[i] = 0
        a.host_of[i] = -1
        a.dirty[i] = 0
    while off < 4096 and k < JIT_MAX:
        r = &cp.recs[off >> 1]
        if r.op == OP_NONE:
            if off == 0xffe and (rv_ld16(cp.host + 0xffe) & 3) == 3:
                break
            code_mark(cp, cbase + <uint64_t>off)
            if decode_at(h, cbase + <uint64_t>off, cp.host, r):
                r.op = OP_NONE
                break
        op = r.op
        if op == OP_JIT and k > 0:
            break
        if not (jit_simple(op) or OP_LB <= op <= OP_SD or OP_BEQ <= op <= OP_BGEU or
                op == OP_J or op == OP_JAL or op == OP_JALR or op == OP_JIT):
            break
        if op == OP_JIT:             # never: a head is only compiled when not yet one
            break
        if not (op == OP_LUI or op == OP_LI or op == OP_AUIPC or op == OP_J or op == OP_JAL or
                op == OP_NOP):
            uses[r.rs1] += 1
        if (OP_SB <= op <= OP_SD or OP_BEQ <= op <= OP_BGEU or
                (OP_ADD <= op <= OP_AND) or (OP_ADDW <= op <= OP_SRAW) or
                (OP_MUL <= op <= OP_REMUW)):
            uses[r.rs2] += 1
        if not (OP_SB <= op <= OP_SD or OP_BEQ <= op <= OP_BGEU or op == OP_J) and r.rd != 32:
            uses[r.rd] += 1
            a.dirty[r.rd] = 1
        k += 1
        if op == OP_J or op == OP_JAL or op == OP_JALR:
            break
        off += r.len
    uses[0] = 0                      # x0 reads as zero from memory; no register for it
    for j in range(NPOOL):
        best = -1
        for i in range(1, 32):
            if uses[i] and a.host_of[i] < 0 and (best < 0 or uses[i] > uses[best]):
                best = i
        if best < 0:
            break
        a.host_of[best] = POOL[n]
        n += 1
    for i in range(32):
        if a.host_of[i] < 0:
            a.dirty[i] = 0           # only cached registers are ever dirty


cdef void cache_load(Jit *a) noexcept nogil:
    cdef int g
    for g in range(1, 32):
        if a.host_of[g] >= 0:
            ldx(a, a.host_of[g], g)


cdef void writeback(Jit *a) noexcept nogil:
    """Store the cached registers the block writes (on a way out)."""
    cdef int g
    for g in range(1, 32):
        if a.host_of[g] >= 0 and a.dirty[g]:
            stx(a, a.host_of[g], g)

cdef int rget(Jit *a, int g, int temp) noexcept nogil:
    """A host register holding guest register ``g``: its own, or ``temp`` loaded."""
    if a.host_of[g] >= 0:
        return a.host_of[g]
    ldx(a, temp, g)
    return temp

cdef inline void src_rax(Jit *a, int w, int g) noexcept nogil:
    """rax (eax when not ``w``) = guest register ``g``."""
    if a.host_of[g] >= 0:
        op_rr(a, w, 0x8b, RAX, a.host_of[g])
    else:
        op_rm(a, w, 0x8b, RAX, RBX, 8 * g)

cdef inline void rax_to(Jit *a, int g) noexcept nogil:
    """Guest register ``g`` = rax."""
    if a.host_of[g] >= 0:
        mov_rr(a, a.host_of[g], RAX)
    else:
        stx(a, RAX, g)


# -- ways out -----------------------------------------------------------------------------

cdef void exit_at(Jit *a, int64_t off, int k) noexcept nogil:
    """Leave for the interpreter at page offset ``off``, ``k`` more retired (eax = 0).
    Dirty registers are already stored."""
    if k:
        alu_imm(a, 1, 0, R14, k)                    # add r14, k
    mov_rr(a, RAX, R12)                             # rax = r12 + off
    if off:
        alu_imm(a, 1, 0, RAX, <int32_t>off)
    op_rm(a, 1, 0x89, RAX, R15, a.o_jpc)            # h.jpc = rax
    b1(a, 0x31); b1(a, 0xc0)                        # xor eax, eax
    jmp_to(a, a.epi)


cdef void exit_event(Jit *a, int64_t off, int k) noexcept nogil:
    """Leave with the event in eax, the instruction at ``off`` not retired."""
    if k:
        alu_imm(a, 1, 0, R14, k)
    mov_rr(a, RCX, R12)
    if off:
        alu_imm(a, 1, 0, RCX, <int32_t>off)
    op_rm(a, 1, 0x89, RCX, R15, a.o_jpc)
    jmp_to(a, a.epi)


cdef void goto_pc(Jit *a, int64_t off, int k) noexcept nogil:
    """Store dirty registers, then continue at page offset ``off``: into its block
    when it has one and the budget allows, else back to the interpreter."""
    cdef uint8_t *p1
    cdef uint8_t *p2
    if off == a.start:           # a loop to this block's start: registers stay
        alu_imm(a, 1, 0, R14, k)
        op_rm(a, 1, 0x3b, R14, R15, a.o_lim)
        p1 = jcc32(a, CC_AE)
        jmp_to(a, a.top)
        here(a, p1)
        writeback(a)
        exit_at(a, off, 0)
        return
    writeback(a)
    if off < 0 or off >= 4096:
        exit_at(a, off, k)
        return
    if k:
        alu_imm(a, 1, 0, R14, k)
    op_rm(a, 1, 0x3b, R14, R15, a.o_lim)            # cmp r14, h.lim
    p1 = jcc32(a, CC_AE)
    op0f_rm(a, 0, 0xb7, RAX, RBP, <int32_t>(off * 8))    # movzx eax, word [rbp + off*8]
    alu_imm(a, 0, 7, RAX, OP_JIT)                   # cmp eax, OP_JIT
    p2 = jcc32(a, CC_NE)
    b1(a, 0xff)                                     # jmp [rbp + off*8 + 8]
    mem(a, 4, RBP, <int32_t>(off * 8 + 8))
    here(a, p1)
    here(a, p2)
    exit_at(a, off, 0)


cdef void goto_rax(Jit *a, int k) noexcept nogil:
    """Continue at the virtual pc in rax (jalr); dirty registers already stored."""
    cdef uint8_t *p1
    cdef uint8_t *p2
    cdef uint8_t *p3
    alu_imm(a, 1, 0, R14, k)
    mov_rr(a, RDX, RAX)
    op_rr(a, 1, 0x2b, RDX, R12)                     # rdx = rax - r12
    alu_imm(a, 1, 7, RDX, 4096)
    p1 = jcc32(a, CC_AE)                            # another page
    op_rm(a, 1, 0x3b, R14, R15, a.o_lim)
    p2 = jcc32(a, CC_AE)
    shift_imm(a, 1, 4, RDX, 3)                      # rdx = rbp + off*8
    op_rr(a, 1, 0x03, RDX, RBP)
    op0f_rm(a, 0, 0xb7, RCX, RDX, 0)                # movzx ecx, word [rdx]
    alu_imm(a, 0, 7, RCX, OP_JIT)
    p3 = jcc32(a, CC_NE)
    b1(a, 0xff)                                     # jmp [rdx + 8]
    mem(a, 4, RDX, 8)
    here(a, p1)
    here(a, p2)
    here(a, p3)
    op_rm(a, 1, 0x89, RAX, R15, a.o_jpc)
    b1(a, 0x31); b1(a, 0xc0)
    jmp_to(a, a.epi)


cdef void call_abs(Jit *a, void *fn) noexcept nogil:
    imm64(a, RAX, <int64_t><uintptr_t>fn)
    b1(a, 0xff); b1(a, 0xd0)                        # call rax


cdef int resv_clear_call(ResvTable *t, uint8_t *host, int size) noexcept nogil:
    resv_clear(t, host, size)
    return 0


# -- memory -------------------------------------------------------------------------------

cdef void address(Jit *a, Rec *r) noexcept nogil:
    """rax = x[rs1] + imm."""
    src_rax(a, 1, r.rs1)
    if r.imm:
        alu_imm(a, 1, 0, RAX, r.imm)


cdef uint8_t *tlb_probe(Jit *a, int32_t o_tlb, int size) noexcept nogil:
    """rax = guest address -> rax = host address, or a jump (returned) on a miss
    (rax still the guest address there)."""
    cdef uint8_t *miss
    mov_rr(a, RCX, RAX)
    shift_imm(a, 1, 5, RCX, 12)                     # shr rcx, 12
    alu_imm(a, 0, 4, RCX, 255)                      # and ecx, 255
    b1(a, 0x48); b1(a, 0x8d); b1(a, 0x0c); b1(a, 0x49)   # lea rcx, [rcx + rcx*2]
    shift_imm(a, 1, 4, RCX, 3)                      # shl rcx, 3  (24-byte entries)
    op_rm(a, 1, 0x03, RCX, R15, o_tlb)              # add rcx, h.rt / h.wt
    mov_rr(a, RDX, RAX)
    alu_imm(a, 1, 4, RDX, <int32_t>~(0x1000 - size))    # and rdx, ~(0xfff & ~(size-1))
    op_rm(a, 1, 0x3b, RDX, RCX, 0)                  # cmp rdx, [rcx] (tag)
    miss = jcc32(a, CC_NE)
    op_rm(a, 1, 0x03, RAX, RCX, 8)                  # add rax, addend
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
        op_rm(a, 1, 0x8b, dst, base, 0)
    elif op == OP_LW:
        op_rm(a, 1, 0x63, dst, base, 0)             # movsxd
    elif op == OP_LWU:
        op_rm(a, 0, 0x8b, dst, base, 0)
    elif op == OP_LH:
        op0f_rm(a, 1, 0xbf, dst, base, 0)
    elif op == OP_LHU:
        op0f_rm(a, 0, 0xb7, dst, base, 0)
    elif op == OP_LB:
        op0f_rm(a, 1, 0xbe, dst, base, 0)
    else:
        op0f_rm(a, 0, 0xb6, dst, base, 0)


cdef void emit_load(Jit *a, Rec *r, int64_t off, int k) noexcept nogil:
    cdef int size = access_size(r.op), rd = r.rd
    cdef uint8_t *miss
    cdef uint8_t *done
    address(a, r)
    miss = tlb_probe(a, a.o_rt, size)
    if rd != 32 and a.host_of[rd] >= 0:
        load_into(a, r.op, a.host_of[rd], RAX)
    else:
        load_into(a, r.op, RAX, RAX)                # (x0: the access all the same)
        if rd != 32:
            stx(a, RAX, rd)
    done = jmp32(a)
    # miss: load_slow(h, a, size, &h.jv), then leave (with its event, or after it)
    here(a, miss)
    writeback(a)
    mov_rr(a, RSI, RAX)
    mov_rr(a, RDI, R15)
    b1(a, 0xba); d4(a, size)                        # mov edx, size
    op_rm(a, 1, 0x8d, RCX, R15, a.o_jv)             # lea rcx, h.jv
    call_abs(a, <void *>load_slow)
    b1(a, 0x85); b1(a, 0xc0)                        # test eax, eax
    miss = jcc32(a, CC_NE)
    if rd != 32:
        op_rm(a, 1, 0x8d, RAX, R15, a.o_jv)         # rax = &h.jv: extend as a fresh load
        load_into(a, r.op, RAX, RAX)
        stx(a, RAX, rd)
    exit_at(a, off + r.len, k + 1)
    here(a, miss)
    exit_event(a, off, k)
    here(a, done)


cdef void emit_store(Jit *a, Rec *r, int64_t off, int k) noexcept nogil:
    cdef int size = access_size(r.op), v
    cdef uint8_t *miss
    cdef uint8_t *done
    cdef uint8_t *resv
    address(a, r)
    v = rget(a, r.rs2, RSI)
    miss = tlb_probe(a, a.o_wt, size)
    if size == 2:
        b1(a, 0x66)
    if size == 1:
        b1(a, 0x40 | (4 if v & 8 else 0))           # REX: sil/dil and r8b.. as bytes
        b1(a, 0x88)
        mem(a, v, RAX, 0)
    else:
        op_rm(a, size == 8, 0x89, v, RAX, 0)
    # a reservation held by some hart: clear the ones on these bytes, then leave
    op_rm(a, 1, 0x8b, RDX, R15, a.o_rs)             # rdx = h.rs
    b1(a, 0x83); b1(a, 0x3a); b1(a, 0x00)           # cmp dword [rdx], 0  (nactive)
    resv = jcc32(a, CC_NE)
    done = jmp32(a)
    here(a, resv)
    writeback(a)
    mov_rr(a, RDI, RDX)
    mov_rr(a, RSI, RAX)
    b1(a, 0xba); d4(a, size)
    call_abs(a, <void *>resv_clear_call)
    exit_at(a, off + r.len, k + 1)
    # miss: store_slow(h, a, size, value), then leave (with its event, or after it:
    # the store may have hit code or a device that changed the memory map)
    here(a, miss)
    writeback(a)
    op_rm(a, 1, 0x8b, RCX, RBX, 8 * r.rs2)          # the value, as just stored back
    mov_rr(a, RSI, RAX)
    mov_rr(a, RDI, R15)
    b1(a, 0xba); d4(a, size)
    if size == 4:
        op_rr(a, 0, 0x8b, RCX, RCX)                 # mov ecx, ecx (zero-extend)
    elif size == 2:
        b1(a, 0x0f); b1(a, 0xb7); b1(a, 0xc9)       # movzx ecx, cx
    elif size == 1:
        b1(a, 0x0f); b1(a, 0xb6); b1(a, 0xc9)       # movzx ecx, cl
    call_abs(a, <void *>store_slow)
    b1(a, 0x85); b1(a, 0xc0)
    miss = jcc32(a, CC_NE)
    exit_at(a, off + r.len, k + 1)
    here(a, miss)
    exit_event(a, off, k)
    here(a, done)


# -- arithmetic -----------------------------------------------------------------------------

cdef void alu3(Jit *a, int w, int opc, Rec *r) noexcept nogil:
    """rd = rs1 <op> rs2 (opc: the ``r, r/m`` form); 32-bit ops sign-extended."""
    src_rax(a, w, r.rs1)
    op_rr(a, w, opc, RAX, rget(a, r.rs2, RCX))
    if not w:
        movsxd_rax(a)
    rax_to(a, r.rd)


cdef void alui(Jit *a, int w, int ext, Rec *r) noexcept nogil:
    src_rax(a, w, r.rs1)
    alu_imm(a, w, ext, RAX, r.imm)
    if not w:
        movsxd_rax(a)
    rax_to(a, r.rd)


cdef void shifti(Jit *a, int w, int ext, Rec *r) noexcept nogil:
    src_rax(a, w, r.rs1)
    shift_imm(a, w, ext, RAX, r.imm)
    if not w:
        movsxd_rax(a)
    rax_to(a, r.rd)


cdef void shiftr(Jit *a, int w, int ext, Rec *r) noexcept nogil:
    mov_rr(a, RCX, rget(a, r.rs2, RCX))
    src_rax(a, w, r.rs1)
    rex(a, w, 0, RAX)
    b1(a, 0xd3); b1(a, 0xc0 | (ext << 3))           # shl/shr/sar rax, cl (count masked)
    if not w:
        movsxd_rax(a)
    rax_to(a, r.rd)


cdef void setcmp(Jit *a, Rec *r, int cc, int with_imm) noexcept nogil:
    src_rax(a, 1, r.rs1)
    if with_imm:
        alu_imm(a, 1, 7, RAX, r.imm)
    else:
        op_rr(a, 1, 0x3b, RAX, rget(a, r.rs2, RCX))
    b1(a, 0x0f); b1(a, 0x90 | cc); b1(a, 0xc0)      # setcc al
    b1(a, 0x0f); b1(a, 0xb6); b1(a, 0xc0)           # movzx eax, al
    rax_to(a, r.rd)


cdef inline int jit_simple(int op) noexcept nogil:
    """Ops compiled inline that neither jump nor touch memory."""
    return ((OP_ADDI <= op <= OP_SRAW) or op == OP_LUI or op == OP_AUIPC or op == OP_MUL or
            op == OP_MULW or op == OP_MULH or op == OP_MULHU or op == OP_DIVU or
            op == OP_REMU or op == OP_NOP or op == OP_MV or op == OP_LI)


cdef void emit_simple(Jit *a, Rec *r, int64_t off) noexcept nogil:
    cdef int op = r.op, v
    cdef uint8_t *pz
    cdef uint8_t *pd
    if r.rd == 32 or op == OP_NOP:
        return                                      # writes to x0: nothing to do
    if op == OP_ADDI:
        alui(a, 1, 0, r)
    elif op == OP_ANDI:
        alui(a, 1, 4, r)
    elif op == OP_ORI:
        alui(a, 1, 1, r)
    elif op == OP_XORI:
        alui(a, 1, 6, r)
    elif op == OP_ADDIW:
        alui(a, 0, 0, r)
    elif op == OP_SLTI:
        setcmp(a, r, CC_L, 1)
    elif op == OP_SLTIU:
        setcmp(a, r, CC_B, 1)
    elif op == OP_SLT:
        setcmp(a, r, CC_L, 0)
    elif op == OP_SLTU:
        setcmp(a, r, CC_B, 0)
    elif op == OP_ADD:
        alu3(a, 1, 0x03, r)
    elif op == OP_SUB:
        alu3(a, 1, 0x2b, r)
    elif op == OP_AND:
        alu3(a, 1, 0x23, r)
    elif op == OP_OR:
        alu3(a, 1, 0x0b, r)
    elif op == OP_XOR:
        alu3(a, 1, 0x33, r)
    elif op == OP_ADDW:
        alu3(a, 0, 0x03, r)
    elif op == OP_SUBW:
        alu3(a, 0, 0x2b, r)
    elif op == OP_SLLI:
        shifti(a, 1, 4, r)
    elif op == OP_SRLI:
        shifti(a, 1, 5, r)
    elif op == OP_SRAI:
        shifti(a, 1, 7, r)
    elif op == OP_SLLIW:
        shifti(a, 0, 4, r)
    elif op == OP_SRLIW:
        shifti(a, 0, 5, r)
    elif op == OP_SRAIW:
        shifti(a, 0, 7, r)
    elif op == OP_SLL:
        shiftr(a, 1, 4, r)
    elif op == OP_SRL:
        shiftr(a, 1, 5, r)
    elif op == OP_SRA:
        shiftr(a, 1, 7, r)
    elif op == OP_SLLW:
        shiftr(a, 0, 4, r)
    elif op == OP_SRLW:
        shiftr(a, 0, 5, r)
    elif op == OP_SRAW:
        shiftr(a, 0, 7, r)
    elif op == OP_LUI or op == OP_LI:
        imm64(a, RAX, r.imm)
        rax_to(a, r.rd)
    elif op == OP_MV:
        src_rax(a, 1, r.rs1)
        rax_to(a, r.rd)
    elif op == OP_AUIPC:
        imm64(a, RAX, off + <int64_t>r.imm)
        op_rr(a, 1, 0x03, RAX, R12)                 # add rax, r12
        rax_to(a, r.rd)
    elif op == OP_MUL or op == OP_MULW:
        src_rax(a, op == OP_MUL, r.rs1)
        v = rget(a, r.rs2, RCX)
        rex(a, op == OP_MUL, RAX, v)                # imul rax, rs2
        b1(a, 0x0f); b1(a, 0xaf); b1(a, 0xc0 | (v & 7))
        if op == OP_MULW:
            movsxd_rax(a)
        rax_to(a, r.rd)
    elif op == OP_MULH or op == OP_MULHU:
        src_rax(a, 1, r.rs1)
        op_rr(a, 1, 0xf7, 5 if op == OP_MULH else 4, rget(a, r.rs2, RCX))   # (i)mul rs2
        mov_rr(a, RAX, RDX)
        rax_to(a, r.rd)
    else:                                           # DIVU / REMU, zero divisor as RISC-V
        mov_rr(a, RCX, rget(a, r.rs2, RCX))
        src_rax(a, 1, r.rs1)
        op_rr(a, 1, 0x85, RCX, RCX)                 # test rcx, rcx
        pz = jcc32(a, CC_E)
        b1(a, 0x31); b1(a, 0xd2)                    # xor edx, edx
        op_rr(a, 1, 0xf7, 6, RCX)                   # div rcx
        if op == OP_REMU:
            mov_rr(a, RAX, RDX)
        pd = jmp32(a)
        here(a, pz)
        if op == OP_DIVU:
            imm64(a, RAX, -1)                       # x / 0 = all ones; x % 0 = x
        here(a, pd)
        rax_to(a, r.rd)


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
    cdef Jit a
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
    mov_rr(&a, R15, RSI)
    mov_rr(&a, RBX, RDX)
    mov_rr(&a, RBP, RCX)
    mov_rr(&a, R12, 8)
    mov_rr(&a, R14, 9)
    b1(&a, 0xff); b1(&a, 0xe7)                      # jmp rdi
    h.jit_epilogue = a.p
    op_rm(&a, 1, 0x89, R14, R15, <int32_t>RV_PTR_DIFF(&h.jcnt, <void *>h))   # h.jcnt = r14
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
    cdef Jit a
    cdef uint8_t *code
    cdef int64_t off = RV_PTR_DIFF(head, cp.recs) >> 3
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
    a.epi = h.jit_epilogue
    a.o_lim = <int32_t>RV_PTR_DIFF(<void *>&h.lim, <void *>h)
    a.o_jpc = <int32_t>RV_PTR_DIFF(&h.jpc, <void *>h)
    a.o_jcnt = <int32_t>RV_PTR_DIFF(&h.jcnt, <void *>h)
    a.o_jv = <int32_t>RV_PTR_DIFF(&h.jv, <void *>h)
    a.o_rt = <int32_t>RV_PTR_DIFF(&h.rt, <void *>h)
    a.o_wt = <int32_t>RV_PTR_DIFF(&h.wt, <void *>h)
    a.o_rs = <int32_t>RV_PTR_DIFF(&h.rs, <void *>h)
    a.start = off
    code = a.p
    cache_plan(&a, h, cp, off, cbase)
    cache_load(&a)
    a.top = a.p
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
            emit_load(&a, r, off, k)
        elif OP_SB <= op <= OP_SD:
            emit_store(&a, r, off, k)
        elif OP_BEQ <= op <= OP_BGEU:
            src_rax(&a, 1, r.rs1)
            op_rr(&a, 1, 0x3b, RAX, rget(&a, r.rs2, RCX))
            skip = jcc32(&a, branch_cc(op))
            goto_pc(&a, off + r.imm, k + 1)
            here(&a, skip)
        elif op == OP_J or op == OP_JAL:
            if op == OP_JAL:
                imm64(&a, RAX, off + r.len)
                op_rr(&a, 1, 0x03, RAX, R12)
                rax_to(&a, r.rd)
            goto_pc(&a, off + r.imm, k + 1)
            k += 1
            off = -1
            break
        elif op == OP_JALR:
            src_rax(&a, 1, r.rs1)
            alu_imm(&a, 1, 0, RAX, r.imm)
            alu_imm(&a, 1, 4, RAX, -2)               # and rax, ~1
            if r.rd != 32:
                mov_rr(&a, RDX, RAX)
                imm64(&a, RAX, off + r.len)
                op_rr(&a, 1, 0x03, RAX, R12)
                rax_to(&a, r.rd)
                mov_rr(&a, RAX, RDX)
            writeback(&a)
            goto_rax(&a, k + 1)
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
        goto_pc(&a, off, k)
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
