# CSRs, traps, interrupts and privileged instructions (included by riscv.pyx).
#
# Privileged spec 1.12, M/S/U.  Unknown CSRs, writes to read-only CSRs and CSRs
# above the current privilege raise illegal-instruction with tval = the bits.
# PMP CSRs hold what is written (lock bits honoured) but do not restrict
# accesses.  The trigger CSRs (tselect, tdata1-3, tinfo) exist and say that
# there are no triggers.  mcycle counts retired instructions (one cycle per instruction).

cdef extern from *:
    """
    #define RV_SSTATUS_MASK ((1ULL<<1)|(1ULL<<5)|(1ULL<<8)|(3ULL<<13)|(3ULL<<15)|(1ULL<<18)|(1ULL<<19)|(3ULL<<32)|(1ULL<<63))
    #define RV_SSTATUS_WMASK ((1ULL<<1)|(1ULL<<5)|(1ULL<<8)|(3ULL<<13)|(1ULL<<18)|(1ULL<<19))
    #define RV_MSTATUS_WMASK ((1ULL<<1)|(1ULL<<3)|(1ULL<<5)|(1ULL<<7)|(1ULL<<8)|(3ULL<<11)|(3ULL<<13)|(1ULL<<17)|(1ULL<<18)|(1ULL<<19)|(1ULL<<20)|(1ULL<<21)|(1ULL<<22))
    #define RV_MSTATUS_XLEN ((2ULL<<32)|(2ULL<<34))
    #define RV_MISA ((2ULL<<62)|(1ULL<<0)|(1ULL<<2)|(1ULL<<3)|(1ULL<<5)|(1ULL<<8)|(1ULL<<12)|(1ULL<<18)|(1ULL<<20))
    #define RV_U64_MAX 0xFFFFFFFFFFFFFFFFULL
    #define RV_MENVCFG_STCE (1ULL << 63)
    #define RV_MENVCFG_WMASK ((1ULL << 63) | 1ULL)   /* STCE, FIOM */
    """
    uint64_t SSTATUS_MASK "RV_SSTATUS_MASK"
    uint64_t SSTATUS_WMASK "RV_SSTATUS_WMASK"
    uint64_t MSTATUS_WMASK "RV_MSTATUS_WMASK"
    uint64_t MSTATUS_XLEN "RV_MSTATUS_XLEN"
    uint64_t MISA_VALUE "RV_MISA"
    uint64_t U64_MAX "RV_U64_MAX"
    uint64_t MENVCFG_STCE "RV_MENVCFG_STCE"
    uint64_t MENVCFG_WMASK "RV_MENVCFG_WMASK"

cdef enum:
    MEDELEG_MASK = 0xB3FF


cdef void set_priv(Hart h, int p) noexcept nogil:
    h.priv = p
    tlb_select(h)


cdef extern from *:
    ctypedef unsigned long long u128 "unsigned __int128"


cdef inline int64_t host_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef uint64_t mtime_now(Hart h) noexcept nogil:
    cdef int64_t d
    if h.time_host:
        if h.time_frozen:
            return h.frozen_at
        d = host_ns() - h.host_origin
        if d < 0:
            d = 0
        return <uint64_t>d // h.tick_ns + h.time_off
    return <uint64_t>((<u128>(h.instret_ + h.cnt) * h.time_mul) // h.time_div) + h.time_off


cdef inline uint64_t timer_bits(Hart h) noexcept nogil:
    """MTIP, and STIP while menvcfg.STCE (Sstc: the hart's stimecmp), as the
    clock and the comparators say now."""
    cdef uint64_t m = 0, t
    cdef int st = (h.menvcfg & MENVCFG_STCE) != 0
    if h.mtimecmp == U64_MAX and not st:
        return 0
    t = mtime_now(h)
    if h.mtimecmp != U64_MAX and t >= h.mtimecmp:
        m = MIP_MTIP
    if st and t >= h.stimecmp:
        m |= MIP_STIP
    return m


cdef inline uint64_t mip_soft(Hart h) noexcept nogil:
    """mip but for the timers: STIP is the timer's, not software's, under STCE."""
    cdef uint64_t m = h.mip_sw | h.mip_hw
    if h.menvcfg & MENVCFG_STCE:
        m &= ~(<uint64_t>MIP_STIP)
    return m


cdef inline uint64_t mip_value(Hart h) noexcept nogil:
    """mip as a CSR read sees it (the timers compared with the clock now)."""
    cdef uint64_t t = timer_bits(h)
    if h.time_host:
        h.mtip_latch = <int>t
    return mip_soft(h) | t


cdef inline uint64_t mip_pending(Hart h) noexcept nogil:
    """mip for interrupt delivery at block boundaries: on host time the timer's
    state as last sampled (every HOST_POLL instructions, see time_poll), so a
    boundary does not read the host clock."""
    if h.time_host:
        return mip_soft(h) | <uint64_t>h.mtip_latch
    return mip_soft(h) | timer_bits(h)


cdef enum:
    HOST_POLL = 1 << 15         # instructions between looks at the host clock (timer armed)


cdef inline void time_poll(Hart h, uint64_t cnt) noexcept nogil:
    """Host time: sample MTIP when due (the run loop calls it at block boundaries)."""
    if cnt >= h.poll_at:
        h.mtip_latch = <int>timer_bits(h)
        h.poll_at = cnt + HOST_POLL


cdef uint64_t cmp_deadline(Hart h, uint64_t cmp) noexcept nogil:
    """Instruction-counted time: the run-relative count at which mtime reaches ``cmp``."""
    cdef uint64_t ticks, target
    cdef u128 t
    if cmp <= h.time_off:
        return U64_MAX
    ticks = cmp - h.time_off
    # the first instruction count n with n * mul // div >= ticks
    t = (<u128>ticks * h.time_div + h.time_mul - 1) // h.time_mul
    if t >= <u128>U64_MAX:
        return U64_MAX
    target = <uint64_t>t
    if target <= h.instret_ + h.cnt:
        return U64_MAX           # already fired: mip shows it, CSR writes re-check
    return target - h.instret_


cdef uint64_t timer_deadline(Hart h) noexcept nogil:
    """Run-relative instruction count at which to look at the timers again (or never)."""
    cdef uint64_t d = U64_MAX, e
    cdef int mt = h.mtimecmp != U64_MAX and (h.mie & MIP_MTIP) != 0
    cdef int st = (h.menvcfg & MENVCFG_STCE) != 0 and (h.mie & MIP_STIP) != 0
    if not (mt or st):
        return U64_MAX           # a stopped timer is no deadline
    if h.time_host:
        if (not mt or h.mtip_latch & MIP_MTIP) and (not st or h.mtip_latch & MIP_STIP):
            return U64_MAX
        return h.poll_at
    if mt:
        d = cmp_deadline(h, h.mtimecmp)
    if st:
        e = cmp_deadline(h, h.stimecmp)
        if e < d:
            d = e
    return d


cdef void trap(Hart h, uint64_t cause, uint64_t tval, int interrupt) noexcept nogil:
    """Enter the trap handler for ``cause`` from the instruction at ``h.pc_``."""
    cdef uint64_t deleg = h.mideleg if interrupt else h.medeleg
    cdef uint64_t s = h.mstatus, base, vec
    cdef int from_priv = h.priv
    cdef TrapRec *tr
    h.code_next = 1             # the handler's first instruction follows nothing (code hooks)
    h.wfi_spins = 0             # (wfi_spin: a wfi next is no polling loop's)
    if h.trace_int:
        if h.trace_n < 256:
            tr = &h.trace_recs[h.trace_n]
            tr.cause = cause | (INT_FLAG if interrupt else 0)
            tr.epc = h.pc_
            tr.tval = tval
            tr.priv = from_priv
            h.trace_n += 1
        else:
            h.trace_dropped += 1
    if h.hooks_on & HOOK_TRAP:
        call_trap_hook(h, cause | (INT_FLAG if interrupt else 0), h.pc_, tval)
    if from_priv <= PRV_S and cause < 64 and (deleg >> cause) & 1:
        h.scause = cause | (INT_FLAG if interrupt else 0)
        h.sepc = h.pc_
        h.stval = tval
        s &= ~MSTATUS_SPP
        if from_priv == PRV_S:
            s |= MSTATUS_SPP
        s &= ~MSTATUS_SPIE
        if s & MSTATUS_SIE:
            s |= MSTATUS_SPIE
        s &= ~MSTATUS_SIE
        h.mstatus = s
        base = h.stvec & ~(<uint64_t>3)
        vec = h.stvec & 1
        set_priv(h, PRV_S)
    else:
        h.mcause = cause | (INT_FLAG if interrupt else 0)
        h.mepc = h.pc_
        h.mtval = tval
        s &= ~MSTATUS_MPP
        s |= (<uint64_t>from_priv) << 11
        s &= ~MSTATUS_MPIE
        if s & MSTATUS_MIE:
            s |= MSTATUS_MPIE
        s &= ~MSTATUS_MIE
        h.mstatus = s
        base = h.mtvec & ~(<uint64_t>3)
        vec = h.mtvec & 1
        set_priv(h, PRV_M)
    h.pc_ = base + 4 * cause if (vec and interrupt) else base


cdef int pending_irq(Hart h) noexcept nogil:
    """Take the highest-priority enabled pending interrupt, if any (1 if taken)."""
    cdef uint64_t pend = mip_pending(h) & h.mie
    cdef uint64_t m, sel = 0
    if pend == 0:
        return 0
    m = pend & ~h.mideleg
    if not (m and (h.priv < PRV_M or (h.mstatus & MSTATUS_MIE))):
        m = 0
        if h.priv < PRV_S or (h.priv == PRV_S and (h.mstatus & MSTATUS_SIE)):
            m = pend & h.mideleg
    if m == 0:
        return 0
    if m & MIP_MEIP: sel = IRQ_MEI
    elif m & MIP_MSIP: sel = IRQ_MSI
    elif m & MIP_MTIP: sel = IRQ_MTI
    elif m & MIP_SEIP: sel = IRQ_SEI
    elif m & MIP_SSIP: sel = IRQ_SSI
    else: sel = IRQ_STI
    trap(h, sel, 0, 1)
    return 1


cdef inline int fs_off(Hart h) noexcept nogil:
    return (h.mstatus & MSTATUS_FS) == 0


cdef inline void fs_dirty(Hart h) noexcept nogil:
    h.mstatus |= MSTATUS_FS


cdef inline int sstc_ok(Hart h) noexcept nogil:
    """stimecmp may be accessed (QEMU 7.2's sstc(): M-mode, or mcounteren.TM and
    menvcfg.STCE; U-mode is refused by its privilege bits)."""
    return h.ext_sstc and (h.priv == PRV_M or
                           ((h.mcounteren & 2) != 0 and (h.menvcfg & MENVCFG_STCE) != 0))


cdef int csr_read(Hart h, uint32_t csr, uint64_t *v) noexcept nogil:
    """0, or 1 when ``csr`` does not exist / may not be accessed here."""
    cdef uint64_t s
    cdef uint32_t n
    if csr >= 0xC00 and csr <= 0xC1F:          # user counters
        n = csr - 0xC00
        if h.priv < PRV_M and not ((h.mcounteren >> n) & 1):
            return 1
        if h.priv == PRV_U and not ((h.scounteren >> n) & 1):
            return 1
        if n == 0: v[0] = h.instret_ + h.cnt + h.cycle_off
        elif n == 1: v[0] = mtime_now(h)
        elif n == 2: v[0] = h.instret_ + h.cnt
        else: v[0] = 0
        return 0
    if csr <= 3:
        if fs_off(h):
            return 1
        if csr == 1: v[0] = h.fflags
        elif csr == 2: v[0] = h.frm
        elif csr == 3: v[0] = (h.frm << 5) | h.fflags
        else: return 1
        return 0
    if csr == 0x100:
        s = h.mstatus & SSTATUS_MASK
        if (s & MSTATUS_FS) == MSTATUS_FS: s |= MSTATUS_SD
        v[0] = s
    elif csr == 0x104: v[0] = h.mie & h.mideleg
    elif csr == 0x105: v[0] = h.stvec
    elif csr == 0x106: v[0] = h.scounteren
    elif csr == 0x10A: v[0] = h.senvcfg
    elif csr == 0x140: v[0] = h.sscratch
    elif csr == 0x141: v[0] = h.sepc
    elif csr == 0x142: v[0] = h.scause
    elif csr == 0x143: v[0] = h.stval
    elif csr == 0x144: v[0] = mip_value(h) & h.mideleg
    elif csr == 0x14D:
        if not sstc_ok(h):
            return 1
        v[0] = h.stimecmp
    elif csr == 0x180:
        if h.priv == PRV_S and (h.mstatus & MSTATUS_TVM):
            return 1
        v[0] = h.satp
    elif csr == 0xF11 or csr == 0xF12 or csr == 0xF13 or csr == 0xF15: v[0] = 0
    elif csr == 0xF14: v[0] = h.hartid
    elif csr == 0x300:
        s = h.mstatus
        if (s & MSTATUS_FS) == MSTATUS_FS: s |= MSTATUS_SD
        v[0] = s
    elif csr == 0x301: v[0] = MISA_VALUE
    elif csr == 0x302: v[0] = h.medeleg
    elif csr == 0x303: v[0] = h.mideleg
    elif csr == 0x304: v[0] = h.mie
    elif csr == 0x305: v[0] = h.mtvec
    elif csr == 0x306: v[0] = h.mcounteren
    elif csr == 0x30A: v[0] = h.menvcfg
    elif csr == 0x320: v[0] = h.mcountinhibit
    elif csr >= 0x323 and csr <= 0x33F: v[0] = 0
    elif csr == 0x340: v[0] = h.mscratch
    elif csr == 0x341: v[0] = h.mepc
    elif csr == 0x342: v[0] = h.mcause
    elif csr == 0x343: v[0] = h.mtval
    elif csr == 0x344: v[0] = mip_value(h)
    elif csr == 0x34A or csr == 0x34B: v[0] = 0
    elif csr >= 0x3A0 and csr <= 0x3AF:
        if csr & 1:
            return 1
        v[0] = h.pmpcfg[csr - 0x3A0]
    elif csr >= 0x3B0 and csr <= 0x3EF: v[0] = h.pmpaddr[csr - 0x3B0]
    elif csr >= 0x7A0 and csr <= 0x7A3: v[0] = 0      # tselect, tdata1-3: no triggers
    elif csr == 0x7A4: v[0] = 1                         # tinfo: only type 0 (none)
    elif csr == 0xB00: v[0] = h.instret_ + h.cnt + h.cycle_off
    elif csr == 0xB02: v[0] = h.instret_ + h.cnt
    elif csr >= 0xB03 and csr <= 0xB1F: v[0] = 0
    else:
        return 1
    return 0


cdef int csr_write(Hart h, uint32_t csr, uint64_t v) noexcept nogil:
    cdef uint64_t s, old, mask
    cdef int i, j, lockedcfg
    if csr <= 3:
        if fs_off(h):
            return 1
        if csr == 1: h.fflags = v & 31
        elif csr == 2: h.frm = v & 7
        elif csr == 3:
            h.fflags = v & 31
            h.frm = (v >> 5) & 7
        else: return 1
        fs_dirty(h)
        return 0
    if csr == 0x100:
        old = h.mstatus
        h.mstatus = (old & ~SSTATUS_WMASK) | (v & SSTATUS_WMASK)
        if (old ^ h.mstatus) & MSTATUS_MXR:
            tlb_flush(h)
        if (old ^ h.mstatus) & MSTATUS_SUM:
            tlb_select(h)
    elif csr == 0x104:
        mask = h.mideleg & S_INTS
        h.mie = (h.mie & ~mask) | (v & mask)
    elif csr == 0x105:
        h.stvec = v if (v & 3) < 2 else (v & ~(<uint64_t>3)) | (h.stvec & 1)
    elif csr == 0x106: h.scounteren = v & 0xffffffffU
    elif csr == 0x10A: h.senvcfg = v & 1
    elif csr == 0x140: h.sscratch = v
    elif csr == 0x141: h.sepc = v & ~(<uint64_t>1)
    elif csr == 0x142: h.scause = v
    elif csr == 0x143: h.stval = v
    elif csr == 0x144:
        mask = h.mideleg & MIP_SSIP
        h.mip_sw = (h.mip_sw & ~mask) | (v & mask)
    elif csr == 0x14D:
        if not sstc_ok(h):
            return 1
        h.stimecmp = v
        h.poll_at = 0           # host time: STIP sampled afresh at the next boundary
    elif csr == 0x180:
        if h.priv == PRV_S and (h.mstatus & MSTATUS_TVM):
            return 1
        s = v >> 60
        if s == 0 or s == 8 or s == 9:        # Bare, Sv39, Sv48; others: write ignored
            h.satp = v
            tlb_select(h)                     # (the sets of its bank: riscv_tlb.pxi)
    elif csr == 0x300:
        old = h.mstatus
        s = (old & ~MSTATUS_WMASK) | (v & MSTATUS_WMASK)
        if ((s >> 11) & 3) == 2:             # reserved MPP: keep the old one
            s = (s & ~MSTATUS_MPP) | (old & MSTATUS_MPP)
        h.mstatus = (s & ~(MSTATUS_SD | MSTATUS_UXL | MSTATUS_SXL)) | MSTATUS_XLEN
        if (old ^ h.mstatus) & MSTATUS_MXR:
            tlb_flush(h)
        if (old ^ h.mstatus) & (MSTATUS_MPRV | MSTATUS_MPP | MSTATUS_SUM):
            tlb_select(h)
    elif csr == 0x301: pass                   # misa is read-only here
    elif csr == 0x302: h.medeleg = v & MEDELEG_MASK
    elif csr == 0x303: h.mideleg = v & S_INTS
    elif csr == 0x304: h.mie = v & ALL_INTS
    elif csr == 0x305:
        h.mtvec = v if (v & 3) < 2 else (v & ~(<uint64_t>3)) | (h.mtvec & 1)
    elif csr == 0x306: h.mcounteren = v & 0xffffffffU
    elif csr == 0x30A:
        h.menvcfg = v & (MENVCFG_WMASK if h.ext_sstc else 1)
        h.poll_at = 0
    elif csr == 0x320: h.mcountinhibit = v & 0xfffffffdU
    elif csr >= 0x323 and csr <= 0x33F: pass
    elif csr == 0x340: h.mscratch = v
    elif csr == 0x341: h.mepc = v & ~(<uint64_t>1)
    elif csr == 0x342: h.mcause = v
    elif csr == 0x343: h.mtval = v
    elif csr == 0x344:
        mask = S_INTS if not (h.menvcfg & MENVCFG_STCE) else S_INTS & ~MIP_STIP
        h.mip_sw = (h.mip_sw & ~mask) | (v & mask)
    elif csr == 0x34A or csr == 0x34B: pass
    elif csr >= 0x3A0 and csr <= 0x3AF:
        if csr & 1:
            return 1
        i = csr - 0x3A0
        old = h.pmpcfg[i]
        s = 0
        for j in range(8):
            if (old >> (8 * j)) & 0x80:
                s |= old & (<uint64_t>0xff << (8 * j))
            else:
                s |= v & (<uint64_t>0x9f << (8 * j))
        h.pmpcfg[i] = s
    elif csr >= 0x3B0 and csr <= 0x3EF:
        i = csr - 0x3B0
        lockedcfg = (h.pmpcfg[(i // 8) * 2] >> (8 * (i % 8))) & 0x80
        if not lockedcfg:
            h.pmpaddr[i] = v & ((<uint64_t>1 << 54) - 1)
    elif csr >= 0x7A0 and csr <= 0x7A4: pass           # no trigger module: WARL zero
    elif csr == 0xB00: h.cycle_off = v - h.instret_ - h.cnt - 1     # h.cnt: before this insn
    elif csr == 0xB02: h.instret_ = v - h.cnt - 1
    elif csr >= 0xB03 and csr <= 0xB1F: pass
    else:
        return 1
    return 0


cdef int illegal(Hart h, Rec *r) noexcept nogil:
    h.exc_cause = 2
    h.exc_tval = r.bits
    return EV_EXC


cdef int exec_csr(Hart h, Rec *r) noexcept nogil:
    cdef uint32_t csr = <uint32_t>r.imm
    cdef int op = r.op
    cdef uint64_t src, old = 0, new, base
    cdef int wr, rd_ = r.rd
    if ((csr >> 8) & 3) > <uint32_t>h.priv:
        return illegal(h, r)
    if op == OP_CSRRW or op == OP_CSRRS or op == OP_CSRRC:
        src = h.x[r.rs1]
    else:
        src = r.rs1
    wr = op == OP_CSRRW or op == OP_CSRRWI or r.rs1 != 0
    if wr and (csr >> 10) == 3:
        return illegal(h, r)
    if csr_read(h, csr, &old):
        return illegal(h, r)
    base = old
    if csr == 0x344:
        # priv spec 3.1.9: csrrs/csrrc on mip read-modify-write the software-
        # writable SEIP bit, not its OR with the external interrupt signal (else
        # OpenSBI's csr_clear(mip, STIP) would latch a pending PLIC interrupt)
        base = (old & ~(<uint64_t>(1 << 9))) | (h.mip_sw & (<uint64_t>(1 << 9)))
    if op == OP_CSRRW or op == OP_CSRRWI:
        new = src
    elif op == OP_CSRRS or op == OP_CSRRSI:
        new = base | src
    else:
        new = base & ~src
    if wr and csr_write(h, csr, new):
        return illegal(h, r)
    h.x[rd_ if rd_ != 0 else 32] = old
    h.pc_ += r.len
    return EV_JUMP


cdef int exec_system(Hart h, Rec *r) noexcept nogil:
    cdef int op = r.op
    cdef uint64_t s
    cdef int p
    if op == OP_ECALL:
        h.exc_cause = 8 + h.priv
        h.exc_tval = 0
        return EV_EXC
    if op == OP_EBREAK:
        h.exc_cause = 3
        h.exc_tval = 0              # QEMU 7.2 leaves mtval 0 (later versions: the pc)
        return EV_EXC
    if op == OP_MRET:
        if h.priv != PRV_M:
            return illegal(h, r)
        s = h.mstatus
        p = (s >> 11) & 3
        s &= ~MSTATUS_MIE
        if s & MSTATUS_MPIE:
            s |= MSTATUS_MIE
        s |= MSTATUS_MPIE
        s &= ~MSTATUS_MPP
        if p != PRV_M:
            s &= ~MSTATUS_MPRV
        h.mstatus = s
        h.pc_ = h.mepc
        set_priv(h, p)
        return EV_JUMP
    if op == OP_SRET:
        if h.priv == PRV_U or (h.priv == PRV_S and (h.mstatus & MSTATUS_TSR)):
            return illegal(h, r)
        s = h.mstatus
        p = PRV_S if s & MSTATUS_SPP else PRV_U
        s &= ~MSTATUS_SIE
        if s & MSTATUS_SPIE:
            s |= MSTATUS_SIE
        s |= MSTATUS_SPIE
        s &= ~(MSTATUS_SPP | MSTATUS_MPRV)
        h.mstatus = s
        h.pc_ = h.sepc
        set_priv(h, p)
        return EV_JUMP
    if op == OP_WFI:
        if r.rs3 == WFI_PAUSE:
            pause_op(h)
            return 0
        if h.priv == PRV_U or (h.priv == PRV_S and (h.mstatus & MSTATUS_TW)):
            return illegal(h, r)
        h.pc_ += r.len
        if mip_value(h) & h.mie:
            # it waits for nothing: an interrupt is pending (maybe disabled), so a
            # wfi loop waiting for memory is a spin-wait (OpenSBI's HSM wait, with
            # an IPI left pending, until Linux starts the hart)
            if h.smp:
                wfi_spin(h)
            return EV_JUMP
        h.wfi_spins = 0
        h.stop_reason = STOP_WFI
        return EV_STOP
    if op == OP_SFENCE_VMA:
        if h.priv == PRV_U or (h.priv == PRV_S and (h.mstatus & MSTATUS_TVM)):
            return illegal(h, r)
        if r.rs1 != 0:
            tlb_flush_page(h, h.x[r.rs1], <int64_t>(h.x[r.rs2] & 0xFFFF) if r.rs2 != 0 else -1)
        elif r.rs2 != 0:
            tlb_flush_asid(h, h.x[r.rs2])
        else:
            tlb_flush(h)
        h.pc_ += r.len
        return EV_JUMP
    if op == OP_FENCE_I:
        code_sync(h)            # (riscv_code.pxi: only what others wrote is forgotten)
        h.pc_ += r.len
        return EV_JUMP
    return illegal(h, r)
