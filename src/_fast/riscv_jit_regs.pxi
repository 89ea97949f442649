# The compiled tier's register cache (included by riscv_jit.pxi): which guest registers
# live in host registers for a region, and moving values between them, x[] and rax.

# -- the register cache -------------------------------------------------------------------
#
# Before emitting, the region is scanned: the guest registers it uses most (loops
# weigh more) get a host register each for the whole region (loaded on entry), the
# rest are read into temporaries and written straight to x[].  Every way out stores
# the cached registers the region writes anywhere, so inside it they stay put.

cdef void cache_plan(Jit *a) noexcept nogil:
    """Choose the cached registers of the region: the ones it uses most."""
    cdef int uses[33]
    cdef int delta[2049]
    cdef int i, j, op, best, n = 0, w, depth = 0
    cdef int64_t t
    cdef Rec *r
    for i in range(33):
        uses[i] = 0
        a.host_of[i] = -1
        a.dirty[i] = 0
    # a use weighs 8**depth, its loop nesting (a backward jump and what it jumps
    # over is a loop): depth by a running sum of +1 at loop starts, -1 past loop
    # ends, read from a.lo on (a loop starting before it counts from there).
    # Whether a loop has loops inside does not count: gzip's hash-chain loop runs
    # its inner match loop on few trips, quicksort's partition loop its scans on
    # one or two; weighing innermost loops above all (as this once did) cached a
    # page's rarely entered inner loops and left those loops' bodies in memory.
    memset(&delta[a.lo], 0, sizeof(int) * (a.hi + 2 - a.lo))
    for i in range(a.lo, a.hi + 1):
        r = &a.recs[i]
        if a.state[i] == IN_REGION and (op_is(r.op, P_BRANCH) or r.op == OP_J) and r.imm <= 0:
            t = 2 * i + r.imm
            if t >= 0:
                delta[t >> 1 if t >> 1 > a.lo else a.lo] += 1
                delta[i + 1] -= 1
    for i in range(a.lo, a.hi + 1):
        depth += delta[i]
        if a.state[i] != IN_REGION:
            continue
        r = &a.recs[i]
        op = r.op
        w = 1 << 3 * (depth if depth < 5 else 5)
        if op_is(op, P_RS1):
            uses[r.rs1] += w
        if op_is(op, P_RS2):
            uses[r.rs2] += w
        if op_is(op, P_RD) and r.rd != 32:
            uses[r.rd] += w
            a.dirty[r.rd] = 1
    uses[0] = 0                      # x0 reads as zero from memory; no register for it
    for j in range(NPOOL - (a.rad >= 0)):          # (the pool's last one keeps the addend)
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
    """Store the cached registers the region writes (on a way out)."""
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
        op_rr(a, w, X_MOV, RAX, a.host_of[g])
    else:
        op_rm(a, w, X_MOV, RAX, R15, a.o_x + 8 * g)

cdef inline void reg_to(Jit *a, int g, int src) noexcept nogil:
    """Guest register ``g`` = host register ``src``."""
    if a.host_of[g] >= 0:
        mov_rr(a, a.host_of[g], src)
    else:
        stx(a, src, g)

cdef inline void rax_to(Jit *a, int g) noexcept nogil:
    """Guest register ``g`` = rax."""
    reg_to(a, g, RAX)

cdef inline void op_src(Jit *a, int w, int opc, int reg, int g) noexcept nogil:
    """``opc reg, <guest register g>`` (an ``r, r/m`` opcode: its register or memory)."""
    if a.host_of[g] >= 0:
        op_rr(a, w, opc, reg, a.host_of[g])
    else:
        op_rm(a, w, opc, reg, R15, a.o_x + 8 * g)

cdef inline void eax_to(Jit *a, int g) noexcept nogil:
    """Guest register ``g`` = eax sign-extended (the W ops; their last code: the
    next instruction may read eax still, a.eax_in)."""
    if a.host_of[g] >= 0:
        op_rr(a, 1, X_MOVSXD, a.host_of[g], RAX)        # movsxd reg, eax
    else:
        op_rr(a, 1, X_MOVSXD, RAX, RAX)             # movsxd rax, eax
        stx(a, RAX, g)
    a.eax_of = g
