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


cdef inline void zb_0f(Jit *a, int w, int opc, int modrm) noexcept nogil:
    """``[rex.w] 0f opc modrm`` on rax/rcx."""
    if w:
        b1(a, 0x48)
    b1(a, 0x0f); b1(a, opc); b1(a, modrm)


cdef void emit_zb(Jit *a, Rec *r) noexcept nogil:
    """rd = the Zb* operation of ``r`` (one that zb_compiled accepts)."""
    cdef int sub = r.rs3, n = r.imm & 63, w32 = 0, bitop
    if r.rd == 32:
        return
    src_rax(a, 1, r.rs1)
    if r.op == OP_ZB:
        op_src(a, 1, 0x8b, RCX, r.rs2)
    if ZB_SH1ADD <= sub <= ZB_SH3ADD_UW:
        if sub >= ZB_ADD_UW:
            op_rr(a, 0, 0x8b, RAX, RAX)                  # mov eax, eax: zero-extends
        n = (1 if sub == ZB_SH1ADD or sub == ZB_SH1ADD_UW else
             2 if sub == ZB_SH2ADD or sub == ZB_SH2ADD_UW else
             3 if sub == ZB_SH3ADD or sub == ZB_SH3ADD_UW else 0)
        if n:
            shift_imm(a, 1, 4, RAX, n)
        op_rr(a, 1, 0x03, RAX, RCX)                      # add rax, rcx
    elif sub == ZB_SLLI_UW:
        op_rr(a, 0, 0x8b, RAX, RAX)
        if n:
            shift_imm(a, 1, 4, RAX, n)
    elif sub == ZB_ANDN or sub == ZB_ORN:
        b1(a, 0x48); b1(a, 0xf7); b1(a, 0xd1)            # not rcx
        op_rr(a, 1, 0x23 if sub == ZB_ANDN else 0x0b, RAX, RCX)
    elif sub == ZB_XNOR:
        op_rr(a, 1, 0x33, RAX, RCX)
        b1(a, 0x48); b1(a, 0xf7); b1(a, 0xd0)            # not rax
    elif ZB_MAX <= sub <= ZB_MINU:
        op_rr(a, 1, 0x3b, RAX, RCX)                      # cmp rax, rcx; cmovcc rax, rcx
        zb_0f(a, 1, 0x40 | (CC_L if sub == ZB_MAX else CC_B if sub == ZB_MAXU else
                            0xf if sub == ZB_MIN else 0x7), 0xc1)
    elif ZB_ROL <= sub <= ZB_RORW:
        w32 = sub == ZB_ROLW or sub == ZB_RORW
        if r.op == OP_ZB:
            if not w32:
                b1(a, 0x48)
            b1(a, 0xd3); b1(a, 0xc0 if sub == ZB_ROL or sub == ZB_ROLW else 0xc8)  # rol/ror, cl
        elif n & (31 if w32 else 63):
            shift_imm(a, not w32, 1, RAX, n & (31 if w32 else 63))            # ror, imm
        elif w32:
            op_rr(a, 0, 0x8b, RAX, RAX)                  # sign-extended below
    elif sub == ZB_SEXT_B:
        zb_0f(a, 1, 0xbe, 0xc0)                          # movsx rax, al
    elif sub == ZB_SEXT_H:
        zb_0f(a, 1, 0xbf, 0xc0)                          # movsx rax, ax
    elif sub == ZB_ZEXT_H:
        zb_0f(a, 0, 0xb7, 0xc0)                          # movzx eax, ax
    elif sub == ZB_REV8:
        b1(a, 0x48); b1(a, 0x0f); b1(a, 0xc8)            # bswap rax
    else:                                                # Zbs: bt/bts/btr/btc
        bitop = 4 if sub == ZB_BEXT else 5 if sub == ZB_BSET else 6 if sub == ZB_BCLR else 7
        if r.op == OP_ZB:                                # the bit number mod 64
            zb_0f(a, 1, 0xa3 | ((bitop - 4) << 3), 0xc8)
        else:
            zb_0f(a, 1, 0xba, 0xc0 | (bitop << 3))
            b1(a, n)
        if sub == ZB_BEXT:
            zb_0f(a, 0, 0x92, 0xc0)                      # setc al
            zb_0f(a, 0, 0xb6, 0xc0)                      # movzx eax, al
    if w32:
        eax_to(a, r.rd)
    else:
        rax_to(a, r.rd)
