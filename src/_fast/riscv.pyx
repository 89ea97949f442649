# cython: language_level=3
"""The RISC-V RV64GC hart: an interpreter over pre-decoded instructions.

Parts (``include``d, sharing ``riscv.pxd``): ``riscv_defs.pxi`` (constants),
``riscv_decode.pxi`` (RV64GC decoding into 16-byte records),
``riscv_mmu.pxi`` (Sv39/Sv48, TLBs, decoded-code cache, memory slow paths, A),
``riscv_tlb.pxi`` (the TLB sets: per privilege and address space, their flushes),
``riscv_csr.pxi`` (CSRs, traps, interrupts, privileged instructions),
``riscv_float.pxi`` (F and D), ``riscv_face.pxi`` (the Python-visible classes).
This file holds the run loop.

The loop runs without the GIL.  Instructions are decoded once per physical
code page (2048 records of 16 bytes, one per halfword, plus two end-of-page
sentinels) and the decoded page is patched on stores to it (write-TLB entries
of such pages carry a flag that sends stores to the slow path), dropped on
fence.i and on RAM map changes.  Being keyed by physical address, decoded
code survives satp writes and sfence.vma.
The loop walks a record pointer (the pc is derived from it), so the only
per-instruction work besides the op itself is the dispatch and a count.  The
instruction budget, the internal timer, interrupt lines and Python's signals
are looked at on block boundaries: taken branches and jumps once the
threshold ``lim`` is reached, code-page changes and instructions that change
privileged state.  The loop leaves C only to call a Python device (MMIO) or
to look at signals, and returns on a stop condition.  Hot code is compiled
to x86-64 by ``riscv_jit.pxi``; the loop enters it at records marked OP_JIT.
"""

import os

from cpython.exc cimport PyErr_CheckSignals
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int16_t, int32_t, int64_t, uintptr_t
from libc.string cimport memcpy, memset
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC
from vmforge._fast.mmio cimport AddressSpace
from vmforge._fast.guestmem cimport GuestRam

include "riscv_defs.pxi"
include "riscv_decode.pxi"
include "riscv_atomic.pxi"
include "riscv_mmu.pxi"
include "riscv_tlb.pxi"
include "riscv_code.pxi"
include "riscv_hooks.pxi"
include "riscv_csr.pxi"
include "riscv_float.pxi"
include "riscv_jit.pxi"

cdef extern from *:
    """
    static inline uint64_t rv_mulh(int64_t a, int64_t b) {
        return (uint64_t)(((__int128)a * (__int128)b) >> 64);
    }
    static inline uint64_t rv_mulhu(uint64_t a, uint64_t b) {
        return (uint64_t)(((unsigned __int128)a * (unsigned __int128)b) >> 64);
    }
    static inline uint64_t rv_mulhsu(int64_t a, uint64_t b) {
        return (uint64_t)(((__int128)a * (__int128)(unsigned __int128)b) >> 64);
    }
    #define RV_INT64_MIN ((int64_t)0x8000000000000000ULL)
    /* the guest pc of record r: records are one per halfword of the page */
    #define RV_PC(cbase, r, recs) ((cbase) + (uint64_t)(((char *)(r) - (char *)(recs)) >> 3))
    /* the record a pc-relative jump lands on (16 bytes per halfword), and whether
       it lies outside the current page (offsets compared unsigned) */
    #define RV_JUMP(r, imm) ((void *)((char *)(r) + ((int64_t)(imm) << 3)))
    #define RV_OUTSIDE(t, recs) ((uint64_t)((char *)(t) - (char *)(recs)) >= 4096ULL << 3)
    /* h.tmp runs as if its page's records began 2^40 bytes before it: every jump
       from it lands "outside" and RV_PC stays right with cbase = pc - 2^37 */
    #define RV_TMP_SHIFT (1ULL << 37)
    #define RV_TMP_RECS(t) ((void *)((char *)(t) - (1ULL << 40)))
    """
    uint64_t rv_mulh(int64_t a, int64_t b) noexcept nogil
    uint64_t rv_mulhu(uint64_t a, uint64_t b) noexcept nogil
    uint64_t rv_mulhsu(int64_t a, uint64_t b) noexcept nogil
    int64_t INT64_MIN "RV_INT64_MIN"
    uint64_t RV_PC(uint64_t cbase, Rec *r, Rec *recs) noexcept nogil
    void rv_unreachable "__builtin_unreachable"() noexcept nogil
    Rec *RV_JUMP(Rec *r, int32_t imm) noexcept nogil
    bint RV_OUTSIDE(Rec *t, Rec *recs) noexcept nogil
    uint64_t RV_TMP_SHIFT
    Rec *RV_TMP_RECS(Rec *t) noexcept nogil


cdef inline uint64_t sx32(uint64_t v) noexcept nogil:
    return <uint64_t><int64_t><int32_t><uint32_t>v


cdef inline uint64_t div64(int64_t a, int64_t b) noexcept nogil:
    if b == 0:
        return <uint64_t>-1
    if a == INT64_MIN and b == -1:
        return <uint64_t>a
    return <uint64_t>(a // b)


cdef inline uint64_t rem64(int64_t a, int64_t b) noexcept nogil:
    if b == 0:
        return <uint64_t>a
    if a == INT64_MIN and b == -1:
        return 0
    return <uint64_t>(a % b)


cdef inline uint64_t divw(int32_t a, int32_t b) noexcept nogil:
    if b == 0:
        return <uint64_t>-1
    if a == -2147483648 and b == -1:
        return sx32(<uint32_t>a)
    return sx32(<uint32_t>(a // b))


cdef inline uint64_t remw(int32_t a, int32_t b) noexcept nogil:
    if b == 0:
        return sx32(<uint32_t>a)
    if a == -2147483648 and b == -1:
        return 0
    return sx32(<uint32_t>(a % b))


cdef int exec_slow(Hart h, Rec *r) noexcept nogil:
    """Ops outside the hot switch; h.pc_ holds the pc of ``r``.  EV_* code or 0."""
    cdef int op = r.op
    if op == OP_FP:
        return exec_fp(h, r)
    if op == OP_FLW or op == OP_FLD:
        return exec_fload(h, r)
    if op == OP_FSW or op == OP_FSD:
        return exec_fstore(h, r)
    if op_is(op, P_CSR):
        return exec_csr(h, r)
    if op_is(op, P_AMO):
        return exec_amo(h, r)
    if op == OP_FENCE:
        fence_op(h, r)
        return 0
    if op == OP_ILLEGAL:
        return illegal(h, r)
    return exec_system(h, r)


cdef int decode_at(Hart h, uint64_t pc, uint8_t *chost, Rec *out) noexcept nogil:
    """Decode the instruction at ``pc`` into ``out``; 0, or EV_EXC (fetch fault)."""
    cdef uint32_t off = pc & 0xfff, lo, hi
    cdef int r
    lo = rv_ld16(chost + off)
    if (lo & 3) != 3:
        decode16(lo, out)
        return 0
    if off <= 0xffc:
        decode32(rv_ld32(chost + off), out)
        zb_gate(h, out)
        return 0
    r = fetch16(h, pc + 2, &hi)              # the instruction crosses a page
    if r:
        h.exc_cause = r
        h.exc_tval = pc + 2
        return EV_EXC
    decode32(lo | (hi << 16), out)
    zb_gate(h, out)
    return 0


# The run loop calls its cold paths through pointers, so that the C compiler does
# not inline them into it: the interpreter's speed depends on that loop staying
# small (inlining the FP, CSR and hook code cost it a third of its speed).
ctypedef int (*exec_fn)(Hart h, Rec *r) noexcept nogil
ctypedef int (*illegal_fn)(Hart h, uint64_t pc) noexcept nogil
ctypedef int (*hooked_fn)(Hart h, uint64_t pc, uint64_t cnt, uint8_t *chost) noexcept nogil
cdef exec_fn EXEC_SLOW = exec_slow
cdef illegal_fn ILLEGAL_HOOKED = illegal_hooked
cdef hooked_fn CODE_HOOKED = code_hooked


cdef int code_hooked(Hart h, uint64_t pc, uint64_t cnt, uint8_t *chost) noexcept nogil:
    """The record at ``pc`` is OP_BREAK and code hooks are set: unless it is a
    breakpoint (or being resumed over), call the hook and arrange for the
    instruction to run alone.  0 to go on; EV_STOP (the hook raised) or EV_JUMP
    (it moved the pc)."""
    if (h.bp_skip_valid and h.bp_skip == pc) or is_bp(h, pc):
        return 0
    h.pc_ = pc
    h.cnt = cnt
    if call_code_hook(h, pc, chost):
        return EV_STOP
    if h.pc_ != pc:
        return EV_JUMP
    h.bp_skip = pc
    h.bp_skip_valid = 1
    return 0


cdef int illegal_hooked(Hart h, uint64_t pc) noexcept nogil:
    """An illegal instruction at ``pc`` with an illegal-instruction hook: 1 when the
    hook emulated it (``h.pc_`` is where the hart goes on), 0 to take the trap, -1
    when the hook raised."""
    cdef int res = call_illegal_hook(h, pc, h.exc_tval)
    if res > 0 and h.pc_ == pc:
        h.pc_ = pc + (4 if (h.exc_tval & 3) == 3 else 2)
    return res


include "riscv_resolve.pxi"


cdef enum:
    SIGNAL_INTERVAL = 1 << 24       # instructions between looks at Python's signals


cdef int check_signals(Hart h) noexcept nogil:
    """1 (with h.pyexc set) when a signal handler raised, e.g. KeyboardInterrupt."""
    with gil:
        try:
            PyErr_CheckSignals()
        except BaseException as ex:
            h.pyexc = ex
            return 1
    return 0


# Where the hart looks at ``lim`` (the instruction budget, the timer's deadline,
# the next look at signals; 0 when an interrupt line, the timer or a stop
# request changed): after each taken branch or jump (forward ones too) and when
# execution leaves the page (falls off it, a page-crossing instruction) -- never
# after an instruction that falls through.  Instructions that end the block (an
# event: exception, privileged state changed) go to the boundary, where
# interrupts are taken, at once.  Compiled code (riscv_jit.pxi) follows the same
# rule: its jumps compare r14 with h.lim, and a way out by no jump (falling into
# code it lacks, after a slow load or store) returns JIT_WENT_ON, after which
# the loop goes on as here.  So interrupts and budget stops land on the same
# instructions in both tiers.
cdef int run_loop(Hart h, uint64_t budget) noexcept nogil:
    cdef uint64_t *x = h.x
    cdef uint64_t pc = h.pc_
    cdef uint64_t cnt = 0
    cdef uint64_t cbase = 0
    cdef Rec *rr
    cdef uint64_t a, v, dl
    cdef Rec *recs = NULL
    cdef Rec *r
    cdef TlbEntry *e
    cdef TlbEntry *rt
    cdef TlbEntry *wt
    cdef CodePage *cp
    cdef int ev = EV_CHECK, res, op
    cdef uint64_t cnt0
    cdef uint64_t sig_next = SIGNAL_INTERVAL
    h.cnt = 0
    h.traps = 0
    h.poll_at = 0
    h.stop_reason = STOP_NONE
    while True:
        # ---- a block boundary: events, budget, timer, interrupts ---------------------
        if ev == EV_EXC:
            h.cnt = cnt
            h.pc_ = pc
            if h.exc_cause < 64 and (h.stop_causes >> h.exc_cause) & 1:
                h.stop_reason = STOP_EXCEPTION
                break
            if h.exc_cause == 2 and (h.hooks_on & HOOK_ILLEGAL):
                res = ILLEGAL_HOOKED(h, pc)
                if res < 0:
                    break
                if res:                 # emulated by the hook: on to the next one
                    pc = h.pc_
                    cnt += 1
                    ev = EV_JUMP
                    continue
            trap(h, h.exc_cause, h.exc_tval, 0)
            pc = h.pc_
            if h.stop_reason == STOP_PYEXC:     # a trap hook raised
                break
            # a trap retires nothing: a guest trapping forever (mtvec pointing at
            # a fault) must still reach the budget and the signal checks
            h.traps += 1
            if h.traps > budget:
                h.stop_reason = STOP_BUDGET
                break
        elif ev == EV_STOP:
            if (h.stop_reason == STOP_BREAKPOINT or h.stop_reason == STOP_PYEXC
                    or h.stop_reason == STOP_WATCHPOINT):
                h.pc_ = pc           # the instruction did not complete
            else:
                pc = h.pc_
            break
        elif ev == EV_JUMP:
            pc = h.pc_
        h.cnt = cnt
        h.pc_ = pc
        if cnt >= budget:
            h.stop_reason = STOP_BUDGET
            break
        if h.lim == 0 and h.stop_reason == STOP_REQUEST:
            break
        if cnt + h.traps >= sig_next:   # Ctrl-C reaches a guest that never stops
            sig_next = cnt + h.traps + SIGNAL_INTERVAL
            if check_signals(h):
                h.stop_reason = STOP_PYEXC
                break
        if h.time_host:
            time_poll(h, cnt)
        if pending_irq(h):
            pc = h.pc_
            if h.stop_reason == STOP_PYEXC:     # a trap hook raised
                break
        dl = timer_deadline(h)
        if dl > sig_next:
            dl = sig_next
        h.lim = budget if dl > budget else (dl if dl > cnt else cnt + 1)
        rv_cbarrier()
        if h.stop_reason == STOP_REQUEST:
            # a stop requested (another thread: park) since the check above set lim to 0
            # before the line before overwrote it: keep it, or the request is lost
            h.lim = 0
        ev = 0
        # ---- code-page changes -------------------------------------------------------
        while True:
            if cnt >= h.lim:
                ev = EV_CHECK
                break
            res = fetch_page(h, pc, &cp)
            if res:
                h.exc_cause = res
                h.exc_tval = pc
                ev = EV_EXC
                break
            cbase = pc & RV_PAGE_MASK
            rt = h.rt               # privilege changes end the block: these stay valid
            wt = h.wt
            recs = cp.recs
            h.cur_code = cp         # for resolve(), which marks what it decodes
            r = &recs[(pc - cbase) >> 1]
            if h.step_mode:         # exact counts: each instruction alone, as h.tmp
                if h.nbp and not (h.bp_skip_valid and h.bp_skip == pc) and is_bp(h, pc):
                    h.stop_reason = STOP_BREAKPOINT
                    ev = EV_STOP
                    break
                if h.nch and in_code_hook(h, pc):
                    res = CODE_HOOKED(h, pc, cnt, cp.host)
                    if res:
                        ev = res
                        break
                h.bp_skip_valid = 0
                if decode_at(h, pc, cp.host, &h.tmp[0]):
                    ev = EV_EXC
                    break
                h.tmp[1].op = OP_PAGEEND
                h.tmp[2].op = OP_PAGEEND
                r = &h.tmp[0]
                recs = RV_TMP_RECS(r)
                cbase = pc - RV_TMP_SHIFT
            else:                               # entering a page counts as a jump
                jit_heat(h, cp, r, cbase)
            # ---- the hot loop: r walks the page's records; pc = RV_PC(cbase, r, recs) ---
            while True:
                op = r.op
                if op == OP_ADDI:
                    x[r.rd] = x[r.rs1] + <uint64_t><int64_t>r.imm
                elif op == OP_LI:
                    x[r.rd] = <uint64_t><int64_t>r.imm
                elif op == OP_MV:
                    x[r.rd] = x[r.rs1]
                elif op == OP_NOP:
                    pass
                elif op == OP_ADD:
                    x[r.rd] = x[r.rs1] + x[r.rs2]
                elif op == OP_SUB:
                    x[r.rd] = x[r.rs1] - x[r.rs2]
                elif op == OP_LUI:
                    x[r.rd] = <uint64_t><int64_t>r.imm
                elif op == OP_AUIPC:
                    x[r.rd] = RV_PC(cbase, r, recs) + <uint64_t><int64_t>r.imm
                elif op == OP_ADDIW:
                    x[r.rd] = sx32(x[r.rs1] + <uint64_t><int64_t>r.imm)
                elif op == OP_ADDW:
                    x[r.rd] = sx32(x[r.rs1] + x[r.rs2])
                elif op == OP_SUBW:
                    x[r.rd] = sx32(x[r.rs1] - x[r.rs2])
                elif op == OP_SLLI:
                    x[r.rd] = x[r.rs1] << r.imm
                elif op == OP_SRLI:
                    x[r.rd] = x[r.rs1] >> r.imm
                elif op == OP_SRAI:
                    x[r.rd] = <uint64_t>((<int64_t>x[r.rs1]) >> r.imm)
                elif op == OP_ANDI:
                    x[r.rd] = x[r.rs1] & <uint64_t><int64_t>r.imm
                elif op == OP_ORI:
                    x[r.rd] = x[r.rs1] | <uint64_t><int64_t>r.imm
                elif op == OP_XORI:
                    x[r.rd] = x[r.rs1] ^ <uint64_t><int64_t>r.imm
                elif op == OP_SLTI:
                    x[r.rd] = (<int64_t>x[r.rs1]) < <int64_t>r.imm
                elif op == OP_SLTIU:
                    x[r.rd] = x[r.rs1] < <uint64_t><int64_t>r.imm
                elif op == OP_AND:
                    x[r.rd] = x[r.rs1] & x[r.rs2]
                elif op == OP_OR:
                    x[r.rd] = x[r.rs1] | x[r.rs2]
                elif op == OP_XOR:
                    x[r.rd] = x[r.rs1] ^ x[r.rs2]
                elif op == OP_SLL:
                    x[r.rd] = x[r.rs1] << (x[r.rs2] & 63)
                elif op == OP_SRL:
                    x[r.rd] = x[r.rs1] >> (x[r.rs2] & 63)
                elif op == OP_SRA:
                    x[r.rd] = <uint64_t>((<int64_t>x[r.rs1]) >> (x[r.rs2] & 63))
                elif op == OP_SLT:
                    x[r.rd] = (<int64_t>x[r.rs1]) < (<int64_t>x[r.rs2])
                elif op == OP_SLTU:
                    x[r.rd] = x[r.rs1] < x[r.rs2]
                elif op == OP_SLLIW:
                    x[r.rd] = sx32(<uint32_t>x[r.rs1] << r.imm)
                elif op == OP_SRLIW:
                    x[r.rd] = sx32(<uint32_t>x[r.rs1] >> r.imm)
                elif op == OP_SRAIW:
                    x[r.rd] = <uint64_t><int64_t>((<int32_t>x[r.rs1]) >> r.imm)
                elif op == OP_SLLW:
                    x[r.rd] = sx32(<uint32_t>x[r.rs1] << (x[r.rs2] & 31))
                elif op == OP_SRLW:
                    x[r.rd] = sx32(<uint32_t>x[r.rs1] >> (x[r.rs2] & 31))
                elif op == OP_SRAW:
                    x[r.rd] = <uint64_t><int64_t>((<int32_t>x[r.rs1]) >> (x[r.rs2] & 31))
                elif op == OP_MUL:
                    x[r.rd] = x[r.rs1] * x[r.rs2]
                elif op == OP_MULH:
                    x[r.rd] = rv_mulh(<int64_t>x[r.rs1], <int64_t>x[r.rs2])
                elif op == OP_MULHSU:
                    x[r.rd] = rv_mulhsu(<int64_t>x[r.rs1], x[r.rs2])
                elif op == OP_MULHU:
                    x[r.rd] = rv_mulhu(x[r.rs1], x[r.rs2])
                elif op == OP_DIV:
                    x[r.rd] = div64(<int64_t>x[r.rs1], <int64_t>x[r.rs2])
                elif op == OP_DIVU:
                    x[r.rd] = x[r.rs1] // x[r.rs2] if x[r.rs2] != 0 else <uint64_t>-1
                elif op == OP_REM:
                    x[r.rd] = rem64(<int64_t>x[r.rs1], <int64_t>x[r.rs2])
                elif op == OP_REMU:
                    x[r.rd] = x[r.rs1] % x[r.rs2] if x[r.rs2] != 0 else x[r.rs1]
                elif op == OP_MULW:
                    x[r.rd] = sx32(<uint32_t>x[r.rs1] * <uint32_t>x[r.rs2])
                elif op == OP_DIVW:
                    x[r.rd] = divw(<int32_t>x[r.rs1], <int32_t>x[r.rs2])
                elif op == OP_DIVUW:
                    x[r.rd] = (sx32(<uint32_t>x[r.rs1] // <uint32_t>x[r.rs2])
                               if <uint32_t>x[r.rs2] != 0 else <uint64_t>-1)
                elif op == OP_REMW:
                    x[r.rd] = remw(<int32_t>x[r.rs1], <int32_t>x[r.rs2])
                elif op == OP_REMUW:
                    x[r.rd] = (sx32(<uint32_t>x[r.rs1] % <uint32_t>x[r.rs2])
                               if <uint32_t>x[r.rs2] != 0 else sx32(<uint32_t>x[r.rs1]))
                elif op == OP_ZB:
                    x[r.rd] = zb_alu(r.rs3, x[r.rs1], x[r.rs2])
                elif op == OP_ZBI:
                    x[r.rd] = zb_alu(r.rs3, x[r.rs1], <uint64_t><int64_t>r.imm)
                # ---- loads: TLB hit when the tag equals the page and the access is aligned
                elif op == OP_LD:
                    a = x[r.rs1] + <uint64_t><int64_t>r.imm
                    e = &rt[(a >> 12) & 255]
                    if e.tag == (a & ~(<uint64_t>0xff8)):
                        x[r.rd] = rv_ld64(RV_HOST(e.addend, a))
                    else:
                        res = load_slow(h, a, 8, &v)
                        if res:
                            pc = RV_PC(cbase, r, recs)
                            ev = res
                            break
                        x[r.rd] = v
                elif op == OP_LW:
                    a = x[r.rs1] + <uint64_t><int64_t>r.imm
                    e = &rt[(a >> 12) & 255]
                    if e.tag == (a & ~(<uint64_t>0xffc)):
                        x[r.rd] = sx32(rv_ld32(RV_HOST(e.addend, a)))
                    else:
                        res = load_slow(h, a, 4, &v)
                        if res:
                            pc = RV_PC(cbase, r, recs)
                            ev = res
                            break
                        x[r.rd] = sx32(v)
                elif op == OP_LWU:
                    a = x[r.rs1] + <uint64_t><int64_t>r.imm
                    e = &rt[(a >> 12) & 255]
                    if e.tag == (a & ~(<uint64_t>0xffc)):
                        x[r.rd] = rv_ld32(RV_HOST(e.addend, a))
                    else:
                        res = load_slow(h, a, 4, &v)
                        if res:
                            pc = RV_PC(cbase, r, recs)
                            ev = res
                            break
                        x[r.rd] = v
                elif op == OP_LBU:
                    a = x[r.rs1] + <uint64_t><int64_t>r.imm
                    e = &rt[(a >> 12) & 255]
                    if e.tag == (a & ~(<uint64_t>0xfff)):
                        x[r.rd] = RV_HOST(e.addend, a)[0]
                    else:
                        res = load_slow(h, a, 1, &v)
                        if res:
                            pc = RV_PC(cbase, r, recs)
                            ev = res
                            break
                        x[r.rd] = v
                elif op == OP_LB:
                    a = x[r.rs1] + <uint64_t><int64_t>r.imm
                    e = &rt[(a >> 12) & 255]
                    if e.tag == (a & ~(<uint64_t>0xfff)):
                        x[r.rd] = <uint64_t><int64_t>(<signed char>RV_HOST(e.addend, a)[0])
                    else:
                        res = load_slow(h, a, 1, &v)
                        if res:
                            pc = RV_PC(cbase, r, recs)
                            ev = res
                            break
                        x[r.rd] = <uint64_t><int64_t>(<signed char>v)
                elif op == OP_LHU:
                    a = x[r.rs1] + <uint64_t><int64_t>r.imm
                    e = &rt[(a >> 12) & 255]
                    if e.tag == (a & ~(<uint64_t>0xffe)):
                        x[r.rd] = rv_ld16(RV_HOST(e.addend, a))
                    else:
                        res = load_slow(h, a, 2, &v)
                        if res:
                            pc = RV_PC(cbase, r, recs)
                            ev = res
                            break
                        x[r.rd] = v
                elif op == OP_LH:
                    a = x[r.rs1] + <uint64_t><int64_t>r.imm
                    e = &rt[(a >> 12) & 255]
                    if e.tag == (a & ~(<uint64_t>0xffe)):
                        x[r.rd] = <uint64_t><int64_t>(<int16_t>rv_ld16(RV_HOST(e.addend, a)))
                    else:
                        res = load_slow(h, a, 2, &v)
                        if res:
                            pc = RV_PC(cbase, r, recs)
                            ev = res
                            break
                        x[r.rd] = <uint64_t><int64_t>(<int16_t>v)
                # ---- stores: the write TLB holds no page with decoded code (flag -> slow)
                elif op == OP_SD:
                    a = x[r.rs1] + <uint64_t><int64_t>r.imm
                    e = &wt[(a >> 12) & 255]
                    if e.tag == (a & ~(<uint64_t>0xff8)):
                        rv_st64(RV_HOST(e.addend, a), x[r.rs2])
                        if h.rs.nactive:
                            resv_clear(h.rs, RV_HOST(e.addend, a), 8)
                    else:
                        res = store_slow(h, a, 8, x[r.rs2])
                        if res:
                            pc = RV_PC(cbase, r, recs)
                            ev = res
                            break
                elif op == OP_SW:
                    a = x[r.rs1] + <uint64_t><int64_t>r.imm
                    e = &wt[(a >> 12) & 255]
                    if e.tag == (a & ~(<uint64_t>0xffc)):
                        rv_st32(RV_HOST(e.addend, a), <uint32_t>x[r.rs2])
                        if h.rs.nactive:
                            resv_clear(h.rs, RV_HOST(e.addend, a), 4)
                    else:
                        res = store_slow(h, a, 4, x[r.rs2] & 0xffffffffU)
                        if res:
                            pc = RV_PC(cbase, r, recs)
                            ev = res
                            break
                elif op == OP_SH:
                    a = x[r.rs1] + <uint64_t><int64_t>r.imm
                    e = &wt[(a >> 12) & 255]
                    if e.tag == (a & ~(<uint64_t>0xffe)):
                        rv_st16(RV_HOST(e.addend, a), <uint16_t>x[r.rs2])
                        if h.rs.nactive:
                            resv_clear(h.rs, RV_HOST(e.addend, a), 2)
                    else:
                        res = store_slow(h, a, 2, x[r.rs2] & 0xffff)
                        if res:
                            pc = RV_PC(cbase, r, recs)
                            ev = res
                            break
                elif op == OP_SB:
                    a = x[r.rs1] + <uint64_t><int64_t>r.imm
                    e = &wt[(a >> 12) & 255]
                    if e.tag == (a & ~(<uint64_t>0xfff)):
                        RV_HOST(e.addend, a)[0] = <uint8_t>x[r.rs2]
                        if h.rs.nactive:
                            resv_clear(h.rs, RV_HOST(e.addend, a), 1)
                    else:
                        res = store_slow(h, a, 1, x[r.rs2] & 0xff)
                        if res:
                            pc = RV_PC(cbase, r, recs)
                            ev = res
                            break
                # ---- control transfer: the block ends here -----------------------------
                elif op == OP_BEQ:
                    if x[r.rs1] == x[r.rs2]:
                        rr = RV_JUMP(r, r.imm)
                        cnt += 1
                        if RV_OUTSIDE(rr, recs) or cnt >= h.lim:
                            pc = RV_PC(cbase, r, recs) + <uint64_t><int64_t>r.imm
                            ev = EV_PAGE
                            break
                        r = rr
                        jit_heat(h, cp, r, cbase)
                        continue
                elif op == OP_BNE:
                    if x[r.rs1] != x[r.rs2]:
                        rr = RV_JUMP(r, r.imm)
                        cnt += 1
                        if RV_OUTSIDE(rr, recs) or cnt >= h.lim:
                            pc = RV_PC(cbase, r, recs) + <uint64_t><int64_t>r.imm
                            ev = EV_PAGE
                            break
                        r = rr
                        jit_heat(h, cp, r, cbase)
                        continue
                elif op == OP_BLT:
                    if <int64_t>x[r.rs1] < <int64_t>x[r.rs2]:
                        rr = RV_JUMP(r, r.imm)
                        cnt += 1
                        if RV_OUTSIDE(rr, recs) or cnt >= h.lim:
                            pc = RV_PC(cbase, r, recs) + <uint64_t><int64_t>r.imm
                            ev = EV_PAGE
                            break
                        r = rr
                        jit_heat(h, cp, r, cbase)
                        continue
                elif op == OP_BGE:
                    if <int64_t>x[r.rs1] >= <int64_t>x[r.rs2]:
                        rr = RV_JUMP(r, r.imm)
                        cnt += 1
                        if RV_OUTSIDE(rr, recs) or cnt >= h.lim:
                            pc = RV_PC(cbase, r, recs) + <uint64_t><int64_t>r.imm
                            ev = EV_PAGE
                            break
                        r = rr
                        jit_heat(h, cp, r, cbase)
                        continue
                elif op == OP_BLTU:
                    if x[r.rs1] < x[r.rs2]:
                        rr = RV_JUMP(r, r.imm)
                        cnt += 1
                        if RV_OUTSIDE(rr, recs) or cnt >= h.lim:
                            pc = RV_PC(cbase, r, recs) + <uint64_t><int64_t>r.imm
                            ev = EV_PAGE
                            break
                        r = rr
                        jit_heat(h, cp, r, cbase)
                        continue
                elif op == OP_BGEU:
                    if x[r.rs1] >= x[r.rs2]:
                        rr = RV_JUMP(r, r.imm)
                        cnt += 1
                        if RV_OUTSIDE(rr, recs) or cnt >= h.lim:
                            pc = RV_PC(cbase, r, recs) + <uint64_t><int64_t>r.imm
                            ev = EV_PAGE
                            break
                        r = rr
                        jit_heat(h, cp, r, cbase)
                        continue
                elif op == OP_J:
                    rr = RV_JUMP(r, r.imm)
                    cnt += 1
                    if RV_OUTSIDE(rr, recs) or cnt >= h.lim:
                        pc = RV_PC(cbase, r, recs) + <uint64_t><int64_t>r.imm
                        ev = EV_PAGE
                        break
                    r = rr
                    jit_heat(h, cp, r, cbase)
                    continue
                elif op == OP_JAL:
                    pc = RV_PC(cbase, r, recs)
                    x[r.rd] = pc + r.len
                    pc += <uint64_t><int64_t>r.imm
                    cnt += 1
                    if (pc - cbase) >= 4096 or cnt >= h.lim:
                        ev = EV_PAGE
                        break
                    r = &recs[(pc - cbase) >> 1]
                    jit_heat(h, cp, r, cbase)
                    continue
                elif op == OP_JALR:
                    a = (x[r.rs1] + <uint64_t><int64_t>r.imm) & ~(<uint64_t>1)
                    x[r.rd] = RV_PC(cbase, r, recs) + r.len
                    pc = a
                    cnt += 1
                    if (pc - cbase) >= 4096 or cnt >= h.lim:
                        ev = EV_PAGE
                        break
                    r = &recs[(pc - cbase) >> 1]
                    jit_heat(h, cp, r, cbase)
                    continue
                elif op == OP_JIT:                # a compiled block (riscv_jit.pxi)
                    cnt0 = cnt
                    res = RV_JIT_CALL(h.jit_buf, (<uint8_t **>(<uint8_t *>r + 8))[0], h, x,
                                      recs, cbase, cnt)
                    cnt = h.jcnt
                    pc = h.jpc
                    h.jit_calls += 1
                    if res:
                        if res != JIT_WENT_ON:
                            ev = res
                            break
                        if (pc - cbase) >= 4096:  # left by no jump: looks as a fall does
                            ev = EV_PAGE
                            break
                        if cnt == cnt0 and &recs[(pc - cbase) >> 1] == r:
                            # left at its head, nothing run: a region whose first
                            # instruction crosses into a page the fetch TLB does not
                            # hold (riscv_jit_xpage.pxi) leaves it to this loop;
                            # entering it again would loop for good
                            r = run_alone(h, cp, pc)
                            if r == NULL:
                                ev = EV_EXC
                                break
                            recs = RV_TMP_RECS(r)
                            cbase = pc - RV_TMP_SHIFT
                            continue
                    elif (pc - cbase) >= 4096 or cnt >= h.lim:
                        ev = EV_PAGE
                        break
                    r = &recs[(pc - cbase) >> 1]
                    jit_heat(h, cp, r, cbase)     # a region's way out is a jump too
                    continue
                elif op == OP_PAGEEND:            # fell off the page (or out of tmp)
                    pc = RV_PC(cbase, r, recs)
                    ev = EV_PAGE
                    break
                elif op == OP_NONE or op == OP_XPAGE:
                    pc = RV_PC(cbase, r, recs)
                    rr = NULL
                    if op == OP_XPAGE:
                        if xpage_branch(h, cp, &pc):
                            cnt += 1
                            ev = EV_PAGE
                            break
                        rr = xpage_cached(h, cp, pc)
                    if rr == NULL:
                        rr = resolve(h, r, pc)
                    if rr == NULL:
                        ev = EV_EXC
                        break
                    if rr != r:                   # h.tmp: run it as a one-record page
                        recs = RV_TMP_RECS(rr)    # so far away that every jump leaves it
                        cbase = pc - RV_TMP_SHIFT
                        r = rr
                    continue
                elif op == OP_BREAK:
                    pc = RV_PC(cbase, r, recs)
                    if h.nch:               # a code hook: call it, then run the instruction
                        res = CODE_HOOKED(h, pc, cnt, cp.host)
                        if res:
                            ev = res
                            break
                    if h.bp_skip_valid and h.bp_skip == pc:
                        rr = resolve(h, r, pc)
                        if rr == NULL:
                            ev = EV_EXC
                            break
                        recs = RV_TMP_RECS(rr)
                        cbase = pc - RV_TMP_SHIFT
                        r = rr
                        continue
                    h.stop_reason = STOP_BREAKPOINT
                    ev = EV_STOP
                    break
                elif (op == OP_ILLEGAL or op == OP_FENCE or op == OP_FENCE_I or op == OP_ECALL or
                      op == OP_EBREAK or op == OP_MRET or op == OP_SRET or op == OP_WFI or
                      op == OP_SFENCE_VMA or op == OP_CSRRW or op == OP_CSRRS or op == OP_CSRRC or
                      op == OP_CSRRWI or op == OP_CSRRSI or op == OP_CSRRCI or op == OP_LR_W or
                      op == OP_SC_W or op == OP_LR_D or op == OP_SC_D or op == OP_AMO_W or
                      op == OP_AMO_D or op == OP_FLW or op == OP_FLD or op == OP_FSW or
                      op == OP_FSD or op == OP_FP):
                    pc = RV_PC(cbase, r, recs)
                    h.pc_ = pc
                    h.cnt = cnt
                    res = EXEC_SLOW(h, r)
                    if res:
                        if res == EV_JUMP or (res == EV_STOP and h.stop_reason == STOP_WFI):
                            cnt += 1                 # it completed
                        ev = res
                        break
                else:
                    rv_unreachable()                  # every op id has its case above
                cnt += 1
                r = <Rec *>(<char *>r + r.nxt)
            if ev != EV_PAGE:
                break
    h.pc_ = pc
    h.instret_ += cnt
    h.cnt = 0
    return h.stop_reason


include "riscv_face.pxi"
include "riscv_state.pxi"
