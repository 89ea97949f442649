# The compiled tier's arithmetic (included by riscv_jit.pxi): RV64I/M ops that
# neither jump nor touch memory, and the x86 conditions of branches.

cdef void alu3(Jit *a, int w, int opc, Rec *r) noexcept nogil:
    """rd = rs1 <op> rs2 (opc: the ``r, r/m`` form); 32-bit ops sign-extended."""
    cdef int hd = a.host_of[r.rd]
    if w and hd >= 0 and r.rd == r.rs1:
        op_src(a, 1, opc, hd, r.rs2)                # in place
    elif w and hd >= 0 and r.rd != r.rs2:
        op_src(a, 1, X_MOV, hd, r.rs1)
        op_src(a, 1, opc, hd, r.rs2)
    else:
        op_src(a, w, X_MOV, RAX, r.rs1)
        op_src(a, w, opc, RAX, r.rs2)
        if w:
            rax_to(a, r.rd)
        else:
            eax_to(a, r.rd)


cdef void alui(Jit *a, int w, int ext, Rec *r) noexcept nogil:
    cdef int hd = a.host_of[r.rd]
    if w and hd >= 0:
        if r.rd != r.rs1:
            op_src(a, 1, X_MOV, hd, r.rs1)
        if r.imm or ext != 0:
            alu_imm(a, 1, ext, hd, r.imm)
    else:
        op_src(a, w, X_MOV, RAX, r.rs1)
        alu_imm(a, w, ext, RAX, r.imm)
        if w:
            rax_to(a, r.rd)
        else:
            eax_to(a, r.rd)


cdef void shifti(Jit *a, int w, int ext, Rec *r) noexcept nogil:
    cdef int hd = a.host_of[r.rd]
    if w and hd >= 0:
        if r.rd != r.rs1:
            op_src(a, 1, X_MOV, hd, r.rs1)
        shift_imm(a, 1, ext, hd, r.imm)
        return
    op_src(a, w, X_MOV, RAX, r.rs1)
    shift_imm(a, w, ext, RAX, r.imm)
    if w:
        rax_to(a, r.rd)
    else:
        eax_to(a, r.rd)


cdef void shiftr(Jit *a, int w, int ext, Rec *r) noexcept nogil:
    op_src(a, 1, X_MOV, RCX, r.rs2)
    op_src(a, w, X_MOV, RAX, r.rs1)
    shift_cl(a, w, ext, RAX)                        # shl/shr/sar rax, cl (count masked)
    if w:
        rax_to(a, r.rd)
    else:
        eax_to(a, r.rd)


cdef void setcmp(Jit *a, Rec *r, int cc, int with_imm) noexcept nogil:
    src_rax(a, 1, r.rs1)
    if with_imm:
        alu_imm(a, 1, ALU_CMP, RAX, r.imm)
    else:
        op_src(a, 1, X_CMP, RAX, r.rs2)
    setcc(a, cc, RAX)                               # setcc al
    movzx_r32_r8(a, RAX, RAX)
    rax_to(a, r.rd)


cdef void emit_simple(Jit *a, Rec *r, int64_t off) noexcept nogil:
    cdef int op = r.op, v
    cdef uint8_t *pz
    cdef uint8_t *pd
    if r.rd == 32 or op == OP_NOP or op == OP_FENCE:
        return          # writes to x0; fences (harts share one thread: memory is in order)
    if op == OP_ADDI:
        alui(a, 1, ALU_ADD, r)
    elif op == OP_ANDI:
        alui(a, 1, ALU_AND, r)
    elif op == OP_ORI:
        alui(a, 1, ALU_OR, r)
    elif op == OP_XORI:
        alui(a, 1, ALU_XOR, r)
    elif op == OP_ADDIW and r.imm == 0:            # sext.w
        if a.host_of[r.rs1] >= 0:
            op_rr(a, 1, X_MOVSXD, RAX, a.host_of[r.rs1])    # movsxd rax, rs1d
        else:
            op_rm(a, 1, X_MOVSXD, RAX, RBX, 8 * r.rs1)
        rax_to(a, r.rd)
    elif op == OP_ADDIW:
        alui(a, 0, ALU_ADD, r)
    elif op == OP_SLTI:
        setcmp(a, r, CC_L, 1)
    elif op == OP_SLTIU:
        setcmp(a, r, CC_B, 1)
    elif op == OP_SLT:
        setcmp(a, r, CC_L, 0)
    elif op == OP_SLTU:
        setcmp(a, r, CC_B, 0)
    elif op == OP_ADD:
        alu3(a, 1, X_ADD, r)
    elif op == OP_SUB:
        alu3(a, 1, X_SUB, r)
    elif op == OP_AND:
        alu3(a, 1, X_AND, r)
    elif op == OP_OR:
        alu3(a, 1, X_OR, r)
    elif op == OP_XOR:
        alu3(a, 1, X_XOR, r)
    elif op == OP_ADDW:
        alu3(a, 0, X_ADD, r)
    elif op == OP_SUBW:
        alu3(a, 0, X_SUB, r)
    elif op == OP_SLLI:
        shifti(a, 1, SH_SHL, r)
    elif op == OP_SRLI:
        shifti(a, 1, SH_SHR, r)
    elif op == OP_SRAI:
        shifti(a, 1, SH_SAR, r)
    elif op == OP_SLLIW:
        shifti(a, 0, SH_SHL, r)
    elif op == OP_SRLIW:
        shifti(a, 0, SH_SHR, r)
    elif op == OP_SRAIW:
        shifti(a, 0, SH_SAR, r)
    elif op == OP_SLL:
        shiftr(a, 1, SH_SHL, r)
    elif op == OP_SRL:
        shiftr(a, 1, SH_SHR, r)
    elif op == OP_SRA:
        shiftr(a, 1, SH_SAR, r)
    elif op == OP_SLLW:
        shiftr(a, 0, SH_SHL, r)
    elif op == OP_SRLW:
        shiftr(a, 0, SH_SHR, r)
    elif op == OP_SRAW:
        shiftr(a, 0, SH_SAR, r)
    elif op == OP_LUI or op == OP_LI:
        if a.host_of[r.rd] >= 0:
            imm64(a, a.host_of[r.rd], r.imm)
        else:
            imm64(a, RAX, r.imm)
            stx(a, RAX, r.rd)
    elif op == OP_MV:
        if a.host_of[r.rd] >= 0:
            op_src(a, 1, X_MOV, a.host_of[r.rd], r.rs1)
        else:
            src_rax(a, 1, r.rs1)
            stx(a, RAX, r.rd)
    elif op == OP_AUIPC:
        imm64(a, RAX, off + <int64_t>r.imm)
        op_rm(a, 1, X_ADD, RAX, R15, a.o_cbase)      # add rax, cbase
        rax_to(a, r.rd)
    elif op == OP_MUL or op == OP_MULW:
        src_rax(a, op == OP_MUL, r.rs1)
        v = rget(a, r.rs2, RCX)
        op0f_rr(a, op == OP_MUL, X0F_IMUL, RAX, v)  # imul rax, rs2
        if op == OP_MULW:
            eax_to(a, r.rd)
        else:
            rax_to(a, r.rd)
    elif op == OP_MULH or op == OP_MULHU:
        src_rax(a, 1, r.rs1)
        unary(a, 1, G3_IMUL if op == OP_MULH else G3_MUL, rget(a, r.rs2, RCX))
        mov_rr(a, RAX, RDX)
        rax_to(a, r.rd)
    elif op == OP_MULHSU:                           # mulhu, less rs2 when rs1 < 0
        op_src(a, 1, X_MOV, RCX, r.rs2)
        src_rax(a, 1, r.rs1)
        unary(a, 1, G3_MUL, RCX)                    # mul rcx: rdx = high half
        src_rax(a, 1, r.rs1)
        shift_imm(a, 1, SH_SAR, RAX, 63)                 # sar rax, 63: all ones if rs1 < 0
        op_rr(a, 1, X_AND, RAX, RCX)                 # and rax, rcx
        op_rr(a, 1, X_SUB, RDX, RAX)                 # sub rdx, rax
        mov_rr(a, RAX, RDX)
        rax_to(a, r.rd)
    else:
        emit_div(a, r)


cdef void emit_div(Jit *a, Rec *r) noexcept nogil:
    """DIV[U][W] and REM[U][W] with RISC-V's results where x86 would trap: division
    by zero (quotient all ones, remainder the dividend) and the signed overflow
    (MIN / -1: quotient MIN, remainder 0)."""
    cdef int op = r.op
    cdef int w = op == OP_DIV or op == OP_DIVU or op == OP_REM or op == OP_REMU
    cdef int signed = op == OP_DIV or op == OP_REM or op == OP_DIVW or op == OP_REMW
    cdef int rem = op == OP_REM or op == OP_REMU or op == OP_REMW or op == OP_REMUW
    cdef uint8_t *pz
    cdef uint8_t *pdone
    cdef uint8_t *pdo
    cdef uint8_t *povf = NULL
    op_src(a, w, X_MOV, RCX, r.rs2)                  # rcx (ecx) = divisor
    op_src(a, w, X_MOV, RAX, r.rs1)                  # rax (eax) = dividend
    op_rr(a, w, X_TEST, RCX, RCX)                     # test: a zero divisor?
    pz = jcc32(a, CC_E)
    if signed:
        alu_imm(a, w, ALU_CMP, RCX, -1)                   # cmp rcx, -1
        pdo = jcc32(a, CC_NE)
        if w:
            imm64(a, RDX, <int64_t>(<uint64_t>1 << 63))
            op_rr(a, 1, X_CMP, RAX, RDX)             # cmp rax, INT64_MIN
        else:
            alu_imm(a, 0, ALU_CMP, RAX, <int32_t>0x80000000)   # cmp eax, INT32_MIN
        povf = jcc32(a, CC_E)
        here(a, pdo)
        cqo(a, w)                                   # cqo / cdq
        unary(a, w, G3_IDIV, RCX)                   # idiv rcx (ecx)
    else:
        zero32(a, RDX)
        unary(a, w, G3_DIV, RCX)                    # div rcx (ecx)
    if rem:
        op_rr(a, w, X_MOV, RAX, RDX)
    pdone = jmp32(a)
    here(a, pz)                                     # x / 0 = all ones; x % 0 = x
    if not rem:
        imm64(a, RAX, -1)
    if povf != NULL:
        pdo = jmp32(a)
        here(a, povf)                               # MIN / -1 = MIN (in rax); MIN % -1 = 0
        if rem:
            zero32(a, RAX)
        here(a, pdo)
    here(a, pdone)
    if w:
        rax_to(a, r.rd)
    else:
        eax_to(a, r.rd)


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
