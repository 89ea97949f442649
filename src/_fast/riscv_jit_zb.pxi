# The compiled tier's Zb* operations (included by riscv_jit.pxi).
#
# Zba, the logic and min/max of Zbb, its rotates, extensions and rev8, and the
# single-bit ops of Zbs compile inline: rs1 in rax, rs2 in rcx, the result from
# rax.  The counts (clz/ctz/cpop: lzcnt/tzcnt/popcnt are not on every x86-64),
# orc.b and the carry-less products of Zbc stay the interpreter's (a region
# ends before them).


cdef inline int zb_shadd(int sub) noexcept nogil:
    """The shift of sh1add..sh3add[.uw] and add.uw (0..3); -1 for the others."""
    if sub == ZB_ADD_UW:
        return 0
    if sub == ZB_SH1ADD or sub == ZB_SH1ADD_UW:
        return 1
    if sub == ZB_SH2ADD or sub == ZB_SH2ADD_UW:
        return 2
    if sub == ZB_SH3ADD or sub == ZB_SH3ADD_UW:
        return 3
    return -1


cdef inline bint zb_uw(int sub) noexcept nogil:
    """add.uw, sh1add.uw..sh3add.uw: rs1 zero-extended from 32 bits first."""
    return (sub == ZB_ADD_UW or sub == ZB_SH1ADD_UW or sub == ZB_SH2ADD_UW or
            sub == ZB_SH3ADD_UW)


cdef inline bint zb_minmax(int sub) noexcept nogil:
    return sub == ZB_MAX or sub == ZB_MAXU or sub == ZB_MIN or sub == ZB_MINU


cdef inline bint zb_rotate(int sub) noexcept nogil:
    return sub == ZB_ROL or sub == ZB_ROLW or sub == ZB_ROR or sub == ZB_RORW


cdef inline bint zb_bit(int sub) noexcept nogil:
    """The single-bit ops of Zbs."""
    return sub == ZB_BCLR or sub == ZB_BEXT or sub == ZB_BINV or sub == ZB_BSET


cdef int zb_compiled(Rec *r) noexcept nogil:
    """Whether the Zb* record ``r`` compiles inline."""
    cdef int sub = r.rs3
    if r.op == OP_ZB:
        return (zb_shadd(sub) >= 0 or sub == ZB_ANDN or sub == ZB_ORN or sub == ZB_XNOR or
                zb_minmax(sub) or zb_rotate(sub) or zb_bit(sub))
    if r.op == OP_ZBI:
        return (sub == ZB_SLLI_UW or sub == ZB_SEXT_B or sub == ZB_SEXT_H or
                sub == ZB_ZEXT_H or sub == ZB_ROR or sub == ZB_RORW or sub == ZB_REV8 or
                zb_bit(sub))
    return 0


cdef void emit_zb(Jit *a, Rec *r) noexcept nogil:
    """rd = the Zb* operation of ``r`` (one that zb_compiled accepts)."""
    cdef int sub = r.rs3, n = r.imm & 63, w32 = 0, bitop
    if r.rd == 32:
        return
    src_rax(a, 1, r.rs1)
    if r.op == OP_ZB:
        op_src(a, 1, X_MOV, RCX, r.rs2)
    if zb_shadd(sub) >= 0:
        if zb_uw(sub):
            op_rr(a, 0, X_MOV, RAX, RAX)                  # mov eax, eax: zero-extends
        n = zb_shadd(sub)
        if n:
            shift_imm(a, 1, SH_SHL, RAX, n)
        op_rr(a, 1, X_ADD, RAX, RCX)                      # add rax, rcx
    elif sub == ZB_SLLI_UW:
        op_rr(a, 0, X_MOV, RAX, RAX)
        if n:
            shift_imm(a, 1, SH_SHL, RAX, n)
    elif sub == ZB_ANDN or sub == ZB_ORN:
        unary(a, 1, G3_NOT, RCX)
        op_rr(a, 1, X_AND if sub == ZB_ANDN else X_OR, RAX, RCX)
    elif sub == ZB_XNOR:
        op_rr(a, 1, X_XOR, RAX, RCX)
        unary(a, 1, G3_NOT, RAX)
    elif zb_minmax(sub):
        op_rr(a, 1, X_CMP, RAX, RCX)                      # cmp rax, rcx; cmovcc rax, rcx
        op0f_rr(a, 1, X0F_CMOV | (CC_L if sub == ZB_MAX else CC_B if sub == ZB_MAXU else
                                  CC_G if sub == ZB_MIN else CC_A), RAX, RCX)
    elif zb_rotate(sub):
        w32 = sub == ZB_ROLW or sub == ZB_RORW
        if r.op == OP_ZB:
            shift_cl(a, not w32, SH_ROL if sub == ZB_ROL or sub == ZB_ROLW else SH_ROR, RAX)
        elif n & (31 if w32 else 63):
            shift_imm(a, not w32, SH_ROR, RAX, n & (31 if w32 else 63))            # ror, imm
        elif w32:
            op_rr(a, 0, X_MOV, RAX, RAX)                  # sign-extended below
    elif sub == ZB_SEXT_B:
        op0f_rr(a, 1, X0F_MOVSX8, RAX, RAX)             # movsx rax, al
    elif sub == ZB_SEXT_H:
        op0f_rr(a, 1, X0F_MOVSX16, RAX, RAX)            # movsx rax, ax
    elif sub == ZB_ZEXT_H:
        op0f_rr(a, 0, X0F_MOVZX16, RAX, RAX)            # movzx eax, ax
    elif sub == ZB_REV8:
        bswap(a, 1, RAX)
    else:                                                # Zbs: bt/bts/btr/btc
        bitop = (BT_BT if sub == ZB_BEXT else BT_BTS if sub == ZB_BSET else
                 BT_BTR if sub == ZB_BCLR else BT_BTC)
        if r.op == OP_ZB:                                # the bit number mod 64
            bt_rr(a, bitop, RAX, RCX)
        else:
            bt_imm(a, bitop, RAX, n)
        if sub == ZB_BEXT:
            setcc(a, CC_B, RAX)                          # setc al
            movzx_r32_r8(a, RAX, RAX)
    if w32:
        eax_to(a, r.rd)
    else:
        rax_to(a, r.rd)
