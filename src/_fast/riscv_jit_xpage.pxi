# An instruction crossing from a region's page into the next one (included by
# riscv_jit.pxi).  busybox ash's keyword search loops through one: left to the
# run loop, it took the shell loop out of compiled code 104 times a trip.  The
# region holds it as decoded when the region was compiled, with its upper half
# as the next page held it then, and compares that half with the next page's at
# every run: the same bytes are the same instruction; else (or when the fetch TLB
# does not hold the next page: not fetchable now, or not known) the run loop runs
# it, as it would have.  Stores into the lower half are this page's (jcover).

cdef bint xpage_decode(Jit *a, Hart h, CodePage *cp, uint64_t cbase, Rec *r) noexcept nogil:
    """Decode the instruction at page offset 0xffe, which crosses into the next page,
    when the fetch TLB holds that page (as the run loop's xpage_kept looks; no walk
    here): its upper half is kept in a.xhi, which the compiled code compares with
    the next page's at every run (xpage_check).  0 when the TLB does not hold it."""
    cdef uint64_t nxt = cbase + 0x1000
    cdef TlbEntry *e = &h.ft[(nxt >> 12) & 255]
    cdef uint32_t hi
    if e.tag != nxt:
        return 0
    hi = rv_ld16(RV_HOST(e.addend, nxt))
    decode32(rv_ld16(cp.host + 0xffe) | (hi << 16), r)
    zb_gate(h, r)
    a.xhi = <int>hi
    return 1


cdef void xpage_check(Jit *a, int k) noexcept nogil:
    """Before the region's page-crossing instruction (at 0xffe, ``k`` retired since
    the last count): the next page of the one being run must be in the fetch TLB
    (that is: fetchable now) and hold a.xhi at its start, else the loop runs the
    instruction (a way out by no jump, after the main line).  rax, rdx, flags."""
    op_rm(a, 1, X_MOV, RAX, R15, a.o_cbase)
    alu_imm(a, 1, ALU_ADD, RAX, 0x1000)                  # rax = the next page
    op_rr(a, 0, X_MOV, RDX, RAX)                     # mov edx, eax
    shift_imm(a, 0, SH_SHR, RDX, 7)
    alu_imm(a, 0, ALU_AND, RDX, 255 << 5)                 # edx = its entry's offset
    op_rm(a, 1, X_ADD, RDX, R15, a.o_ft)             # rdx = &h.ft[index]
    op_rm(a, 1, X_CMP, RAX, RDX, 0)                  # its tag, no flag?
    cold(a, COLD_XPAGE, 0xffe, k, jcc32(a, CC_NE))
    op_rm(a, 1, X_ADD, RAX, RDX, 8)                  # rax = its host address
    op0f_rm(a, 0, X0F_MOVZX16, RDX, RAX, 0)         # movzx edx, word [rax]
    alu_imm(a, 0, ALU_CMP, RDX, a.xhi)                    # cmp edx, xhi
    cold(a, COLD_XPAGE, 0xffe, k, jcc32(a, CC_NE))
