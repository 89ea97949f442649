# The x86-64 encoder of the RISC-V hart's compiled tier (included by riscv_jit.pxi
# after the Jit struct; every function writes at ``a.p`` and advances it, and
# touches nothing else of the Jit).  The translator (riscv_jit*.pxi) calls these
# and names opcodes by the constants below, never by bare bytes.
# tests/riscv/test_x86_encoder.py encodes each function's forms through
# ``_x86_encode`` and compares objdump's disassembly of the bytes.

# registers (the number in ModRM/REX; the low 3 bits in ModRM, bit 3 in REX)
cdef enum:
    RAX = 0
    RCX = 1
    RDX = 2
    RBX = 3
    RSP = 4
    RBP = 5
    RSI = 6
    RDI = 7
    R8 = 8
    R9 = 9
    R12 = 12
    R13 = 13
    R14 = 14
    R15 = 15

# condition codes (jcc = 0f 80+cc, setcc = 0f 90+cc, cmovcc = 0f 40+cc)
cdef enum:
    CC_O = 0x0
    CC_B = 0x2
    CC_AE = 0x3
    CC_E = 0x4
    CC_NE = 0x5
    CC_BE = 0x6
    CC_A = 0x7
    CC_L = 0xc
    CC_GE = 0xd
    CC_LE = 0xe
    CC_G = 0xf

# prefixes, REX bits, ModRM/SIB forms
cdef enum:
    P_OPSIZE = 0x66             # 16-bit operand
    REX = 0x40
    REX_W = 0x08                # 64-bit operand
    REX_R = 0x04                # ModRM.reg bit 3
    REX_X = 0x02                # SIB.index bit 3
    REX_B = 0x01                # ModRM.rm / SIB.base bit 3
    MOD_IND = 0x00              # [rm] (or SIB), no displacement
    MOD_DISP8 = 0x40            # [rm + disp8]
    MOD_DISP32 = 0x80           # [rm + disp32]
    MOD_REG = 0xc0              # rm is a register
    RM_SIB = 4                  # rm field: a SIB byte follows
    SIB_NONE = 0x24             # SIB: no index, base rsp/r12

# one-byte opcodes; "r, r/m" means reg <- reg op r/m, "r/m, r" the store direction
cdef enum:
    X_ADD = 0x03                # add r, r/m
    X_OR_MR = 0x09              # or r/m, r (with LOCK: an atomic or)
    X_OR = 0x0b                 # or r, r/m
    X_AND_MR = 0x21             # and r/m, r (with LOCK)
    X_AND = 0x23                # and r, r/m
    X_SUB = 0x2b                # sub r, r/m
    X_XOR_MR = 0x31             # xor r/m, r (with LOCK)
    X_XOR = 0x33                # xor r, r/m
    X_CMP = 0x3b                # cmp r, r/m
    X_PUSH = 0x50               # push r (+reg)
    X_POP = 0x58                # pop r (+reg)
    X_MOVSXD = 0x63             # movsxd r64, r/m32
    X_GRP1_8 = 0x80             # (add..cmp) r/m8, imm8
    X_GRP1 = 0x81               # (add..cmp) r/m, imm32
    X_GRP1_I8 = 0x83            # (add..cmp) r/m, imm8 sign-extended
    X_TEST = 0x85               # test r/m, r
    X_XCHG = 0x87               # xchg r/m, r (locked by itself)
    X_MOV8_MR = 0x88            # mov r/m8, r8
    X_MOV_MR = 0x89             # mov r/m, r
    X_MOV = 0x8b                # mov r, r/m
    X_LEA = 0x8d                # lea r, m
    X_CQO = 0x99                # cdq (cqo with REX.W)
    X_MOV_RI = 0xb8             # mov r, imm32/imm64 (+reg)
    X_GRP2_I8 = 0xc1            # (rol..sar) r/m, imm8
    X_RET = 0xc3
    X_MOV_MI = 0xc7             # mov r/m, imm32 (sign-extended with REX.W)
    X_GRP2_CL = 0xd3            # (rol..sar) r/m, cl
    X_JMP32 = 0xe9              # jmp rel32
    X_LOCK = 0xf0               # the LOCK prefix
    X_GRP3 = 0xf7               # (test, not, neg, mul, imul, div, idiv) r/m
    X_GRP5 = 0xff               # (inc, dec, call, .., jmp) r/m
    X_0F = 0x0f                 # two-byte opcodes:
    X0F_CMOV = 0x40             # cmovcc r, r/m (+cc)
    X0F_JCC = 0x80              # jcc rel32 (+cc)
    X0F_SETCC = 0x90            # setcc r/m8 (+cc)
    X0F_BT = 0xa3               # bt r/m, r (bts 0xab, btr 0xb3, btc 0xbb: + (ext-4)*8)
    X0F_FENCE = 0xae            # (lfence, mfence, sfence: ModRM e8, f0, f8)
    X0F_IMUL = 0xaf             # imul r, r/m
    X0F_CMPXCHG = 0xb1          # cmpxchg r/m, r (with LOCK)
    X0F_MOVZX8 = 0xb6           # movzx r, r/m8
    X0F_MOVZX16 = 0xb7          # movzx r, r/m16
    X0F_BT_I8 = 0xba            # (bt, bts, btr, btc: ext 4..7) r/m, imm8
    X0F_MOVSX8 = 0xbe           # movsx r, r/m8
    X0F_MOVSX16 = 0xbf          # movsx r, r/m16
    X0F_XADD = 0xc1             # xadd r/m, r (with LOCK)
    X0F_BSWAP = 0xc8            # bswap r (+reg)
    X_MFENCE = 0xf0             # the ModRM byte after 0f ae

# the ModRM.reg extension of the group opcodes
cdef enum:
    ALU_ADD = 0
    ALU_OR = 1
    ALU_AND = 4
    ALU_SUB = 5
    ALU_XOR = 6
    ALU_CMP = 7
    SH_ROL = 0
    SH_ROR = 1
    SH_SHL = 4
    SH_SHR = 5
    SH_SAR = 7
    G3_NOT = 2
    G3_MUL = 4
    G3_IMUL = 5
    G3_DIV = 6
    G3_IDIV = 7
    G5_CALL = 2
    G5_JMP = 4
    BT_BT = 4
    BT_BTS = 5
    BT_BTR = 6
    BT_BTC = 7


# -- bytes ----------------------------------------------------------------------------------

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
    """The REX prefix for these operands, when one is needed."""
    cdef int v = REX | (REX_W if w else 0) | (REX_R if reg & 8 else 0) | (REX_B if rm & 8 else 0)
    if v != REX:
        b1(a, v)

cdef inline void rex_byte(Jit *a, int w, int reg, int rm, int byte_reg) noexcept nogil:
    """REX when one operand, ``byte_reg``, is a byte register: always there when it
    is spl/bpl/sil/dil (without a REX those numbers are ah/ch/dh/bh)."""
    cdef int v = REX | (REX_W if w else 0) | (REX_R if reg & 8 else 0) | (REX_B if rm & 8 else 0)
    if v != REX or 4 <= byte_reg <= 7:
        b1(a, v)

cdef inline void mem(Jit *a, int reg, int base, int32_t disp) noexcept nogil:
    """ModRM (+SIB) for [base + disp], in its shortest form (no displacement,
    disp8 or disp32; rbp/r13 as a base always take one)."""
    cdef int mod = MOD_DISP32
    if disp == 0 and (base & 7) != RBP:
        mod = MOD_IND
    elif -128 <= disp <= 127:
        mod = MOD_DISP8
    b1(a, mod | ((reg & 7) << 3) | (base & 7))
    if (base & 7) == RSP:
        b1(a, SIB_NONE)
    if mod == MOD_DISP8:
        b1(a, disp)
    elif mod == MOD_DISP32:
        d4(a, disp)

cdef enum:
    RX_0F = 1                   # op_rx: a two-byte (0f) opcode
    RX_BYTE = 2                 # op_rx: ``reg`` is a byte register (spl..dil take a REX)
    RX_WORD = 4                 # op_rx: 16-bit operand (the 66 prefix)
    RX_SCALE = 3                # op_sib: flags >> RX_SCALE = s, the index scaled by 2**s


cdef inline void op_rx(Jit *a, int w, int opc, int reg, int index, int32_t disp,
                       int flags) noexcept nogil:
    """``opc reg, [rax + index + disp]`` (or the store direction, by opcode): a SIB
    with rax as its base, in its shortest form; ``index`` not rsp."""
    op_sib(a, w, opc, reg, RAX, index, disp, flags)


cdef inline void op_sib(Jit *a, int w, int opc, int reg, int base, int index, int32_t disp,
                        int flags) noexcept nogil:
    """``opc reg, [base + index * 2**s + disp]`` (or the store direction, by opcode;
    s = flags >> RX_SCALE), in its shortest form; ``index`` not rsp."""
    cdef int v = (REX | (REX_W if w else 0) | (REX_R if reg & 8 else 0) |
                  (REX_X if index & 8 else 0) | (REX_B if base & 8 else 0))
    cdef int mod = MOD_DISP32
    if disp == 0 and base & 7 != RBP:       # (rbp, r13 as a SIB base: a displacement)
        mod = MOD_IND
    elif -128 <= disp <= 127:
        mod = MOD_DISP8
    if flags & RX_WORD:
        b1(a, P_OPSIZE)
    if v != REX or (flags & RX_BYTE and 4 <= reg <= 7):
        b1(a, v)
    if flags & RX_0F:
        b1(a, X_0F)
    b1(a, opc)
    b1(a, mod | ((reg & 7) << 3) | RM_SIB)
    b1(a, ((flags >> RX_SCALE) << 6) | ((index & 7) << 3) | (base & 7))
    if mod == MOD_DISP8:
        b1(a, disp)
    elif mod == MOD_DISP32:
        d4(a, disp)

cdef inline void lea_scaled(Jit *a, int dst, int base, int index, int s) noexcept nogil:
    """``lea dst, [base + index * 2**s]`` (64-bit; ``index`` not rsp, s 0..3)."""
    op_sib(a, 1, X_LEA, dst, base, index, 0, s << RX_SCALE)

cdef inline void modrm_rr(Jit *a, int reg, int rm) noexcept nogil:
    b1(a, MOD_REG | ((reg & 7) << 3) | (rm & 7))


# -- generic forms ----------------------------------------------------------------------------

cdef inline void op_rm(Jit *a, int w, int opc, int reg, int base, int32_t disp) noexcept nogil:
    """``opc reg, [base+disp]`` (or the store direction, by opcode); one-byte opcodes."""
    rex(a, w, reg, base)
    b1(a, opc)
    mem(a, reg, base, disp)

cdef inline void op0f_rm(Jit *a, int w, int opc, int reg, int base, int32_t disp) noexcept nogil:
    """``0f opc reg, [base+disp]`` (movzx, movsx, imul)."""
    rex(a, w, reg, base)
    b1(a, X_0F)
    b1(a, opc)
    mem(a, reg, base, disp)

cdef inline void op_rr(Jit *a, int w, int opc, int reg, int rm) noexcept nogil:
    """``opc reg, rm`` on two registers (or ``opc /reg rm`` for a group opcode)."""
    rex(a, w, reg, rm)
    b1(a, opc)
    modrm_rr(a, reg, rm)

cdef inline void op0f_rr(Jit *a, int w, int opc, int reg, int rm) noexcept nogil:
    """``0f opc reg, rm`` on two registers (imul, cmovcc, bt, movzx/movsx of
    rax..rbx's low bytes or words)."""
    rex(a, w, reg, rm)
    b1(a, X_0F)
    b1(a, opc)
    modrm_rr(a, reg, rm)


# -- moves --------------------------------------------------------------------------------------

cdef inline void mov_rr(Jit *a, int dst, int src) noexcept nogil:
    op_rr(a, 1, X_MOV, dst, src)

cdef inline void mov_r32_imm32(Jit *a, int reg, uint32_t v) noexcept nogil:
    """mov r32, imm32 (zero-extends)."""
    rex(a, 0, 0, reg)
    b1(a, X_MOV_RI | (reg & 7))
    d4(a, <int32_t>v)

cdef inline void imm64(Jit *a, int reg, int64_t v) noexcept nogil:
    """reg = v: mov r64, simm32 when it fits, else mov r64, imm64."""
    rex(a, 1, 0, reg)
    if -0x80000000 <= v <= 0x7fffffff:
        b1(a, X_MOV_MI)
        modrm_rr(a, 0, reg)
        d4(a, v)
    else:
        b1(a, X_MOV_RI | (reg & 7))
        q8(a, <uint64_t>v)

cdef inline void store8(Jit *a, int reg, int base, int32_t disp) noexcept nogil:
    """mov byte [base+disp], reg8 (sil/dil/r8b.. by REX)."""
    rex_byte(a, 0, reg, base, reg)
    b1(a, X_MOV8_MR)
    mem(a, reg, base, disp)

cdef inline void store16(Jit *a, int reg, int base, int32_t disp) noexcept nogil:
    """mov word [base+disp], reg16."""
    b1(a, P_OPSIZE)
    op_rm(a, 0, X_MOV_MR, reg, base, disp)

cdef inline void movzx_r32_r8(Jit *a, int dst, int src) noexcept nogil:
    rex_byte(a, 0, dst, src, src)
    b1(a, X_0F)
    b1(a, X0F_MOVZX8)
    modrm_rr(a, dst, src)

cdef inline void zero32(Jit *a, int reg) noexcept nogil:
    """xor r32, r32: reg = 0."""
    op_rr(a, 0, X_XOR_MR, reg, reg)


# -- arithmetic -------------------------------------------------------------------------------

cdef inline void alu_imm(Jit *a, int w, int ext, int reg, int32_t v) noexcept nogil:
    """(add, or, and, sub, xor, cmp: ``ext``) reg, simm32 (the imm8 form when it fits)."""
    rex(a, w, 0, reg)
    if -128 <= v <= 127:
        b1(a, X_GRP1_I8)
        modrm_rr(a, ext, reg)
        b1(a, v)
        return
    b1(a, X_GRP1)
    modrm_rr(a, ext, reg)
    d4(a, v)

cdef inline void alu_m_imm8(Jit *a, int w, int ext, int base, int32_t disp, int v) noexcept nogil:
    """(add..cmp: ``ext``) dword/qword [base+disp], simm8."""
    op_rm(a, w, X_GRP1_I8, ext, base, disp)
    b1(a, v)

cdef inline void cmp_idx_imm8(Jit *a, int size, int base, int index, int v) noexcept nogil:
    """cmp byte/word/dword (``size`` 1, 2, 4) [base + index], simm8; ``base`` not
    rbp/r13, ``index`` not rsp."""
    if size == 2:
        b1(a, P_OPSIZE)
    if (base | index) & 8:
        b1(a, REX | (REX_X if index & 8 else 0) | (REX_B if base & 8 else 0))
    b1(a, X_GRP1_8 if size == 1 else X_GRP1_I8)
    b1(a, MOD_IND | (ALU_CMP << 3) | RM_SIB)
    b1(a, ((index & 7) << 3) | (base & 7))
    b1(a, v)

cdef inline void shift_imm(Jit *a, int w, int ext, int reg, int n) noexcept nogil:
    """(rol, ror, shl, shr, sar: ``ext``) reg, n."""
    rex(a, w, 0, reg)
    b1(a, X_GRP2_I8)
    modrm_rr(a, ext, reg)
    b1(a, n)

cdef inline void shift_cl(Jit *a, int w, int ext, int reg) noexcept nogil:
    """(rol, ror, shl, shr, sar: ``ext``) reg, cl."""
    op_rr(a, w, X_GRP2_CL, ext, reg)

cdef inline void unary(Jit *a, int w, int ext, int reg) noexcept nogil:
    """(not, mul, imul, div, idiv: ``ext``) reg; the last four on rdx:rax."""
    op_rr(a, w, X_GRP3, ext, reg)

cdef inline void cqo(Jit *a, int w) noexcept nogil:
    """rdx:rax = rax sign-extended (cdq: edx:eax when not ``w``)."""
    rex(a, w, 0, 0)
    b1(a, X_CQO)

cdef inline void setcc(Jit *a, int cc, int reg) noexcept nogil:
    """reg8 = condition ``cc`` (rax..rbx)."""
    b1(a, X_0F)
    b1(a, X0F_SETCC | cc)
    modrm_rr(a, 0, reg)

cdef inline void bswap(Jit *a, int w, int reg) noexcept nogil:
    rex(a, w, 0, reg)
    b1(a, X_0F)
    b1(a, X0F_BSWAP | (reg & 7))

cdef inline void bt_rr(Jit *a, int ext, int rm, int bit) noexcept nogil:
    """(bt, bts, btr, btc: ``ext`` 4..7) rm, bit (64-bit; the bit number mod 64)."""
    op0f_rr(a, 1, X0F_BT | ((ext - 4) << 3), bit, rm)

cdef inline void bt_imm(Jit *a, int ext, int rm, int n) noexcept nogil:
    """(bt, bts, btr, btc: ``ext`` 4..7) rm, n (64-bit)."""
    op0f_rr(a, 1, X0F_BT_I8, ext, rm)
    b1(a, n)


# -- stack, calls, jumps ----------------------------------------------------------------------

cdef inline void push(Jit *a, int reg) noexcept nogil:
    rex(a, 0, 0, reg)
    b1(a, X_PUSH | (reg & 7))

cdef inline void pop(Jit *a, int reg) noexcept nogil:
    rex(a, 0, 0, reg)
    b1(a, X_POP | (reg & 7))

cdef inline void ret(Jit *a) noexcept nogil:
    b1(a, X_RET)

cdef inline void mfence(Jit *a) noexcept nogil:
    b1(a, X_0F); b1(a, X0F_FENCE); b1(a, X_MFENCE)

cdef inline void call_r(Jit *a, int reg) noexcept nogil:
    op_rr(a, 0, X_GRP5, G5_CALL, reg)

cdef inline void jmp_r(Jit *a, int reg) noexcept nogil:
    op_rr(a, 0, X_GRP5, G5_JMP, reg)

cdef inline void jmp_m(Jit *a, int base, int32_t disp) noexcept nogil:
    """jmp qword [base+disp]."""
    op_rm(a, 0, X_GRP5, G5_JMP, base, disp)

cdef inline void call_abs(Jit *a, void *fn) noexcept nogil:
    """call fn (through rax)."""
    imm64(a, RAX, <int64_t><uintptr_t>fn)
    call_r(a, RAX)

cdef inline uint8_t *jcc32(Jit *a, int cc) noexcept nogil:
    """A forward jcc; returns where to patch (see ``here``)."""
    b1(a, X_0F); b1(a, X0F_JCC | cc)
    d4(a, 0)
    return a.p

cdef inline uint8_t *jmp32(Jit *a) noexcept nogil:
    b1(a, X_JMP32)
    d4(a, 0)
    return a.p

cdef inline void here(Jit *a, uint8_t *after) noexcept nogil:
    """Point the rel32 that ends at ``after`` at the current position."""
    cdef int32_t rel = <int32_t>(a.p - after)
    memcpy(after - 4, &rel, 4)

cdef inline void jmp_patch(uint8_t *after, uint8_t *target) noexcept nogil:
    """Point the rel32 that ends at ``after`` at ``target``."""
    cdef int32_t rel = <int32_t>(target - after)
    memcpy(after - 4, &rel, 4)

cdef inline void jmp_to(Jit *a, uint8_t *target) noexcept nogil:
    b1(a, X_JMP32)
    d4(a, <int64_t>(target - (a.p + 4)))


# -- for tests/riscv/test_x86_encoder.py ---------------------------------------------------------

def _x86_encode(str name, *args):
    """The bytes one encoder function writes for ``args`` (jumps: ``jcc32``,
    ``jmp32`` and ``jmp_to`` aim at the start of the output)."""
    cdef Jit *a = <Jit *>malloc(sizeof(Jit))
    cdef uint8_t buf[32]
    cdef int64_t v[7]
    cdef int i
    cdef uint8_t *after
    if a == NULL:
        raise MemoryError()
    for i in range(7):
        v[i] = args[i] if i < len(args) else 0
    a.p = buf
    try:
        if name == "op_rm":
            op_rm(a, <int>v[0], <int>v[1], <int>v[2], <int>v[3], <int32_t>v[4])
        elif name == "op0f_rm":
            op0f_rm(a, <int>v[0], <int>v[1], <int>v[2], <int>v[3], <int32_t>v[4])
        elif name == "op_rx":
            op_rx(a, <int>v[0], <int>v[1], <int>v[2], <int>v[3], <int32_t>v[4], <int>v[5])
        elif name == "op_sib":
            op_sib(a, <int>v[0], <int>v[1], <int>v[2], <int>v[3], <int>v[4], <int32_t>v[5],
                   <int>v[6])
        elif name == "lea_scaled":
            lea_scaled(a, <int>v[0], <int>v[1], <int>v[2], <int>v[3])
        elif name == "op_rr":
            op_rr(a, <int>v[0], <int>v[1], <int>v[2], <int>v[3])
        elif name == "op0f_rr":
            op0f_rr(a, <int>v[0], <int>v[1], <int>v[2], <int>v[3])
        elif name == "mov_rr":
            mov_rr(a, <int>v[0], <int>v[1])
        elif name == "mov_r32_imm32":
            mov_r32_imm32(a, <int>v[0], <uint32_t>v[1])
        elif name == "imm64":
            imm64(a, <int>v[0], v[1])
        elif name == "store8":
            store8(a, <int>v[0], <int>v[1], <int32_t>v[2])
        elif name == "store16":
            store16(a, <int>v[0], <int>v[1], <int32_t>v[2])
        elif name == "movzx_r32_r8":
            movzx_r32_r8(a, <int>v[0], <int>v[1])
        elif name == "zero32":
            zero32(a, <int>v[0])
        elif name == "alu_imm":
            alu_imm(a, <int>v[0], <int>v[1], <int>v[2], <int32_t>v[3])
        elif name == "alu_m_imm8":
            alu_m_imm8(a, <int>v[0], <int>v[1], <int>v[2], <int32_t>v[3], <int>v[4])
        elif name == "cmp_idx_imm8":
            cmp_idx_imm8(a, <int>v[0], <int>v[1], <int>v[2], <int>v[3])
        elif name == "shift_imm":
            shift_imm(a, <int>v[0], <int>v[1], <int>v[2], <int>v[3])
        elif name == "shift_cl":
            shift_cl(a, <int>v[0], <int>v[1], <int>v[2])
        elif name == "unary":
            unary(a, <int>v[0], <int>v[1], <int>v[2])
        elif name == "cqo":
            cqo(a, <int>v[0])
        elif name == "setcc":
            setcc(a, <int>v[0], <int>v[1])
        elif name == "bswap":
            bswap(a, <int>v[0], <int>v[1])
        elif name == "bt_rr":
            bt_rr(a, <int>v[0], <int>v[1], <int>v[2])
        elif name == "bt_imm":
            bt_imm(a, <int>v[0], <int>v[1], <int>v[2])
        elif name == "push":
            push(a, <int>v[0])
        elif name == "pop":
            pop(a, <int>v[0])
        elif name == "ret":
            ret(a)
        elif name == "mfence":
            mfence(a)
        elif name == "call_r":
            call_r(a, <int>v[0])
        elif name == "jmp_r":
            jmp_r(a, <int>v[0])
        elif name == "jmp_m":
            jmp_m(a, <int>v[0], <int32_t>v[1])
        elif name == "jcc32":
            after = jcc32(a, <int>v[0])
            jmp_patch(after, buf)
        elif name == "jmp32":
            after = jmp32(a)
            jmp_patch(after, buf)
        elif name == "jmp_to":
            jmp_to(a, buf)
        else:
            raise ValueError(f"no encoder function {name!r}")
        return bytes(buf[:a.p - buf])
    finally:
        free(a)
