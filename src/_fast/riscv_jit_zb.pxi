# The compiled tier's Zb* operations (included by riscv_jit.pxi).
#
# Zba, the logic and min/max of Zbb, its rotates, extensions and rev8, and the
# single-bit ops of Zbs compile inline: rs1 in rax, rs2 in rcx, the result from
# rax.  The counts (clz/ctz/cpop: lzcnt/tzcnt/popcnt are not on every x86-64),
# orc.b and the carry-less products of Zbc stay the interpreter's (a region
# ends before them).


cdef int zb_compiled(Rec *r) noexcept nogil:
    """Whether the Zb* record ``r`` compiles inline."""
    cdef int sub = r.rs3
    if r.op == OP_ZB:
        return ((ZB_SH1ADD <= sub <= ZB_SH3ADD_UW) or (ZB_ANDN <= sub <= ZB_XNOR) or
                (ZB_MAX <= sub <= ZB_MINU) or (ZB_ROL <= sub <= ZB_RORW) or
                (ZB_BCLR <= sub <= ZB_BSET))
    if r.op == OP_ZBI:
        return (sub == ZB_SLLI_UW or (ZB_SEXT_B <= sub <= ZB_ZEXT_H) or sub == ZB_ROR or
                sub == ZB_RORW or sub == ZB_REV8 or (ZB_BCLR <= sub <= ZB_BSET))
    return 0


cdef void emit_zb(Jit *a, Rec *r) noexcept nogil:
    """rd = the Zb* operation of ``r`` (one that zb_compiled accepts)."""
    cdef int sub = r.rs3, n = r.imm & 63, w32 = 0, bitop
    if r.rd == 32:
        return
    src_rax(a, 1, r.rs1)
    if r.op == OP_ZB:
        op_src(a, 1, X_MOV, RCX, r.rs2)
    if ZB_SH1ADD <= sub <= ZB_SH3ADD_UW:
        if sub >= ZB_ADD_UW:
            op_rr(a, 0, X_MOV, RAX, RAX)                  # mov eax, eax: zero-extends
        n = (1 if sub == ZB_SH1ADD or sub == ZB_SH1ADD_UW else
             2 if sub == ZB_SH2ADD or sub == ZB_SH2ADD_UW else
             3 if sub == ZB_SH3ADD or sub == ZB_SH3ADD_UW else 0)
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
    elif ZB_MAX <= sub <= ZB_MINU:
        op_rr(a, 1, X_CMP, RAX, RCX)                      # cmp rax, rcx; cmovcc rax, rcx
        op0f_rr(a, 1, X0F_CMOV | (CC_L if sub == ZB_MAX else CC_B if sub == ZB_MAXU else
                                  CC_G if sub == ZB_MIN else CC_A), RAX, RCX)
    elif ZB_ROL <= sub <= ZB_RORW:
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
