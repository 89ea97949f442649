# Decoding RV64GC instructions into Rec records (included by riscv.pyx).
#
# Every 32-bit and 16-bit encoding maps to one op id; compressed forms expand
# to the op of their 32-bit equivalent with len = 2.  Writes to x0 are
# redirected to the sink register x[32], so the executor never tests rd == 0.
# Reserved and unknown encodings decode to OP_ILLEGAL with bits = the
# instruction (mtval of the illegal-instruction trap).

cdef enum:
    OP_NONE = 0, OP_BREAK, OP_XPAGE, OP_ILLEGAL,
    OP_LUI, OP_AUIPC, OP_JAL, OP_JALR,
    OP_BEQ, OP_BNE, OP_BLT, OP_BGE, OP_BLTU, OP_BGEU,
    OP_LB, OP_LH, OP_LW, OP_LD, OP_LBU, OP_LHU, OP_LWU,
    OP_SB, OP_SH, OP_SW, OP_SD,
    OP_ADDI, OP_SLTI, OP_SLTIU, OP_XORI, OP_ORI, OP_ANDI, OP_SLLI, OP_SRLI, OP_SRAI,
    OP_ADD, OP_SUB, OP_SLL, OP_SLT, OP_SLTU, OP_XOR, OP_SRL, OP_SRA, OP_OR, OP_AND,
    OP_ADDIW, OP_SLLIW, OP_SRLIW, OP_SRAIW,
    OP_ADDW, OP_SUBW, OP_SLLW, OP_SRLW, OP_SRAW,
    OP_MUL, OP_MULH, OP_MULHSU, OP_MULHU, OP_DIV, OP_DIVU, OP_REM, OP_REMU,
    OP_MULW, OP_DIVW, OP_DIVUW, OP_REMW, OP_REMUW,
    OP_NOP, OP_MV, OP_LI, OP_J, OP_PAGEEND,
    OP_ZB, OP_ZBI,      # Zba/Zbb/Zbc/Zbs (riscv_zb.pxi): the operation in rs3
    # below: handled outside the hot switch (exec_slow)
    OP_FENCE, OP_FENCE_I, OP_ECALL, OP_EBREAK, OP_MRET, OP_SRET, OP_WFI, OP_SFENCE_VMA,
    OP_CSRRW, OP_CSRRS, OP_CSRRC, OP_CSRRWI, OP_CSRRSI, OP_CSRRCI,
    OP_LR_W, OP_SC_W, OP_LR_D, OP_SC_D, OP_AMO_W, OP_AMO_D,
    OP_FLW, OP_FLD, OP_FSW, OP_FSD, OP_FP,
    OP_JIT,             # the head of a compiled block (riscv_jit.pxi)
    OP_COUNT

cdef inline int32_t sext(uint32_t v, int bits) noexcept nogil:
    return (<int32_t>(v << (32 - bits))) >> (32 - bits)

cdef inline void mk(Rec *r, int op, int rd, int rs1, int rs2, int32_t imm) noexcept nogil:
    r.op = op
    r.rd = rd
    r.rs1 = rs1
    r.rs2 = rs2
    r.imm = imm

cdef inline void mkw(Rec *r, int op, int rd, int rs1, int rs2, int32_t imm) noexcept nogil:
    # an op writing integer rd: x0 becomes the sink
    r.op = op
    r.rd = rd if rd != 0 else 32
    r.rs1 = rs1
    r.rs2 = rs2
    r.imm = imm


include "riscv_zb.pxi"     # decode_zb, zb_alu


cdef void decode32(uint32_t b, Rec *r) noexcept nogil:
    cdef uint32_t opc = b & 0x7f
    cdef int rd = (b >> 7) & 31
    cdef int f3 = (b >> 12) & 7
    cdef int rs1 = (b >> 15) & 31
    cdef int rs2 = (b >> 20) & 31
    cdef uint32_t f7 = b >> 25
    cdef int32_t immi = (<int32_t>b) >> 20
    cdef int32_t imms = ((<int32_t>(b & 0xfe000000U)) >> 20) | <int32_t>((b >> 7) & 0x1f)
    cdef int32_t immb, immj, op
    r.len = 4
    r.nxt = 32
    r.bits = b
    r.rs3 = 0
    r.op = OP_ILLEGAL
    r.rd = 0
    r.rs1 = 0
    r.rs2 = 0
    r.imm = 0
    if opc == 0x37:
        mkw(r, OP_LUI, rd, 0, 0, <int32_t>(b & 0xfffff000U))
    elif opc == 0x17:
        mkw(r, OP_AUIPC, rd, 0, 0, <int32_t>(b & 0xfffff000U))
    elif opc == 0x6f:
        immj = (((<int32_t>(b & 0x80000000U)) >> 11) | <int32_t>(b & 0xff000)
                | <int32_t>((b >> 9) & 0x800) | <int32_t>((b >> 20) & 0x7fe))
        mkw(r, OP_JAL if rd != 0 else OP_J, rd, 0, 0, immj)
    elif opc == 0x67:
        if f3 == 0:
            mkw(r, OP_JALR, rd, rs1, 0, immi)
    elif opc == 0x63:
        immb = (((<int32_t>(b & 0x80000000U)) >> 19) | <int32_t>((b & 0x80) << 4)
                | <int32_t>((b >> 20) & 0x7e0) | <int32_t>((b >> 7) & 0x1e))
        if f3 != 2 and f3 != 3:
            if f3 == 0: op = OP_BEQ
            elif f3 == 1: op = OP_BNE
            elif f3 == 4: op = OP_BLT
            elif f3 == 5: op = OP_BGE
            elif f3 == 6: op = OP_BLTU
            else: op = OP_BGEU
            mk(r, op, 0, rs1, rs2, immb)
    elif opc == 0x03:
        if f3 != 7:
            if f3 == 0: op = OP_LB
            elif f3 == 1: op = OP_LH
            elif f3 == 2: op = OP_LW
            elif f3 == 3: op = OP_LD
            elif f3 == 4: op = OP_LBU
            elif f3 == 5: op = OP_LHU
            else: op = OP_LWU
            mkw(r, op, rd, rs1, 0, immi)
    elif opc == 0x23:
        if f3 <= 3:
            if f3 == 0: op = OP_SB
            elif f3 == 1: op = OP_SH
            elif f3 == 2: op = OP_SW
            else: op = OP_SD
            mk(r, op, 0, rs1, rs2, imms)
    elif opc == 0x13:
        if f3 == 0:
            if rd == 0:
                mk(r, OP_NOP, 0, 0, 0, 0)
            elif rs1 == 0:
                mkw(r, OP_LI, rd, 0, 0, immi)
            elif immi == 0:
                mkw(r, OP_MV, rd, rs1, 0, 0)
            else:
                mkw(r, OP_ADDI, rd, rs1, 0, immi)
        elif f3 == 2: mkw(r, OP_SLTI, rd, rs1, 0, immi)
        elif f3 == 3: mkw(r, OP_SLTIU, rd, rs1, 0, immi)
        elif f3 == 4: mkw(r, OP_XORI, rd, rs1, 0, immi)
        elif f3 == 6: mkw(r, OP_ORI, rd, rs1, 0, immi)
        elif f3 == 7: mkw(r, OP_ANDI, rd, rs1, 0, immi)
        elif f3 == 1:
            if (b >> 26) == 0:
                mkw(r, OP_SLLI, rd, rs1, 0, (b >> 20) & 63)
        else:
            if (b >> 26) == 0:
                mkw(r, OP_SRLI, rd, rs1, 0, (b >> 20) & 63)
            elif (b >> 26) == 0x10:
                mkw(r, OP_SRAI, rd, rs1, 0, (b >> 20) & 63)
    elif opc == 0x1b:
        if f3 == 0:
            mkw(r, OP_ADDIW, rd, rs1, 0, immi)
        elif f3 == 1:
            if f7 == 0:
                mkw(r, OP_SLLIW, rd, rs1, 0, rs2)
        elif f3 == 5:
            if f7 == 0:
                mkw(r, OP_SRLIW, rd, rs1, 0, rs2)
            elif f7 == 0x20:
                mkw(r, OP_SRAIW, rd, rs1, 0, rs2)
    elif opc == 0x33:
        op = OP_ILLEGAL
        if f7 == 0:
            if f3 == 0: op = OP_ADD
            elif f3 == 1: op = OP_SLL
            elif f3 == 2: op = OP_SLT
            elif f3 == 3: op = OP_SLTU
            elif f3 == 4: op = OP_XOR
            elif f3 == 5: op = OP_SRL
            elif f3 == 6: op = OP_OR
            else: op = OP_AND
        elif f7 == 0x20:
            if f3 == 0: op = OP_SUB
            elif f3 == 5: op = OP_SRA
        elif f7 == 1:
            if f3 == 0: op = OP_MUL
            elif f3 == 1: op = OP_MULH
            elif f3 == 2: op = OP_MULHSU
            elif f3 == 3: op = OP_MULHU
            elif f3 == 4: op = OP_DIV
            elif f3 == 5: op = OP_DIVU
            elif f3 == 6: op = OP_REM
            else: op = OP_REMU
        if op != OP_ILLEGAL:
            mkw(r, op, rd, rs1, rs2, 0)
    elif opc == 0x3b:
        op = OP_ILLEGAL
        if f7 == 0:
            if f3 == 0: op = OP_ADDW
            elif f3 == 1: op = OP_SLLW
            elif f3 == 5: op = OP_SRLW
        elif f7 == 0x20:
            if f3 == 0: op = OP_SUBW
            elif f3 == 5: op = OP_SRAW
        elif f7 == 1:
            if f3 == 0: op = OP_MULW
            elif f3 == 4: op = OP_DIVW
            elif f3 == 5: op = OP_DIVUW
            elif f3 == 6: op = OP_REMW
            elif f3 == 7: op = OP_REMUW
        if op != OP_ILLEGAL:
            mkw(r, op, rd, rs1, rs2, 0)
    elif opc == 0x0f:
        if f3 == 0:
            mk(r, OP_FENCE, 0, 0, 0, 0)       # fence, fence.tso, pause: no-ops here
        elif f3 == 1:
            mk(r, OP_FENCE_I, 0, 0, 0, 0)
    elif opc == 0x73:
        if f3 == 0:
            if b == 0x00000073U: mk(r, OP_ECALL, 0, 0, 0, 0)
            elif b == 0x00100073U: mk(r, OP_EBREAK, 0, 0, 0, 0)
            elif b == 0x30200073U: mk(r, OP_MRET, 0, 0, 0, 0)
            elif b == 0x10200073U: mk(r, OP_SRET, 0, 0, 0, 0)
            elif b == 0x10500073U: mk(r, OP_WFI, 0, 0, 0, 0)
            elif f7 == 0x09 and rd == 0: mk(r, OP_SFENCE_VMA, 0, rs1, rs2, 0)
        elif f3 != 4:
            if f3 == 1: op = OP_CSRRW
            elif f3 == 2: op = OP_CSRRS
            elif f3 == 3: op = OP_CSRRC
            elif f3 == 5: op = OP_CSRRWI
            elif f3 == 6: op = OP_CSRRSI
            else: op = OP_CSRRCI
            mk(r, op, rd, rs1, 0, (b >> 20) & 0xfff)   # rd kept as is: rd == 0 means no read
    elif opc == 0x2f:
        if f3 == 2 or f3 == 3:
            op = OP_ILLEGAL
            if (f7 >> 2) == 0x02:
                if rs2 == 0: op = OP_LR_W if f3 == 2 else OP_LR_D
            elif (f7 >> 2) == 0x03:
                op = OP_SC_W if f3 == 2 else OP_SC_D
            elif (f7 >> 2) in (0x00, 0x01, 0x04, 0x08, 0x0c, 0x10, 0x14, 0x18, 0x1c):
                op = OP_AMO_W if f3 == 2 else OP_AMO_D
            if op != OP_ILLEGAL:
                mkw(r, op, rd, rs1, rs2, 0)
                r.rs3 = f7 >> 2
    elif opc == 0x07:
        if f3 == 2: mk(r, OP_FLW, rd, rs1, 0, immi)
        elif f3 == 3: mk(r, OP_FLD, rd, rs1, 0, immi)
    elif opc == 0x27:
        if f3 == 2: mk(r, OP_FSW, 0, rs1, rs2, imms)
        elif f3 == 3: mk(r, OP_FSD, 0, rs1, rs2, imms)
    elif opc == 0x43 or opc == 0x47 or opc == 0x4b or opc == 0x4f or opc == 0x53:
        mk(r, OP_FP, rd, rs1, rs2, 0)          # checked in full by exec_fp
        r.rs3 = b >> 27
    if r.op == OP_ILLEGAL and (opc & 0x57) == 0x13:    # OP, OP-32, OP-IMM, OP-IMM-32
        decode_zb(b, r)


cdef inline int creg(uint32_t v) noexcept nogil:
    return 8 + (v & 7)


cdef void decode16(uint32_t h, Rec *r) noexcept nogil:
    cdef int q = h & 3
    cdef int f3 = (h >> 13) & 7
    cdef int rd = (h >> 7) & 31
    cdef int rs2 = (h >> 2) & 31
    cdef int32_t imm
    cdef uint32_t u
    r.len = 2
    r.nxt = 16
    r.bits = h
    r.rs3 = 0
    r.op = OP_ILLEGAL
    r.rd = 0
    r.rs1 = 0
    r.rs2 = 0
    r.imm = 0
    if q == 0:
        if f3 == 0:        # c.addi4spn
            u = (((h >> 6) & 1) << 2) | (((h >> 5) & 1) << 3) | (((h >> 11) & 3) << 4) | (((h >> 7) & 0xf) << 6)
            if u != 0:
                mkw(r, OP_ADDI, creg(h >> 2), 2, 0, u)
        elif f3 == 1:      # c.fld
            u = (((h >> 10) & 7) << 3) | (((h >> 5) & 3) << 6)
            mk(r, OP_FLD, creg(h >> 2), creg(h >> 7), 0, u)
        elif f3 == 2:      # c.lw
            u = (((h >> 10) & 7) << 3) | (((h >> 6) & 1) << 2) | (((h >> 5) & 1) << 6)
            mkw(r, OP_LW, creg(h >> 2), creg(h >> 7), 0, u)
        elif f3 == 3:      # c.ld
            u = (((h >> 10) & 7) << 3) | (((h >> 5) & 3) << 6)
            mkw(r, OP_LD, creg(h >> 2), creg(h >> 7), 0, u)
        elif f3 == 5:      # c.fsd
            u = (((h >> 10) & 7) << 3) | (((h >> 5) & 3) << 6)
            mk(r, OP_FSD, 0, creg(h >> 7), creg(h >> 2), u)
        elif f3 == 6:      # c.sw
            u = (((h >> 10) & 7) << 3) | (((h >> 6) & 1) << 2) | (((h >> 5) & 1) << 6)
            mk(r, OP_SW, 0, creg(h >> 7), creg(h >> 2), u)
        elif f3 == 7:      # c.sd
            u = (((h >> 10) & 7) << 3) | (((h >> 5) & 3) << 6)
            mk(r, OP_SD, 0, creg(h >> 7), creg(h >> 2), u)
    elif q == 1:
        imm = sext((((h >> 12) & 1) << 5) | ((h >> 2) & 31), 6)
        if f3 == 0:        # c.addi (rd = 0: c.nop / hint)
            if rd == 0:
                mk(r, OP_NOP, 0, 0, 0, 0)
            else:
                mkw(r, OP_ADDI, rd, rd, 0, imm)
        elif f3 == 1:      # c.addiw
            if rd != 0:
                mkw(r, OP_ADDIW, rd, rd, 0, imm)
        elif f3 == 2:      # c.li
            mkw(r, OP_LI, rd, 0, 0, imm)
        elif f3 == 3:
            if rd == 2:    # c.addi16sp
                imm = sext((((h >> 12) & 1) << 9) | (((h >> 6) & 1) << 4) | (((h >> 5) & 1) << 6)
                           | (((h >> 3) & 3) << 7) | (((h >> 2) & 1) << 5), 10)
                if imm != 0:
                    mkw(r, OP_ADDI, 2, 2, 0, imm)
            else:          # c.lui
                imm = sext((((h >> 12) & 1) << 17) | (((h >> 2) & 31) << 12), 18)
                if imm != 0:
                    mkw(r, OP_LUI, rd, 0, 0, imm)
        elif f3 == 4:
            rd = creg(h >> 7)
            u = (h >> 10) & 3
            if u == 0:
                mkw(r, OP_SRLI, rd, rd, 0, (((h >> 12) & 1) << 5) | ((h >> 2) & 31))
            elif u == 1:
                mkw(r, OP_SRAI, rd, rd, 0, (((h >> 12) & 1) << 5) | ((h >> 2) & 31))
            elif u == 2:
                mkw(r, OP_ANDI, rd, rd, 0, imm)
            else:
                rs2 = creg(h >> 2)
                u = (h >> 5) & 3
                if (h >> 12) & 1 == 0:
                    if u == 0: mkw(r, OP_SUB, rd, rd, rs2, 0)
                    elif u == 1: mkw(r, OP_XOR, rd, rd, rs2, 0)
                    elif u == 2: mkw(r, OP_OR, rd, rd, rs2, 0)
                    else: mkw(r, OP_AND, rd, rd, rs2, 0)
                else:
                    if u == 0: mkw(r, OP_SUBW, rd, rd, rs2, 0)
                    elif u == 1: mkw(r, OP_ADDW, rd, rd, rs2, 0)
        elif f3 == 5:      # c.j
            imm = sext((((h >> 12) & 1) << 11) | (((h >> 11) & 1) << 4) | (((h >> 9) & 3) << 8)
                       | (((h >> 8) & 1) << 10) | (((h >> 7) & 1) << 6) | (((h >> 6) & 1) << 7)
                       | (((h >> 3) & 7) << 1) | (((h >> 2) & 1) << 5), 12)
            mk(r, OP_J, 32, 0, 0, imm)
        else:              # c.beqz / c.bnez
            imm = sext((((h >> 12) & 1) << 8) | (((h >> 10) & 3) << 3) | (((h >> 5) & 3) << 6)
                       | (((h >> 3) & 3) << 1) | (((h >> 2) & 1) << 5), 9)
            mk(r, OP_BEQ if f3 == 6 else OP_BNE, 0, creg(h >> 7), 0, imm)
    elif q == 2:
        if f3 == 0:        # c.slli
            if rd == 0:
                mk(r, OP_NOP, 0, 0, 0, 0)
            else:
                mkw(r, OP_SLLI, rd, rd, 0, (((h >> 12) & 1) << 5) | ((h >> 2) & 31))
        elif f3 == 1:      # c.fldsp
            u = (((h >> 12) & 1) << 5) | (((h >> 5) & 3) << 3) | (((h >> 2) & 7) << 6)
            mk(r, OP_FLD, rd, 2, 0, u)
        elif f3 == 2:      # c.lwsp
            if rd != 0:
                u = (((h >> 12) & 1) << 5) | (((h >> 4) & 7) << 2) | (((h >> 2) & 3) << 6)
                mkw(r, OP_LW, rd, 2, 0, u)
        elif f3 == 3:      # c.ldsp
            if rd != 0:
                u = (((h >> 12) & 1) << 5) | (((h >> 5) & 3) << 3) | (((h >> 2) & 7) << 6)
                mkw(r, OP_LD, rd, 2, 0, u)
        elif f3 == 4:
            if (h >> 12) & 1 == 0:
                if rs2 == 0:
                    if rd != 0:           # c.jr
                        mkw(r, OP_JALR, 0, rd, 0, 0)
                else:                     # c.mv
                    if rd == 0:
                        mk(r, OP_NOP, 0, 0, 0, 0)
                    else:
                        mkw(r, OP_MV, rd, rs2, 0, 0)
            else:
                if rs2 == 0:
                    if rd == 0:           # c.ebreak
                        mk(r, OP_EBREAK, 0, 0, 0, 0)
                    else:                 # c.jalr
                        mkw(r, OP_JALR, 1, rd, 0, 0)
                else:                     # c.add
                    if rd == 0:
                        mk(r, OP_NOP, 0, 0, 0, 0)
                    else:
                        mkw(r, OP_ADD, rd, rd, rs2, 0)
        elif f3 == 5:      # c.fsdsp
            u = (((h >> 10) & 7) << 3) | (((h >> 7) & 7) << 6)
            mk(r, OP_FSD, 0, 2, rs2, u)
        elif f3 == 6:      # c.swsp
            u = (((h >> 9) & 0xf) << 2) | (((h >> 7) & 3) << 6)
            mk(r, OP_SW, 0, 2, rs2, u)
        else:              # c.sdsp
            u = (((h >> 10) & 7) << 3) | (((h >> 7) & 7) << 6)
            mk(r, OP_SD, 0, 2, rs2, u)
