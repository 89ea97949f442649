# The bit-manipulation extensions Zba, Zbb, Zbc and Zbs (included by riscv_decode.pxi).
#
# Every one of them reads rs1 and a second operand and writes rd, so they share
# two op ids: OP_ZB (the second operand is x[rs2]) and OP_ZBI (it is imm: the
# shift amount of the immediate forms, 0 for the unary ops); the operation is
# in the record's rs3 (ZB_*).  Hart.ext_zb off (on by default, as QEMU 7.2's
# rv64) makes them illegal instructions again (checked when decoded: flush the
# decoded code after changing it).

cdef extern from *:
    """
    #define rv_zb_clz64(x) ((x) ? (uint64_t)__builtin_clzll(x) : 64)
    #define rv_zb_ctz64(x) ((x) ? (uint64_t)__builtin_ctzll(x) : 64)
    #define rv_zb_clz32(x) ((x) ? (uint64_t)__builtin_clz(x) : 32)
    #define rv_zb_ctz32(x) ((x) ? (uint64_t)__builtin_ctz(x) : 32)
    #define rv_zb_pop64(x) ((uint64_t)__builtin_popcountll(x))
    #define rv_zb_bswap64(x) __builtin_bswap64(x)
    """
    uint64_t rv_zb_clz64(uint64_t x) noexcept nogil
    uint64_t rv_zb_ctz64(uint64_t x) noexcept nogil
    uint64_t rv_zb_clz32(uint32_t x) noexcept nogil
    uint64_t rv_zb_ctz32(uint32_t x) noexcept nogil
    uint64_t rv_zb_pop64(uint64_t x) noexcept nogil
    uint64_t rv_zb_bswap64(uint64_t x) noexcept nogil

cdef enum:
    # Zba
    ZB_SH1ADD = 1, ZB_SH2ADD, ZB_SH3ADD, ZB_ADD_UW, ZB_SH1ADD_UW, ZB_SH2ADD_UW,
    ZB_SH3ADD_UW, ZB_SLLI_UW,
    # Zbb
    ZB_ANDN, ZB_ORN, ZB_XNOR, ZB_CLZ, ZB_CLZW, ZB_CTZ, ZB_CTZW, ZB_CPOP, ZB_CPOPW,
    ZB_MAX, ZB_MAXU, ZB_MIN, ZB_MINU, ZB_SEXT_B, ZB_SEXT_H, ZB_ZEXT_H,
    ZB_ROL, ZB_ROLW, ZB_ROR, ZB_RORW, ZB_ORC_B, ZB_REV8,
    # Zbc
    ZB_CLMUL, ZB_CLMULH, ZB_CLMULR,
    # Zbs
    ZB_BCLR, ZB_BEXT, ZB_BINV, ZB_BSET


cdef inline void zb_mk(Rec *r, int op, int sub, int rd, int rs1, int rs2, int32_t imm) noexcept nogil:
    r.op = op
    r.rd = rd if rd != 0 else 32
    r.rs1 = rs1
    r.rs2 = rs2
    r.imm = imm
    r.rs3 = sub


cdef void decode_zb(uint32_t b, Rec *r) noexcept nogil:
    """The Zb* encodings of OP, OP-32, OP-IMM and OP-IMM-32 (left illegal by decode32)."""
    cdef uint32_t opc = b & 0x7f, f7 = b >> 25, top6 = b >> 26, top12 = b >> 20
    cdef int rd = (b >> 7) & 31, f3 = (b >> 12) & 7, rs1 = (b >> 15) & 31, rs2 = (b >> 20) & 31
    cdef int sub = 0
    if opc == 0x33:
        if f7 == 0x10:
            sub = ZB_SH1ADD if f3 == 2 else ZB_SH2ADD if f3 == 4 else ZB_SH3ADD if f3 == 6 else 0
        elif f7 == 0x20:
            sub = ZB_ANDN if f3 == 7 else ZB_ORN if f3 == 6 else ZB_XNOR if f3 == 4 else 0
        elif f7 == 0x05:
            if f3 == 1: sub = ZB_CLMUL
            elif f3 == 2: sub = ZB_CLMULR
            elif f3 == 3: sub = ZB_CLMULH
            elif f3 == 4: sub = ZB_MIN
            elif f3 == 5: sub = ZB_MINU
            elif f3 == 6: sub = ZB_MAX
            elif f3 == 7: sub = ZB_MAXU
        elif f7 == 0x30:
            sub = ZB_ROL if f3 == 1 else ZB_ROR if f3 == 5 else 0
        elif f7 == 0x24:
            sub = ZB_BCLR if f3 == 1 else ZB_BEXT if f3 == 5 else 0
        elif f7 == 0x34:
            sub = ZB_BINV if f3 == 1 else 0
        elif f7 == 0x14:
            sub = ZB_BSET if f3 == 1 else 0
        if sub:
            zb_mk(r, OP_ZB, sub, rd, rs1, rs2, 0)
    elif opc == 0x3b:
        if f7 == 0x04 and f3 == 0:
            sub = ZB_ADD_UW
        elif f7 == 0x04 and f3 == 4 and rs2 == 0:
            zb_mk(r, OP_ZBI, ZB_ZEXT_H, rd, rs1, 0, 0)
        elif f7 == 0x10:
            sub = (ZB_SH1ADD_UW if f3 == 2 else ZB_SH2ADD_UW if f3 == 4
                   else ZB_SH3ADD_UW if f3 == 6 else 0)
        elif f7 == 0x30:
            sub = ZB_ROLW if f3 == 1 else ZB_RORW if f3 == 5 else 0
        if sub:
            zb_mk(r, OP_ZB, sub, rd, rs1, rs2, 0)
    elif opc == 0x13:
        if f3 == 1:
            if top12 == 0x600: sub = ZB_CLZ
            elif top12 == 0x601: sub = ZB_CTZ
            elif top12 == 0x602: sub = ZB_CPOP
            elif top12 == 0x604: sub = ZB_SEXT_B
            elif top12 == 0x605: sub = ZB_SEXT_H
            if sub:
                zb_mk(r, OP_ZBI, sub, rd, rs1, 0, 0)
            elif top6 == 0x0a: sub = ZB_BSET
            elif top6 == 0x12: sub = ZB_BCLR
            elif top6 == 0x1a: sub = ZB_BINV
        elif f3 == 5:
            if top12 == 0x287:
                zb_mk(r, OP_ZBI, ZB_ORC_B, rd, rs1, 0, 0)
            elif top12 == 0x6b8:
                zb_mk(r, OP_ZBI, ZB_REV8, rd, rs1, 0, 0)
            elif top6 == 0x18: sub = ZB_ROR
            elif top6 == 0x12: sub = ZB_BEXT
        if sub and r.op == OP_ILLEGAL:
            zb_mk(r, OP_ZBI, sub, rd, rs1, 0, (b >> 20) & 63)
    elif opc == 0x1b:
        if f3 == 1:
            if top12 == 0x600: sub = ZB_CLZW
            elif top12 == 0x601: sub = ZB_CTZW
            elif top12 == 0x602: sub = ZB_CPOPW
            if sub:
                zb_mk(r, OP_ZBI, sub, rd, rs1, 0, 0)
            elif top6 == 0x02:
                zb_mk(r, OP_ZBI, ZB_SLLI_UW, rd, rs1, 0, (b >> 20) & 63)
        elif f3 == 5 and f7 == 0x30:
            zb_mk(r, OP_ZBI, ZB_RORW, rd, rs1, 0, rs2)


cdef inline void zb_gate(Hart h, Rec *r) noexcept nogil:
    """A Zb* record decoded while the extensions are off: an illegal instruction."""
    if (r.op == OP_ZB or r.op == OP_ZBI) and not h.ext_zb:
        r.op = OP_ILLEGAL


cdef inline uint64_t zb_clmul(uint64_t a, uint64_t b) noexcept nogil:
    cdef uint64_t v = 0
    cdef int i
    for i in range(64):
        if (b >> i) & 1:
            v ^= a << i
    return v


cdef inline uint64_t zb_clmulh(uint64_t a, uint64_t b) noexcept nogil:
    cdef uint64_t v = 0
    cdef int i
    for i in range(1, 64):
        if (b >> i) & 1:
            v ^= a >> (64 - i)
    return v


cdef inline uint64_t zb_clmulr(uint64_t a, uint64_t b) noexcept nogil:
    cdef uint64_t v = 0
    cdef int i
    for i in range(64):
        if (b >> i) & 1:
            v ^= a >> (63 - i)
    return v


cdef inline uint64_t zb_orc_b(uint64_t a) noexcept nogil:
    cdef uint64_t v = 0
    cdef int i
    for i in range(8):
        if (a >> (8 * i)) & 0xff:
            v |= (<uint64_t>0xff) << (8 * i)
    return v


cdef inline uint64_t zb_rol32(uint32_t a, uint32_t n) noexcept nogil:
    n &= 31
    return <uint64_t><int64_t><int32_t>((a << n) | (a >> ((32 - n) & 31)))


cdef uint64_t zb_alu(int sub, uint64_t a, uint64_t b) noexcept nogil:
    """rd of the Zb* operation ``sub`` on rs1 = ``a`` and ``b`` (x[rs2] or the immediate)."""
    cdef uint64_t n = b & 63
    if sub == ZB_SH1ADD: return (a << 1) + b
    if sub == ZB_SH2ADD: return (a << 2) + b
    if sub == ZB_SH3ADD: return (a << 3) + b
    if sub == ZB_ADD_UW: return <uint32_t>a + b
    if sub == ZB_SH1ADD_UW: return ((<uint64_t><uint32_t>a) << 1) + b
    if sub == ZB_SH2ADD_UW: return ((<uint64_t><uint32_t>a) << 2) + b
    if sub == ZB_SH3ADD_UW: return ((<uint64_t><uint32_t>a) << 3) + b
    if sub == ZB_SLLI_UW: return (<uint64_t><uint32_t>a) << n
    if sub == ZB_ANDN: return a & ~b
    if sub == ZB_ORN: return a | ~b
    if sub == ZB_XNOR: return ~(a ^ b)
    if sub == ZB_CLZ: return rv_zb_clz64(a)
    if sub == ZB_CLZW: return rv_zb_clz32(<uint32_t>a)
    if sub == ZB_CTZ: return rv_zb_ctz64(a)
    if sub == ZB_CTZW: return rv_zb_ctz32(<uint32_t>a)
    if sub == ZB_CPOP: return rv_zb_pop64(a)
    if sub == ZB_CPOPW: return rv_zb_pop64(<uint32_t>a)
    if sub == ZB_MAX: return a if <int64_t>a > <int64_t>b else b
    if sub == ZB_MAXU: return a if a > b else b
    if sub == ZB_MIN: return a if <int64_t>a < <int64_t>b else b
    if sub == ZB_MINU: return a if a < b else b
    if sub == ZB_SEXT_B: return <uint64_t><int64_t>(<signed char>a)
    if sub == ZB_SEXT_H: return <uint64_t><int64_t>(<int16_t>a)
    if sub == ZB_ZEXT_H: return <uint16_t>a
    if sub == ZB_ROL: return (a << n) | (a >> ((64 - n) & 63))
    if sub == ZB_ROR: return (a >> n) | (a << ((64 - n) & 63))
    if sub == ZB_ROLW: return zb_rol32(<uint32_t>a, <uint32_t>b)
    if sub == ZB_RORW: return zb_rol32(<uint32_t>a, 32 - (<uint32_t>b & 31))
    if sub == ZB_ORC_B: return zb_orc_b(a)
    if sub == ZB_REV8: return rv_zb_bswap64(a)
    if sub == ZB_CLMUL: return zb_clmul(a, b)
    if sub == ZB_CLMULH: return zb_clmulh(a, b)
    if sub == ZB_CLMULR: return zb_clmulr(a, b)
    if sub == ZB_BCLR: return a & ~((<uint64_t>1) << n)
    if sub == ZB_BEXT: return (a >> n) & 1
    if sub == ZB_BINV: return a ^ ((<uint64_t>1) << n)
    if sub == ZB_BSET: return a | ((<uint64_t>1) << n)
    return 0
