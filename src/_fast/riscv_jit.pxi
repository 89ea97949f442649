# The RISC-V hart's second tier: hot code compiled to x86-64 (x86-64 Linux hosts).
#
# The interpreter counts jumps to each record of a code page (taken branches,
# jumps, page entries, ways out of compiled code); a record reached JIT_HOT
# times becomes the head of a compiled *region* (op OP_JIT; the code's address
# in the record's imm/bits bytes).  A region is every instruction of the page
# that the compiled ops (RV64I, fence, RV64M, Zba/Zbb/Zbs, loads, stores,
# branches, jal, jalr, fld, fsd; LR, SC, amoswap, amoadd inline on plain RAM,
# riscv_jit_amo.pxi; the other AMOs, flw and fsw, and those off plain RAM, as
# calls of the interpreter's exec_slow, emit_exec; the instruction crossing into the next
# page, riscv_jit_xpage.pxi) reach from the head by falling through and by
# jumps, up to JIT_MAX instructions, laid out in address order.  Jumps inside
# the region are host jumps; a way out goes straight into the region headed at
# its target when there is one, on the same page or on another (cross_page:
# through the fetch TLB and the decoded page it caches, as the run loop's page
# change; the page being run is then that one: h.jcbase, h.jrecs), else back to
# the interpreter, which then runs what the region does not (CSRs, FP
# arithmetic, system instructions).  Every taken jump (forward too) looks at ``lim``
# first and leaves when it is reached, as the interpreter's do; falling through
# and the ways out after a slow load or store do not (they return
# JIT_WENT_ON): interrupts and the budget come at the same instructions in both
# tiers (the rule above run_loop in riscv.pyx).
#
# Registers: r14 = instructions retired in this run() (the interpreter's cnt),
# r15 = the Hart (x[] is read at its offset in it); the page's virtual base and
# records are read from the Hart (jcbase, jrecs).  A region whose loops access
# memory, compiled while data addresses are not translated, keeps the addend of
# the TLB entry in rcx in rbx (riscv_jit_mem.pxi, addend_plan).  The guest registers a region uses most (loops weigh more) live
# in ten host registers (nine when rbx keeps the addend) for the whole region,
# loaded on entry and stored on every way out; the others are read from and
# written to x[] directly.  Loads and stores probe the interpreter's TLBs inline; a miss
# calls load_slow/store_slow out of line: a fault leaves the region with its event;
# a plain access to RAM (a TLB refill) goes on in it; the others (devices,
# watchpoints, hooks, stores into code) leave it after the instruction.
# An access from the same base register as the last access of its table, with
# nothing between them that touches rcx, compares its tag with the entry that
# one left in rcx (most often the same page: a function's frame) and probes in
# full only when it differs (riscv_jit_mem.pxi, probe_again); so does a loop's
# first access when the jump back comes from an access of its table and base
# (rcx carried round the loop: probe_plan, carry_fix).
# So compiled code changes no semantics: same results, same counts.
# Ways out taken rarely (lim reached on a jump inside the region, a taken
# branch out of it) are emitted after the main line (Cold), which keeps only
# the jump there: the hot code stays dense.
#
# Invalidation: decoded records are dropped when their page is reused, on
# code_flush and on stores into their bytes (code_invalidate).  The halfwords
# holding a page's compiled instructions are marked in CodePage.jcover, and each
# region's code is preceded by the 64-bit mask of the page's 64-byte lines it
# translated: a store into marked halfwords unlinks the regions of those lines
# (jit_forget), so no stale region is ever entered, and a store that hits no
# translated byte leaves every region alone (and the region that made it goes
# on after it, see emit_stub).  The code buffer is per hart; when it is full,
# every head is unlinked and it starts over.
#
# W^X: the buffer is never writable and executable at once.  It is one memfd
# mapped twice: an RX view that runs (h.jit_buf, and every code address the
# records, the trampoline and the disassembly see) and an RW view the emitter
# writes through (a.p, at a.wdelta bytes from the RX view; relative jumps are
# the same in both).  Where memfd_create or a second shared mapping is refused,
# one private mapping is flipped RW for the compiling and RX after (a.flip).
# The two views are a shared mapping: a fork()ed child shares the buffer with its
# parent (vmforge never forks a process that goes on running harts).

cdef extern from *:
    """
    #include <sys/mman.h>
    #include <sys/syscall.h>
    #include <unistd.h>
    /* Map ``size`` bytes twice: *rw read-write, *rx read-execute, the same pages.
       0 when done; -1: no second view (*rw = *rx = one private RW mapping). */
    static int rv_jit_map(size_t size, void **rw, void **rx, int two_views) {
        *rw = *rx = MAP_FAILED;
    #if defined(__linux__) && defined(SYS_memfd_create)
        int fd = two_views ? (int)syscall(SYS_memfd_create, "vmforge-jit", 1u /* MFD_CLOEXEC */) : -1;
        if (fd >= 0) {
            if (ftruncate(fd, (off_t)size) == 0) {
                *rx = mmap(NULL, size, PROT_READ | PROT_EXEC, MAP_SHARED, fd, 0);
                if (*rx != MAP_FAILED) {
                    *rw = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
                    if (*rw == MAP_FAILED) {
                        munmap(*rx, size);
                        *rx = MAP_FAILED;
                    }
                }
            }
            close(fd);
            if (*rw != MAP_FAILED)
                return 0;
        }
    #endif
    #ifndef MAP_NORESERVE
    #define MAP_NORESERVE 0
    #endif
        /* (no swap reserved for the whole buffer: pages are taken as code fills it) */
        *rw = *rx = mmap(NULL, size, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        return -1;
    }
    #define RV_MAP_FAILED MAP_FAILED
    #define RV_PROT_RW (PROT_READ | PROT_WRITE)
    #define RV_PROT_RX (PROT_READ | PROT_EXEC)
    typedef int (*rv_jit_entry_t)(void *code, void *hart, uint64_t *x, void *recs,
                                  uint64_t cbase, uint64_t cnt);
    #define RV_JIT_CALL(tramp, code, h, x, recs, cbase, cnt) \
        (((rv_jit_entry_t)(tramp))((code), (void *)(h), (x), (void *)(recs), (cbase), (cnt)))
    #define RV_PTR_DIFF(a, b) ((int64_t)((char *)(a) - (char *)(b)))
    #if defined(__x86_64__) && defined(__linux__)
    #define RV_JIT_HOST 1
    #else
    #define RV_JIT_HOST 0
    #endif
    """
    int RV_JIT_CALL(uint8_t *tramp, uint8_t *code, Hart h, uint64_t *x, Rec *recs,
                    uint64_t cbase, uint64_t cnt) noexcept nogil
    int64_t RV_PTR_DIFF(void *a, void *b) noexcept nogil
    int RV_JIT_HOST
    int rv_jit_map(size_t size, void **rw, void **rx, int two_views) noexcept nogil
    void *RV_MAP_FAILED
    int RV_PROT_RW, RV_PROT_RX
    int munmap(void *addr, size_t size) noexcept nogil
    int mprotect(void *addr, size_t size, int prot) noexcept nogil

cdef enum:
    JIT_HOT = 128               # taken jumps to a record before it is compiled (<= 255)
    JIT_MAX = 256               # instructions per region
    JIT_BYTES = 256 << 20       # code buffer per hart (mapped, written as it fills; the
                                # kernel and programs of a shell session compile ~70 MiB)
    INSN_MAX = 1024             # bytes of one instruction's code (with the way out before it)
    STUB_MAX = 512              # bytes of one slow path (emit_stub)
    HEAD_MAX = 128              # the lines mask, the entry's loads and jump
    NSTUBS = 2 * JIT_MAX + 2    # slow paths: a load has one, a store two
    NPEND = 10 * JIT_MAX + 16   # forward jumps: 1 + the return sites (8) per instruction
    PEND_PER_INSN = 9
    NCOLD = 3 * JIT_MAX + 4     # ways out moved after the main line: three per instruction
                                # at most (emit_exec's two, an addend_check by carry_fix
                                # on a fall to elsewhere before it), two more before a
                                # page-crossing one (xpage_check)
    DESC_MAX = 8 + 64 + 8 * JIT_MAX    # a region's descriptor and its address (riscv_jit_entry.pxi)
    JIT_ROOM = HEAD_MAX + JIT_MAX * INSN_MAX + (NSTUBS + NCOLD) * STUB_MAX + DESC_MAX   # kept free per region
    NPOOL = 10                  # host registers that cache guest registers in a region
    JIT_WENT_ON = 8             # a region's way out by no jump (not an EV_* event)

# the pool (r8-r13, rdi, rsi, rbp, rbx): compiled code calls C only on its ways out, after
# storing the cached registers, so caller-saved registers serve as well as the others
cdef int POOL[NPOOL]
POOL[:] = [8, 9, 10, 11, 13, 12, 7, 6, 5, 3]

# the callee-saved registers the entry trampoline saves (rsp stays 16-aligned: 6 + 1)
cdef enum:
    NSAVED = 6
cdef int SAVED[NSAVED]
SAVED[:] = [RBX, RBP, R12, R13, R14, R15]


cdef struct Stub:           # a slow path, emitted after the region's main line
    int kind                    # STUB_LOAD, STUB_STORE (TLB misses), STUB_RESV
    Rec *r
    int64_t off
    int k
    uint8_t *patch              # the end of the jcc that goes there
    uint8_t *back               # STUB_STORE: after the store, where a plain one goes on
    uint8_t *hit                # STUB_STORE: the store itself, rax = host address
    uint8_t *reprobe            # an access probing its previous entry (rcx): the
                                # add of the addend, where a full probe's hit goes on
    int sib                     # its base is cached: the probe had the guest address
                                # in rdx, the access reads [rax (addend) + base + imm]


cdef struct Cold:           # a way out taken rarely, emitted after the main line
    uint8_t *patch              # the end of the jump that goes there
    int64_t off                 # the page offset it goes to
    int k                       # COLD_GOTO: retired since the last count
    int kind
    uint8_t *back               # COLD_ADDEND: where the access goes on


cdef enum:
    COLD_EXIT = 1               # lim reached on a jump inside the region: back to the loop
    COLD_GOTO = 2               # a taken branch out of the region (goto_pc, jumped)
    COLD_XPAGE = 3              # the next page no longer holds the crossing instruction's
                                # upper half where the fetch TLB says: the loop runs it
    COLD_EVENT = 4              # an op run by a call (emit_exec) returned an event (eax)
    COLD_AFTER = 5              # ... did not go to plain RAM: leave after it
    COLD_ADDEND = 6             # a probe's entry has another addend than rbx: load it
                                # (riscv_jit_mem.pxi, addend_check)
    COLD_FSOFF = 7              # fld/fsd with mstatus.FS off: the loop runs it (illegal)


cdef enum:
    IN_REGION = 1
    STUB_LOAD = 1
    STUB_STORE = 2
    STUB_RESV = 3


cdef struct Jit:
    Stub stubs[NSTUBS]
    int nstubs
    Cold colds[NCOLD]
    int ncold
    uint8_t *p
    uint8_t *epi                # the common epilogue (h.jcnt = r14, return eax)
    # field offsets inside the Hart object
    int32_t o_x, o_lim, o_jpc, o_jv, o_rt, o_wt, o_rs, o_cbase, o_recs, o_jexit, o_ft, o_fc
    int32_t rw_delta                # h.wtlb - h.rtlb: an entry's twin in the other table
    int32_t o_vhits                 # h.jit_victim_hits (victim_probe)
    int32_t o_cp_recs, o_cp_page        # inside a CodePage: its records, its ppage
    int32_t o_pc, o_cnt                 # h.pc_, h.cnt (emit_exec)
    int32_t o_f, o_mstatus              # h.f[], h.mstatus (fld, fsd inline: emit_fmem)
    int32_t o_resv_slot, o_resv_val     # h.resv_slot, h.resv_val (LR/SC inline: emit_amo)
    # the register cache: guest register -> host register (-1: in memory)
    signed char host_of[33]
    uint8_t dirty[33]               # cached and written somewhere in the region
    # the region: instructions of one page reachable from its head (by halfword)
    Rec recs[2048]                  # decoded afresh (a head's own record is OP_JIT)
    uint8_t state[2048]             # IN_REGION, or 0
    int lo, hi                      # its first and last halfword: what scans look at
    uint8_t target[2048]            # jumped to from inside the region: needs a label
    uint8_t *label[2048]            # code of each emitted instruction
    int pend_off[NPEND]             # forward jumps to labels not emitted yet
    uint8_t *pend_at[NPEND]
    int npend
    int rets[8]                     # return sites of the region's calls (jal)
    int nrets
    # the code buffer's views (see W^X above)
    int64_t wdelta                  # RW view - RX view: where the emitter writes
    uint8_t *wbuf                   # the RW view (== h.jit_buf when flipped)
    int flip                        # one mapping, flipped RW/RX around each writing
    uint8_t *limit                  # the end of the RW view (riscv_jit_contract.pxi)
    int insn_seen, stub_seen, head_seen   # the largest pieces written so far
    int abandoned                   # regions given up for want of room (never, by JIT_ROOM)
    int smp                         # other harts run at once (h.smp): fences are real
    # the entry the last access probed, still in rcx (riscv_jit_mem.pxi, probe_again):
    # its table (0: rcx holds none, 1: h.rt, 2: h.wt) and base (-1: changed since)
    int lp_kind, lp_base
    # the labels rcx is carried into round a loop (riscv_jit_mem.pxi, probe_plan)
    uint8_t carry[2048]             # the table its entry is of (0: not carried)
    signed char carry_base[2048]    # the base register of the first access there
    short carry_at[2048]            # that access, when nothing before it writes its base
    # rcx carried forward (riscv_jit_mem.pxi, join_note): what the jumps emitted so far
    # to a label left in rcx (0: none yet, JOIN_MIXED: not one table and base)
    uint8_t join_kind[2048]
    signed char join_base[2048]
    uint8_t back[2048]              # a jump back or a return reaches it (not carried forward)
    int lp_from                     # the base of the access rcx is from (changed or not)
    int n_again, n_full             # accesses compiled with probe_again / a full probe
    int n_cross                     # of n_again: from the other table's entry (probe_cross)
    int rad                         # the host register keeping the addend of the entry in
                                    # rcx (riscv_jit_mem.pxi, addend_plan), or -1: none
    int eax_of, eax_in              # the guest register whose low half eax holds after the
                                    # last instruction / the one before this one (eax_to), -1
    uint8_t why[2048]               # why the region stops there (riscv_jit_stats.pxi)
    int xhi                         # the upper half of the page-crossing instruction the
                                    # region holds (at 0xffe), as the next page held it; -1


include "x86_enc.pxi"      # the x86-64 encoder
include "riscv_jit_stats.pxi"   # ways out counted by why (VMFORGE_JIT_EXITS)


cdef inline void ldx(Jit *a, int reg, int i) noexcept nogil:
    op_rm(a, 1, X_MOV, reg, R15, a.o_x + 8 * i)     # mov reg, x[i]

cdef inline void stx(Jit *a, int reg, int i) noexcept nogil:
    op_rm(a, 1, X_MOV_MR, reg, R15, a.o_x + 8 * i)  # mov x[i], reg


include "riscv_jit_regs.pxi"    # the register cache: plan, loads, stores
include "riscv_jit_entry.pxi"   # ways into a region at its other labels


# -- ways out -----------------------------------------------------------------------------

cdef inline int why_at(Jit *a, int64_t off) noexcept nogil:
    """Why the region leaves for page offset ``off`` (the interpreter's there)."""
    return a.why[off >> 1] if 0 <= off < 4096 and a.why[off >> 1] else WHY_JUMP


cdef void exit_event(Jit *a, int64_t off, int k, int why) noexcept nogil:
    """Leave with the event in eax, the instruction at ``off`` not retired (``k``
    before it were), for reason ``why`` (WHY_*).  Dirty registers are already stored."""
    count_exit(a, why)
    if k:
        alu_imm(a, 1, ALU_ADD, R14, k)                    # add r14, k
    op_rm(a, 1, X_MOV, RCX, R15, a.o_cbase)          # h.jpc = cbase + off
    if off:
        alu_imm(a, 1, ALU_ADD, RCX, <int32_t>off)
    op_rm(a, 1, X_MOV_MR, RCX, R15, a.o_jpc)
    jmp_to(a, a.epi)


cdef void exit_at(Jit *a, int64_t off, int k, int why) noexcept nogil:
    """Leave for the interpreter at page offset ``off``, ``k`` more retired (eax = 0)."""
    zero32(a, RAX)
    exit_event(a, off, k, why)


cdef void exit_on(Jit *a, int64_t off, int k, int why) noexcept nogil:
    """Leave for the interpreter at page offset ``off``, ``k`` more retired, by no
    jump (eax = JIT_WENT_ON): it goes on there without looking at ``lim``."""
    mov_r32_imm32(a, RAX, JIT_WENT_ON)
    exit_event(a, off, k, why)


cdef void cold(Jit *a, int kind, int64_t off, int k, uint8_t *patch) noexcept nogil:
    """A way out for after the main line (emit_cold), reached by the jump ending at
    ``patch``: the main line keeps only the jump, the hot code stays dense."""
    cdef Cold *c = &a.colds[a.ncold]
    a.ncold += 1
    c.kind = kind
    c.off = off
    c.k = k
    c.patch = patch
    c.back = NULL


cdef void emit_cold(Jit *a, Cold *c) noexcept nogil:
    here(a, c.patch)
    if c.kind == COLD_EXIT:
        writeback(a)
        exit_at(a, c.off, 0, WHY_LIM)
    elif c.kind == COLD_XPAGE:
        writeback(a)
        exit_on(a, c.off, c.k, WHY_XPAGE)
    elif c.kind == COLD_EVENT:                      # (registers stored before the call)
        exit_event(a, c.off, c.k, WHY_EVENT)
    elif c.kind == COLD_AFTER:
        exit_on(a, c.off, c.k, WHY_EXEC)
    elif c.kind == COLD_ADDEND:
        addend_reload(a)
        jmp_to(a, c.back)
    elif c.kind == COLD_FSOFF:
        writeback(a)
        exit_on(a, c.off, c.k, WHY_EXEC)
    else:
        goto_pc(a, c.off, c.k, 1)


include "riscv_jit_chain.pxi"      # jumps: in the region, into another, out
include "riscv_jit_calls.pxi"      # the C functions compiled code calls
include "riscv_jit_contract.pxi"   # layouts, called functions and room it relies on
include "riscv_jit_mem.pxi"     # loads and stores: inline TLB probes, slow paths
include "riscv_jit_amo.pxi"     # LR, SC, amoswap, amoadd inline on plain RAM
include "riscv_jit_zb.pxi"      # Zba/Zbb/Zbs ops
include "riscv_jit_xpage.pxi"   # the instruction crossing into the next page


include "riscv_jit_alu.pxi"     # arithmetic, M ops, branch conditions


cdef inline uint8_t *jit_writable(Jit *a, uint8_t *p) noexcept nogil:
    """The RW view's address of code at ``p`` (an RX view address)."""
    return p + a.wdelta


cdef void jit_open(Hart h, Jit *a) noexcept nogil:
    """Before writing code: the flipped buffer becomes RW (and not executable)."""
    if a.flip:
        mprotect(h.jit_buf, JIT_BYTES, RV_PROT_RW)


cdef void jit_close(Hart h, Jit *a) noexcept nogil:
    """After writing code: the flipped buffer becomes RX (and not writable)."""
    if a.flip:
        mprotect(h.jit_buf, JIT_BYTES, RV_PROT_RX)


cdef int jit_two_views = 1          # 0: the flipped single mapping (for its test)
cdef size_t jit_limit = JIT_BYTES     # the buffer's bytes used before starting over


def _jit_set_limit(size_t n):
    """Use the first ``n`` bytes of the code buffers only (at least what one region
    may take; 0: all of them), so that a test sees them fill and start over."""
    global jit_limit
    jit_limit = JIT_BYTES if n == 0 else max(JIT_ROOM + ENTRY_STUB_MAX, min(n, JIT_BYTES))


def _jit_set_two_views(bint on):
    """Whether harts compiling from now on map their buffer twice (the default) or
    once, flipped RW/RX around each compiling (the fallback; for tests)."""
    global jit_two_views
    jit_two_views = on


cdef uint8_t *jit_init(Hart h) noexcept nogil:
    """Map the code buffer and write the entry trampoline and common epilogue."""
    cdef void *rw
    cdef void *rx
    cdef int flip, i
    cdef Jit *a
    if (RV_PTR_DIFF(&h.wvict[0][0], &h.rvict[0][0]) != RV_PTR_DIFF(&h.wtlb[0][0], &h.rtlb[0][0])
            or RV_PTR_DIFF(&h.rvict[0][0], &h.rtlb[0][0]) != NDATA * 256 * sizeof(TlbEntry)):
        return NULL                 # (a victim's twin must be an entry: probe_cross;
                                    # an entry's second way is at VICT_DELTA from it)
    flip = rv_jit_map(JIT_BYTES, &rw, &rx, jit_two_views) != 0
    if rw == RV_MAP_FAILED:
        return NULL
    a = <Jit *>malloc(sizeof(Jit))
    if a == NULL:
        munmap(rw, JIT_BYTES)
        if not flip:
            munmap(rx, JIT_BYTES)
        return NULL
    h.jit_work = a
    h.jit_buf = <uint8_t *>rx
    a.wbuf = <uint8_t *>rw
    a.wdelta = RV_PTR_DIFF(rw, rx)
    a.flip = flip
    a.p = a.wbuf
    a.limit = a.wbuf + JIT_BYTES
    a.insn_seen = a.stub_seen = a.head_seen = a.abandoned = 0
    a.n_again = a.n_full = a.n_cross = 0
    # entry(code=rdi, h=rsi, x=rdx, recs=rcx, cbase=r8, cnt=r9)
    for i in range(NSAVED):                         # push the callee-saved ones used
        push(a, SAVED[i])
    alu_imm(a, 1, ALU_SUB, RSP, 8)                       # sub rsp, 8: calls see rsp % 16 == 0
    mov_rr(a, R15, RSI)
    op_rm(a, 1, X_MOV_MR, RCX, RSI, <int32_t>RV_PTR_DIFF(&h.jrecs, <void *>h))   # h.jrecs = rcx
    op_rm(a, 1, X_MOV_MR, R8, RSI, <int32_t>RV_PTR_DIFF(&h.jcbase, <void *>h))   # h.jcbase = r8
    mov_rr(a, R14, R9)
    jmp_r(a, RDI)
    h.jit_epilogue = a.p - a.wdelta
    op_rm(a, 1, X_MOV_MR, R14, R15, <int32_t>RV_PTR_DIFF(&h.jcnt, <void *>h))   # h.jcnt = r14
    alu_imm(a, 1, ALU_ADD, RSP, 8)
    for i in range(NSAVED - 1, -1, -1):
        pop(a, SAVED[i])
    ret(a)
    h.jit_start = <uint8_t *>((<uintptr_t>(a.p - a.wdelta) + 63) & ~(<uintptr_t>63))
    h.jit_free = h.jit_start
    jit_close(h, a)
    return h.jit_buf


cdef int discover(Jit *a, Hart h, CodePage *cp, int64_t head, uint64_t cbase) noexcept nogil:
    """Mark the region: what the compiled ops reach from ``head`` in this page, by
    fall-through and jumps, up to JIT_MAX instructions.  Returns how many."""
    cdef int stack[2 * JIT_MAX + 2]
    cdef int sp = 0, n = 0, op
    cdef int64_t off, t
    cdef Rec *r
    memset(a.state, 0, sizeof(a.state))
    memset(a.target, 0, sizeof(a.target))
    memset(a.why, 0, sizeof(a.why))
    a.nrets = 0
    a.xhi = -1
    a.lo = 2048
    a.hi = -1
    stack[sp] = <int>head
    sp += 1
    a.target[head >> 1] = 1
    while sp > 0:
        sp -= 1
        off = stack[sp]
        while 0 <= off < 4096 and a.state[off >> 1] != IN_REGION:
            if n >= JIT_MAX:
                a.why[off >> 1] = WHY_MAX
                break
            if h.nch and in_code_hook(h, cbase + <uint64_t>off):
                a.why[off >> 1] = WHY_HOOK
                break                                # hooked: the interpreter calls it
            r = &a.recs[off >> 1]
            if off == 0xffe and (rv_ld16(cp.host + 0xffe) & 3) == 3:
                if not xpage_decode(a, h, cp, cbase, r):
                    a.why[off >> 1] = WHY_XPAGE
                    break                            # the next page's half unknown
            elif decode_at(h, cbase + <uint64_t>off, cp.host, r):
                break
            code_snap(cp, <int>off)                  # (stores into it: see jcover)
            op = r.op
            if not op_is(op, P_JIT) and not zb_compiled(r) and not exec_compiled(r):
                a.why[off >> 1] = WHY_OP + op
                break                                # the interpreter's from here
            a.state[off >> 1] = IN_REGION
            a.lo = min(a.lo, <int>(off >> 1))
            a.hi = max(a.hi, <int>(off >> 1))
            n += 1
            if op == OP_JAL and r.rd != 32 and 0 <= off + r.len < 4096 and a.nrets < 8:
                t = off + r.len                      # its return site, for the jalr
                a.rets[a.nrets] = <int>t
                a.nrets += 1
                a.target[t >> 1] = 1
                if a.state[t >> 1] != IN_REGION and sp < 2 * JIT_MAX:
                    stack[sp] = <int>t
                    sp += 1
            if op_is(op, P_BRANCH | P_JUMP):
                t = off + r.imm
                if 0 <= t < 4096:
                    a.target[t >> 1] = 1
                    if a.state[t >> 1] != IN_REGION and sp < 2 * JIT_MAX:
                        stack[sp] = <int>t
                        sp += 1
            if op_is(op, P_ENDS):
                break
            off += r.len
            if 0 <= off < 4096 and a.state[off >> 1] == IN_REGION:
                a.target[off >> 1] = 1               # falls into code already taken
    return n


cdef inline void seen(int *most, int64_t n) noexcept nogil:
    if n > most[0]:
        most[0] = <int>n


cdef int jit_abandon(Hart h, Jit *a) noexcept nogil:
    """Give the region up (its head stays the interpreter's); 0."""
    a.abandoned += 1
    jit_close(h, a)
    return 0


cdef int jit_compile(Hart h, CodePage *cp, Rec *head, uint64_t cbase) noexcept nogil:
    """Compile the region headed by ``head``; 1 when the head is now OP_JIT."""
    cdef Jit *a
    cdef uint8_t *code
    cdef uint8_t *skip
    cdef uint8_t *seg
    cdef uint8_t *dslot
    cdef int64_t start = RV_PTR_DIFF(head, cp.recs) >> 3, off, nxt = -1, t
    cdef int k = 0, op, i, j, falls = 0, cc, other, fused = -1
    cdef uint64_t lines = 0
    cdef Rec *r
    if not RV_JIT_HOST or not h.jit_on or h.nbp:
        return 0
    if h.jit_buf == NULL and jit_init(h) == NULL:
        h.jit_on = 0
        return 0
    a = <Jit *>h.jit_work
    if jit_enter_covered(h, cp, head, start):
        return 1
    i = discover(a, h, cp, start, cbase)
    if i == 0:
        return 0
    h.jit_insns += i
    if h.jit_free + JIT_ROOM > h.jit_buf + jit_limit:
        jit_unlink_all(h)                            # full: start over
        h.jit_free = h.jit_start
        h.jit_resets += 1
    jit_open(h, a)
    a.p = jit_writable(a, h.jit_free)                # (every write goes through the RW view)
    a.smp = h.smp
    a.epi = jit_writable(a, h.jit_epilogue)
    a.o_x = <int32_t>RV_PTR_DIFF(<void *>&h.x[0], <void *>h)
    a.o_lim = <int32_t>RV_PTR_DIFF(<void *>&h.lim, <void *>h)
    a.o_jpc = <int32_t>RV_PTR_DIFF(&h.jpc, <void *>h)
    a.o_jv = <int32_t>RV_PTR_DIFF(&h.jv, <void *>h)
    a.o_rt = <int32_t>RV_PTR_DIFF(&h.rt, <void *>h)
    a.o_wt = <int32_t>RV_PTR_DIFF(&h.wt, <void *>h)
    a.rw_delta = <int32_t>RV_PTR_DIFF(&h.wtlb[0][0], &h.rtlb[0][0])
    a.o_rs = <int32_t>RV_PTR_DIFF(&h.rs, <void *>h)
    a.o_vhits = <int32_t>RV_PTR_DIFF(&h.jit_victim_hits, <void *>h)
    a.o_cbase = <int32_t>RV_PTR_DIFF(&h.jcbase, <void *>h)
    a.o_recs = <int32_t>RV_PTR_DIFF(&h.jrecs, <void *>h)
    a.o_jexit = <int32_t>RV_PTR_DIFF(&h.jexit, <void *>h)
    a.o_ft = <int32_t>RV_PTR_DIFF(&h.ft, <void *>h)
    a.o_fc = <int32_t>RV_PTR_DIFF(&h.fc, <void *>h)
    a.o_pc = <int32_t>RV_PTR_DIFF(&h.pc_, <void *>h)
    a.o_cnt = <int32_t>RV_PTR_DIFF(&h.cnt, <void *>h)
    a.o_f = <int32_t>RV_PTR_DIFF(<void *>&h.f[0], <void *>h)
    a.o_mstatus = <int32_t>RV_PTR_DIFF(&h.mstatus, <void *>h)
    a.o_resv_slot = <int32_t>RV_PTR_DIFF(&h.resv_slot, <void *>h)
    a.o_resv_val = <int32_t>RV_PTR_DIFF(&h.resv_val, <void *>h)
    a.o_cp_recs = <int32_t>RV_PTR_DIFF(&cp.recs[0], cp)
    a.o_cp_page = <int32_t>RV_PTR_DIFF(&cp.ppage, cp)
    a.nstubs = 0
    a.npend = 0
    a.ncold = 0
    a.lp_kind = 0
    a.eax_of = -1
    for i in range(a.lo, a.hi + 1):                  # labels of this region only
        if a.state[i] == IN_REGION:
            a.label[i] = NULL
    addend_plan(a, h)
    cache_plan(a)
    probe_plan(a)
    for i in range(a.lo, a.hi + 1):                  # the lines it translates (jit_forget)
        if a.state[i] == IN_REGION:
            lines |= jit_lines(i, i + (a.recs[i].len >> 1) - 1 if i < 2047 else i)
    if not jit_room(a, HEAD_MAX + 8):                # (8: the descriptor's address, DESC_MAX)
        return jit_abandon(h, a)
    dslot = a.p
    q8(a, 0)                                         # the descriptor's address (below)
    seg = a.p
    q8(a, lines)
    code = a.p - a.wdelta                            # where it runs
    cache_load(a)                                    # the entry: registers in, to the head
    carry_fix(a, start)                              # (lp_kind 0: rcx holds no entry)
    jump_label(a, -1, start)
    seen(&a.head_seen, a.p - seg)
    # the instructions in address order; ``nxt``: where the last one falls through to
    for i in range(a.lo, a.hi + 1):
        if a.state[i] != IN_REGION:
            continue
        if not jit_room(a, INSN_MAX) or a.npend + PEND_PER_INSN > NPEND or a.nstubs + 2 > NSTUBS \
                or a.ncold + 5 > NCOLD:
            return jit_abandon(h, a)
        seg = a.p
        off = 2 * i
        if falls and nxt != off:                     # the last one goes on elsewhere
            goto_pc(a, nxt, k, 0)                    # (falls: no look at lim)
            falls = 0
        if a.target[i]:                              # a label: counts settled before it
            if falls and k:
                alu_imm(a, 1, ALU_ADD, R14, k)
            k = 0
        if a.target[i] or not falls:                 # other paths join: rcx unknown,
            if a.target[i] and not a.carry[i] and off != start:   # or carried in (probe_plan,
                join_settle(a, i, falls)                           # or from every jump here)
            if falls:
                carry_fix(a, off)
            a.lp_kind = a.carry[i]
            a.lp_base = a.lp_from = a.carry_base[i]
        a.label[i] = a.p
        a.eax_in = a.eax_of if falls and not a.target[i] else -1   # (straight from the last)
        a.eax_of = -1
        r = &a.recs[i]
        op = r.op
        falls = 1
        if i == 2047 and r.len == 4:                 # crosses into the next page
            xpage_check(a, k)
            a.eax_in = -1                            # (the check used rax)
        if op == OP_FLD or op == OP_FSD:
            emit_fmem(a, r, off, k)
        elif amo_inline(r):
            emit_amo(a, r, off, k)
        elif exec_compiled(r):
            emit_exec(a, r, off, k)
        elif i == fused:
            pass                                     # (the add of a shift-add pair)
        elif op_is(op, P_ALU):
            other = shift_add_pair(a, i)
            if other:
                emit_shift_add(a, r, other)
                fused = i + (r.len >> 1)
            else:
                emit_simple(a, r, off)
        elif op == OP_ZB or op == OP_ZBI:
            emit_zb(a, r)
        elif op_is(op, P_LOAD):
            emit_load(a, r, off, k)
        elif op_is(op, P_STORE):
            emit_store(a, r, off, k)
        elif op_is(op, P_BRANCH):
            cc = branch_cmp(a, r)                    # (the condition it is not taken on)
            t = off + r.imm
            if 0 <= t < 4096 and a.state[t >> 1] == IN_REGION:
                skip = jcc32(a, cc)
                goto_pc(a, t, k + 1, 1)
                here(a, skip)
            else:                                    # out of the region: taken, after the main line
                cold(a, COLD_GOTO, t, k + 1, jcc32(a, cc ^ 1))
        elif op == OP_J or op == OP_JAL:
            if op == OP_JAL:
                imm64(a, RAX, off + r.len)
                op_rm(a, 1, X_ADD, RAX, R15, a.o_cbase)
                rax_to(a, r.rd)
                if r.rd == a.lp_base:
                    a.lp_base = -1                   # (before the jump notes rcx's base)
            goto_pc(a, off + r.imm, k + 1, 1)
            falls = 0
        else:                                        # JALR
            src_rax(a, 1, r.rs1)
            alu_imm(a, 1, ALU_ADD, RAX, r.imm)
            alu_imm(a, 1, ALU_AND, RAX, -2)                # and rax, ~1
            if r.rd != 32:
                mov_rr(a, RDX, RAX)
                imm64(a, RAX, off + r.len)
                op_rm(a, 1, X_ADD, RAX, R15, a.o_cbase)
                rax_to(a, r.rd)
                mov_rr(a, RAX, RDX)
            alu_imm(a, 1, ALU_ADD, R14, k + 1)
            if a.nrets:                              # a return into the region: stay
                op_rm(a, 1, X_CMP, R14, R15, a.o_lim)
                skip = jcc32(a, CC_AE)
                mov_rr(a, RDX, RAX)
                op_rm(a, 1, X_SUB, RDX, R15, a.o_cbase)
                for j in range(a.nrets):
                    if a.state[a.rets[j] >> 1] == IN_REGION:
                        alu_imm(a, 1, ALU_CMP, RDX, a.rets[j])
                        jump_label(a, CC_E, a.rets[j])
                here(a, skip)
            writeback(a)
            goto_rax(a, 0)
            falls = 0
        probe_track(a, r)
        k += 1
        nxt = off + r.len
        seen(&a.insn_seen, a.p - seg)
    if falls:
        if not jit_room(a, INSN_MAX):
            return jit_abandon(h, a)
        seg = a.p
        goto_pc(a, nxt, k, 0)
        seen(&a.insn_seen, a.p - seg)
    for i in range(a.npend):                        # forward jumps, now that all is placed
        jmp_patch(a.pend_at[i], a.label[a.pend_off[i] >> 1])
    for i in range(a.nstubs):
        if not jit_room(a, STUB_MAX):
            return jit_abandon(h, a)
        seg = a.p
        emit_stub(a, &a.stubs[i])
        seen(&a.stub_seen, a.p - seg)
    for i in range(a.ncold):                        # (adding none: a COLD_GOTO's target is
        if not jit_room(a, STUB_MAX):               # outside the region, no carry_fix)
            return jit_abandon(h, a)
        seg = a.p
        emit_cold(a, &a.colds[i])
        seen(&a.stub_seen, a.p - seg)
    if not jit_room(a, entry_desc_size(a)):
        return jit_abandon(h, a)
    entry_desc_write(a, code, dslot)                # (riscv_jit_entry.pxi)
    h.jit_bytes += <uint64_t>((a.p - a.wdelta) - h.jit_free)
    h.jit_free = <uint8_t *>((<uintptr_t>(a.p - a.wdelta) + 15) & ~(<uintptr_t>15))
    jit_close(h, a)
    h.jit_regions += 1
    code_mark(cp, cbase + <uint64_t>start)           # so that unlinking finds the head
    head.op = OP_JIT
    head.len = a.recs[start].len                     # (code_forget reads it)
    memcpy(<uint8_t *>head + 8, &code, 8)
    cp.njit += 1
    for i in range(a.lo, a.hi + 1):                  # its bytes: stores there unlink it
        if a.state[i] == IN_REGION:
            cp.jcover[i >> 6] |= (<uint64_t>1) << (i & 63)
            cp.xmap[i] = 1
            if a.recs[i].len == 4 and i < 2047:
                cp.jcover[(i + 1) >> 6] |= (<uint64_t>1) << ((i + 1) & 63)
                cp.xmap[i + 1] = 1
    return 1


cdef void jit_free(Hart h) noexcept nogil:
    cdef Jit *a = <Jit *>h.jit_work
    if h.jit_buf != NULL:
        if not a.flip:
            munmap(a.wbuf, JIT_BYTES)
        munmap(h.jit_buf, JIT_BYTES)
        h.jit_buf = NULL
        free(h.jit_work)
        h.jit_work = NULL
