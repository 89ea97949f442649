# Watchpoints and hooks of the hart (included by riscv.pyx after riscv_mmu.pxi).
#
# Data: the TLB entry of a page that overlaps a watched range carries RV_TLB_WATCH,
# so the inline probes of the interpreter and of compiled code miss and the access
# goes through load_slow/store_slow, which call watch_check.  Pages outside the
# ranges keep their fast paths.  A stop-kind range (gdb's watchpoints) stops the
# hart before the access (STOP_WATCHPOINT, pc at the instruction, nothing done);
# the debugger steps the instruction with w_skip set and reports the stop after
# it, as gdb expects.  A call-kind range calls hook_mem after a read (with the
# value read) and before a write (with the value to be written).
#
# Code: pcs inside a code-hook range are decoded as OP_BREAK records (as
# breakpoints are), so no compiled region covers them; running one calls
# hook_code(pc, size, sequential) and then the instruction, decoded alone.
#
# Every callback runs with the GIL; an exception it raises stops the hart
# (STOP_PYEXC, re-raised by run()).

cdef extern from *:
    """
    #define RV_CODE_QUIET_ONCE (1ULL << 63)
    """
    uint64_t CODE_QUIET_ONCE "RV_CODE_QUIET_ONCE"

cdef enum:
    WATCH_READ = 1
    WATCH_WRITE = 2
    WATCH_STOP = 4          # else: call hook_mem
    HOOK_TRAP = 1
    HOOK_ILLEGAL = 2
    HOOK_UNMAPPED = 4
    HOOK_MMU = 8


cdef inline int watch_page(Hart h, uint64_t vpage, int acc) noexcept nogil:
    """Whether a range of the access kind ``acc`` overlaps the page at ``vpage``."""
    cdef int i, want = WATCH_WRITE if acc == ACC_W else WATCH_READ
    for i in range(h.nw):
        if (h.wkind[i] & want) and h.wlo[i] <= vpage + 0xfff and h.whi[i] >= vpage:
            return 1
    return 0


cdef int hook_failed(Hart h, object ex) noexcept with gil:
    h.pyexc = ex
    h.stop_reason = STOP_PYEXC
    h.lim = 0
    return EV_STOP


cdef int call_mem_hook(Hart h, uint64_t va, int size, int write, uint64_t value) noexcept with gil:
    try:
        h.hook_mem(va, size, bool(write), value)
    except BaseException as ex:
        return hook_failed(h, ex)
    return 0


cdef int watch_check(Hart h, uint64_t va, int size, int write, uint64_t value,
                     int after) noexcept nogil:
    """An access of ``size`` bytes at ``va`` on a watched page: 0 to go on, or
    EV_STOP (a stop-kind watch before the access, or a hook that raised)."""
    cdef int i, k, want = WATCH_WRITE if write else WATCH_READ, call = 0
    cdef uint64_t last = va + <uint64_t>size - 1
    for i in range(h.nw):
        k = h.wkind[i]
        if not (k & want) or h.wlo[i] > last or h.whi[i] < va:
            continue
        if k & WATCH_STOP:
            if not after and not h.w_skip:
                h.w_hit_addr = va
                h.w_hit_size = size
                h.w_hit_write = write
                h.stop_reason = STOP_WATCHPOINT
                return EV_STOP
        elif after != write:        # reads: after the access; writes: before it
            call = 1
    if call:
        return call_mem_hook(h, va, size, write, value)
    return 0


cdef inline int in_code_hook(Hart h, uint64_t pc) noexcept nogil:
    cdef int i
    for i in range(h.nch):
        if h.clo[i] <= pc <= h.chi[i]:
            return 1
    return 0


cdef int call_code_hook(Hart h, uint64_t pc, uint8_t *chost) noexcept nogil:
    """hook_code(pc, size, sequential) before the instruction at ``pc`` (on the page
    at ``chost``; sequential: it follows the last hooked instruction run), unless
    the last call asked for quiet: straight-line code before ``code_quiet`` (a
    block tracer's block) runs without calls."""
    cdef int size = 4 if (rv_ld16(chost + (pc & 0xfff)) & 3) == 3 else 2
    cdef int r = 0
    cdef int seq = pc == h.code_next
    cdef int i = (pc >> 1) & 1023
    cdef uint64_t sig
    if not seq or pc >= h.code_quiet:
        sig = tb_signature(h)
        if h.tbc_pc[i] == pc and h.tbc_sig[i] == sig:
            h.code_quiet = h.tbc_end[i]         # seen, and the callback said: once is enough
        else:
            r = call_code_hook_py(h, pc, size, seq)
            if h.code_quiet & CODE_QUIET_ONCE:
                h.code_quiet &= ~CODE_QUIET_ONCE
                h.tbc_pc[i] = pc
                h.tbc_end[i] = h.code_quiet
                h.tbc_sig[i] = sig
    h.code_next = pc + <uint64_t>size
    return r


cdef inline uint64_t tb_signature(Hart h) noexcept nogil:
    """What a block's translation depends on: privilege, FS and the page tables."""
    cdef uint64_t page_tables = h.satp * <uint64_t>2654435761U
    cdef uint64_t sig = <uint64_t>h.priv | (h.mstatus & MSTATUS_FS) | 0x8000
    return sig | (page_tables << 16)


cdef int call_code_hook_py(Hart h, uint64_t pc, int size, int seq) noexcept with gil:
    """The callback returns None (call again at the next instruction), an address
    (no calls while the hart runs straight on below it) or minus that address (and
    none when the hart comes back to ``pc`` in the same state, ``tb_signature``)."""
    try:
        quiet = h.hook_code(pc, size, bool(seq))
        if quiet is None:
            h.code_quiet = 0
        elif quiet < 0:
            h.code_quiet = <uint64_t>(-int(quiet)) | CODE_QUIET_ONCE
        else:
            h.code_quiet = <uint64_t>(int(quiet) & 0x7FFFFFFFFFFFFFFF)
    except BaseException as ex:
        h.code_quiet = 0
        return hook_failed(h, ex)
    return 0


cdef void call_trap_hook(Hart h, uint64_t cause, uint64_t epc, uint64_t tval) noexcept with gil:
    if h.stop_reason == STOP_PYEXC:
        return
    try:
        h.hook_trap(cause, epc, tval)
    except BaseException as ex:
        hook_failed(h, ex)


cdef int call_illegal_hook(Hart h, uint64_t pc, uint64_t bits) noexcept with gil:
    """1: the hook emulated the instruction (skip it), 0: take the trap, -1: it raised."""
    try:
        return 1 if h.hook_illegal(pc, bits) else 0
    except BaseException as ex:
        hook_failed(h, ex)
        return -1


cdef int call_unmapped_hook(Hart h, uint64_t pa, int size, int write, uint64_t *v) noexcept with gil:
    """1: handled (``v`` = the value read), 0: the access faults, -1: the hook raised."""
    try:
        res = h.hook_unmapped(pa, size, bool(write), v[0] if write else 0)
    except BaseException as ex:
        hook_failed(h, ex)
        return -1
    if res is None or res is False:
        return 0
    if not write:
        v[0] = (<uint64_t>(int(res) & 0xFFFFFFFFFFFFFFFF)) if res is not True else 0
        if size < 8:
            v[0] &= ((<uint64_t>1) << (8 * size)) - 1
    return 1


cdef void call_mmu_hook(Hart h, uint64_t va, int acc, int fault, uint64_t pa) noexcept with gil:
    """hook_mmu(va, access, ok, pa) for each TLB fill (``-d mmu``)."""
    if h.stop_reason == STOP_PYEXC:
        return
    try:
        h.hook_mmu(va, acc, not fault, pa)
    except BaseException as ex:
        hook_failed(h, ex)
