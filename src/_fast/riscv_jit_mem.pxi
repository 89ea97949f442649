# The compiled tier's loads and stores (included by riscv_jit.pxi): the guest
# address, the inline TLB probe, and the out-of-line slow paths (stubs) emitted
# after a region's main line.

# -- memory -------------------------------------------------------------------------------

cdef inline void lea_or_mov(Jit *a, int w, int dst, int b, int32_t imm) noexcept nogil:
    """dst = b + imm: a move when imm is 0 (the renamer does it, no cycle on the
    probe's chain: ``lhu a5, 0(a5)``)."""
    if imm:
        op_rm(a, w, X_LEA, dst, b, imm)
    else:
        op_rr(a, w, X_MOV, dst, b)


cdef void address(Jit *a, Rec *r) noexcept nogil:
    """rax = x[rs1] + imm."""
    if a.host_of[r.rs1] >= 0:
        lea_or_mov(a, 1, RAX, a.host_of[r.rs1], r.imm)      # rax = reg + imm
    else:
        src_rax(a, 1, r.rs1)
        if r.imm:
            alu_imm(a, 1, ALU_ADD, RAX, r.imm)


cdef uint8_t *tlb_probe(Jit *a, int32_t o_tlb, int size) noexcept nogil:
    """rax = guest address -> rax = host address, or a jump (returned) on a miss
    (rax still the guest address there); the addend kept in a.rad, if any."""
    cdef uint8_t *miss = tlb_probe_index(a, o_tlb, size)
    if a.rad >= 0:
        addend_check(a)
        op_rr(a, 1, X_ADD, RAX, a.rad)              # add rax, rbx
    else:
        op_rm(a, 1, X_ADD, RAX, RCX, 8)              # add rax, addend
    return miss


cdef void addend_check(Jit *a) noexcept nogil:
    """After a full probe's hit: rbx = the addend of the entry in rcx.  Compared, not
    loaded: most often it is the one rbx holds already (the last access's page, or
    RAM mapped in one piece), and the access after reads memory at once, without
    waiting for the probe; else (after the main line) it is loaded."""
    op_rm(a, 1, X_CMP, a.rad, RCX, 8)               # cmp rbx, [rcx + 8]
    cold(a, COLD_ADDEND, 0, 0, jcc32(a, CC_NE))
    a.colds[a.ncold - 1].back = a.p


cdef inline void addend_reload(Jit *a) noexcept nogil:
    """After rcx was pointed at another entry: the addend register follows."""
    if a.rad >= 0:
        op_rm(a, 1, X_MOV, a.rad, RCX, 8)           # mov rbx, [rcx + 8]


cdef enum:
    VICT_DELTA = NDATA * 256 * 32    # bytes from an entry of rtlb (wtlb) to its second way


cdef void tlb_slot(Jit *a, int32_t o_tlb) noexcept nogil:
    """ecx = a guest address (its low 32 bits) -> rcx = its entry in the table at
    h + ``o_tlb``."""
    shift_imm(a, 0, SH_SHR, RCX, 7)                      # shr ecx, 7
    alu_imm(a, 0, ALU_AND, RCX, 255 << 5)                 # and ecx, 255 << 5: 32-byte entries
    op_rm(a, 1, X_ADD, RCX, R15, o_tlb)              # add rcx, h.rt / h.wt


cdef inline void tlb_index(Jit *a, int32_t o_tlb) noexcept nogil:
    """rcx = the entry of the table at h + ``o_tlb`` for the guest address in rax."""
    op_rr(a, 0, X_MOV, RCX, RAX)                     # mov ecx, eax
    tlb_slot(a, o_tlb)


cdef uint8_t *tag_check(Jit *a, int size) noexcept nogil:
    """rdx = a guest address -> compared with the tag of the entry rcx points at;
    returns the jump taken when they differ."""
    alu_imm(a, 1, ALU_AND, RDX, <int32_t>~(0x1000 - size))    # and rdx, ~(0xfff & ~(size-1))
    op_rm(a, 1, X_CMP, RDX, RCX, 0)                  # cmp rdx, [rcx] (tag)
    return jcc32(a, CC_NE)


cdef uint8_t *tlb_probe_index(Jit *a, int32_t o_tlb, int size) noexcept nogil:
    """rcx = the entry of the guest address in rax, rdx = that address as its tag
    would be; returns the jump taken when the tag differs."""
    tlb_index(a, o_tlb)
    mov_rr(a, RDX, RAX)
    return tag_check(a, size)


cdef uint8_t *probe_again(Jit *a, int size, uint8_t **add) noexcept nogil:
    """rax = guest address -> rax = host address, by the TLB entry rcx points at (the
    one the last access of this table probed: the same page, most likely); returns
    the jump taken when its tag differs (a full probe then, see emit_stub), ``add``
    the address of the addend's add (where that probe's hit goes on)."""
    cdef uint8_t *miss
    mov_rr(a, RDX, RAX)
    miss = tag_check(a, size)
    add[0] = a.p
    if a.rad >= 0:
        op_rr(a, 1, X_ADD, RAX, a.rad)              # add rax, rbx (the entry's addend)
    else:
        op_rm(a, 1, X_ADD, RAX, RCX, 8)              # add rax, addend
    return miss


cdef inline bint probe_reuse(Jit *a, Rec *r, int kind) noexcept nogil:
    """Whether this access probes the entry in rcx first: the last access probed the
    same table, from the same base register, unchanged since, and nothing between
    them touched rcx (probe_track); or this is the first access after a loop head
    that rcx is carried into (probe_plan).  Any entry of that table is safe to
    compare with: a tag that matches is that page's translation."""
    return a.lp_kind == kind and a.lp_base == r.rs1


cdef inline void probe_cross(Jit *a, Rec *r, int kind) noexcept nogil:
    """When the last access probed the other table from this access's base, unchanged
    since (a load then a store through the same pointer: ``ld``/``sd`` of a frame
    through sp, ``p->n++``): point rcx at the entry of the same index in this access's
    table (h.rt and h.wt are h.rtlb[c] and h.wtlb[c] of one context c, a fixed
    distance apart), so that probe_reuse holds and the access compares its tag there
    instead of probing in full.  As with any entry probe_again tries, a tag that
    differs goes to a full probe."""
    if a.lp_kind == 3 - kind and a.lp_base == r.rs1:
        op_rm(a, 1, X_LEA, RCX, RCX, a.rw_delta if kind == 2 else -a.rw_delta)
        a.lp_kind = kind
        a.n_cross += 1


cdef inline bint keeps_rcx(Rec *r) noexcept nogil:
    """Whether an instruction's code in the main line leaves rcx alone (a load or
    a store sets it: probe_track)."""
    cdef int op = r.op, form = OP_EMIT[op]
    return (op_is(op, P_BRANCH) or op == OP_NOP or op == OP_FENCE or op == OP_LUI or
            op == OP_LI or op == OP_MV or op == OP_AUIPC or form == EM_ALUI or
            form == EM_ALU3 or form == EM_SHIFTI or form == EM_SLTI or form == EM_SLT or
            op == OP_MUL or op == OP_MULW or op == OP_DIV or op == OP_DIVU or op == OP_REM or
            op == OP_REMU or op == OP_DIVW or op == OP_DIVUW or op == OP_REMW or op == OP_REMUW)


cdef void probe_track(Jit *a, Rec *r) noexcept nogil:
    """After an instruction in the main line: what rcx holds on the way on."""
    cdef int op = r.op
    if op_is(op, P_LOAD) or op_is(op, P_STORE) or op == OP_FLD or op == OP_FSD:
        a.lp_kind = 1 if op_is(op, P_LOAD) or op == OP_FLD else 2
        a.lp_base = a.lp_from = r.rs1
    elif not keeps_rcx(r):
        a.lp_kind = 0                   # (its code may use rcx)
        return
    if op_is(op, P_RD) and r.rd == a.lp_base and not (op == OP_ADDI and r.rs1 == r.rd):
        a.lp_base = -1                  # the base changed: another page, likely (a
                                        # pointer stepped by addi: the same one, likely)


# -- rcx carried round a loop ---------------------------------------------------------------
#
# A loop's first access most often hits the page the same access hit on the trip
# before (a[i], i += 1): the entry its last access left in rcx.  At a label rcx
# is carried in (a.carry[label] = the table, a.carry_base = the base register its
# first access uses) when a jump back to it comes from an access of that table
# and base, rcx untouched since.  Every way into a carried label then leaves rcx
# pointing at an entry of that table (carry_fix, on the entry into the region
# and on a jump or fall-through from code whose rcx is not the same base's
# entry: the entry of the address that access will use when its base is not
# written before it, else the table's first entry), so the first access there
# compares its tag with it (probe_again, exact with any entry) instead of
# probing in full.

# -- the addend kept in rbx -----------------------------------------------------------------
#
# A load's host address is its guest address plus the addend of its TLB entry, so
# an access reads memory twice in a row: the addend, then the data.  An access that
# compares its tag with the entry still in rcx (probe_again) needs no new addend
# when the one of that entry is still at hand: a region whose loops access memory
# keeps it in rbx (a.rad), which every code path that points rcx at an entry loads
# along with it (the probes, their slow paths, carry_fix), so that whenever rcx is
# known to hold an entry (a.lp_kind) rbx holds its addend.  A loop that scans an
# array (quicksort's ``while (a[i] < p) i++``) then reads its element at once, and a
# mispredicted exit from it is found one load earlier.  The register comes from the
# pool (nine cached guest registers, not ten), so only code compiled while data
# addresses are not translated keeps it (M-mode, satp bare: bare-metal programs,
# firmware): there every page of a RAM block has the same addend, and a full probe
# finds it in rbx already.  Pages mapped by page tables (Linux's user programs)
# have an addend each: their full probes would load it after all.

cdef bint data_untranslated(Hart h) noexcept nogil:
    """Whether data addresses are physical ones (as translate() decides)."""
    cdef int priv = h.priv
    if priv == PRV_M and (h.mstatus & MSTATUS_MPRV):
        priv = (h.mstatus >> 11) & 3
    return priv == PRV_M or (h.satp >> 60) == 0


cdef void addend_plan(Jit *a, Hart h) noexcept nogil:
    """a.rad: rbx when data addresses are not translated and a load or store of the
    region is inside one of its loops (a backward jump and what it jumps over),
    else -1."""
    cdef int i, j
    cdef int64_t t
    cdef Rec *r
    a.rad = -1
    if not data_untranslated(h):
        return
    for i in range(2048):
        r = &a.recs[i]
        if a.state[i] != IN_REGION or not (op_is(r.op, P_BRANCH) or r.op == OP_J) or r.imm > 0:
            continue
        t = 2 * i + r.imm
        for j in range(<int>(t >> 1) if t >= 0 else 0, i):
            if a.state[j] == IN_REGION and (op_is(a.recs[j].op, P_LOAD) or
                                            op_is(a.recs[j].op, P_STORE)):
                a.rad = POOL[NPOOL - 1]
                return


cdef int first_access(Jit *a, int i, int *base, int *at) noexcept nogil:
    """The table (1: h.rt, 2: h.wt) of the first load or store the code at
    halfword ``i`` falls through to with rcx untouched, its base in ``base``, in
    ``at`` its halfword when nothing before it writes its base (else -1); 0 when
    there is none."""
    cdef Rec *r
    cdef int j = i
    while 0 <= j < 2048 and a.state[j] == IN_REGION:
        r = &a.recs[j]
        if op_is(r.op, P_LOAD) or op_is(r.op, P_STORE):
            base[0] = r.rs1
            at[0] = j
            while i < j:
                if op_is(a.recs[i].op, P_RD) and a.recs[i].rd == r.rs1:
                    at[0] = -1
                i += a.recs[i].len >> 1
            return 1 if op_is(r.op, P_LOAD) else 2
        if op_is(r.op, P_ENDS) or not keeps_rcx(r):
            return 0
        j += r.len >> 1
    return 0


cdef bint comes_from_access(Jit *a, int i, int e, int kind, int base) noexcept nogil:
    """Whether the instruction at halfword ``e`` (a jump back to ``i``) is reached
    from an access of table ``kind`` through ``base`` by falling through code,
    no label among it, that leaves rcx alone."""
    cdef int cur = e, j
    cdef Rec *r
    while True:
        if a.target[cur]:
            return 0                    # other paths join there
        j = cur - 1
        while j >= i and a.state[j] != IN_REGION:
            j -= 1
        if j < i:
            return 0
        r = &a.recs[j]
        if j + (r.len >> 1) != cur:
            return 0
        if op_is(r.op, P_LOAD) or op_is(r.op, P_STORE):
            return (1 if op_is(r.op, P_LOAD) else 2) == kind and r.rs1 == base
        if not keeps_rcx(r):
            return 0
        cur = j


cdef void probe_plan(Jit *a) noexcept nogil:
    """The labels rcx is carried into (a.carry, a.carry_base, a.carry_at); the ones
    a jump back or a return reaches (a.back)."""
    cdef int e, t, kind, base = 0, j, at = -1
    cdef Rec *r
    memset(a.carry, 0, sizeof(a.carry))
    memset(a.join_kind, 0, sizeof(a.join_kind))
    memset(a.back, 0, sizeof(a.back))
    for j in range(a.nrets):
        a.back[a.rets[j] >> 1] = 1
    for e in range(a.lo, a.hi + 1):
        r = &a.recs[e]
        if a.state[e] != IN_REGION or not (op_is(r.op, P_BRANCH) or r.op == OP_J) or r.imm > 0:
            continue
        t = 2 * e + <int>r.imm
        if 0 <= t < 4096:
            a.back[t >> 1] = 1
        if t < 0 or a.state[t >> 1] != IN_REGION or a.carry[t >> 1]:
            continue
        t >>= 1
        for j in range(a.nrets):
            if a.rets[j] >> 1 == t:
                t = -1                  # (a jalr's jumps there do not carry rcx)
                break
        if t < 0:
            continue
        kind = first_access(a, t, &base, &at)
        if kind and comes_from_access(a, t, e, kind, base):
            a.carry[t] = kind
            a.carry_base[t] = base
            a.carry_at[t] = at


# -- rcx carried forward ------------------------------------------------------------------
#
# Where paths join ahead (the two arms of an if, a loop's exit), rcx is known at
# the label when every jump there and the fall-through into it left the entry of
# one table from one base register, unchanged since (fill_window's ``m = *p; *p =
# m >= WSIZE ? m - WSIZE : 0``: the store after the join probes from the load's
# entry, probe_cross, instead of in full).  Forward jumps are all emitted before
# their label, so the emitter notes what each leaves (join_note, from goto_pc) and
# settles at the label (join_settle): a.carry then says so, as for a loop's
# carried label, and ways in from outside the region's own code (its entry stubs)
# point rcx at an entry of that table as they do for those.  Not for a label a
# jump back or a return reaches (a.back: their code comes after it or knows no
# entry), nor the region's head (its entry is emitted first).

cdef enum:
    JOIN_MIXED = 255


cdef void join_note(Jit *a, int i) noexcept nogil:
    """A jump ahead to the region's label at halfword ``i`` is being emitted: meet
    what rcx holds here into a.join_kind[i] / a.join_base[i]."""
    cdef int kind = a.lp_kind if a.lp_base >= 0 else 0
    if a.join_kind[i] == 0:
        a.join_kind[i] = kind if kind else JOIN_MIXED
        a.join_base[i] = <signed char>a.lp_base
    elif a.join_kind[i] != kind or a.join_base[i] != a.lp_base:
        a.join_kind[i] = JOIN_MIXED


cdef void join_settle(Jit *a, int i, int falls) noexcept nogil:
    """At the label at halfword ``i`` (not carried round a loop): carry rcx in when
    every way there (the jumps noted, the fall-through when ``falls``) leaves the
    entry of one table from one base register."""
    cdef int kind = a.join_kind[i], base = a.join_base[i]
    cdef int fall_kind = a.lp_kind if a.lp_base >= 0 else 0
    if a.back[i]:
        return
    if falls:
        if kind == 0:
            kind, base = fall_kind, a.lp_base
        elif kind != fall_kind or base != a.lp_base:
            return
    if kind == 0 or kind == JOIN_MIXED:
        return
    a.carry[i] = kind
    a.carry_base[i] = <signed char>base
    a.carry_at[i] = -1


cdef void carry_fix(Jit *a, int64_t off) noexcept nogil:
    """Before a jump (or a fall) to the region's instruction at ``off`` (rax, rcx,
    rdx free): when rcx is carried there and does not hold the entry an access
    from the same base left (the jump back), point it at an entry of that table:
    the one of the address its first access will use, when that is known here."""
    cdef int i = <int>(off >> 1), kind = a.carry[off >> 1]
    cdef int32_t o_tlb = a.o_rt if kind == 1 else a.o_wt
    if not kind or (a.lp_kind == kind and a.lp_from == a.carry_base[i]):
        return
    if a.carry_at[i] >= 0:
        address(a, &a.recs[a.carry_at[i]])
        tlb_index(a, o_tlb)
    elif a.lp_kind != kind:
        op_rm(a, 1, X_MOV, RCX, R15, o_tlb)
    else:
        return                          # (an entry of that table already: its addend kept)
    if a.rad >= 0:                      # compared, not loaded: the loop's first access
        addend_check(a)                 # need not wait for it (short loops: most of it)


cdef int access_size(int op) noexcept nogil:
    if op == OP_LD or op == OP_SD or op == OP_FLD or op == OP_FSD:
        return 8
    if op == OP_LW or op == OP_LWU or op == OP_SW:
        return 4
    if op == OP_LH or op == OP_LHU or op == OP_SH:
        return 2
    return 1


cdef void load_into(Jit *a, int op, int dst, int base) noexcept nogil:
    """dst = the ``op``-sized value at [base], extended as RISC-V says."""
    if op == OP_LD or op == OP_FLD:
        op_rm(a, 1, X_MOV, dst, base, 0)
    elif op == OP_LW:
        op_rm(a, 1, X_MOVSXD, dst, base, 0)             # movsxd
    elif op == OP_LWU:
        op_rm(a, 0, X_MOV, dst, base, 0)
    elif op == OP_LH:
        op0f_rm(a, 1, X0F_MOVSX16, dst, base, 0)
    elif op == OP_LHU:
        op0f_rm(a, 0, X0F_MOVZX16, dst, base, 0)
    elif op == OP_LB:
        op0f_rm(a, 1, X0F_MOVSX8, dst, base, 0)
    else:
        op0f_rm(a, 0, X0F_MOVZX8, dst, base, 0)


cdef void load_x(Jit *a, int op, int dst, int base, int index, int32_t disp) noexcept nogil:
    """dst = the ``op``-sized value at [base + index + disp], extended as RISC-V says."""
    if op == OP_LD or op == OP_FLD:
        op_sib(a, 1, X_MOV, dst, base, index, disp, 0)
    elif op == OP_LW:
        op_sib(a, 1, X_MOVSXD, dst, base, index, disp, 0)
    elif op == OP_LWU:
        op_sib(a, 0, X_MOV, dst, base, index, disp, 0)
    elif op == OP_LH:
        op_sib(a, 1, X0F_MOVSX16, dst, base, index, disp, RX_0F)
    elif op == OP_LHU:
        op_sib(a, 0, X0F_MOVZX16, dst, base, index, disp, RX_0F)
    elif op == OP_LB:
        op_sib(a, 1, X0F_MOVSX8, dst, base, index, disp, RX_0F)
    else:
        op_sib(a, 0, X0F_MOVZX8, dst, base, index, disp, RX_0F)


cdef void stub(Jit *a, int kind, Rec *r, int64_t off, int k, uint8_t *patch) noexcept nogil:
    cdef Stub *t = &a.stubs[a.nstubs]
    a.nstubs += 1
    t.kind = kind
    t.r = r
    t.off = off
    t.k = k
    t.patch = patch
    t.reprobe = NULL
    t.sib = a.host_of[r.rs1] >= 0


cdef void probe(Jit *a, int kind, Rec *r, int64_t off, int k, int32_t o_tlb,
                int size) noexcept nogil:
    """rax = guest address -> rax = host address, rcx = its TLB entry; a miss goes to
    a slow path (``kind``).  An access whose base is cached (Stub.sib) probes with
    the guest address in rdx alone and leaves the entry's addend in rax: the access
    reads [rax + base + imm] (a load where the addend is kept, a.rad: [rbx + base +
    imm], no copy to rax)."""
    cdef uint8_t *add
    cdef int b = a.host_of[r.rs1], table = 1 if kind == STUB_LOAD else 2
    probe_cross(a, r, table)
    if b >= 0:
        lea_or_mov(a, 1, RDX, b, r.imm)              # rdx = base + imm
        if probe_reuse(a, r, table):
            a.n_again += 1
            stub(a, kind, r, off, k, tag_check(a, size))
            a.stubs[a.nstubs - 1].reprobe = a.p
            if a.rad >= 0:                          # the addend kept: no load (a load
                if kind != STUB_LOAD:               # reads through it, a store through
                    mov_rr(a, RAX, a.rad)           # rax: mov rax, rbx)
                return
        else:
            a.n_full += 1
            lea_or_mov(a, 0, RCX, b, r.imm)              # ecx = base + imm: the index
            tlb_slot(a, o_tlb)                           # from the base, not through rdx
            stub(a, kind, r, off, k, tag_check(a, size))
        if a.rad >= 0:
            addend_check(a)
            if kind != STUB_LOAD:
                mov_rr(a, RAX, a.rad)               # mov rax, rbx
        else:
            op_rm(a, 1, X_MOV, RAX, RCX, 8)          # mov rax, addend
        return
    if probe_reuse(a, r, table):
        a.n_again += 1
        stub(a, kind, r, off, k, probe_again(a, size, &add))
        a.stubs[a.nstubs - 1].reprobe = add
    else:
        a.n_full += 1
        stub(a, kind, r, off, k, tlb_probe(a, o_tlb, size))


cdef void emit_load(Jit *a, Rec *r, int64_t off, int k) noexcept nogil:
    cdef int size = access_size(r.op), rd = r.rd, b = a.host_of[r.rs1]
    cdef int dst = a.host_of[rd] if r.op != OP_FLD and rd != 32 and a.host_of[rd] >= 0 else RAX
    cdef Stub *slow = &a.stubs[a.nstubs]
    if b < 0:
        address(a, r)
    probe(a, STUB_LOAD, r, off, k, a.o_rt, size)
    if b >= 0:                                      # [addend + base + imm]: the addend
        load_x(a, r.op, dst, a.rad if a.rad >= 0 else RAX, b, r.imm)   # kept, or in rax
    else:
        load_into(a, r.op, dst, RAX)                # (x0: the access all the same)
    if r.op == OP_FLD:
        fld_result(a, rd)
    elif dst == RAX and rd != 32:
        stx(a, RAX, rd)
    slow.back = a.p                                 # where a load from RAM goes on


cdef void fld_result(Jit *a, int rd) noexcept nogil:
    """f[rd] = rax, mstatus.FS dirty (as exec_fload)."""
    op_rm(a, 1, X_MOV_MR, RAX, R15, a.o_f + 8 * rd)  # mov f[rd], rax
    alu_m_imm8(a, 0, ALU_OR, R15, a.o_mstatus + 1, <int>(MSTATUS_FS >> 8))  # FS: dirty


cdef void emit_fmem(Jit *a, Rec *r, int64_t off, int k) noexcept nogil:
    """fld / fsd: a load into f[rd] / a store of f[rs2] through the TLB as ld / sd,
    once mstatus.FS is seen on (else out before it, after the main line: the loop
    runs it, an illegal instruction); h.pc_ and h.cnt set first, as the run loop
    sets them for these ops (a device read after it, before the next jump, sees
    that count: the CLINT's instruction-counted mtime).  Linux saves and restores
    the FP registers with 32 of them at every trap from a program that used them
    (the busybox shell loop: most calls of exec_call); called, each took a
    writeback, a call and the registers' reload."""
    op_rm(a, 0, X_MOV, RAX, R15, a.o_mstatus)        # mov eax, mstatus
    alu_imm(a, 0, ALU_AND, RAX, <int32_t>MSTATUS_FS)
    cold(a, COLD_FSOFF, off, k, jcc32(a, CC_E))
    sync_pc_cnt(a, off, k)
    if r.op == OP_FLD:
        emit_load(a, r, off, k)
    else:
        emit_store(a, r, off, k)


cdef void sync_pc_cnt(Jit *a, int64_t off, int k) noexcept nogil:
    """h.pc_ = the pc at page offset ``off``, h.cnt = r14 + ``k`` (rax)."""
    op_rm(a, 1, X_MOV, RAX, R15, a.o_cbase)
    if off:
        alu_imm(a, 1, ALU_ADD, RAX, <int32_t>off)
    op_rm(a, 1, X_MOV_MR, RAX, R15, a.o_pc)          # h.pc_ = its pc
    op_rm(a, 1, X_LEA, RAX, R14, k)                  # h.cnt = r14 + k
    op_rm(a, 1, X_MOV_MR, RAX, R15, a.o_cnt)


cdef void emit_store(Jit *a, Rec *r, int64_t off, int k) noexcept nogil:
    cdef int size = access_size(r.op), v
    cdef Stub *slow = &a.stubs[a.nstubs]
    cdef int b = a.host_of[r.rs1]
    if b < 0:
        address(a, r)
    probe(a, STUB_STORE, r, off, k, a.o_wt, size)
    slow.hit = a.p
    if r.op == OP_FSD:
        op_rm(a, 1, X_MOV, RDX, R15, a.o_f + 8 * r.rs2)   # rdx = f[rs2]
        v = RDX
    else:
        v = rget(a, r.rs2, RDX)                     # (rdx is free once the probe is done)
    if b >= 0:                                      # mov [addend + base + imm], v
        op_rx(a, size == 8, X_MOV8_MR if size == 1 else X_MOV_MR, v, b, r.imm,
              RX_BYTE if size == 1 else (RX_WORD if size == 2 else 0))
    elif size == 1:
        store8(a, v, RAX, 0)
    elif size == 2:
        store16(a, v, RAX, 0)
    else:
        op_rm(a, size == 8, X_MOV_MR, v, RAX, 0)
    # a reservation held by some hart: clear the ones on these bytes (a way out)
    stub(a, STUB_RESV, r, off, k, resv_held(a, CC_NE))
    slow.back = a.p


cdef uint8_t *resv_held(Jit *a, int cc) noexcept nogil:
    """rdx = h.rs; returns a jcc taken on ``cc`` of its nactive against 0 (CC_NE: some
    hart holds a reservation).  After a store: those on its bytes must go (STUB_RESV
    leaves the region to clear them, resv_others clears them in place)."""
    op_rm(a, 1, X_MOV, RDX, R15, a.o_rs)             # rdx = h.rs
    alu_m_imm8(a, 0, ALU_CMP, RDX, 0, 0)            # cmp dword [rdx], 0  (nactive)
    return jcc32(a, cc)


cdef inline bint exec_compiled(Rec *r) noexcept nogil:
    """Ops a region runs by calling the interpreter's exec_slow (exec_call): LR, SC,
    AMOs, F/D loads and stores (but fld and fsd: emit_fmem; those of amo_inline
    only off plain RAM: emit_amo, riscv_jit_amo.pxi).  Left to the run loop, each took
    the region out: Linux's user programs run them in their hot loops (locks, saved
    FP registers)."""
    return (op_is(r.op, P_AMO) or r.op == OP_FSW or r.op == OP_FSD or r.op == OP_FLW or
            r.op == OP_FLD)


cdef void emit_exec(Jit *a, Rec *r, int64_t off, int k) noexcept nogil:
    """Run the op at ``off`` (``k`` retired since the last count) as the run loop
    does: registers stored, h.pc_ and h.cnt set, exec_call(h, a copy of its record
    kept in the code); an event leaves before it, an access not to plain RAM after
    it, else on in the region, registers reloaded (rcx holds no entry after it)."""
    cdef uint8_t *skip
    cdef uint8_t *rec
    writeback(a)
    sync_pc_cnt(a, off, k)
    skip = jmp32(a)
    rec = a.p - a.wdelta                            # the record, where the code runs
    memcpy(a.p, r, sizeof(Rec))
    a.p += sizeof(Rec)
    here(a, skip)
    mov_rr(a, RDI, R15)
    imm64(a, RSI, <int64_t><uintptr_t>rec)
    call_abs(a, <void *>EXEC_CALL)
    op_rr(a, 0, X_TEST, RAX, RAX)
    cold(a, COLD_EVENT, off, k, jcc32(a, CC_NE))
    alu_m_imm8(a, 0, ALU_CMP, R15, a.o_jexit, 0)    # cmp dword h.jexit, 0
    cold(a, COLD_AFTER, off + r.len, k + 1, jcc32(a, CC_NE))
    cache_load(a)


cdef void store_beside_code(Jit *a, Stub *t, int size) noexcept nogil:
    """A store's TLB miss (rax = guest address, rcx = its entry, rdx = the address as
    compared): when the entry is its aligned page's with TLB_CODE alone and the
    page's xmap marks none of the halfwords written, store as on a hit (rax = the
    host address, or the addend for a Stub.sib store); else go on to the slow path
    with rax the guest address again."""
    cdef uint8_t *other
    cdef uint8_t *busy
    alu_imm(a, 1, ALU_OR, RDX, <int32_t>RV_TLB_CODE)     # or rdx, TLB_CODE
    op_rm(a, 1, X_CMP, RDX, RCX, 0)                  # cmp rdx, [rcx] (tag)
    other = jcc32(a, CC_NE)
    op_rm(a, 1, X_MOV, RDX, RCX, 24)                 # rdx = the page's xmap (pad)
    op_rm(a, 1, X_MOV, RCX, RCX, 8)                  # rcx = addend
    if not t.sib:
        op_rr(a, 1, X_ADD, RCX, RAX)                 # rcx = host address
    alu_imm(a, 0, ALU_AND, RAX, 0xfff)                    # eax = the halfword in the page
    shift_imm(a, 0, SH_SHR, RAX, 1)
    cmp_idx_imm8(a, size >> 1 if size > 1 else 1, RDX, RAX, 0)   # any xmap byte of it set?
    busy = jcc32(a, CC_NE)
    mov_rr(a, RAX, RCX)
    op_rm(a, 1, X_MOV, RCX, R15, a.o_wt)             # rcx = an entry of h.wt (probe_again)
    addend_reload(a)
    jmp_to(a, t.hit)
    here(a, busy)
    address(a, t.r)                                 # the guest address again
    here(a, other)


cdef void victim_probe(Jit *a, uint8_t *hit) noexcept nogil:
    """A load's or store's TLB miss (rcx = the entry of its slot, rdx = the address
    as its tag would be): when the slot's second way (rvict or wvict, at VICT_DELTA
    from it) is its page's, with no flag, on at ``hit``, where a hit of the probe
    goes on, with rcx = that entry; without a call of load_slow or store_slow (nor
    a swap: two pages in one slot, used in turn, each hit where it is)."""
    cdef uint8_t *miss
    op_rm(a, 1, X_CMP, RDX, RCX, VICT_DELTA)          # cmp rdx, [rcx + VICT_DELTA] (tag)
    miss = jcc32(a, CC_NE)
    op_rm(a, 1, X_LEA, RCX, RCX, VICT_DELTA)
    alu_m_imm8(a, 1, ALU_ADD, R15, a.o_vhits, 1)     # h.jit_victim_hits += 1
    addend_reload(a)
    jmp_to(a, hit)
    here(a, miss)


cdef void emit_stub(Jit *a, Stub *t) noexcept nogil:
    """The slow path of a load or store.  A store that was a plain store into RAM
    (no translated byte hit, no device, no watchpoint: h.jexit clear) and a load
    read from RAM (load_slow_call) go on in the region, its registers reloaded; the
    others leave it."""
    cdef Rec *r = t.r
    cdef int size = access_size(r.op)
    cdef uint8_t *fail
    cdef uint8_t *out
    cdef uint8_t *hit = t.reprobe if t.reprobe != NULL else t.patch
    here(a, t.patch)
    if t.sib and t.kind != STUB_RESV:
        address(a, r)                # rax = guest address (the probe had it in rdx)
    if t.reprobe != NULL:            # the entry in rcx was another page's: probe in full
        t.patch = tlb_probe_index(a, a.o_rt if t.kind == STUB_LOAD else a.o_wt, size)
        addend_reload(a)
        jmp_to(a, t.reprobe)
        here(a, t.patch)
    if t.kind != STUB_RESV:
        victim_probe(a, hit)
    if t.kind == STUB_STORE:
        store_beside_code(a, t, size)
    writeback(a)
    if t.kind == STUB_RESV:      # rax = host address (Stub.sib: the addend), rdx = h.rs
        if t.sib:                # (before rdi is set: the base may be cached in rdi)
            op_rx(a, 1, X_LEA, RSI, a.host_of[r.rs1], r.imm, 0)
        else:
            mov_rr(a, RSI, RAX)
        mov_rr(a, RDI, RDX)
        mov_r32_imm32(a, RDX, size)
        call_abs(a, <void *>RESV_CLEAR)
        exit_on(a, t.off + r.len, t.k + 1, WHY_RESV)
        return
    # rax = guest address: load_slow(h, a, size, &h.jv) / store_slow(h, a, size, value),
    # then leave with its event, or after the instruction (a store may have hit code
    # or a device that changed the memory map), or go on after a plain store
    if t.kind == STUB_LOAD:
        op_rm(a, 1, X_LEA, RCX, R15, a.o_jv)         # lea rcx, h.jv
    else:
        op_rm(a, 1, X_MOV, RCX, R15, (a.o_f if r.op == OP_FSD else a.o_x) + 8 * r.rs2)
                                                    # the value, as just stored back
        if size == 4:
            op_rr(a, 0, X_MOV, RCX, RCX)             # mov ecx, ecx (zero-extend)
        elif size == 2:
            op0f_rr(a, 0, X0F_MOVZX16, RCX, RCX)    # movzx ecx, cx
        elif size == 1:
            movzx_r32_r8(a, RCX, RCX)
    mov_rr(a, RSI, RAX)
    mov_rr(a, RDI, R15)
    mov_r32_imm32(a, RDX, size)
    if t.kind == STUB_LOAD:
        call_abs(a, <void *>LOAD_SLOW)
    else:
        call_abs(a, <void *>STORE_SLOW)
    op_rr(a, 0, X_TEST, RAX, RAX)
    fail = jcc32(a, CC_NE)
    if t.kind == STUB_STORE:
        alu_m_imm8(a, 0, ALU_CMP, R15, a.o_jexit, 0)   # cmp dword h.jexit, 0
        out = jcc32(a, CC_NE)
        cache_load(a)                               # (the call clobbered the pool)
        op_rm(a, 1, X_MOV, RCX, R15, a.o_wt)         # rcx = an entry of h.wt (probe_again)
        addend_reload(a)
        jmp_to(a, t.back)
        here(a, out)
    if t.kind == STUB_LOAD:
        if r.op == OP_FLD:
            op_rm(a, 1, X_MOV, RAX, R15, a.o_jv)     # the value read
            fld_result(a, r.rd)
        elif r.rd != 32:
            op_rm(a, 1, X_LEA, RAX, R15, a.o_jv)     # rax = &h.jv: extend as a fresh load
            load_into(a, r.op, RAX, RAX)
            stx(a, RAX, r.rd)
        alu_m_imm8(a, 0, ALU_CMP, R15, a.o_jexit, 0)   # read from RAM: on in the region
        out = jcc32(a, CC_NE)
        cache_load(a)                               # (the call clobbered the pool)
        address(a, r)                               # rcx = an entry of h.rt (probe_again):
        tlb_index(a, a.o_rt)                        # the one just filled, likely
        addend_reload(a)
        jmp_to(a, t.back)
        here(a, out)
    exit_on(a, t.off + r.len, t.k + 1, WHY_LOAD if t.kind == STUB_LOAD else WHY_STORE)
    here(a, fail)
    exit_event(a, t.off, t.k, WHY_EVENT)
